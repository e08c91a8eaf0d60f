//! The tree-pack cache layer: on storage where each request costs a round trip, a walk reads
//! thousands of tree blobs one by one, so `read_nearby` fetches the whole (small) pack once
//! and keeps the most recently used ones up to a byte budget.

use super::storage::{DynStorage, Meta, ObjectClass, SpillFile, Storage, StorageResult};
use async_trait::async_trait;
use bytes::Bytes;
use std::ops::Range;
use std::sync::Arc;

/// Weighs a cached file by its length in bytes.
#[derive(Clone)]
struct ByLength;

impl quick_cache::Weighter<String, Arc<Vec<u8>>> for ByLength {
    fn weight(&self, _path: &String, bytes: &Arc<Vec<u8>>) -> u64 {
        bytes.len() as u64
    }
}

pub struct TreePackCache {
    inner: DynStorage,
    files: quick_cache::sync::Cache<String, Arc<Vec<u8>>, ByLength>,
    budget: u64,
}

impl TreePackCache {
    /// Keeps whole files up to `budget` bytes in all; a file over half of it is never kept.
    pub fn wrap(inner: DynStorage, budget: u64) -> DynStorage {
        // Tree packs are typically a few MiB: estimate the count from that.
        let estimated_files = (budget / (4 << 20)).max(16) as usize;
        Arc::new(TreePackCache {
            inner,
            files: quick_cache::sync::Cache::with_weighter(estimated_files, budget, ByLength),
            budget,
        })
    }
}

#[async_trait]
impl Storage for TreePackCache {
    async fn read(&self, path: &str, range: Option<Range<u64>>) -> StorageResult<Vec<u8>> {
        self.inner.read(path, range).await
    }

    /// One read of the whole file serves every range of it while it stays cached;
    /// concurrent misses of one file wait for a single read.
    async fn read_nearby(
        &self,
        path: &str,
        size: u64,
        range: Range<u64>,
    ) -> StorageResult<Vec<u8>> {
        if size > self.budget / 2 || range.end > size {
            return self.inner.read(path, Some(range)).await;
        }
        let whole = self
            .files
            .get_or_insert_async(path, async {
                self.inner.read(path, None).await.map(Arc::new)
            })
            .await?;
        if whole.len() as u64 != size {
            // Not the file the caller expects: never kept, and the range read as it is
            // stored (a short one is then reported as such).
            self.files.remove(path);
            return self.inner.read(path, Some(range)).await;
        }
        Ok(whole[range.start as usize..range.end as usize].to_vec())
    }

    async fn write(&self, path: &str, bytes: Bytes, class: ObjectClass) -> StorageResult<()> {
        self.inner.write(path, bytes, class).await
    }

    fn spill_file(&self, name: &str) -> Option<std::io::Result<SpillFile>> {
        self.inner.spill_file(name)
    }

    async fn write_spilled(
        &self,
        path: &str,
        file: Arc<SpillFile>,
        class: ObjectClass,
    ) -> StorageResult<()> {
        self.inner.write_spilled(path, file, class).await
    }

    async fn delete(&self, path: &str) -> StorageResult<()> {
        self.files.remove(path);
        self.inner.delete(path).await
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<(String, u64)>> {
        self.inner.list(prefix).await
    }

    async fn stat(&self, path: &str) -> StorageResult<Meta> {
        self.inner.stat(path).await
    }
}

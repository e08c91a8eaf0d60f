//! The retry layer: repeats an operation that failed with a temporary error, with exponential
//! backoff and jitter (backon), over any storage.

use super::storage::{
    DynStorage, Meta, ObjectClass, SpillFile, Storage, StorageError, StorageResult,
};
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// Retries of temporary errors (`-o retry.max`, `-o retry.delay_ms`).
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_retries: u32,
    /// The first wait; each later one doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Each wait is drawn from [d/2, d) for the nominal delay d ("full jitter" keeps many
    /// clients from retrying in step): backon's jitter adds up to one more delay to half of it.
    pub(super) fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.first_delay / 2)
            .with_max_delay(self.max_delay / 2)
            .with_factor(2.0)
            .with_max_times(self.max_retries as usize)
            .with_jitter()
    }
}

pub struct Retry {
    inner: DynStorage,
    policy: RetryPolicy,
}

impl Retry {
    pub fn wrap(inner: DynStorage, policy: RetryPolicy) -> DynStorage {
        Arc::new(Retry { inner, policy })
    }

    async fn run<T, Fut>(&self, f: impl FnMut() -> Fut) -> StorageResult<T>
    where
        Fut: std::future::Future<Output = StorageResult<T>>,
    {
        f.retry(self.policy.backoff()).when(worth_retrying).await
    }
}

/// A temporary error, except a full disk: that does not empty itself within the retry window.
pub(super) fn worth_retrying(e: &StorageError) -> bool {
    e.is_temporary() && !super::is_no_space(e)
}

#[async_trait]
impl Storage for Retry {
    async fn read(&self, path: &str, range: Option<Range<u64>>) -> StorageResult<Vec<u8>> {
        self.run(|| self.inner.read(path, range.clone())).await
    }

    async fn read_nearby(
        &self,
        path: &str,
        size: u64,
        range: Range<u64>,
    ) -> StorageResult<Vec<u8>> {
        self.run(|| self.inner.read_nearby(path, size, range.clone()))
            .await
    }

    async fn write(&self, path: &str, bytes: Bytes, class: ObjectClass) -> StorageResult<()> {
        self.run(|| self.inner.write(path, bytes.clone(), class))
            .await
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
        self.run(|| self.inner.write_spilled(path, file.clone(), class))
            .await
    }

    async fn delete(&self, path: &str) -> StorageResult<()> {
        self.run(|| self.inner.delete(path)).await
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<(String, u64)>> {
        self.run(|| self.inner.list(prefix)).await
    }

    async fn stat(&self, path: &str) -> StorageResult<Meta> {
        self.run(|| self.inner.stat(path)).await
    }
}

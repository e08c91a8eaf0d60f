//! The persistent metadata cache for remote repositories: index files, snapshots and tree
//! packs kept on local disk between commands, so a second command against the same S3
//! repository downloads none of them again.
//!
//! Every file in a repository that it keeps is named by the BLAKE3 hash of its bytes, so a
//! cached copy is checked against its name before it is first used in a process, and a file
//! the repository no longer lists is dropped from the cache at the next listing of its folder.
//! Files are written to a temporary name and renamed, so processes sharing the folder never
//! see half a file. The folder is known only once the repository's id is (after its config
//! opens): until `attach` names it, the layer passes everything through (and counts).

use super::storage::{DynStorage, Meta, ObjectClass, SpillFile, Storage, StorageResult};
use crate::id::Id;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

/// Requests that reached the storage below the cache, and reads the cache served, by folder.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub index_downloads: AtomicU64,
    pub snapshot_downloads: AtomicU64,
    pub tree_pack_downloads: AtomicU64,
    pub hits: AtomicU64,
}

/// What the counters say, for `--json` output and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    pub index_downloads: u64,
    pub snapshot_downloads: u64,
    pub tree_pack_downloads: u64,
    pub cache_hits: u64,
}

pub struct DiskCache {
    inner: DynStorage,
    dir: OnceLock<PathBuf>,
    /// Cached files already checked against their names in this process.
    verified: Mutex<HashSet<String>>,
    counters: Arc<CacheCounters>,
}

/// Which cached kind a path is, if any (tree packs only through `read_nearby` and writes of
/// metadata class).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kept {
    Index,
    Snapshot,
    TreePack,
}

fn kept(path: &str) -> Option<Kept> {
    if path.starts_with("index/") {
        Some(Kept::Index)
    } else if path.starts_with("snapshots/") {
        Some(Kept::Snapshot)
    } else {
        None
    }
}

/// The id a file's name says it hashes to.
fn named_id(path: &str) -> Option<Id> {
    path.rsplit('/').next().and_then(Id::from_hex)
}

fn slice(bytes: &[u8], range: Option<Range<u64>>) -> Vec<u8> {
    match range {
        None => bytes.to_vec(),
        Some(r) => {
            let end = (r.end as usize).min(bytes.len());
            let start = (r.start as usize).min(end);
            bytes[start..end].to_vec()
        }
    }
}

impl DiskCache {
    pub fn wrap(inner: DynStorage, counters: Arc<CacheCounters>) -> Arc<DiskCache> {
        Arc::new(DiskCache {
            inner,
            dir: OnceLock::new(),
            verified: Mutex::new(HashSet::new()),
            counters,
        })
    }

    /// Starts caching in `dir` (the repository's own folder under the cache root).
    pub fn attach(&self, dir: PathBuf) {
        let _ = self.dir.set(dir);
    }

    fn cached_path(&self, path: &str) -> Option<PathBuf> {
        // Paths are `folder/hex` or `data/xx/hex`, made by this crate: no `..` to escape.
        self.dir.get().map(|d| d.join(path))
    }

    fn count_download(&self, kind: Kept) {
        let c = match kind {
            Kept::Index => &self.counters.index_downloads,
            Kept::Snapshot => &self.counters.snapshot_downloads,
            Kept::TreePack => &self.counters.tree_pack_downloads,
        };
        c.fetch_add(1, Relaxed);
    }

    /// The cached file, whole, if there is one that matches its name.
    fn load(&self, path: &str) -> Option<Vec<u8>> {
        let file = self.cached_path(path)?;
        let bytes = std::fs::read(&file).ok()?;
        if !self.verified.lock().unwrap().contains(path) {
            if Some(Id(*blake3::hash(&bytes).as_bytes())) != named_id(path) {
                let _ = std::fs::remove_file(&file);
                return None;
            }
            self.verified.lock().unwrap().insert(path.to_string());
        }
        self.counters.hits.fetch_add(1, Relaxed);
        Some(bytes)
    }

    /// A range of a cached tree pack, read without loading the whole file (it was checked
    /// whole once in this process).
    fn load_range(&self, path: &str, range: &Range<u64>) -> Option<Vec<u8>> {
        if !self.verified.lock().unwrap().contains(path) {
            let whole = self.load(path)?;
            return Some(slice(&whole, Some(range.clone())));
        }
        let file = std::fs::File::open(self.cached_path(path)?).ok()?;
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, range.start).ok()?;
        self.counters.hits.fetch_add(1, Relaxed);
        Some(buf)
    }

    /// Keeps a file that matches its name (best effort: a full disk only costs a download).
    fn store(&self, path: &str, bytes: &[u8]) {
        let Some(file) = self.cached_path(path) else {
            return;
        };
        if Some(Id(*blake3::hash(bytes).as_bytes())) != named_id(path) {
            return;
        }
        if write_atomically(&file, bytes).is_ok() {
            self.verified.lock().unwrap().insert(path.to_string());
        }
    }

    /// Drops cached files of `prefix`'s folder that the listing no longer has.
    fn forget_unlisted(&self, prefix: &str, listed: &[(String, u64)]) {
        let Some(dir) = self.dir.get() else {
            return;
        };
        if !matches!(prefix, "index/" | "snapshots/" | "data/") {
            return;
        }
        let listed: HashSet<&str> = listed.iter().map(|(p, _)| p.as_str()).collect();
        let mut stack = vec![dir.join(prefix)];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p);
                    continue;
                }
                let rel = p.strip_prefix(dir).ok().and_then(|r| r.to_str());
                if rel.is_some_and(|r| !listed.contains(r) && named_id(r).is_some()) {
                    let _ = std::fs::remove_file(&p);
                    if let Some(r) = rel {
                        self.verified.lock().unwrap().remove(r);
                    }
                }
            }
        }
    }
}

fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let parent = file.parent().expect("cache paths have a parent");
    std::fs::create_dir_all(parent)?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

#[async_trait]
impl Storage for DiskCache {
    async fn read(&self, path: &str, range: Option<Range<u64>>) -> StorageResult<Vec<u8>> {
        let Some(kind) = kept(path) else {
            return self.inner.read(path, range).await;
        };
        if let Some(bytes) = self.load(path) {
            return Ok(slice(&bytes, range));
        }
        self.count_download(kind);
        let whole = self.inner.read(path, None).await?;
        self.store(path, &whole);
        Ok(slice(&whole, range))
    }

    async fn read_nearby(
        &self,
        path: &str,
        size: u64,
        range: Range<u64>,
    ) -> StorageResult<Vec<u8>> {
        if self.dir.get().is_none() {
            self.count_download(Kept::TreePack);
            return self.inner.read_nearby(path, size, range).await;
        }
        if let Some(bytes) = self.load_range(path, &range) {
            return Ok(bytes);
        }
        self.count_download(Kept::TreePack);
        let whole = self.inner.read(path, None).await?;
        if whole.len() as u64 != size {
            return Ok(slice(&whole, Some(range)));
        }
        self.store(path, &whole);
        Ok(slice(&whole, Some(range)))
    }

    async fn write(&self, path: &str, bytes: Bytes, class: ObjectClass) -> StorageResult<()> {
        self.inner.write(path, bytes.clone(), class).await?;
        let tree_pack = path.starts_with("data/") && class == ObjectClass::Metadata;
        if kept(path).is_some() || tree_pack {
            self.store(path, &bytes);
        }
        Ok(())
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
        self.inner.write_spilled(path, file.clone(), class).await?;
        // A tree pack streamed from a temporary file (remote storage keeps the file until the
        // last handle goes): kept like one written from memory.
        if path.starts_with("data/") && class == ObjectClass::Metadata {
            if let Ok(bytes) = tokio::fs::read(file.path()).await {
                self.store(path, &bytes);
            }
        }
        Ok(())
    }

    async fn delete(&self, path: &str) -> StorageResult<()> {
        if let Some(file) = self.cached_path(path) {
            let _ = std::fs::remove_file(file);
            self.verified.lock().unwrap().remove(path);
        }
        self.inner.delete(path).await
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<(String, u64)>> {
        let listed = self.inner.list(prefix).await?;
        self.forget_unlisted(prefix, &listed);
        Ok(listed)
    }

    async fn stat(&self, path: &str) -> StorageResult<Meta> {
        self.inner.stat(path).await
    }
}

/// The cache folder of a repository: `<root>/<repository id hex>/metadata`.
pub fn repository_dir(root: &Path, repository_id: &Id) -> PathBuf {
    root.join(repository_id.to_hex()).join("metadata")
}

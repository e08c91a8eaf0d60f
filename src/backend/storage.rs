//! The storage trait every layer implements: a flat store of immutable files named by paths.
//! `LocalStorage`, `S3Storage` and `OpenDalStorage` hold the files; `Faults`, `Retry` and
//! `TreePackCache` each wrap any `Storage` and are one themselves, so they stack in any order.

use async_trait::async_trait;
use bytes::Bytes;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Storage errors are OpenDAL's: a kind (`NotFound`, `PermissionDenied`, ...), whether the
/// error is temporary (worth a retry), and the operating system error under it, if any.
pub type StorageError = opendal::Error;
pub type StorageResult<T> = std::result::Result<T, StorageError>;

/// What `stat` reports of one file.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub size: u64,
    /// By the storage's own clock (the server's, or the kernel's on local disk), in ns since
    /// the epoch; `None` when the service does not report one.
    pub modified_ns: Option<i64>,
}

#[async_trait]
pub trait Storage: Send + Sync {
    /// A whole file, or `range` of it (which may come back short at the file's end).
    async fn read(&self, path: &str, range: Option<Range<u64>>) -> StorageResult<Vec<u8>>;

    /// `range` of a file of known `size` that is likely read again nearby (a tree blob in a
    /// tree pack: walks read thousands, one by one); a caching layer may keep the whole file.
    async fn read_nearby(
        &self,
        path: &str,
        size: u64,
        range: Range<u64>,
    ) -> StorageResult<Vec<u8>> {
        let _ = size;
        self.read(path, Some(range)).await
    }

    /// Stores a file whole; it is never visible half written under `path` where the service
    /// allows that.
    async fn write(&self, path: &str, bytes: Bytes, class: ObjectClass) -> StorageResult<()>;

    /// Where files live on local disk: a new temporary file to fill piece by piece and then
    /// store with `write_spilled` (a pack being built holds ~1 MiB, not the whole pack).
    /// `None` for storage elsewhere. `name` starts the temporary file's name.
    fn spill_file(&self, name: &str) -> Option<std::io::Result<SpillFile>>;

    /// Stores a file from `spill_file` under `path` (fsynced, then renamed into place). The
    /// temporary file stays until the last handle is dropped, so a failed attempt can be
    /// retried.
    async fn write_spilled(
        &self,
        path: &str,
        file: Arc<SpillFile>,
        class: ObjectClass,
    ) -> StorageResult<()>;

    async fn delete(&self, path: &str) -> StorageResult<()>;

    /// The files (never folders) under `prefix`, with sizes; an absent prefix lists nothing.
    async fn list(&self, prefix: &str) -> StorageResult<Vec<(String, u64)>>;

    async fn stat(&self, path: &str) -> StorageResult<Meta>;
}

/// What a stored file is to storage that treats files differently: S3 Object Lock retention
/// and storage classes. Other storage ignores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectClass {
    /// Needed to restore (config, keys, snapshots, index files, tree packs, the operations
    /// log, WAL records): locked under Object Lock, always in the standard storage class.
    Metadata,
    /// A data pack: locked under Object Lock, and written in the data storage class.
    DataPack,
    /// Must stay deletable (backup markers, prune marks, temporary files, retention ledgers):
    /// never locked.
    Transient,
}

/// A storage stack, shared by the clones of a `Backend`.
pub type DynStorage = Arc<dyn Storage>;

/// A new file of a local repository: under `tmp/` first, fsynced, then renamed into place, so
/// no half file is ever visible under its name. Appending moves the bytes to the page cache,
/// so a write waiting on its fsync (which can wait on the disk for long) holds no memory.
pub struct SpillFile {
    file: std::fs::File,
    tmp: PathBuf,
}

/// A write never finished (its builder was dropped empty, or an error came first) leaves no
/// temporary file; after the rename the name is gone and this does nothing.
impl Drop for SpillFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

impl SpillFile {
    /// A new empty file in `root/tmp/`, named `name.` and random hex.
    pub(super) fn create(root: &Path, name: &str) -> std::io::Result<SpillFile> {
        let dir = root.join("tmp");
        let tmp = dir.join(format!(
            "{name}.{}",
            hex::encode(crate::crypto::random_bytes::<8>())
        ));
        std::fs::create_dir_all(&dir)?;
        let file = std::fs::File::create_new(&tmp)?;
        Ok(SpillFile { file, tmp })
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Its bytes, for storage that can only upload whole files (remote services handed a
    /// file a local layer spilled).
    pub async fn read_all(&self) -> StorageResult<Bytes> {
        tokio::fs::read(&self.tmp)
            .await
            .map(Bytes::from)
            .map_err(super::local_error)
    }

    /// Marks the file as in use for `locks::remove_stale_temp_files`, which removes temporary
    /// files no write has touched for a while.
    /// The kernel's clock, not this process's: a prune on this host compares the time with its
    /// own kernel's, and a process under a faked or skewed clock must not look idle.
    pub fn touch(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; a null `times` means "now" for both times.
        unsafe { libc::futimens(self.file.as_raw_fd(), std::ptr::null()) };
    }

    /// Appends bytes (a full disk says so in words).
    pub fn append(&mut self, bytes: &[u8]) -> crate::error::Result<()> {
        self.append_io(bytes)
            .map_err(|e| super::write_err(super::local_error(e), "a new pack"))
    }

    /// Appends bytes; on an error the temporary file is removed.
    pub(super) fn append_io(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.file.write_all(bytes).inspect_err(|_| {
            let _ = std::fs::remove_file(&self.tmp);
        })
    }

    /// Fsyncs the file and renames it to `target`. On an error the temporary file stays for a
    /// retry; dropping the last handle removes it.
    pub(super) fn finish(&self, target: &Path) -> std::io::Result<()> {
        self.file.sync_all()?;
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::rename(&self.tmp, target)
    }
}

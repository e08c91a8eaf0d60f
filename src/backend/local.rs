//! A repository in a local folder. Writes skip OpenDAL: each new file is written to `tmp/`,
//! fsynced and renamed into place (`SpillFile`), and a pack being built goes straight into
//! its temporary file. Reads and listings use the file system themselves (one copy, no
//! zeroing; no runtime round trip per listed file); deletes go through OpenDAL's fs service.

use super::opendal_storage::OpenDalStorage;
use super::storage::{Meta, ObjectClass, SpillFile, Storage, StorageResult};
use async_trait::async_trait;
use bytes::Bytes;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Files stored from spilled temporary files in this process (reported with injected faults,
/// so tests see that the production write path ran under them).
pub static SPILLED_WRITES: AtomicU64 = AtomicU64::new(0);

pub struct LocalStorage {
    root: Arc<PathBuf>,
    files: OpenDalStorage,
}

impl LocalStorage {
    /// `files` is an OpenDAL fs operator on `root`.
    pub fn new(root: PathBuf, files: OpenDalStorage) -> Self {
        LocalStorage {
            root: Arc::new(root),
            files,
        }
    }
}

#[async_trait]
impl Storage for LocalStorage {
    /// Read straight from the file: one copy from the page cache into a buffer that is not
    /// zeroed first (OpenDAL's fs reader zeroes, then copies again; dump and restore read
    /// hundreds of MiB a second). A range past the end is an error, as OpenDAL makes it.
    async fn read(&self, path: &str, range: Option<Range<u64>>) -> StorageResult<Vec<u8>> {
        let file = self.root.join(path.trim_start_matches('/'));
        blocking(move || read_file(&file, range)).await
    }

    async fn write(&self, path: &str, bytes: Bytes, class: ObjectClass) -> StorageResult<()> {
        let name = path.rsplit('/').next().unwrap_or(path).to_string();
        let root = self.root.clone();
        let file = blocking(move || {
            let mut file = SpillFile::create(&root, &name)?;
            file.append_io(&bytes)?;
            Ok(file)
        })
        .await?;
        self.write_spilled(path, Arc::new(file), class).await
    }

    fn spill_file(&self, name: &str) -> Option<std::io::Result<SpillFile>> {
        Some(SpillFile::create(&self.root, name))
    }

    /// The fsync can wait on the disk for long: it runs on the runtime's blocking threads.
    async fn write_spilled(
        &self,
        path: &str,
        file: Arc<SpillFile>,
        _class: ObjectClass,
    ) -> StorageResult<()> {
        let target = self.root.join(path);
        blocking(move || file.finish(&target)).await?;
        SPILLED_WRITES.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn delete(&self, path: &str) -> StorageResult<()> {
        self.files.delete(path).await
    }

    /// Walks the folder itself, in one hand-off to a blocking thread: OpenDAL's fs lister
    /// stats each entry through the runtime (about 18 futex calls a file), which made listing
    /// a log of 245,000 entries take seconds on every command.
    async fn list(&self, prefix: &str) -> StorageResult<Vec<(String, u64)>> {
        let root = self.root.clone();
        let prefix = prefix.trim_start_matches('/').to_string();
        blocking(move || list_files(&root, &prefix)).await
    }

    /// The kernel's modification time, to the nanosecond (a cheap system call, made here).
    async fn stat(&self, path: &str) -> StorageResult<Meta> {
        let meta = std::fs::symlink_metadata(self.root.join(path)).map_err(super::local_error)?;
        Ok(Meta {
            size: meta.len(),
            modified_ns: meta.modified().ok().map(super::system_time_ns),
        })
    }
}

/// The regular files under `root/prefix` (a folder, or nothing), recursively, as paths
/// relative to `root` with their sizes, as OpenDAL's fs service lists them: a symbolic link
/// to a file counts as that file; folders, links to folders, dangling links and special
/// files are not listed.
fn list_files(root: &std::path::Path, prefix: &str) -> std::io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut folders = vec![prefix.trim_end_matches('/').to_string()];
    while let Some(folder) = folders.pop() {
        let entries = match std::fs::read_dir(root.join(&folder)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let path = match folder.is_empty() {
                true => name,
                false => format!("{folder}/{name}"),
            };
            // A file deleted since the folder was read is not listed, nor a dangling link.
            let meta = match entry.metadata() {
                Ok(m) if m.is_symlink() => std::fs::metadata(entry.path()),
                other => other,
            };
            let meta = match meta {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() && !entry.file_type()?.is_symlink() {
                folders.push(path);
            } else if meta.is_file() {
                out.push((path, meta.len()));
            }
        }
    }
    Ok(out)
}

/// Runs file system calls that can wait on the disk on the runtime's blocking threads.
pub(super) fn read_file(
    path: &std::path::Path,
    range: Option<Range<u64>>,
) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let Some(range) = range else {
        let mut all = Vec::new();
        file.read_to_end(&mut all)?;
        return Ok(all);
    };
    let len = range.end.saturating_sub(range.start);
    file.seek(SeekFrom::Start(range.start))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut bytes)?;
    if (bytes.len() as u64) < len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "{} bytes asked at {}, {} there",
                len,
                range.start,
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> StorageResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            opendal::Error::new(opendal::ErrorKind::Unexpected, "file task failed").set_source(e)
        })?
        .map_err(super::local_error)
}

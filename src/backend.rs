//! Storage through OpenDAL. Everything above this module sees a flat key/value store of
//! immutable files; this module owns the async runtime and maps URLs to OpenDAL services.

use crate::error::{Error, Result};
use crate::id::Id;
use opendal::{ErrorKind, Operator};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The kinds of files a repository holds, each under its own prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Key,
    Snapshot,
    Index,
    Pack,
    Log,
    Lock,
    PruneMark,
}

impl FileKind {
    pub fn prefix(self) -> &'static str {
        match self {
            FileKind::Key => "keys/",
            FileKind::Snapshot => "snapshots/",
            FileKind::Index => "index/",
            FileKind::Pack => "data/",
            FileKind::Log => "log/",
            FileKind::Lock => "locks/",
            FileKind::PruneMark => "prune/",
        }
    }

    /// The path of a file of this kind with this id.
    pub fn path(self, id: &Id) -> String {
        let hex = id.to_hex();
        match self {
            FileKind::Pack => format!("data/{}/{}", &hex[..2], hex),
            _ => format!("{}{}", self.prefix(), hex),
        }
    }
}

pub const CONFIG_PATH: &str = "config";

/// A repository's storage: an OpenDAL operator plus the runtime that drives it.
#[derive(Clone)]
pub struct Backend {
    op: Operator,
    rt: Arc<tokio::runtime::Runtime>,
    location: String,
}

impl Backend {
    /// Opens the storage a repository URL names. `create` allows creating a local folder.
    pub fn open(url: &str, create: bool) -> Result<Backend> {
        opendal::init_default_registry();
        let rt = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("ocvault-io")
                .enable_all()
                .build()
                .map_err(|e| Error::other(format!("cannot start I/O runtime: {e}")))?,
        );
        let (op, location) = if let Some(rest) = url.strip_prefix("memory:") {
            let _ = rest;
            (
                Operator::new(opendal::services::Memory::default())?,
                "memory:".to_string(),
            )
        } else {
            let path = url.strip_prefix("fs:").unwrap_or(url);
            if path.contains("://") {
                return Err(Error::usage(format!("unsupported repository URL {url:?}")));
            }
            let root = absolute(Path::new(path))?;
            // Checked before the operator is built: building it creates `tmp/`, which must
            // not appear in a folder that turns out to hold no repository.
            let no_config = matches!(std::fs::symlink_metadata(root.join(CONFIG_PATH)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound);
            if !create && (!root.is_dir() || no_config) {
                return Err(Error::NoRepository(root.display().to_string()));
            }
            let root_s = root
                .to_str()
                .ok_or_else(|| Error::usage("repository path must be UTF-8"))?
                .to_string();
            let op = Operator::via_iter(
                "fs",
                [
                    ("root".to_string(), root_s.clone()),
                    // Writes land in tmp/ first, are fsynced, then renamed: no half file is ever visible.
                    ("atomic_write_dir".to_string(), format!("{root_s}/tmp")),
                ],
            )?;
            (op, root_s)
        };
        Ok(Backend { op, rt, location })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    pub fn operator(&self) -> &Operator {
        &self.op
    }

    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.rt
            .block_on(self.op.read(path))
            .map(|b| b.to_vec())
            .map_err(|e| map_err(e, path))
    }

    pub fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let buf = self
            .rt
            .block_on(async { self.op.read_with(path).range(offset..offset + len).await })
            .map_err(|e| map_err(e, path))?;
        if buf.len() as u64 != len {
            return Err(Error::corrupt(
                path,
                format!("short read: {} of {len} bytes", buf.len()),
            ));
        }
        Ok(buf.to_vec())
    }

    pub fn exists(&self, path: &str) -> Result<bool> {
        Ok(self.rt.block_on(self.op.exists(path))?)
    }

    pub fn size(&self, path: &str) -> Result<u64> {
        Ok(self
            .rt
            .block_on(self.op.stat(path))
            .map_err(|e| map_err(e, path))?
            .content_length())
    }

    pub fn write(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        self.rt.block_on(write_async(&self.op, path, bytes))
    }

    /// Starts a write on the I/O runtime; the caller bounds how many run at once.
    pub fn spawn_write(&self, path: String, bytes: Vec<u8>) -> tokio::task::JoinHandle<Result<()>> {
        let op = self.op.clone();
        self.rt
            .spawn(async move { write_async(&op, &path, bytes).await })
    }

    pub fn delete(&self, path: &str) -> Result<()> {
        self.rt
            .block_on(self.op.delete(path))
            .map_err(|e| change_err(e, path, "delete"))
    }

    /// Lists the files (never folders) of one kind, with sizes.
    pub fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        let prefix = kind.prefix();
        let entries = match self
            .rt
            .block_on(async { self.op.list_with(prefix).recursive(true).await })
        {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for e in entries {
            if !e.metadata().is_file() || e.path().ends_with('/') {
                continue;
            }
            let mut size = e.metadata().content_length();
            if size == 0 {
                // Some services do not report sizes in listings.
                size = self.size(e.path()).unwrap_or(0);
            }
            out.push((e.path().to_string(), size));
        }
        Ok(out)
    }

    /// Lists the ids of one kind of file; names that are not ids are skipped.
    pub fn list_ids(&self, kind: FileKind) -> Result<Vec<(Id, u64)>> {
        Ok(self
            .list(kind)?
            .into_iter()
            .filter_map(|(p, s)| {
                p.rsplit('/')
                    .next()
                    .and_then(Id::from_hex)
                    .map(|id| (id, s))
            })
            .collect())
    }
}

async fn write_async(op: &Operator, path: &str, bytes: Vec<u8>) -> Result<()> {
    match op.write(path, bytes).await {
        Ok(_) => Ok(()),
        Err(e) => {
            remove_temp_of(op, path);
            Err(change_err(e, path, "write"))
        }
    }
}

/// OpenDAL's fs service leaves the temporary file of a failed write (`tmp/<name>.<random>`)
/// behind; on a full disk that file holds the space the next run needs, so remove it. Names
/// are content hashes of sealed bytes with random nonces, so no other writer uses the same one.
fn remove_temp_of(op: &Operator, path: &str) {
    if op.info().scheme() != "fs" {
        return;
    }
    let prefix = format!("{}.", path.rsplit('/').next().unwrap_or(path));
    let dir = Path::new(&op.info().root()).join("tmp");
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Errors of writes and deletes in words a cron mail reader acts on: a full disk, a read-only
/// repository.
fn change_err(e: opendal::Error, path: &str, verb: &str) -> Error {
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                    return Error::Backend(format!(
                        "cannot {verb} {path}: no space left on the repository's storage ({io})"
                    ))
                }
                Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => {
                    return Error::Backend(format!(
                        "cannot {verb} {path}: the repository is read-only for this user ({io})"
                    ))
                }
                _ => {}
            }
        }
        source = s.source();
    }
    if e.kind() == ErrorKind::PermissionDenied {
        return Error::Backend(format!(
            "cannot {verb} {path}: the repository is read-only for this user"
        ));
    }
    map_err(e, path)
}

fn map_err(e: opendal::Error, path: &str) -> Error {
    match e.kind() {
        ErrorKind::NotFound => Error::Backend(format!("{path}: not found")),
        ErrorKind::PermissionDenied => Error::Backend(format!("{path}: permission denied")),
        _ => e.into(),
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .map_err(|e| Error::io(".", e))?
            .join(p))
    }
}

pub fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Backend(m) if m.ends_with(": not found"))
}

//! Storage through OpenDAL. Everything above this module sees a flat key/value store of
//! immutable files; this module owns the async runtime and maps URLs to OpenDAL services.

mod faults;
pub mod location;

use crate::error::{Error, Result};
use crate::id::Id;
use faults::{Fault, Faults, Op};
use opendal::{ErrorKind, Operator};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// How to reach storage beyond the URL: `-o key=value` options and the connection limit.
#[derive(Clone, Debug, Default)]
pub struct BackendSettings {
    pub options: Vec<String>,
    /// Operations in flight at once; 0 means the default.
    pub connections: usize,
}

pub const DEFAULT_CONNECTIONS: usize = 8;

/// Retries with exponential backoff for transient errors.
#[derive(Clone, Copy, Debug)]
struct RetryPolicy {
    max_retries: u32,
    first_delay: Duration,
    max_delay: Duration,
}

/// A repository's storage: an OpenDAL operator plus the runtime that drives it.
#[derive(Clone)]
pub struct Backend {
    op: Operator,
    rt: Arc<tokio::runtime::Runtime>,
    location: String,
    rename_writes: bool,
    retry: RetryPolicy,
    faults: Option<Arc<Faults>>,
    /// Whole files kept for small ranged reads, on backends where each request costs a round
    /// trip (tree blobs are read one by one, thousands per walk). None on local disk.
    whole_files: Option<Arc<Mutex<WholeFileCache>>>,
    /// Remote services: each request waits on the network.
    remote: bool,
    connections: usize,
    /// A local repository's folder (writes there skip OpenDAL: see `LocalWrite`).
    local_root: Option<Arc<std::path::PathBuf>>,
    /// Tests: called with the prefix after each listing, to act between a listing and the
    /// reads that follow it (another process deleting what was listed) deterministically.
    list_hook: Option<ListHook>,
}

/// See `Backend::set_list_hook`.
pub type ListHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Most recently used whole files, up to a byte budget.
#[derive(Default)]
struct WholeFileCache {
    files: VecDeque<(String, Arc<Vec<u8>>)>,
    bytes: usize,
}

const WHOLE_FILE_CACHE_BYTES: usize = 64 << 20;

impl Backend {
    /// Opens the storage a repository URL names. `create` allows creating a local folder.
    pub fn open(url: &str, create: bool) -> Result<Backend> {
        Self::open_with(url, &BackendSettings::default(), create)
    }

    pub fn open_with(url: &str, settings: &BackendSettings, create: bool) -> Result<Backend> {
        // Services plus the HTTP transport (reqwest) that s3 and webdav use.
        opendal::install_default();
        let mut opts = location::parse_options(&settings.options)?;
        let loc = location::parse(url, &mut opts)?;
        let retry = RetryPolicy {
            max_retries: take_num(&mut opts, "retry.max", 6)? as u32,
            first_delay: Duration::from_millis(take_num(&mut opts, "retry.delay_ms", 200)?),
            max_delay: Duration::from_secs(10),
        };
        let timeout = Duration::from_secs(take_num(&mut opts, "timeout", 120)?);
        let faults = Faults::from_options(&mut opts)?.map(Arc::new);
        if let Some(k) = opts.keys().next() {
            return Err(Error::usage(format!(
                "option {k} does not apply to {} repositories",
                loc.scheme
            )));
        }
        if let Some(root) = &loc.local_root {
            // Checked before the operator is built: building it creates a missing root folder,
            // which must not appear where no repository is.
            let config = std::fs::symlink_metadata(root.join(CONFIG_PATH));
            if matches!(&config, Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied) {
                return Err(Error::Backend(format!(
                    "permission denied on {}: this user cannot read the repository folder",
                    loc.display
                )));
            }
            let no_config = matches!(config, Err(e) if e.kind() == std::io::ErrorKind::NotFound);
            if !create && (!root.is_dir() || no_config) {
                return Err(Error::NoRepository(loc.display.clone()));
            }
        }
        let rt = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("ocvault-io")
                .enable_all()
                .build()
                .map_err(|e| Error::other(format!("cannot start I/O runtime: {e}")))?,
        );
        let connections = if settings.connections == 0 {
            DEFAULT_CONNECTIONS
        } else {
            settings.connections
        };
        let remote = loc.local_root.is_none() && loc.scheme != "memory";
        // The sftp service connects from inside the runtime.
        let op = {
            let _guard = rt.enter();
            Operator::via_iter(loc.scheme.as_str(), loc.config)
                .map_err(|e| Error::usage(format!("{}: {}", loc.display, one_line(&e))))?
        };
        let op = op
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(timeout)
                    .with_io_timeout(timeout),
            )
            .layer(opendal::layers::ConcurrentLimitLayer::new(connections));
        Ok(Backend {
            op,
            rt,
            location: loc.display,
            rename_writes: loc.rename_writes,
            retry,
            faults,
            whole_files: remote.then(|| Arc::new(Mutex::new(WholeFileCache::default()))),
            remote,
            connections,
            local_root: loc.local_root.map(Arc::new),
            list_hook: None,
        })
    }

    /// For tests: runs `hook` with the prefix after every listing this backend (and its
    /// clones made afterwards) makes.
    pub fn set_list_hook(&mut self, hook: ListHook) {
        self.list_hook = Some(hook);
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// Runs `f`, which reads whole files in parallel with rayon, on a pool sized for this
    /// storage: a remote request mostly waits on the network, so as many threads as
    /// connections; on local disk the CPU count, since more would only hold more buffers.
    pub fn with_read_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self.read_pool() {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// The pool `with_read_pool` runs on, for callers that run on it many times; `None`
    /// means rayon's global pool.
    pub fn read_pool(&self) -> Option<rayon::ThreadPool> {
        if !self.remote || self.connections <= rayon::current_num_threads() {
            return None;
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(self.connections)
            .thread_name(|i| format!("ocvault-read-{i}"))
            .build()
            .ok()
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Faults injected so far in this process by `fault.*` options.
    pub fn injected_faults() -> u64 {
        faults::INJECTED.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs one storage operation, retrying transient errors with exponential backoff.
    async fn attempt<T, F, Fut>(&self, mut f: F) -> opendal::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = opendal::Result<T>>,
    {
        let mut delay = self.retry.first_delay;
        let mut tries = 0u32;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                // A full disk does not empty itself within the retry window.
                Err(e)
                    if e.is_temporary() && !is_no_space(&e) && tries < self.retry.max_retries =>
                {
                    tries += 1;
                    // Full jitter keeps many clients from retrying in step.
                    let sleep = delay.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                    tokio::time::sleep(sleep).await;
                    delay = (delay * 2).min(self.retry.max_delay);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// An injected failure for this attempt, if the fault layer decides so.
    async fn fault(&self, op: Op) -> opendal::Result<Option<Fault>> {
        match &self.faults {
            None => Ok(None),
            Some(f) => match f.inject(op).await {
                Some(Fault::Fail(e)) => Err(e),
                other => Ok(other),
            },
        }
    }

    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.rt.block_on(self.read_async(path))
    }

    /// `read` for tasks on the I/O runtime (`runtime().spawn`), so many reads can be in
    /// flight without a thread each.
    pub async fn read_async(&self, path: &str) -> Result<Vec<u8>> {
        self.attempt(|| async {
            self.fault(Op::Read).await?;
            self.op.read(path).await.map(|b| b.to_vec())
        })
        .await
        .map_err(|e| map_err(e, path))
    }

    pub fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let buf = self
            .rt
            .block_on(self.attempt(|| async {
                self.fault(Op::Read).await?;
                self.op.read_with(path).range(offset..offset + len).await
            }))
            .map_err(|e| map_err(e, path))?;
        if buf.len() as u64 != len {
            return Err(Error::corrupt(
                path,
                format!("short read: {} of {len} bytes", buf.len()),
            ));
        }
        Ok(buf.to_vec())
    }

    /// A small range of a file of known size that is likely read again nearby (a tree blob in
    /// a tree pack): on remote backends the whole file is fetched once and kept.
    pub fn read_range_cached(
        &self,
        path: &str,
        size: u64,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let Some(cache) = &self.whole_files else {
            return self.read_range(path, offset, len);
        };
        if size > WHOLE_FILE_CACHE_BYTES as u64 / 2 || offset + len > size {
            return self.read_range(path, offset, len);
        }
        let hit = {
            let c = cache.lock().unwrap();
            c.files
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, b)| b.clone())
        };
        let bytes = match hit {
            Some(b) => b,
            None => {
                let b = Arc::new(self.read(path)?);
                if b.len() as u64 != size {
                    return Err(Error::corrupt(
                        path,
                        format!("{} bytes, the index says {size}", b.len()),
                    ));
                }
                let mut c = cache.lock().unwrap();
                c.bytes += b.len();
                c.files.push_back((path.to_string(), b.clone()));
                while c.bytes > WHOLE_FILE_CACHE_BYTES {
                    let (_, old) = c.files.pop_front().expect("non-empty");
                    c.bytes -= old.len();
                }
                b
            }
        };
        Ok(bytes[offset as usize..(offset + len) as usize].to_vec())
    }

    pub fn exists(&self, path: &str) -> Result<bool> {
        self.rt
            .block_on(self.attempt(|| async {
                self.fault(Op::Read).await?;
                self.op.exists(path).await
            }))
            .map_err(|e| map_err(e, path))
    }

    /// The file's modification time by the storage's own clock (the server's, or the kernel's
    /// on local disk), in ns since the epoch; `None` when the service does not report one.
    pub fn modified_ns(&self, path: &str) -> Result<Option<i64>> {
        if let Some(root) = &self.local_root {
            return match std::fs::symlink_metadata(root.join(path)).and_then(|m| m.modified()) {
                Ok(t) => Ok(Some(system_time_ns(t))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(Error::Backend(format!("{path}: not found")))
                }
                Err(e) => Err(Error::io(path, e)),
            };
        }
        let meta = self
            .rt
            .block_on(self.attempt(|| async {
                self.fault(Op::Read).await?;
                self.op.stat(path).await
            }))
            .map_err(|e| map_err(e, path))?;
        Ok(meta
            .last_modified()
            .map(|t| t.into_inner().as_nanosecond() as i64))
    }

    pub fn size(&self, path: &str) -> Result<u64> {
        self.rt
            .block_on(self.attempt(|| async {
                self.fault(Op::Read).await?;
                self.op.stat(path).await.map(|m| m.content_length())
            }))
            .map_err(|e| map_err(e, path))
    }

    pub fn write(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        if let Some(root) = self.local_writes() {
            return LocalWrite::start(root, path, bytes)
                .and_then(|w| w.finish(root, path))
                .map_err(|e| local_err(e, path));
        }
        self.rt.block_on(self.write_async(path, bytes))
    }

    /// The folder of a local repository whose writes go through `LocalWrite`; None for other
    /// services and where faults are injected (those go through OpenDAL and its retries).
    fn local_writes(&self) -> Option<&Arc<std::path::PathBuf>> {
        self.local_root.as_ref().filter(|_| self.faults.is_none())
    }

    /// Starts a write on the I/O runtime; the caller bounds how many run at once. On local
    /// disk the bytes are written to the page cache before this returns, so the caller's
    /// buffer is freed at once and only the fsync and rename run in the background.
    pub fn spawn_write(&self, path: String, bytes: Vec<u8>) -> tokio::task::JoinHandle<Result<()>> {
        if let Some(root) = self.local_writes() {
            let root = root.clone();
            let written = LocalWrite::start(&root, &path, bytes);
            return self.rt.spawn_blocking(move || {
                written
                    .and_then(|w| w.finish(&root, &path))
                    .map_err(|e| local_err(e, &path))
            });
        }
        let this = self.clone();
        self.rt
            .spawn(async move { this.write_async(&path, bytes).await })
    }

    /// On a local repository (without injected faults), a new temporary file to write a file
    /// of unknown name into piece by piece; `spawn_finish_local` gives it its name.
    pub fn local_file(&self) -> Option<Result<LocalWrite>> {
        self.local_writes()
            .map(|root| LocalWrite::create(root, "pack").map_err(|e| local_err(e, "tmp/")))
    }

    /// Fsyncs a file from `local_file` and renames it to `path`, in the background.
    pub fn spawn_finish_local(
        &self,
        file: LocalWrite,
        path: String,
    ) -> tokio::task::JoinHandle<Result<()>> {
        let root = self.local_root.clone().expect("a local repository");
        self.rt
            .spawn_blocking(move || file.finish(&root, &path).map_err(|e| local_err(e, &path)))
    }

    /// A finished task that failed with `e`, for callers that wait on write handles.
    pub fn failed_write(&self, e: Error) -> tokio::task::JoinHandle<Result<()>> {
        self.rt.spawn(async move { Err(e) })
    }

    async fn write_async(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let buf = opendal::Buffer::from(bytes);
        self.attempt(|| async {
            match self.fault(Op::Write).await {
                Ok(Some(Fault::Cut)) => {
                    let _ = self.op.write(path, buf.slice(0..buf.len() / 2)).await;
                    Err(opendal::Error::new(
                        opendal::ErrorKind::Unexpected,
                        "injected write cut short",
                    )
                    .set_temporary())
                }
                Ok(_) => self.write_once(path, buf.clone()).await,
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| change_err(e, path, "write"))
    }

    /// `tmp/` of a local repository, where writes land before they are renamed into place.
    pub fn local_temp_dir(&self) -> Option<std::path::PathBuf> {
        let info = self.op.info();
        (info.scheme() == "fs").then(|| std::path::Path::new(&info.root()).join("tmp"))
    }

    /// One write attempt. Where the service could leave half an object under its final name,
    /// the bytes go to tmp/ first and are renamed into place.
    async fn write_once(&self, path: &str, buf: opendal::Buffer) -> opendal::Result<()> {
        if !self.rename_writes {
            return self.op.write(path, buf).await.map(|_| ());
        }
        let tmp = format!("tmp/{}", hex::encode(crate::crypto::random_bytes::<12>()));
        let res = async {
            self.op.write(&tmp, buf).await?;
            self.op.rename(&tmp, path).await
        }
        .await;
        if res.is_err() {
            let _ = self.op.delete(&tmp).await;
        }
        res
    }

    /// Deletes a file; one that is already gone counts as deleted (a concurrent prune, or a
    /// retry after a lost reply, got there first), as on S3.
    pub fn delete(&self, path: &str) -> Result<()> {
        match self.rt.block_on(self.attempt(|| async {
            self.fault(Op::Delete).await?;
            self.op.delete(path).await
        })) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            r => r.map_err(|e| change_err(e, path, "delete")),
        }
    }

    /// Lists the files (never folders) under a prefix, with sizes.
    pub fn list_prefix(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let entries = match self.rt.block_on(self.attempt(|| async {
            self.fault(Op::List).await?;
            self.op.list_with(prefix).recursive(true).await
        })) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(map_err(e, prefix)),
        };
        let mut out = Vec::new();
        for e in entries {
            // Some services list the folder itself, or folders, among the entries.
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
        if let Some(hook) = &self.list_hook {
            hook(prefix);
        }
        Ok(out)
    }

    /// Lists the files (never folders) of one kind, with sizes.
    pub fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        self.list_prefix(kind.prefix())
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

fn take_num(opts: &mut location::Options, key: &str, default: u64) -> Result<u64> {
    match opts.remove(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| Error::usage(format!("option {key}={v}: not a number"))),
    }
}

fn one_line(e: &opendal::Error) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A file of a local repository being written: under `tmp/` first, fsynced, then renamed into
/// place, so no half file is ever visible under its name. `start` consumes the bytes once
/// they are in the page cache, so a write waiting on its fsync (which can wait on the disk for
/// long) holds no memory; OpenDAL's fs writer keeps the buffer until it is done.
pub struct LocalWrite {
    file: std::fs::File,
    tmp: std::path::PathBuf,
}

/// A write never finished (its builder was dropped empty, or an error came first) leaves no
/// temporary file; after the rename the name is gone and this does nothing.
impl Drop for LocalWrite {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

impl LocalWrite {
    fn create(root: &std::path::Path, name: &str) -> std::io::Result<LocalWrite> {
        let dir = root.join("tmp");
        let tmp = dir.join(format!(
            "{name}.{}",
            hex::encode(crate::crypto::random_bytes::<8>())
        ));
        std::fs::create_dir_all(&dir)?;
        let file = std::fs::File::create_new(&tmp)?;
        Ok(LocalWrite { file, tmp })
    }

    fn start(root: &std::path::Path, path: &str, bytes: Vec<u8>) -> std::io::Result<LocalWrite> {
        let mut w = LocalWrite::create(root, path.rsplit('/').next().unwrap_or(path))?;
        w.append_io(&bytes)?;
        Ok(w)
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

    /// Appends bytes of a new pack (a full disk says so in words).
    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.append_io(bytes)
            .map_err(|e| local_err(e, "a new pack"))
    }

    /// Appends bytes; on an error the temporary file is removed.
    fn append_io(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.file.write_all(bytes).inspect_err(|_| {
            let _ = std::fs::remove_file(&self.tmp);
        })
    }

    fn finish(self, root: &std::path::Path, path: &str) -> std::io::Result<()> {
        let target = root.join(path);
        let res = self.file.sync_all().and_then(|()| {
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::rename(&self.tmp, &target)
        });
        if res.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        res
    }
}

fn local_err(e: std::io::Error, path: &str) -> Error {
    change_err(
        opendal::Error::new(ErrorKind::Unexpected, "write").set_source(e),
        path,
        "write",
    )
}

/// The operating system error under an OpenDAL error, if there is one.
fn io_source(e: &opendal::Error) -> Option<&std::io::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

fn is_no_space(e: &opendal::Error) -> bool {
    io_source(e)
        .and_then(|io| io.raw_os_error())
        .is_some_and(|c| c == libc::ENOSPC || c == libc::EDQUOT)
}

/// Errors of writes and deletes in words that say what to do: a full disk, a read-only
/// repository.
fn change_err(e: opendal::Error, path: &str, verb: &str) -> Error {
    if let Some(io) = io_source(&e) {
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

/// A `SystemTime` as ns since the epoch (negative before it).
pub fn system_time_ns(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

pub fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Backend(m) if m.ends_with(": not found"))
}

//! Storage. Everything above this module sees a flat key/value store of immutable files
//! through `Backend`, a facade over a stack of layers that each implement `Storage`:
//!
//! ```text
//! DiskCache (remote only)      index files, snapshots, tree packs kept on local disk
//!                              between commands (once the repository's id is known)
//! TreePackCache (remote only)  whole tree packs kept for small ranged reads
//!   Retry                      temporary errors retried with backoff (backon)
//!     Faults (-o fault.*)      injected failures, latency, cut writes (tests)
//!       S3Storage (s3 only)    Object Lock / storage-class PUTs and the original-versions
//!                              view through S3Api; everything else through OpenDAL below
//!         LocalStorage | OpenDalStorage   the files: a local folder, or any OpenDAL service
//! ```
//!
//! Threads: all storage I/O runs as async tasks on one tokio runtime shared by every
//! `Backend` of the process (2 workers, at most 64 blocking threads for local file
//! operations); synchronous callers wait on it with `block_on`. OpenDAL services are bounded
//! by `connections` requests in flight; writers bound the writes they start; parallel
//! readers wait on `read_pool`'s threads.

mod cache;
pub mod disk_cache;
mod faults;
pub mod lifecycle;
mod local;
pub mod location;
mod opendal_storage;
mod retry;
pub mod s3_storage;
pub mod s3api;
pub mod storage;

use crate::error::{Error, Result};
use crate::id::Id;
use bytes::Bytes;
use opendal::{ErrorKind, Operator};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
pub use storage::{DynStorage, Meta, ObjectClass, SpillFile, Storage, StorageError, StorageResult};

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
    /// Format version 2: PostgreSQL WAL records, named by their WAL file name's keyed hash.
    Wal,
    /// Format version 3: ledgers of the Object Lock retention `forget` extended.
    Retention,
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
            FileKind::Wal => "wal/",
            FileKind::Retention => "retention/",
        }
    }

    /// How storage keeps files of this kind (Object Lock, storage class). A pack of tree
    /// blobs is metadata; data packs are written as `ObjectClass::DataPack` by the packer.
    pub fn object_class(self) -> ObjectClass {
        match self {
            FileKind::Lock | FileKind::PruneMark | FileKind::Retention => ObjectClass::Transient,
            _ => ObjectClass::Metadata,
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
    /// The local cache's root (`--cache-dir`); `None`: `host::cache_root()`.
    pub cache_root: Option<std::path::PathBuf>,
    /// `--no-cache`: remote repositories keep no index files, snapshots or tree packs on
    /// local disk.
    pub no_cache: bool,
    /// Where the storage's variables (credentials, region, endpoint) come from: the process
    /// environment, or a set of this backend's own (a `copy` destination in another account).
    pub env: location::StorageEnv,
}

pub const DEFAULT_CONNECTIONS: usize = 8;

/// Whole tree packs kept by `TreePackCache` on remote storage.
const TREE_PACK_CACHE_BYTES: u64 = 64 << 20;

/// A repository's storage: the layer stack, the shared I/O runtime that drives it, and what
/// callers need to know of where it is.
#[derive(Clone)]
pub struct Backend {
    storage: DynStorage,
    rt: Arc<tokio::runtime::Runtime>,
    location: String,
    /// Remote services: each request waits on the network.
    remote: bool,
    connections: usize,
    /// A local repository's folder.
    local_root: Option<Arc<std::path::PathBuf>>,
    /// A local repository's folder while no layer below `Retry` acts on reads (no injected
    /// faults, no test wrapper): `read_range` then reads on the calling thread. Going through
    /// the runtime costs two thread hand-offs a read, which `dump` and `restore` pay
    /// thousands of times (a pack run is often one or two blobs).
    direct_reads: Option<Arc<std::path::PathBuf>>,
    /// See `read_pool`: built on first use, shared by clones.
    read_pool: Arc<OnceLock<Option<rayon::ThreadPool>>>,
    /// Retention, storage classes, thawing and versions, where the storage has them (S3).
    lifecycle: Option<Arc<dyn lifecycle::Lifecycle>>,
    /// How files are written (Object Lock, data storage class): set from the repository's
    /// config by `apply_policy`, read by the storage layer that applies it.
    policy: Arc<std::sync::RwLock<lifecycle::WritePolicy>>,
    /// What the location asked for (`-o s3.data_storage_class`, `-o s3.original_versions`).
    s3: location::S3Settings,
    /// Tests: called with the prefix after each listing, to act between a listing and the
    /// reads that follow it (another process deleting what was listed) deterministically.
    list_hook: Option<ListHook>,
    /// Remote repositories: the persistent metadata cache, until `attach_cache` inactive.
    disk_cache: Option<Arc<disk_cache::DiskCache>>,
    cache_counters: Arc<disk_cache::CacheCounters>,
    /// The local cache's root; `None` when there is none (no `$HOME`).
    cache_root: Option<std::path::PathBuf>,
    no_cache: bool,
}

/// See `Backend::set_list_hook`.
pub type ListHook = Arc<dyn Fn(&str) + Send + Sync>;

/// A local repository's file being written piece by piece (`Backend::local_file`).
pub type LocalWrite = SpillFile;

/// The I/O runtime every open `Backend` shares; it stops when the last one is dropped (which
/// also closes what services keep open on it, such as ssh sessions).
fn shared_runtime() -> Result<Arc<tokio::runtime::Runtime>> {
    static SHARED: Mutex<Weak<tokio::runtime::Runtime>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = shared.upgrade() {
        return Ok(rt);
    }
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            // Local file operations (fsyncs, OpenDAL's fs reads): far more than the callers'
            // own bounds on requests in flight ever ask for at once.
            .max_blocking_threads(64)
            .thread_name("ocvault-io")
            .enable_all()
            .build()
            .map_err(|e| Error::other(format!("cannot start I/O runtime: {e}")))?,
    );
    *shared = Arc::downgrade(&rt);
    Ok(rt)
}

impl Backend {
    /// Opens the storage a repository URL names. `create` allows creating a local folder.
    pub fn open(url: &str, create: bool) -> Result<Backend> {
        Self::open_with(url, &BackendSettings::default(), create)
    }

    pub fn open_with(url: &str, settings: &BackendSettings, create: bool) -> Result<Backend> {
        // Services plus the HTTP transport (reqwest) that s3 and webdav use.
        opendal::install_default();
        let mut opts = location::parse_options(&settings.options)?;
        let loc = location::parse_with_env(url, &mut opts, &settings.env)?;
        let retry = retry::RetryPolicy {
            max_retries: take_num(&mut opts, "retry.max", 6)? as u32,
            first_delay: Duration::from_millis(take_num(&mut opts, "retry.delay_ms", 200)?),
            max_delay: Duration::from_secs(10),
        };
        let timeout = Duration::from_secs(take_num(&mut opts, "timeout", 120)?);
        let faults = faults::FaultPlan::from_options(&mut opts)?;
        if let Some(k) = opts.keys().next() {
            return Err(Error::usage(format!(
                "option {k} does not apply to {} repositories",
                loc.scheme
            )));
        }
        if let Some(root) = &loc.local_root {
            check_local_root(root, &loc.display, create)?;
        }
        let rt = shared_runtime()?;
        let connections = if settings.connections == 0 {
            DEFAULT_CONNECTIONS
        } else {
            settings.connections
        };
        let remote = loc.local_root.is_none() && loc.scheme != "memory";
        let policy = Arc::new(std::sync::RwLock::new(lifecycle::WritePolicy::default()));
        let mut lifecycle: Option<Arc<dyn lifecycle::Lifecycle>> = None;
        let mut storage: DynStorage = if loc.scheme == "s3" {
            let api = s3api::S3Api::new(&loc.config, timeout, connections)
                .map(Arc::new)
                .map_err(|e| Error::usage(format!("{}: {}", loc.display, one_line(&e))))?;
            // The original-versions view reads past what the current versions say; the
            // lifecycle's listings, thaws and retention calls act on current versions, so
            // the view goes without them (a cold pack then fails on its read).
            if !loc.s3.original_versions {
                lifecycle = Some(Arc::new(s3_storage::S3Lifecycle::new(api.clone(), retry)));
            }
            s3_storage::S3Storage::open(api, policy.clone(), loc.s3.original_versions)
        } else {
            let op = {
                if loc.scheme == "sftp" {
                    SFTP_OPENED.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                // The sftp service connects from inside the runtime.
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
            let files = opendal_storage::OpenDalStorage::new(op, loc.rename_writes);
            match &loc.local_root {
                Some(root) => Arc::new(local::LocalStorage::new(root.clone(), files)),
                None => Arc::new(files),
            }
        };
        let direct_reads = match faults {
            None => loc.local_root.clone().map(Arc::new),
            Some(_) => None,
        };
        if let Some(plan) = faults {
            storage = faults::Faults::wrap(storage, plan);
        }
        storage = retry::Retry::wrap(storage, retry);
        let cache_counters = Arc::new(disk_cache::CacheCounters::default());
        let mut disk_cache = None;
        if remote {
            storage = cache::TreePackCache::wrap(storage, TREE_PACK_CACHE_BYTES);
            let cache = disk_cache::DiskCache::wrap(storage, cache_counters.clone());
            storage = cache.clone();
            disk_cache = Some(cache);
        }
        Ok(Backend {
            storage,
            rt,
            location: loc.display,
            remote,
            connections,
            local_root: loc.local_root.map(Arc::new),
            direct_reads,
            read_pool: Arc::new(OnceLock::new()),
            lifecycle,
            policy,
            s3: loc.s3,
            list_hook: None,
            disk_cache,
            cache_counters,
            cache_root: settings.cache_root.clone().or_else(crate::host::cache_root),
            no_cache: settings.no_cache,
        })
    }

    /// Starts the persistent metadata cache of a remote repository whose id is now known
    /// (unless `--no-cache`); nothing for local ones.
    pub fn attach_cache(&self, repository_id: &Id) {
        if let (Some(cache), Some(root), false) =
            (&self.disk_cache, &self.cache_root, self.no_cache)
        {
            cache.attach(disk_cache::repository_dir(root, repository_id));
        }
    }

    /// The local cache's root (`--cache-dir`, `$OCVAULT_CACHE_DIR`, XDG), if there is one;
    /// none with `--no-cache`, which keeps nothing on local disk (metadata, the log's heads,
    /// a write-only key's own trees).
    pub fn cache_root(&self) -> Option<&std::path::Path> {
        match self.no_cache {
            true => None,
            false => self.cache_root.as_deref(),
        }
    }

    /// Downloads of index files, snapshots and tree packs so far, and cache hits (remote
    /// repositories; all zero for local ones).
    pub fn cache_stats(&self) -> disk_cache::CacheStats {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.cache_counters;
        disk_cache::CacheStats {
            index_downloads: c.index_downloads.load(Relaxed),
            snapshot_downloads: c.snapshot_downloads.load(Relaxed),
            tree_pack_downloads: c.tree_pack_downloads.load(Relaxed),
            cache_hits: c.hits.load(Relaxed),
        }
    }

    /// The layer stack, to wrap it further (tests) or to use it directly.
    pub fn storage(&self) -> &DynStorage {
        &self.storage
    }

    /// For tests: runs `hook` with the prefix after every listing this backend (and its
    /// clones made afterwards) makes.
    pub fn set_list_hook(&mut self, hook: ListHook) {
        self.list_hook = Some(hook);
    }

    /// For tests: storage that has retention, classes and versions (a fake `Lifecycle`).
    pub fn set_lifecycle_for_tests(&mut self, lc: Arc<dyn lifecycle::Lifecycle>) {
        self.set_lifecycle(lc, |s| s);
    }

    /// For tests: wraps the layer stack (a layer that refuses some requests).
    #[cfg(test)]
    pub(crate) fn wrap_storage_for_tests(&mut self, wrap: impl FnOnce(DynStorage) -> DynStorage) {
        self.direct_reads = None;
        self.storage = wrap(self.storage.clone());
    }

    /// For tests: storage classes and thawing from `lifecycle` (a fake over local storage,
    /// `cold::testing`), and the layer stack wrapped by `wrap` (which refuses reads of
    /// archived packs as S3 does), for this backend and clones made afterwards.
    pub fn set_lifecycle(
        &mut self,
        lifecycle: Arc<dyn lifecycle::Lifecycle>,
        wrap: impl FnOnce(DynStorage) -> DynStorage,
    ) {
        self.lifecycle = Some(lifecycle);
        self.direct_reads = None;
        self.storage = wrap(self.storage.clone());
    }

    /// Requests in flight at once (`--backend-connections`).
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// Retention, storage classes, thawing and versions: `Some` on S3.
    pub fn lifecycle(&self) -> Option<&Arc<dyn lifecycle::Lifecycle>> {
        self.lifecycle.as_ref()
    }

    /// Sets how files are written from here on (the repository's config, once read).
    pub fn apply_policy(&self, policy: lifecycle::WritePolicy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    /// The write policy in force.
    pub fn policy(&self) -> lifecycle::WritePolicy {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the location asked for beyond the service (`-o s3.*` settings).
    pub fn s3_settings(&self) -> &location::S3Settings {
        &self.s3
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// Runs `f`, which reads whole files in parallel with rayon, on the pool `read_pool`
    /// gives.
    pub fn with_read_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self.read_pool() {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// The threads that wait on parallel reads (restore, dump, `check --read-data`): a remote
    /// request mostly waits on the network, so as many threads as connections, built once
    /// per backend; on local disk `None`, rayon's global pool (the CPU count), since more
    /// threads would only hold more buffers.
    pub fn read_pool(&self) -> Option<&rayon::ThreadPool> {
        self.read_pool
            .get_or_init(|| {
                if !self.remote || self.connections <= rayon::current_num_threads() {
                    return None;
                }
                rayon::ThreadPoolBuilder::new()
                    .num_threads(self.connections)
                    .thread_name(|i| format!("ocvault-read-{i}"))
                    .build()
                    .ok()
            })
            .as_ref()
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Faults injected so far in this process by `fault.*` options.
    pub fn injected_faults() -> u64 {
        faults::INJECTED.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Files a local repository stored from spilled temporary files so far in this process
    /// (packs built in place, and every other local write).
    pub fn spilled_writes() -> u64 {
        local::SPILLED_WRITES.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.rt.block_on(self.read_async(path))
    }

    /// `read` for tasks on the I/O runtime (`runtime().spawn`), so many reads can be in
    /// flight without a thread each.
    pub async fn read_async(&self, path: &str) -> Result<Vec<u8>> {
        self.storage
            .read(path, None)
            .await
            .map_err(|e| map_err(e, path))
    }

    pub fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if let Some(root) = &self.direct_reads {
            let file = root.join(path.trim_start_matches('/'));
            return local::read_file(&file, Some(offset..offset + len))
                .map_err(|e| map_err(local_error(e), path));
        }
        let buf = self
            .rt
            .block_on(self.storage.read(path, Some(offset..offset + len)))
            .map_err(|e| map_err(e, path))?;
        check_len(path, buf, len)
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
        let buf = self
            .rt
            .block_on(self.storage.read_nearby(path, size, offset..offset + len))
            .map_err(|e| map_err(e, path))?;
        check_len(path, buf, len)
    }

    pub fn exists(&self, path: &str) -> Result<bool> {
        match self.rt.block_on(self.storage.stat(path)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(map_err(e, path)),
        }
    }

    /// The file's modification time by the storage's own clock (the server's, or the kernel's
    /// on local disk), in ns since the epoch; `None` when the service does not report one.
    pub fn modified_ns(&self, path: &str) -> Result<Option<i64>> {
        self.stat(path).map(|m| m.modified_ns)
    }

    pub fn size(&self, path: &str) -> Result<u64> {
        self.stat(path).map(|m| m.size)
    }

    fn stat(&self, path: &str) -> Result<Meta> {
        self.rt
            .block_on(self.storage.stat(path))
            .map_err(|e| map_err(e, path))
    }

    pub fn write(&self, path: &str, bytes: Vec<u8>, class: ObjectClass) -> Result<()> {
        self.rt.block_on(self.store(path.to_string(), bytes, class))
    }

    /// Starts a write on the I/O runtime; the caller bounds how many run at once. On local
    /// disk the bytes are written to the page cache before this returns, so the caller's
    /// buffer is freed at once and only the fsync and rename run in the background.
    pub fn spawn_write(
        &self,
        path: String,
        bytes: Vec<u8>,
        class: ObjectClass,
    ) -> tokio::task::JoinHandle<Result<()>> {
        self.rt.spawn(self.store(path, bytes, class))
    }

    /// A write of `bytes` to `path`. Where the storage spills (local disk), the bytes go to
    /// a temporary file now, on the caller's thread, and the future only stores that file.
    fn store(
        &self,
        path: String,
        bytes: Vec<u8>,
        class: ObjectClass,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        let storage = self.storage.clone();
        let name = path.rsplit('/').next().unwrap_or(&path);
        let spilled = storage.spill_file(name).map(|file| {
            file.and_then(|mut f| {
                f.append_io(&bytes)?;
                Ok(f)
            })
        });
        let bytes = match spilled {
            Some(_) => Bytes::new(),
            None => Bytes::from(bytes),
        };
        async move {
            match spilled {
                Some(Ok(file)) => storage.write_spilled(&path, Arc::new(file), class).await,
                Some(Err(e)) => Err(local_error(e)),
                None => storage.write(&path, bytes, class).await,
            }
            .map_err(|e| write_err(e, &path))
        }
    }

    /// Where the storage is a local folder (faults or not), a new temporary file to write a
    /// file of unknown name into piece by piece; `spawn_finish_local` gives it its name.
    pub fn local_file(&self) -> Option<Result<LocalWrite>> {
        self.storage
            .spill_file("pack")
            .map(|file| file.map_err(|e| write_err(local_error(e), "tmp/")))
    }

    /// Stores a file from `local_file` under `path` (fsynced and renamed), in the background.
    pub fn spawn_finish_local(
        &self,
        file: LocalWrite,
        path: String,
        class: ObjectClass,
    ) -> tokio::task::JoinHandle<Result<()>> {
        let storage = self.storage.clone();
        self.rt.spawn(async move {
            storage
                .write_spilled(&path, Arc::new(file), class)
                .await
                .map_err(|e| write_err(e, &path))
        })
    }

    /// A finished task that failed with `e`, for callers that wait on write handles.
    pub fn failed_write(&self, e: Error) -> tokio::task::JoinHandle<Result<()>> {
        self.rt.spawn(async move { Err(e) })
    }

    /// `tmp/` of a local repository, where writes land before they are renamed into place.
    pub fn local_temp_dir(&self) -> Option<std::path::PathBuf> {
        self.local_root.as_ref().map(|root| root.join("tmp"))
    }

    /// Deletes a file; one that is already gone counts as deleted (a concurrent prune, or a
    /// retry after a lost reply, got there first), as on S3.
    pub fn delete(&self, path: &str) -> Result<()> {
        match self.rt.block_on(self.storage.delete(path)) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            r => r.map_err(|e| change_err(e, path, "delete")),
        }
    }

    /// Deletes a transient file (a backup marker, a prune mark): `Ok(false)` when the storage
    /// refuses (credentials without delete rights), which callers report as a warning; a
    /// later prune or `unlock` with delete rights removes the file.
    pub fn delete_transient(&self, path: &str) -> Result<bool> {
        match self.rt.block_on(self.storage.delete(path)) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
            Err(e) if e.kind() == ErrorKind::PermissionDenied || is_access_denied(&e) => Ok(false),
            r => r.map(|_| true).map_err(|e| change_err(e, path, "delete")),
        }
    }

    /// Lists the files (never folders) under a prefix, with sizes.
    pub fn list_prefix(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let out = self
            .rt
            .block_on(self.storage.list(prefix))
            .map_err(|e| map_err(e, prefix))?;
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

/// Refuses a local folder that holds no repository (unless creating one) or that this user
/// cannot read. Checked before the operator is built: building it creates a missing root
/// folder, which must not appear where no repository is.
fn check_local_root(root: &std::path::Path, display: &str, create: bool) -> Result<()> {
    let config = std::fs::symlink_metadata(root.join(CONFIG_PATH));
    if matches!(&config, Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied) {
        return Err(Error::Backend(format!(
            "permission denied on {display}: this user cannot read the repository folder"
        )));
    }
    let no_config = matches!(config, Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    if !create && (!root.is_dir() || no_config) {
        return Err(Error::NoRepository(display.to_string()));
    }
    Ok(())
}

/// A ranged read that came back short is a damaged (truncated) file.
fn check_len(path: &str, buf: Vec<u8>, len: u64) -> Result<Vec<u8>> {
    if buf.len() as u64 != len {
        return Err(Error::corrupt(
            path,
            format!("short read: {} of {len} bytes", buf.len()),
        ));
    }
    Ok(buf)
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

/// A local file system error as a storage error of the matching kind, the OS error kept as
/// its source (`change_err` reads it).
fn local_error(e: std::io::Error) -> StorageError {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Unexpected,
    };
    opendal::Error::new(kind, "local file system").set_source(e)
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

/// A local file system's refusal (read-only, no permission) under an OpenDAL error.
fn is_access_denied(e: &opendal::Error) -> bool {
    io_source(e)
        .and_then(|io| io.raw_os_error())
        .is_some_and(|c| c == libc::EROFS || c == libc::EACCES || c == libc::EPERM)
}

fn is_no_space(e: &opendal::Error) -> bool {
    io_source(e)
        .and_then(|io| io.raw_os_error())
        .is_some_and(|c| c == libc::ENOSPC || c == libc::EDQUOT)
}

fn write_err(e: opendal::Error, path: &str) -> Error {
    change_err(e, path, "write")
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

/// A storage error as the library's: a missing file is `Error::NotFound`.
fn map_err(e: opendal::Error, path: &str) -> Error {
    if s3api::is_cold_object_error(&e) {
        return Error::ColdRead(path.to_string());
    }
    match e.kind() {
        ErrorKind::NotFound => Error::NotFound(path.to_string()),
        ErrorKind::PermissionDenied => Error::Backend(format!("{path}: permission denied")),
        _ => e.into(),
    }
}

/// Set once an sftp repository is opened: only then can this process have ssh children to
/// end at exit (scanning /proc for them costs every other command a read per process).
static SFTP_OPENED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process opened an sftp repository (and so may have started ssh).
pub fn sftp_opened() -> bool {
    SFTP_OPENED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A `SystemTime` as ns since the epoch (negative before it).
pub fn system_time_ns(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

/// Whether `e` says a file is not there (kept for callers; `Error::NotFound` is the kind).
pub fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::NotFound(_))
}

#[cfg(test)]
mod tests;

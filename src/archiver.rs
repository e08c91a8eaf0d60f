//! The backup pipeline. Data flows one way:
//!
//! walk (this thread) → read + chunk + hash + dedup + compress + seal (rayon workers, bounded
//! number of files in flight) → pack (packer thread) → upload (I/O runtime, bounded).
//! Directory trees are assembled in post-order on their own thread as their files finish.

use crate::chunker::{ChunkStream, Chunker};
use crate::error::{Error, Result};
use crate::format::{
    BlobType, IndexFile, Node, NodeKind, PgBaseBackup, Snapshot, SnapshotSummary, Tree,
};
use crate::host::NameCache;
use crate::id::Id;
use crate::id::{DataId, SnapshotId, TreeId};
use crate::index::Index;
use crate::packer::{self, Indexing, Packed, Packer, PackerParts, PACKS_PER_INDEX};
use crate::repository::IndexedRepository;
use crate::session::IndexedWriteSession;
use crate::tree;
use crate::wal::basebackup::LabelSniffer;
use crossbeam_channel::{bounded, Receiver, Sender};
use rayon::prelude::*;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

/// Files handed to the workers at once; bounds the queue length.
const FILES_IN_FLIGHT: usize = 256;
/// File bytes handed to the workers at once (a file counts its size, at least 4 KiB, at most
/// the two batches a large file holds): bounds memory, whatever the mix of file sizes.
const BYTES_IN_FLIGHT: u64 = 8 << 20;
/// Bytes of a large file or stream read and cut per batch.
const BATCH_BYTES: usize = 2 << 20;
/// Batches of a `--stdin`/`--command` stream read ahead of the ones being stored.
const STREAM_BATCHES_AHEAD: u64 = 3;

/// Which snapshot to compare against.
#[derive(Clone, Debug, Default)]
pub enum ParentChoice {
    #[default]
    Auto,
    None,
    Id(String),
}

/// A stream to store as one file in the snapshot (`--stdin`, `--command`).
pub struct StreamSource {
    pub name: String,
    pub reader: Box<dyn Read + Send>,
    /// Called once the stream is read to its end, before the snapshot is saved; an error
    /// (a dump command that failed) means no snapshot.
    pub finish: Option<Box<dyn FnOnce() -> Result<()> + Send>>,
}

#[derive(Default)]
pub struct SnapshotOptions {
    pub paths: Vec<PathBuf>,
    pub stream: Option<StreamSource>,
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub time_unix_ns: Option<i64>,
    pub excludes: Vec<String>,
    pub parent: ParentChoice,
    /// Deduplicate against packs in an archive storage class instead of storing their blobs
    /// again (restoring the snapshot may then need a thaw).
    pub reuse_cold_packs: bool,
}

/// Live counters, read by the progress display.
#[derive(Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    pub bytes_added: AtomicU64,
    /// When the first source file was opened: start-up cost (repository open, index load,
    /// parent snapshot) is the time up to it (`snapshot --json`: `startup_seconds`).
    pub first_file_opened: std::sync::OnceLock<std::time::Instant>,
}

pub struct SnapshotOutcome {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    pub warnings: Vec<String>,
    /// Blobs stored again because the index had them only in packs of an archive storage
    /// class (S3 Glacier, Deep Archive), and their stored bytes.
    pub restored_blobs: u64,
    pub restored_bytes: u64,
}

struct Shared<'a> {
    packer: &'a Packer<'a>,
    chunker: Chunker,
    warnings: Mutex<Vec<String>>,
    progress: &'a Progress,
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    dirs: AtomicU64,
    bytes_read: AtomicU64,
    bytes_total: AtomicU64,
    errors: AtomicU64,
    /// A write-only key's local tree store, and the trees this snapshot stored in it.
    own_trees: Option<&'a crate::own_trees::OwnTrees>,
    own_tree_ids: Mutex<Vec<Id>>,
}

impl Shared<'_> {
    fn warn(&self, msg: String) {
        self.errors.fetch_add(1, Relaxed);
        self.warnings.lock().unwrap().push(msg);
    }

    fn store_blob(&self, blob_type: BlobType, data: &[u8]) -> Result<Id> {
        let id = self.packer.store(blob_type, data)?;
        if let (BlobType::Tree, Some(own)) = (blob_type, self.own_trees) {
            own.put(&id, data);
            self.own_tree_ids.lock().unwrap().push(id);
        }
        Ok(id)
    }

    /// Chunks and stores a whole stream; returns content ids and bytes read.
    fn store_stream<R: Read + Send>(&self, reader: R) -> std::io::Result<Result<(Vec<Id>, u64)>> {
        if rayon::current_thread_index().is_none() {
            return self.store_stream_ahead(reader);
        }
        let mut stream = ChunkStream::new(reader, self.chunker.clone(), BATCH_BYTES);
        let mut ids = Vec::new();
        let mut next = stream.next_batch()?;
        while let Some(batch) = next.take() {
            if let Err(e) = crate::interrupt::check() {
                return Ok(Err(e));
            }
            // Read the next batch while this one is hashed, compressed and sealed.
            let (read, stored) = rayon::join(
                || stream.next_batch(),
                || {
                    batch
                        .chunks
                        .par_iter()
                        .map(|r| self.store_blob(BlobType::Data, &batch.buf[r.clone()]))
                        .collect::<Result<Vec<Id>>>()
                },
            );
            match stored {
                Ok(mut v) => ids.append(&mut v),
                Err(e) => return Ok(Err(e)),
            }
            self.progress
                .bytes
                .fetch_add(batch.buf.len() as u64, Relaxed);
            next = read?;
        }
        Ok(Ok((ids, stream.bytes_read)))
    }

    /// [`Shared::store_stream`] on a thread outside the pool (a `--stdin`/`--command` stream):
    /// this thread reads and cuts up to `STREAM_BATCHES_AHEAD` batches ahead while the pool
    /// stores chunk by chunk, with no wait at the end of each batch (waiting for a batch's
    /// last chunk left a core idle a third of the time on a pg_dump).
    fn store_stream_ahead<R: Read>(&self, reader: R) -> std::io::Result<Result<(Vec<Id>, u64)>> {
        let mut stream = ChunkStream::new(reader, self.chunker.clone(), BATCH_BYTES);
        let ahead = Budget::new(STREAM_BATCHES_AHEAD, u64::MAX);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        let (done, results) = crossbeam_channel::unbounded::<(usize, Id)>();
        let mut count = 0;
        let read: std::io::Result<Result<()>> = rayon::in_place_scope(|scope| loop {
            if let Err(e) = crate::interrupt::check() {
                return Ok(Err(e));
            }
            ahead.acquire(0);
            if failed.load(Relaxed) {
                return Ok(Ok(()));
            }
            let Some(batch) = stream.next_batch()? else {
                return Ok(Ok(()));
            };
            let batch = std::sync::Arc::new(batch);
            let left = std::sync::Arc::new(AtomicU64::new(batch.chunks.len() as u64));
            for (k, range) in batch.chunks.iter().cloned().enumerate() {
                let (batch, left, done) = (batch.clone(), left.clone(), done.clone());
                let (ahead, failed, first_error) = (&ahead, &failed, &first_error);
                scope.spawn(move |_| {
                    if !failed.load(Relaxed) {
                        match self.store_blob(BlobType::Data, &batch.buf[range]) {
                            Ok(id) => {
                                let _ = done.send((count + k, id));
                            }
                            Err(e) => {
                                failed.store(true, Relaxed);
                                first_error.lock().unwrap().get_or_insert(e);
                            }
                        }
                    }
                    if left.fetch_sub(1, Relaxed) == 1 {
                        self.progress
                            .bytes
                            .fetch_add(batch.buf.len() as u64, Relaxed);
                        ahead.release(0);
                    }
                });
            }
            count += batch.chunks.len();
        });
        drop(done);
        if let Err(e) = read? {
            return Ok(Err(e));
        }
        if let Some(e) = first_error.into_inner().unwrap() {
            return Ok(Err(e));
        }
        let mut ids: Vec<(usize, Id)> = results.into_iter().collect();
        debug_assert_eq!(ids.len(), count);
        ids.sort_unstable_by_key(|(k, _)| *k);
        let ids = ids.into_iter().map(|(_, id)| id).collect();
        Ok(Ok((ids, stream.bytes_read)))
    }

    /// Chunks and stores a file larger than a batch; holes of at least a chunk's maximum size
    /// are skipped, not read (a 20 GB sparse file takes milliseconds, not a minute).
    fn store_large(
        &self,
        file: std::fs::File,
        size: u64,
    ) -> std::io::Result<Result<(Vec<Id>, u64)>> {
        let max = self.chunker.max_size() as u64;
        match crate::sparse::holes(&file, size, max) {
            Ok(holes) if !holes.is_empty() => {
                let chunks = crate::sparse::SparseChunks::new(
                    &file,
                    holes,
                    size,
                    self.chunker.clone(),
                    BATCH_BYTES,
                );
                self.store_sparse(chunks)
            }
            _ => self.store_stream(file),
        }
    }

    /// Stores a sparse file's pieces: data batches cut on all cores, runs of zero chunks by
    /// one id.
    fn store_sparse(
        &self,
        mut chunks: crate::sparse::SparseChunks,
    ) -> std::io::Result<Result<(Vec<Id>, u64)>> {
        use crate::sparse::Piece;
        let mut ids = Vec::new();
        let mut zero_id = None;
        while let Some(piece) = chunks.next_piece()? {
            if let Err(e) = crate::interrupt::check() {
                return Ok(Err(e));
            }
            let bytes = match piece {
                Piece::Data(batch) => {
                    let stored = batch
                        .chunks
                        .par_iter()
                        .map(|r| self.store_blob(BlobType::Data, &batch.buf[r.clone()]))
                        .collect::<Result<Vec<Id>>>();
                    match stored {
                        Ok(mut v) => ids.append(&mut v),
                        Err(e) => return Ok(Err(e)),
                    }
                    batch.buf.len() as u64
                }
                Piece::Zeros { len, count } => {
                    let id = match zero_id {
                        Some(id) => id,
                        None => match self.store_blob(BlobType::Data, &vec![0u8; len]) {
                            Ok(id) => *zero_id.insert(id),
                            Err(e) => return Ok(Err(e)),
                        },
                    };
                    ids.extend(std::iter::repeat_n(id, count as usize));
                    len as u64 * count
                }
            };
            self.progress.bytes.fetch_add(bytes, Relaxed);
        }
        Ok(Ok((ids, chunks.bytes_done())))
    }

    /// Chunks and stores a file that fits in one batch, reading it with one right-sized buffer.
    fn store_small<R: Read>(
        &self,
        mut reader: R,
        size: u64,
    ) -> std::io::Result<Result<(Vec<Id>, u64)>> {
        let mut buf = Vec::with_capacity(size as usize + 1);
        reader.read_to_end(&mut buf)?;
        let chunks = self.chunker.split_all(&buf);
        let stored: Result<Vec<Id>> = if chunks.len() > 1 {
            chunks
                .par_iter()
                .map(|r| self.store_blob(BlobType::Data, &buf[r.clone()]))
                .collect()
        } else {
            chunks
                .iter()
                .map(|r| self.store_blob(BlobType::Data, &buf[r.clone()]))
                .collect()
        };
        self.progress.bytes.fetch_add(buf.len() as u64, Relaxed);
        Ok(stored.map(|ids| (ids, buf.len() as u64)))
    }

    /// Reads one file; on a read error the file is reported and left out.
    fn store_file(&self, path: &Path, node: &mut Node) -> Result<bool> {
        crate::interrupt::check()?;
        let size = node.size;
        self.progress
            .first_file_opened
            .get_or_init(std::time::Instant::now);
        let res = open_noatime(path).and_then(|f| {
            if size <= BATCH_BYTES as u64 {
                // A file that grows while read is still read to its end.
                self.store_small(f, size)
            } else {
                self.store_large(f, size)
            }
        });
        match res {
            Ok(Ok((ids, n))) => {
                self.bytes_read.fetch_add(n, Relaxed);
                if n != node.size {
                    self.warnings.lock().unwrap().push(format!(
                        "{}: file changed while being read ({} bytes expected, {n} read); stored as read",
                        path.display(),
                        node.size
                    ));
                    node.size = n;
                }
                node.content = ids.into_iter().map(DataId).collect();
                Ok(true)
            }
            Ok(Err(e)) => Err(e),
            Err(e) => {
                self.warn(format!(
                    "{}: cannot read: {e}; left out of the snapshot",
                    path.display()
                ));
                Ok(false)
            }
        }
    }
}

/// Opens a file for reading without updating its access time where the kernel allows it
/// (owner or root).
pub(crate) fn open_noatime(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => std::fs::File::open(path),
        other => other,
    }
}

/// Lists a directory's entry names without updating its access time (O_NOATIME where the
/// kernel allows it), so an unchanged directory yields an unchanged tree blob next time.
fn list_dir_noatime(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    use nix::dir::Dir;
    use nix::errno::Errno;
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = match Dir::open(path, flags | OFlag::O_NOATIME, Mode::empty()) {
        Err(Errno::EPERM) => Dir::open(path, flags, Mode::empty()),
        other => other,
    }?;
    let mut names = Vec::new();
    // The iterator reports readdir's errno as an error, so a failing read is never a short
    // listing.
    for entry in dir.iter() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// Files and bytes the walker may hand to the workers before some come back.
struct Budget {
    /// (files, bytes) still available.
    left: Mutex<(u64, u64)>,
    freed: std::sync::Condvar,
    bytes: u64,
}

impl Budget {
    fn new(files: u64, bytes: u64) -> Budget {
        Budget {
            left: Mutex::new((files, bytes)),
            freed: std::sync::Condvar::new(),
            bytes,
        }
    }

    /// Waits until one file of `cost` bytes fits (a cost above the whole budget waits for
    /// all of it).
    fn acquire(&self, cost: u64) {
        let cost = cost.min(self.bytes);
        let mut left = self.left.lock().unwrap();
        while left.0 == 0 || left.1 < cost {
            left = self.freed.wait(left).unwrap();
        }
        left.0 -= 1;
        left.1 -= cost;
    }

    fn release(&self, cost: u64) {
        let cost = cost.min(self.bytes);
        let mut left = self.left.lock().unwrap();
        left.0 += 1;
        left.1 += cost;
        self.freed.notify_all();
    }
}

/// A directory entry whose content or subtree may still be in the making.
enum Slot {
    Ready(Node),
    File(Node, Receiver<Result<Option<Node>>>),
    Dir(Node, Receiver<Result<Id>>),
}

struct DirJob {
    slots: Vec<Slot>,
    done: Sender<Result<Id>>,
}

/// Exclude globs: with a '/', matched against the whole absolute path; without, against names.
pub struct Excludes {
    by_path: globset::GlobSet,
    by_name: globset::GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes> {
        let mut by_path = globset::GlobSetBuilder::new();
        let mut by_name = globset::GlobSetBuilder::new();
        for p in patterns {
            let glob = globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::usage(format!("invalid exclude pattern {p:?}: {e}")))?;
            if p.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let b = |s: globset::GlobSetBuilder| {
            s.build()
                .map_err(|e| Error::usage(format!("invalid exclude patterns: {e}")))
        };
        Ok(Excludes {
            by_path: b(by_path)?,
            by_name: b(by_name)?,
        })
    }

    pub fn excluded(&self, path: &Path, name: &[u8]) -> bool {
        self.by_path.is_match(path) || self.by_name.is_match(std::ffi::OsStr::from_bytes(name))
    }
}

/// The sources of a snapshot, checked: absolute paths, the names they get at the snapshot's
/// top level, and the paths the snapshot records.
struct Sources {
    paths: Vec<PathBuf>,
    names: Vec<Vec<u8>>,
    snap_paths: Vec<String>,
}

impl Sources {
    fn new(opts: &SnapshotOptions) -> Result<Sources> {
        let mut paths = Vec::new();
        for p in &opts.paths {
            let abs = if p.is_absolute() {
                p.clone()
            } else {
                std::env::current_dir()
                    .map_err(|e| Error::io(".", e))?
                    .join(p)
            };
            let abs = normalize(&abs);
            if std::fs::symlink_metadata(&abs).is_err() {
                return Err(Error::usage(format!(
                    "source path {} does not exist",
                    p.display()
                )));
            }
            paths.push(abs);
        }
        let mut names: Vec<Vec<u8>> = paths.iter().map(|p| root_name(p)).collect();
        if let Some(s) = &opts.stream {
            if s.name.is_empty() || s.name == "." || s.name == ".." || s.name.contains('/') {
                return Err(Error::usage("--stdin-filename must be a plain file name"));
            }
            names.push(s.name.as_bytes().to_vec());
        }
        if names.is_empty() {
            return Err(Error::usage(
                "nothing to back up: give paths, --stdin or --command",
            ));
        }
        let mut sorted = names.clone();
        sorted.sort();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::usage(
                "two sources have the same name; they would collide at the snapshot's top level",
            ));
        }
        let mut snap_paths: Vec<String> = paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if let Some(s) = &opts.stream {
            snap_paths.push(format!("stdin:{}", s.name));
        }
        // The stream's name is not a path to walk.
        names.truncate(paths.len());
        Ok(Sources {
            paths,
            names,
            snap_paths,
        })
    }
}

/// Makes a snapshot of `opts.paths` and `opts.stream` and saves it.
pub fn snapshot(
    session: &IndexedWriteSession,
    opts: SnapshotOptions,
    progress: &Progress,
) -> Result<SnapshotOutcome> {
    let started = Instant::now();
    // One instant for the snapshot and its stream node (format-spec §9, §10).
    let time_unix_ns = opts.time_unix_ns.unwrap_or_else(crate::host::now_ns);
    let sources = Sources::new(&opts)?;
    let excludes = Excludes::new(&opts.excludes)?;
    let host = opts.host.clone().unwrap_or_else(crate::host::hostname);

    let repo = session.repo();
    let snaps = repo.list_snapshots()?;
    let parent = match &opts.parent {
        ParentChoice::None => None,
        ParentChoice::Id(spec) => Some(crate::snapshot::resolve(&snaps, spec)?.clone()),
        ParentChoice::Auto => {
            crate::snapshot::find_parent(&snaps, &host, &sources.snap_paths).cloned()
        }
    };
    // Dedup only against the live index; parent trees may also be read from packs a concurrent
    // prune has marked. A parent that cannot be read only costs re-reading the files.
    let parent_root = match &parent {
        Some((_, s)) => repo.load_tree(&s.tree).ok(),
        None => None,
    };
    let input = Input {
        session,
        repo,
        index: repo.live_index(),
        read_index: repo.index(),
        parent_root,
        sources: &sources,
        excludes: &excludes,
        time_unix_ns,
        progress,
    };
    let (stream, sniffed) = match opts.stream {
        Some(s) => {
            let (reader, sniffed) = LabelSniffer::new(s.reader);
            let reader: Box<dyn Read + Send> = Box::new(reader);
            (Some(StreamSource { reader, ..s }), Some(sniffed))
        }
        None => (None, None),
    };
    let (root, mut summary, (mut warnings, own_trees), packed) = store_sources(&input, stream);
    // A write that failed because a prune judged this backup stale (a swept temporary file, a
    // refused index) is reported as that, in words that say what to do.
    let (packed, root) = match (packed, root) {
        (Ok(p), Ok(r)) => (p, r),
        (Err(e), _) | (_, Err(e)) => {
            session.ensure_held()?;
            return Err(e);
        }
    };

    summary.bytes_added = packed.bytes_added;
    summary.blobs_added = packed.blobs_added;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    let mut tags = opts.tags;
    let postgres = match sniffed.and_then(|s| s.label()) {
        Some(label) => base_backup(repo, &label, &mut warnings)?,
        None => None,
    };
    if postgres.is_some() {
        tags.push(BASE_BACKUP_TAG.to_string());
    }
    tags.sort();
    tags.dedup();
    let snapshot = Snapshot {
        time_unix_ns,
        hostname: host,
        username: crate::host::username(),
        paths: sources.snap_paths,
        tags,
        tree: TreeId(root),
        parent: parent.map(|(id, _)| id),
        excludes: opts.excludes,
        incomplete: summary.errors > 0,
        summary,
        program_version: format!("ocvault {}", env!("CARGO_PKG_VERSION")),
        postgres,
        log_heads: crate::oplog::heads(repo)?,
    };
    let id = session.save_file(&snapshot)?;
    if let Some(store) = repo.own_trees() {
        store.record_snapshot(&id.into(), &snapshot.paths, time_unix_ns, own_trees);
    }
    Ok(SnapshotOutcome {
        id,
        snapshot,
        warnings,
        restored_blobs: packed.restored_blobs,
        restored_bytes: packed.restored_bytes,
    })
}

/// The tag of snapshots that hold a PostgreSQL base backup.
pub const BASE_BACKUP_TAG: &str = "pg-base-backup";

/// What a stream whose tar starts with a `backup_label` records as a base backup: its start,
/// and its stop from the WAL archive when the backup history file is there (PostgreSQL
/// archives it before `pg_basebackup` returns, so after the command ends it is).
fn base_backup(
    repo: &IndexedRepository,
    label: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<PgBaseBackup>> {
    let Some(mut pg) = crate::wal::basebackup::parse_backup_label(label) else {
        warnings.push("the stream starts with a backup_label this ocvault cannot read; not recorded as a base backup".into());
        return Ok(None);
    };
    if crate::wal::catalog::require_wal_support(repo.repository()).is_err() {
        warnings.push("a PostgreSQL base backup in a format version 1 repository is stored as a plain file, without its WAL positions (`pitr` needs a version 2 repository)".into());
        return Ok(None);
    }
    // A write-only key cannot read the history file: `pitr` looks the stop up itself.
    if repo.is_write_only() {
        return Ok(Some(pg));
    }
    let found = crate::wal::basebackup::fill_stop(repo.repository(), &mut pg).unwrap_or_else(|e| {
        warnings.push(format!("cannot read the base backup's history file: {e}"));
        false
    });
    if !found {
        warnings.push(format!(
            "no backup history file for the base backup starting at {} in this repository's WAL archive: is archive_command set to `ocvault wal-push %p` for this repository?",
            crate::wal::name::Lsn(pg.start_lsn)
        ));
    }
    Ok(Some(pg))
}

/// What the pipeline reads from besides the sources' bytes.
struct Input<'a> {
    session: &'a IndexedWriteSession<'a>,
    repo: &'a IndexedRepository<'a>,
    /// Live index: deduplicated against; a parent's content is reused only when every blob
    /// is in it.
    index: &'a Index,
    /// For reading parent trees.
    read_index: &'a Index,
    parent_root: Option<Tree>,
    sources: &'a Sources,
    excludes: &'a Excludes,
    time_unix_ns: i64,
    progress: &'a Progress,
}

/// What [`store_sources`] returns: root tree, counts, (warnings, trees kept for a write-only
/// key's local store), and what the packer stored.
type StoredSources = (
    Result<Id>,
    SnapshotSummary,
    (Vec<String>, Vec<Id>),
    Result<Packed>,
);

/// Runs the pipeline over every source: returns the root tree's id, the counts, the
/// warnings and what the packer stored.
/// The warnings come with the trees stored in a write-only key's local store.
fn store_sources(input: &Input, stream: Option<StreamSource>) -> StoredSources {
    let repo = input.repo;
    let save_index = |f: &IndexFile| input.session.save_file(f).map(Id::from);
    let parts = PackerParts::new(input.session, Indexing::Every(PACKS_PER_INDEX, &save_index))
        .with_progress(&input.progress.bytes_added);
    let ((root, counts, warnings), packed) = packer::run(parts, |packer| {
        let shared = Shared {
            packer,
            chunker: Chunker::new(repo.config().chunker, repo.keys().chunker_seed()),
            warnings: Mutex::new(Vec::new()),
            progress: input.progress,
            files_new: AtomicU64::new(0),
            files_changed: AtomicU64::new(0),
            files_unmodified: AtomicU64::new(0),
            dirs: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            own_trees: repo.own_trees(),
            own_tree_ids: Mutex::new(Vec::new()),
        };
        let root = walk_sources(input, &shared, stream);
        let counts = SnapshotSummary {
            files_new: shared.files_new.load(Relaxed),
            files_changed: shared.files_changed.load(Relaxed),
            files_unmodified: shared.files_unmodified.load(Relaxed),
            dirs: shared.dirs.load(Relaxed),
            bytes_read: shared.bytes_read.load(Relaxed),
            bytes_total: shared.bytes_total.load(Relaxed),
            errors: shared.errors.load(Relaxed),
            ..Default::default()
        };
        let trees = shared.own_tree_ids.into_inner().unwrap();
        (root, counts, (shared.warnings.into_inner().unwrap(), trees))
    });
    (root, counts, warnings, packed)
}

/// Walks the sources (the stream first) with the tree assembler beside; returns the root
/// tree's id once every file and directory is stored.
fn walk_sources(input: &Input, shared: &Shared, mut stream: Option<StreamSource>) -> Result<Id> {
    let names_cache = NameCache::default();
    std::thread::scope(|inner| {
        let (dir_tx, dir_rx) = bounded::<DirJob>(1024);
        let assembler = inner.spawn(move || assemble_dirs(shared, dir_rx));
        let budget = Budget::new(FILES_IN_FLIGHT as u64, BYTES_IN_FLIGHT);
        let walker = Walker {
            shared,
            names: &names_cache,
            excludes: input.excludes,
            dir_tx: &dir_tx,
            repo: input.repo,
            index: input.index,
            read_index: input.read_index,
            budget: &budget,
        };
        let root = rayon::in_place_scope(|rs| -> Result<Receiver<Result<Id>>> {
            let mut slots = Vec::new();
            // The stream first: a dump command should not wait while folders are walked.
            if let Some(s) = stream.take() {
                slots.push(store_stream_source(
                    shared,
                    s,
                    input.time_unix_ns,
                    &names_cache,
                )?);
            }
            let sources = input.sources;
            for (path, name) in sources.paths.iter().zip(&sources.names) {
                let prev = input
                    .parent_root
                    .as_ref()
                    .and_then(|t| t.find(name))
                    .cloned();
                if let Some(slot) = walker.entry(rs, path, name, prev)? {
                    slots.push(slot);
                }
            }
            slots.sort_by(|a, b| slot_name(a).cmp(slot_name(b)));
            let (tx, rx) = bounded(1);
            dir_tx
                .send(DirJob { slots, done: tx })
                .map_err(|_| Error::other("tree assembler stopped"))?;
            Ok(rx)
        });
        drop(dir_tx);
        let root = root.and_then(|rx| {
            rx.recv()
                .map_err(|_| Error::other("tree assembler stopped"))?
        });
        let assembled = assembler.join().expect("assembler thread");
        root.and_then(|id| assembled.map(|_| id))
    })
}

/// Stores a `--stdin`/`--command` stream as one file; a dump command that failed means no
/// snapshot.
fn store_stream_source(
    shared: &Shared,
    s: StreamSource,
    time_unix_ns: i64,
    names: &NameCache,
) -> Result<Slot> {
    let node = stream_node(&s.name, time_unix_ns, names);
    let read = shared
        .store_stream(s.reader)
        .map_err(|e| Error::other(format!("reading {}: {e}", s.name)));
    // The command's exit status decides first: a failed dump is never saved.
    if let Some(finish) = s.finish {
        finish()?;
    }
    let (ids, n) = read??;
    shared.bytes_read.fetch_add(n, Relaxed);
    shared.bytes_total.fetch_add(n, Relaxed);
    shared.files_new.fetch_add(1, Relaxed);
    Ok(Slot::Ready(Node {
        size: n,
        content: ids.into_iter().map(DataId).collect(),
        ..node
    }))
}

fn slot_name(s: &Slot) -> &[u8] {
    match s {
        Slot::Ready(n) | Slot::File(n, _) | Slot::Dir(n, _) => &n.name,
    }
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn root_name(p: &Path) -> Vec<u8> {
    match p.file_name() {
        Some(n) => n.as_bytes().to_vec(),
        None => b"root".to_vec(),
    }
}

/// The file node of a `--stdin`/`--command` stream; its times are the snapshot's time.
fn stream_node(name: &str, time_unix_ns: i64, names: &NameCache) -> Node {
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    Node {
        name: name.as_bytes().to_vec(),
        kind: NodeKind::File,
        mode: 0o600,
        uid,
        gid,
        user: names.user(uid),
        group: names.group(gid),
        mtime_ns: time_unix_ns,
        ctime_ns: time_unix_ns,
        atime_ns: time_unix_ns,
        size: 0,
        inode: 0,
        device: 0,
        links: 1,
        rdev: 0,
        xattrs: Vec::new(),
        link_target: Vec::new(),
        content: Vec::new(),
        subtree: None,
    }
}

struct Walker<'a> {
    shared: &'a Shared<'a>,
    names: &'a NameCache,
    excludes: &'a Excludes,
    dir_tx: &'a Sender<DirJob>,
    repo: &'a IndexedRepository<'a>,
    /// Live index: a parent's content is reused only when every blob is in it.
    index: &'a Index,
    /// For reading parent trees.
    read_index: &'a Index,
    budget: &'a Budget,
}

impl<'a> Walker<'a> {
    /// One entry of the walk; `prev` is the same name's node in the parent snapshot.
    fn entry<'s>(
        &'s self,
        rs: &rayon::Scope<'s>,
        path: &Path,
        name: &[u8],
        prev: Option<Node>,
    ) -> Result<Option<Slot>> {
        crate::interrupt::check()?;
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.shared.warn(format!(
                    "{}: cannot stat: {e}; left out of the snapshot",
                    path.display()
                ));
                return Ok(None);
            }
        };
        let mut node = tree::node_from_metadata(name, path, &meta, self.names);
        match node.kind {
            NodeKind::Dir => {
                let prev_tree = match prev.as_ref().and_then(|p| p.subtree) {
                    Some(id) if self.read_index.contains(&id) => self.repo.load_tree(&id).ok(),
                    _ => None,
                };
                let rx = self.dir(rs, path, prev_tree)?;
                Ok(Some(Slot::Dir(node, rx)))
            }
            NodeKind::File => {
                self.shared.bytes_total.fetch_add(node.size, Relaxed);
                self.shared.progress.files.fetch_add(1, Relaxed);
                if let Some(p) = prev.as_ref().filter(|p| tree::unchanged(p, &node)) {
                    if p.content.iter().all(|id| self.index.contains_hot(id)) {
                        node.content = p.content.clone();
                        self.shared.files_unmodified.fetch_add(1, Relaxed);
                        self.shared.progress.bytes.fetch_add(node.size, Relaxed);
                        return Ok(Some(Slot::Ready(node)));
                    }
                }
                if prev.is_some() {
                    self.shared.files_changed.fetch_add(1, Relaxed);
                } else {
                    self.shared.files_new.fetch_add(1, Relaxed);
                }
                let cost = node.size.clamp(4096, 2 * BATCH_BYTES as u64);
                self.budget.acquire(cost);
                let (tx, rx) = bounded(1);
                let path = path.to_path_buf();
                let shared = self.shared;
                let budget = self.budget;
                rs.spawn(move |_| {
                    let res = shared
                        .store_file(&path, &mut node)
                        .map(|ok| ok.then_some(node));
                    let _ = tx.send(res);
                    budget.release(cost);
                });
                Ok(Some(Slot::File(self.placeholder(name), rx)))
            }
            _ => Ok(Some(Slot::Ready(node))),
        }
    }

    fn placeholder(&self, name: &[u8]) -> Node {
        Node {
            name: name.to_vec(),
            ..stream_node("", 0, self.names)
        }
    }

    /// Walks one directory; its tree id arrives on the returned channel once assembled.
    fn dir<'s>(
        &'s self,
        rs: &rayon::Scope<'s>,
        path: &Path,
        prev: Option<Tree>,
    ) -> Result<Receiver<Result<Id>>> {
        self.shared.dirs.fetch_add(1, Relaxed);
        let mut names: Vec<Vec<u8>> = match list_dir_noatime(path) {
            Ok(names) => names,
            Err(e) => {
                self.shared.warn(format!(
                    "{}: cannot list: {e}; stored empty",
                    path.display()
                ));
                Vec::new()
            }
        };
        names.sort();
        let mut slots = Vec::with_capacity(names.len());
        for name in names {
            let child = path.join(std::ffi::OsStr::from_bytes(&name));
            if self.excludes.excluded(&child, &name) {
                continue;
            }
            let prev_node = prev.as_ref().and_then(|t| t.find(&name)).cloned();
            if let Some(slot) = self.entry(rs, &child, &name, prev_node)? {
                slots.push(slot);
            }
        }
        let (tx, rx) = bounded(1);
        self.dir_tx
            .send(DirJob { slots, done: tx })
            .map_err(|_| Error::other("tree assembler stopped"))?;
        Ok(rx)
    }
}

/// Builds tree blobs in post-order as directories' files and subdirectories complete.
fn assemble_dirs(shared: &Shared, rx: Receiver<DirJob>) -> Result<()> {
    let mut first_err = None;
    for job in rx {
        let res = (|| -> Result<Id> {
            let mut tree = Tree {
                nodes: Vec::with_capacity(job.slots.len()),
            };
            for slot in job.slots {
                match slot {
                    Slot::Ready(n) => tree.nodes.push(n),
                    Slot::File(_, rx) => {
                        if let Some(n) = rx
                            .recv()
                            .map_err(|_| Error::other("file worker stopped"))??
                        {
                            tree.nodes.push(n);
                        }
                    }
                    Slot::Dir(mut n, rx) => {
                        n.subtree = Some(TreeId(
                            rx.recv()
                                .map_err(|_| Error::other("tree assembler stopped"))??,
                        ));
                        tree.nodes.push(n);
                    }
                }
            }
            shared.store_blob(BlobType::Tree, &crate::format::to_postcard(&tree))
        })();
        if let Err(e) = &res {
            first_err.get_or_insert_with(|| e.to_string());
        }
        let _ = job.done.send(res);
    }
    match first_err {
        Some(e) => Err(Error::other(e)),
        None => Ok(()),
    }
}

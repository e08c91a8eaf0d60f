//! Every type that is stored in a repository, in one place. `format-spec/` describes the bytes.
//!
//! Structured payloads are encoded with postcard (a stable, specified binary serde format)
//! and framed as `[codec u8][payload]` before sealing, so compression is per object.

use crate::error::{Error, Result};
use crate::id::{BlobId, DataId, Id, IndexFileId, PackId, SnapshotId, TreeId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The repository format this build writes (`init`); it reads every version from 1 to this.
/// Version 2 added `wal/` (PostgreSQL WAL archive) and `Snapshot::postgres`; version 3 added
/// `Config::storage` (S3 Object Lock retention, the data packs' storage class) and `retention/`;
/// version 4 added write-only keys (key file version 2, blobs sealed to the repository's public
/// key) and the operations log's hash chain (`LogEntry::parents`, `Snapshot::log_heads`).
pub const FORMAT_VERSION: u32 = 4;
/// The oldest format version this build reads (and writes, in repositories of that version).
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// The version of a full key's key file (unchanged since format version 1).
pub const KEY_FILE_VERSION: u32 = 1;
/// Key file version 2 (format version 4): a write-only key ([`WriteOnlyKeyPayload`]).
pub const KEY_FILE_VERSION_WRITE_ONLY: u32 = 2;
/// First bytes of the `config` file, before the version.
pub const CONFIG_MAGIC: &[u8; 8] = b"OCVAULT\0";
/// First bytes of a key file.
pub const KEY_MAGIC: &[u8; 8] = b"OCVKEY\0\0";

pub const CODEC_NONE: u8 = 0;
pub const CODEC_ZSTD: u8 = 1;

/// Upper bound on any decoded object, so hostile lengths cannot exhaust memory.
pub const MAX_OBJECT_SIZE: usize = 1 << 30;

/// Argon2id parameters and salt, stored in clear in each key file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub salt: [u8; 32],
}

/// `keys/<id>`: `KEY_MAGIC` then postcard of this.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyFile {
    pub version: u32,
    pub kdf: KdfParams,
    /// Sealed (scheme, nonce, ciphertext, tag) `KeyPayload` under the Argon2id output.
    pub sealed_payload: Vec<u8>,
}

/// The secret part of a key file.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyPayload {
    pub master_key: [u8; 32],
    pub created_unix_ns: i64,
    pub hostname: String,
    pub username: String,
}

/// The secret part of a write-only key file (key file version 2).
#[derive(Clone, Serialize, Deserialize)]
pub struct WriteOnlyKeyPayload {
    pub keys: WriteOnlyKeys,
    pub created_unix_ns: i64,
    pub hostname: String,
    pub username: String,
}

/// The secret part of a write-only key file (key file version 2): the sub-keys of every kind
/// but blobs, and the repository's public key that blobs are sealed to.
#[derive(Clone, Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct WriteOnlyKeys {
    pub blob_id: [u8; 32],
    pub wal_name: [u8; 32],
    pub chunker_seed: u64,
    /// `(SealKind as u8, sub-key)` for every kind but `DataBlob` and `TreeBlob`, ascending.
    pub seal: Vec<(u8, [u8; 32])>,
    pub blob_public_key: [u8; 32],
    /// Seals the host's local store of the trees it wrote (for change detection); never
    /// used in the repository.
    pub local_key: [u8; 32],
}

/// FastCDC parameters, fixed at `init`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

/// `config`: `CONFIG_MAGIC`, version (u32 LE), then the sealed `Config`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    pub version: u32,
    pub repository_id: Id,
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub pack_target_size: u32,
    /// Format version 3: how the storage keeps files. Fixed at `init` (under Object Lock the
    /// config itself can never be rewritten).
    pub storage: StoragePolicy,
}

/// `Config` as format versions 1 and 2 store it: without `storage`.
#[derive(Serialize, Deserialize)]
struct ConfigV2 {
    version: u32,
    repository_id: Id,
    chunker: ChunkerParams,
    compression_level: i32,
    pack_target_size: u32,
}

impl Config {
    /// The stored encoding in a repository of `self.version`.
    pub fn encode(&self) -> Vec<u8> {
        if self.version >= 3 {
            return to_postcard(self);
        }
        to_postcard(&ConfigV2 {
            version: self.version,
            repository_id: self.repository_id,
            chunker: self.chunker,
            compression_level: self.compression_level,
            pack_target_size: self.pack_target_size,
        })
    }

    /// Decodes a config stored by a repository of format `version` (the clear one).
    pub fn decode(bytes: &[u8], version: u32) -> Result<Config> {
        if version >= 3 {
            return from_postcard(bytes, "config");
        }
        let c: ConfigV2 = from_postcard(bytes, "config")?;
        Ok(Config {
            version: c.version,
            repository_id: c.repository_id,
            chunker: c.chunker,
            compression_level: c.compression_level,
            pack_target_size: c.pack_target_size,
            storage: StoragePolicy::default(),
        })
    }
}

/// How a repository's storage keeps its files (format version 3). Both parts apply to S3;
/// other storage has neither retention nor classes and ignores them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoragePolicy {
    /// Object Lock retention for every file a restore needs.
    pub lock: Option<ObjectLock>,
    /// The storage class data packs are written in (metadata always stays in the standard
    /// class), e.g. "GLACIER".
    pub data_storage_class: Option<String>,
}

/// Object Lock retention: each file a restore needs is written locked for `days` days, and
/// kept locked longer while a kept snapshot needs it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    pub days: u32,
}

/// S3's two Object Lock modes: in compliance mode nobody can shorten or remove a retention;
/// in governance mode a user with the bypass permission can.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[repr(u8)]
pub enum LockMode {
    Governance = 0,
    Compliance = 1,
}

impl LockMode {
    /// The name S3 uses in headers and XML.
    pub fn s3_name(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlobType {
    Data = 0,
    Tree = 1,
}

/// One blob's place in a pack.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PackedBlob {
    pub id: BlobId,
    pub offset: u32,
    /// Stored (sealed) length in the pack.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
}

/// Sealed at the end of every pack; all blobs of a pack have the pack's type.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PackHeader {
    pub blob_type: BlobType,
    pub blobs: Vec<PackedBlob>,
}

/// One pack in an index file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexPack {
    pub id: PackId,
    pub blob_type: BlobType,
    /// Total size of the pack file in bytes.
    pub size: u64,
    pub blobs: Vec<PackedBlob>,
}

/// `index/<id>`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexFile {
    /// Index files this one replaces (written by prune); readers ignore those.
    pub supersedes: Vec<IndexFileId>,
    pub packs: Vec<IndexPack>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// One directory entry. Names and link targets are raw bytes: not every name is UTF-8.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Node {
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits (mode & 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub atime_ns: i64,
    pub size: u64,
    pub inode: u64,
    pub device: u64,
    pub links: u64,
    /// Device number for character and block devices.
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub link_target: Vec<u8>,
    /// Data blob ids, in order, for files.
    pub content: Vec<DataId>,
    /// Tree blob id, for directories.
    pub subtree: Option<TreeId>,
}

impl Node {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A directory listing; a tree blob. Nodes sorted by name bytes, names unique.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// Counters a snapshot carries about the run that made it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    pub bytes_read: u64,
    pub bytes_total: u64,
    pub blobs_added: u64,
    /// Bytes of new packs (what the repository grew by).
    pub bytes_added: u64,
    pub errors: u64,
    pub duration_ms: u64,
}

/// `snapshots/<id>`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    pub time_unix_ns: i64,
    pub hostname: String,
    pub username: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub tree: TreeId,
    pub parent: Option<SnapshotId>,
    pub excludes: Vec<String>,
    /// Some sources could not be read: the snapshot is not a complete copy.
    pub incomplete: bool,
    pub summary: SnapshotSummary,
    pub program_version: String,
    /// A PostgreSQL base backup (format version 2 and later; v1 snapshots have none).
    pub postgres: Option<PgBaseBackup>,
    /// The operations log's heads when the snapshot was saved, sorted (format version 4;
    /// empty before): `check` finds a deleted entry a snapshot names.
    pub log_heads: Vec<Id>,
}

/// A snapshot as format version 1 stores it: [`Snapshot`] without `postgres`.
#[derive(Serialize, Deserialize)]
struct SnapshotV1 {
    time_unix_ns: i64,
    hostname: String,
    username: String,
    paths: Vec<String>,
    tags: Vec<String>,
    tree: TreeId,
    parent: Option<SnapshotId>,
    excludes: Vec<String>,
    incomplete: bool,
    summary: SnapshotSummary,
    program_version: String,
}

/// A snapshot as format versions 2 and 3 store it: [`Snapshot`] without `log_heads`.
#[derive(Serialize, Deserialize)]
struct SnapshotV3 {
    v1: SnapshotV1,
    postgres: Option<PgBaseBackup>,
}

impl Snapshot {
    /// The stored encoding in a repository of format `version`. A v1 repository cannot hold
    /// `postgres` (writers refuse base backups there before they get this far); repositories
    /// before version 4 cannot hold `log_heads` (writers leave it empty there).
    pub fn encode(&self, version: u32) -> Vec<u8> {
        if version >= 4 {
            return to_postcard(self);
        }
        let s = self.clone();
        let v1 = SnapshotV1 {
            time_unix_ns: s.time_unix_ns,
            hostname: s.hostname,
            username: s.username,
            paths: s.paths,
            tags: s.tags,
            tree: s.tree,
            parent: s.parent,
            excludes: s.excludes,
            incomplete: s.incomplete,
            summary: s.summary,
            program_version: s.program_version,
        };
        if version >= 2 {
            // postcard encodes a struct as its fields in order, so nesting `v1` first gives
            // exactly the flat v2/v3 layout.
            return to_postcard(&SnapshotV3 {
                v1,
                postgres: s.postgres,
            });
        }
        to_postcard(&v1)
    }

    /// Decodes a snapshot stored in a repository of format `version`.
    pub fn decode(bytes: &[u8], version: u32, what: &str) -> Result<Snapshot> {
        if version >= 4 {
            return from_postcard(bytes, what);
        }
        let (s, postgres) = if version >= 2 {
            let s: SnapshotV3 = from_postcard(bytes, what)?;
            (s.v1, s.postgres)
        } else {
            (from_postcard::<SnapshotV1>(bytes, what)?, None)
        };
        Ok(Snapshot {
            time_unix_ns: s.time_unix_ns,
            hostname: s.hostname,
            username: s.username,
            paths: s.paths,
            tags: s.tags,
            tree: s.tree,
            parent: s.parent,
            excludes: s.excludes,
            incomplete: s.incomplete,
            summary: s.summary,
            program_version: s.program_version,
            postgres,
            log_heads: Vec::new(),
        })
    }
}

/// What a snapshot of a PostgreSQL base backup records about it: from its `backup_label`
/// (start) and from the backup history file PostgreSQL archived when it ended (stop).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PgBaseBackup {
    pub label: String,
    /// Timeline the backup started on.
    pub timeline: u32,
    pub start_lsn: u64,
    /// The WAL segment the backup starts in (the first one recovery needs).
    pub start_wal: String,
    pub start_unix_ns: i64,
    /// From the backup history file; none when it was not archived in this repository.
    pub stop_lsn: Option<u64>,
    pub stop_unix_ns: Option<i64>,
    pub stop_timeline: Option<u32>,
}

/// `wal/<id>` (format version 2): one file PostgreSQL archived (a WAL segment, a `.history`,
/// `.backup` or `.partial` file). Named by the keyed hash of `name`, not of its bytes, so one
/// name is found with one read.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WalRecord {
    /// The file name PostgreSQL gave it (`%f`).
    pub name: String,
    pub size: u64,
    /// Plain BLAKE3 of the whole file: a second push of the name is compared by it.
    pub hash: [u8; 32],
    /// Data blobs in order: fixed-size blocks of `WAL_BLOCK_SIZE`, the last one shorter.
    pub content: Vec<DataId>,
    pub archived_unix_ns: i64,
    pub hostname: String,
}

/// WAL files are cut into blocks of this size (not content-defined chunks: WAL hardly
/// dedups, and a 16 MiB segment as 16 blobs costs 1/16 of the index entries of 64 KiB chunks).
pub const WAL_BLOCK_SIZE: usize = 1 << 20;

/// `locks/<id>`: a backup in progress. Prune never deletes packs marked after such a backup
/// started while its heartbeat is fresh. Refreshed by writing a new file and deleting the old.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupMarker {
    pub hostname: String,
    pub pid: u32,
    pub started_unix_ns: i64,
    pub heartbeat_unix_ns: i64,
}

/// `prune/<id>`: packs a prune took out of the index, to be deleted by a later phase once no
/// backup that started before `marked_unix_ns` can still be running. Holds each pack's index
/// entry so a pack a late snapshot turns out to need can be put back in the index.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PruneMark {
    pub marked_unix_ns: i64,
    pub packs: Vec<IndexPack>,
}

/// `retention/<id>` (format version 3, repositories with Object Lock): how far `forget`
/// extended the retention of what each kept snapshot needs, so the next run asks S3 only for
/// what is not yet locked long enough. A statement about objects that existed at
/// `extended_at_unix_s`; an object written later is not covered.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetentionLedger {
    pub entries: Vec<RetentionEntry>,
    /// Index files, keys, config, log entries and WAL records: locked until at least this.
    pub metadata_locked_until_unix_s: i64,
    pub metadata_extended_at_unix_s: i64,
    /// `wal/` records and the packs only they need (a rolling lock, see format-spec).
    pub wal_locked_until_unix_s: i64,
    pub wal_extended_at_unix_s: i64,
}

/// Every object `snapshot` needs (its snapshot file, tree and data packs) that was stored by
/// `extended_at_unix_s` is locked until at least `locked_until_unix_s`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetentionEntry {
    pub snapshot: SnapshotId,
    pub locked_until_unix_s: i64,
    pub extended_at_unix_s: i64,
}

/// `log/<id>`: one operation on the repository (every command that opens it with a key,
/// reads included, adds one).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogEntry {
    pub time_unix_ns: i64,
    pub hostname: String,
    pub username: String,
    pub operation: String,
    /// Command-line arguments with secrets (URL passwords) masked.
    pub arguments: Vec<String>,
    /// "ok", "incomplete", or "error: ..." with the error line.
    pub result: String,
    pub snapshots: Vec<SnapshotId>,
    /// Format version 4: the log's heads (entries no other entry names as a parent) when
    /// this one was written, sorted; empty in the first entry and before version 4.
    pub parents: Vec<Id>,
    /// Format version 4: the key file that opened the repository; all zeros when key shares
    /// opened it (then `approvals` names them) and before version 4.
    pub key_id: Id,
    /// Format version 4: the key shares that opened the repository, by index.
    pub approvals: Vec<ShareApproval>,
}

/// One key share that opened the repository for a logged operation: share `index` of
/// `count`, of a split that needs `threshold` of them.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShareApproval {
    pub index: u8,
    pub threshold: u8,
    pub count: u8,
}

/// `LogEntry` as format versions 1 to 3 store it: without `parents`, `key_id`, `approvals`.
#[derive(Serialize, Deserialize)]
struct LogEntryV3 {
    time_unix_ns: i64,
    hostname: String,
    username: String,
    operation: String,
    arguments: Vec<String>,
    result: String,
    snapshots: Vec<SnapshotId>,
}

impl LogEntry {
    /// The stored encoding in a repository of format `version`; before version 4 the
    /// chain fields are left out (the old layout).
    pub fn encode(&self, version: u32) -> Vec<u8> {
        if version >= 4 {
            return to_postcard(self);
        }
        let e = self.clone();
        to_postcard(&LogEntryV3 {
            time_unix_ns: e.time_unix_ns,
            hostname: e.hostname,
            username: e.username,
            operation: e.operation,
            arguments: e.arguments,
            result: e.result,
            snapshots: e.snapshots,
        })
    }

    /// Decodes an entry stored in a repository of format `version`.
    pub fn decode(bytes: &[u8], version: u32, what: &str) -> Result<LogEntry> {
        if version >= 4 {
            return from_postcard(bytes, what);
        }
        let e: LogEntryV3 = from_postcard(bytes, what)?;
        Ok(LogEntry {
            time_unix_ns: e.time_unix_ns,
            hostname: e.hostname,
            username: e.username,
            operation: e.operation,
            arguments: e.arguments,
            result: e.result,
            snapshots: e.snapshots,
            ..LogEntry::default()
        })
    }
}

pub fn to_postcard<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("in-memory serialization cannot fail")
}

pub fn from_postcard<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let (v, rest) = postcard::take_from_bytes(bytes)
        .map_err(|e| Error::corrupt(what, format!("cannot decode: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::corrupt(what, "trailing bytes"));
    }
    Ok(v)
}

/// Frames `raw` as `[codec][bytes]`, compressing with zstd only when it shrinks.
pub fn frame(raw: &[u8], level: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() / 2 + 64);
    frame_into(raw, level, &mut out);
    out
}

/// Like [`frame`], appending to `out` (which may already hold a seal prefix).
pub fn frame_into(raw: &[u8], level: i32, out: &mut Vec<u8>) {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
    }
    // Negative levels are zstd's fast modes (WAL uses one); 0 stores without compressing.
    let compressed = if level != 0 && raw.len() >= 64 && looks_compressible(raw) {
        COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().map(|(l, _)| *l) != Some(level) {
                *c = Some((
                    level,
                    zstd::bulk::Compressor::new(level).expect("valid zstd level"),
                ));
            }
            c.as_mut().unwrap().1.compress(raw).ok()
        })
    } else {
        None
    };
    match compressed {
        Some(z) if z.len() + 8 < raw.len() => {
            out.push(CODEC_ZSTD);
            out.extend_from_slice(&z);
        }
        _ => {
            out.push(CODEC_NONE);
            out.extend_from_slice(raw);
        }
    }
}

/// Cheap test before spending a full zstd pass: compress a 4 KiB sample from the middle at
/// level 1; encrypted, compressed or random data (which zstd cannot shrink) is stored as is.
fn looks_compressible(raw: &[u8]) -> bool {
    const SAMPLE: usize = 4096;
    if raw.len() < 4 * SAMPLE {
        return true;
    }
    // One compressor and output buffer per thread: a context made per blob (zstd's one-shot
    // `compress`) cost more than the sample's compression.
    thread_local! {
        static SAMPLER: std::cell::RefCell<Option<(zstd::bulk::Compressor<'static>, Vec<u8>)>> = const { std::cell::RefCell::new(None) };
    }
    let mid = raw.len() / 2 - SAMPLE / 2;
    SAMPLER.with(|s| {
        let mut s = s.borrow_mut();
        let (c, buf) = s.get_or_insert_with(|| {
            let c = zstd::bulk::Compressor::new(1).expect("zstd level 1");
            (
                c,
                Vec::with_capacity(zstd::zstd_safe::compress_bound(SAMPLE)),
            )
        });
        buf.clear();
        match c.compress_to_buffer(&raw[mid..mid + SAMPLE], buf) {
            Ok(n) => n < SAMPLE * 31 / 32,
            Err(_) => true,
        }
    })
}

/// Reverses [`frame`]; `max_len` bounds the output (the known raw length where there is one).
pub fn unframe(framed: &[u8], max_len: usize, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    unframe_into(framed, max_len, what, &mut out)?;
    Ok(out)
}

/// [`unframe`] appending to `out` (no copy of the plaintext when the caller gathers many).
pub fn unframe_into(framed: &[u8], max_len: usize, what: &str, out: &mut Vec<u8>) -> Result<()> {
    let (&codec, body) = framed
        .split_first()
        .ok_or_else(|| Error::corrupt(what, "empty"))?;
    match codec {
        CODEC_NONE => {
            out.extend_from_slice(body);
            Ok(())
        }
        CODEC_ZSTD => {
            thread_local! {
                static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
            }
            DECOMPRESSOR.with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new().expect("zstd decompressor"));
                }
                let d = d.as_mut().unwrap();
                // Ask zstd for the content size where the frame states it, to avoid a huge allocation.
                let cap = zstd::zstd_safe::get_frame_content_size(body)
                    .ok()
                    .flatten()
                    .map(|n| n as usize)
                    .unwrap_or(max_len)
                    .min(max_len);
                let start = out.len();
                out.reserve(cap);
                // Appends into the spare capacity (no zeroing first); more than `cap` is refused.
                let mut tail = std::io::Cursor::new(&mut *out);
                tail.set_position(start as u64);
                let res = d.decompress_to_buffer(body, &mut tail);
                if res.is_err() || out.len() - start > cap {
                    out.truncate(start);
                    return Err(Error::corrupt(
                        what,
                        match res {
                            Err(e) => format!("cannot decompress: {e}"),
                            Ok(_) => "longer than stated".into(),
                        },
                    ));
                }
                Ok(())
            })
        }
        other => Err(Error::corrupt(what, format!("unknown codec {other}"))),
    }
}

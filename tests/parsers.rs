//! Round trips for every on-disk type, and mutation tests for every parser of stored bytes:
//! a valid object with bytes flipped, cut or inserted must give `Err` or `Ok`, never a panic,
//! and a sealed object must give `Err` after any change. `fuzz/` runs the same parsers
//! under libFuzzer.

use ocvault::crypto::{self, Keys, MasterKey, SealKind};
use ocvault::format::{
    self, BackupMarker, BlobType, ChunkerParams, Config, IndexFile, IndexPack, KdfParams, KeyFile,
    KeyPayload, LockMode, LogEntry, Node, NodeKind, ObjectLock, PackHeader, PackedBlob,
    PgBaseBackup, PruneMark, RetentionEntry, RetentionLedger, ShareApproval, Snapshot,
    SnapshotSummary, StoragePolicy, Tree, WalRecord, CONFIG_MAGIC, FORMAT_VERSION,
    KEY_FILE_VERSION, KEY_FILE_VERSION_WRITE_ONLY, KEY_MAGIC, OLDEST_FORMAT_VERSION,
};
use ocvault::index::Index;
use ocvault::pack::{open_blob, parse_header_from_tail, seal_blob, PackBuilder};
use ocvault::repository::{decode_key_file, read_config_version, try_key_file};
use ocvault::wal::catalog;
use ocvault::{BlobId, DataId, Error, Id, IndexFileId, PackId, Result, SnapshotId, TreeId};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index as Pos;
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;
use std::sync::OnceLock;

/// Only the scratch folder of the shared helpers: these tests drive no CLI.
#[path = "common/env.rs"]
#[allow(dead_code, reason = "only the scratch folder is used here")]
mod scratch;

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| MasterKey::from_bytes([7; 32]).derive())
}

const KINDS: [SealKind; 11] = SealKind::ALL;

// ---------------------------------------------------------------------------------------------
// Decode paths, as `Repository::open` and `Repository::decode_file` run them.

fn config_file(keys: &Keys, config: &Config) -> Vec<u8> {
    let mut bytes = CONFIG_MAGIC.to_vec();
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&keys.seal(
        SealKind::Config,
        &FORMAT_VERSION.to_le_bytes(),
        &format::frame(&config.encode(), 0),
    ));
    bytes
}

/// A config file whose clear header says `version` (its AAD binds that version).
fn config_file_of_version(keys: &Keys, config: &Config, version: u32) -> Vec<u8> {
    let mut bytes = CONFIG_MAGIC.to_vec();
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&keys.seal(
        SealKind::Config,
        &version.to_le_bytes(),
        &format::frame(&config.encode(), 0),
    ));
    bytes
}

fn decode_config(keys: &Keys, bytes: &[u8]) -> Result<Config> {
    let version = read_config_version(bytes)?;
    let framed = keys.open(SealKind::Config, &version.to_le_bytes(), &bytes[12..])?;
    let config = Config::decode(&format::unframe(&framed, 1 << 20, "config")?, version)?;
    if config.version != version {
        return Err(Error::corrupt("config", "sealed version differs"));
    }
    Ok(config)
}

fn seal_file<T: Serialize>(keys: &Keys, kind: SealKind, value: &T, level: i32) -> Vec<u8> {
    keys.seal(
        kind,
        &[],
        &format::frame(&format::to_postcard(value), level),
    )
}

fn decode_framed<T: DeserializeOwned>(framed: &[u8]) -> Result<T> {
    format::from_postcard(
        &format::unframe(framed, format::MAX_OBJECT_SIZE, "file")?,
        "file",
    )
}

fn decode_sealed<T: DeserializeOwned>(keys: &Keys, kind: SealKind, sealed: &[u8]) -> Result<T> {
    decode_framed(&keys.open(kind, &[], sealed)?)
}

// ---------------------------------------------------------------------------------------------
// Mutations.

#[derive(Clone, Debug)]
enum Mutation {
    Flip(Pos, u8),
    Set(Pos, u8),
    Truncate(Pos),
    Insert(Pos, Vec<u8>),
    Remove(Pos, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Pos>(), 1..=255u8).prop_map(|(p, m)| Mutation::Flip(p, m)),
        1 => (any::<Pos>(), any::<u8>()).prop_map(|(p, b)| Mutation::Set(p, b)),
        1 => any::<Pos>().prop_map(Mutation::Truncate),
        1 => (any::<Pos>(), vec(any::<u8>(), 1..9)).prop_map(|(p, b)| Mutation::Insert(p, b)),
        1 => (any::<Pos>(), 1..9usize).prop_map(|(p, n)| Mutation::Remove(p, n)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    vec(mutation(), 1..4)
}

fn apply(bytes: &[u8], ms: &[Mutation]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for m in ms {
        match m {
            Mutation::Flip(p, mask) if !b.is_empty() => {
                let i = p.index(b.len());
                b[i] ^= mask;
            }
            Mutation::Set(p, v) if !b.is_empty() => {
                let i = p.index(b.len());
                b[i] = *v;
            }
            Mutation::Truncate(p) if !b.is_empty() => {
                let n = p.index(b.len());
                b.truncate(n);
            }
            Mutation::Insert(p, v) => {
                let i = p.index(b.len() + 1);
                b.splice(i..i, v.iter().copied());
            }
            Mutation::Remove(p, n) if !b.is_empty() => {
                let i = p.index(b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            _ => {}
        }
    }
    b
}

/// The postcard encoding, raw and framed, with mutations: the parser may accept or refuse,
/// never panic.
fn check_postcard_mutations<T: Serialize + DeserializeOwned>(value: &T, ms: &[Mutation]) {
    let enc = format::to_postcard(value);
    let _ = format::from_postcard::<T>(&apply(&enc, ms), "mutated");
    let framed = format::frame(&enc, 3);
    let _ = decode_framed::<T>(&apply(&framed, ms));
}

/// A sealed file with any change must not open.
fn check_sealed_mutations<T: Serialize + DeserializeOwned + Debug>(
    kind: SealKind,
    value: &T,
    ms: &[Mutation],
) {
    let sealed = seal_file(keys(), kind, value, 3);
    let bad = apply(&sealed, ms);
    if bad != sealed {
        let r = decode_sealed::<T>(keys(), kind, &bad);
        assert!(r.is_err(), "a changed {kind:?} opened: {r:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies for the on-disk types.

fn id() -> impl Strategy<Value = Id> {
    any::<[u8; 32]>().prop_map(Id)
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,16}"
}

fn raw_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn blob_type() -> impl Strategy<Value = BlobType> {
    prop_oneof![Just(BlobType::Data), Just(BlobType::Tree)]
}

fn packed_blob() -> impl Strategy<Value = PackedBlob> {
    (id(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(id, offset, length, raw_length)| {
        PackedBlob {
            id: BlobId(id),
            offset,
            length,
            raw_length,
        }
    })
}

fn pack_header() -> impl Strategy<Value = PackHeader> {
    (blob_type(), vec(packed_blob(), 0..24))
        .prop_map(|(blob_type, blobs)| PackHeader { blob_type, blobs })
}

fn index_pack() -> impl Strategy<Value = IndexPack> {
    (id(), blob_type(), any::<u64>(), vec(packed_blob(), 0..16)).prop_map(
        |(id, blob_type, size, blobs)| IndexPack {
            id: PackId(id),
            blob_type,
            size,
            blobs,
        },
    )
}

fn index_file() -> impl Strategy<Value = IndexFile> {
    (
        vec(id().prop_map(IndexFileId), 0..3),
        vec(index_pack(), 0..6),
    )
        .prop_map(|(supersedes, packs)| IndexFile { supersedes, packs })
}

fn node_kind() -> impl Strategy<Value = NodeKind> {
    prop_oneof![
        Just(NodeKind::File),
        Just(NodeKind::Dir),
        Just(NodeKind::Symlink),
        Just(NodeKind::Fifo),
        Just(NodeKind::CharDevice),
        Just(NodeKind::BlockDevice),
        Just(NodeKind::Socket),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    let names = (
        raw_bytes(24),
        node_kind(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        text(),
        text(),
    );
    let numbers = (
        any::<i64>(),
        any::<i64>(),
        any::<i64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    );
    let refs = (
        vec((raw_bytes(12), raw_bytes(24)), 0..3),
        raw_bytes(24),
        vec(id(), 0..4),
        proptest::option::of(id()),
    );
    (names, numbers, refs).prop_map(
        |(
            (name, kind, mode, uid, gid, user, group),
            (mtime_ns, ctime_ns, atime_ns, size, inode, device, links, rdev),
            (xattrs, link_target, content, subtree),
        )| Node {
            name,
            kind,
            mode,
            uid,
            gid,
            user,
            group,
            mtime_ns,
            ctime_ns,
            atime_ns,
            size,
            inode,
            device,
            links,
            rdev,
            xattrs,
            link_target,
            content: content.into_iter().map(DataId).collect(),
            subtree: subtree.map(TreeId),
        },
    )
}

fn tree() -> impl Strategy<Value = Tree> {
    vec(node(), 0..8).prop_map(|nodes| Tree { nodes })
}

fn summary() -> impl Strategy<Value = SnapshotSummary> {
    any::<[u64; 10]>().prop_map(|v| SnapshotSummary {
        files_new: v[0],
        files_changed: v[1],
        files_unmodified: v[2],
        dirs: v[3],
        bytes_read: v[4],
        bytes_total: v[5],
        blobs_added: v[6],
        bytes_added: v[7],
        errors: v[8],
        duration_ms: v[9],
    })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        (
            any::<i64>(),
            text(),
            text(),
            vec(text(), 0..4),
            vec(text(), 0..3),
        ),
        (
            id(),
            proptest::option::of(id().prop_map(SnapshotId)),
            vec(text(), 0..3),
        ),
        (
            any::<bool>(),
            summary(),
            text(),
            proptest::option::of(pg_base_backup()),
            vec(id(), 0..3),
        ),
    )
        .prop_map(
            |(
                (time_unix_ns, hostname, username, paths, tags),
                (tree, parent, excludes),
                (incomplete, summary, program_version, postgres, log_heads),
            )| Snapshot {
                time_unix_ns,
                hostname,
                username,
                paths,
                tags,
                tree: TreeId(tree),
                parent,
                excludes,
                incomplete,
                summary,
                program_version,
                postgres,
                log_heads,
            },
        )
}

/// A snapshot as a format version 1 repository holds it: no `postgres`, no `log_heads`.
fn snapshot_v1() -> impl Strategy<Value = Snapshot> {
    snapshot().prop_map(|s| Snapshot {
        postgres: None,
        log_heads: Vec::new(),
        ..s
    })
}

/// A snapshot as format versions 2 and 3 hold it: no `log_heads`.
fn snapshot_v3() -> impl Strategy<Value = Snapshot> {
    snapshot().prop_map(|s| Snapshot {
        log_heads: Vec::new(),
        ..s
    })
}

fn pg_base_backup() -> impl Strategy<Value = PgBaseBackup> {
    (
        (text(), any::<u32>(), any::<u64>(), text(), any::<i64>()),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<u32>()),
        ),
    )
        .prop_map(
            |(
                (label, timeline, start_lsn, start_wal, start_unix_ns),
                (stop_lsn, stop_unix_ns, stop_timeline),
            )| PgBaseBackup {
                label,
                timeline,
                start_lsn,
                start_wal,
                start_unix_ns,
                stop_lsn,
                stop_unix_ns,
                stop_timeline,
            },
        )
}

fn wal_record() -> impl Strategy<Value = WalRecord> {
    (
        text(),
        any::<u64>(),
        any::<[u8; 32]>(),
        vec(id().prop_map(DataId), 0..20),
        any::<i64>(),
        text(),
    )
        .prop_map(
            |(name, size, hash, content, archived_unix_ns, hostname)| WalRecord {
                name,
                size,
                hash,
                content,
                archived_unix_ns,
                hostname,
            },
        )
}

fn log_entry() -> impl Strategy<Value = LogEntry> {
    (
        (any::<i64>(), text(), text(), text()),
        (
            vec(text(), 0..6),
            text(),
            vec(id().prop_map(SnapshotId), 0..4),
        ),
        (vec(id(), 0..3), id(), vec(any::<[u8; 3]>(), 0..4)),
    )
        .prop_map(
            |(
                (time_unix_ns, hostname, username, operation),
                (arguments, result, snapshots),
                (parents, key_id, approvals),
            )| LogEntry {
                time_unix_ns,
                hostname,
                username,
                operation,
                arguments,
                result,
                snapshots,
                parents,
                key_id,
                approvals: approvals
                    .into_iter()
                    .map(|[index, threshold, count]| ShareApproval {
                        index,
                        threshold,
                        count,
                    })
                    .collect(),
            },
        )
}

/// A log entry as format versions 1 to 3 hold it: no chain, key or approvals.
fn log_entry_v3() -> impl Strategy<Value = LogEntry> {
    log_entry().prop_map(|e| LogEntry {
        parents: Vec::new(),
        key_id: Id::default(),
        approvals: Vec::new(),
        ..e
    })
}

/// `locks/<id>`: what prune reads to learn which backups are running.
fn backup_marker() -> impl Strategy<Value = BackupMarker> {
    (text(), any::<u32>(), any::<i64>(), any::<i64>()).prop_map(
        |(hostname, pid, started_unix_ns, heartbeat_unix_ns)| BackupMarker {
            hostname,
            pid,
            started_unix_ns,
            heartbeat_unix_ns,
        },
    )
}

/// `retention/<id>` (format v3): what Object Lock extensions covered, and since when.
fn retention_ledger() -> impl Strategy<Value = RetentionLedger> {
    (
        vec((id(), any::<i64>(), any::<i64>()), 0..5),
        any::<[i64; 4]>(),
    )
        .prop_map(|(entries, t)| RetentionLedger {
            entries: entries
                .into_iter()
                .map(|(id, until, at)| RetentionEntry {
                    snapshot: SnapshotId(id),
                    locked_until_unix_s: until,
                    extended_at_unix_s: at,
                })
                .collect(),
            metadata_locked_until_unix_s: t[0],
            metadata_extended_at_unix_s: t[1],
            wal_locked_until_unix_s: t[2],
            wal_extended_at_unix_s: t[3],
        })
}

/// `prune/<id>`: the packs a prune took out of the index.
fn prune_mark() -> impl Strategy<Value = PruneMark> {
    (any::<i64>(), vec(index_pack(), 0..5)).prop_map(|(marked_unix_ns, packs)| PruneMark {
        marked_unix_ns,
        packs,
    })
}

fn config() -> impl Strategy<Value = Config> {
    (
        id(),
        any::<[u32; 3]>(),
        any::<i32>(),
        any::<u32>(),
        storage_policy(),
    )
        .prop_map(
            |(repository_id, c, compression_level, pack_target_size, storage)| Config {
                version: FORMAT_VERSION,
                repository_id,
                chunker: ChunkerParams {
                    min_size: c[0],
                    avg_size: c[1],
                    max_size: c[2],
                },
                compression_level,
                pack_target_size,
                storage,
            },
        )
}

fn storage_policy() -> impl Strategy<Value = StoragePolicy> {
    (
        option::of((any::<bool>(), any::<u32>())),
        option::of("[A-Z_]{0,20}"),
    )
        .prop_map(|(lock, data_storage_class)| StoragePolicy {
            lock: lock.map(|(compliance, days)| ObjectLock {
                mode: if compliance {
                    LockMode::Compliance
                } else {
                    LockMode::Governance
                },
                days,
            }),
            data_storage_class,
        })
}

fn kdf(max_memory: u32, max_iter: u32, max_par: u32) -> impl Strategy<Value = KdfParams> {
    (0..=max_memory, 0..=max_iter, 0..=max_par, any::<[u8; 32]>()).prop_map(
        |(memory_kib, iterations, parallelism, salt)| KdfParams {
            memory_kib,
            iterations,
            parallelism,
            salt,
        },
    )
}

fn key_file_bytes(kf: &KeyFile) -> Vec<u8> {
    let mut bytes = KEY_MAGIC.to_vec();
    bytes.extend_from_slice(&format::to_postcard(kf));
    bytes
}

/// A real key file with cheap Argon2id parameters, wrapping `master`.
fn make_key_file(master: &[u8; 32], password: &[u8], salt: [u8; 32]) -> (KeyFile, Vec<u8>) {
    let kdf = KdfParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
        salt,
    };
    let wrap = crypto::password_key(password, &kdf).unwrap();
    let payload = KeyPayload {
        master_key: *master,
        created_unix_ns: 1,
        hostname: "host".into(),
        username: "user".into(),
    };
    let kf = KeyFile {
        version: KEY_FILE_VERSION,
        kdf,
        sealed_payload: crypto::wrap_with_password_key(&wrap, &format::to_postcard(&payload)),
    };
    let bytes = key_file_bytes(&kf);
    (kf, bytes)
}

/// Data that zstd shrinks: words from a small vocabulary.
fn compressible(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(0..16usize, 0..max / 6).prop_map(|words| {
        const WORDS: [&[u8]; 16] = [
            b"alpha ", b"beta ", b"gamma ", b"delta ", b"INSERT ", b"INTO ", b"VALUES ", b"(1, ",
            b"'x'), ", b"\n", b"the ", b"quick ", b"brown ", b"fox ", b"jumps ", b"over ",
        ];
        words
            .iter()
            .flat_map(|&w| WORDS[w].iter().copied())
            .collect()
    })
}

fn any_data(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![raw_bytes(max), compressible(max)]
}

// ---------------------------------------------------------------------------------------------
// Round trips.

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn key_file_roundtrip(kdf in kdf(4 * 1024 * 1024, 100, 64), payload in raw_bytes(120)) {
        let kf = KeyFile { version: KEY_FILE_VERSION, kdf, sealed_payload: payload };
        // Parameters beyond what `init` writes are refused, the others read back.
        let decoded = decode_key_file(&key_file_bytes(&kf));
        prop_assert_eq!(decoded.is_ok(), ocvault::repository::kdf_within_limits(&kf.kdf));
        if let Ok(d) = decoded {
            prop_assert_eq!(d, kf.clone());
        }
        // Out-of-range parameters and other versions are refused.
        let mut big = kf.clone();
        big.kdf.memory_kib = ocvault::repository::MAX_KDF_MEMORY_KIB + 1;
        prop_assert!(decode_key_file(&key_file_bytes(&big)).is_err());
        // Key files are version 1 (full keys) or 2 (write-only keys, format 4); others are refused.
        let mut write_only = kf.clone();
        write_only.version = KEY_FILE_VERSION_WRITE_ONLY;
        prop_assert_eq!(
            decode_key_file(&key_file_bytes(&write_only)).is_ok(),
            ocvault::repository::kdf_within_limits(&kf.kdf)
        );
        for version in [0, KEY_FILE_VERSION_WRITE_ONLY + 1, FORMAT_VERSION + 1] {
            let mut other = kf.clone();
            other.version = version;
            let is_unsupported = matches!(
                decode_key_file(&key_file_bytes(&other)),
                Err(Error::UnsupportedKeyFileVersion { .. })
            );
            prop_assert!(is_unsupported);
        }
    }

    #[test]
    fn config_roundtrip(c in config()) {
        let bytes = config_file(keys(), &c);
        prop_assert_eq!(read_config_version(&bytes).unwrap(), FORMAT_VERSION);
        prop_assert_eq!(decode_config(keys(), &bytes).unwrap(), c.clone());
        prop_assert_eq!(format::from_postcard::<Config>(&format::to_postcard(&c), "c").unwrap(), c);
        // Another master key does not open it.
        let other = MasterKey::from_bytes([8; 32]).derive();
        prop_assert!(decode_config(&other, &bytes).is_err());
    }

    /// Every version from the oldest to this build's reads, with the sealed version equal to
    /// the clear one; others are refused before any key work.
    #[test]
    fn config_versions(c in config()) {
        for version in OLDEST_FORMAT_VERSION..=FORMAT_VERSION {
            // Versions before 3 store no storage policy.
            let storage = if version >= 3 { c.storage.clone() } else { StoragePolicy::default() };
            let c = Config { version, storage, ..c.clone() };
            let bytes = config_file_of_version(keys(), &c, version);
            prop_assert_eq!(read_config_version(&bytes).unwrap(), version);
            prop_assert_eq!(decode_config(keys(), &bytes).unwrap(), c.clone());
            // A sealed version that differs from the clear one is damage.
            let other = if version == 1 { 2 } else { 1 };
            let mixed = config_file_of_version(keys(), &Config { version: other, ..c.clone() }, version);
            prop_assert!(decode_config(keys(), &mixed).is_err());
        }
        for version in [0, FORMAT_VERSION + 1, u32::MAX] {
            let bytes = config_file_of_version(keys(), &Config { version, ..c.clone() }, version);
            let is_unsupported = matches!(
                read_config_version(&bytes),
                Err(Error::UnsupportedVersion { found, .. }) if found == version
            );
            prop_assert!(is_unsupported);
        }
    }

    #[test]
    fn pack_header_roundtrip(h in pack_header(), level in 0..10i32) {
        let enc = format::to_postcard(&h);
        prop_assert_eq!(format::from_postcard::<PackHeader>(&enc, "h").unwrap(), h.clone());
        let sealed = seal_file(keys(), SealKind::PackHeader, &h, level);
        prop_assert_eq!(decode_sealed::<PackHeader>(keys(), SealKind::PackHeader, &sealed).unwrap(), h);
    }

    #[test]
    fn index_file_roundtrip(f in index_file(), level in 0..10i32) {
        let enc = format::to_postcard(&f);
        prop_assert_eq!(format::from_postcard::<IndexFile>(&enc, "i").unwrap(), f.clone());
        let sealed = seal_file(keys(), SealKind::Index, &f, level);
        prop_assert_eq!(decode_sealed::<IndexFile>(keys(), SealKind::Index, &sealed).unwrap(), f.clone());
        // Every blob of the file is found in the index built from it.
        let index = Index::from_files(vec![(IndexFileId::default(), f.clone())]);
        for p in &f.packs {
            for b in &p.blobs {
                let loc = index.get(&b.id).unwrap();
                prop_assert!(f.packs.iter().any(|q| q.id == index.pack(loc.pack).id));
            }
        }
    }

    #[test]
    fn tree_roundtrip(t in tree(), level in 0..10i32) {
        let enc = format::to_postcard(&t);
        prop_assert_eq!(format::from_postcard::<Tree>(&enc, "t").unwrap(), t.clone());
        for n in &t.nodes {
            let one = format::to_postcard(n);
            prop_assert_eq!(&format::from_postcard::<Node>(&one, "n").unwrap(), n);
        }
        // As a stored tree blob.
        let id = keys().blob_id(&enc);
        let sealed = seal_blob(keys(), BlobType::Tree, &id, &enc, level);
        let raw = open_blob(keys(), BlobType::Tree, &id, &sealed, enc.len() as u32).unwrap();
        prop_assert_eq!(format::from_postcard::<Tree>(&raw, "t").unwrap(), t);
    }

    #[test]
    fn snapshot_roundtrip(s in snapshot(), level in 0..10i32) {
        let enc = format::to_postcard(&s);
        prop_assert_eq!(format::from_postcard::<Snapshot>(&enc, "s").unwrap(), s.clone());
        let sealed = seal_file(keys(), SealKind::Snapshot, &s, level);
        prop_assert_eq!(decode_sealed::<Snapshot>(keys(), SealKind::Snapshot, &sealed).unwrap(), s);
    }

    /// Each format version's layout reads back what it wrote; v1 cannot hold `postgres`.
    #[test]
    fn snapshot_roundtrip_in_every_version(
        s in snapshot(),
        v3 in snapshot_v3(),
        v1 in snapshot_v1(),
    ) {
        prop_assert_eq!(Snapshot::decode(&s.encode(4), 4, "s").unwrap(), s.clone());
        prop_assert_eq!(s.encode(4), format::to_postcard(&s));
        for version in [2, 3] {
            prop_assert_eq!(Snapshot::decode(&v3.encode(version), version, "s").unwrap(), v3.clone());
            // Before version 4 a repository stores no `log_heads`.
            let dropped = Snapshot::decode(&s.encode(version), version, "s").unwrap();
            prop_assert_eq!(dropped, Snapshot { log_heads: Vec::new(), ..s.clone() });
        }
        // The v4 layout is the v2/v3 layout followed by the heads: `00` for none.
        let mut v3_then_none = v3.encode(3);
        v3_then_none.push(0);
        prop_assert_eq!(v3.encode(4), v3_then_none);
        prop_assert_eq!(Snapshot::decode(&v1.encode(1), 1, "s").unwrap(), v1.clone());
        // A v1 repository stores no `postgres` (writers refuse base backups there first).
        let dropped = Snapshot::decode(&s.encode(1), 1, "s").unwrap();
        prop_assert_eq!(dropped, Snapshot { postgres: None, log_heads: Vec::new(), ..s.clone() });
        // The v2 layout is the v1 layout followed by the Option: `00` for none.
        let mut v1_then_none = v1.encode(1);
        v1_then_none.push(0);
        prop_assert_eq!(v1.encode(2), v1_then_none);
    }

    /// Neither layout decodes as the other: v1 bytes end before v2's last field (postcard
    /// needs its Option byte), v2 bytes have at least that byte left over for a v1 reader.
    #[test]
    fn snapshot_layouts_do_not_decode_as_each_other(s in snapshot(), v1 in snapshot_v1()) {
        let err = Snapshot::decode(&v1.encode(1), 2, "s").unwrap_err().to_string();
        prop_assert!(err.contains("cannot decode"), "{}", err);
        for v2 in [&s, &v1] {
            let err = Snapshot::decode(&v2.encode(2), 1, "s").unwrap_err().to_string();
            prop_assert!(err.contains("trailing bytes"), "{}", err);
            // v4 bytes carry at least the heads' length byte past the v3 layout.
            let err = Snapshot::decode(&v2.encode(4), 3, "s").unwrap_err().to_string();
            prop_assert!(err.contains("trailing bytes"), "{}", err);
        }
        let err = Snapshot::decode(&s.encode(3), 4, "s").unwrap_err().to_string();
        prop_assert!(err.contains("cannot decode"), "{}", err);
    }

    #[test]
    fn wal_record_roundtrip(r in wal_record(), level in 0..10i32) {
        let enc = format::to_postcard(&r);
        prop_assert_eq!(format::from_postcard::<WalRecord>(&enc, "w").unwrap(), r.clone());
        let (id, sealed) = catalog::encode(keys(), level, &r);
        prop_assert_eq!(id, keys().wal_record_id(&r.name));
        prop_assert_eq!(catalog::decode(keys(), &id, &sealed).unwrap(), r);
    }

    /// A record is bound to its name twice: by the AAD (a record copied to another name's
    /// file does not open) and by the name inside (a record sealed for another name's file
    /// names the wrong WAL file).
    #[test]
    fn wal_record_under_another_name_is_refused(r in wal_record(), other in text()) {
        prop_assume!(other != r.name);
        let (_, sealed) = catalog::encode(keys(), 3, &r);
        let elsewhere = keys().wal_record_id(&other);
        let err = catalog::decode(keys(), &elsewhere, &sealed).unwrap_err().to_string();
        prop_assert!(err.contains("authentication failed"), "{}", err);
        let resealed = keys().seal(
            SealKind::Wal,
            &elsewhere.0,
            &format::frame(&format::to_postcard(&r), 3),
        );
        let err = catalog::decode(keys(), &elsewhere, &resealed).unwrap_err().to_string();
        prop_assert!(err.contains("names another WAL file"), "{}", err);
        // Sealed as another kind, or without its id as AAD: refused too.
        let plain = format::frame(&format::to_postcard(&r), 3);
        let own = keys().wal_record_id(&r.name);
        prop_assert!(catalog::decode(keys(), &own, &keys().seal(SealKind::Wal, &[], &plain)).is_err());
        prop_assert!(catalog::decode(keys(), &own, &keys().seal(SealKind::Snapshot, &own.0, &plain)).is_err());
    }

    /// Each format version's log entry layout reads back what it wrote; before version 4
    /// the chain fields are not stored, and neither layout decodes as the other.
    #[test]
    fn log_entry_roundtrip_in_every_version(e in log_entry(), v3 in log_entry_v3()) {
        prop_assert_eq!(LogEntry::decode(&e.encode(4), 4, "l").unwrap(), e.clone());
        prop_assert_eq!(e.encode(4), format::to_postcard(&e));
        for version in 1..=3 {
            prop_assert_eq!(LogEntry::decode(&v3.encode(version), version, "l").unwrap(), v3.clone());
            let dropped = LogEntry::decode(&e.encode(version), version, "l").unwrap();
            prop_assert_eq!(
                dropped,
                LogEntry { parents: Vec::new(), key_id: Id::default(), approvals: Vec::new(), ..e.clone() }
            );
            let err = LogEntry::decode(&e.encode(4), version, "l").unwrap_err().to_string();
            prop_assert!(err.contains("trailing bytes"), "{}", err);
        }
        let err = LogEntry::decode(&e.encode(3), 4, "l").unwrap_err().to_string();
        prop_assert!(err.contains("cannot decode"), "{}", err);
    }

    #[test]
    fn log_entry_roundtrip(e in log_entry(), level in 0..10i32) {
        let enc = format::to_postcard(&e);
        prop_assert_eq!(format::from_postcard::<LogEntry>(&enc, "l").unwrap(), e.clone());
        let sealed = seal_file(keys(), SealKind::Log, &e, level);
        prop_assert_eq!(decode_sealed::<LogEntry>(keys(), SealKind::Log, &sealed).unwrap(), e.clone());
        // Sealed as another kind, a log entry does not open as a log entry.
        let other = seal_file(keys(), SealKind::Snapshot, &e, level);
        prop_assert!(decode_sealed::<LogEntry>(keys(), SealKind::Log, &other).is_err());
    }

    #[test]
    fn backup_marker_roundtrip(m in backup_marker(), level in 0..10i32) {
        let enc = format::to_postcard(&m);
        prop_assert_eq!(format::from_postcard::<BackupMarker>(&enc, "m").unwrap(), m.clone());
        let sealed = seal_file(keys(), SealKind::Lock, &m, level);
        prop_assert_eq!(decode_sealed::<BackupMarker>(keys(), SealKind::Lock, &sealed).unwrap(), m.clone());
        // A prune mark's key does not open a backup marker, nor the other way round.
        prop_assert!(decode_sealed::<BackupMarker>(keys(), SealKind::PruneMark, &sealed).is_err());
    }

    #[test]
    fn retention_ledger_roundtrip(l in retention_ledger(), level in 0..10i32) {
        let enc = format::to_postcard(&l);
        prop_assert_eq!(format::from_postcard::<RetentionLedger>(&enc, "r").unwrap(), l.clone());
        let sealed = seal_file(keys(), SealKind::Retention, &l, level);
        prop_assert_eq!(decode_sealed::<RetentionLedger>(keys(), SealKind::Retention, &sealed).unwrap(), l.clone());
        prop_assert!(decode_sealed::<RetentionLedger>(keys(), SealKind::PruneMark, &sealed).is_err());
    }

    #[test]
    fn prune_mark_roundtrip(m in prune_mark(), level in 0..10i32) {
        let enc = format::to_postcard(&m);
        prop_assert_eq!(format::from_postcard::<PruneMark>(&enc, "p").unwrap(), m.clone());
        let sealed = seal_file(keys(), SealKind::PruneMark, &m, level);
        prop_assert_eq!(decode_sealed::<PruneMark>(keys(), SealKind::PruneMark, &sealed).unwrap(), m.clone());
        prop_assert!(decode_sealed::<PruneMark>(keys(), SealKind::Lock, &sealed).is_err());
        prop_assert!(decode_sealed::<PruneMark>(keys(), SealKind::Index, &sealed).is_err());
    }

    #[test]
    fn frame_roundtrip(data in any_data(20_000), level in 0..20i32) {
        let framed = format::frame(&data, level);
        prop_assert_eq!(&format::unframe(&framed, data.len(), "f").unwrap(), &data);
        // A bound below the real length is enforced for compressed frames.
        if framed[0] == format::CODEC_ZSTD {
            prop_assert!(format::unframe(&framed, data.len() - 1, "f").is_err());
        }
    }

    #[test]
    fn seal_open_roundtrip(
        k in 0..KINDS.len(),
        aad in raw_bytes(40),
        plain in raw_bytes(2000),
    ) {
        let kind = KINDS[k];
        let sealed = keys().seal(kind, &aad, &plain);
        prop_assert_eq!(sealed.len(), plain.len() + crypto::SEAL_OVERHEAD);
        prop_assert_eq!(&keys().open(kind, &aad, &sealed).unwrap(), &plain);
        for other in KINDS {
            if other != kind {
                prop_assert!(keys().open(other, &aad, &sealed).is_err());
            }
        }
        let mut aad2 = aad.clone();
        aad2.push(1);
        prop_assert!(keys().open(kind, &aad2, &sealed).is_err());
        let other = MasterKey::from_bytes([8; 32]).derive();
        prop_assert!(other.open(kind, &aad, &sealed).is_err());
    }

    #[test]
    fn blob_roundtrip(data in any_data(50_000), tree_blob: bool, level in 0..6i32) {
        let t = if tree_blob { BlobType::Tree } else { BlobType::Data };
        let id = keys().blob_id(&data);
        let sealed = seal_blob(keys(), t, &id, &data, level);
        let n = data.len() as u32;
        prop_assert_eq!(&open_blob(keys(), t, &id, &sealed, n).unwrap(), &data);
        let wrong_type = if tree_blob { BlobType::Data } else { BlobType::Tree };
        prop_assert!(open_blob(keys(), wrong_type, &id, &sealed, n).is_err());
        prop_assert!(open_blob(keys(), t, &id, &sealed, n + 1).is_err());
        let mut other = id;
        other.0[0] ^= 1;
        prop_assert!(open_blob(keys(), t, &other, &sealed, n).is_err());
    }

    #[test]
    fn pack_roundtrip(
        blobs in vec(any_data(3000), 0..12),
        tree_blobs: bool,
        cut in any::<Pos>(),
    ) {
        let t = if tree_blobs { BlobType::Tree } else { BlobType::Data };
        let mut builder = PackBuilder::new(t, 0);
        let mut sealed_blobs = Vec::new();
        for b in &blobs {
            let id = keys().blob_id(b);
            let sealed = seal_blob(keys(), t, &id, b, 3);
            builder.add(id, b.len() as u32, &sealed);
            sealed_blobs.push(sealed);
        }
        let (pack, entry) = builder.finish(keys());
        prop_assert_eq!(entry.size, pack.len() as u64);
        prop_assert_eq!(*entry.id, Id::of_stored_bytes(&pack));
        let size = pack.len() as u64;
        let h = parse_header_from_tail(keys(), &pack, size).unwrap().unwrap();
        prop_assert_eq!(h.blob_type, t);
        prop_assert_eq!(&h.blobs, &entry.blobs);
        for (pb, data) in h.blobs.iter().zip(&blobs) {
            let s = &pack[pb.offset as usize..(pb.offset + pb.length) as usize];
            prop_assert_eq!(&open_blob(keys(), t, &pb.id, s, pb.raw_length).unwrap(), data);
        }
        // A shorter tail: the header when all of it is there, else a request for more.
        let hlen = u32::from_le_bytes(pack[pack.len() - 4..].try_into().unwrap()) as usize;
        let k = cut.index(pack.len() + 1);
        let tail = &pack[pack.len() - k..];
        let r = parse_header_from_tail(keys(), tail, size);
        if k < 4 {
            prop_assert!(r.is_err());
        } else if k < hlen + 4 {
            prop_assert!(matches!(r, Ok(None)));
        } else {
            prop_assert_eq!(r.unwrap().unwrap(), h);
        }
    }
}

#[test]
fn key_file_with_password_roundtrip() {
    for i in 0..8u8 {
        let master = [i; 32];
        let (kf, bytes) = make_key_file(&master, b"secret", [i.wrapping_mul(31); 32]);
        assert_eq!(decode_key_file(&bytes).unwrap(), kf);
        let opened = try_key_file(&bytes, b"secret").unwrap().unwrap();
        assert_eq!(opened.master().expect("a full key").as_bytes(), &master);
        assert_eq!(opened.hostname, "host");
        assert!(try_key_file(&bytes, b"Secret").unwrap().is_none());
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations.

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn key_file_mutations(ms in mutations(), salt: [u8; 32], master: [u8; 32]) {
        let (kf, bytes) = make_key_file(&master, b"pw", salt);
        let bad = apply(&bytes, &ms);
        match decode_key_file(&bad) {
            Err(_) => {}
            // Argon2id only where the mutated parameters keep it cheap.
            Ok(got) if got.kdf.memory_kib <= 4096 && got.kdf.iterations <= 4 => {
                let r = try_key_file(&bad, b"pw");
                // The payload is sealed: it opens only when the key file decodes as before.
                if got != kf {
                    prop_assert!(!matches!(r, Ok(Some(_))), "a changed key file opened");
                }
                if let Ok(Some(opened)) = r {
                    prop_assert_eq!(opened.master().expect("a full key").as_bytes(), &master);
                }
            }
            Ok(_) => {}
        }
    }

    #[test]
    fn config_mutations(c in config(), ms in mutations()) {
        let bytes = config_file(keys(), &c);
        let bad = apply(&bytes, &ms);
        let _ = read_config_version(&bad);
        if bad != bytes {
            prop_assert!(decode_config(keys(), &bad).is_err());
        }
        check_postcard_mutations(&c, &ms);
    }

    #[test]
    fn pack_header_mutations(h in pack_header(), ms in mutations()) {
        check_postcard_mutations(&h, &ms);
        check_sealed_mutations(SealKind::PackHeader, &h, &ms);
    }

    /// Changing any byte of a pack's header or trailer makes the header unreadable.
    #[test]
    fn pack_tail_mutations(blobs in vec(raw_bytes(500), 0..6), ms in mutations()) {
        let mut builder = PackBuilder::new(BlobType::Data, 0);
        for b in &blobs {
            let id = keys().blob_id(b);
            builder.add(id, b.len() as u32, &seal_blob(keys(), BlobType::Data, &id, b, 0));
        }
        let (pack, _) = builder.finish(keys());
        let hlen = u32::from_le_bytes(pack[pack.len() - 4..].try_into().unwrap()) as usize;
        let data_end = pack.len() - 4 - hlen;
        let (data, tail) = pack.split_at(data_end);
        let bad_tail = apply(tail, &ms);
        // Bytes inserted before an intact header only lengthen the data region: with no blob
        // to misplace, that pack is still well formed.
        if bad_tail != tail && !bad_tail.ends_with(tail) {
            let mut bad = data.to_vec();
            bad.extend_from_slice(&bad_tail);
            prop_assert!(parse_header_from_tail(keys(), &bad, bad.len() as u64).is_err());
            prop_assert!(!matches!(parse_header_from_tail(keys(), &bad_tail, bad.len() as u64), Ok(Some(_))));
        }
    }

    #[test]
    fn index_file_mutations(f in index_file(), ms in mutations()) {
        check_postcard_mutations(&f, &ms);
        check_sealed_mutations(SealKind::Index, &f, &ms);
        // Whatever a mutated (unsealed) index file decodes to, the index builds from it.
        if let Ok(g) = format::from_postcard::<IndexFile>(&apply(&format::to_postcard(&f), &ms), "i") {
            let index = Index::from_files(vec![(IndexFileId::default(), g)]);
            let _ = index.len();
        }
    }

    #[test]
    fn tree_mutations(t in tree(), ms in mutations(), level in 0..6i32) {
        check_postcard_mutations(&t, &ms);
        // As a tree blob: any change is refused.
        let enc = format::to_postcard(&t);
        let id = keys().blob_id(&enc);
        let sealed = seal_blob(keys(), BlobType::Tree, &id, &enc, level);
        let bad = apply(&sealed, &ms);
        if bad != sealed {
            prop_assert!(open_blob(keys(), BlobType::Tree, &id, &bad, enc.len() as u32).is_err());
        }
    }

    #[test]
    fn snapshot_mutations(s in snapshot(), ms in mutations()) {
        check_postcard_mutations(&s, &ms);
        check_sealed_mutations(SealKind::Snapshot, &s, &ms);
    }

    /// Both snapshot layouts, mutated, through their own decoder and the other version's.
    #[test]
    fn snapshot_version_mutations(s in snapshot(), ms in mutations()) {
        for version in [1, 2, 4] {
            let bad = apply(&s.encode(version), &ms);
            for reader in [1, 2, 4] {
                let _ = Snapshot::decode(&bad, reader, "mutated");
            }
        }
    }

    /// Both log entry layouts, mutated, through both decoders.
    #[test]
    fn log_entry_version_mutations(e in log_entry(), ms in mutations()) {
        for version in [3, 4] {
            let bad = apply(&e.encode(version), &ms);
            let _ = LogEntry::decode(&bad, 3, "mutated");
            let _ = LogEntry::decode(&bad, 4, "mutated");
        }
    }

    #[test]
    fn wal_record_mutations(r in wal_record(), ms in mutations(), level in 0..6i32) {
        check_postcard_mutations(&r, &ms);
        let (id, sealed) = catalog::encode(keys(), level, &r);
        let bad = apply(&sealed, &ms);
        if bad != sealed {
            let got = catalog::decode(keys(), &id, &bad);
            prop_assert!(got.is_err(), "a changed wal record opened: {:?}", got);
        }
    }

    #[test]
    fn log_entry_mutations(e in log_entry(), ms in mutations()) {
        check_postcard_mutations(&e, &ms);
        check_sealed_mutations(SealKind::Log, &e, &ms);
    }

    #[test]
    fn backup_marker_mutations(m in backup_marker(), ms in mutations()) {
        check_postcard_mutations(&m, &ms);
        check_sealed_mutations(SealKind::Lock, &m, &ms);
    }

    #[test]
    fn retention_ledger_mutations(l in retention_ledger(), ms in mutations()) {
        check_postcard_mutations(&l, &ms);
        check_sealed_mutations(SealKind::Retention, &l, &ms);
    }

    #[test]
    fn prune_mark_mutations(m in prune_mark(), ms in mutations()) {
        check_postcard_mutations(&m, &ms);
        check_sealed_mutations(SealKind::PruneMark, &m, &ms);
        // What prune builds from the packs of the marks it reads (the index for reading): a
        // mutated plaintext that still decodes must not panic there, and every blob of a
        // pack's first listing is found.
        let framed = apply(&format::frame(&format::to_postcard(&m), 3), &ms);
        if let Ok(bad) = decode_framed::<PruneMark>(&framed) {
            let read = Index::build(&[], &bad.packs);
            let mut seen = std::collections::HashSet::new();
            for p in bad.packs.iter().filter(|p| seen.insert(p.id)) {
                for b in &p.blobs {
                    prop_assert!(read.get(&b.id).is_some());
                }
            }
        }
    }

    /// The judgement prune makes of a decoded marker's session (`locks::list_sessions`): with
    /// no storage times, staleness is the host clock against the heartbeat written inside the
    /// file, which is arbitrary; it must neither overflow nor wrap a far-past heartbeat into
    /// a session that never goes stale.
    #[test]
    fn backup_marker_judgement(m in backup_marker(), storage_now: i64, newest: i64) {
        let first = m.heartbeat_unix_ns == m.started_unix_ns;
        let session = ocvault::locks::MarkerSession {
            files: vec![Id([1; 32])],
            first: first.then_some(Id([1; 32])),
            hostname: m.hostname.clone(),
            pid: m.pid,
            started: first.then_some(newest),
            newest: Some(newest),
            heartbeat_unix_ns: m.heartbeat_unix_ns,
        };
        let limit = ocvault::locks::stale_after().as_nanos() as i128;
        let before = ocvault::host::now_ns() as i128;
        let stale = session.is_stale(None);
        let after = ocvault::host::now_ns() as i128;
        let heartbeat = m.heartbeat_unix_ns as i128;
        if after - heartbeat <= limit {
            prop_assert!(!stale, "heartbeat {} judged stale", heartbeat);
        }
        if before - heartbeat > limit {
            prop_assert!(stale, "heartbeat {} not judged stale", heartbeat);
        }
        prop_assert_eq!(
            session.is_stale(Some(storage_now)),
            storage_now as i128 - newest as i128 > limit
        );
        prop_assert_eq!(
            session.may_predate(Some(storage_now)),
            !first || newest as i128 <= storage_now as i128 + ocvault::locks::CLOCK_SLACK_NS as i128
        );
        prop_assert!(session.may_predate(None));
    }

    /// Masking secrets in arguments never panics (byte offsets inside multi-byte characters)
    /// and never leaves a `password=` value in place.
    #[test]
    fn redact_never_panics_and_masks(
        prefix in "\\PC{0,12}",
        secret in "[a-zA-Z0-9]{1,12}",
        noise in "\\PC{0,40}",
    ) {
        let _ = ocvault::oplog::redact(&noise);
        let arg = format!("{prefix} password={secret}X ");
        let masked = ocvault::oplog::redact(&arg);
        let expected = format!("password={secret}X");
        prop_assert!(!masked.contains(&expected), "{}", masked);
    }

    #[test]
    fn sealed_mutations(k in 0..KINDS.len(), plain in raw_bytes(600), ms in mutations()) {
        let kind = KINDS[k];
        let sealed = keys().seal(kind, b"aad", &plain);
        let bad = apply(&sealed, &ms);
        if bad != sealed {
            prop_assert!(keys().open(kind, b"aad", &bad).is_err());
        }
    }

    #[test]
    fn blob_mutations(data in any_data(20_000), ms in mutations(), level in 0..6i32) {
        let id = keys().blob_id(&data);
        let sealed = seal_blob(keys(), BlobType::Data, &id, &data, level);
        let bad = apply(&sealed, &ms);
        if bad != sealed {
            prop_assert!(open_blob(keys(), BlobType::Data, &id, &bad, data.len() as u32).is_err());
        }
    }

    /// Unsealed framing with changes: unframe and the parsers behind it never panic.
    #[test]
    fn frame_mutations(data in any_data(20_000), ms in mutations(), level in 1..10i32) {
        let framed = format::frame(&data, level);
        let bad = apply(&framed, &ms);
        let _ = format::unframe(&bad, data.len(), "f");
        let _ = format::unframe(&bad, format::MAX_OBJECT_SIZE, "f");
        let _ = decode_framed::<Tree>(&bad);
    }

    /// Hostile bytes of every kind fed to every parser.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in raw_bytes(400)) {
        let _ = decode_key_file(&bytes);
        let mut with_magic = KEY_MAGIC.to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = decode_key_file(&with_magic);
        let _ = read_config_version(&bytes);
        let _ = decode_config(keys(), &bytes);
        let _ = format::from_postcard::<KeyPayload>(&bytes, "k");
        let _ = format::from_postcard::<Config>(&bytes, "c");
        let _ = format::from_postcard::<PackHeader>(&bytes, "h");
        let _ = format::from_postcard::<IndexFile>(&bytes, "i");
        let _ = format::from_postcard::<Tree>(&bytes, "t");
        let _ = format::from_postcard::<Snapshot>(&bytes, "s");
        let _ = format::from_postcard::<LogEntry>(&bytes, "l");
        let _ = format::from_postcard::<BackupMarker>(&bytes, "m");
        let _ = format::from_postcard::<PruneMark>(&bytes, "p");
        let _ = decode_framed::<IndexFile>(&bytes);
        let _ = decode_framed::<BackupMarker>(&bytes);
        let _ = decode_framed::<PruneMark>(&bytes);
        let _ = decode_framed::<Snapshot>(&bytes);
        let _ = decode_framed::<LogEntry>(&bytes);
        let _ = decode_framed::<WalRecord>(&bytes);
        let _ = format::from_postcard::<WalRecord>(&bytes, "w");
        let _ = Snapshot::decode(&bytes, 1, "s");
        let _ = Snapshot::decode(&bytes, 2, "s");
        prop_assert!(catalog::decode(keys(), &Id([0; 32]), &bytes).is_err());
        for kind in KINDS {
            prop_assert!(keys().open(kind, &[], &bytes).is_err());
        }
        prop_assert!(open_blob(keys(), BlobType::Data, &Id([0; 32]), &bytes, 100).is_err());
        let _ = crypto::unwrap_with_password_key(&[7; 32], &bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// Pack tails.

fn tail_with_length() -> impl Strategy<Value = Vec<u8>> {
    // Random bytes ending in a header length that fits (or nearly fits) the tail.
    (raw_bytes(300), -8i64..8).prop_map(|(mut t, delta)| {
        let hlen = (t.len() as i64 + delta).max(0) as u32;
        t.extend_from_slice(&hlen.to_le_bytes());
        t
    })
}

fn pack_size_for(tail_len: usize) -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(tail_len as u64),
        any::<u64>(),
        (0..64u64).prop_map(move |d| tail_len as u64 + d),
        (0..64u64).prop_map(move |d| (tail_len as u64).saturating_sub(d)),
        (0..8u64).prop_map(|d| u64::MAX - d),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn pack_tail_random_never_panics(
        (tail, size) in prop_oneof![raw_bytes(300), tail_with_length()]
            .prop_flat_map(|t| { let n = t.len(); (Just(t), pack_size_for(n)) })
    ) {
        let r = parse_header_from_tail(keys(), &tail, size);
        prop_assert!(!matches!(r, Ok(Some(_))), "random bytes decoded as a header");
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzz seeds from a real repository.

/// Makes a real repository (fs backend, every kind of stored file), decodes each stored file
/// to the input form of each fuzz target and checks that the parser accepts it. With
/// `OCVAULT_FUZZ_SEEDS=DIR` it also writes the seeds to `DIR/<target>/` (`fuzz/seed.sh` runs
/// it for `fuzz/corpus`).
#[test]
fn fuzz_seeds_from_a_real_repository() {
    use ocvault::archiver::{self, Progress, SnapshotOptions};
    use ocvault::backend::{Backend, FileKind, CONFIG_PATH};
    use ocvault::repository::{InitOptions, Repository};

    let tmp = scratch::scratch_dir("ocvault-parsers-");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(
        src.join("a.sql"),
        "INSERT INTO t VALUES (1, 'x');\n".repeat(3000),
    )
    .unwrap();
    std::fs::write(src.join("sub/b.env"), b"KEY=value\n").unwrap();
    std::os::unix::fs::symlink("../a.sql", src.join("sub/link")).unwrap();
    // The password and tiny Argon2id parameters the key_file target runs a full open with.
    let backend = Backend::open(tmp.path().join("repo").to_str().unwrap(), true).unwrap();
    let opts = InitOptions {
        kdf_memory_kib: 64,
        kdf_iterations: 1,
        ..InitOptions::default()
    };
    let repo = Repository::init(backend, b"password", &opts).unwrap();
    let mut indexed = repo.load_index().unwrap();
    let session = indexed.write_session().unwrap();
    let out = archiver::snapshot(
        &session,
        SnapshotOptions {
            paths: vec![src.clone()],
            tags: vec!["daily".into()],
            ..SnapshotOptions::default()
        },
        &Progress::default(),
    )
    .unwrap();
    ocvault::oplog::record(
        &session,
        &ocvault::oplog::CommandLine::new(["snapshot", "/src"]),
        "snapshot",
        "ok",
        vec![out.id],
    )
    .unwrap();
    // Two WAL files: a segment of two blocks and a history file (format version 2).
    let segment = src.join("000000010000000000000001");
    let mut seg_bytes = b"WAL segment ".repeat(1000);
    seg_bytes.resize(2 << 20, 0);
    std::fs::write(&segment, &seg_bytes).unwrap();
    let history = src.join("00000002.history");
    std::fs::write(&history, b"1\t0/3000000\tno recovery target specified\n").unwrap();
    let files = [
        ("000000010000000000000001", segment),
        ("00000002.history", history),
    ]
    .map(|(name, path)| ocvault::wal::push::WalFile {
        name: name.into(),
        path,
    });
    let pushed = ocvault::wal::push::push(&session, &files).unwrap();
    assert!(pushed.results.iter().all(|(_, r)| r.is_ok()));
    drop(session);

    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    let b = repo.backend();
    let k = repo.keys();
    let stored = |kind: FileKind| -> Vec<(Id, Vec<u8>)> {
        b.list_ids(kind)
            .unwrap()
            .into_iter()
            .map(|(id, _)| (id, b.read(&kind.path(&id)).unwrap()))
            .collect()
    };

    for (id, bytes) in stored(FileKind::Key) {
        assert!(try_key_file(&bytes, b"password").unwrap().is_some());
        seeds.push(("key_file", id.to_hex(), bytes));
    }
    let config = b.read(CONFIG_PATH).unwrap();
    let framed = k
        .open(
            SealKind::Config,
            &FORMAT_VERSION.to_le_bytes(),
            &config[12..],
        )
        .unwrap();
    assert_eq!(
        format::from_postcard::<Config>(&format::unframe(&framed, 1 << 20, "c").unwrap(), "c")
            .unwrap(),
        repo.config().clone()
    );
    seeds.push(("config", "stored".into(), config.clone()));
    seeds.push(("config", "plain".into(), framed));
    for (target, kind, seal) in [
        ("index_file", FileKind::Index, SealKind::Index),
        ("snapshot", FileKind::Snapshot, SealKind::Snapshot),
        ("log_entry", FileKind::Log, SealKind::Log),
    ] {
        for (id, bytes) in stored(kind) {
            let framed = k.open(seal, &[], &bytes).unwrap();
            match target {
                "index_file" => drop(decode_framed::<IndexFile>(&framed).unwrap()),
                "snapshot" => drop(decode_framed::<Snapshot>(&framed).unwrap()),
                _ => drop(decode_framed::<LogEntry>(&framed).unwrap()),
            }
            seeds.push((target, id.to_hex(), framed));
            seeds.push(("unseal", id.to_hex(), bytes));
        }
    }
    // Snapshots in the v1 layout too: the snapshot target decodes its input as both.
    for (id, bytes) in stored(FileKind::Snapshot) {
        let snap: Snapshot = decode_sealed(k, SealKind::Snapshot, &bytes).unwrap();
        let framed = format::frame(&snap.encode(1), 3);
        seeds.push(("snapshot", format!("{}-v1", id.to_hex()), framed));
    }
    // WAL records: the framed plaintext for wal_record, the stored bytes for unseal.
    let wal = stored(FileKind::Wal);
    assert_eq!(wal.len(), 2);
    for (id, bytes) in wal {
        let record = catalog::decode(k, &id, &bytes).unwrap();
        assert_eq!(id, k.wal_record_id(&record.name));
        let framed = k.open(SealKind::Wal, &id.0, &bytes).unwrap();
        assert_eq!(decode_framed::<WalRecord>(&framed).unwrap(), record);
        seeds.push(("wal_record", id.to_hex(), framed));
        seeds.push(("unseal", id.to_hex(), bytes));
    }
    // A backup marker (first and heartbeat) and a prune mark holding the index's packs, as
    // locks.rs and prune.rs write them: none is left in a repository after the commands end.
    let started = ocvault::host::now_ns();
    for (name, heartbeat) in [("first", started), ("heartbeat", started + 60_000_000_000)] {
        let marker = BackupMarker {
            hostname: "host".into(),
            pid: 4242,
            started_unix_ns: started,
            heartbeat_unix_ns: heartbeat,
        };
        let framed = format::frame(&format::to_postcard(&marker), 3);
        seeds.push((
            "unseal",
            format!("marker-{name}"),
            k.seal(SealKind::Lock, &[], &framed),
        ));
        seeds.push(("backup_marker", name.into(), framed));
    }
    for (id, bytes) in stored(FileKind::Index) {
        let file: IndexFile = decode_sealed(k, SealKind::Index, &bytes).unwrap();
        let mark = PruneMark {
            marked_unix_ns: started,
            packs: file.packs,
        };
        let framed = format::frame(&format::to_postcard(&mark), 3);
        seeds.push((
            "unseal",
            format!("mark-{}", id.to_hex()),
            k.seal(SealKind::PruneMark, &[], &framed),
        ));
        seeds.push(("prune_mark", id.to_hex(), framed));
    }
    for (id, bytes) in stored(FileKind::Pack) {
        let hlen = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
        let data_end = bytes.len() - 4 - hlen;
        let header = parse_header_from_tail(k, &bytes, bytes.len() as u64)
            .unwrap()
            .unwrap();
        let framed = k
            .open(SealKind::PackHeader, &[], &bytes[data_end..bytes.len() - 4])
            .unwrap();
        assert_eq!(decode_framed::<PackHeader>(&framed).unwrap(), header);
        // The target's input: pack size (its data part) as 8 bytes, then the header.
        let mut plain = (data_end as u64).to_le_bytes().to_vec();
        plain.extend_from_slice(&framed);
        seeds.push(("pack_header", format!("{}-plain", id.to_hex()), plain));
        // And the stored tail, behind the whole pack's size, if it is small.
        if bytes.len() <= 4096 {
            let mut tail = (bytes.len() as u64).to_le_bytes().to_vec();
            tail.extend_from_slice(&bytes);
            seeds.push(("pack_header", format!("{}-stored", id.to_hex()), tail));
        }
        // Tree blobs, opened (the raw tree) and as framed inside their seal.
        if header.blob_type == BlobType::Tree {
            for blob in &header.blobs {
                let sealed = &bytes[blob.offset as usize..(blob.offset + blob.length) as usize];
                let raw = open_blob(k, BlobType::Tree, &blob.id, sealed, blob.raw_length).unwrap();
                assert!(format::from_postcard::<Tree>(&raw, "tree").is_ok());
                let framed = k.open(SealKind::TreeBlob, &blob.id.0 .0, sealed).unwrap();
                seeds.push(("tree", blob.id.to_hex(), raw));
                seeds.push(("tree", format!("{}-framed", blob.id.to_hex()), framed));
                seeds.push(("unseal", blob.id.to_hex(), sealed.to_vec()));
            }
        }
    }
    for target in [
        "key_file",
        "config",
        "pack_header",
        "index_file",
        "tree",
        "snapshot",
        "unseal",
        "log_entry",
        "backup_marker",
        "prune_mark",
        "wal_record",
    ] {
        assert!(
            seeds.iter().any(|(t, _, _)| *t == target),
            "no seed for {target}"
        );
    }
    if let Some(dir) = std::env::var_os("OCVAULT_FUZZ_SEEDS") {
        for (target, name, bytes) in &seeds {
            let d = std::path::Path::new(&dir).join(target);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("seed-{name}")), bytes).unwrap();
        }
        eprintln!("wrote {} seeds to {}", seeds.len(), dir.to_string_lossy());
    }
}

// ---------------------------------------------------------------------------------------------
// The worked example of format-spec §16 for format version 2 (master key 00 × 32).

#[test]
fn spec_worked_example_v2() {
    let master = [0u8; 32];
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let seal_wal = blake3::derive_key("ocvault v2 seal wal", &master);
    let wal_name = blake3::derive_key("ocvault v2 wal name", &master);
    let keys = MasterKey::from_bytes(master).derive();
    let id = keys.wal_record_id("000000010000000000000001");
    assert_eq!(
        id.0,
        *blake3::keyed_hash(&wal_name, b"000000010000000000000001").as_bytes()
    );
    let record = WalRecord {
        name: "000000010000000000000001".into(),
        size: 16 << 20,
        hash: [0x11; 32],
        content: vec![DataId(Id([0x22; 32]))],
        archived_unix_ns: 1_800_000_000_000_000_000,
        hostname: "db1".into(),
    };
    let pg = PgBaseBackup {
        label: "nightly".into(),
        timeline: 1,
        start_lsn: 0x2000028,
        start_wal: "000000010000000000000002".into(),
        start_unix_ns: 1_796_183_401_000_000_000,
        stop_lsn: Some(0x2000138),
        stop_unix_ns: Some(1_796_183_402_000_000_000),
        stop_timeline: Some(1),
    };
    assert_eq!(
        hex(&seal_wal),
        "9b1ee40eb8dd1eb29d8911f40ae7e20e21d0a6a86449fddd5a0b3aa026df397b"
    );
    assert_eq!(
        hex(&wal_name),
        "8df3dc3d33cf7877131c2b0d87714a7f2230149e95c369d06f0da4d5ae4875f4"
    );
    assert_eq!(
        id.to_hex(),
        "80947f2dce1730a259029d187fb9bbbfa95ada1b684ab912ba261e3110d34587"
    );
    let record_bytes = format::to_postcard(&record);
    assert_eq!(record_bytes.len(), 107);
    assert_eq!(
        hex(&record_bytes),
        format!(
            "18{}80808008{}01{}8080a0bbd29df1fa3103646231",
            hex(b"000000010000000000000001"),
            "11".repeat(32),
            "22".repeat(32)
        )
    );
    let pg_bytes = format::to_postcard(&pg);
    assert_eq!(pg_bytes.len(), 64);
    assert_eq!(
        hex(&pg_bytes),
        format!(
            "076e696768746c7901a880801018{}80e8f680acd2a9ed3101b882801001\
             8090cdbab3d2a9ed310101",
            hex(b"000000010000000000000002")
        )
    );
    // A v2 snapshot is the v1 bytes, then `01` and these 64 bytes.
    let snapshot = Snapshot {
        time_unix_ns: 0,
        hostname: String::new(),
        username: String::new(),
        paths: vec![],
        tags: vec![],
        tree: TreeId(Id([0; 32])),
        parent: None,
        excludes: vec![],
        incomplete: false,
        summary: SnapshotSummary::default(),
        program_version: String::new(),
        postgres: Some(pg),
        log_heads: vec![],
    };
    let mut v2 = snapshot.encode(1);
    v2.push(1);
    v2.extend_from_slice(&pg_bytes);
    assert_eq!(snapshot.encode(2), v2);
}

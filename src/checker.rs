//! `check`: proves a repository intact, or says exactly what is damaged and what it affects.
//!
//! Structure (always): every key, index and snapshot file matches its name and opens; config
//! opens; every pack the index names exists with the size it implies; tree packs are read
//! whole and agree with the index; every tree of every snapshot parses, and every blob a tree
//! references is indexed in a pack that is present. Data (`--read-data`, optionally a subset):
//! every selected data pack is hashed against its name and every blob in it is opened and
//! checked against its id. Damage is then traced to the snapshots and file paths it affects.

use crate::backend::{Backend, FileKind, CONFIG_PATH};
use crate::error::{Error, Result};
use crate::format::{BlobType, NodeKind, PackHeader, Snapshot, Tree};
use crate::id::{Id, PackId, SnapshotId};
use crate::index::Index;
use crate::index_view::{self, Bits, ViewOptions};
use crate::repofile::RepoFile;
use crate::repository::{self, Repository};
use crate::walker::Walker;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Which data packs `--read-data` reads.
#[derive(Clone, Debug, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// The n-th (1-based) of m groups: m runs with n = 1..=m read every pack exactly once.
    Group(u64, u64),
    /// A random share of packs, in percent.
    Percent(f64),
    /// Random packs up to this many bytes.
    Bytes(u64),
}

#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub read_data: ReadData,
    /// Fail when the newest snapshot of a host/paths group is older than this.
    pub max_age: Option<std::time::Duration>,
    /// Fail when the newest archived PostgreSQL WAL file is older than this (or none is).
    pub max_wal_age: Option<std::time::Duration>,
}

/// One damaged object.
#[derive(Clone, Debug, Serialize)]
pub struct Damage {
    /// The stored file (or "blob <id>") that is damaged.
    pub object: String,
    pub problem: String,
    /// Blobs lost or damaged with it.
    pub blobs: usize,
}

/// A snapshot that cannot be restored fully, and the paths inside it that are affected.
#[derive(Clone, Debug, Serialize)]
pub struct Affected {
    pub snapshot: String,
    pub time: String,
    pub hostname: String,
    pub paths: Vec<String>,
}

/// The newest snapshot of one host and set of paths (for `--metrics-file`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewestSnapshot {
    pub hostname: String,
    /// Sorted.
    pub paths: Vec<String>,
    pub id: SnapshotId,
    pub time_unix_ns: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TooOld {
    pub hostname: String,
    pub paths: Vec<String>,
    pub newest_snapshot: String,
    pub newest_time: String,
    pub age_seconds: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Reclaimable {
    pub unreferenced_packs: u64,
    pub unreferenced_pack_bytes: u64,
    pub unused_blobs: u64,
    pub unused_blob_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: u64,
    pub index_files: u64,
    pub packs: u64,
    pub tree_packs: u64,
    pub blobs: u64,
    /// Entries of the operations log (`log/`) that match their name and open.
    pub log_entries: u64,
    /// Log entries that do not open or match their name (each is in `damage`).
    pub log_damaged: u64,
    /// Log entries an entry or a snapshot names that are not in `log/` (each is in `damage`).
    pub log_missing: u64,
    pub data_packs_read: u64,
    pub data_bytes_read: u64,
    /// Ids of the data packs read (for subset coverage tests and audits).
    pub packs_read: Vec<String>,
    pub damage: Vec<Damage>,
    pub affected: Vec<Affected>,
    pub too_old: Vec<TooOld>,
    /// The PostgreSQL WAL archive (format version 2 repositories only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalReport>,
    pub reclaimable: Reclaimable,
    /// What the check saw that is not damage: files a prune beside it deleted, passes made
    /// again because the repository changed.
    pub notes: Vec<String>,
    /// Data packs `--read-data` selected that are in cold storage (an S3 archive class, not
    /// thawed): not read, and not damage; the command exits 13 when there is no damage.
    pub cold_packs: Vec<crate::cold::ColdPack>,
    /// The newest intact snapshot of each host and set of paths.
    #[serde(skip)]
    pub newest: Vec<NewestSnapshot>,
}

impl CheckReport {
    pub fn is_intact(&self) -> bool {
        self.damage.is_empty()
    }

    /// Whether `--max-age` or `--max-wal-age` found the newest backup too old.
    pub fn is_too_old(&self) -> bool {
        !self.too_old.is_empty() || self.wal.as_ref().is_some_and(|w| w.too_old.is_some())
    }

    /// Whether data packs selected for reading were in cold storage.
    pub fn has_cold(&self) -> bool {
        !self.cold_packs.is_empty()
    }
}

/// What check saw of the WAL archive. Its damage (unreadable records, blocks that cannot be
/// read, gaps) is in [`CheckReport::damage`] like all damage.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WalReport {
    /// `wal/` records that open.
    pub files: u64,
    /// The most recently archived file and when.
    pub newest: Option<String>,
    pub newest_time: Option<String>,
    /// Runs of missing WAL that are damage: inside a base backup's start..stop, or between
    /// the newest base backup and the newest archived segment.
    pub gaps: Vec<WalGap>,
    /// Runs of missing WAL between older base backups and the newest one, where
    /// `forget --keep-wal-within` deletes: not damage, but moments PITR cannot reach.
    pub gaps_between_base_backups: Vec<WalGap>,
    /// Set with `--max-wal-age` when the newest archived file is older (or there is none).
    pub too_old: Option<WalTooOld>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WalGap {
    pub timeline: u32,
    pub first_missing: String,
    pub missing: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct WalTooOld {
    /// Seconds since the newest file was archived; none when nothing is archived.
    pub age_seconds: Option<u64>,
    pub max_age_seconds: u64,
}

#[derive(Default)]
pub struct CheckProgress {
    pub bytes: AtomicU64,
}

/// Collects what a pass finds, from many threads. A file that was listed (or indexed) but is
/// gone when read goes to `vanished`: damage only if the repository did not change meanwhile.
#[derive(Default)]
struct Findings {
    damage: Mutex<Vec<Damage>>,
    vanished: Mutex<Vec<Damage>>,
}

impl Findings {
    fn add(&self, object: String, problem: String, blobs: usize) {
        self.damage.lock().unwrap().push(Damage {
            object,
            problem,
            blobs,
        })
    }

    /// A read of `object` failed: vanished when it was not found, damage otherwise.
    fn read_failed(&self, object: String, e: &Error, blobs: usize) {
        let d = Damage {
            object,
            problem: format!("cannot read: {e}"),
            blobs,
        };
        if crate::backend::is_not_found(e) {
            self.vanished.lock().unwrap().push(d)
        } else {
            self.damage.lock().unwrap().push(d)
        }
    }
}

/// What survives from one pass to the next: packs never change once written, so a pack a
/// pass verified intact is not read again, and the trees it held are kept.
#[derive(Default)]
struct Carry {
    verified: Mutex<HashSet<PackId>>,
    /// The trees verified packs held that decode (the walk reads them again).
    trees: Mutex<HashSet<Id>>,
    /// Some of those trees, decoded, for the walks.
    tree_cache: TreeCache,
    data_packs_read: u64,
    data_bytes_read: u64,
    packs_read: Vec<String>,
    /// The last pass's selected data packs that were cold.
    cold: Vec<crate::cold::ColdPack>,
}

/// Decoded trees the walks share, up to `TREE_CACHE_BYTES`: the pack pass decodes every
/// tree, and the used-blob walk and the path walk each read every tree again; on a small
/// repository each is then read once (a local read of one tree costs an open and a read, ~0.1
/// ms), on a large one memory stays bounded.
struct TreeCache(quick_cache::sync::Cache<Id, Arc<Tree>, TreeWeight>);

const TREE_CACHE_BYTES: u64 = 32 << 20;

#[derive(Clone)]
struct TreeWeight;

impl quick_cache::Weighter<Id, Arc<Tree>> for TreeWeight {
    fn weight(&self, _: &Id, tree: &Arc<Tree>) -> u64 {
        let node = std::mem::size_of::<crate::format::Node>();
        (tree.nodes.iter())
            .map(|n| node + n.name.len() + n.content.len() * 32 + n.link_target.len())
            .sum::<usize>() as u64
            + 64
    }
}

impl Default for TreeCache {
    fn default() -> Self {
        TreeCache(quick_cache::sync::Cache::with_weighter(
            16_384,
            TREE_CACHE_BYTES,
            TreeWeight,
        ))
    }
}

impl TreeCache {
    /// The tree `id`, from the cache or read through `index`.
    fn load(&self, repo: &Repository, index: &Index, id: &Id) -> Result<Tree> {
        if let Some(t) = self.0.get(id) {
            return Ok((*t).clone());
        }
        let tree = repo.load_tree_in(index, &crate::id::TreeId(*id))?;
        self.0.insert(*id, Arc::new(tree.clone()));
        Ok(tree)
    }
}

/// Passes `check` makes at most: a pass that found damage or vanished files while the
/// repository changed under it (a prune or backup beside it) is made again.
const PASSES: usize = 3;

/// Runs the check. Errors are only for a check that could not run at all.
pub fn check(
    backend: &Backend,
    password: &[u8],
    opts: &CheckOptions,
    progress: &CheckProgress,
) -> Result<CheckReport> {
    let password = zeroize::Zeroizing::new(password.to_vec());
    check_with(backend, CheckKey::Password(password), opts, progress)
}

/// What opens the repository for `check`: a password, or the master key itself (combined
/// from key shares; the key files are then checked for damage but none is opened).
pub enum CheckKey {
    Password(zeroize::Zeroizing<Vec<u8>>),
    Master(crate::crypto::MasterKey),
}

/// [`check`] with a password or a master key.
pub fn check_with(
    backend: &Backend,
    key: CheckKey,
    opts: &CheckOptions,
    progress: &CheckProgress,
) -> Result<CheckReport> {
    match open_for_check(backend, key)? {
        Ok((repo, key_damage)) => check_opened(&repo, &key_damage, opts, progress),
        Err(damage) => Ok(CheckReport {
            damage,
            ..Default::default()
        }),
    }
}

/// Who asks for a check, for its operations-log entry: the command line, and the key
/// shares when shares opened the repository.
pub struct CheckLog<'a> {
    pub command_line: &'a crate::oplog::CommandLine,
    pub approvals: Vec<crate::format::ShareApproval>,
}

/// [`check_with`], then one operations-log entry for the check (whatever its result, once
/// the repository opened). A failure to log is the returned warning, never an error (and
/// is dropped when the check itself failed: `?` returns the check's error).
pub fn check_logged(
    backend: &Backend,
    key: CheckKey,
    opts: &CheckOptions,
    progress: &CheckProgress,
    log: CheckLog,
) -> Result<(CheckReport, Option<String>)> {
    let (mut repo, key_damage) = match open_for_check(backend, key)? {
        Ok(opened) => opened,
        Err(damage) => {
            let report = CheckReport {
                damage,
                ..Default::default()
            };
            return Ok((report, None));
        }
    };
    repo.set_approvals(log.approvals);
    let checked = check_opened(&repo, &key_damage, opts, progress);
    let result = match &checked {
        Ok(r) if r.is_intact() => Ok("ok".to_string()),
        Ok(r) => Ok(format!("damaged: {} problems", r.damage.len())),
        Err(e) => Err(e),
    };
    let warning = crate::oplog::record_read(
        &repo,
        log.command_line,
        "check",
        result.as_ref().map(String::as_str).map_err(|e| *e),
        Vec::new(),
    );
    // After a failure its error stays the one line shown, as for every command.
    Ok((checked?, warning))
}

/// Checks an opened repository; `key_damage` is what opening it found wrong with key files.
fn check_opened(
    repo: &Repository,
    key_damage: &[Damage],
    opts: &CheckOptions,
    progress: &CheckProgress,
) -> Result<CheckReport> {
    let backend = repo.backend();
    let mut carry = Carry::default();
    let mut notes = Vec::new();
    let wal = repo.config().version >= 2;
    for pass in 1..=PASSES {
        let before = generation(backend, wal)?;
        let findings = Findings::default();
        let mut report = check_pass(repo, opts, progress, &findings, &mut carry)?;
        let changed = generation(backend, wal)? != before;
        let mut damage = findings.damage.into_inner().unwrap();
        let vanished = findings.vanished.into_inner().unwrap();
        if changed && pass < PASSES && !(damage.is_empty() && vanished.is_empty()) {
            notes.push(format!(
                "pass {pass}: the repository changed while check ran (a prune or backup beside \
                 it) and {} problems were seen; checked again",
                damage.len() + vanished.len()
            ));
            continue;
        }
        if changed {
            notes.extend(vanished.into_iter().map(|d| {
                format!(
                    "{}: deleted while check ran (a prune beside it), not damage",
                    d.object
                )
            }));
        } else {
            damage.extend(vanished);
        }
        damage.extend(key_damage.iter().cloned());
        damage.sort_by(|a, b| a.object.cmp(&b.object));
        report.damage = damage;
        report.notes = notes;
        report.data_packs_read = carry.data_packs_read;
        report.data_bytes_read = carry.data_bytes_read;
        report.packs_read = std::mem::take(&mut carry.packs_read);
        report.cold_packs = std::mem::take(&mut carry.cold);
        return Ok(report);
    }
    unreachable!("the last pass returns")
}

/// The index files and prune marks present: any prune that deletes anything changes them;
/// and the `wal/` records (with `wal`), which `forget --keep-wal-within` deletes.
fn generation(backend: &Backend, wal: bool) -> Result<(Vec<Id>, Vec<Id>, Vec<Id>)> {
    let ids = |kind| -> Result<Vec<Id>> {
        let mut v: Vec<Id> = backend
            .list_ids(kind)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        v.sort();
        Ok(v)
    };
    let wal = if wal { ids(FileKind::Wal)? } else { Vec::new() };
    Ok((ids(FileKind::Index)?, ids(FileKind::PruneMark)?, wal))
}

/// The repository and the damaged key files, or the damage that keeps anything else from
/// being checked.
type Opened = std::result::Result<(Repository, Vec<Damage>), Vec<Damage>>;

/// Opens config and keys for checking: the repository and the damaged key files, or (inner
/// `Err`) the damage that keeps anything else from being checked.
fn open_for_check(backend: &Backend, key: CheckKey) -> Result<Opened> {
    let mut damage = Vec::new();
    let mut add = |object: String, problem: String| {
        damage.push(Damage {
            object,
            problem,
            blobs: 0,
        })
    };
    // Config and keys: the clear version first, then each key against its name and the password.
    let config_bytes = Repository::probe(backend)?;
    let password = match &key {
        CheckKey::Password(p) => Some(p.as_slice()),
        CheckKey::Master(_) => None,
    };
    let mut scan = repository::scan_key_files(backend, password, true)?;
    if let CheckKey::Master(m) = key {
        scan.opened = Some((repository::KeySecret::Master(m), Id::default()));
    }
    // Unreadable and misnamed key files first, then those that did not decode.
    let (invalid, other): (Vec<_>, Vec<_>) = scan
        .problems
        .into_iter()
        .partition(|p| matches!(p, repository::KeyProblem::Invalid(..)));
    for p in other.into_iter().chain(invalid) {
        match p {
            repository::KeyProblem::Unreadable(path, e) => add(path, format!("cannot read: {e}")),
            repository::KeyProblem::WrongName(path) => {
                add(path, "content does not match its name".into())
            }
            repository::KeyProblem::Invalid(path, e) => add(path, e.to_string()),
        }
    }
    let Some((secret, key_id)) = scan.opened else {
        if damage.is_empty() {
            return Err(Error::WrongPassword);
        }
        // No intact key opens: report the damaged keys; nothing else can be checked.
        return Ok(Err(damage));
    };
    let (keys, master) = match secret {
        repository::KeySecret::Master(m) => (m.derive(), Some(m)),
        repository::KeySecret::WriteOnly(w) => (crate::crypto::Keys::from_write_only(&w)?, None),
    };
    let config = match repository::decode_config(&keys, &config_bytes) {
        Ok(c) => c,
        Err(e) => {
            add(
                CONFIG_PATH.into(),
                format!("{e}; no snapshot can be read without it"),
            );
            return Ok(Err(damage));
        }
    };
    let repo = Repository::new(backend.clone(), keys, config, key_id, master);
    Ok(Ok((repo, damage)))
}

/// Loads every file of one kind, naming each damaged one with what its loss means.
fn load_checked<F: RepoFile>(
    repo: &Repository,
    findings: &Findings,
    loss: &str,
) -> Result<Vec<(F::Id, F)>> {
    let loaded = repo.load_all::<F>()?;
    for (id, e) in loaded.damaged {
        findings.add(F::KIND.path(&id.into()), format!("{e}; {loss}"), 0);
    }
    Ok(loaded.intact)
}

/// One pass over the repository (everything after config and keys), in restic's phases:
/// load the index (and every other stored file), packs against the listing, read packs
/// (tree packs always, data packs as `--read-data` selects), the snapshots' structure, and
/// unused blobs.
fn check_pass(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &CheckProgress,
    findings: &Findings,
    carry: &mut Carry,
) -> Result<CheckReport> {
    if repo.is_write_only() && !matches!(opts.read_data, ReadData::None) {
        return Err(Error::WriteOnly(
            "read file contents (check --read-data)".into(),
        ));
    }
    let mut report = CheckReport::default();
    let loaded = load_index(repo, findings, &mut report)?;
    let index = &loaded.index;
    let tiers = loaded.tiers.as_ref();
    let bad_packs = check_pack_files(repo, &loaded, findings, &mut report);
    let bad_blobs = read_packs(
        repo, index, tiers, &bad_packs, opts, progress, findings, carry,
    )?;
    report.tree_packs = (0..index.packs().len() as u32)
        .filter(|n| index.pack(*n).blob_type == BlobType::Tree && !bad_packs.contains(n))
        .count() as u64;
    let trees = carry.trees.lock().unwrap();
    let load = |id: &Id| carry.tree_cache.load(repo, index, id);
    // Every used blob looked up first, in id order and in batches (a large on-disk index is
    // then read page by page, not one page per blob); the path walk below only asks the
    // index again where damage makes it need a blob's pack.
    let premarked = match repo.is_write_only() {
        true => None,
        false => Some(premark_used(index, &loaded, &load)?),
    };
    let mut walker = TreeWalker {
        index,
        bad_packs: &bad_packs,
        bad_blobs: &bad_blobs,
        trees: &trees,
        load: &load,
        memo: HashMap::new(),
        used: Bits::new(index.len()),
        premarked,
        missing: HashMap::new(),
        load_failed: Vec::new(),
    };
    if let Some(p) = walker.premarked.as_mut() {
        walker.used = std::mem::take(&mut p.bits);
    }
    report.affected = match repo.is_write_only() {
        false => check_snapshots(&mut walker, &loaded.snapshots, findings),
        true => {
            check_roots_indexed(index, &loaded.snapshots, findings, &mut report.notes);
            Vec::new()
        }
    };
    report.wal = match &loaded.wal {
        Some(records) => Some(check_wal(
            repo,
            &mut walker,
            records,
            &loaded.snapshots,
            opts.max_wal_age,
            findings,
        )),
        // A version 1 repository holds no WAL: asked about its age, it has none.
        None => opts.max_wal_age.map(|max| WalReport {
            too_old: Some(WalTooOld {
                age_seconds: None,
                max_age_seconds: max.as_secs(),
            }),
            ..Default::default()
        }),
    };
    if !repo.is_write_only() {
        unused_blobs(index, &walker.used, &mut report.reclaimable);
    }
    report.newest = newest_per_group(&loaded.snapshots);
    if let Some(max) = opts.max_age {
        report.too_old = too_old(&report.newest, max);
    }
    Ok(report)
}

/// What the first phase loads.
struct LoadedIndex {
    /// Intact snapshots, oldest first.
    snapshots: Vec<(SnapshotId, Snapshot)>,
    /// The live index files' packs, and the marked and superseded packs still present.
    index: Index,
    /// Every file in `data/`, with its size.
    listed: DataFiles,
    /// On storage with classes (S3): the packs in an archive class, from the same listing.
    tiers: Option<crate::cold::Tiers>,
    /// The `wal/` records that open (format version 2; `None` in version 1).
    wal: Option<Vec<(Id, crate::format::WalRecord)>>,
}

/// Loads (and so checks) every snapshot, index file, log entry, backup marker and prune mark,
/// lists the packs, and builds the index of every pack still readable.
fn load_index(
    repo: &Repository,
    findings: &Findings,
    report: &mut CheckReport,
) -> Result<LoadedIndex> {
    // Snapshots before index files: a snapshot is saved after its index, so one saved by a
    // backup running beside this check is never judged against an older index.
    let mut snapshots: Vec<(SnapshotId, Snapshot)> =
        load_checked(repo, findings, "this snapshot is lost")?;
    snapshots.sort_by_key(|(id, s)| (s.time_unix_ns, *id));
    report.snapshots = snapshots.len() as u64;
    // WAL records too: a push saves them after its index files.
    let wal = load_wal_records(repo, findings)?;
    // data/ is listed once index/ is (a backup stores its packs before its index files, so
    // every pack a listed index file names is then listed): when the index loader asks
    // which packs are archived (the on-disk index is kept per set of them).
    let listing: std::cell::OnceCell<Result<DataListing>> = std::cell::OnceCell::new();
    let list = || listing.get_or_init(|| list_data(repo));
    // Marked and superseded packs still present, with their blobs, are readable.
    let present = |p: &crate::format::IndexPack| {
        !p.blobs.is_empty()
            && list()
                .as_ref()
                .is_ok_and(|(listed, _)| listed.size(&p.id).is_some())
    };
    // Archived packs last: a blob also stored elsewhere resolves to the readable copy. The
    // classes are known once data/ is listed, which is before the index is built.
    let archived = |id: &PackId| {
        list()
            .as_ref()
            .is_ok_and(|(_, t)| t.as_ref().is_some_and(|t| t.is_archived(id)))
    };
    let digest = || {
        crate::index::load::tiers_digest(
            list()
                .as_ref()
                .ok()
                .and_then(|(_, t)| t.as_ref())
                .into_iter()
                .flat_map(|t| t.archived_ids()),
        )
    };
    let view = index_view::load(
        repo,
        &ViewOptions {
            tiers: Some(&digest),
            use_cache: false,
            strict: false,
            live: false,
            archived: &archived,
            readable_extra: &present,
        },
    )?;
    list();
    let (listed, tiers) = listing.into_inner().expect("listed")?;
    for (id, e) in view.damaged_files {
        let loss = "the packs it lists are no longer indexed";
        findings.add(FileKind::Index.path(&id.into()), format!("{e}; {loss}"), 0);
    }
    report.index_files = (view.files.len()) as u64;
    check_log(repo, &snapshots, findings, report)?;
    load_checked::<crate::format::BackupMarker>(
        repo,
        findings,
        "prune cannot tell which backup this marker announces",
    )?;
    for (id, e) in view.damaged_marks {
        let loss = "the packs it lists are neither indexed nor deleted";
        findings.add(FileKind::PruneMark.path(&id), format!("{e}; {loss}"), 0);
    }
    let index = view.readable;
    report.blobs = index.len() as u64;
    report.packs = index.packs().len() as u64;
    Ok(LoadedIndex {
        snapshots,
        index,
        listed,
        tiers,
        wal,
    })
}

/// Every entry of the operations log opens and matches its name, and the chain is whole:
/// each entry's parents and each snapshot's log heads are in `log/` (a damaged entry is
/// there, and reported as damaged, not missing).
fn check_log(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    findings: &Findings,
    report: &mut CheckReport,
) -> Result<()> {
    // The log gains an entry per command (a WAL push every few minutes) for years: entries
    // are read one by one and only what is wrong with them is kept, never the entries.
    let log = loop {
        let mut listed: Vec<Id> = repo
            .backend()
            .list_ids(FileKind::Log)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        listed.sort_unstable();
        let read = LogRead {
            listed,
            ..LogRead::default()
        };
        repo.visit_files::<crate::format::LogEntry>(&read.listed, |id, entry| read.add(id, entry));
        let mut wrong = read.wrong.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = wrong.error.take() {
            return Err(e);
        }
        // An outside hand deleted an entry while it was read: the log is read again.
        if !wrong.vanished {
            wrong.damaged.sort_by_key(|(id, _)| *id);
            break (read.listed, read.intact.into_inner(), wrong);
        }
    };
    let (present, intact, wrong) = log;
    report.log_entries = intact;
    report.log_damaged = wrong.damaged.len() as u64;
    for (id, e) in &wrong.damaged {
        findings.add(
            FileKind::Log.path(id),
            format!("{e}; this log entry is lost"),
            0,
        );
    }
    let parents = wrong
        .unlisted_parents
        .iter()
        .map(|(by, parent)| (by, std::slice::from_ref(parent)));
    let missing = crate::oplog::missing(&present, parents, snapshots);
    report.log_missing = missing.len() as u64;
    for m in missing {
        findings.add(FileKind::Log.path(&m.id), m.describe(), 0);
    }
    Ok(())
}

/// One reading of the operations log by `check_log`: the listed entries (sorted) and what
/// was found, entry by entry on every core.
#[derive(Default)]
struct LogRead {
    listed: Vec<Id>,
    intact: std::sync::atomic::AtomicU64,
    wrong: std::sync::Mutex<LogWrong>,
}

#[derive(Default)]
struct LogWrong {
    damaged: Vec<(Id, crate::Error)>,
    /// (entry, a parent it names that is not listed).
    unlisted_parents: Vec<(Id, Id)>,
    vanished: bool,
    /// The first error that is not damage (a storage failure): it stops the check.
    error: Option<crate::Error>,
}

impl LogRead {
    fn add(&self, id: Id, entry: Result<crate::format::LogEntry>) {
        let wrong = || self.wrong.lock().unwrap_or_else(|e| e.into_inner());
        match entry {
            Ok(e) => {
                self.intact
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for p in e.parents {
                    if self.listed.binary_search(&p).is_err() {
                        wrong().unlisted_parents.push((id, p));
                    }
                }
            }
            Err(e) if crate::backend::is_not_found(&e) => wrong().vanished = true,
            Err(e @ crate::Error::Corrupt { .. }) => wrong().damaged.push((id, e)),
            Err(e) => {
                wrong().error.get_or_insert(e);
            }
        }
    }
}

/// Opens every `wal/` record; a damaged one is damage (the WAL file it holds is lost).
fn load_wal_records(
    repo: &Repository,
    findings: &Findings,
) -> Result<Option<Vec<(Id, crate::format::WalRecord)>>> {
    if repo.config().version < 2 {
        return Ok(None);
    }
    let catalog = crate::wal::catalog::list(repo)?;
    for (id, e) in catalog.damaged {
        findings.add(
            FileKind::Wal.path(&id),
            format!("{e}; the WAL file it records is lost"),
            0,
        );
    }
    Ok(Some(catalog.records))
}

/// The WAL archive: every record's blocks readable (indexed, in an intact pack, and intact
/// when `--read-data` read them), no gap from the base backups to the newest archived
/// segment, and with `max_age`, the newest file archived recently enough.
fn check_wal(
    repo: &Repository,
    walker: &mut TreeWalker,
    records: &[(Id, crate::format::WalRecord)],
    snapshots: &[(SnapshotId, Snapshot)],
    max_age: Option<std::time::Duration>,
    findings: &Findings,
) -> WalReport {
    use crate::wal::name::WalName;
    use crate::wal::timeline;
    let mut histories = HashMap::new();
    for (id, rec) in records {
        let problems: Vec<String> = rec
            .content
            .iter()
            .enumerate()
            .filter_map(|(n, b)| walker.blob_problem(b).map(|p| format!("block {n}: {p}")))
            .collect();
        if let Some(first) = problems.first() {
            findings.add(
                format!("{} (WAL file {})", FileKind::Wal.path(id), rec.name),
                format!("cannot be fetched: {first}"),
                problems.len(),
            );
            continue;
        }
        if let Some(WalName::History { timeline }) = WalName::parse(&rec.name) {
            match crate::wal::catalog::read_text(rec, |b| repo.read_blob_in(walker.index, b)) {
                Ok(text) => {
                    histories.insert(timeline, timeline::parse_history(&text));
                }
                Err(Error::WriteOnly(_)) => {}
                Err(e) => findings.read_failed(format!("WAL file {}", rec.name), &e, 0),
            }
        }
    }
    let names: Vec<&str> = records.iter().map(|(_, r)| r.name.as_str()).collect();
    let seg_size = timeline::segment_size(records.iter().map(|(_, r)| (r.name.as_str(), r.size)));
    let base_backups: Vec<_> = snapshots
        .iter()
        .filter_map(|(_, s)| s.postgres.clone())
        .collect();
    let gaps = timeline::archive_gaps(&names, &histories, &base_backups, seg_size);
    for g in &gaps.broken {
        findings.add(
            format!("WAL file {}", g.first_missing),
            format!(
                "missing: the WAL archive of timeline {} has a gap of {} files from here; \
                 recovery from the base backups before it cannot pass it",
                g.timeline, g.missing
            ),
            0,
        );
    }
    let wal_gaps = |gaps: Vec<timeline::Gap>| -> Vec<WalGap> {
        gaps.into_iter()
            .map(|g| WalGap {
                timeline: g.timeline,
                first_missing: g.first_missing,
                missing: g.missing,
            })
            .collect()
    };
    let newest = records.iter().max_by_key(|(_, r)| r.archived_unix_ns);
    let now = crate::host::now_ns();
    let age = newest.map(|(_, r)| (now - r.archived_unix_ns).max(0) as u64 / 1_000_000_000);
    WalReport {
        files: records.len() as u64,
        newest: newest.map(|(_, r)| r.name.clone()),
        newest_time: newest.map(|(_, r)| crate::snapshot::rfc3339(r.archived_unix_ns)),
        gaps: wal_gaps(gaps.broken),
        gaps_between_base_backups: wal_gaps(gaps.between_base_backups),
        too_old: max_age
            .filter(|max| age.is_none_or(|a| a > max.as_secs()))
            .map(|max| WalTooOld {
                age_seconds: age,
                max_age_seconds: max.as_secs(),
            }),
    }
}

/// Every file in `data/` with its size, and on storage with classes (S3) the packs in an
/// archive class, from the same listing.
type DataListing = (DataFiles, Option<crate::cold::Tiers>);

/// The listing of `data/`: the size of each file named as a pack, by its id, and the few
/// files named otherwise. Held by id, not path: 40 bytes a pack against about 110 for a map
/// of path strings, 195,000 packs at 50 million blobs.
struct DataFiles {
    packs: HashMap<PackId, u64>,
    other: Vec<(String, u64)>,
}

impl DataFiles {
    fn from_listing(files: impl IntoIterator<Item = (String, u64)>) -> DataFiles {
        let mut listed = DataFiles {
            packs: HashMap::new(),
            other: Vec::new(),
        };
        for (path, size) in files {
            let name = path.rsplit('/').next().unwrap_or("");
            match PackId::from_hex(name).filter(|id| FileKind::Pack.path(id) == path) {
                Some(id) => {
                    listed.packs.insert(id, size);
                }
                None => listed.other.push((path, size)),
            }
        }
        listed
    }

    fn size(&self, id: &PackId) -> Option<u64> {
        self.packs.get(id).copied()
    }
}

fn list_data(repo: &Repository) -> Result<DataListing> {
    Ok(match repo.backend().lifecycle() {
        Some(lc) => {
            let objects = repo
                .backend()
                .runtime()
                .block_on(lc.list_classes(FileKind::Pack.prefix()))?;
            let tiers = crate::cold::Tiers::from_listing(&objects);
            let listed = DataFiles::from_listing(objects.into_iter().map(|o| (o.path, o.size)));
            (listed, Some(tiers))
        }
        None => (
            DataFiles::from_listing(repo.backend().list(FileKind::Pack)?),
            None,
        ),
    })
}

/// What a write-only key can check of the snapshots' structure: that each root tree is
/// indexed in a pack that is intact. It cannot open trees, so it walks none.
fn check_roots_indexed(
    index: &Index,
    snapshots: &[(SnapshotId, Snapshot)],
    findings: &Findings,
    notes: &mut Vec<String>,
) {
    for (id, snap) in snapshots {
        if !index.contains(&snap.tree) {
            findings.add(
                FileKind::Snapshot.path(&(*id).into()),
                format!(
                    "its root tree {} is not in the index; this snapshot cannot be restored",
                    snap.tree.short()
                ),
                0,
            );
        }
    }
    notes.push(
        "write-only key: packs, headers, index files, snapshots and the log were checked; \
         trees and file contents were not opened (a full key or key shares check those)"
            .into(),
    );
}

/// Walks every snapshot's trees, recording used blobs and the paths that cannot be restored.
fn check_snapshots(
    walker: &mut TreeWalker,
    snapshots: &[(SnapshotId, Snapshot)],
    findings: &Findings,
) -> Vec<Affected> {
    let mut affected = Vec::new();
    for (id, snap) in snapshots {
        let paths = walker.walk(&snap.tree);
        if !paths.is_empty() {
            affected.push(Affected {
                snapshot: id.to_hex(),
                time: crate::snapshot::rfc3339(snap.time_unix_ns),
                hostname: snap.hostname.clone(),
                paths: paths
                    .iter()
                    .map(|p| if p.is_empty() { "/".into() } else { p.clone() })
                    .collect(),
            });
        }
    }
    for (blob, why) in &walker.missing {
        findings.add(format!("blob {}", blob.to_hex()), why.clone(), 1);
    }
    for (tree, e) in &walker.load_failed {
        findings.read_failed(format!("tree {}", tree.to_hex()), e, 1);
    }
    affected
}

/// Blobs indexed that no snapshot uses (`used` has one bit per index position).
fn unused_blobs(index: &Index, used: &Bits, out: &mut Reclaimable) {
    for (pos, (_, loc)) in index.iter().enumerate() {
        if !used.get(pos) {
            out.unused_blobs += 1;
            out.unused_blob_bytes += loc.length as u64;
        }
    }
}

/// Packs against the listing of `data/`: each indexed pack present with the size the index
/// implies; files in no index real packs of this repository (reclaimable) or damage. Returns
/// the indexed packs that are missing or the wrong size.
fn check_pack_files(
    repo: &Repository,
    loaded: &LoadedIndex,
    findings: &Findings,
    report: &mut CheckReport,
) -> HashSet<u32> {
    let (index, listed) = (&loaded.index, &loaded.listed);
    let mut bad_packs: HashSet<u32> = HashSet::new();
    // Sorted, for the listed files in no index below: 32 bytes a pack.
    let mut indexed: Vec<PackId> = index.packs().iter().map(|p| p.id).collect();
    indexed.sort_unstable();
    // Per pack number: its blobs, and where the last of them ends.
    let mut blobs_per_pack: Vec<u32> = vec![0; index.packs().len()];
    let mut max_end: Vec<u64> = vec![0; index.packs().len()];
    for (_, loc) in index.iter() {
        blobs_per_pack[loc.pack as usize] += 1;
        let e = &mut max_end[loc.pack as usize];
        *e = (*e).max(loc.offset as u64 + loc.length as u64);
    }
    for (n, p) in index.packs().iter().enumerate() {
        let path = FileKind::Pack.path(&p.id);
        let nblobs = blobs_per_pack[n] as usize;
        let n = n as u32;
        let problem = match listed.size(&p.id) {
            None => {
                // Gone since the index was read (a prune beside this check), or lost.
                findings.vanished.lock().unwrap().push(Damage {
                    object: path,
                    problem: "missing".into(),
                    blobs: nblobs,
                });
                bad_packs.insert(n);
                continue;
            }
            Some(size) if size != p.size => {
                format!("size {size} bytes, the index says {}", p.size)
            }
            Some(_) if max_end[n as usize] + 4 > p.size => {
                "an index entry points past the pack's end".into()
            }
            Some(_) => continue,
        };
        findings.add(path, problem, nblobs);
        bad_packs.insert(n);
    }
    let max_header = crate::pack::max_header_len(repo.config().pack_target_size);
    for (path, _) in &listed.other {
        findings.add(path.clone(), "unknown file: not a pack name".into(), 0);
    }
    for (&id, size) in &listed.packs {
        if indexed.binary_search(&id).is_ok() {
            continue;
        }
        let path = FileKind::Pack.path(&id);
        // A pack in cold storage cannot be read (and check makes no data request without
        // --read-data): counted by its name alone.
        if loaded.tiers.as_ref().is_some_and(|t| t.is_archived(&id)) {
            report.reclaimable.unreferenced_packs += 1;
            report.reclaimable.unreferenced_pack_bytes += size;
            continue;
        }
        // A pack in no index: reclaimable if it is a real pack of this repository.
        match crate::pack::read_header(repo.backend(), repo.keys(), &id.0, *size, max_header) {
            Ok(_) => {
                report.reclaimable.unreferenced_packs += 1;
                report.reclaimable.unreferenced_pack_bytes += size;
            }
            Err(e) if crate::backend::is_not_found(&e) => findings.read_failed(path, &e, 0),
            Err(e) => findings.add(path, format!("unknown file: {e}"), 0),
        }
    }
    bad_packs
}

/// Reads tree packs whole (hash against name, header against index, every blob opened, every
/// tree kept for the walk) and the data packs `--read-data` selects. Packs an earlier pass
/// verified are skipped. Returns the blobs found damaged.
#[allow(clippy::too_many_arguments)]
fn read_packs(
    repo: &Repository,
    index: &Index,
    tiers: Option<&crate::cold::Tiers>,
    bad_packs: &HashSet<u32>,
    opts: &CheckOptions,
    progress: &CheckProgress,
    findings: &Findings,
    carry: &mut Carry,
) -> Result<HashSet<Id>> {
    let bad_blobs: Mutex<HashSet<Id>> = Mutex::new(HashSet::new());
    let fresh = |n: &u32, blob_type: BlobType| {
        index.pack(*n).blob_type == blob_type
            && !bad_packs.contains(n)
            && !carry.verified.lock().unwrap().contains(&index.pack(*n).id)
    };
    let tree_packs: Vec<u32> = (0..index.packs().len() as u32)
        .filter(|n| fresh(n, BlobType::Tree))
        .collect();
    let data_packs: Vec<u32> = (0..index.packs().len() as u32)
        .filter(|n| fresh(n, BlobType::Data))
        .collect();
    let mut selected = select_packs(index, &data_packs, &opts.read_data);
    // Selected packs in cold storage are left out (one HEAD each for archived ones) and
    // reported after the others are read.
    carry.cold = match tiers {
        Some(t) => {
            let archived = selected.iter().map(|n| index.pack(*n).id);
            crate::cold::find_cold(repo.backend(), t, archived)?
        }
        None => Vec::new(),
    };
    if !carry.cold.is_empty() {
        let cold: HashSet<&str> = carry.cold.iter().map(|c| c.path.as_str()).collect();
        selected.retain(|n| !cold.contains(FileKind::Pack.path(&index.pack(*n).id).as_str()));
    }
    let (verified, trees) = (&carry.verified, &carry.trees);
    let verify_all = |packs: &[u32], on_tree: &(dyn Fn(Id, Vec<u8>) + Sync)| {
        let by_pack = positions_of(index, packs);
        let ctx = PackCheck {
            repo,
            index,
            by_pack: &by_pack,
            findings,
            bad_blobs: &bad_blobs,
            progress,
            max_header: crate::pack::max_header_len(repo.config().pack_target_size),
        };
        repo.backend().with_read_pool(|| {
            packs.par_iter().for_each(|n| {
                if verify_pack(&ctx, *n, on_tree) {
                    verified.lock().unwrap().insert(index.pack(*n).id);
                }
            })
        });
    };
    // Each tree is decoded here to prove it parses; the walks take it from the tree cache,
    // or read it again (from the tree-pack cache on remote storage), rather than holding
    // every tree's blob ids.
    let tree_cache = &carry.tree_cache;
    verify_all(
        &tree_packs,
        &|id: Id, raw: Vec<u8>| match crate::format::from_postcard::<Tree>(&raw, "tree") {
            Ok(tree) => {
                trees.lock().unwrap().insert(id);
                tree_cache.0.insert(id, Arc::new(tree));
            }
            Err(e) => {
                findings.add(format!("tree {}", id.short()), e.to_string(), 1);
                bad_blobs.lock().unwrap().insert(id);
            }
        },
    );
    // Data packs in batches of about `BATCH_BLOBS` blobs: the batch's blob positions are
    // what is held per blob.
    let counts = match selected.is_empty() {
        true => Vec::new(),
        false => blobs_per_pack(index),
    };
    let mut batch: Vec<u32> = Vec::new();
    let mut in_batch = 0usize;
    for (k, n) in selected.iter().enumerate() {
        batch.push(*n);
        in_batch += counts[*n as usize] as usize;
        if in_batch >= BATCH_BLOBS || k + 1 == selected.len() {
            verify_all(&batch, &|_, _| {});
            batch.clear();
            in_batch = 0;
        }
    }
    carry.data_packs_read += selected.len() as u64;
    carry.data_bytes_read += selected.iter().map(|n| index.pack(*n).size).sum::<u64>();
    carry
        .packs_read
        .extend(selected.iter().map(|n| index.pack(*n).id.to_hex()));
    Ok(bad_blobs.into_inner().unwrap())
}

/// Data packs `--read-data` verifies at once hold about this many blobs: their positions
/// (4 bytes each) are all `check` holds per blob.
const BATCH_BLOBS: usize = 1 << 20;

/// The index positions of the blobs in each of `packs`, by pack number (one pass over the
/// index).
fn positions_of(index: &Index, packs: &[u32]) -> HashMap<u32, Vec<u32>> {
    let mut out: HashMap<u32, Vec<u32>> = packs.iter().map(|n| (*n, Vec::new())).collect();
    if out.is_empty() {
        return out;
    }
    for (pos, (_, loc)) in index.iter().enumerate() {
        if let Some(v) = out.get_mut(&loc.pack) {
            v.push(pos as u32);
        }
    }
    out
}

/// The number of blobs in each pack, by pack number.
fn blobs_per_pack(index: &Index) -> Vec<u32> {
    let mut counts = vec![0u32; index.packs().len()];
    for (_, loc) in index.iter() {
        counts[loc.pack as usize] += 1;
    }
    counts
}

/// What verifying a pack needs besides the pack.
struct PackCheck<'a> {
    repo: &'a Repository,
    index: &'a Index,
    by_pack: &'a HashMap<u32, Vec<u32>>,
    findings: &'a Findings,
    bad_blobs: &'a Mutex<HashSet<Id>>,
    progress: &'a CheckProgress,
    /// The longest pack header the format allows in this repository.
    max_header: u64,
}

/// Bytes of a pack `check` reads at once: packs are streamed in pieces and hashed as they go,
/// so each reader holds about this much (plus one blob) however large packs are.
const CHECK_PIECE: u64 = 4 << 20;

/// Reads one pack, header first, then all of it in pieces, and verifies it: its hash against
/// its name, its header against the index, every indexed blob. Hands the plaintext of each
/// tree blob to `on_tree` as soon as it is opened. Returns whether it found nothing wrong.
fn verify_pack(c: &PackCheck, n: u32, on_tree: &dyn Fn(Id, Vec<u8>)) -> bool {
    let info = c.index.pack(n);
    let path = FileKind::Pack.path(&info.id);
    let intact = std::cell::Cell::new(true);
    let add = |object: String, problem: String, blobs: usize| {
        intact.set(false);
        c.findings.add(object, problem, blobs);
    };
    let indexed: Vec<(Id, crate::index::BlobLocation)> = c.by_pack[&n]
        .iter()
        .map(|&pos| c.index.at(pos as usize))
        .collect();
    let read_failed = |e: Error| {
        intact.set(false);
        c.findings.read_failed(path.clone(), &e, indexed.len());
        c.bad_blobs
            .lock()
            .unwrap()
            .extend(indexed.iter().map(|(id, _)| *id));
    };
    let read = |offset: u64, len: u64| c.repo.backend().read_range(&path, offset, len);
    let size = info.size;

    // The header, from the pack's tail (a second read when it is longer than the first, never
    // longer than the format allows).
    let tail_len = size.min(64 * 1024);
    let tail = match read(size - tail_len, tail_len) {
        Ok(b) => b,
        Err(e) => {
            read_failed(e);
            return false;
        }
    };
    let mut header = crate::pack::claimed_header_len(&tail, c.max_header)
        .and_then(|_| crate::pack::parse_header_from_tail(c.repo.keys(), &tail, size));
    if let Ok(None) = header {
        let hlen = u32::from_le_bytes(tail[tail.len() - 4..].try_into().unwrap()) as u64;
        match read(size - hlen - 4, hlen + 4) {
            Ok(t) => header = crate::pack::parse_header_from_tail(c.repo.keys(), &t, size),
            Err(e) => {
                read_failed(e);
                return false;
            }
        }
    }
    drop(tail);

    // Then every byte in order, hashed; each blob is opened once the bytes up to its end are
    // in, and bytes no blob still needs are dropped.
    let mut blobs: Vec<&(Id, crate::index::BlobLocation)> = indexed.iter().collect();
    blobs.sort_by_key(|(_, l)| l.offset);
    let mut hasher = blake3::Hasher::new();
    let mut buf: Vec<u8> = Vec::new();
    let (mut base, mut pos, mut next) = (0u64, 0u64, 0usize);
    let fail = |id: &Id, e: Error| {
        c.bad_blobs.lock().unwrap().insert(*id);
        add(format!("blob {} in {path}", id.to_hex()), e.to_string(), 1);
    };
    while pos < size {
        let len = CHECK_PIECE.min(size - pos);
        let piece = match read(pos, len) {
            Ok(b) => b,
            Err(e) => {
                read_failed(e);
                return false;
            }
        };
        c.progress.bytes.fetch_add(len, Relaxed);
        hasher.update(&piece);
        if buf.is_empty() {
            buf = piece;
        } else {
            // Exactly the unopened tail plus the piece: a doubled buffer per reader adds up.
            buf.reserve_exact(piece.len());
            buf.extend_from_slice(&piece);
            drop(piece);
        }
        pos += len;
        while let Some((id, loc)) = blobs.get(next) {
            let (start, end) = (loc.offset as u64, loc.offset as u64 + loc.length as u64);
            if end > pos {
                break;
            }
            let sealed = &buf[(start - base) as usize..(end - base) as usize];
            match crate::pack::open_blob(c.repo.keys(), info.blob_type, id, sealed, loc.raw_length)
            {
                Ok(raw) => {
                    if info.blob_type == BlobType::Tree {
                        on_tree(*id, raw);
                    }
                }
                // A write-only key checks the pack's bytes and header, not its blobs.
                Err(Error::WriteOnly(_)) => {}
                Err(e) => fail(id, e),
            }
            next += 1;
        }
        let keep_from = blobs
            .get(next)
            .map_or(pos, |(_, l)| (l.offset as u64).min(pos));
        // Keep only the tail, in its own allocation, so the piece's buffer is freed now.
        buf = buf.split_off((keep_from - base) as usize);
        base = keep_from;
    }
    for (id, _) in &blobs[next..] {
        fail(id, Error::corrupt("blob", "lies past the pack's end"));
    }
    if Id(*hasher.finalize().as_bytes()) != *info.id {
        add(path.clone(), "content does not match its name".into(), 0);
    }
    match header {
        Ok(Some(header)) => compare_header(&header, info.blob_type, &indexed, &path, &add),
        Ok(None) => add(path.clone(), "header length inconsistent".into(), 0),
        Err(e) => add(path.clone(), format!("header: {e}"), 0),
    }
    intact.get()
}

fn compare_header(
    header: &PackHeader,
    blob_type: BlobType,
    indexed: &[(Id, crate::index::BlobLocation)],
    path: &str,
    add: &dyn Fn(String, String, usize),
) {
    if header.blob_type != blob_type {
        add(
            path.to_string(),
            "pack header's blob type differs from the index".into(),
            0,
        );
    }
    // A pack may hold a blob twice (earlier prunes repacked both copies of a blob two backups
    // stored at once); the index then resolves it to one of them, which must be in the header.
    let in_header: HashSet<(Id, u32, u32)> = header
        .blobs
        .iter()
        .map(|b| (b.id.0, b.offset, b.length))
        .collect();
    let mismatches = indexed
        .iter()
        .filter(|(id, l)| !in_header.contains(&(*id, l.offset, l.length)))
        .count();
    if mismatches > 0 {
        add(
            path.to_string(),
            format!("pack header disagrees with the index on {mismatches} blobs"),
            0,
        );
    }
}

fn select_packs(index: &Index, packs: &[u32], rd: &ReadData) -> Vec<u32> {
    use rand::seq::SliceRandom;
    match rd {
        ReadData::None => Vec::new(),
        ReadData::All => packs.to_vec(),
        ReadData::Group(n, m) => packs
            .iter()
            .copied()
            .filter(|p| {
                let id = index.pack(*p).id.0 .0;
                u64::from_le_bytes(id[..8].try_into().unwrap()) % m == n - 1
            })
            .collect(),
        ReadData::Percent(pct) => {
            let mut v = packs.to_vec();
            v.shuffle(&mut rand::thread_rng());
            let k = ((v.len() as f64) * pct / 100.0).ceil() as usize;
            v.truncate(k.min(v.len()));
            v
        }
        ReadData::Bytes(budget) => {
            let mut v = packs.to_vec();
            v.shuffle(&mut rand::thread_rng());
            let mut total = 0u64;
            v.into_iter()
                .take_while(|p| {
                    let fits = total < *budget;
                    total += index.pack(*p).size;
                    fits
                })
                .collect()
        }
    }
}

/// The blobs the snapshots and WAL records use, as bits over `index` (`prune::used_blobs`);
/// a tree that cannot be read is passed over here and reported by the path walk.
fn premark_used(
    index: &Index,
    loaded: &LoadedIndex,
    load: &LoadTree,
) -> Result<crate::prune::UsedBlobs> {
    let roots: Vec<crate::id::TreeId> = loaded.snapshots.iter().map(|(_, s)| s.tree).collect();
    let mut used = crate::prune::used_blobs_loading(index, &roots, load, &mut |_| Ok(()))?;
    if let Some(records) = &loaded.wal {
        let mut blocks: Vec<Id> = records
            .iter()
            .flat_map(|(_, r)| r.content.iter().map(|b| b.0))
            .collect();
        used.insert_many(index, &mut blocks);
    }
    Ok(used)
}

/// A directory the walk is in: its tree, its name, and the paths below it (relative to it)
/// that cannot be restored fully.
type OpenDir = (Id, Vec<u8>, Vec<String>);

/// Reads a tree for the walk.
type LoadTree<'a> = dyn Fn(&Id) -> Result<Tree> + 'a;

struct TreeWalker<'a> {
    index: &'a Index,
    bad_packs: &'a HashSet<u32>,
    bad_blobs: &'a HashSet<Id>,
    /// The trees the tree packs held that decode: the walk enters only those, reading each
    /// again through `load` (trees are not held: their blob ids would cost 32 bytes a blob).
    trees: &'a HashSet<Id>,
    load: &'a LoadTree<'a>,
    /// Per tree: relative paths below it that cannot be restored fully.
    memo: HashMap<Id, Arc<Vec<String>>>,
    /// One bit per index position: referenced by some snapshot.
    used: Bits,
    /// What `premark_used` found (its bits moved to `used`): a blob not in its `missing` is
    /// in the index, so the walk looks it up only to learn its pack when packs are damaged.
    premarked: Option<crate::prune::UsedBlobs>,
    missing: HashMap<Id, String>,
    /// Trees read fine from their pack before, that the walk then failed to read.
    load_failed: Vec<(Id, Error)>,
}

impl<'a> TreeWalker<'a> {
    /// Why a blob cannot be read, or None when it can.
    fn blob_problem(&mut self, id: &Id) -> Option<String> {
        if let Some(pre) = &self.premarked {
            if self.bad_packs.is_empty() && !pre.missing.contains(id) {
                return self.bad_blobs.contains(id).then(|| "damaged".into());
            }
        }
        let found = self.index.locate(id);
        if let Some((pos, _)) = found {
            self.used.set(pos);
        }
        match found.map(|(_, loc)| loc) {
            None => {
                self.missing
                    .entry(*id)
                    .or_insert_with(|| "referenced but in no index".into());
                Some("not indexed".into())
            }
            Some(loc) if self.bad_packs.contains(&loc.pack) => Some("its pack is damaged".into()),
            Some(_) if self.bad_blobs.contains(id) => Some("damaged".into()),
            Some(_) => None,
        }
    }

    /// Whether a tree can be walked. When it cannot, the whole directory is lost: its paths
    /// are the directory itself.
    fn readable(&mut self, tree_id: &Id) -> bool {
        if self.blob_problem(tree_id).is_none() && self.trees.contains(tree_id) {
            return true;
        }
        if self
            .index
            .get(tree_id)
            .is_some_and(|l| !self.bad_packs.contains(&l.pack))
            && !self.bad_blobs.contains(tree_id)
        {
            self.missing
                .entry(*tree_id)
                .or_insert_with(|| "tree not found in the tree packs".into());
        }
        self.memo.insert(*tree_id, Arc::new(vec![String::new()]));
        false
    }

    /// The paths below a tree (relative to it, "" for the tree itself) that cannot be
    /// restored fully. Each tree is walked once: a tree met again, in this snapshot or an
    /// earlier one, gives the paths found the first time.
    fn walk(&mut self, root: &Id) -> Arc<Vec<String>> {
        if !self.memo.contains_key(root) && self.readable(root) {
            self.walk_readable(root);
        }
        self.memo[root].clone()
    }

    fn walk_readable(&mut self, root: &Id) {
        let load = self.load;
        let mut open: Vec<OpenDir> = vec![(*root, Vec::new(), Vec::new())];
        let mut walk = Walker::new(load, *root);
        while let Some(entry) = walk.next() {
            let entry = match entry {
                Ok(entry) => entry,
                // Read fine from its pack, yet not now (its pack deleted meanwhile, or a
                // read error): the directory just entered is lost.
                Err(e) => {
                    self.load_failed.push((e.tree, e.error));
                    open.last_mut().expect("open").2.push(String::new());
                    continue;
                }
            };
            while open.len() > entry.depth + 1 {
                self.close(&mut open);
            }
            let node = entry.node;
            let name = || String::from_utf8_lossy(&node.name);
            match node.kind {
                NodeKind::File => {
                    let mut broken = false;
                    for id in &node.content {
                        if self.blob_problem(id).is_some() {
                            broken = true;
                        }
                    }
                    if broken {
                        let paths = &mut open.last_mut().expect("open").2;
                        paths.push(format!("/{}", name()));
                    }
                    continue;
                }
                NodeKind::Dir => {}
                _ => continue,
            }
            let Some(sub) = node.subtree.map(Id::from) else {
                let paths = &mut open.last_mut().expect("open").2;
                paths.push(format!("/{}", name()));
                continue;
            };
            if !self.memo.contains_key(&sub) && self.readable(&sub) {
                open.push((sub, node.name.clone(), Vec::new()));
                continue;
            }
            walk.skip_subtree();
            let known = self.memo[&sub].clone();
            let paths = &mut open.last_mut().expect("open").2;
            paths.extend(known.iter().map(|p| format!("/{}{p}", name())));
        }
        while open.len() > 1 {
            self.close(&mut open);
        }
        let (_, _, paths) = open.pop().expect("the root");
        self.memo.insert(*root, Arc::new(paths));
    }

    /// Leaves the innermost open directory: its paths go to its parent, and to the memo.
    fn close(&mut self, open: &mut Vec<OpenDir>) {
        let (tree, name, paths) = open.pop().expect("open");
        let name = String::from_utf8_lossy(&name);
        let parent = &mut open.last_mut().expect("a parent").2;
        parent.extend(paths.iter().map(|p| format!("/{name}{p}")));
        self.memo.insert(tree, Arc::new(paths));
    }
}

/// The newest of `snaps` for each host and set of paths, sorted by host, then paths.
pub fn newest_per_group(snaps: &[(SnapshotId, Snapshot)]) -> Vec<NewestSnapshot> {
    let mut newest: HashMap<(String, Vec<String>), &(SnapshotId, Snapshot)> = HashMap::new();
    for s in snaps {
        let mut paths = s.1.paths.clone();
        paths.sort();
        let e = newest.entry((s.1.hostname.clone(), paths)).or_insert(s);
        if s.1.time_unix_ns > e.1.time_unix_ns {
            *e = s;
        }
    }
    let mut out: Vec<NewestSnapshot> = newest
        .into_iter()
        .map(|((hostname, paths), (id, s))| NewestSnapshot {
            hostname,
            paths,
            id: *id,
            time_unix_ns: s.time_unix_ns,
        })
        .collect();
    out.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.paths.cmp(&b.paths)));
    out
}

fn too_old(newest: &[NewestSnapshot], max: std::time::Duration) -> Vec<TooOld> {
    let now = crate::host::now_ns();
    newest
        .iter()
        .filter_map(|n| {
            let age = (now - n.time_unix_ns).max(0) as u64 / 1_000_000_000;
            (age > max.as_secs()).then(|| TooOld {
                hostname: n.hostname.clone(),
                paths: n.paths.clone(),
                newest_snapshot: n.id.to_hex(),
                newest_time: crate::snapshot::rfc3339(n.time_unix_ns),
                age_seconds: age,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{IndexFile, IndexPack, Node, PackedBlob};
    use crate::id::IndexFileId;
    use crate::id::{DataId, TreeId};

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    fn node(name: &str, kind: NodeKind, content: Vec<Id>, subtree: Option<Id>) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime_ns: 0,
            ctime_ns: 0,
            atime_ns: 0,
            size: 0,
            inode: 0,
            device: 0,
            links: 1,
            rdev: 0,
            xattrs: Vec::new(),
            link_target: Vec::new(),
            content: content.into_iter().map(DataId).collect(),
            subtree: subtree.map(TreeId),
        }
    }

    fn file(name: &str, content: Id) -> Node {
        node(name, NodeKind::File, vec![content], None)
    }

    fn dir(name: &str, subtree: Option<Id>) -> Node {
        node(name, NodeKind::Dir, Vec::new(), subtree)
    }

    #[test]
    fn snapshot_walk_names_each_damaged_path_once_per_place_and_walks_shared_trees_once() {
        // Trees: root 1 [a/ -> 2, f (blob 20), b/ -> 2 again, c/ -> 3 (lost), e/ (none)],
        // 2 [g (blob 21, damaged), d/ -> 4], 4 [h (blob 22, in no index)].
        let (root, shared, lost, deep) = (id(1), id(2), id(3), id(4));
        let (ok_blob, bad_blob, unindexed) = (id(20), id(21), id(22));
        let tree = |nodes| Tree { nodes };
        let trees = HashMap::from([
            (
                root,
                tree(vec![
                    dir("a", Some(shared)),
                    file("f", ok_blob),
                    dir("b", Some(shared)),
                    dir("c", Some(lost)),
                    dir("e", None),
                ]),
            ),
            (
                shared,
                tree(vec![file("g", bad_blob), dir("d", Some(deep))]),
            ),
            (deep, tree(vec![file("h", unindexed)])),
        ]);
        let blob = |id: Id, offset| PackedBlob {
            id: id.into(),
            offset,
            length: 1,
            raw_length: 1,
        };
        let pack = |n, blob_type, blobs| IndexPack {
            id: PackId(id(n)),
            blob_type,
            size: 100,
            blobs,
        };
        let file_of = IndexFile {
            supersedes: Vec::new(),
            packs: vec![
                pack(
                    100,
                    BlobType::Tree,
                    vec![blob(root, 0), blob(shared, 1), blob(lost, 2), blob(deep, 3)],
                ),
                pack(
                    101,
                    BlobType::Data,
                    vec![blob(ok_blob, 0), blob(bad_blob, 1)],
                ),
            ],
        };
        let index = Index::build(&[(IndexFileId(id(200)), file_of)], &[]);
        let (bad_packs, bad_blobs) = (HashSet::new(), HashSet::from([bad_blob]));
        let held: HashSet<Id> = trees.keys().copied().collect();
        let load = |id: &Id| {
            trees
                .get(id)
                .cloned()
                .ok_or_else(|| Error::other("not a tree"))
        };
        let mut walker = TreeWalker {
            index: &index,
            bad_packs: &bad_packs,
            bad_blobs: &bad_blobs,
            trees: &held,
            load: &load,
            memo: HashMap::new(),
            used: Bits::new(index.len()),
            premarked: None,
            missing: HashMap::new(),
            load_failed: Vec::new(),
        };
        let paths = walker.walk(&root);
        assert_eq!(
            *paths,
            ["/a/g", "/a/d/h", "/b/g", "/b/d/h", "/c", "/e"].map(String::from)
        );
        // A second snapshot rooted at the shared tree gets the paths found the first time.
        assert_eq!(*walker.walk(&shared), ["/g", "/d/h"].map(String::from));
        assert_eq!(
            walker.memo.len(),
            4,
            "root, shared, lost and deep, once each"
        );
        let mut missing: Vec<_> = walker
            .missing
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        missing.sort();
        assert_eq!(
            missing,
            vec![
                (lost, "tree not found in the tree packs".to_string()),
                (unindexed, "referenced but in no index".to_string()),
            ]
        );
        // Every indexed blob is used.
        let mut unused = Reclaimable::default();
        unused_blobs(&index, &walker.used, &mut unused);
        assert_eq!(unused.unused_blobs, 0);
    }
}

//! Retention extension and version reclaim against a fake `Lifecycle` that records every
//! request (no S3: the end-to-end tests against moto are in tests/object_lock.rs).

use super::reclaim::reclaim;
use super::*;
use crate::backend::lifecycle::{StoredVersion, ThawRequest, ThawState, ThawTier};
use crate::backend::{DynStorage, StorageResult};
use crate::format::SnapshotSummary;
use crate::retention::{apply, Policy};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const MIB: u64 = 1 << 20;

#[derive(Clone, Debug)]
struct Obj {
    size: u64,
    modified_s: i64,
    until_s: i64,
}

#[derive(Default)]
struct State {
    now_s: i64,
    lock_days: u32,
    objects: BTreeMap<String, Obj>,
    /// (version, its retain-until) for `list_versions`.
    versions: Vec<(StoredVersion, Option<i64>)>,
    extends: Vec<(String, i64)>,
    heads: u64,
    version_deletes: Vec<(String, String)>,
    /// Mirror of a repository's files: listed objects come from it, first seen at `now_s`.
    files: Option<DynStorage>,
}

/// A bucket with Object Lock as far as retention and versions go; counts its requests.
#[derive(Default)]
struct Fake(Mutex<State>);

impl Fake {
    fn put(&self, path: &str, size: u64) {
        let mut s = self.0.lock().unwrap();
        let obj = Obj {
            size,
            modified_s: s.now_s,
            until_s: initial_retention(s.now_s, s.lock_days),
        };
        s.objects.insert(path.to_string(), obj);
    }

    fn requests(&self) -> usize {
        self.0.lock().unwrap().extends.len()
    }

    fn until(&self, path: &str) -> i64 {
        self.0.lock().unwrap().objects[path].until_s
    }
}

fn denied() -> crate::backend::StorageError {
    opendal::Error::new(opendal::ErrorKind::PermissionDenied, "object is locked")
}

#[async_trait]
impl Lifecycle for Fake {
    async fn object_lock_enabled(&self) -> StorageResult<bool> {
        Ok(true)
    }

    async fn list_classes(&self, prefix: &str) -> StorageResult<Vec<ClassedObject>> {
        let files = self.0.lock().unwrap().files.clone();
        if let Some(files) = files {
            for (path, size) in files.list(prefix).await.unwrap_or_default() {
                if !self.0.lock().unwrap().objects.contains_key(&path) {
                    self.put(&path, size);
                }
            }
        }
        let s = self.0.lock().unwrap();
        Ok(s.objects
            .range(prefix.to_string()..)
            .take_while(|(p, _)| p.starts_with(prefix))
            .map(|(p, o)| ClassedObject {
                path: p.clone(),
                size: o.size,
                storage_class: None,
                modified_unix_s: o.modified_s,
            })
            .collect())
    }

    async fn thaw_state(&self, _: &str) -> StorageResult<ThawState> {
        Ok(ThawState::Hot)
    }

    async fn request_thaw(&self, _: &str, _: u32, _: ThawTier) -> StorageResult<ThawRequest> {
        Ok(ThawRequest::AlreadyReadable)
    }

    async fn retention(&self, path: &str) -> StorageResult<Option<(RetentionMode, i64)>> {
        let s = self.0.lock().unwrap();
        Ok(s.objects
            .get(path)
            .map(|o| (RetentionMode::Compliance, o.until_s)))
    }

    async fn extend_retention(
        &self,
        path: &str,
        _: RetentionMode,
        until_unix_s: i64,
    ) -> StorageResult<()> {
        let mut s = self.0.lock().unwrap();
        s.extends.push((path.to_string(), until_unix_s));
        let o = s.objects.get_mut(path).expect("extended object exists");
        // Compliance mode refuses to shorten a retention.
        if until_unix_s < o.until_s {
            return Err(denied());
        }
        o.until_s = until_unix_s;
        Ok(())
    }

    async fn list_versions(&self, prefix: &str) -> StorageResult<Vec<StoredVersion>> {
        let s = self.0.lock().unwrap();
        Ok(s.versions
            .iter()
            .filter(|(v, _)| v.path.starts_with(prefix))
            .map(|(v, _)| v.clone())
            .collect())
    }

    async fn version_retention(&self, path: &str, version_id: &str) -> StorageResult<Option<i64>> {
        let mut s = self.0.lock().unwrap();
        s.heads += 1;
        Ok(s.versions
            .iter()
            .find(|(v, _)| v.path == path && v.version_id == version_id)
            .and_then(|(_, r)| *r))
    }

    async fn delete_version(&self, path: &str, version_id: &str) -> StorageResult<()> {
        let mut s = self.0.lock().unwrap();
        let now = s.now_s;
        let pos = s
            .versions
            .iter()
            .position(|(v, _)| v.path == path && v.version_id == version_id)
            .ok_or_else(|| opendal::Error::new(opendal::ErrorKind::NotFound, "no version"))?;
        if s.versions[pos].1.is_some_and(|until| until > now) {
            return Err(denied());
        }
        s.versions.remove(pos);
        s.version_deletes
            .push((path.to_string(), version_id.to_string()));
        Ok(())
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn sid(n: u64) -> SnapshotId {
    SnapshotId(Id(*blake3::hash(&n.to_le_bytes()).as_bytes()))
}

fn snap(time_s: i64) -> Snapshot {
    Snapshot {
        time_unix_ns: time_s * 1_000_000_000,
        hostname: "h".into(),
        username: "u".into(),
        paths: vec!["/p".into()],
        tags: vec![],
        tree: Default::default(),
        parent: None,
        excludes: vec![],
        incomplete: false,
        summary: SnapshotSummary::default(),
        program_version: String::new(),
        postgres: None,
        log_heads: Vec::new(),
    }
}

#[test]
fn dates_round_up_to_days_and_generations() {
    assert_eq!(ceil_to(0, DAY_S), 0);
    assert_eq!(ceil_to(1, DAY_S), DAY_S);
    assert_eq!(ceil_to(-1, DAY_S), 0);
    assert_eq!(initial_retention(10 * DAY_S + 5, 30), 41 * DAY_S);
    let now = 1000 * DAY_S + 3600;
    // No rule with a time: now + lock_days, rounded up to a generation.
    assert_eq!(keep_until(&[], 0, now, 30), 1050 * DAY_S);
    assert_eq!(keep_until(&[Rule::Last(3)], now, now, 30), 1050 * DAY_S);
    // Yearly 7 from a snapshot a year old: time + 7 * 366 days, up to a generation.
    let t = now - 365 * DAY_S;
    let y = keep_until(&[Rule::Daily(30), Rule::Yearly(7)], t, now, 30);
    assert_eq!(y % LOCK_GENERATION_S, 0);
    assert!(y >= t + 7 * 366 * DAY_S && y < t + 7 * 366 * DAY_S + LOCK_GENERATION_S);
}

/// One simulated repository: each day a snapshot that needs the base packs, every growth pack
/// so far, its own churn pack and tree pack; an index file and three log entries a day.
struct Sim {
    fake: Fake,
    policy: Policy,
    lock_days: u32,
    /// Snapshot id -> (time, the packs it needs).
    snaps: BTreeMap<SnapshotId, (i64, Vec<String>)>,
    ledger: Option<RetentionLedger>,
    day: i64,
    requests_per_run: Vec<usize>,
}

const START_S: i64 = 20_000 * DAY_S;

impl Sim {
    fn new(policy: Policy, lock_days: u32) -> Sim {
        let fake = Fake::default();
        {
            let mut s = fake.0.lock().unwrap();
            s.now_s = START_S;
            s.lock_days = lock_days;
        }
        fake.put("config", 200);
        fake.put("keys/k", 400);
        for b in 0..10 {
            fake.put(&format!("data/b{b}"), 64 * MIB);
        }
        Sim {
            fake,
            policy,
            lock_days,
            snaps: BTreeMap::new(),
            ledger: None,
            day: 0,
            requests_per_run: Vec::new(),
        }
    }

    fn set_now(&self, t: i64) {
        self.fake.0.lock().unwrap().now_s = t;
    }

    /// Day `day`: a backup at 02:00, then forget (and a prune's deletions) at 03:00.
    fn next_day(&mut self) {
        let d = self.day;
        let t = START_S + d * DAY_S + 2 * 3600;
        self.set_now(t);
        let mut packs: Vec<String> = (0..10).map(|b| format!("data/b{b}")).collect();
        packs.extend((0..=d).map(|g| format!("data/g{g}")));
        for (name, size) in [("g", 16 * MIB), ("c", 16 * MIB), ("t", MIB)] {
            self.fake.put(&format!("data/{name}{d}"), size);
        }
        packs.push(format!("data/c{d}"));
        packs.push(format!("data/t{d}"));
        let id = sid(d as u64);
        self.fake
            .put(&crate::backend::FileKind::Snapshot.path(&id), 300);
        packs.push(crate::backend::FileKind::Snapshot.path(&id));
        self.fake.put(&format!("index/i{d}"), 20_000);
        for l in 0..3 {
            self.fake.put(&format!("log/l{d}-{l}"), 300);
        }
        self.snaps.insert(id, (t, packs));
        self.set_now(t + 3600);
        self.forget_and_extend();
        self.day += 1;
    }

    fn forget_and_extend(&mut self) {
        let now = self.fake.0.lock().unwrap().now_s;
        let group: Vec<(SnapshotId, Snapshot)> = self
            .snaps
            .iter()
            .map(|(id, (t, _))| (*id, snap(*t)))
            .collect();
        let decisions = apply(&group, &self.policy);
        for d in decisions.iter().filter(|d| !d.keep) {
            // forget, then prune: the snapshot's own files go (become delete markers).
            let (_, packs) = self.snaps.remove(&d.id).unwrap();
            let mut s = self.fake.0.lock().unwrap();
            for p in packs
                .iter()
                .filter(|p| !p.contains("/b") && !p.contains("/g"))
            {
                s.objects.remove(p);
            }
        }
        let dated: Vec<(SnapshotId, i64, i64)> = decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| {
                let t = self.snaps[&d.id].0;
                (d.id, t, keep_until(&d.rules, t, now, self.lock_days))
            })
            .collect();
        let needs = self.needs(&dated, now);
        let before = self.fake.requests();
        let (report, ledger) = rt()
            .block_on(extend_listed(
                &self.fake,
                RetentionMode::Compliance,
                self.lock_days,
                now,
                &needs,
                self.ledger.as_ref(),
                8,
            ))
            .unwrap();
        assert_eq!(report.failed, 0, "{:?}", report.first_error);
        assert_eq!(report.requests as usize, self.fake.requests() - before);
        self.ledger = ledger;
        self.requests_per_run.push(self.fake.requests() - before);
        // What every kept snapshot needs is locked at least until its date.
        for (id, _, until) in &dated {
            for p in &self.snaps[id].1 {
                assert!(self.fake.until(p) >= *until, "{p} of a kept snapshot");
            }
        }
        for p in ["config", "keys/k"] {
            assert!(self.fake.until(p) >= needs.metadata_until_s);
        }
    }

    /// `attribute` for the simulated snapshots: latest date first, oldest first among equals.
    fn needs(&self, dated: &[(SnapshotId, i64, i64)], now: i64) -> Needs {
        let mut order: Vec<&(SnapshotId, i64, i64)> = dated.iter().collect();
        order.sort_by(|a, b| b.2.cmp(&a.2).then(a.1.cmp(&b.1)).then(a.0.cmp(&b.0)));
        let mut objects = HashMap::new();
        for (id, _, until) in order {
            for p in &self.snaps[id].1 {
                objects
                    .entry(p.clone())
                    .or_insert((Owner::Snapshot(*id), *until));
            }
        }
        let wal_until_s = keep_until(&[], now, now, self.lock_days);
        Needs {
            objects,
            snapshots: dated.iter().map(|(id, _, u)| (*id, *u)).collect(),
            metadata_until_s: metadata_until(dated.iter().map(|d| d.2), wal_until_s),
            wal_until_s,
        }
    }

    fn extends_of(&self, path: &str) -> Vec<i64> {
        let s = self.fake.0.lock().unwrap();
        s.extends
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, t)| *t)
            .collect()
    }

    fn pack_bytes(&self) -> u64 {
        let s = self.fake.0.lock().unwrap();
        s.objects
            .iter()
            .filter(|(p, _)| p.starts_with("data/"))
            .map(|(_, o)| o.size)
            .sum()
    }
}

fn daily(n: u32) -> Policy {
    Policy {
        daily: Some(n),
        ..Default::default()
    }
}

#[test]
fn a_pack_every_daily_snapshot_needs_is_extended_once_per_generation() {
    let mut sim = Sim::new(daily(30), 30);
    for _ in 0..120 {
        sim.next_day();
    }
    // 120 runs of forget: the base pack moves to a new generation 4 times, not 120.
    let extends = sim.extends_of("data/b0");
    assert!(extends.len() <= 5, "{extends:?}");
    assert!(extends.windows(2).all(|w| w[1] - w[0] >= LOCK_GENERATION_S));
    // A day's own packs: a daily-30 snapshot needs at most two extensions in its life.
    assert!(sim.extends_of("data/c60").len() <= 2);
}

#[test]
fn a_rerun_right_after_makes_no_requests() {
    let mut sim = Sim::new(daily(7), 14);
    for _ in 0..10 {
        sim.next_day();
    }
    sim.forget_and_extend();
    assert_eq!(sim.requests_per_run.last(), Some(&0));
}

#[test]
fn a_yearly_snapshot_is_locked_for_about_seven_years() {
    let mut sim = Sim::new(
        Policy {
            daily: Some(7),
            yearly: Some(7),
            ..Default::default()
        },
        30,
    );
    // Day 0 is the newest of its year only until the next year starts; a year and more.
    for _ in 0..400 {
        sim.next_day();
    }
    // The newest snapshot of each year is kept by "yearly 7": find one that is not recent.
    let old: Vec<(i64, SnapshotId)> = sim
        .snaps
        .iter()
        .map(|(id, (t, _))| (*t, *id))
        .filter(|(t, _)| *t < START_S + 300 * DAY_S)
        .collect();
    assert_eq!(old.len(), 1, "one yearly snapshot older than the dailies");
    let (t, id) = old[0];
    let own_pack = sim.snaps[&id]
        .1
        .iter()
        .find(|p| p.starts_with("data/c"))
        .unwrap()
        .clone();
    let until = sim.fake.until(&own_pack);
    assert!(until >= t + 7 * 366 * DAY_S, "{until} < 7 years from {t}");
    assert!(until < t + 7 * 366 * DAY_S + LOCK_GENERATION_S);
}

#[test]
fn a_pack_written_after_the_ledger_is_extended() {
    let policy = Policy {
        daily: Some(7),
        monthly: Some(12),
        ..Default::default()
    };
    let mut sim = Sim::new(policy, 30);
    for _ in 0..40 {
        sim.next_day();
    }
    // Day 27 (2024-10-31) is October's monthly snapshot, locked for a year; a prune repacks
    // its churn pack into a new one after the last forget.
    assert_eq!(
        crate::snapshot::rfc3339(sim.snaps[&sid(27)].0 * 1_000_000_000),
        "2024-10-31T02:00:00Z"
    );
    let now = sim.fake.0.lock().unwrap().now_s + 600;
    sim.set_now(now);
    sim.fake.put("data/repacked", 8 * MIB);
    let packs = &mut sim.snaps.get_mut(&sid(27)).unwrap().1;
    packs.retain(|p| p != "data/c27");
    packs.push("data/repacked".into());
    sim.fake.0.lock().unwrap().objects.remove("data/c27");
    sim.forget_and_extend();
    assert_eq!(sim.requests_per_run.last(), Some(&1));
    let until = sim.extends_of("data/repacked");
    assert_eq!(until.len(), 1);
    assert!(until[0] >= sim.snaps[&sid(27)].0 + 372 * DAY_S);
}

/// The figure the design asks for: requests per GiB of packs over a year of dailies under
/// `--keep-daily 30 --keep-weekly 12 --keep-monthly 12 --keep-yearly 7`, lock 30 days,
/// after a first year (a simulation over the fake Lifecycle). Prints the figures.
#[test]
fn a_year_of_dailies_under_30_12_12_7_costs_few_requests_per_gib() {
    let policy = Policy {
        daily: Some(30),
        weekly: Some(12),
        monthly: Some(12),
        yearly: Some(7),
        ..Default::default()
    };
    let mut sim = Sim::new(policy, 30);
    for _ in 0..365 {
        sim.next_day();
    }
    let first_year: usize = sim.requests_per_run.iter().sum();
    let extends_before = sim.fake.0.lock().unwrap().extends.len();
    for _ in 0..365 {
        sim.next_day();
    }
    let second_year: usize = sim.requests_per_run[365..].iter().sum();
    let gib = sim.pack_bytes() as f64 / (1u64 << 30) as f64;
    let objects = sim.fake.0.lock().unwrap().objects.len();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for (p, _) in &sim.fake.0.lock().unwrap().extends[extends_before..] {
        let kind = match p.split_once('/') {
            Some(("data", name)) => format!("data/{}", &name[..1]),
            Some((dir, _)) => dir.to_string(),
            None => p.clone(),
        };
        *by_kind.entry(kind).or_default() += 1;
    }
    println!(
        "simulation, year 2 requests by kind (data/b base, g growth, c churn, t tree): {by_kind:?}"
    );
    println!(
        "simulation: year 1 {first_year} requests, year 2 {second_year} requests; \
         {gib:.1} GiB of packs, {objects} objects at the end: {:.0} requests per GiB-year",
        second_year as f64 / gib
    );
    // Without the ledger and generations every run would extend every needed object:
    // at least one request per object per day.
    assert!(second_year < 365 * objects / 10, "{second_year} requests");
}

fn version(path: &str, id: &str, latest: bool, marker: bool, size: u64) -> StoredVersion {
    StoredVersion {
        path: path.into(),
        version_id: id.into(),
        is_latest: latest,
        is_delete_marker: marker,
        size,
        modified_unix_s: 0,
    }
}

#[test]
fn reclaim_deletes_expired_versions_and_counts_locked_ones() {
    let fake = Fake::default();
    let now = 1000 * DAY_S;
    {
        let mut s = fake.0.lock().unwrap();
        s.now_s = now;
        s.versions = vec![
            // A pack deleted long ago: its lock is over.
            (
                version("data/aa/old", "v1", false, false, 10 * MIB),
                Some(now - DAY_S),
            ),
            (version("data/aa/old", "m1", true, true, 0), None),
            // A pack deleted yesterday, locked for 20 more days.
            (
                version("data/bb/new", "v1", false, false, 4 * MIB),
                Some(now + 20 * DAY_S),
            ),
            (version("data/bb/new", "m1", true, true, 0), None),
            // A live pack: not looked at.
            (
                version("data/cc/live", "v1", true, false, MIB),
                Some(now + DAY_S),
            ),
            // A backup marker deleted: never locked, no HEAD needed.
            (version("locks/x", "v1", false, false, 100), None),
            (version("locks/x", "m1", true, true, 0), None),
            // A snapshot file deleted, its version without retention (governance removed).
            (version("snapshots/s", "v1", false, false, 300), None),
            (version("snapshots/s", "m1", true, true, 0), None),
        ];
    }
    let r = rt().block_on(reclaim(&fake, now, false, 4)).unwrap();
    assert_eq!(r.versions_deleted, 3);
    assert_eq!(r.version_bytes_deleted, 10 * MIB + 100 + 300);
    assert_eq!(r.delete_markers_removed, 3);
    assert_eq!(r.versions_retained, 1);
    assert_eq!(r.version_bytes_retained, 4 * MIB);
    assert_eq!(r.retained_until_unix_s, Some(now + 20 * DAY_S));
    assert_eq!((r.packs_retained, r.pack_bytes_retained), (1, 4 * MIB));
    // HEADs only for the old versions of deleted, lockable files.
    assert_eq!(r.retention_lookups, 3);
    let s = fake.0.lock().unwrap();
    assert_eq!(s.heads, 3);
    let left: Vec<(&str, &str)> = s
        .versions
        .iter()
        .map(|(v, _)| (v.path.as_str(), v.version_id.as_str()))
        .collect();
    assert_eq!(
        left,
        vec![
            ("data/bb/new", "v1"),
            ("data/bb/new", "m1"),
            ("data/cc/live", "v1")
        ]
    );
}

#[test]
fn reclaim_counts_a_refused_delete_as_retained_and_a_dry_run_deletes_nothing() {
    let fake = Fake::default();
    let now = 1000 * DAY_S;
    {
        let mut s = fake.0.lock().unwrap();
        // The storage's clock is behind the one prune judged by: the delete is refused.
        s.now_s = now - 10 * DAY_S;
        s.versions = vec![
            (
                version("index/i", "v1", false, false, 500),
                Some(now - DAY_S),
            ),
            (version("index/i", "m1", true, true, 0), None),
        ];
    }
    let dry = rt().block_on(reclaim(&fake, now, true, 4)).unwrap();
    assert_eq!((dry.versions_deleted, dry.delete_markers_removed), (1, 1));
    assert_eq!(fake.0.lock().unwrap().versions.len(), 2);
    let r = rt().block_on(reclaim(&fake, now, false, 4)).unwrap();
    assert_eq!(r.versions_deleted, 0);
    assert_eq!(r.versions_retained, 1);
    assert_eq!(
        r.delete_markers_removed, 0,
        "the marker stays above a version"
    );
    assert_eq!(fake.0.lock().unwrap().versions.len(), 2);
}

/// `extend` on a repository: a snapshot's file, tree pack and data pack, and the metadata,
/// are extended to the dates their rules give; the ledger is stored in `retention/`; a rerun
/// asks for nothing.
#[test]
fn extend_on_a_repository_locks_what_kept_snapshots_need_and_writes_one_ledger() {
    use crate::backend::{Backend, FileKind};
    use crate::format::{BlobType, IndexFile, LockMode, Node, NodeKind, ObjectLock, Tree};
    use crate::packer::{self, Indexing, PackerParts};
    use crate::repository::InitOptions;

    let fake = Arc::new(Fake::default());
    {
        let mut s = fake.0.lock().unwrap();
        s.lock_days = 10;
        // Files are first listed at this time: before the ledger's listing slack.
        s.now_s = crate::host::now_ns() / 1_000_000_000 - 10;
    }
    let mut backend = Backend::open("memory:", true).unwrap();
    fake.0.lock().unwrap().files = Some(backend.storage().clone());
    backend.set_lifecycle_for_tests(fake.clone());
    let opts = InitOptions {
        kdf_memory_kib: 1024,
        kdf_iterations: 1,
        storage: crate::format::StoragePolicy {
            lock: Some(ObjectLock {
                mode: LockMode::Compliance,
                days: 10,
            }),
            data_storage_class: None,
        },
        ..InitOptions::default()
    };
    let repo = crate::repository::Repository::init(backend, b"pw", &opts).unwrap();
    let now_s = crate::host::now_ns() / 1_000_000_000;
    let mut ids = Vec::new();
    for (n, age_days) in [(0u8, 400i64), (1, 1)] {
        let mut indexed = repo.load_index().unwrap();
        let session = indexed.write_session().unwrap();
        let save = |f: &IndexFile| session.save_file(f).map(Id::from);
        let (tree, packed) =
            packer::run(PackerParts::new(&session, Indexing::Every(1, &save)), |p| {
                let blob = p.store(BlobType::Data, &[n; 5000])?;
                let mut node_file = Tree::default();
                node_file.nodes.push(Node {
                    name: vec![b'f'],
                    kind: NodeKind::File,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    user: String::new(),
                    group: String::new(),
                    mtime_ns: 0,
                    ctime_ns: 0,
                    atime_ns: 0,
                    size: 5000,
                    inode: 0,
                    device: 0,
                    links: 1,
                    rdev: 0,
                    xattrs: vec![],
                    link_target: vec![],
                    content: vec![blob.into()],
                    subtree: None,
                });
                p.store_tree(&node_file)
            });
        packed.unwrap();
        let mut s = snap(now_s - age_days * DAY_S);
        s.tree = TreeId(tree.unwrap());
        ids.push((session.save_file(&s).unwrap(), s));
    }
    let session = repo.write_session().unwrap();
    let rules_old = [Rule::Yearly(2)];
    let kept: Vec<Kept> = ids
        .iter()
        .enumerate()
        .map(|(i, (id, s))| Kept {
            id: *id,
            snapshot: s,
            rules: if i == 0 { &rules_old } else { &[] },
        })
        .collect();
    let report = extend(&session, &kept).unwrap().unwrap();
    assert_eq!(report.failed, 0);
    let yearly_until = keep_until(&rules_old, now_s - 400 * DAY_S, now_s, 10);
    // Metadata goes to the latest snapshot date rounded up to a metadata generation.
    let metadata = metadata_until([yearly_until].into_iter(), 0);
    assert!(metadata >= yearly_until && metadata < yearly_until + METADATA_GENERATION_S);
    assert_eq!(report.latest_until_unix_s, Some(metadata));
    let floor = keep_until(&[], now_s, now_s, 10);
    assert!(floor <= now_s + 10 * DAY_S + LOCK_GENERATION_S + 1);
    // Each object is extended once: snapshot files, 2 data + 2 tree packs, index, keys,
    // config, no log (none written).
    let extends = fake.0.lock().unwrap().extends.clone();
    let until_of = |p: &str| extends.iter().find(|(q, _)| q == p).map(|(_, t)| *t);
    assert_eq!(
        until_of(&FileKind::Snapshot.path(&ids[0].0)),
        Some(yearly_until)
    );
    assert!(until_of(&FileKind::Snapshot.path(&ids[1].0)).unwrap() >= floor - 60);
    assert_eq!(until_of("config"), Some(metadata));
    let packs: Vec<&(String, i64)> = extends
        .iter()
        .filter(|(p, _)| p.starts_with("data/"))
        .collect();
    assert_eq!(packs.len(), 4, "{extends:?}");
    assert_eq!(packs.iter().filter(|(_, t)| *t == yearly_until).count(), 2);
    let ledgers = repo.backend().list(FileKind::Retention).unwrap();
    assert_eq!(ledgers.len(), 1);
    // A rerun: nothing new, no request; still one ledger (the new one replaces the old).
    let before = extends.len();
    let again = extend(&session, &kept).unwrap().unwrap();
    assert_eq!((again.requests, fake.requests()), (0, before));
    assert_eq!(repo.backend().list(FileKind::Retention).unwrap().len(), 1);
}

/// Storage whose credentials may not delete (a backup-only key on a locked bucket).
struct NoDelete(DynStorage);

#[async_trait]
impl crate::backend::Storage for NoDelete {
    async fn read(
        &self,
        path: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> StorageResult<Vec<u8>> {
        self.0.read(path, range).await
    }
    async fn write(
        &self,
        path: &str,
        bytes: bytes::Bytes,
        class: crate::backend::ObjectClass,
    ) -> StorageResult<()> {
        self.0.write(path, bytes, class).await
    }
    fn spill_file(&self, name: &str) -> Option<std::io::Result<crate::backend::SpillFile>> {
        self.0.spill_file(name)
    }
    async fn write_spilled(
        &self,
        path: &str,
        file: Arc<crate::backend::SpillFile>,
        class: crate::backend::ObjectClass,
    ) -> StorageResult<()> {
        self.0.write_spilled(path, file, class).await
    }
    async fn delete(&self, _: &str) -> StorageResult<()> {
        Err(denied())
    }
    async fn list(&self, prefix: &str) -> StorageResult<Vec<(String, u64)>> {
        self.0.list(prefix).await
    }
    async fn stat(&self, path: &str) -> StorageResult<crate::backend::Meta> {
        self.0.stat(path).await
    }
}

/// With credentials that may not delete, a write session (what `snapshot` holds) saves a
/// fenced file and ends without an error though its markers stay; `unlock --remove-all`
/// (`WriteSession::delete_transient`, which prune uses for markers and prune marks too)
/// finishes with a warning.
#[test]
fn refused_deletes_of_markers_are_no_error() {
    use crate::backend::{Backend, FileKind};
    use crate::repository::{InitOptions, Repository};
    let opts = InitOptions {
        kdf_memory_kib: 1024,
        kdf_iterations: 1,
        ..InitOptions::default()
    };
    let mut backend = Backend::open("memory:", true).unwrap();
    backend.wrap_storage_for_tests(|s| Arc::new(NoDelete(s)));
    let repo = Repository::init(backend, b"pw", &opts).unwrap();
    {
        let session = repo.write_session().unwrap();
        // A file fenced by the marker, as a snapshot is.
        session
            .save_file(&crate::format::IndexFile::default())
            .unwrap();
        // A heartbeat replaces the previous one: the refused delete is only a warning.
        session.storage_now().unwrap();
        session.storage_now().unwrap();
    }
    assert_eq!(repo.load_index_files().unwrap().len(), 1);
    assert!(
        repo.backend().list(FileKind::Lock).unwrap().len() >= 2,
        "markers stay"
    );
    let session = repo.write_session().unwrap();
    crate::session::unlock(&session, true).unwrap();
}

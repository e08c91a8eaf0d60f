//! Object Lock retention of a repository on a lock-enabled bucket (format-spec §10c).
//!
//! Every object a restore needs is written locked until `ceil_to_day(write + lock_days)`.
//! `forget` then extends what the kept snapshots need (`extend`): each kept snapshot gets a
//! keep-until from the rule that keeps it, rounded up to a 30-day generation, and every object
//! it needs whose known retention is earlier gets one PutObjectRetention. What was extended is
//! recorded in a `retention/<id>` ledger, so the next run asks only for what is new or what a
//! later generation needs: a pack shared by every daily snapshot is extended once per
//! generation, not once a day. `prune` reclaims the versions whose retention is over
//! (`reclaim`).

pub mod reclaim;
#[cfg(test)]
mod tests;

use crate::backend::lifecycle::{ClassedObject, Lifecycle, RetentionMode};
use crate::error::{Error, Result};
use crate::format::{RetentionEntry, RetentionLedger, Snapshot};
use crate::id::{BlobId, Id, SnapshotId, TreeId};
use crate::index::Index;
use crate::repository::Repository;
use crate::retention::Rule;
use crate::session::WriteSession;
use crate::walker::Walker;
use std::collections::{HashMap, HashSet};

pub const DAY_S: i64 = 86_400;
/// Keep-until dates are rounded up to multiples of this (since the epoch), so what many
/// snapshots share moves to a new date once per generation.
pub const LOCK_GENERATION_S: i64 = 30 * DAY_S;
/// The date metadata (index files, keys, config, log entries) is locked to is rounded up to
/// multiples of this: their number grows with every run, and each move of that date extends
/// every one of them, so it moves once per 360 days rather than once per generation.
pub const METADATA_GENERATION_S: i64 = 12 * LOCK_GENERATION_S;
/// Modification times of S3 have a resolution of one second: a ledger covers what was stored
/// this long before the listing that it is made from.
const LISTING_SLACK_S: i64 = 2;

/// `t` rounded up to a multiple of `step`.
/// Saturates at the ends of `i64` (dates from storage or a ledger may be anything).
pub fn ceil_to(t: i64, step: i64) -> i64 {
    let floor = t.div_euclid(step).saturating_mul(step);
    if t.rem_euclid(step) == 0 {
        floor
    } else {
        floor.saturating_add(step)
    }
}

/// The retain-until an object stored at `modified_s` was written with.
pub fn initial_retention(modified_s: i64, lock_days: u32) -> i64 {
    crate::backend::lifecycle::initial_retain_until(modified_s, lock_days)
}

/// How long a kept snapshot stays locked: from the longest of the rules that keep it (a rule
/// without a time bound, one whose period is not over yet, or none, keeps it `lock_days` from
/// now), rounded up to a generation, at least `now + lock_days`.
pub fn keep_until(rules: &[Rule], time_s: i64, now_s: i64, lock_days: u32) -> i64 {
    let floor = now_s.saturating_add(lock_days as i64 * DAY_S);
    let settled = |r: &Rule| {
        r.settled(
            time_s.saturating_mul(1_000_000_000),
            now_s.saturating_mul(1_000_000_000),
        )
    };
    let by_rules = rules
        .iter()
        .map(|r| {
            r.keeps_for()
                .filter(|_| settled(r))
                .map_or(floor, |d| time_s.saturating_add(d.as_secs() as i64))
        })
        .max()
        .unwrap_or(floor);
    ceil_to(by_rules.max(floor), LOCK_GENERATION_S)
}

/// The date metadata is locked to: the latest of the kept snapshots' dates and the WAL
/// archive's, rounded up to a metadata generation.
pub fn metadata_until(snapshot_untils: impl Iterator<Item = i64>, wal_until_s: i64) -> i64 {
    ceil_to(
        snapshot_untils
            .max()
            .unwrap_or(wal_until_s)
            .max(wal_until_s),
        METADATA_GENERATION_S,
    )
}

/// What an object is locked for: a snapshot that needs it, the repository's metadata (index
/// files, keys, config, log), or the WAL archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    Snapshot(SnapshotId),
    Metadata,
    Wal,
}

/// What the kept snapshots need locked: each pack and snapshot file with the snapshot that
/// needs it longest and that date; the other prefixes by owner.
#[derive(Clone, Debug, Default)]
pub struct Needs {
    pub objects: HashMap<String, (Owner, i64)>,
    pub snapshots: Vec<(SnapshotId, i64)>,
    pub metadata_until_s: i64,
    pub wal_until_s: i64,
}

/// The prefixes whose objects `extend` looks at, and `config`.
const LOCKED_PREFIXES: [&str; 6] = ["snapshots/", "data/", "index/", "keys/", "log/", "wal/"];

/// One PutObjectRetention to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    pub path: String,
    pub size: u64,
    pub until_s: i64,
}

/// What `extend` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExtendReport {
    pub objects_extended: u64,
    pub bytes_extended: u64,
    pub requests: u64,
    pub earliest_until_unix_s: Option<i64>,
    pub latest_until_unix_s: Option<i64>,
    /// Objects whose extension failed; the ledger was then left as it was (a later forget
    /// asks again).
    pub failed: u64,
    pub first_error: Option<String>,
}

/// The known retention of an object: its initial one, or what a ledger entry of its owner
/// says when the object existed when the entry was made.
fn known_retention(o: &ClassedObject, entry: Option<(i64, i64)>, lock_days: u32) -> i64 {
    let initial = initial_retention(o.modified_unix_s, lock_days);
    match entry {
        Some((until, at)) if o.modified_unix_s <= at => initial.max(until),
        _ => initial,
    }
}

fn ledger_entry(ledger: Option<&RetentionLedger>, owner: Owner) -> Option<(i64, i64)> {
    let l = ledger?;
    match owner {
        Owner::Snapshot(id) => l
            .entries
            .iter()
            .find(|e| e.snapshot == id)
            .map(|e| (e.locked_until_unix_s, e.extended_at_unix_s)),
        Owner::Metadata => Some((
            l.metadata_locked_until_unix_s,
            l.metadata_extended_at_unix_s,
        )),
        Owner::Wal => Some((l.wal_locked_until_unix_s, l.wal_extended_at_unix_s)),
    }
}

/// The extensions the listed objects need, given what the ledger knows.
pub fn plan(
    listing: &[ClassedObject],
    needs: &Needs,
    ledger: Option<&RetentionLedger>,
    lock_days: u32,
) -> Vec<Extension> {
    let mut out = Vec::new();
    for o in listing {
        let need = match needs.objects.get(&o.path) {
            Some(n) => Some(*n),
            None if o.path == crate::backend::CONFIG_PATH
                || ["index/", "keys/", "log/"]
                    .iter()
                    .any(|p| o.path.starts_with(p)) =>
            {
                Some((Owner::Metadata, needs.metadata_until_s))
            }
            None if o.path.starts_with("wal/") => Some((Owner::Wal, needs.wal_until_s)),
            // Unused packs, forgotten snapshots: left to expire.
            None => None,
        };
        let Some((owner, until)) = need else { continue };
        if known_retention(o, ledger_entry(ledger, owner), lock_days) < until {
            out.push(Extension {
                path: o.path.clone(),
                size: o.size,
                until_s: until,
            });
        }
    }
    out
}

/// Lists what the lock covers: every file under `LOCKED_PREFIXES`, and `config`.
pub async fn list_locked(lc: &dyn Lifecycle) -> Result<Vec<ClassedObject>> {
    let mut out = Vec::new();
    for prefix in LOCKED_PREFIXES {
        out.extend(lc.list_classes(prefix).await.map_err(Error::from)?);
    }
    let config = lc.list_classes(crate::backend::CONFIG_PATH).await?;
    out.extend(
        config
            .into_iter()
            .filter(|o| o.path == crate::backend::CONFIG_PATH),
    );
    Ok(out)
}

/// Makes the extensions, `in_flight` at once; counts them in a report.
pub async fn execute(
    lc: &dyn Lifecycle,
    mode: RetentionMode,
    extensions: &[Extension],
    in_flight: usize,
) -> ExtendReport {
    use futures::StreamExt;
    let results: Vec<(usize, std::result::Result<u64, String>)> =
        futures::stream::iter(extensions.iter().enumerate())
            .map(|(i, e)| async move { (i, extend_one(lc, mode, e).await) })
            .buffer_unordered(in_flight.max(1))
            .collect()
            .await;
    let mut report = ExtendReport::default();
    for (i, r) in results {
        let e = &extensions[i];
        match r {
            Ok(requests) => {
                report.requests += requests;
                report.objects_extended += 1;
                report.bytes_extended += e.size;
                report.earliest_until_unix_s = Some(
                    report
                        .earliest_until_unix_s
                        .map_or(e.until_s, |t| t.min(e.until_s)),
                );
                report.latest_until_unix_s = Some(
                    report
                        .latest_until_unix_s
                        .map_or(e.until_s, |t| t.max(e.until_s)),
                );
            }
            Err(msg) => {
                report.requests += 1;
                report.failed += 1;
                report.first_error.get_or_insert(msg);
            }
        }
    }
    report
}

/// One extension; returns the requests it took. The known retention is a lower bound: an
/// object may already be locked longer (a snapshot that needed it longer before, now kept by
/// a shorter rule), and S3 refuses to shorten a retention; then the object's retention is
/// read, and a date at least as late as the one asked for is success.
async fn extend_one(
    lc: &dyn Lifecycle,
    mode: RetentionMode,
    e: &Extension,
) -> std::result::Result<u64, String> {
    let refused = match lc.extend_retention(&e.path, mode, e.until_s).await {
        Ok(()) => return Ok(1),
        Err(err) if err.kind() == opendal::ErrorKind::PermissionDenied => err,
        Err(err) => return Err(format!("{}: {}", e.path, err)),
    };
    match lc.retention(&e.path).await {
        Ok(Some((_, until))) if until >= e.until_s => Ok(2),
        _ => Err(format!("{}: {}", e.path, refused)),
    }
}

/// The ledger that records `needs` as extended by a run that listed at `listed_at_s`.
pub fn new_ledger(needs: &Needs, listed_at_s: i64) -> RetentionLedger {
    let at = listed_at_s - LISTING_SLACK_S;
    RetentionLedger {
        entries: needs
            .snapshots
            .iter()
            .map(|(id, until)| RetentionEntry {
                snapshot: *id,
                locked_until_unix_s: *until,
                extended_at_unix_s: at,
            })
            .collect(),
        metadata_locked_until_unix_s: needs.metadata_until_s,
        metadata_extended_at_unix_s: at,
        wal_locked_until_unix_s: needs.wal_until_s,
        wal_extended_at_unix_s: at,
    }
}

/// One run of extension against storage: lists, plans against `ledger`, extends. Returns
/// the report and, when every extension succeeded, the ledger to store.
pub async fn extend_listed(
    lc: &dyn Lifecycle,
    mode: RetentionMode,
    lock_days: u32,
    now_s: i64,
    needs: &Needs,
    ledger: Option<&RetentionLedger>,
    in_flight: usize,
) -> Result<(ExtendReport, Option<RetentionLedger>)> {
    let listing = list_locked(lc).await?;
    let extensions = plan(&listing, needs, ledger, lock_days);
    let report = execute(lc, mode, &extensions, in_flight).await;
    let ledger = (report.failed == 0).then(|| new_ledger(needs, now_s));
    Ok((report, ledger))
}

/// A kept snapshot with the rules that keep it (none: kept because the policy did not look
/// at it, or because snapshots were forgotten by id).
pub struct Kept<'a> {
    pub id: SnapshotId,
    pub snapshot: &'a Snapshot,
    pub rules: &'a [Rule],
}

/// Who needs each pack and snapshot file, and until when: snapshots walked latest date
/// first (oldest snapshot first among equal dates, so a pack shared by a new snapshot is
/// attributed to an older one whose ledger entry already covers it), sharing one set of
/// seen blobs, so each blob gets the latest date of the snapshots that use it and every tree
/// is read once, as prune reads them.
pub fn attribute(
    repo: &Repository,
    index: &Index,
    kept: &[(SnapshotId, i64, i64, TreeId)],
    wal_blobs: &[BlobId],
    wal_until_s: i64,
) -> Result<HashMap<String, (Owner, i64)>> {
    let mut order: Vec<&(SnapshotId, i64, i64, TreeId)> = kept.iter().collect();
    order.sort_by(|a, b| b.2.cmp(&a.2).then(a.1.cmp(&b.1)).then(a.0.cmp(&b.0)));
    let mut out: HashMap<String, (Owner, i64)> = HashMap::new();
    let mut seen: HashSet<BlobId> = HashSet::new();
    let claim = |blob: &Id, owner: Owner, until: i64, out: &mut HashMap<_, _>| {
        if let Some(loc) = index.get(blob) {
            let path = crate::backend::FileKind::Pack.path(&index.pack(loc.pack).id);
            out.entry(path).or_insert((owner, until));
        }
    };
    let load = |id: &Id| repo.load_tree_in(index, &TreeId(*id));
    for (id, _, until, root) in order {
        let owner = Owner::Snapshot(*id);
        out.insert(crate::backend::FileKind::Snapshot.path(id), (owner, *until));
        if !seen.insert((*root).into()) {
            continue;
        }
        claim(root, owner, *until, &mut out);
        let mut walk = Walker::new(&load, **root);
        while let Some(entry) = walk.next() {
            let node = entry
                .map_err(|e| {
                    Error::other(format!(
                        "cannot read tree {} to extend its retention: {}; run `ocvault check`",
                        e.tree.short(),
                        e.error
                    ))
                })?
                .node;
            for blob in node.content {
                if seen.insert(blob.into()) {
                    claim(&blob, owner, *until, &mut out);
                }
            }
            if let Some(sub) = node.subtree {
                if seen.insert(sub.into()) {
                    claim(&sub, owner, *until, &mut out);
                } else {
                    walk.skip_subtree();
                }
            }
        }
    }
    for blob in wal_blobs {
        if seen.insert(*blob) {
            claim(blob, Owner::Wal, wal_until_s, &mut out);
        }
    }
    Ok(out)
}

/// `forget` on a repository with Object Lock: extends the retention of what the `kept`
/// snapshots need (see the module comment). `None` when the repository has no lock or the
/// storage no lifecycle.
pub fn extend(session: &WriteSession, kept: &[Kept]) -> Result<Option<ExtendReport>> {
    let repo = session.repo();
    let (Some(lock), Some(lc)) = (repo.config().storage.lock, repo.backend().lifecycle()) else {
        return Ok(None);
    };
    let mode = match lock.mode {
        crate::format::LockMode::Governance => RetentionMode::Governance,
        crate::format::LockMode::Compliance => RetentionMode::Compliance,
    };
    // The storage's clock, read before the listing (the ledger covers what it lists).
    let now_s = session
        .storage_now()?
        .unwrap_or_else(crate::host::now_ns)
        .div_euclid(1_000_000_000);
    let needs = needs(repo, kept, now_s, lock.days)?;
    let ledgers = repo.load_all::<RetentionLedger>()?;
    let newest = ledgers
        .intact
        .iter()
        .max_by_key(|(_, l)| l.metadata_extended_at_unix_s)
        .map(|(_, l)| l);
    let backend = repo.backend();
    let (report, ledger) = backend.runtime().block_on(extend_listed(
        lc.as_ref(),
        mode,
        lock.days,
        now_s,
        &needs,
        newest,
        backend.connections(),
    ))?;
    if let Some(ledger) = ledger {
        let new_id = session.save_file(&ledger)?;
        let old = ledgers.intact.iter().map(|(id, _)| *id);
        for id in old.chain(ledgers.damaged.iter().map(|(id, _)| *id)) {
            if id != new_id {
                session.delete_transient::<RetentionLedger>(&id)?;
            }
        }
    }
    Ok(Some(report))
}

/// Each kept snapshot's date, and who needs each object until when.
fn needs(repo: &Repository, kept: &[Kept], now_s: i64, lock_days: u32) -> Result<Needs> {
    let dated: Vec<(SnapshotId, i64, i64, TreeId)> = kept
        .iter()
        .map(|k| {
            let time_s = k.snapshot.time_unix_ns.div_euclid(1_000_000_000);
            let until = keep_until(k.rules, time_s, now_s, lock_days);
            (k.id, time_s, until, k.snapshot.tree)
        })
        .collect();
    let wal_until_s = keep_until(&[], now_s, now_s, lock_days);
    let wal_blobs = crate::wal::catalog::blobs(repo)?;
    let indexed = repo.load_index()?;
    let objects = attribute(repo, indexed.index(), &dated, &wal_blobs, wal_until_s)?;
    Ok(Needs {
        objects,
        snapshots: dated
            .iter()
            .map(|(id, _, until, _)| (*id, *until))
            .collect(),
        metadata_until_s: metadata_until(dated.iter().map(|d| d.2), wal_until_s),
        wal_until_s,
    })
}

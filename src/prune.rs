//! Prune: reclaims the space of blobs no snapshot and no `wal/` record uses, safely beside
//! running backups and WAL pushes, with lock-free two-phase deletion.
//!
//! Phase 1 finds the used blobs, repacks packs that are mostly unused, writes one consolidated
//! index without the packs to drop (superseding the index files it read), and only then records
//! those packs in a prune mark (`prune/<id>`). Phase 2 deletes a mark's packs once the mark is
//! older than the grace period and no backup that started before it is still running (fresh
//! marker in `locks/`); a pack some snapshot turns out to need is put back into the index
//! instead. A crash at any point leaves packs either indexed or marked, never lost.

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::format::{BackupMarker, BlobType, IndexFile, IndexPack, PruneMark};
use crate::id::{BlobId, Id, IndexFileId, PackId, TreeId};
use crate::index::Index;
use crate::index_view::{self, Bits, IndexView, ViewOptions};
use crate::packer::{self, Indexing, Packer, PackerParts};
use crate::repository::{IndexedRepository, Repository};
use crate::session::WriteSession;
use crate::walker::Walker;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Repack packs whose unused share exceeds this percentage.
    pub max_unused_percent: f64,
    /// Repack at most this many bytes of packs.
    pub max_repack_bytes: Option<u64>,
    pub dry_run: bool,
    /// How old a mark must be before its packs are deleted.
    pub grace: Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused_percent: 5.0,
            max_repack_bytes: None,
            dry_run: false,
            grace: Duration::from_secs(0),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    pub used_blobs: u64,
    pub unused_blobs: u64,
    pub packs_to_remove: u64,
    pub packs_to_repack: u64,
    pub bytes_to_remove: u64,
    pub bytes_to_repack: u64,
    pub bytes_repacked_written: u64,
    pub unindexed_packs: u64,
    pub recovered_packs: u64,
    pub packs_deleted: u64,
    pub bytes_deleted: u64,
    pub marks_pending: u64,
    pub index_files_replaced: u64,
    pub dry_run: bool,
    /// Object Lock (S3): old versions of deleted files reclaimed, and those still locked.
    pub versions: Option<crate::retention_lock::reclaim::ReclaimReport>,
    /// Packs in an archive storage class (S3 Glacier, Deep Archive) that no snapshot uses,
    /// kept until their class's minimum storage duration is over (deleting earlier is
    /// charged as if kept), their bytes, and the latest such date (UTC, YYYY-MM-DD).
    pub cold_packs_kept: u64,
    pub cold_bytes_kept: u64,
    pub cold_kept_until: Option<String>,
    /// Partly used packs in an archive class, never repacked (reading them needs a thaw).
    pub cold_packs_not_repacked: u64,
}

/// The storage time of each mark (`None` where the service reports none).
fn mark_times(repo: &Repository, marks: &[Id]) -> Result<HashMap<Id, Option<i64>>> {
    let mut out = HashMap::new();
    for id in marks {
        let t = match repo.backend().modified_ns(&FileKind::PruneMark.path(id)) {
            Ok(t) => t,
            // Finished meanwhile by a concurrent prune: left out, so not judged twice.
            Err(e) if crate::backend::is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        out.insert(*id, t);
    }
    Ok(out)
}

/// The other writers' sessions that still protect what they may use. Stale ones lose their
/// markers here (so they can no longer save anything, see `locks`), yet still count for this
/// run: whatever they wrote before they noticed is then seen by the next prune's listing.
fn running_writers(
    own: &WriteSession,
    now: Option<i64>,
) -> Result<Vec<crate::locks::MarkerSession>> {
    let crate::locks::Markers {
        sessions,
        unreadable,
    } = crate::session::list_sessions(own.repo())?;
    let own_marker = own.first_marker();
    let mut out = Vec::new();
    for s in sessions {
        if s.files.contains(&own_marker) {
            continue;
        }
        if s.is_stale(now) {
            own.remove_marker_session(&s)?;
        }
        out.push(s);
    }
    // Files in locks/ that are no marker of this repository's keys protect nothing; they are
    // removed once old, like a crashed client's.
    for (id, time) in unreadable {
        let old = matches!((now, time), (Some(n), Some(t)) if n - t > crate::locks::stale_after().as_nanos() as i64);
        if old {
            let _ = own.delete_file::<BackupMarker>(&id);
        }
    }
    Ok(out)
}

/// One prune mark; `None` when a concurrent prune finished it between listing and reading.
fn load_mark(repo: &Repository, id: &Id) -> Result<Option<PruneMark>> {
    match repo.load_file::<PruneMark>(id) {
        Ok(m) => Ok(Some(m)),
        Err(e) if crate::backend::is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The blobs snapshots (and WAL records) use: one bit per position of the index they were
/// looked up in, and the few used ids that index lacks (damage).
pub struct UsedBlobs {
    pub bits: Bits,
    pub missing: HashSet<Id>,
}

impl UsedBlobs {
    pub fn new(index: &Index) -> UsedBlobs {
        UsedBlobs {
            bits: Bits::new(index.len()),
            missing: HashSet::new(),
        }
    }

    /// Records a used blob; whether it was not recorded yet.
    pub fn insert(&mut self, index: &Index, id: &Id) -> bool {
        match index.locate(id) {
            Some((pos, _)) => self.bits.insert(pos),
            None => self.missing.insert(*id),
        }
    }

    /// Records many used blobs at once, looked up in id order (`Index::locate_sorted`: on a
    /// large on-disk index each page is mapped once per batch, not once per blob).
    pub fn insert_many(&mut self, index: &Index, ids: &mut Vec<Id>) {
        let (bits, missing) = (&mut self.bits, &mut self.missing);
        index.locate_sorted(ids, |id, hit| match hit {
            Some((pos, _)) => bits.set(pos),
            None => {
                missing.insert(*id);
            }
        });
        ids.clear();
    }

    pub fn contains(&self, index: &Index, id: &Id) -> bool {
        match index.locate(id) {
            Some((pos, _)) => self.bits.get(pos),
            None => self.missing.contains(id),
        }
    }
}

/// File content ids gathered before they are looked up at once (16 MiB of ids). Held at
/// exactly this capacity: a Vec left to grow past 1 Mi ids reached 1.6 Mi (50 MiB). `check`
/// of 2 M blobs: heap peak 85.6 MB before, 51.3 MB with this, in the same time; 256 Ki ids
/// were slower (benches/README.md, "Scale").
const USED_BATCH: usize = 1 << 19;

/// Every blob reachable from the snapshots (trees and file contents), over `index`.
pub fn used_blobs(repo: &Repository, index: &Index, roots: &[TreeId]) -> Result<UsedBlobs> {
    used_blobs_with(repo, index, roots, &mut |e| {
        Err(Error::other(format!(
            "cannot read tree {}: {}; run `ocvault check` — prune stops rather than guess",
            e.tree.short(),
            e.error
        )))
    })
}

/// [`used_blobs`] with the caller deciding about a tree that cannot be read: stop (an
/// error), or go on without what is below it (`check`, which reports it on its own walk).
pub fn used_blobs_with(
    repo: &Repository,
    index: &Index,
    roots: &[TreeId],
    on_unreadable: &mut dyn FnMut(crate::walker::WalkError) -> Result<()>,
) -> Result<UsedBlobs> {
    let load = |id: &Id| repo.load_tree_in(index, &TreeId(*id));
    used_blobs_loading(index, roots, &load, on_unreadable)
}

/// [`used_blobs_with`] reading trees with `load` (check shares a cache of decoded trees).
pub fn used_blobs_loading(
    index: &Index,
    roots: &[TreeId],
    load: &dyn Fn(&Id) -> Result<crate::format::Tree>,
    on_unreadable: &mut dyn FnMut(crate::walker::WalkError) -> Result<()>,
) -> Result<UsedBlobs> {
    let mut used = UsedBlobs::new(index);
    // File contents are looked up in batches, trees at once (the walk skips what it has seen).
    let mut contents: Vec<Id> = Vec::with_capacity(USED_BATCH);
    for root in roots {
        if !used.insert(index, &root.0) {
            continue;
        }
        let mut walk = Walker::new(load, **root);
        while let Some(entry) = walk.next() {
            let node = match entry {
                Ok(e) => e.node,
                Err(e) => {
                    on_unreadable(e)?;
                    continue;
                }
            };
            for c in &node.content {
                if contents.len() == USED_BATCH {
                    used.insert_many(index, &mut contents);
                }
                contents.push(c.0);
            }
            // A tree already seen: everything below it is counted.
            if node.subtree.is_some_and(|s| !used.insert(index, &s.0)) {
                walk.skip_subtree();
            }
        }
    }
    used.insert_many(index, &mut contents);
    Ok(used)
}

/// The blobs every `wal/` record names (`wal::catalog::blobs`), strictly: prune stops on a
/// record it cannot read.
fn wal_blobs(repo: &Repository) -> Result<Vec<BlobId>> {
    crate::wal::catalog::blobs(repo).map_err(refuse)
}

/// Prunes under `session`'s marker: a prune writes packs and index files like a backup, and
/// holds a marker like one, so a second prune running at the same time treats it as a running
/// backup (§11a).
pub fn prune(session: &WriteSession, opts: &PruneOptions) -> Result<PruneReport> {
    prune_in(session.repo(), Some(session), opts).map_err(|e| {
        // A prune judged stale by another one finds its view of the repository outdated
        // (packs gone): say why, not which file was missing.
        match session.ensure_held() {
            Ok(()) => e,
            Err(lost) => lost,
        }
    })
}

/// What [`prune`] would do, changing nothing.
pub fn prune_dry_run(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    prune_in(repo, None, opts)
}

fn prune_in(
    repo: &Repository,
    session: Option<&WriteSession>,
    opts: &PruneOptions,
) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run || session.is_none(),
        ..Default::default()
    };
    let view = View::read(repo)?;
    let mut used = used_blobs(repo, &view.index.readable, &view.roots)?;
    for b in &view.wal_blobs {
        used.insert(&view.index.readable, &b.0);
    }
    let usage = Usage::of(&view, used)?;
    let plan = Plan::make(repo, &view, &usage, opts, &mut report)?;
    let Some(session) = session.filter(|_| !opts.dry_run) else {
        report.marks_pending = view.index.marks.len() as u64;
        return Ok(report);
    };
    replace_index(session, &view, &usage.live, plan, &mut report)?;

    // Phase 2.
    crate::interrupt::check()?;
    // The storage's current time, read once for the marks, the markers and `tmp/`.
    let now = session.storage_now()?;
    let (deleted, bytes, pending) = delete_marked(session, now, opts.grace)?;
    report.packs_deleted = deleted;
    report.bytes_deleted = bytes;
    report.marks_pending = pending;
    session.remove_stale_temp_files(now);
    report.versions = reclaim_versions(repo, now)?;
    Ok(report)
}

/// On a repository with Object Lock: deletes the versions of deleted files whose retention
/// is over (`retention_lock::reclaim`), by the storage's clock `now` (ns).
fn reclaim_versions(
    repo: &Repository,
    now: Option<i64>,
) -> Result<Option<crate::retention_lock::reclaim::ReclaimReport>> {
    let backend = repo.backend();
    let (Some(_), Some(lc)) = (repo.config().storage.lock, backend.lifecycle()) else {
        return Ok(None);
    };
    let now_s = now
        .unwrap_or_else(crate::host::now_ns)
        .div_euclid(1_000_000_000);
    let reclaimed = backend
        .runtime()
        .block_on(crate::retention_lock::reclaim::reclaim(
            lc.as_ref(),
            now_s,
            false,
            backend.connections(),
        ))?;
    Ok(Some(reclaimed))
}

/// What phase 1 reads: the snapshots' root trees, the `wal/` records' blobs, and the index
/// files and prune marks with the indexes made of them.
struct View {
    roots: Vec<TreeId>,
    /// The blocks the `wal/` records name: live like the snapshots' blobs.
    wal_blobs: Vec<BlobId>,
    /// The readable index (live, marked and superseded packs: for finding what snapshots
    /// use), the ids of the index files read, and the marks.
    index: IndexView,
    /// Live pack numbers by id.
    live_numbers: HashMap<PackId, u32>,
    /// Packs in an archive storage class, on storage with classes (S3).
    tiers: Option<std::sync::Arc<crate::cold::Tiers>>,
}

impl View {
    /// The index of the live files: what stays findable.
    fn live(&self) -> &Index {
        self.index.live()
    }

    fn read(repo: &Repository) -> Result<View> {
        // Snapshots before index files: a snapshot is saved only after its index, so every
        // snapshot listed here has its blobs in the index files read next. Snapshots saved
        // later come from backups whose markers make phase 2 wait for them.
        // Strictly: prune cannot know what a snapshot it cannot read uses, nor which packs an
        // index file it cannot read lists, so it stops rather than delete them.
        let snaps = repo.list_snapshots_strict().map_err(refuse)?;
        let roots: Vec<TreeId> = snaps.iter().map(|(_, s)| s.tree).collect();
        drop(snaps);
        // WAL records likewise: a push saves its records after its index files.
        let wal_blobs = wal_blobs(repo)?;
        // Archived packs resolve last: a blob a snapshot stored again (hot) is used there,
        // and its archived copy counts as unused.
        let tiers = crate::cold::Tiers::list(repo.backend())?;
        let archived = |id: &PackId| tiers.as_ref().is_some_and(|t| t.is_archived(id));
        let digest =
            || crate::index::load::tiers_digest(tiers.iter().flat_map(|t| t.archived_ids()));
        let index = index_view::load(
            repo,
            &ViewOptions {
                tiers: Some(&digest),
                use_cache: true,
                strict: true,
                live: true,
                archived: &archived,
                readable_extra: &|_| true,
            },
        )
        .map_err(refuse)?;
        let live_numbers = (index.live().packs().iter().enumerate())
            .map(|(n, p)| (p.id, n as u32))
            .collect();
        Ok(View {
            roots,
            wal_blobs,
            index,
            live_numbers,
            tiers,
        })
    }
}

/// What the snapshots use, over the live index (one bit per position), and the packs
/// outside it that hold used blobs it lacks (to be put back into the index).
struct Usage {
    live: Bits,
    recover: HashSet<PackId>,
}

impl Usage {
    /// Moves `used` (over the readable index) onto the live index: both list blobs in id
    /// order, and every live blob is readable, so one merge of the two does it.
    fn of(view: &View, used: UsedBlobs) -> Result<Usage> {
        if let Some(id) = used.missing.iter().next() {
            return Err(Error::other(format!(
                "blob {} is used by a snapshot or WAL record but stored nowhere; run `ocvault check`",
                id.short()
            )));
        }
        let readable = &view.index.readable;
        if std::ptr::eq(readable, view.live()) {
            return Ok(Usage {
                live: used.bits,
                recover: HashSet::new(),
            });
        }
        let mut live_used = Bits::new(view.live().len());
        let mut recover = HashSet::new();
        // In id order on both sides (`iter_by_id`; position order is not id order).
        let mut live = view
            .live()
            .iter_by_id()
            .map(|(lpos, l, loc)| (lpos, (l, loc)))
            .peekable();
        for (pos, id, loc) in readable.iter_by_id() {
            if !used.bits.get(pos) {
                continue;
            }
            while live.next_if(|(_, (l, _))| *l < id).is_some() {}
            match live.peek() {
                Some((lpos, (l, _))) if *l == id => live_used.set(*lpos),
                _ => {
                    recover.insert(readable.pack(loc.pack).id);
                }
            }
        }
        Ok(Usage {
            live: live_used,
            recover,
        })
    }
}

/// What phase 1 decided about packs. Live packs by number only: their entries (blob lists)
/// are read again from the index files when needed, so none is held for long.
struct Plan {
    /// Live packs no snapshot uses.
    remove: Bits,
    /// Live packs to repack.
    repack: Bits,
    /// Packs a snapshot needs that only a mark holds: back into the index.
    recovered: Vec<IndexPack>,
    /// Packs in no index and no mark: a crashed backup's leftovers or a running backup's work.
    unindexed: Vec<IndexPack>,
}

impl Plan {
    fn make(
        repo: &Repository,
        view: &View,
        usage: &Usage,
        opts: &PruneOptions,
        report: &mut PruneReport,
    ) -> Result<Plan> {
        let recovered = view.index.readable_entries(repo, &usage.recover)?;
        report.recovered_packs = recovered.len() as u64;
        let cold = ColdRule::new(view.tiers.as_deref());
        let (remove, repack) = choose_packs(repo, view, &usage.live, opts, &cold, report)?;
        // Live, marked, and packs of superseded index files: all readable.
        let known: HashSet<PackId> = view.index.readable.packs().iter().map(|p| p.id).collect();
        let mut unindexed = Vec::new();
        for (id, size) in repo.backend().list_ids(FileKind::Pack)? {
            let id = PackId(id);
            if !known.contains(&id) && cold.may_delete(&id, report) {
                unindexed.push(IndexPack {
                    id,
                    blob_type: BlobType::Data,
                    size,
                    blobs: vec![],
                });
            }
        }
        report.unindexed_packs = unindexed.len() as u64;
        Ok(Plan {
            remove,
            repack,
            recovered,
            unindexed,
        })
    }
}

/// The live packs to remove (nothing used) and to repack (more unused than allowed), within
/// the repack budget; counts them in `report`.
fn choose_packs(
    repo: &Repository,
    view: &View,
    used: &Bits,
    opts: &PruneOptions,
    cold: &ColdRule,
    report: &mut PruneReport,
) -> Result<(Bits, Bits)> {
    let live = view.live();
    let counts = usage_per_pack(repo, view, used)?;
    let mut remove = Bits::new(live.packs().len());
    let mut repack: Vec<(u32, f64)> = Vec::new();
    for (n, p) in live.packs().iter().enumerate() {
        // A pack whose index file a prune beside this one replaced meanwhile: left alone.
        let Some(PackCounts {
            used: un,
            used_bytes: ub,
            unused: nn,
            unused_bytes: nb,
        }) = counts[n]
        else {
            continue;
        };
        report.used_blobs += un;
        report.unused_blobs += nn;
        if un == 0 {
            if cold.may_delete(&p.id, report) {
                remove.set(n);
                report.packs_to_remove += 1;
                report.bytes_to_remove += p.size;
            }
        } else if nn > 0 && p.archived {
            report.cold_packs_not_repacked += 1;
        } else if nn > 0 {
            let share = nb as f64 * 100.0 / (ub + nb) as f64;
            if share > opts.max_unused_percent {
                repack.push((n as u32, share));
            }
        }
    }
    repack.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    if let Some(limit) = opts.max_repack_bytes {
        let mut total = 0;
        repack.retain(|(n, _)| {
            total += live.pack(*n).size;
            total <= limit
        });
    }
    report.packs_to_repack = repack.len() as u64;
    report.bytes_to_repack = repack.iter().map(|(n, _)| live.pack(*n).size).sum();
    let mut chosen = Bits::new(live.packs().len());
    for (n, _) in repack {
        chosen.set(n as usize);
    }
    Ok((remove, chosen))
}

/// When prune may delete a pack in an archive class: once its class's minimum storage
/// duration is over (S3 charges the rest of it on an earlier delete).
struct ColdRule<'a> {
    tiers: Option<&'a crate::cold::Tiers>,
    now_unix_s: i64,
}

impl<'a> ColdRule<'a> {
    fn new(tiers: Option<&'a crate::cold::Tiers>) -> Self {
        ColdRule {
            tiers,
            now_unix_s: crate::host::now_ns() / 1_000_000_000,
        }
    }

    /// Whether an unused pack may be deleted now; a kept one is counted in `report`.
    fn may_delete(&self, id: &PackId, report: &mut PruneReport) -> bool {
        let Some(a) = self.tiers.and_then(|t| t.get(id)) else {
            return true;
        };
        let until = a.min_storage_until();
        if until <= self.now_unix_s {
            return true;
        }
        report.cold_packs_kept += 1;
        report.cold_bytes_kept += a.size;
        let date = chrono::DateTime::from_timestamp(until, 0)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        if report.cold_kept_until.as_ref().is_none_or(|d| *d < date) {
            report.cold_kept_until = Some(date);
        }
        false
    }
}

/// Repacks, writes one consolidated index of what stays (superseding every index file read),
/// marks what left the index, then deletes the superseded index files. The live index files
/// are read twice more, a few at a time (repack and consolidated index, then the marks), so
/// no pass holds more than a few files' entries.
fn replace_index(
    session: &WriteSession,
    view: &View,
    used: &Bits,
    plan: Plan,
    report: &mut PruneReport,
) -> Result<()> {
    let repo = session.repo();
    let live = view.live();
    let loaded_ids = &view.index.files;
    let dropping = plan.remove.count() > 0 || plan.repack.count() > 0;
    let changed = dropping || report.recovered_packs > 0 || loaded_ids.len() > 1;
    let mut retired = Bits::new(live.packs().len());
    if changed {
        // Repacked packs are indexed as they are uploaded, in index files of their own (not
        // superseded here), as a backup's are. The kept live packs are written in parts as
        // they come; only the last part names the files it supersedes, so a crash never
        // unindexes a pack.
        let save_index = |f: &IndexFile| session.save_file(f).map(Id::from);
        let parts = PackerParts::for_repack(
            session,
            live,
            Indexing::Every(packer::PACKS_PER_INDEX, &save_index),
        );
        let mut out = Consolidated::new(session);
        let mut seen = Bits::new(live.packs().len());
        let (walked, packed) = packer::run(parts, |packer| {
            view.index.for_each_pack(repo, false, |p| {
                let n = view.live_numbers[&p.id] as usize;
                if !seen.insert(n) || plan.remove.get(n) {
                    return Ok(());
                }
                if plan.repack.get(n) {
                    crate::interrupt::check()?;
                    repack_one(repo, live, n as u32, p, used, packer)?;
                    retired.set(n);
                    return Ok(());
                }
                out.push(p.clone())
            })
        });
        walked?;
        report.bytes_repacked_written = packed?.bytes_added;
        for p in plan.recovered {
            out.push(p)?;
        }
        out.finish(loaded_ids)?;
        report.index_files_replaced = loaded_ids.len() as u64;
    }

    // Mark what left the index (read again: the superseded files are still there), then
    // delete the superseded index files.
    let mut marks = Marks::new(session);
    if dropping {
        let mut seen = Bits::new(live.packs().len());
        view.index.for_each_pack(repo, false, |p| {
            let n = view.live_numbers[&p.id] as usize;
            if (plan.remove.get(n) || retired.get(n)) && seen.insert(n) {
                marks.push(p.clone())?;
            }
            Ok(())
        })?;
    }
    for p in plan.unindexed {
        marks.push(p)?;
    }
    marks.finish()?;
    if changed {
        for id in loaded_ids {
            session.delete_file::<IndexFile>(id)?;
        }
    }
    Ok(())
}

/// Prune marks written in parts of at most `BLOBS_PER_INDEX_FILE` blobs (all with one time),
/// so that no reader of a mark holds more than one part's blob lists.
struct Marks<'a> {
    session: &'a WriteSession<'a>,
    marked_unix_ns: i64,
    parts: Parts,
}

impl<'a> Marks<'a> {
    fn new(session: &'a WriteSession<'a>) -> Self {
        Marks {
            session,
            marked_unix_ns: crate::host::now_ns(),
            parts: Parts::default(),
        }
    }

    fn push(&mut self, pack: IndexPack) -> Result<()> {
        match self.parts.push(pack) {
            Some(full) => self.save(full),
            None => Ok(()),
        }
    }

    fn save(&self, packs: Vec<IndexPack>) -> Result<()> {
        self.session.save_file(&PruneMark {
            marked_unix_ns: self.marked_unix_ns,
            packs,
        })?;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        let rest = std::mem::take(&mut self.parts.part);
        match rest.is_empty() {
            true => Ok(()),
            false => self.save(rest),
        }
    }
}

/// Pack entries gathered into parts of at most `BLOBS_PER_INDEX_FILE` blobs (a pack with more
/// is a part of its own), for [`Consolidated`] and [`Marks`] to save as they fill.
#[derive(Default)]
struct Parts {
    part: Vec<IndexPack>,
    blobs: usize,
}

impl Parts {
    /// Adds `pack`; returns the full part to save first when `pack` would take it past the
    /// limit.
    fn push(&mut self, pack: IndexPack) -> Option<Vec<IndexPack>> {
        let full = (self.blobs + pack.blobs.len() > BLOBS_PER_INDEX_FILE && !self.part.is_empty())
            .then(|| {
                self.blobs = 0;
                std::mem::take(&mut self.part)
            });
        self.blobs += pack.blobs.len();
        self.part.push(pack);
        full
    }
}

/// Why prune stops on a damaged file, in one line.
fn refuse(e: Error) -> Error {
    match e {
        Error::Corrupt { .. } => Error::other(format!("{e} — prune stops rather than guess")),
        e => e,
    }
}

/// Used and unused blobs and their bytes, of one pack.
#[derive(Clone, Copy, Default)]
struct PackCounts {
    used: u64,
    used_bytes: u64,
    unused: u64,
    unused_bytes: u64,
}

/// Per live pack number, its [`PackCounts`] (`None` for a pack whose index file was gone when
/// read again). A blob stored twice (two backups stored it at once) is used only where the
/// index resolves it; every other copy counts as unused, so a pack holding a second copy is
/// repacked without it. The used copies come from one pass over the index in position order
/// (sequential reads of the mapped file, not a lookup per blob); the totals from the index
/// files, read again a few at a time.
fn usage_per_pack(repo: &Repository, view: &View, used: &Bits) -> Result<Vec<Option<PackCounts>>> {
    let live = view.live();
    let mut used_per_pack = vec![(0u64, 0u64); live.packs().len()];
    for (pos, (_, loc)) in live.iter().enumerate() {
        if used.get(pos) {
            let u = &mut used_per_pack[loc.pack as usize];
            u.0 += 1;
            u.1 += loc.length as u64;
        }
    }
    let mut counts = vec![None; live.packs().len()];
    view.index.for_each_pack(repo, false, |p| {
        let n = view.live_numbers[&p.id] as usize;
        if counts[n].is_some() {
            // A pack listed twice counts once.
            return Ok(());
        }
        let bytes: u64 = p.blobs.iter().map(|b| b.length as u64).sum();
        let (used, used_bytes) = used_per_pack[n];
        counts[n] = Some(PackCounts {
            used,
            used_bytes,
            // Saturating: a pack two index files list differently may resolve more blobs
            // than one listing holds; used counts come from the index, so it stays used.
            unused: (p.blobs.len() as u64).saturating_sub(used),
            unused_bytes: bytes.saturating_sub(used_bytes),
        });
        Ok(())
    })?;
    Ok(counts)
}

/// Copies the used blobs of pack number `n` (listed by `entry`) into the packer, as they are
/// (sealed).
fn repack_one(
    repo: &Repository,
    live: &Index,
    n: u32,
    entry: &IndexPack,
    used: &Bits,
    packer: &Packer,
) -> Result<()> {
    let path = FileKind::Pack.path(&entry.id);
    let bytes = repo.backend().read(&path)?;
    if Id::of_stored_bytes(&bytes) != *entry.id {
        return Err(Error::corrupt(
            path,
            "content does not match its name; run `ocvault check`",
        ));
    }
    for b in &entry.blobs {
        // Each used blob once: the copy the index resolves it to. Another copy (in this
        // pack or in another) would give the new pack two header entries for one id.
        if !is_used_copy(live, used, n, b) {
            continue;
        }
        let sealed = bytes
            .get(b.offset as usize..b.offset as usize + b.length as usize)
            .ok_or_else(|| Error::corrupt(path.clone(), "blob past the end"))?;
        packer.store_sealed(entry.blob_type, *b.id, b.raw_length, sealed.to_vec())?;
    }
    Ok(())
}

/// Whether `blob`, listed in pack number `pack` of `live`, is the copy `live` resolves its id
/// to (a blob stored twice resolves to one copy only), and used (`used`: bits over `live`).
fn is_used_copy(live: &Index, used: &Bits, pack: u32, blob: &crate::format::PackedBlob) -> bool {
    live.locate(&blob.id)
        .is_some_and(|(pos, l)| l.pack == pack && l.offset == blob.offset && used.get(pos))
}

const BLOBS_PER_INDEX_FILE: usize = 100_000;

/// A consolidated index written as packs come: a part is saved whenever the next pack would
/// take it past `BLOBS_PER_INDEX_FILE` blobs; the last part, saved by [`Consolidated::finish`],
/// names the files it supersedes.
pub(crate) struct Consolidated<'a> {
    session: &'a WriteSession<'a>,
    parts: Parts,
}

impl<'a> Consolidated<'a> {
    pub fn new(session: &'a WriteSession<'a>) -> Self {
        Consolidated {
            session,
            parts: Parts::default(),
        }
    }

    pub fn push(&mut self, pack: IndexPack) -> Result<()> {
        if let Some(packs) = self.parts.push(pack) {
            self.session.save_file(&IndexFile {
                supersedes: vec![],
                packs,
            })?;
        }
        Ok(())
    }

    pub fn finish(self, supersedes: &[IndexFileId]) -> Result<()> {
        self.session.save_file(&IndexFile {
            supersedes: supersedes.to_vec(),
            packs: self.parts.part,
        })?;
        Ok(())
    }
}

/// Writes `packs` as one consolidated index superseding `supersedes` (see [`Consolidated`]).
pub(crate) fn write_consolidated(
    session: &WriteSession,
    packs: Vec<IndexPack>,
    supersedes: &[IndexFileId],
) -> Result<()> {
    let mut out = Consolidated::new(session);
    for p in packs {
        out.push(p)?;
    }
    out.finish(supersedes)
}

/// Which marked packs a snapshot still needs (a backup that ran during the prune may have
/// used their blobs): only blobs the live index lacks make a pack worth keeping (a repacked
/// pack's used blobs live on in the new pack).
enum MarkedInUse<'r> {
    /// Every tree was found in the live index: the used blobs it lacks are `missing` (none,
    /// unless a backup ran beside the prune); no mark's blobs need indexing.
    Live { live: Index, missing: HashSet<Id> },
    /// A tree is only in a marked pack (or unreadable): the read index, with every marked
    /// pack's blobs, and the used blobs over it.
    Read {
        indexed: Box<IndexedRepository<'r>>,
        used: UsedBlobs,
    },
}

impl<'r> MarkedInUse<'r> {
    fn find(repo: &'r Repository, roots: &[TreeId], wal: &[BlobId]) -> Result<Self> {
        let live = repo.load_live_index()?;
        let mut tree_outside = false;
        let mut used = used_blobs_with(repo, &live, roots, &mut |_| {
            tree_outside = true;
            Ok(())
        })?;
        if !tree_outside {
            for b in wal {
                used.insert(&live, &b.0);
            }
            return Ok(MarkedInUse::Live {
                live,
                missing: used.missing,
            });
        }
        drop(used);
        let indexed = repo.load_index()?;
        let mut used = used_blobs(repo, indexed.index(), roots)?;
        for b in wal {
            used.insert(indexed.index(), &b.0);
        }
        Ok(MarkedInUse::Read {
            indexed: Box::new(indexed),
            used,
        })
    }

    fn live(&self) -> &Index {
        match self {
            MarkedInUse::Live { live, .. } => live,
            MarkedInUse::Read { indexed, .. } => indexed.live_index(),
        }
    }

    /// Whether the marked pack `p` holds a used blob the live index lacks.
    fn needs(&self, p: &IndexPack) -> bool {
        match self {
            MarkedInUse::Live { missing, .. } => {
                !missing.is_empty() && p.blobs.iter().any(|b| missing.contains(&b.id))
            }
            MarkedInUse::Read { indexed, used } => p.blobs.iter().any(|b| {
                used.contains(indexed.index(), &b.id) && !indexed.live_index().contains(&b.id)
            }),
        }
    }
}

/// Phase 2: deletes the packs of marks that are old enough and that no running writer may
/// predate, all judged by the storage's clock (§11a). Returns (packs deleted, bytes deleted,
/// marks still pending).
fn delete_marked(
    session: &WriteSession,
    now: Option<i64>,
    grace: Duration,
) -> Result<(u64, u64, u64)> {
    let repo = session.repo();
    // Marks are read one at a time (a big prune writes several), keeping only what is
    // decided per pack, never every mark's blob lists at once.
    let ids: Vec<Id> = (repo.backend().list_ids(FileKind::PruneMark)?.into_iter())
        .map(|(id, _)| id)
        .collect();
    let mark_times = mark_times(repo, &ids)?;
    // Order matters: first make sure every writer that may predate a mark has ended (its
    // marker goes only after its snapshot is saved), then list the snapshots, so each snapshot
    // that may use a marked pack is seen below.
    let writers = running_writers(session, now)?;
    if mark_times.is_empty() {
        return Ok((0, 0, 0));
    }
    let (ready, waiting): (Vec<Id>, Vec<Id>) = (ids.into_iter())
        .filter(|id| mark_times.contains_key(id))
        .partition(|id| {
            let time = mark_times[id];
            let old_enough = match (now, time) {
                (Some(now), Some(t)) => now - t >= grace.as_nanos() as i64,
                // No storage times: only a zero grace can be judged.
                _ => grace.is_zero(),
            };
            old_enough && !writers.iter().any(|w| w.may_predate(time))
        });
    let pending = waiting.len() as u64;
    if ready.is_empty() {
        return Ok((0, 0, pending));
    }
    // A pack can be in several marks (taken out, put back, taken out again): a mark still
    // waiting for a running backup protects it even when an older mark is ready.
    let mut protected: HashSet<PackId> = HashSet::new();
    for id in &waiting {
        if let Some(m) = load_mark(repo, id)? {
            protected.extend(m.packs.iter().map(|p| p.id));
        }
    }
    // Snapshots first, then the index they were indexed in (see phase 1).
    let roots: Vec<TreeId> = repo
        .list_snapshots()?
        .into_iter()
        .map(|(_, s)| s.tree)
        .collect();
    // And the WAL archived meanwhile (a wal-push holds a marker like a backup).
    let wal = wal_blobs(repo)?;
    let keep = MarkedInUse::find(repo, &roots, &wal)?;
    let live_packs: HashSet<PackId> = keep.live().packs().iter().map(|p| p.id).collect();

    // A marked pack a snapshot uses (a backup finished during the prune) goes back into the
    // index; the others are deleted. The same pack in several ready marks is judged by the
    // entry that lists its blobs (a mark of a pack that was in no index at the time lists
    // none); one listed only without blobs is deleted.
    let mut recover = Vec::new();
    let mut doomed: Vec<(PackId, u64)> = Vec::new();
    let mut judged: HashSet<PackId> = HashSet::new();
    let mut blobless: HashMap<PackId, u64> = HashMap::new();
    for id in &ready {
        let Some(mark) = load_mark(repo, id)? else {
            continue;
        };
        for p in mark.packs {
            if live_packs.contains(&p.id) || protected.contains(&p.id) || judged.contains(&p.id) {
                continue;
            }
            if p.blobs.is_empty() {
                blobless.entry(p.id).or_insert(p.size);
                continue;
            }
            judged.insert(p.id);
            if keep.needs(&p) {
                recover.push(p);
            } else {
                doomed.push((p.id, p.size));
            }
        }
    }
    doomed.extend(blobless.into_iter().filter(|(id, _)| !judged.contains(id)));
    if !recover.is_empty() {
        session.save_file(&IndexFile {
            supersedes: vec![],
            packs: recover,
        })?;
    }
    let (mut deleted, mut bytes) = (0, 0);
    for (id, size) in &doomed {
        match session.delete_pack(id) {
            Ok(()) => {
                deleted += 1;
                bytes += size;
            }
            Err(e) if crate::backend::is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    for mark_id in &ready {
        session.delete_transient::<PruneMark>(mark_id)?;
    }
    Ok((deleted, bytes, pending))
}

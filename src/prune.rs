//! Prune: reclaims the space of blobs no snapshot uses, safely beside running backups, with
//! lock-free two-phase deletion.
//!
//! Phase 1 finds the used blobs, repacks packs that are mostly unused, writes one consolidated
//! index without the packs to drop (superseding the index files it read), and only then records
//! those packs in a prune mark (`prune/<id>`). Phase 2 deletes a mark's packs once the mark is
//! older than the grace period and no backup that started before it is still running (fresh
//! marker in `locks/`); a pack some snapshot turns out to need is put back into the index
//! instead. A crash at any point leaves packs either indexed or marked, never lost.

use crate::backend::FileKind;
use crate::crypto::SealKind;
use crate::error::{Error, Result};
use crate::format::{BlobType, IndexFile, IndexPack, PruneMark};
use crate::id::Id;
use crate::index::Index;
use crate::pack::PackBuilder;
use crate::repository::Repository;
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
}

fn load_marks(repo: &Repository) -> Result<Vec<(Id, PruneMark)>> {
    let mut out = Vec::new();
    for (id, _) in repo.backend.list_ids(FileKind::PruneMark)? {
        out.push((
            id,
            repo.load_file(FileKind::PruneMark, SealKind::PruneMark, &id)?,
        ));
    }
    Ok(out)
}

/// Every blob id reachable from the snapshots (trees and file contents).
pub fn used_blobs(repo: &Repository, index: &Index, roots: &[Id]) -> Result<HashSet<Id>> {
    let mut used = HashSet::new();
    let mut stack: Vec<Id> = roots.to_vec();
    while let Some(t) = stack.pop() {
        if !used.insert(t) {
            continue;
        }
        let tree = repo.load_tree(index, &t).map_err(|e| {
            Error::other(format!(
                "cannot read tree {}: {e}; run `ocvault check` — prune stops rather than guess",
                t.short()
            ))
        })?;
        for n in tree.nodes {
            used.extend(n.content);
            if let Some(s) = n.subtree {
                stack.push(s);
            }
        }
    }
    Ok(used)
}

pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    // Snapshots before index files: a snapshot is saved only after its index, so every
    // snapshot listed here has its blobs in the index files read next. Snapshots saved later
    // come from backups whose markers make phase 2 wait for them.
    let snaps = repo.list_snapshots()?;
    let roots: Vec<Id> = snaps.iter().map(|(_, s)| s.tree).collect();
    // Index files as loaded, with ids, so the consolidated index can supersede exactly them.
    let files = repo.load_index_files()?;
    let loaded_ids: Vec<Id> = files.iter().map(|(id, _)| *id).collect();
    let marks = load_marks(repo)?;
    let live = Index::build(&files, &[]);
    let live_pack_ids: HashSet<Id> = live.packs().iter().map(|p| p.id).collect();

    // Everything readable, marked packs included, for finding what snapshots use.
    let marked: HashMap<Id, IndexPack> = Repository::marked_packs(&marks)
        .into_iter()
        .filter(|p| !live_pack_ids.contains(&p.id))
        .map(|p| (p.id, p))
        .collect();
    let marked_list: Vec<IndexPack> = marked.values().cloned().collect();
    let readable = Index::build(&files, &marked_list);
    drop(marked_list);

    let used = used_blobs(repo, &readable, &roots)?;

    // Packs a snapshot needs that only a mark holds go back into the index.
    let mut recovered: Vec<IndexPack> = Vec::new();
    let mut recovered_ids = HashSet::new();
    for id in &used {
        if live.contains(id) {
            continue;
        }
        let loc = readable.get(id).ok_or_else(|| {
            Error::other(format!(
                "blob {} is used by a snapshot but stored nowhere; run `ocvault check`",
                id.short()
            ))
        })?;
        let pid = readable.pack(loc.pack).id;
        if recovered_ids.insert(pid) {
            recovered.push(marked[&pid].clone());
        }
    }
    report.recovered_packs = recovered.len() as u64;

    // Classify live packs by how much of them is used.
    let mut per_pack: HashMap<u32, (u64, u64, u64, u64)> = HashMap::new(); // used n, used bytes, unused n, unused bytes
    for (id, loc) in live.iter() {
        let e = per_pack.entry(loc.pack).or_default();
        if used.contains(&id) {
            e.0 += 1;
            e.1 += loc.length as u64;
        } else {
            e.2 += 1;
            e.3 += loc.length as u64;
        }
    }
    let mut remove: Vec<IndexPack> = Vec::new();
    let mut repack: Vec<(u32, f64)> = Vec::new();
    let index_packs: HashMap<Id, &IndexPack> = files
        .iter()
        .flat_map(|(_, f)| f.packs.iter())
        .map(|p| (p.id, p))
        .collect();
    for (n, p) in live.packs().iter().enumerate() {
        let (un, ub, nn, nb) = per_pack.get(&(n as u32)).copied().unwrap_or_default();
        report.used_blobs += un;
        report.unused_blobs += nn;
        if un == 0 {
            remove.push((*index_packs[&p.id]).clone());
            report.bytes_to_remove += p.size;
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
    report.packs_to_remove = remove.len() as u64;
    report.packs_to_repack = repack.len() as u64;
    report.bytes_to_repack = repack.iter().map(|(n, _)| live.pack(*n).size).sum();

    // Packs in no index and no mark: a crashed backup's leftovers or a running backup's work.
    let mut unindexed = Vec::new();
    for (id, size) in repo.backend.list_ids(FileKind::Pack)? {
        if !live_pack_ids.contains(&id) && !marked.contains_key(&id) {
            unindexed.push(IndexPack {
                id,
                blob_type: BlobType::Data,
                size,
                blobs: vec![],
            });
        }
    }
    report.unindexed_packs = unindexed.len() as u64;
    if opts.dry_run {
        report.marks_pending = marks.len() as u64;
        return Ok(report);
    }

    // Repack: copy the used sealed blobs as they are into new packs.
    let mut new_packs: Vec<IndexPack> = Vec::new();
    let target = repo.config.pack_target_size as usize;
    let mut builders: HashMap<BlobType, PackBuilder> = HashMap::new();
    let flush = |b: PackBuilder, out: &mut Vec<IndexPack>| -> Result<()> {
        let (bytes, entry) = b.finish(&repo.keys);
        repo.backend.write(&FileKind::Pack.path(&entry.id), bytes)?;
        out.push(entry);
        Ok(())
    };
    let mut retired: Vec<IndexPack> = Vec::new();
    for (n, _) in &repack {
        crate::interrupt::check()?;
        let info = live.pack(*n);
        let bytes = repo.backend.read(&FileKind::Pack.path(&info.id))?;
        if Id::of_stored_bytes(&bytes) != info.id {
            return Err(Error::corrupt(
                FileKind::Pack.path(&info.id),
                "content does not match its name; run `ocvault check`",
            ));
        }
        let entry = index_packs[&info.id];
        for b in &entry.blobs {
            if !used.contains(&b.id) {
                continue;
            }
            let sealed = bytes
                .get(b.offset as usize..b.offset as usize + b.length as usize)
                .ok_or_else(|| {
                    Error::corrupt(FileKind::Pack.path(&info.id), "blob past the end")
                })?;
            let builder = builders
                .entry(info.blob_type)
                .or_insert_with(|| PackBuilder::new(info.blob_type, target + (1 << 20)));
            builder.add(b.id, b.raw_length, sealed);
            if builder.len() >= target {
                let full = builders.remove(&info.blob_type).unwrap();
                flush(full, &mut new_packs)?;
            }
        }
        retired.push(entry.clone());
    }
    for (_, b) in builders.drain() {
        if !b.is_empty() {
            flush(b, &mut new_packs)?;
        }
    }
    report.bytes_repacked_written = new_packs.iter().map(|p| p.size).sum();

    // One consolidated index of what stays, superseding every index file read above. Written in
    // parts; only the last names the files it supersedes, so a crash never unindexes a pack.
    let dropped: HashSet<Id> = remove.iter().chain(retired.iter()).map(|p| p.id).collect();
    let mut keep: Vec<IndexPack> = index_packs
        .values()
        .filter(|p| !dropped.contains(&p.id))
        .map(|p| (*p).clone())
        .collect();
    keep.extend(new_packs);
    keep.extend(recovered);
    let changed = !dropped.is_empty() || report.recovered_packs > 0 || loaded_ids.len() > 1;
    if changed {
        write_consolidated(repo, keep, &loaded_ids)?;
        report.index_files_replaced = loaded_ids.len() as u64;
    }

    // Mark what left the index, then delete the superseded index files.
    let mut to_mark: Vec<IndexPack> = remove;
    to_mark.extend(retired);
    to_mark.extend(unindexed);
    if !to_mark.is_empty() {
        let mark = PruneMark {
            marked_unix_ns: crate::snapshot::now_ns(),
            packs: to_mark,
        };
        repo.save_file(FileKind::PruneMark, SealKind::PruneMark, &mark)?;
    }
    if changed {
        for id in &loaded_ids {
            repo.backend.delete(&FileKind::Index.path(id))?;
        }
    }

    // Phase 2.
    crate::interrupt::check()?;
    let (deleted, bytes, pending) = delete_marked(repo, opts.grace)?;
    report.packs_deleted = deleted;
    report.bytes_deleted = bytes;
    report.marks_pending = pending;
    for (id, _, stale) in crate::locks::list_markers(repo)? {
        if stale {
            let _ = repo.backend.delete(&FileKind::Lock.path(&id));
        }
    }
    Ok(report)
}

const BLOBS_PER_INDEX_FILE: usize = 100_000;

fn write_consolidated(repo: &Repository, packs: Vec<IndexPack>, supersedes: &[Id]) -> Result<()> {
    let mut parts: Vec<Vec<IndexPack>> = vec![Vec::new()];
    let mut count = 0;
    for p in packs {
        if count + p.blobs.len() > BLOBS_PER_INDEX_FILE && !parts.last().unwrap().is_empty() {
            parts.push(Vec::new());
            count = 0;
        }
        count += p.blobs.len();
        parts.last_mut().unwrap().push(p);
    }
    let last = parts.pop().unwrap();
    for part in parts {
        repo.save_index(&IndexFile {
            supersedes: vec![],
            packs: part,
        })?;
    }
    repo.save_index(&IndexFile {
        supersedes: supersedes.to_vec(),
        packs: last,
    })?;
    Ok(())
}

/// Phase 2: deletes the packs of marks that are old enough and that no running backup predates.
/// Returns (packs deleted, bytes deleted, marks still pending).
fn delete_marked(repo: &Repository, grace: Duration) -> Result<(u64, u64, u64)> {
    let marks = load_marks(repo)?;
    if marks.is_empty() {
        return Ok((0, 0, 0));
    }
    // Order matters: first make sure every backup that started before a mark has ended (its
    // marker goes only after its snapshot is saved), then list the snapshots, so each snapshot
    // that may use a marked pack is seen below.
    let oldest_running = crate::locks::oldest_running_backup(repo)?;
    let now = crate::snapshot::now_ns();
    let (ready, waiting): (Vec<_>, Vec<_>) = marks.into_iter().partition(|(_, m)| {
        let old_enough = now - m.marked_unix_ns >= grace.as_nanos() as i64;
        let predated = oldest_running.is_some_and(|start| start < m.marked_unix_ns);
        old_enough && !predated
    });
    let pending = waiting.len() as u64;
    if ready.is_empty() {
        return Ok((0, 0, pending));
    }
    // Snapshots first, then the index they were indexed in (see phase 1).
    let roots: Vec<Id> = repo
        .list_snapshots()?
        .into_iter()
        .map(|(_, s)| s.tree)
        .collect();
    let indexes = repo.load_indexes()?;
    let live = &indexes.live;
    let live_packs: HashSet<Id> = live.packs().iter().map(|p| p.id).collect();
    let used = used_blobs(repo, indexes.read(), &roots)?;

    // A marked pack a snapshot uses (a backup finished during the prune) goes back into the
    // index; the others are deleted.
    let mut recover = Vec::new();
    let mut doomed = Vec::new();
    // A pack can be in several marks (taken out, put back, taken out again): a mark still
    // waiting for a running backup protects it even when an older mark is ready.
    let protected: HashSet<Id> = waiting
        .iter()
        .flat_map(|(_, m)| m.packs.iter().map(|p| p.id))
        .collect();
    // The same pack in several ready marks: judge it by the entry that lists its blobs (a
    // mark of a pack that was in no index at the time lists none).
    let mut candidates: HashMap<Id, &IndexPack> = HashMap::new();
    for (_, mark) in &ready {
        for p in &mark.packs {
            let e = candidates.entry(p.id).or_insert(p);
            if e.blobs.is_empty() && !p.blobs.is_empty() {
                *e = p;
            }
        }
    }
    for p in candidates.into_values() {
        {
            if live_packs.contains(&p.id) || protected.contains(&p.id) {
                continue;
            }
            // Only blobs the live index lacks make a pack worth keeping (a repacked pack's used
            // blobs live on in the new pack).
            if p.blobs
                .iter()
                .any(|b| used.contains(&b.id) && !live.contains(&b.id))
            {
                recover.push(p.clone());
            } else {
                doomed.push(p.clone());
            }
        }
    }
    if !recover.is_empty() {
        repo.save_index(&IndexFile {
            supersedes: vec![],
            packs: recover,
        })?;
    }
    let (mut deleted, mut bytes) = (0, 0);
    for p in &doomed {
        match repo.backend.delete(&FileKind::Pack.path(&p.id)) {
            Ok(()) => {
                deleted += 1;
                bytes += p.size;
            }
            Err(e) if crate::backend::is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    for (mark_id, _) in &ready {
        repo.backend.delete(&FileKind::PruneMark.path(mark_id))?;
    }
    Ok((deleted, bytes, pending))
}

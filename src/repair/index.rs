//! `repair index`: an index of the packs in `data/`, from their headers.

use super::IndexState;
use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::format::IndexPack;
use crate::id::{IndexFileId, PackId};
use crate::repository::Repository;
use crate::session::WriteSession;
use rayon::prelude::*;
use std::collections::HashSet;

/// What `repair index` found and did (or would do, in a dry run).
#[derive(Debug, Default)]
pub struct IndexRepair {
    /// Packs in `data/`.
    pub packs_present: u64,
    /// Pack headers read.
    pub headers_read: u64,
    /// Packs indexed from their headers: in no live index file, or listed there with another
    /// size or other blobs.
    pub packs_indexed: Vec<PackId>,
    /// Packs the index listed that are not in `data/`: their entries are dropped.
    pub packs_missing: Vec<PackId>,
    /// Packs whose header cannot be read: one the index listed keeps its entry (for
    /// `repair packs`), one it did not stays out of it (a later prune deletes it).
    pub unreadable: Vec<(PackId, String)>,
    /// Unindexed packs a prune has marked: left for that prune to delete.
    pub marked_skipped: u64,
    /// Index files that do not open; superseded by the new index.
    pub damaged_index_files: Vec<IndexFileId>,
    /// Whether a new index was (or, in a dry run, would be) written.
    pub new_index: bool,
    /// Index files the new index replaced (or would replace).
    pub index_files_replaced: u64,
}

impl IndexRepair {
    /// Whether damage remains that this repair cannot fix.
    pub fn damage_remains(&self) -> bool {
        !self.unreadable.is_empty()
    }
}

/// Rebuilds the index from the packs present. With `session`, writes one complete index
/// superseding every index file read (intact or damaged) and deletes those; without, only
/// reports. Packs already indexed with their size are trusted unless `read_all_packs`.
/// Works with a write-only key: pack headers are sealed with a key it holds.
pub fn repair_index(
    repo: &Repository,
    session: Option<&WriteSession>,
    read_all_packs: bool,
) -> Result<IndexRepair> {
    let state = IndexState::read(repo)?;
    let present = repo.backend().list_ids(FileKind::Pack)?;
    let mut report = IndexRepair {
        packs_present: present.len() as u64,
        damaged_index_files: state.damaged.clone(),
        ..IndexRepair::default()
    };
    let present_ids: HashSet<PackId> = present.iter().map(|(id, _)| PackId(*id)).collect();
    let mut packs: Vec<IndexPack> = Vec::new();
    let mut to_read: Vec<(PackId, u64)> = Vec::new();
    for (id, size) in &present {
        let id = PackId(*id);
        match state.live.get(&id) {
            Some(p) if p.size == *size && !read_all_packs => packs.push(p.clone()),
            None if state.marked.contains(&id) => report.marked_skipped += 1,
            _ => to_read.push((id, *size)),
        }
    }
    let max_len = crate::pack::max_header_len(repo.config().pack_target_size);
    let headers: Vec<_> = to_read
        .par_iter()
        .map(|(id, size)| {
            crate::interrupt::check()?;
            let h = crate::pack::read_header(repo.backend(), repo.keys(), id, *size, max_len);
            Ok::<_, Error>((*id, *size, h))
        })
        .collect::<Result<_>>()?;
    report.headers_read = headers.len() as u64;
    for (id, size, header) in headers {
        let old = state.live.get(&id);
        match header {
            Ok(h) => {
                let p = IndexPack {
                    id,
                    blob_type: h.blob_type,
                    size,
                    blobs: h.blobs,
                };
                if old != Some(&p) {
                    report.packs_indexed.push(id);
                }
                packs.push(p);
            }
            Err(e @ Error::Corrupt { .. }) => {
                // An indexed pack keeps its entry: its blobs may still open (`repair packs`).
                if let Some(p) = old {
                    packs.push(p.clone());
                }
                report.unreadable.push((id, e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    report.packs_missing = state
        .live
        .keys()
        .filter(|id| !present_ids.contains(id))
        .copied()
        .collect();
    report.packs_missing.sort();
    report.packs_indexed.sort();
    report.unreadable.sort_by_key(|(id, _)| *id);
    let old_files = state.all_file_ids();
    let superseded_left = old_files.len() > state.live_file_count();
    let changed = !report.packs_indexed.is_empty()
        || !report.packs_missing.is_empty()
        || !report.damaged_index_files.is_empty()
        || superseded_left;
    if changed {
        report.new_index = true;
        report.index_files_replaced = old_files.len() as u64;
        if let Some(session) = session {
            crate::interrupt::check()?;
            super::replace_index(session, packs, &old_files)?;
        }
    }
    Ok(report)
}

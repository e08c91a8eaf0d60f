//! `repair`: for the day `check` finds damage. `index` rebuilds the index from the packs that
//! exist (their headers), `snapshots` writes new versions of snapshots without the files whose
//! blobs are lost, `packs` stores the intact blobs of damaged packs again in new packs.
//!
//! Nothing here deletes a pack: a pack that leaves the index is deleted by a later `prune`
//! (marked, then deleted after its grace, format-spec §11a). Index files that a new index
//! supersedes are deleted after it is written, as prune does (format-spec §8).

pub mod index;
pub mod packs;
pub mod snapshots;

use crate::error::Result;
use crate::format::{IndexFile, IndexPack};
use crate::id::{IndexFileId, PackId};
use crate::repository::Repository;
use crate::session::WriteSession;
use std::collections::{HashMap, HashSet};

/// The index as stored: what repair starts from.
pub(crate) struct IndexState {
    /// Every index file that opens.
    pub files: Vec<(IndexFileId, IndexFile)>,
    /// Index files that do not open (wrong hash, fail to decrypt or decode).
    pub damaged: Vec<IndexFileId>,
    /// The packs of the live index files (those no loaded file supersedes), by id.
    pub live: HashMap<PackId, IndexPack>,
    /// Packs a prune has marked for deletion.
    pub marked: HashSet<PackId>,
}

impl IndexState {
    /// Reads index files and prune marks as one consistent view (see
    /// [`Repository::load_consistent`]), keeping the damaged index files' names.
    pub(crate) fn read(repo: &Repository) -> Result<IndexState> {
        let (loaded, marks) =
            repo.load_consistent(|r| r.load_all::<IndexFile>(), |r| r.load_prune_marks())?;
        let damaged = loaded.damaged.iter().map(|(id, _)| *id).collect();
        let files = loaded.intact;
        let superseded = crate::index::superseded_ids(&files);
        let live = files
            .iter()
            .filter(|(id, _)| !superseded.contains(id))
            .flat_map(|(_, f)| f.packs.iter())
            .map(|p| (p.id, p.clone()))
            .collect();
        let marked = Repository::marked_packs(&marks)
            .into_iter()
            .map(|p| p.id)
            .collect();
        Ok(IndexState {
            files,
            damaged,
            live,
            marked,
        })
    }

    /// Index files no loaded file supersedes.
    pub(crate) fn live_file_count(&self) -> usize {
        let superseded = crate::index::superseded_ids(&self.files);
        self.files
            .iter()
            .filter(|(id, _)| !superseded.contains(id))
            .count()
    }

    /// Every index file read, intact or damaged: what a new complete index supersedes.
    pub(crate) fn all_file_ids(&self) -> Vec<IndexFileId> {
        self.files
            .iter()
            .map(|(id, _)| *id)
            .chain(self.damaged.iter().copied())
            .collect()
    }
}

/// Writes `packs` as the whole index, superseding `old` (the last new file names them, so a
/// crash in between never unindexes a pack), then deletes `old` like prune does.
pub(crate) fn replace_index(
    session: &WriteSession,
    mut packs: Vec<IndexPack>,
    old: &[IndexFileId],
) -> Result<()> {
    packs.sort_by_key(|p| p.id);
    crate::prune::write_consolidated(session, packs, old)?;
    for id in old {
        match session.delete_file::<IndexFile>(id) {
            Err(e) if !crate::backend::is_not_found(&e) => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

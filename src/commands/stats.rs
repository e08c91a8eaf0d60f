//! `stats`: logical and stored sizes, dedup and compression ratios, blob and pack counts.

use super::select::Selection;
use crate::error::Result;
use crate::format::NodeKind;
use crate::id::{DataId, TreeId};
use crate::repository::{IndexedRepository, Repository};
use crate::walker::Walker;
use std::collections::HashSet;

#[derive(Clone, Debug, Default)]
pub struct StatsOptions {
    /// The snapshots to measure; no ids means every snapshot the filter lets through.
    pub selection: Selection,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub snapshots: usize,
    pub files: u64,
    /// Sum of the sizes of every file of every chosen snapshot.
    pub logical_bytes: u64,
    /// Plaintext size of the distinct data blobs those files use.
    pub unique_raw_bytes: u64,
    /// Stored (compressed, sealed) size of those blobs.
    pub stored_bytes: u64,
    pub dedup_ratio: f64,
    pub compression_ratio: f64,
    pub data_blobs: usize,
    pub trees: usize,
    /// Packs holding any of those blobs or trees.
    pub packs: usize,
    pub repository_pack_bytes: u64,
    pub repository_blobs: usize,
    pub repository_packs: usize,
}

/// What the walk of the chosen snapshots' trees found.
#[derive(Default)]
struct Walked {
    files: u64,
    logical: u64,
    blobs: HashSet<DataId>,
    trees: HashSet<TreeId>,
}

pub fn stats(repo: &Repository, opts: &StatsOptions) -> Result<Stats> {
    let chosen = opts.selection.select(&repo.list_snapshots()?)?;
    let repo = repo.load_index()?;
    let index = repo.index();
    let roots: Vec<TreeId> = chosen.iter().map(|(_, s)| s.tree).collect();
    let walked = walk(&repo, &roots)?;
    // Ratios are over file data; tree blobs are counted in packs and stored size.
    let (mut raw, mut stored) = (0u64, 0u64);
    let mut packs = HashSet::new();
    for id in &walked.blobs {
        if let Some(loc) = index.get(id) {
            raw += loc.raw_length as u64;
            stored += loc.length as u64;
            packs.insert(loc.pack);
        }
    }
    packs.extend(
        walked
            .trees
            .iter()
            .filter_map(|id| index.get(id))
            .map(|l| l.pack),
    );
    let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    let repository_pack_bytes = repo
        .backend()
        .list(crate::backend::FileKind::Pack)?
        .iter()
        .map(|(_, s)| s)
        .sum();
    Ok(Stats {
        snapshots: chosen.len(),
        files: walked.files,
        logical_bytes: walked.logical,
        unique_raw_bytes: raw,
        stored_bytes: stored,
        dedup_ratio: ratio(walked.logical, raw),
        compression_ratio: ratio(raw, stored),
        data_blobs: walked.blobs.len(),
        trees: walked.trees.len(),
        packs: packs.len(),
        repository_pack_bytes,
        repository_blobs: index.len(),
        repository_packs: index.packs().len(),
    })
}

/// Every file of every root (a file in two snapshots counts twice in the logical size: trees
/// are walked once per snapshot), and every tree loaded on the way.
fn walk(repo: &IndexedRepository, roots: &[TreeId]) -> Result<Walked> {
    let mut w = Walked::default();
    let trees = std::cell::RefCell::new(HashSet::new());
    let load = |id: &crate::id::Id| {
        trees.borrow_mut().insert(TreeId(*id));
        repo.load_tree(&TreeId(*id))
    };
    for root in roots {
        for entry in Walker::new(&load, root.0) {
            let n = entry?.node;
            if n.kind == NodeKind::File {
                w.logical += n.size;
                w.files += 1;
                w.blobs.extend(n.content.iter().copied());
            }
        }
    }
    w.trees = trees.into_inner();
    Ok(w)
}

//! `rewrite`: new snapshots without the paths that match exclude globs (the GDPR erase path:
//! rewrite, then prune, and the bytes are gone from storage).

use crate::archiver::Excludes;
use crate::error::Result;
use crate::format::{IndexFile, Node, Snapshot, Tree};
use crate::id::{Id, SnapshotId, TreeId};
use crate::packer::{self, Indexing, PackerParts, PACKS_PER_INDEX};
use crate::repository::IndexedRepository;
use crate::session::IndexedWriteSession;
use crate::walker::Walker;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Result of rewriting one snapshot.
pub struct Rewritten {
    pub old: SnapshotId,
    pub new: Option<SnapshotId>,
    pub removed_paths: Vec<String>,
}

/// Rewrites `snaps` without excluded paths; the originals are forgotten (deleted).
/// Snapshots with nothing to exclude are left as they are. New trees dedup against the live
/// index of the session, whose marker a concurrent prune respects (§11a).
pub fn rewrite(
    session: &IndexedWriteSession,
    snaps: &[(SnapshotId, Snapshot)],
    patterns: &[String],
) -> Result<Vec<Rewritten>> {
    rewrite_in(session.repo(), Some(session), snaps, patterns)
}

/// What [`rewrite`] would remove, changing nothing (no tree is stored).
pub fn rewrite_dry_run(
    repo: &IndexedRepository,
    snaps: &[(SnapshotId, Snapshot)],
    patterns: &[String],
) -> Result<Vec<Rewritten>> {
    rewrite_in(repo, None, snaps, patterns)
}

fn rewrite_in(
    repo: &IndexedRepository,
    session: Option<&IndexedWriteSession>,
    snaps: &[(SnapshotId, Snapshot)],
    patterns: &[String],
) -> Result<Vec<Rewritten>> {
    let excludes = Excludes::new(patterns)?;
    let Some(session) = session else {
        // A dry run: trees are only named, never stored.
        let name = |t: &Tree| Ok(repo.keys().blob_id(&crate::format::to_postcard(t)));
        let (changed, unchanged) = plan(repo, snaps, patterns, &excludes, &name)?;
        return Ok(changed
            .into_iter()
            .chain(unchanged)
            .map(|(old, _, removed)| Rewritten {
                old,
                new: None,
                removed_paths: removed,
            })
            .collect());
    };
    let save_index = |f: &IndexFile| session.save_file(f).map(Id::from);
    let parts = PackerParts::new(session, Indexing::Every(PACKS_PER_INDEX, &save_index));
    let (planned, packed) = packer::run(parts, |p| {
        plan(repo, snaps, patterns, &excludes, &|t| p.store_tree(t))
    });
    // Trees first, then the new snapshots, then the old ones go.
    let (changed, unchanged) = planned?;
    packed?;
    crate::interrupt::check()?;
    // Unchanged snapshots first, then each rewritten one as it is saved.
    let mut out = Vec::new();
    let log_heads = crate::oplog::heads(repo)?;
    for (old, s, removed) in unchanged.into_iter().chain(changed) {
        let new = match s {
            Some(mut s) => {
                s.log_heads = log_heads.clone();
                let new = session.save_file(&s)?;
                session.delete_file::<Snapshot>(&old)?;
                Some(new)
            }
            None => None,
        };
        out.push(Rewritten {
            old,
            new,
            removed_paths: removed,
        });
    }
    Ok(out)
}

/// Per snapshot: its id, the snapshot to save instead (none when nothing is excluded) and
/// the paths left out; the snapshots to rewrite, then the others, each in the order given.
type Planned = (
    Vec<(SnapshotId, Option<Snapshot>, Vec<String>)>,
    Vec<(SnapshotId, Option<Snapshot>, Vec<String>)>,
);

/// Walks each snapshot, storing the trees that change through `save_tree`.
fn plan(
    repo: &IndexedRepository,
    snaps: &[(SnapshotId, Snapshot)],
    patterns: &[String],
    excludes: &Excludes,
    save_tree: &dyn Fn(&Tree) -> Result<Id>,
) -> Result<Planned> {
    let (mut changed, mut unchanged) = (Vec::new(), Vec::new());
    for (id, snap) in snaps {
        crate::interrupt::check()?;
        let (root, removed) = rewrite_snapshot(repo, snap, excludes, save_tree)?;
        if removed.is_empty() {
            unchanged.push((*id, None, removed));
            continue;
        }
        let mut s = snap.clone();
        s.tree = root;
        s.excludes.extend(patterns.iter().cloned());
        changed.push((*id, Some(s), removed));
    }
    Ok((changed, unchanged))
}

/// A directory whose tree is being rebuilt: its node, its path as at backup, the nodes kept
/// so far, and how many paths had been removed when it was entered.
struct Open {
    node: Node,
    path: PathBuf,
    kept: Vec<Node>,
    removed_before: usize,
}

/// Rebuilds one snapshot's trees without excluded paths, bottom up as the walk leaves each
/// directory; a tree with nothing removed below it keeps its id. Returns the new root and the
/// paths removed.
fn rewrite_snapshot(
    repo: &IndexedRepository,
    snap: &Snapshot,
    excludes: &Excludes,
    save_tree: &dyn Fn(&Tree) -> Result<Id>,
) -> Result<(TreeId, Vec<String>)> {
    let mut removed = Vec::new();
    let mut root = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    // Closes the innermost open directory: its node, with its new subtree, joins its parent.
    let close = |open: &mut Vec<Open>, root: &mut Vec<Node>, removed: &[String]| -> Result<()> {
        let mut dir = open.pop().expect("an open directory");
        if removed.len() > dir.removed_before {
            dir.node.subtree = Some(TreeId(save_tree(&Tree { nodes: dir.kept })?));
        }
        match open.last_mut() {
            Some(parent) => parent.kept.push(dir.node),
            None => root.push(dir.node),
        }
        Ok(())
    };
    let load = |id: &Id| repo.load_tree(&TreeId(*id));
    let mut walk = Walker::new(&load, snap.tree.0);
    while let Some(entry) = walk.next() {
        let entry = entry?;
        while open.len() > entry.depth {
            close(&mut open, &mut root, &removed)?;
        }
        let node = entry.node;
        let path = match open.last() {
            Some(dir) => dir.path.join(OsStr::from_bytes(&node.name)),
            // The absolute source path of each top-level entry, so path globs match as at
            // backup.
            None => snap
                .paths
                .iter()
                .map(PathBuf::from)
                .find(|p| p.file_name().map(|n| n.as_bytes()) == Some(node.name.as_slice()))
                .unwrap_or_else(|| Path::new("/").join(OsStr::from_bytes(&node.name))),
        };
        if excludes.excluded(&path, &node.name) {
            removed.push(path.display().to_string());
            walk.skip_subtree();
        } else if node.subtree.is_some() {
            open.push(Open {
                node,
                path,
                kept: Vec::new(),
                removed_before: removed.len(),
            });
        } else {
            match open.last_mut() {
                Some(dir) => dir.kept.push(node),
                None => root.push(node),
            }
        }
    }
    while !open.is_empty() {
        close(&mut open, &mut root, &removed)?;
    }
    if removed.is_empty() {
        return Ok((snap.tree, removed));
    }
    Ok((TreeId(save_tree(&Tree { nodes: root })?), removed))
}

//! `rewrite`: new snapshots without the paths that match exclude globs (the GDPR erase path:
//! rewrite, then prune, and the bytes are gone from storage).

use crate::archiver::Excludes;
use crate::error::Result;
use crate::format::{BlobType, Snapshot, Tree};
use crate::id::{SnapshotId, TreeId};
use crate::repository::IndexedRepository;
use crate::session::{BlobWriter, IndexedWriteSession};
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
    let mut writer = session.map(|s| s.blob_writer(BlobType::Tree));
    let mut out = Vec::new();
    let mut to_save = Vec::new();
    for (id, snap) in snaps {
        crate::interrupt::check()?;
        let mut removed = Vec::new();
        let root = repo.load_tree(&snap.tree)?;
        // The absolute source path of each top-level entry, so path globs match as at backup.
        let mut new_root = Tree::default();
        for mut node in root.nodes {
            let base = snap
                .paths
                .iter()
                .map(PathBuf::from)
                .find(|p| p.file_name().map(|n| n.as_bytes()) == Some(node.name.as_slice()))
                .unwrap_or_else(|| Path::new("/").join(OsStr::from_bytes(&node.name)));
            if excludes.excluded(&base, &node.name) {
                removed.push(base.display().to_string());
                continue;
            }
            if let Some(sub) = node.subtree {
                node.subtree = Some(rewrite_tree(
                    repo,
                    writer.as_mut(),
                    &excludes,
                    &sub,
                    &base,
                    &mut removed,
                )?);
            }
            new_root.nodes.push(node);
        }
        if removed.is_empty() {
            out.push(Rewritten {
                old: *id,
                new: None,
                removed_paths: removed,
            });
            continue;
        }
        let tree = save_tree(repo, writer.as_mut(), &new_root)?;
        let mut s = snap.clone();
        s.tree = tree;
        s.excludes.extend(patterns.iter().cloned());
        to_save.push((*id, s, removed));
    }
    let (Some(session), Some(writer)) = (session, writer) else {
        return Ok(to_save
            .into_iter()
            .map(|(old, _, removed)| Rewritten {
                old,
                new: None,
                removed_paths: removed,
            })
            .chain(out)
            .collect());
    };
    // Trees first, then the new snapshots, then the old ones go.
    writer.finish()?;
    crate::interrupt::check()?;
    for (old, s, removed) in to_save {
        let new = session.save_file(&s)?;
        session.delete_file::<Snapshot>(&old)?;
        out.push(Rewritten {
            old,
            new: Some(new),
            removed_paths: removed,
        });
    }
    Ok(out)
}

/// Stores a rewritten tree, or in a dry run (no writer) only computes its id.
fn save_tree(
    repo: &IndexedRepository,
    writer: Option<&mut BlobWriter>,
    tree: &Tree,
) -> Result<TreeId> {
    match writer {
        Some(w) => w.save_tree(tree),
        None => Ok(TreeId(
            repo.keys().blob_id(&crate::format::to_postcard(tree)),
        )),
    }
}

fn rewrite_tree(
    repo: &IndexedRepository,
    mut writer: Option<&mut BlobWriter>,
    excludes: &Excludes,
    tree_id: &TreeId,
    dir: &Path,
    removed: &mut Vec<String>,
) -> Result<TreeId> {
    let tree = repo.load_tree(tree_id)?;
    let mut out = Tree {
        nodes: Vec::with_capacity(tree.nodes.len()),
    };
    let before = removed.len();
    for mut node in tree.nodes {
        let path = dir.join(OsStr::from_bytes(&node.name));
        if excludes.excluded(&path, &node.name) {
            removed.push(path.display().to_string());
            continue;
        }
        if let Some(sub) = node.subtree {
            node.subtree = Some(rewrite_tree(
                repo,
                writer.as_deref_mut(),
                excludes,
                &sub,
                &path,
                removed,
            )?);
        }
        out.nodes.push(node);
    }
    if removed.len() == before {
        return Ok(*tree_id);
    }
    save_tree(repo, writer, &out)
}

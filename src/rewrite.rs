//! `rewrite`: new snapshots without the paths that match exclude globs (the GDPR erase path:
//! rewrite, then prune, and the bytes are gone from storage).

use crate::archiver::Excludes;
use crate::backend::FileKind;
use crate::error::Result;
use crate::format::{BlobType, Snapshot, Tree};
use crate::id::Id;
use crate::index::Index;
use crate::pack::BlobWriter;
use crate::repository::Repository;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Result of rewriting one snapshot.
pub struct Rewritten {
    pub old: Id,
    pub new: Option<Id>,
    pub removed_paths: Vec<String>,
}

/// Rewrites `snaps` without excluded paths; the originals are forgotten (deleted) unless
/// `dry_run`. Snapshots with nothing to exclude are left as they are.
pub fn rewrite(
    repo: &Repository,
    snaps: &[(Id, Snapshot)],
    patterns: &[String],
    dry_run: bool,
) -> Result<Vec<Rewritten>> {
    let excludes = Excludes::new(patterns)?;
    // New trees dedup against the live index: announce the write before loading it, so a
    // concurrent prune keeps what they may point to (§11a).
    let _session = if dry_run {
        None
    } else {
        Some(crate::locks::MarkerGuard::acquire(repo)?)
    };
    let indexes = repo.load_indexes()?;
    let (index, live) = (indexes.read(), &indexes.live);
    let mut writer = BlobWriter::new(repo, live, BlobType::Tree);
    let mut out = Vec::new();
    let mut to_save = Vec::new();
    for (id, snap) in snaps {
        crate::interrupt::check()?;
        let mut removed = Vec::new();
        let root = repo.load_tree(index, &snap.tree)?;
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
                    index,
                    &mut writer,
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
        let tree = writer.save_tree(&new_root)?;
        let mut s = snap.clone();
        s.tree = tree;
        s.excludes.extend(patterns.iter().cloned());
        to_save.push((*id, s, removed));
    }
    if dry_run {
        return Ok(to_save
            .into_iter()
            .map(|(old, _, removed)| Rewritten {
                old,
                new: None,
                removed_paths: removed,
            })
            .chain(out)
            .collect());
    }
    // Trees first, then the new snapshots, then the old ones go.
    writer.finish()?;
    crate::interrupt::check()?;
    for (old, s, removed) in to_save {
        let new = repo.save_snapshot(&s)?;
        repo.backend.delete(&FileKind::Snapshot.path(&old))?;
        out.push(Rewritten {
            old,
            new: Some(new),
            removed_paths: removed,
        });
    }
    Ok(out)
}

fn rewrite_tree(
    repo: &Repository,
    index: &Index,
    writer: &mut BlobWriter,
    excludes: &Excludes,
    tree_id: &Id,
    dir: &Path,
    removed: &mut Vec<String>,
) -> Result<Id> {
    let tree = repo.load_tree(index, tree_id)?;
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
                repo, index, writer, excludes, &sub, &path, removed,
            )?);
        }
        out.nodes.push(node);
    }
    if removed.len() == before {
        return Ok(*tree_id);
    }
    writer.save_tree(&out)
}

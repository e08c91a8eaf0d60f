//! `rewrite`: new snapshots without the paths that match exclude globs (the GDPR erase path:
//! rewrite, then prune, and the bytes are gone from storage).

use crate::archiver::Excludes;
use crate::backend::FileKind;
use crate::error::Result;
use crate::format::{BlobType, IndexFile, Snapshot, Tree};
use crate::id::Id;
use crate::index::Index;
use crate::pack::{self, PackBuilder};
use crate::repository::Repository;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Writes tree blobs into tree packs, deduplicated against the index.
pub struct TreeWriter<'a> {
    repo: &'a Repository,
    index: &'a Index,
    pending: HashSet<Id>,
    builder: PackBuilder,
    written: Vec<crate::format::IndexPack>,
}

impl<'a> TreeWriter<'a> {
    pub fn new(repo: &'a Repository, index: &'a Index) -> Self {
        TreeWriter {
            repo,
            index,
            pending: HashSet::new(),
            builder: PackBuilder::new(BlobType::Tree, 1 << 20),
            written: Vec::new(),
        }
    }

    pub fn save(&mut self, tree: &Tree) -> Result<Id> {
        let raw = crate::format::to_postcard(tree);
        let id = self.repo.keys.blob_id(&raw);
        if !self.index.contains(&id) && self.pending.insert(id) {
            let sealed = pack::seal_blob(
                &self.repo.keys,
                BlobType::Tree,
                &id,
                &raw,
                self.repo.config.compression_level,
            );
            self.builder.add(id, raw.len() as u32, &sealed);
            if self.builder.len() >= self.repo.config.pack_target_size as usize {
                self.flush_pack()?;
            }
        }
        Ok(id)
    }

    fn flush_pack(&mut self) -> Result<()> {
        let b = std::mem::replace(&mut self.builder, PackBuilder::new(BlobType::Tree, 1 << 20));
        if b.is_empty() {
            return Ok(());
        }
        let (bytes, entry) = b.finish(&self.repo.keys);
        self.repo
            .backend
            .write(&FileKind::Pack.path(&entry.id), bytes)?;
        self.written.push(entry);
        Ok(())
    }

    /// Uploads the last pack and indexes everything written.
    pub fn finish(mut self) -> Result<()> {
        self.flush_pack()?;
        if !self.written.is_empty() {
            self.repo.save_index(&IndexFile {
                supersedes: vec![],
                packs: std::mem::take(&mut self.written),
            })?;
        }
        Ok(())
    }
}

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
    let indexes = repo.load_indexes()?;
    let (index, live) = (indexes.read(), &indexes.live);
    let mut writer = TreeWriter::new(repo, live);
    let mut out = Vec::new();
    let mut to_save = Vec::new();
    for (id, snap) in snaps {
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
        let tree = writer.save(&new_root)?;
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
    writer: &mut TreeWriter,
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
    writer.save(&out)
}

//! `find`: which snapshots hold paths matching a glob.

use super::select::Selection;
use crate::error::{Error, Result};
use crate::format::Node;
use crate::id::{SnapshotId, TreeId};
use crate::repository::{IndexedRepository, Repository};
use crate::walker::Walker;

#[derive(Clone, Debug, Default)]
pub struct FindOptions {
    /// Without '/', matched against names; with '/', against whole paths in the snapshot.
    pub pattern: String,
    /// Snapshots to search; no ids means every snapshot the filter lets through.
    pub selection: Selection,
}

/// One matching path in one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub snapshot: SnapshotId,
    pub snapshot_time_unix_ns: i64,
    /// Starts with `/`.
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
}

impl FindOptions {
    /// The usage errors found without the repository.
    pub fn validate(&self) -> Result<()> {
        self.matcher()?;
        self.selection.validate("find", false)
    }

    fn matcher(&self) -> Result<globset::GlobMatcher> {
        Ok(globset::GlobBuilder::new(&self.pattern)
            .literal_separator(self.pattern.contains('/'))
            .build()
            .map_err(|e| Error::usage(format!("invalid pattern {:?}: {e}", self.pattern)))?
            .compile_matcher())
    }
}

/// Every match, snapshot by snapshot (oldest first).
pub fn find(repo: &Repository, opts: &FindOptions) -> Result<Vec<Match>> {
    opts.validate()?;
    let by_path = opts.pattern.contains('/');
    let glob = opts.matcher()?;
    let repo = repo.load_index()?;
    let mut found = Vec::new();
    for (id, snap) in opts.selection.select(&repo.list_snapshots()?)? {
        walk(&repo, snap.tree, &mut |path, n| {
            let hit = if by_path {
                glob.is_match(path) || glob.is_match(path.trim_start_matches('/'))
            } else {
                glob.is_match(n.name_lossy())
            };
            if hit {
                found.push(Match {
                    snapshot: id,
                    snapshot_time_unix_ns: snap.time_unix_ns,
                    path: path.to_string(),
                    size: n.size,
                    mtime_ns: n.mtime_ns,
                });
            }
        })?;
    }
    Ok(found)
}

/// Every node below `root` with its path (`/dir/name`), depth first in stored order.
fn walk(repo: &IndexedRepository, root: TreeId, visit: &mut dyn FnMut(&str, &Node)) -> Result<()> {
    let load = |id: &crate::id::Id| repo.load_tree(&TreeId(*id));
    for entry in Walker::new(&load, root.0) {
        let entry = entry?;
        let path = format!("/{}", entry.path().to_string_lossy());
        visit(&path, &entry.node);
    }
    Ok(())
}

//! `ls`: every node of a snapshot, or of one folder in it, with its path, depth first in name
//! order. Nodes are handed to the caller as they are found, so memory does not grow with the
//! snapshot.

use crate::error::Result;
use crate::format::{Node, Snapshot};
use crate::id::{SnapshotId, TreeId};
use crate::repository::{IndexedRepository, Repository};

#[derive(Clone, Debug)]
pub struct LsOptions {
    /// Snapshot id, unique prefix or `latest`.
    pub snapshot: String,
    /// Folder (or file) inside the snapshot; `None` or empty for everything.
    pub path: Option<String>,
}

/// Calls `visit` with each node's path (starting with `/`) and the node; returns the snapshot.
pub fn ls(
    repo: &Repository,
    opts: &LsOptions,
    mut visit: impl FnMut(&str, &Node),
) -> Result<(SnapshotId, Snapshot)> {
    let (id, snap) = repo.find_snapshot(&opts.snapshot)?;
    let repo = repo.load_index()?;
    let inside = opts
        .path
        .as_deref()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty());
    let (start, prefix) = match inside {
        None => (snap.tree, String::new()),
        Some(p) => {
            let node = crate::tree::find_node(&repo, &snap.tree, p)?;
            match node.subtree {
                Some(t) => (t, format!("/{p}")),
                None => {
                    visit(&format!("/{p}"), &node);
                    return Ok((id, snap));
                }
            }
        }
    };
    walk(&repo, start, prefix, &mut visit)?;
    Ok((id, snap))
}

/// Depth first, each folder's entries in name order before what is below them. The one tree
/// walk of `ls`.
fn walk(
    repo: &IndexedRepository,
    start: TreeId,
    prefix: String,
    visit: &mut impl FnMut(&str, &Node),
) -> Result<()> {
    let mut stack: Vec<(TreeId, String)> = vec![(start, prefix)];
    while let Some((tid, dir)) = stack.pop() {
        let tree = repo.load_tree(&tid)?;
        let mut subdirs = Vec::new();
        for n in &tree.nodes {
            let path = format!("{dir}/{}", n.name_lossy());
            visit(&path, n);
            if let Some(s) = n.subtree {
                subdirs.push((s, path));
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

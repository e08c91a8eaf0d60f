//! `diff`: paths added, removed, changed in content and changed in metadata only between two
//! snapshots. Subtrees with the same id are skipped without being read.

use crate::error::Result;
use crate::format::{Node, NodeKind, Tree};
use crate::id::TreeId;
use crate::repository::{IndexedRepository, Repository};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    /// Content (or symlink target) differs.
    Changed,
    /// Only mode, mtime or owner differ.
    Metadata,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub change: ChangeKind,
    /// `/`-separated path inside the snapshot, starting with `/`.
    pub path: String,
    pub old_size: Option<u64>,
    pub new_size: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct DiffOptions {
    /// The older snapshot: id, unique prefix or `latest`.
    pub first: String,
    /// The newer snapshot.
    pub second: String,
}

/// Every change from the first snapshot to the second, in path order.
pub fn diff(repo: &Repository, opts: &DiffOptions) -> Result<Vec<Change>> {
    let snaps = repo.list_snapshots()?;
    let (_, s1) = crate::snapshot::resolve(&snaps, &opts.first)?;
    let (_, s2) = crate::snapshot::resolve(&snaps, &opts.second)?;
    let repo = repo.load_index()?;
    let mut out = Vec::new();
    TreeDiff {
        repo: &repo,
        out: &mut out,
    }
    .trees(Some(&s1.tree), Some(&s2.tree), "")?;
    Ok(out)
}

/// The walk of both snapshots' trees side by side.
struct TreeDiff<'a> {
    repo: &'a IndexedRepository<'a>,
    out: &'a mut Vec<Change>,
}

impl TreeDiff<'_> {
    fn load(&self, id: Option<&TreeId>) -> Result<Tree> {
        match id {
            Some(id) => self.repo.load_tree(id),
            None => Ok(Tree::default()),
        }
    }

    /// `node` and everything below it, all added or all removed.
    fn all_below(&mut self, node: &Node, path: &str, change: ChangeKind) -> Result<()> {
        let size = (node.kind == NodeKind::File).then_some(node.size);
        let (old_size, new_size) = match change {
            ChangeKind::Added => (None, size),
            _ => (size, None),
        };
        self.out.push(Change {
            change,
            path: path.to_string(),
            old_size,
            new_size,
        });
        if let Some(sub) = &node.subtree {
            for n in self.repo.load_tree(sub)?.nodes {
                self.all_below(&n, &format!("{path}/{}", n.name_lossy()), change)?;
            }
        }
        Ok(())
    }

    fn trees(&mut self, a: Option<&TreeId>, b: Option<&TreeId>, dir: &str) -> Result<()> {
        if a == b {
            return Ok(());
        }
        let (ta, tb) = (self.load(a)?, self.load(b)?);
        let (mut i, mut j) = (0, 0);
        while i < ta.nodes.len() || j < tb.nodes.len() {
            let ord = match (ta.nodes.get(i), tb.nodes.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match ord {
                std::cmp::Ordering::Less => {
                    let n = &ta.nodes[i];
                    self.all_below(n, &format!("{dir}/{}", n.name_lossy()), ChangeKind::Removed)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let n = &tb.nodes[j];
                    self.all_below(n, &format!("{dir}/{}", n.name_lossy()), ChangeKind::Added)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    self.same_name(&ta.nodes[i], &tb.nodes[j], dir)?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    /// Two nodes of the same name in the same folder.
    fn same_name(&mut self, x: &Node, y: &Node, dir: &str) -> Result<()> {
        let path = format!("{dir}/{}", x.name_lossy());
        let change = if x.kind != y.kind {
            self.all_below(x, &path, ChangeKind::Removed)?;
            return self.all_below(y, &path, ChangeKind::Added);
        } else if x.subtree.is_some() || y.subtree.is_some() {
            return self.trees(x.subtree.as_ref(), y.subtree.as_ref(), &path);
        } else if x.content != y.content || x.link_target != y.link_target {
            ChangeKind::Changed
        } else if x.mode != y.mode || x.mtime_ns != y.mtime_ns || x.uid != y.uid || x.gid != y.gid {
            ChangeKind::Metadata
        } else {
            return Ok(());
        };
        self.out.push(Change {
            change,
            path,
            old_size: Some(x.size),
            new_size: Some(y.size),
        });
        Ok(())
    }
}

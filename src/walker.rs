//! The one walk over a snapshot's trees: a streaming iterator over every node with its path,
//! depth-first in stored order (a directory's node, then everything below it, then its next
//! sibling), loading each tree only when the walk enters it.
//!
//! ```ignore
//! let load = |id: &Id| repo.load_tree(&TreeId(*id));
//! let mut walk = Walker::new(&load, *snapshot.tree);
//! while let Some(entry) = walk.next() {
//!     let entry = entry?; // or note the subtree that could not be read, and go on
//!     if skip(&entry) {
//!         walk.skip_subtree(); // do not enter the directory just returned
//!     }
//!     println!("{}", entry.path().display());
//! }
//! ```
//!
//! A tree that cannot be loaded is one `Err` item; the walk then goes on with the next
//! sibling of the directory that named it, so a caller can report it and carry on (check), or
//! stop at the first (`?`).

use crate::error::Error;
use crate::format::{Node, Tree};
use crate::id::Id;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the walk needs of a node: its name, and the tree it leads to (a directory's).
pub trait WalkNode {
    fn name(&self) -> &[u8];
    fn subtree(&self) -> Option<Id>;
}

impl WalkNode for Node {
    fn name(&self) -> &[u8] {
        &self.name
    }

    fn subtree(&self) -> Option<Id> {
        self.subtree.map(Id::from)
    }
}

/// Loads a tree's nodes by id. Any `Fn(&Id) -> Result<Tree>` is one (a repository and an
/// index, or a map in tests); `check` walks its compact trees through one of its own.
pub trait TreeLoader {
    type Node: WalkNode;
    type Nodes: Iterator<Item = Self::Node>;
    fn load_tree(&self, id: &Id) -> crate::Result<Self::Nodes>;
}

impl<F: Fn(&Id) -> crate::Result<Tree>> TreeLoader for F {
    type Node = Node;
    type Nodes = std::vec::IntoIter<Node>;

    fn load_tree(&self, id: &Id) -> crate::Result<Self::Nodes> {
        Ok(self(id)?.nodes.into_iter())
    }
}

/// One node of the walk.
#[derive(Debug)]
pub struct Entry<N = Node> {
    /// The directory holding the node, relative to the walk's root (empty for the root
    /// tree's nodes); shared by all nodes of one directory.
    pub dir: Arc<Path>,
    pub node: N,
    /// How many directories lie between the root and the node: 0 for the root tree's nodes.
    pub depth: usize,
    /// The tree that lists the node.
    pub tree: Id,
}

impl<N: WalkNode> Entry<N> {
    /// The node's path relative to the walk's root.
    pub fn path(&self) -> PathBuf {
        self.dir.join(OsStr::from_bytes(self.node.name()))
    }
}

/// A tree the walk could not load; nothing below it was walked.
#[derive(Debug)]
pub struct WalkError {
    pub tree: Id,
    /// The directory the tree lists, relative to the walk's root (empty for the root).
    pub dir: PathBuf,
    pub error: Error,
}

impl From<WalkError> for Error {
    fn from(e: WalkError) -> Error {
        e.error
    }
}

struct Frame<I> {
    tree: Id,
    dir: Arc<Path>,
    nodes: I,
}

/// Depth-first walk over the trees below a root; see the module's documentation.
pub struct Walker<L: TreeLoader> {
    loader: L,
    stack: Vec<Frame<L::Nodes>>,
    /// The tree of the directory returned last, entered on the next call unless skipped.
    enter: Option<(Id, Arc<Path>)>,
}

impl<L: TreeLoader> Walker<L> {
    /// A walk over the tree `root` and everything below it.
    pub fn new(loader: L, root: Id) -> Self {
        Walker {
            loader,
            stack: Vec::new(),
            enter: Some((root, Arc::from(Path::new("")))),
        }
    }

    /// Leaves out everything below the node returned last (nothing when it has no subtree).
    pub fn skip_subtree(&mut self) {
        self.enter = None;
    }
}

impl<L: TreeLoader> Iterator for Walker<L> {
    type Item = Result<Entry<L::Node>, WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some((tree, dir)) = self.enter.take() {
            match self.loader.load_tree(&tree) {
                Ok(nodes) => self.stack.push(Frame { tree, dir, nodes }),
                Err(error) => {
                    return Some(Err(WalkError {
                        tree,
                        dir: dir.to_path_buf(),
                        error,
                    }))
                }
            }
        }
        loop {
            let depth = self.stack.len().checked_sub(1)?;
            let frame = self.stack.last_mut()?;
            let Some(node) = frame.nodes.next() else {
                self.stack.pop();
                continue;
            };
            let dir = frame.dir.clone();
            if let Some(sub) = node.subtree() {
                let path = dir.join(OsStr::from_bytes(node.name()));
                self.enter = Some((sub, Arc::from(path)));
            }
            return Some(Ok(Entry {
                dir,
                node,
                depth,
                tree: frame.tree,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::NodeKind;
    use std::cell::RefCell;
    use std::collections::HashMap;

    fn node(name: &str, subtree: Option<Id>) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind: if subtree.is_some() {
                NodeKind::Dir
            } else {
                NodeKind::File
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime_ns: 0,
            ctime_ns: 0,
            atime_ns: 0,
            size: 0,
            inode: 0,
            device: 0,
            links: 1,
            rdev: 0,
            xattrs: Vec::new(),
            link_target: Vec::new(),
            content: Vec::new(),
            subtree: subtree.map(crate::id::TreeId),
        }
    }

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    /// root(1): a/(2) [x, deep/(4) [y]], b, c/(3) [z], d/(5, missing)
    fn trees() -> HashMap<Id, Tree> {
        let t = |nodes| Tree { nodes };
        HashMap::from([
            (
                id(1),
                t(vec![
                    node("a", Some(id(2))),
                    node("b", None),
                    node("c", Some(id(3))),
                    node("d", Some(id(5))),
                ]),
            ),
            (id(2), t(vec![node("x", None), node("deep", Some(id(4)))])),
            (id(3), t(vec![node("z", None)])),
            (id(4), t(vec![node("y", None)])),
        ])
    }

    fn loader(trees: &HashMap<Id, Tree>) -> impl Fn(&Id) -> crate::Result<Tree> + '_ {
        |id| {
            trees
                .get(id)
                .cloned()
                .ok_or_else(|| Error::other(format!("no tree {}", id.short())))
        }
    }

    #[test]
    fn walks_depth_first_in_stored_order_with_paths_and_depths() {
        let trees = trees();
        let mut seen = Vec::new();
        let mut failed = Vec::new();
        for item in Walker::new(loader(&trees), id(1)) {
            match item {
                Ok(e) => seen.push((e.path().display().to_string(), e.depth, e.tree)),
                Err(e) => failed.push((e.tree, e.dir)),
            }
        }
        let want = [
            ("a", 0, id(1)),
            ("a/x", 1, id(2)),
            ("a/deep", 1, id(2)),
            ("a/deep/y", 2, id(4)),
            ("b", 0, id(1)),
            ("c", 0, id(1)),
            ("c/z", 1, id(3)),
            ("d", 0, id(1)),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(p, d, t)| (p.to_string(), *d, *t))
            .collect();
        assert_eq!(seen, want);
        // The missing tree is one error, after its directory's node, and the walk went on.
        assert_eq!(failed, vec![(id(5), PathBuf::from("d"))]);
    }

    #[test]
    fn skipped_subtrees_are_neither_loaded_nor_walked() {
        let trees = trees();
        let loads = RefCell::new(Vec::new());
        let counting = |i: &Id| {
            loads.borrow_mut().push(*i);
            loader(&trees)(i)
        };
        let mut walk = Walker::new(&counting, id(1));
        let mut seen = Vec::new();
        while let Some(item) = walk.next() {
            let e = item.unwrap();
            let path = e.path().display().to_string();
            if path == "a" || path == "d" {
                walk.skip_subtree();
            }
            seen.push(path);
        }
        assert_eq!(seen, ["a", "b", "c", "c/z", "d"]);
        assert_eq!(*loads.borrow(), vec![id(1), id(3)]);
    }

    #[test]
    fn a_root_that_cannot_be_loaded_is_one_error() {
        let trees = trees();
        let items: Vec<_> = Walker::new(loader(&trees), id(9)).collect();
        assert_eq!(items.len(), 1);
        let e = items.into_iter().next().unwrap().unwrap_err();
        assert_eq!((e.tree, e.dir), (id(9), PathBuf::new()));
    }
}

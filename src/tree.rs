//! Trees: turning file-system metadata into nodes, and finding paths in stored trees.

use crate::error::{Error, Result};
use crate::format::{Node, NodeKind, Tree};
use crate::host::NameCache;
use crate::id::TreeId;
use crate::repository::IndexedRepository;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

pub fn kind_of(meta: &std::fs::Metadata) -> NodeKind {
    let ft = meta.file_type();
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

/// A node for `path` from its (lstat) metadata, without content or subtree yet.
pub fn node_from_metadata(
    name: &[u8],
    path: &Path,
    meta: &std::fs::Metadata,
    names: &NameCache,
) -> Node {
    let kind = kind_of(meta);
    let link_target = if kind == NodeKind::Symlink {
        std::fs::read_link(path)
            .map(|t| std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str()).to_vec())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Node {
        name: name.to_vec(),
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        user: names.user(meta.uid()),
        group: names.group(meta.gid()),
        mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        atime_ns: ns(meta.atime(), meta.atime_nsec()),
        size: if kind == NodeKind::File {
            meta.size()
        } else {
            0
        },
        inode: meta.ino(),
        device: meta.dev(),
        links: meta.nlink(),
        rdev: meta.rdev(),
        xattrs: read_xattrs(path),
        link_target,
        content: Vec::new(),
        subtree: None,
    }
}

fn read_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = names
        .filter_map(|n| {
            let v = xattr::get(path, &n).ok().flatten()?;
            Some((
                std::os::unix::ffi::OsStrExt::as_bytes(n.as_os_str()).to_vec(),
                v,
            ))
        })
        .collect();
    out.sort();
    out
}

/// True when a file can be taken from the parent without reading it again.
pub fn unchanged(parent: &Node, now: &Node) -> bool {
    parent.kind == NodeKind::File
        && now.kind == NodeKind::File
        && parent.size == now.size
        && parent.mtime_ns == now.mtime_ns
        && parent.ctime_ns == now.ctime_ns
        && parent.inode == now.inode
}

impl Tree {
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

/// Finds the node at `path` (components separated by '/') below the root tree.
pub fn find_node(repo: &IndexedRepository, root: &TreeId, path: &str) -> Result<Node> {
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if comps.is_empty() {
        return Err(Error::usage("a path inside the snapshot is needed"));
    }
    let mut tree = repo.load_tree(root)?;
    for (i, c) in comps.iter().enumerate() {
        let node = tree
            .find(c.as_bytes())
            .cloned()
            .ok_or_else(|| Error::usage(format!("{path}: not in the snapshot")))?;
        if i + 1 == comps.len() {
            return Ok(node);
        }
        let sub = node
            .subtree
            .ok_or_else(|| Error::usage(format!("{path}: {c} is not a directory")))?;
        tree = repo.load_tree(&sub)?;
    }
    unreachable!()
}

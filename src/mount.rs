//! `mount`: the snapshots as a read-only FUSE file system. The top levels (`snapshots/`,
//! `hosts/`, `tags/`, `latest`) are built once from the snapshot list; inside a snapshot,
//! trees are loaded when a directory is first looked at and kept in a bounded cache, inode
//! numbers are handed out as entries are first seen, and file reads fetch only the data blobs
//! that cover the requested range (with a small cache of recently read blobs).

use crate::error::{Error, Result};
use crate::format::{Node, NodeKind, Snapshot, Tree};
use crate::id::{DataId, SnapshotId, TreeId};
use crate::index::Index;
use crate::repository::Repository;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes of decoded data blobs kept for reads that come back to them (the kernel reads a
/// file in pieces of at most 128 KiB; a blob is about 1 MiB).
const BLOB_CACHE_BYTES: u64 = 32 << 20;
/// Trees kept decoded; a tree is a few KiB to a few MiB.
const TREE_CACHE_ENTRIES: usize = 1024;
/// The kernel may keep names and attributes this long: nothing in a snapshot changes.
const TTL: Duration = Duration::from_secs(60);
/// Threads that answer the kernel: reads of different files go on at once.
const FUSE_THREADS: usize = 4;

/// A directory's entries: name and inode number.
type DirEntries = Vec<(Vec<u8>, u64)>;

/// What an inode is.
enum Entry {
    /// A directory of the top levels, with its fixed entries.
    Virtual(DirEntries),
    /// A symbolic link of the top levels (`latest`, `hosts/<host>/<time>`, ...).
    Link(Vec<u8>),
    /// The root directory of a snapshot.
    SnapshotRoot { tree: TreeId, time_ns: i64 },
    /// An entry inside a snapshot, as stored.
    Node(Arc<Node>),
}

/// Inode numbers handed out so far: inode `n` is `entries[n - 1]`.
#[derive(Default)]
struct Inodes {
    entries: Vec<Arc<Entry>>,
    /// Entries inside snapshots, by (parent inode, name): the same entry keeps its number.
    by_name: HashMap<(u64, Vec<u8>), u64>,
}

impl Inodes {
    fn add(&mut self, entry: Entry) -> u64 {
        self.entries.push(Arc::new(entry));
        self.entries.len() as u64
    }

    /// The inode of `node` in directory `parent`, numbered now if it is seen the first time.
    fn node_ino(&mut self, parent: u64, node: &Node) -> u64 {
        let key = (parent, node.name.clone());
        if let Some(&ino) = self.by_name.get(&key) {
            return ino;
        }
        let ino = self.add(Entry::Node(Arc::new(node.clone())));
        self.by_name.insert(key, ino);
        ino
    }
}

/// What a directory holds.
enum Listing {
    Fixed(DirEntries),
    Tree(Arc<Tree>),
}

/// A file opened for reading: where each of its blobs ends in the file.
struct OpenFile {
    blobs: Vec<DataId>,
    ends: Vec<u64>,
}

#[derive(Clone)]
struct ByLength;

impl quick_cache::Weighter<DataId, Arc<Vec<u8>>> for ByLength {
    fn weight(&self, _id: &DataId, bytes: &Arc<Vec<u8>>) -> u64 {
        bytes.len() as u64
    }
}

/// The file system: answers the kernel's requests from the repository.
pub struct SnapshotFs {
    repo: Arc<Repository>,
    index: Index,
    inodes: Mutex<Inodes>,
    trees: quick_cache::sync::Cache<TreeId, Arc<Tree>>,
    blobs: quick_cache::sync::Cache<DataId, Arc<Vec<u8>>, ByLength>,
    open_files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    /// Each open directory's entries, listed once at `opendir`: `readdir` comes back for
    /// every buffer-full, and listing a large folder each time would be quadratic.
    open_dirs: Mutex<HashMap<u64, Arc<DirEntries>>>,
    next_handle: AtomicU64,
    /// Owner and time shown for the top-level directories and links.
    uid: u32,
    gid: u32,
    top_time_ns: i64,
}

/// Keeps a name usable as one path component (host names and tags are free text).
fn component(name: &str) -> Vec<u8> {
    match name.replace('/', "_") {
        n if n.is_empty() || n == "." || n == ".." => b"_".to_vec(),
        n => n.into_bytes(),
    }
}

/// Each snapshot's directory name: its time, with its short id added where two share a time.
fn snapshot_names(snapshots: &[(SnapshotId, Snapshot)]) -> Vec<Vec<u8>> {
    let times: Vec<String> = snapshots
        .iter()
        .map(|(_, s)| crate::snapshot::rfc3339(s.time_unix_ns))
        .collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for t in &times {
        *count.entry(t).or_default() += 1;
    }
    snapshots
        .iter()
        .zip(&times)
        .map(|((id, _), t)| match count[t.as_str()] {
            1 => t.clone().into_bytes(),
            _ => format!("{t}-{}", id.short()).into_bytes(),
        })
        .collect()
}

impl SnapshotFs {
    /// The file system of `snapshots` (oldest first, as listed).
    pub fn new(
        repo: Arc<Repository>,
        index: Index,
        snapshots: &[(SnapshotId, Snapshot)],
    ) -> SnapshotFs {
        let mut inodes = Inodes::default();
        let root = inodes.add(Entry::Virtual(Vec::new()));
        let names = snapshot_names(snapshots);
        let mut listed = Vec::new();
        let mut hosts: std::collections::BTreeMap<Vec<u8>, DirEntries> = Default::default();
        let mut tags: std::collections::BTreeMap<Vec<u8>, DirEntries> = Default::default();
        for ((_, snap), name) in snapshots.iter().zip(&names) {
            let ino = inodes.add(Entry::SnapshotRoot {
                tree: snap.tree,
                time_ns: snap.time_unix_ns,
            });
            listed.push((name.clone(), ino));
            let up_two = [b"../../snapshots/".as_slice(), name].concat();
            let link = inodes.add(Entry::Link(up_two.clone()));
            hosts
                .entry(component(&snap.hostname))
                .or_default()
                .push((name.clone(), link));
            for tag in &snap.tags {
                let link = inodes.add(Entry::Link(up_two.clone()));
                tags.entry(component(tag))
                    .or_default()
                    .push((name.clone(), link));
            }
        }
        let mut top = vec![(b"snapshots".to_vec(), inodes.add(Entry::Virtual(listed)))];
        for (dir, groups) in [(b"hosts".to_vec(), hosts), (b"tags".to_vec(), tags)] {
            let children = groups
                .into_iter()
                .map(|(group, entries)| (group, inodes.add(Entry::Virtual(entries))))
                .collect();
            top.push((dir, inodes.add(Entry::Virtual(children))));
        }
        if let Some(newest) = names.last() {
            let target = [b"snapshots/".as_slice(), newest].concat();
            top.push((b"latest".to_vec(), inodes.add(Entry::Link(target))));
        }
        inodes.entries[root as usize - 1] = Arc::new(Entry::Virtual(top));
        SnapshotFs {
            repo,
            index,
            inodes: Mutex::new(inodes),
            trees: quick_cache::sync::Cache::new(TREE_CACHE_ENTRIES),
            blobs: quick_cache::sync::Cache::with_weighter(64, BLOB_CACHE_BYTES, ByLength),
            open_files: Mutex::new(HashMap::new()),
            open_dirs: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            top_time_ns: snapshots.last().map_or(0, |(_, s)| s.time_unix_ns),
        }
    }

    fn entry(&self, ino: INodeNo) -> Option<Arc<Entry>> {
        let inodes = self.inodes.lock().unwrap();
        let n = usize::try_from(ino.0).ok()?.checked_sub(1)?;
        inodes.entries.get(n).cloned()
    }

    fn tree(&self, id: &TreeId) -> Result<Arc<Tree>> {
        self.trees
            .get_or_insert_with(id, || self.repo.load_tree_in(&self.index, id).map(Arc::new))
    }

    fn blob(&self, id: &DataId) -> Result<Arc<Vec<u8>>> {
        self.blobs
            .get_or_insert_with(id, || self.repo.read_blob_in(&self.index, id).map(Arc::new))
    }

    /// What directory `ino` holds: fixed entries, or a snapshot's tree.
    fn listing(&self, ino: INodeNo) -> Result<Listing> {
        let tree_id = match self.entry(ino).as_deref() {
            Some(Entry::Virtual(children)) => return Ok(Listing::Fixed(children.clone())),
            Some(Entry::SnapshotRoot { tree, .. }) => *tree,
            Some(Entry::Node(node)) if node.kind == NodeKind::Dir => match node.subtree {
                Some(tree) => tree,
                None => return Ok(Listing::Fixed(Vec::new())),
            },
            _ => return Err(Error::other("not a directory")),
        };
        Ok(Listing::Tree(self.tree(&tree_id)?))
    }

    /// The entries of directory `ino` with their inode numbers (numbers handed out now for
    /// entries of a tree not seen before).
    fn children(&self, ino: INodeNo) -> Result<DirEntries> {
        let tree = match self.listing(ino)? {
            Listing::Fixed(children) => return Ok(children),
            Listing::Tree(tree) => tree,
        };
        let mut inodes = self.inodes.lock().unwrap();
        Ok(tree
            .nodes
            .iter()
            .map(|node| (node.name.clone(), inodes.node_ino(ino.0, node)))
            .collect())
    }

    /// The inode of entry `name` of directory `parent` (a tree's nodes are sorted by name:
    /// found without listing them all, so `ls -l` of a large folder stays linear).
    fn child(&self, parent: INodeNo, name: &[u8]) -> Result<Option<u64>> {
        Ok(match self.listing(parent)? {
            Listing::Fixed(children) => children
                .iter()
                .find(|(n, _)| n.as_slice() == name)
                .map(|&(_, ino)| ino),
            Listing::Tree(tree) => tree
                .nodes
                .binary_search_by(|n| n.name.as_slice().cmp(name))
                .ok()
                .map(|k| {
                    self.inodes
                        .lock()
                        .unwrap()
                        .node_ino(parent.0, &tree.nodes[k])
                }),
        })
    }

    fn attr(&self, ino: u64, entry: &Entry) -> FileAttr {
        let top = |kind, perm, size, time_ns| FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: system_time(time_ns),
            mtime: system_time(time_ns),
            ctime: system_time(time_ns),
            crtime: system_time(time_ns),
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        match entry {
            Entry::Virtual(_) => top(FileType::Directory, 0o555, 0, self.top_time_ns),
            Entry::Link(target) => top(
                FileType::Symlink,
                0o777,
                target.len() as u64,
                self.top_time_ns,
            ),
            Entry::SnapshotRoot { time_ns, .. } => top(FileType::Directory, 0o555, 0, *time_ns),
            Entry::Node(node) => node_attr(ino, node),
        }
    }

    /// Copies `size` bytes of `file` from `offset` on, reading only the blobs they lie in.
    fn read_range(&self, file: &OpenFile, offset: u64, size: u32) -> Result<Vec<u8>> {
        let end = (offset + size as u64).min(file.ends.last().copied().unwrap_or(0));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut k = file.ends.partition_point(|&e| e <= offset);
        let mut pos = offset;
        while pos < end && k < file.blobs.len() {
            let start = if k == 0 { 0 } else { file.ends[k - 1] };
            let blob = self.blob(&file.blobs[k])?;
            let from = (pos - start) as usize;
            let to = ((end - start) as usize).min(blob.len());
            if from >= to {
                return Err(Error::corrupt(
                    format!("blob {}", file.blobs[k].short()),
                    "shorter than the index says",
                ));
            }
            out.extend_from_slice(&blob[from..to]);
            pos = start + to as u64;
            k += 1;
        }
        Ok(out)
    }

    fn open_file(&self, node: &Node) -> Result<OpenFile> {
        let mut ends = Vec::with_capacity(node.content.len());
        let mut end = 0u64;
        for id in &node.content {
            let loc = self.index.get(id).ok_or_else(|| {
                Error::corrupt(format!("blob {}", id.short()), "not in the index")
            })?;
            end += loc.raw_length as u64;
            ends.push(end);
        }
        Ok(OpenFile {
            blobs: node.content.clone(),
            ends,
        })
    }
}

fn system_time(ns: i64) -> SystemTime {
    match ns >= 0 {
        true => UNIX_EPOCH + Duration::from_nanos(ns as u64),
        false => UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs()),
    }
}

fn node_attr(ino: u64, node: &Node) -> FileAttr {
    let kind = match node.kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    };
    let size = match node.kind {
        NodeKind::File => node.size,
        NodeKind::Symlink => node.link_target.len() as u64,
        _ => 0,
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: system_time(node.atime_ns),
        mtime: system_time(node.mtime_ns),
        ctime: system_time(node.ctime_ns),
        crtime: system_time(node.mtime_ns),
        kind,
        perm: (node.mode & 0o7777) as u16,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: node.uid,
        gid: node.gid,
        rdev: node.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// Logs a failed request (the kernel only sees EIO) and answers with it.
fn io_error(what: &str, e: &Error) -> Errno {
    eprintln!("ocvault: warning: mount: {what}: {e}");
    Errno::EIO
}

impl fuser::Filesystem for SnapshotFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = match self.child(parent, name.as_bytes()) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(io_error("list a directory", &e)),
        };
        match self.entry(INodeNo(ino)) {
            Some(entry) => reply.entry(&TTL, &self.attr(ino, &entry), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.entry(ino) {
            Some(entry) => reply.attr(&TTL, &self.attr(ino.0, &entry)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.entry(ino).as_deref() {
            Some(Entry::Link(target)) => reply.data(target),
            Some(Entry::Node(node)) if node.kind == NodeKind::Symlink => {
                reply.data(&node.link_target)
            }
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let entry = self.entry(ino);
        let node = match entry.as_deref() {
            Some(Entry::Node(node)) if node.kind == NodeKind::File => node,
            Some(_) => return reply.error(Errno::EISDIR),
            None => return reply.error(Errno::ENOENT),
        };
        match self.open_file(node) {
            Ok(file) => {
                let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
                self.open_files.lock().unwrap().insert(fh, Arc::new(file));
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Err(e) => reply.error(io_error("open a file", &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let file = self.open_files.lock().unwrap().get(&fh.0).cloned();
        let Some(file) = file else {
            return reply.error(Errno::EBADF);
        };
        match self.read_range(&file, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(io_error("read a file", &e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        self.open_files.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let children = match self.children(ino) {
            Ok(children) => children,
            Err(e) => return reply.error(io_error("list a directory", &e)),
        };
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let mut open_dirs = self.open_dirs.lock().unwrap();
        open_dirs.insert(fh, Arc::new(children));
        reply.opened(FileHandle(fh), FopenFlags::empty())
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.open_dirs.lock().unwrap().get(&fh.0).cloned();
        let Some(children) = listed else {
            return reply.error(Errno::EBADF);
        };
        // Offsets 1 and 2 are "." and ".."; child k (from 0) has offset k + 3.
        let dots = [(b".".as_slice(), ino.0), (b"..".as_slice(), ino.0)];
        let all = dots.into_iter().chain(
            children
                .iter()
                .map(|(name, child)| (name.as_slice(), *child)),
        );
        for (k, (name, child)) in all.enumerate().skip(offset as usize) {
            let kind = match self.entry(INodeNo(child)) {
                Some(entry) => self.attr(child, &entry).kind,
                None => continue,
            };
            if reply.add(INodeNo(child), k as u64 + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: fuser::ReplyEmpty,
    ) {
        self.open_dirs.lock().unwrap().remove(&fh.0);
        reply.ok();
    }
}

/// Mounts the file system on `dir` and serves it until SIGINT or SIGTERM, then unmounts.
/// Returns the signal as [`Error::Interrupted`] (exit 130 or 143), or `Ok` when the file
/// system was unmounted from outside (`fusermount3 -u`).
pub fn serve(fs: SnapshotFs, dir: &std::path::Path, allow_other: bool) -> Result<()> {
    use fuser::MountOption;
    // Not `interrupt::install`: its second signal ends the process at once, which would
    // leave a dead mount behind ("Transport endpoint is not connected"); here every signal
    // only asks for the unmount, which takes at most a few seconds.
    let signal = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        signal_hook::flag::register_usize(sig, signal.clone(), sig as usize)
            .map_err(|e| Error::other(format!("cannot handle signals: {e}")))?;
    }
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("ocvault".into()),
        MountOption::Subtype("ocvault".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(FUSE_THREADS);
    let session = fuser::spawn_mount(fs, dir, &config)
        .map_err(|e| Error::other(format!("cannot mount on {}: {e}", dir.display())))?;
    eprintln!(
        "ocvault: mounted on {}; Ctrl-C or SIGTERM unmounts",
        dir.display()
    );
    loop {
        let received = match signal.load(Ordering::Relaxed) as i32 {
            0 => None,
            libc::SIGINT => Some("SIGINT"),
            _ => Some("SIGTERM"),
        };
        if let Some(sig) = received {
            unmount(dir);
            // The session's own unmount then finds nothing mounted; its threads end as the
            // kernel closes the connection.
            drop(session);
            return Err(Error::Interrupted(sig));
        }
        if session.guard.is_finished() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Unmounts `dir`. Closing a file only queues its release, so the mount can be busy for a
/// moment after the last reader: retried for a while, then detached (a shell still inside it
/// keeps it until it leaves, but it is gone from the mount table).
fn unmount(dir: &std::path::Path) {
    use nix::mount::{umount2, MntFlags};
    for _ in 0..20 {
        match umount2(dir, MntFlags::empty()) {
            Err(nix::errno::Errno::EBUSY) => std::thread::sleep(Duration::from_millis(100)),
            _ => return,
        }
    }
    if let Err(e) = umount2(dir, MntFlags::MNT_DETACH) {
        eprintln!(
            "ocvault: warning: mount: cannot unmount {}: {e}",
            dir.display()
        );
    }
}

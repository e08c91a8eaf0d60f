//! Restore: plan every file from the snapshot's trees, then read each needed pack once,
//! verify and decrypt its blobs on all cores, and write them at their offsets in the files.

use crate::error::{Error, Result};
use crate::format::{Node, NodeKind};
use crate::id::{DataId, Id, TreeId};
use crate::index::Index;
use crate::repository::{IndexedRepository, Repository};
use crate::walker::Walker;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Bytes of a pack restore reads at once.
pub(crate) const RESTORE_PIECE: u64 = 4 << 20;

#[derive(Default, Clone)]
pub struct RestoreOptions {
    pub includes: Vec<String>,
    /// Allow restoring into a folder that is not empty, replacing files of the same name.
    pub overwrite: bool,
    /// After writing, read every restored file back and check it against the snapshot.
    pub verify: bool,
}

#[derive(Default)]
pub struct RestoreProgress {
    pub bytes: AtomicU64,
    pub files: AtomicU64,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Paths that could not be created or written (each named in `warnings`).
    pub not_restored: u64,
    pub warnings: Vec<String>,
    /// With `verify`: files read back, and those whose content differs from the snapshot.
    pub verified_files: u64,
    pub mismatches: Vec<String>,
}

/// One place a blob's plaintext goes: a file of the plan, at an offset.
struct Place {
    pack: u32,
    offset: u32,
    /// The blob's position in the index.
    blob: u32,
    file: u32,
    file_offset: u64,
}

/// A file to restore, with only what restore needs of its node: the plan holds one per file,
/// so this is most of restore's memory (about a third of a whole [`Node`] and its path).
struct PlannedFile {
    path: Box<Path>,
    content: Box<[DataId]>,
    xattrs: Box<[(Vec<u8>, Vec<u8>)]>,
    size: u64,
    atime_ns: i64,
    mtime_ns: i64,
    mode: u32,
    uid: u32,
    gid: u32,
}

impl PlannedFile {
    fn new(path: PathBuf, node: Node) -> PlannedFile {
        PlannedFile {
            path: path.into_boxed_path(),
            content: node.content.into_boxed_slice(),
            xattrs: node.xattrs.into_boxed_slice(),
            size: node.size,
            atime_ns: node.atime_ns,
            mtime_ns: node.mtime_ns,
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
        }
    }

    fn meta(&self) -> Meta<'_> {
        Meta {
            symlink: false,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            atime_ns: self.atime_ns,
            mtime_ns: self.mtime_ns,
            xattrs: &self.xattrs,
        }
    }
}

/// The metadata restore sets on an entry.
struct Meta<'a> {
    symlink: bool,
    mode: u32,
    uid: u32,
    gid: u32,
    atime_ns: i64,
    mtime_ns: i64,
    xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

impl<'a> From<&'a Node> for Meta<'a> {
    fn from(n: &'a Node) -> Meta<'a> {
        Meta {
            symlink: n.kind == NodeKind::Symlink,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            atime_ns: n.atime_ns,
            mtime_ns: n.mtime_ns,
            xattrs: &n.xattrs,
        }
    }
}

struct Plan {
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<PlannedFile>,
    others: Vec<(PathBuf, Node)>,
    /// Files that are hard links to an earlier file of the plan: (link path, index in files).
    links: Vec<(PathBuf, usize)>,
}

/// Paths restore could not create or write. Each is warned about once; whatever lies below a
/// folder that could not be created is left out without a warning of its own (a tree deeper
/// than PATH_MAX fails once, at its first folder too long to name).
struct Failures {
    /// Folders not created.
    dirs: std::collections::HashSet<PathBuf>,
    /// Per file of the plan: not created, or a write to it failed.
    files: Vec<std::sync::atomic::AtomicBool>,
    warnings: Mutex<Vec<String>>,
    count: AtomicU64,
}

impl Failures {
    fn new(files: usize) -> Failures {
        Failures {
            dirs: Default::default(),
            files: (0..files)
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            warnings: Mutex::new(Vec::new()),
            count: AtomicU64::new(0),
        }
    }

    fn warn(&self, msg: String) {
        self.warnings.lock().unwrap().push(msg);
    }

    /// A path that could not be restored: one warning, counted.
    fn failed(&self, path: &Path, what: &str, e: impl std::fmt::Display) {
        self.count.fetch_add(1, Relaxed);
        self.warn(format!(
            "{}: cannot {what}: {e}; not restored",
            path.display()
        ));
    }

    /// Marks a file failed; only its first failure is reported.
    fn file_failed(&self, fi: usize, path: &Path, what: &str, e: impl std::fmt::Display) {
        if !self.files[fi].swap(true, Relaxed) {
            self.failed(path, what, e);
        }
    }

    fn file_ok(&self, fi: usize) -> bool {
        !self.files[fi].load(Relaxed)
    }

    /// Whether `path` lies in a folder that could not be created.
    fn below_failed_dir(&self, path: &Path) -> bool {
        !self.dirs.is_empty() && path.ancestors().skip(1).any(|a| self.dirs.contains(a))
    }
}

pub fn restore(
    indexed: &IndexedRepository,
    root: &TreeId,
    target: &Path,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreSummary> {
    if target.exists() {
        let non_empty = std::fs::read_dir(target)
            .map_err(|e| Error::io(target, e))?
            .next()
            .is_some();
        if non_empty && !opts.overwrite {
            return Err(Error::usage(format!(
                "restore target {} is not empty; choose an empty folder or pass --overwrite",
                target.display()
            )));
        }
    }
    let (repo, index): (&Repository, &Index) = (indexed, indexed.index());
    let includes = build_globs(&opts.includes)?;
    let plan = make_plan(repo, index, root, target, includes.as_ref())?;
    // Before anything is written: packs in cold storage stop the restore (exit 13).
    indexed.refuse_cold(plan_packs(index, &plan))?;
    std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;

    let mut failures = Failures::new(plan.files.len());
    create_dirs(&plan, opts, &mut failures)?;
    create_files(&plan, opts, &failures)?;
    write_contents(repo, index, &plan, &failures, progress)?;
    crate::interrupt::check()?;
    finish_entries(&plan, opts, &failures, progress);
    let (mut verified_files, mut mismatches) = (0, Vec::new());
    if opts.verify {
        let results: Vec<Option<String>> = plan
            .files
            .par_iter()
            .enumerate()
            .filter(|(fi, _)| failures.file_ok(*fi))
            .map(|(_, file)| {
                verify_file(repo, index, file)
                    .err()
                    .map(|e| format!("{}: {}", file.path.display(), e))
            })
            .collect();
        verified_files = results.len() as u64;
        mismatches = results.into_iter().flatten().collect();
    }
    Ok(RestoreSummary {
        verified_files,
        mismatches,
        files: (plan.files.len() + plan.links.len()) as u64,
        dirs: plan.dirs.len() as u64,
        bytes: plan.files.iter().map(|f| f.size).sum(),
        not_restored: failures.count.load(Relaxed),
        warnings: failures.warnings.into_inner().unwrap(),
    })
}

/// The packs (numbers in `index`) holding the content of the planned files.
fn plan_packs(index: &Index, plan: &Plan) -> std::collections::HashSet<u32> {
    plan.files
        .iter()
        .flat_map(|f| f.content.iter())
        .filter_map(|id| index.get(id).map(|l| l.pack))
        .collect()
}

/// The data packs a restore of `root` (only paths matching `includes`, when given) reads:
/// numbers in `indexed.index()`. What `thaw` asks to be made readable.
pub fn needed_packs(
    indexed: &IndexedRepository,
    root: &TreeId,
    includes: &[String],
) -> Result<std::collections::HashSet<u32>> {
    let index = indexed.index();
    let globs = build_globs(includes)?;
    let plan = make_plan(indexed, index, root, Path::new(""), globs.as_ref())?;
    Ok(plan_packs(index, &plan))
}

/// Creates the snapshot's folders, parents first; a folder that cannot be created (a path
/// too long, no permission) is reported and everything below it skipped.
fn create_dirs(plan: &Plan, opts: &RestoreOptions, failures: &mut Failures) -> Result<()> {
    for (path, _) in &plan.dirs {
        crate::interrupt::check()?;
        if failures.below_failed_dir(path) {
            continue;
        }
        // With --overwrite, a symlink (or file) where the snapshot has a folder is replaced,
        // never followed: a link to /etc in the target must not make restore write there.
        // Parents come before their children, so no path below is reached through a link.
        if opts.overwrite {
            remove_existing(path);
        }
        if let Err(e) = std::fs::create_dir_all(path) {
            failures.failed(path, "create folder (nor anything below it)", e);
            failures.dirs.insert(path.clone());
        }
    }
    Ok(())
}

/// Creates every file at its final size: blobs can then be written in any order.
fn create_files(plan: &Plan, opts: &RestoreOptions, failures: &Failures) -> Result<()> {
    plan.files
        .par_iter()
        .enumerate()
        .try_for_each(|(fi, file)| -> Result<()> {
            crate::interrupt::check()?;
            let path = &file.path;
            if failures.below_failed_dir(path) {
                failures.files[fi].store(true, Relaxed);
                return Ok(());
            }
            if opts.overwrite {
                remove_existing(path);
            }
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .and_then(|f| f.set_len(file.size));
            if let Err(e) = created {
                failures.file_failed(fi, path, "create file", e);
            }
            Ok(())
        })
}

/// Reads each pack that holds needed blobs once and writes every blob where it goes.
fn write_contents(
    repo: &Repository,
    index: &Index,
    plan: &Plan,
    failures: &Failures,
    progress: &RestoreProgress,
) -> Result<()> {
    // Every place a blob goes, in pack and offset order: 24 bytes a file chunk, where maps
    // keyed by blob id cost several times that.
    let mut places: Vec<Place> = Vec::new();
    for (fi, file) in plan.files.iter().enumerate() {
        if !failures.file_ok(fi) {
            continue;
        }
        let mut off = 0u64;
        for id in file.content.iter() {
            let (pos, loc) = index.locate(id).ok_or_else(|| {
                Error::corrupt(format!("blob {}", id.short()), "not in the index")
            })?;
            places.push(Place {
                pack: loc.pack,
                offset: loc.offset,
                blob: pos as u32,
                file: fi as u32,
                file_offset: off,
            });
            off += loc.raw_length as u64;
        }
    }
    places.sort_unstable_by_key(|p| (p.pack, p.offset, p.file, p.file_offset));
    // Per pack: its blobs (index position and location, each once) and their places.
    type PackBlobs<'p> = (u32, Vec<(usize, crate::index::BlobLocation)>, &'p [Place]);
    let packs: Vec<PackBlobs> = places
        .chunk_by(|a, b| a.pack == b.pack)
        .map(|group| {
            let blobs = group
                .chunk_by(|a, b| a.blob == b.blob)
                .map(|g| (g[0].blob as usize, index.at(g[0].blob as usize).1))
                .collect();
            (group[0].pack, blobs, group)
        })
        .collect();
    repo.backend().with_read_pool(|| {
        packs
            .par_iter()
            .try_for_each(|(pack, blobs, places)| -> Result<()> {
                crate::interrupt::check()?;
                let info = index.pack(*pack);
                let path = crate::backend::FileKind::Pack.path(&info.id);
                // Read the needed blobs in runs of at most RESTORE_PIECE bytes (one blob may be
                // more), not the whole pack at once: each reader holds one run.
                let mut rest = &blobs[..];
                let mut places = &places[..];
                while !rest.is_empty() {
                    let start = rest[0].1.offset as u64;
                    let mut end = start + rest[0].1.length as u64;
                    let mut k = 1;
                    while k < rest.len() {
                        let e = rest[k].1.offset as u64 + rest[k].1.length as u64;
                        if e.max(end) - start > RESTORE_PIECE {
                            break;
                        }
                        end = end.max(e);
                        k += 1;
                    }
                    let (group, tail) = rest.split_at(k);
                    rest = tail;
                    let mut bytes = repo.backend().read_range(&path, start, end - start)?;
                    let mut raw = Vec::new();
                    for &(pos, loc) in group {
                        let s = (loc.offset as u64 - start) as usize;
                        raw.clear();
                        crate::pack::open_blob_in_place_into(
                            repo.keys(),
                            info.blob_type,
                            &index.at(pos).0,
                            &mut bytes[s..s + loc.length as usize],
                            loc.raw_length,
                            &mut raw,
                        )?;
                        let n = places.partition_point(|p| p.blob as usize == pos);
                        let (mine, later) = places.split_at(n);
                        places = later;
                        // Files start as holes of the right size: all-zero blobs stay holes.
                        if !raw.iter().all(|&b| b == 0) {
                            for place in mine {
                                write_place(plan, failures, place, &raw);
                            }
                        }
                        progress
                            .bytes
                            .fetch_add(raw.len() as u64 * mine.len() as u64, Relaxed);
                    }
                }
                Ok(())
            })
    })
}

/// Writes one blob into its file; a file that cannot be written is reported once and left.
fn write_place(plan: &Plan, failures: &Failures, place: &Place, raw: &[u8]) {
    let fi = place.file as usize;
    if !failures.file_ok(fi) {
        return;
    }
    let fpath = &plan.files[fi].path;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(fpath)
        .and_then(|f| f.write_all_at(raw, place.file_offset));
    if let Err(e) = written {
        failures.file_failed(fi, fpath, "write file", e);
    }
}

/// After the contents: hard links, special files, then metadata of files, special files and
/// (deepest first) folders, all by path (format-spec §9a).
fn finish_entries(
    plan: &Plan,
    opts: &RestoreOptions,
    failures: &Failures,
    progress: &RestoreProgress,
) {
    for (path, fi) in &plan.links {
        if !failures.file_ok(*fi) || failures.below_failed_dir(path) {
            continue;
        }
        if opts.overwrite {
            remove_existing(path);
        }
        let src = &plan.files[*fi].path;
        if let Err(e) = std::fs::hard_link(src, path) {
            failures.failed(path, "create hard link", e);
        }
    }
    let mut others: Vec<&(PathBuf, Node)> = plan
        .others
        .iter()
        .filter(|(path, _)| !failures.below_failed_dir(path))
        .collect();
    // Sockets are not made (a socket belongs to the program that listens on it): one
    // warning each, and no metadata to set.
    others.retain(|(path, node)| {
        if opts.overwrite {
            remove_existing(path);
        }
        match create_special(path, node) {
            Ok(()) => true,
            Err(e) if e.raw_os_error().is_some() => {
                failures.failed(path, "create", e);
                false
            }
            Err(e) => {
                failures.warn(format!("{}: {e}", path.display()));
                false
            }
        }
    });
    let is_root = nix::unistd::geteuid().is_root();
    plan.files.par_iter().enumerate().for_each(|(fi, file)| {
        if !failures.file_ok(fi) {
            return;
        }
        let path = &file.path;
        if let Err(e) = apply_metadata(path, file.meta(), is_root) {
            failures.warn(format!("{}: {e}", path.display()));
        }
        progress.files.fetch_add(1, Relaxed);
    });
    for (path, node) in &others {
        if let Err(e) = apply_metadata(path, node.into(), is_root) {
            failures.warn(format!("{}: {e}", path.display()));
        }
    }
    // Deepest directories first, so setting a child's times does not disturb its parent's.
    for (path, node) in plan.dirs.iter().rev() {
        if failures.dirs.contains(path) || failures.below_failed_dir(path) {
            continue;
        }
        if let Err(e) = apply_metadata(path, node.into(), is_root) {
            failures.warn(format!("{}: {e}", path.display()));
        }
    }
}

/// Reads a restored file back and checks every chunk against the snapshot's blob ids.
fn verify_file(
    repo: &Repository,
    index: &Index,
    file: &PlannedFile,
) -> std::result::Result<(), String> {
    use std::io::Read;
    // Reading back must not move the atime restore has just set.
    let mut f = crate::archiver::open_noatime(&file.path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len != file.size {
        return Err(format!("size {len}, snapshot has {}", file.size));
    }
    let mut buf = Vec::new();
    for (i, id) in file.content.iter().enumerate() {
        let loc = index.get(id).ok_or("blob not in the index")?;
        buf.resize(loc.raw_length as usize, 0);
        f.read_exact(&mut buf).map_err(|e| e.to_string())?;
        if repo.keys().blob_id(&buf) != **id {
            return Err(format!("chunk {i} differs from the snapshot"));
        }
    }
    Ok(())
}

fn remove_existing(path: &Path) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.is_dir() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn build_globs(patterns: &[String]) -> Result<Option<globset::GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = globset::GlobSetBuilder::new();
    for p in patterns {
        let p = p.trim_start_matches('/');
        b.add(
            globset::Glob::new(p)
                .map_err(|e| Error::usage(format!("invalid include pattern {p:?}: {e}")))?,
        );
    }
    Ok(Some(b.build().map_err(|e| {
        Error::usage(format!("invalid include patterns: {e}"))
    })?))
}

/// Plans the restore of the tree `root` into `target`. With include patterns, only what
/// they match is planned, with the folders that lead to it.
fn make_plan(
    repo: &Repository,
    index: &Index,
    root: &TreeId,
    target: &Path,
    includes: Option<&globset::GlobSet>,
) -> Result<Plan> {
    let mut plan = Plan {
        dirs: Vec::new(),
        files: Vec::new(),
        others: Vec::new(),
        links: Vec::new(),
    };
    let mut seen_inodes: HashMap<(u64, u64), usize> = HashMap::new();
    // Per folder of the plan: whether it stays (it is included, or holds something that is).
    let mut keep: Vec<bool> = Vec::new();
    // The folders the walk is in, outermost first: (position in the plan, included).
    let mut open: Vec<(usize, bool)> = Vec::new();
    // Keeps the open folders; a kept folder's ancestors are kept already.
    let keep_open = |open: &[(usize, bool)], keep: &mut Vec<bool>| {
        for (pos, _) in open.iter().rev() {
            if std::mem::replace(&mut keep[*pos], true) {
                break;
            }
        }
    };
    let load = |id: &Id| repo.load_tree_in(index, &TreeId(*id));
    let mut walk = Walker::new(&load, **root);
    while let Some(entry) = walk.next() {
        let entry = entry?;
        open.truncate(entry.depth);
        let node = &entry.node;
        let tree = || format!("tree {}", entry.tree.short());
        if node.name.is_empty()
            || node.name == b"."
            || node.name == b".."
            || node.name.contains(&b'/')
        {
            return Err(Error::corrupt(tree(), "invalid entry name"));
        }
        let rel = entry.path();
        let included = open.last().map_or(includes.is_none(), |(_, inc)| *inc)
            || includes.is_some_and(|g| g.is_match(&*rel.to_string_lossy()));
        let path = target.join(&rel);
        if node.kind == NodeKind::Dir {
            if node.subtree.is_none() {
                return Err(Error::corrupt(tree(), "directory without subtree"));
            }
            if included {
                keep_open(&open, &mut keep);
            }
            open.push((plan.dirs.len(), included));
            plan.dirs.push((path, entry.node));
            keep.push(included);
            continue;
        }
        // Only folders have entries.
        walk.skip_subtree();
        if !included {
            continue;
        }
        keep_open(&open, &mut keep);
        let node = entry.node;
        match node.kind {
            NodeKind::File => {
                if node.links > 1 && node.inode != 0 {
                    if let Some(&first) = seen_inodes.get(&(node.device, node.inode)) {
                        plan.links.push((path, first));
                        continue;
                    }
                    seen_inodes.insert((node.device, node.inode), plan.files.len());
                }
                plan.files.push(PlannedFile::new(path, node));
            }
            _ => plan.others.push((path, node)),
        }
    }
    let mut keep = keep.into_iter();
    plan.dirs.retain(|_| keep.next() == Some(true));
    Ok(plan)
}

fn create_special(path: &Path, node: &Node) -> std::io::Result<()> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    let mode = Mode::from_bits_truncate(node.mode & 0o7777);
    match node.kind {
        NodeKind::Symlink => {
            return std::os::unix::fs::symlink(OsStr::from_bytes(&node.link_target), path)
        }
        NodeKind::Fifo => nix::unistd::mkfifo(path, mode)?,
        NodeKind::CharDevice => mknod(path, SFlag::S_IFCHR, mode, node.rdev)?,
        NodeKind::BlockDevice => mknod(path, SFlag::S_IFBLK, mode, node.rdev)?,
        _ => {
            return Err(std::io::Error::other(
                "socket not restored (sockets are made by the program that listens on them)",
            ))
        }
    }
    Ok(())
}

/// Sets owner, xattrs, mode and times by path, never opening the entry: opening a FIFO
/// blocks until a writer comes, and opening a device node talks to the device. Owner first,
/// since `chown` clears setuid and setgid bits that the mode then sets again; times last.
fn apply_metadata(path: &Path, node: Meta, is_root: bool) -> std::io::Result<()> {
    if is_root {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
    }
    for (k, v) in node.xattrs {
        // lsetxattr: a symlink's own attributes, never its target's.
        let _ = xattr::set(path, OsStr::from_bytes(k), v);
    }
    // A symlink has no mode of its own (its node says 0o777), and chmod would follow it.
    if !node.symlink {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode & 0o7777))?;
    }
    let atime = filetime::FileTime::from_unix_time(
        node.atime_ns.div_euclid(1_000_000_000),
        node.atime_ns.rem_euclid(1_000_000_000) as u32,
    );
    let mtime = filetime::FileTime::from_unix_time(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    // utimensat(AT_SYMLINK_NOFOLLOW) on the path, for every kind (filetime's
    // `set_file_times` opens the file).
    filetime::set_symlink_file_times(path, atime, mtime)
}

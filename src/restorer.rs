//! Restore: plan every file from the snapshot's trees, then read each needed pack once,
//! verify and decrypt its blobs on all cores, and write them at their offsets in the files.

use crate::error::{Error, Result};
use crate::format::{Node, NodeKind};
use crate::id::Id;
use crate::index::Index;
use crate::repository::Repository;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Bytes of a pack restore reads at once.
const RESTORE_PIECE: u64 = 4 << 20;

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
    pub warnings: Vec<String>,
    /// With `verify`: files read back, and those whose content differs from the snapshot.
    pub verified_files: u64,
    pub mismatches: Vec<String>,
}

struct Plan {
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<(PathBuf, Node)>,
    others: Vec<(PathBuf, Node)>,
    /// Files that are hard links to an earlier file of the plan: (link path, index in files).
    links: Vec<(PathBuf, usize)>,
}

pub fn restore(
    repo: &Repository,
    index: &Index,
    root: &Id,
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
    std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let includes = build_globs(&opts.includes)?;
    let mut plan = Plan {
        dirs: Vec::new(),
        files: Vec::new(),
        others: Vec::new(),
        links: Vec::new(),
    };
    let mut seen_inodes: HashMap<(u64, u64), usize> = HashMap::new();
    walk(
        repo,
        index,
        root,
        target,
        "",
        includes.as_ref(),
        includes.is_none(),
        &mut plan,
        &mut seen_inodes,
    )?;

    let warnings = Mutex::new(Vec::new());
    for (path, _) in &plan.dirs {
        // With --overwrite, a symlink (or file) where the snapshot has a folder is replaced,
        // never followed: a link to /etc in the target must not make restore write there.
        // Parents come before their children, so no path below is reached through a link.
        if opts.overwrite {
            remove_existing(path);
        }
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
    }
    // Create every file at its final size: blobs can then be written in any order.
    plan.files
        .par_iter()
        .try_for_each(|(path, node)| -> Result<()> {
            if opts.overwrite {
                remove_existing(path);
            }
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| Error::io(path, e))?;
            f.set_len(node.size).map_err(|e| Error::io(path, e))?;
            Ok(())
        })?;

    // blob → every (file, offset) that holds it
    let mut wanted: HashMap<Id, Vec<(u32, u64)>> = HashMap::new();
    for (fi, (_, node)) in plan.files.iter().enumerate() {
        let mut off = 0u64;
        for id in &node.content {
            let loc = index.get(id).ok_or_else(|| {
                Error::corrupt(format!("blob {}", id.short()), "not in the index")
            })?;
            wanted.entry(*id).or_default().push((fi as u32, off));
            off += loc.raw_length as u64;
        }
    }
    let mut by_pack: HashMap<u32, Vec<(Id, crate::index::BlobLocation)>> = HashMap::new();
    for id in wanted.keys() {
        let loc = index.get(id).unwrap();
        by_pack.entry(loc.pack).or_default().push((*id, loc));
    }
    let mut packs: Vec<_> = by_pack.into_iter().collect();
    packs.sort_by_key(|(p, _)| *p);
    repo.backend.with_read_pool(|| {
        packs
            .par_iter_mut()
            .try_for_each(|(pack, blobs)| -> Result<()> {
                blobs.sort_by_key(|(_, l)| l.offset);
                let info = index.pack(*pack);
                let path = crate::backend::FileKind::Pack.path(&info.id);
                // Read the needed blobs in runs of at most RESTORE_PIECE bytes (one blob may be
                // more), not the whole pack at once: each reader holds one run.
                let mut rest = &blobs[..];
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
                    let bytes = repo.backend.read_range(&path, start, end - start)?;
                    for (id, loc) in group {
                        let s = (loc.offset as u64 - start) as usize;
                        let raw = crate::pack::open_blob(
                            &repo.keys,
                            info.blob_type,
                            id,
                            &bytes[s..s + loc.length as usize],
                            loc.raw_length,
                        )?;
                        let zero = raw.iter().all(|&b| b == 0);
                        for &(fi, off) in &wanted[id] {
                            // Files start as holes of the right size: all-zero blobs stay holes.
                            if zero {
                                continue;
                            }
                            let fpath = &plan.files[fi as usize].0;
                            let f = std::fs::OpenOptions::new()
                                .write(true)
                                .open(fpath)
                                .map_err(|e| Error::io(fpath, e))?;
                            f.write_all_at(&raw, off).map_err(|e| Error::io(fpath, e))?;
                        }
                        progress
                            .bytes
                            .fetch_add(raw.len() as u64 * wanted[id].len() as u64, Relaxed);
                    }
                }
                Ok(())
            })
    })?;

    for (path, fi) in &plan.links {
        if opts.overwrite {
            remove_existing(path);
        }
        let src = &plan.files[*fi].0;
        std::fs::hard_link(src, path).map_err(|e| Error::io(path, e))?;
    }
    for (path, node) in &plan.others {
        if opts.overwrite {
            remove_existing(path);
        }
        if let Err(e) = create_special(path, node) {
            warnings
                .lock()
                .unwrap()
                .push(format!("{}: {e}", path.display()));
        }
    }
    let is_root = unsafe { libc::geteuid() } == 0;
    plan.files.par_iter().for_each(|(path, node)| {
        if let Err(e) = apply_metadata(path, node, is_root) {
            warnings
                .lock()
                .unwrap()
                .push(format!("{}: {e}", path.display()));
        }
        progress.files.fetch_add(1, Relaxed);
    });
    for (path, node) in &plan.others {
        if let Err(e) = apply_metadata(path, node, is_root) {
            warnings
                .lock()
                .unwrap()
                .push(format!("{}: {e}", path.display()));
        }
    }
    // Deepest directories first, so setting a child's times does not disturb its parent's.
    for (path, node) in plan.dirs.iter().rev() {
        if let Err(e) = apply_metadata(path, node, is_root) {
            warnings
                .lock()
                .unwrap()
                .push(format!("{}: {e}", path.display()));
        }
    }
    let (mut verified_files, mut mismatches) = (0, Vec::new());
    if opts.verify {
        let results: Vec<Option<String>> = plan
            .files
            .par_iter()
            .map(|(path, node)| {
                verify_file(repo, index, path, node)
                    .err()
                    .map(|e| format!("{}: {e}", path.display()))
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
        bytes: plan.files.iter().map(|(_, n)| n.size).sum(),
        warnings: warnings.into_inner().unwrap(),
    })
}

/// Reads a restored file back and checks every chunk against the snapshot's blob ids.
fn verify_file(
    repo: &Repository,
    index: &Index,
    path: &Path,
    node: &Node,
) -> std::result::Result<(), String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len != node.size {
        return Err(format!("size {len}, snapshot has {}", node.size));
    }
    let mut buf = Vec::new();
    for (i, id) in node.content.iter().enumerate() {
        let loc = index.get(id).ok_or("blob not in the index")?;
        buf.resize(loc.raw_length as usize, 0);
        f.read_exact(&mut buf).map_err(|e| e.to_string())?;
        if repo.keys.blob_id(&buf) != *id {
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

#[allow(clippy::too_many_arguments)]
fn walk(
    repo: &Repository,
    index: &Index,
    tree_id: &Id,
    dir: &Path,
    rel: &str,
    includes: Option<&globset::GlobSet>,
    included: bool,
    plan: &mut Plan,
    seen: &mut HashMap<(u64, u64), usize>,
) -> Result<bool> {
    let tree = repo.load_tree(index, tree_id)?;
    let mut any = false;
    for node in tree.nodes {
        if node.name.is_empty()
            || node.name == b"."
            || node.name == b".."
            || node.name.contains(&b'/')
        {
            return Err(Error::corrupt(
                format!("tree {}", tree_id.short()),
                "invalid entry name",
            ));
        }
        let path = dir.join(OsStr::from_bytes(&node.name));
        let child_rel = if rel.is_empty() {
            node.name_lossy()
        } else {
            format!("{rel}/{}", node.name_lossy())
        };
        let inc = included || includes.is_some_and(|g| g.is_match(&child_rel));
        match node.kind {
            NodeKind::Dir => {
                let pos = plan.dirs.len();
                plan.dirs.push((path.clone(), node.clone()));
                let sub = node.subtree.ok_or_else(|| {
                    Error::corrupt(
                        format!("tree {}", tree_id.short()),
                        "directory without subtree",
                    )
                })?;
                if walk(
                    repo, index, &sub, &path, &child_rel, includes, inc, plan, seen,
                )? || inc
                {
                    any = true;
                } else {
                    plan.dirs.remove(pos);
                }
            }
            NodeKind::File if inc => {
                any = true;
                if node.links > 1 && node.inode != 0 {
                    if let Some(&first) = seen.get(&(node.device, node.inode)) {
                        plan.links.push((path, first));
                        continue;
                    }
                    seen.insert((node.device, node.inode), plan.files.len());
                }
                plan.files.push((path, node));
            }
            _ if inc => {
                any = true;
                plan.others.push((path, node));
            }
            _ => {}
        }
    }
    Ok(any)
}

fn create_special(path: &Path, node: &Node) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let rc = match node.kind {
        NodeKind::Symlink => {
            return std::os::unix::fs::symlink(OsStr::from_bytes(&node.link_target), path)
        }
        NodeKind::Fifo => unsafe { libc::mkfifo(c.as_ptr(), (node.mode & 0o7777) as libc::mode_t) },
        NodeKind::CharDevice => unsafe {
            libc::mknod(
                c.as_ptr(),
                libc::S_IFCHR | (node.mode & 0o7777) as libc::mode_t,
                node.rdev as libc::dev_t,
            )
        },
        NodeKind::BlockDevice => unsafe {
            libc::mknod(
                c.as_ptr(),
                libc::S_IFBLK | (node.mode & 0o7777) as libc::mode_t,
                node.rdev as libc::dev_t,
            )
        },
        _ => return Err(std::io::Error::other("sockets are not restored")),
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn apply_metadata(path: &Path, node: &Node, is_root: bool) -> std::io::Result<()> {
    if is_root {
        let c =
            std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        if unsafe { libc::lchown(c.as_ptr(), node.uid, node.gid) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (k, v) in &node.xattrs {
        let _ = xattr::set(path, OsStr::from_bytes(k), v);
    }
    let atime = filetime::FileTime::from_unix_time(
        node.atime_ns.div_euclid(1_000_000_000),
        node.atime_ns.rem_euclid(1_000_000_000) as u32,
    );
    let mtime = filetime::FileTime::from_unix_time(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    if node.kind == NodeKind::Symlink {
        filetime::set_symlink_file_times(path, atime, mtime)?;
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode & 0o7777))?;
        filetime::set_file_times(path, atime, mtime)?;
    }
    Ok(())
}

/// Writes one file's content to `out`, reading and decrypting a window of blobs in parallel.
pub fn dump(
    repo: &Repository,
    index: &Index,
    node: &Node,
    out: &mut dyn std::io::Write,
) -> Result<u64> {
    if node.kind != NodeKind::File {
        return Err(Error::usage(format!(
            "{} is not a regular file",
            node.name_lossy()
        )));
    }
    let mut written = 0u64;
    for window in node.content.chunks(32) {
        let blobs: Vec<Vec<u8>> = window
            .par_iter()
            .map(|id| repo.read_blob(index, id))
            .collect::<Result<_>>()?;
        for b in blobs {
            out.write_all(&b)
                .map_err(|e| Error::io("standard output", e))?;
            written += b.len() as u64;
        }
    }
    out.flush().map_err(|e| Error::io("standard output", e))?;
    Ok(written)
}

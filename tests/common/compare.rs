//! Exact comparison of restored trees and files with their sources.

use super::trees::{sorted_names, walk};
use filetime::FileTime;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// `cp -a FROM TO` (modes, times, links kept), creating TO's parent folders.
pub fn copy_tree(from: &Path, to: &Path) {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// Streaming blake3 hash of a file's contents.
pub fn hash_file(path: &Path) -> blake3::Hash {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {path:?}: {e}"));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize()
}

/// Offset of the first differing byte of two files (None if identical).
fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    let (mut fa, mut fb) = (File::open(a).ok()?, File::open(b).ok()?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut off = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        let n = na.min(nb);
        if ba[..n] != bb[..n] {
            let i = ba[..n]
                .iter()
                .zip(&bb[..n])
                .position(|(x, y)| x != y)
                .unwrap();
            return Some(off + i as u64);
        }
        if na != nb {
            return Some(off + n as u64);
        }
        if na == 0 {
            return None;
        }
        off += n as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    n
}

fn kind_of(m: &fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "directory"
    } else if t.is_file() {
        "regular file"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "char device"
    } else if t.is_block_device() {
        "block device"
    } else {
        "unknown"
    }
}

fn fmt_time(t: FileTime) -> String {
    format!("{}.{:09}", t.unix_seconds(), t.nanoseconds())
}

/// Assert that `actual` is an exact copy of `expected`, recursively and
/// without following symlinks: same names (raw bytes), file types, regular
/// file contents (streaming blake3), permission bits (mode & 0o7777, not for
/// symlinks), mtimes to the nanosecond (files, symlinks, directories),
/// symlink targets, device numbers, and hard-link structure (names sharing an
/// inode in `expected` share one in `actual`, and vice versa). The metadata
/// of the two roots themselves is not compared, only their contents.
/// Panics listing every difference found (up to 50) with its relative path.
pub fn assert_trees_equal(expected: &Path, actual: &Path) {
    let mut errs: Vec<String> = Vec::new();
    // (dev, ino) -> relative paths, for regular files with nlink > 1.
    let mut exp_links: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    let mut act_links: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    let mut act_inode: HashMap<PathBuf, (u64, u64)> = HashMap::new();
    let mut exp_inode: HashMap<PathBuf, (u64, u64)> = HashMap::new();

    for (root, what) in [(expected, "expected"), (actual, "actual")] {
        match fs::symlink_metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => panic!("{what} root {root:?} is a {}, not a directory", kind_of(&m)),
            Err(e) => panic!("{what} root {root:?}: {e}"),
        }
    }

    let mut stack = vec![PathBuf::new()];
    'dirs: while let Some(rel) = stack.pop() {
        let en = sorted_names(&expected.join(&rel));
        let an = sorted_names(&actual.join(&rel));
        let es: BTreeSet<&[u8]> = en.iter().map(|n| n.as_bytes()).collect();
        let as_: BTreeSet<&[u8]> = an.iter().map(|n| n.as_bytes()).collect();
        for n in &en {
            if !as_.contains(n.as_bytes()) {
                errs.push(format!("{:?}: missing in actual", rel.join(n)));
            }
        }
        for n in &an {
            if !es.contains(n.as_bytes()) {
                errs.push(format!(
                    "{:?}: unexpected extra entry in actual",
                    rel.join(n)
                ));
            }
        }
        for name in en.iter().filter(|n| as_.contains(n.as_bytes())) {
            if errs.len() >= 50 {
                break 'dirs;
            }
            let r = rel.join(name);
            let (ep, ap) = (expected.join(&r), actual.join(&r));
            let em = fs::symlink_metadata(&ep).unwrap();
            let am = fs::symlink_metadata(&ap).unwrap();
            let (ek, ak) = (kind_of(&em), kind_of(&am));
            if ek != ak {
                errs.push(format!("{r:?}: type differs: expected {ek}, actual {ak}"));
                continue;
            }
            if ek != "symlink" && em.mode() & 0o7777 != am.mode() & 0o7777 {
                errs.push(format!(
                    "{r:?}: mode differs: expected {:04o}, actual {:04o}",
                    em.mode() & 0o7777,
                    am.mode() & 0o7777
                ));
            }
            let (et, at) = (
                FileTime::from_last_modification_time(&em),
                FileTime::from_last_modification_time(&am),
            );
            if et != at {
                errs.push(format!(
                    "{r:?} ({ek}): mtime differs: expected {}, actual {}",
                    fmt_time(et),
                    fmt_time(at)
                ));
            }
            match ek {
                "directory" => stack.push(r),
                "symlink" => {
                    let (etg, atg) = (fs::read_link(&ep).unwrap(), fs::read_link(&ap).unwrap());
                    if etg.as_os_str().as_bytes() != atg.as_os_str().as_bytes() {
                        errs.push(format!(
                            "{r:?}: symlink target differs: expected {etg:?}, actual {atg:?}"
                        ));
                    }
                }
                "regular file" => {
                    if em.len() != am.len() {
                        errs.push(format!(
                            "{r:?}: size differs: expected {} bytes, actual {} bytes",
                            em.len(),
                            am.len()
                        ));
                    } else if hash_file(&ep) != hash_file(&ap) {
                        let off = first_difference(&ep, &ap);
                        errs.push(format!(
                            "{r:?}: contents differ (same size {}), first difference at byte {:?}",
                            em.len(),
                            off
                        ));
                    }
                    if em.nlink() > 1 {
                        exp_links
                            .entry((em.dev(), em.ino()))
                            .or_default()
                            .push(r.clone());
                        exp_inode.insert(r.clone(), (em.dev(), em.ino()));
                    }
                    if am.nlink() > 1 {
                        act_links
                            .entry((am.dev(), am.ino()))
                            .or_default()
                            .push(r.clone());
                        act_inode.insert(r.clone(), (am.dev(), am.ino()));
                    }
                }
                "char device" | "block device" if em.rdev() != am.rdev() => {
                    errs.push(format!(
                        "{r:?}: device number differs: expected {:#x}, actual {:#x}",
                        em.rdev(),
                        am.rdev()
                    ));
                }
                _ => {}
            }
        }
    }

    // Hard-link structure, both directions.
    for (links, other, a, b) in [
        (&exp_links, &act_inode, "expected", "actual"),
        (&act_links, &exp_inode, "actual", "expected"),
    ] {
        for group in links.values().filter(|g| g.len() > 1) {
            let first = other.get(&group[0]);
            for p in &group[1..] {
                if first.is_none() || other.get(p) != first {
                    errs.push(format!(
                        "hard links differ: {:?} and {:?} share an inode in {a} but not in {b}",
                        group[0], p
                    ));
                }
            }
        }
    }

    if !errs.is_empty() {
        let more = if errs.len() >= 50 {
            "\n  ... (stopped after 50)"
        } else {
            ""
        };
        panic!(
            "trees differ: expected {expected:?}, actual {actual:?}\n  {}{more}",
            errs.join("\n  ")
        );
    }
}

/// Stable hex digest over names (raw bytes), types, modes (& 0o7777, not for
/// symlinks), regular file contents and symlink targets. mtimes and inode
/// identity are *not* included.
pub fn tree_digest(root: &Path) -> String {
    let mut h = blake3::Hasher::new();
    for rel in walk(root) {
        let p = root.join(&rel);
        let m = fs::symlink_metadata(&p).unwrap();
        let name = rel.as_os_str().as_bytes();
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name);
        h.update(kind_of(&m).as_bytes());
        if !m.file_type().is_symlink() {
            h.update(&(m.mode() & 0o7777).to_le_bytes());
        }
        if m.is_file() {
            h.update(&m.len().to_le_bytes());
            h.update(hash_file(&p).as_bytes());
        } else if m.file_type().is_symlink() {
            let t = fs::read_link(&p).unwrap();
            let t = t.as_os_str().as_bytes();
            h.update(&(t.len() as u64).to_le_bytes());
            h.update(t);
        }
    }
    h.finalize().to_hex().to_string()
}

/// Sum of apparent sizes of regular files below `path` (recursive, symlinks
/// not followed; hard-linked files count once per name).
pub fn dir_size(path: &Path) -> u64 {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {path:?}: {e}"));
    if m.is_file() {
        return m.len();
    }
    walk(path)
        .iter()
        .filter_map(|r| fs::symlink_metadata(path.join(r)).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Bytes actually allocated on disk for a file (st_blocks * 512); useful to
/// check that a restored sparse file stayed sparse.
pub fn allocated_bytes(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().blocks() * 512
}

/// Hashes of every file in a folder, to prove a failed command changed nothing.
pub fn fingerprint(dir: &Path) -> Vec<(PathBuf, blake3::Hash)> {
    let mut v: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| dir.join(p))
        .filter(|p| p.is_file())
        .map(|p| (p.clone(), hash_file(&p)))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!v.is_empty(), "nothing to fingerprint in {}", dir.display());
    v
}

//! Deterministic, nasty source trees ([`generate_tree`]) and their day-to-day changes
//! ([`mutate_tree`]); every name, mode, mtime and byte follows from the seed.

use super::rng::{mix, text_bytes, Rng};
use filetime::FileTime;
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What [`generate_tree`] creates. Use `TreeSpec { big_file_bytes: 300 << 20,
/// ..Default::default() }` to override single knobs.
#[derive(Clone, Debug)]
pub struct TreeSpec {
    /// Number of empty files (in `empty/`).
    pub empty_files: usize,
    /// Size of `big.bin` (mix of random, text-like and zero regions); 0 = none.
    pub big_file_bytes: u64,
    /// Number of 0..8 KiB files spread over ~100 dirs under `small/`
    /// (about 1 in 5 duplicates an earlier file's contents).
    pub small_files: usize,
    /// Symlinks in `links/`: relative to file/dir, dangling, absolute, loop.
    pub symlinks: bool,
    /// Hard links in `hard/` (a pair and a triple across directories).
    pub hardlinks: bool,
    /// Odd names in `odd/`: unicode, emoji, spaces, leading dash, newline,
    /// tab, backslash, non-UTF-8 bytes, 255-byte name.
    pub odd_names: bool,
    /// Depth of the `deep/l000/l001/...` chain (file `bottom.txt` at the end).
    pub deep_nesting: usize,
    /// Apparent size of the sparse file `sparse.img`; 0 = none.
    pub sparse_file_bytes: u64,
    /// Seed for everything.
    pub seed: u64,
    /// Also create setuid file / sticky dir in `modes/` (mode & 0o7777 checks).
    pub special_modes: bool,
}

impl Default for TreeSpec {
    /// A small tree (~1.5 MB of data, a few hundred entries).
    fn default() -> Self {
        TreeSpec {
            empty_files: 5,
            big_file_bytes: 1 << 20,
            small_files: 200,
            symlinks: true,
            hardlinks: true,
            odd_names: true,
            deep_nesting: 40,
            sparse_file_bytes: 8 << 20,
            seed: 42,
            special_modes: true,
        }
    }
}

fn write_file(path: &Path, data: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {parent:?}: {e}"));
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
    set_mode(path, mode);
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {path:?}: {e}"));
    set_mode(path, mode);
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {path:?}: {e}"));
}

fn mk_symlink(target: impl AsRef<Path>, link: &Path) {
    symlink(target.as_ref(), link).unwrap_or_else(|e| panic!("symlink {link:?}: {e}"));
}

/// Buffered file writer that hands full 4 MiB chunks to a background thread,
/// so content generation overlaps the (page-cache) write syscalls.
struct PipeWriter {
    path: PathBuf,
    buf: Vec<u8>,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    handle: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl PipeWriter {
    const CHUNK: usize = 4 << 20;

    fn create(path: &Path) -> Self {
        let mut f = File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        let (back_tx, back) = std::sync::mpsc::channel::<Vec<u8>>();
        let handle = std::thread::spawn(move || -> io::Result<()> {
            for mut b in rx {
                f.write_all(&b)?;
                b.clear();
                let _ = back_tx.send(b);
            }
            Ok(())
        });
        PipeWriter {
            path: path.to_path_buf(),
            buf: Vec::with_capacity(Self::CHUNK + 4096),
            tx: Some(tx),
            back,
            handle: Some(handle),
        }
    }

    fn send(&mut self) {
        let fresh = self
            .back
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(Self::CHUNK + 4096));
        let full = std::mem::replace(&mut self.buf, fresh);
        if self.tx.as_ref().unwrap().send(full).is_err() {
            self.finish(); // writer died: surface its error
        }
    }

    fn finish(&mut self) {
        if !self.buf.is_empty() {
            let full = std::mem::take(&mut self.buf);
            let _ = self.tx.as_ref().unwrap().send(full);
        }
        drop(self.tx.take());
        let r = self
            .handle
            .take()
            .unwrap()
            .join()
            .expect("writer thread panicked");
        r.unwrap_or_else(|e| panic!("write {:?}: {e}", self.path));
    }
}

/// Write `len` bytes of big-file content: regions of 4..256 KiB that are
/// ~45% random, ~45% text-like (copied from a 1 MiB corpus), ~10% runs of
/// one byte (compresses ~1.7x overall).
fn write_big_content(path: &Path, len: u64, seed: u64) {
    use rand::{RngCore, SeedableRng};
    let mut rng = Rng::new(mix(seed, 0xB16));
    // Bulk random bytes come from `rand` (a dependency, hence optimised even
    // in debug test builds), so this stays fast without --release.
    let mut bulk = rand::rngs::StdRng::seed_from_u64(mix(seed, 0xB17));
    let corpus = text_bytes(&mut Rng::new(mix(seed, 0xC0)), 1 << 20);
    let mut w = PipeWriter::create(path);
    let mut left = len;
    while left > 0 {
        let n = left.min(PipeWriter::CHUNK as u64) as usize;
        w.buf.resize(n, 0);
        let mut pos = 0;
        while pos < n {
            let seg = (rng.range(4 << 10, 256 << 10) as usize).min(n - pos);
            let dst = &mut w.buf[pos..pos + seg];
            match rng.below(20) {
                0..=8 => bulk.fill_bytes(dst),
                9..=17 => {
                    let off = rng.below((corpus.len() - seg) as u64) as usize;
                    dst.copy_from_slice(&corpus[off..off + seg]);
                }
                _ => dst.fill(rng.below(256) as u8),
            }
            pos += seg;
        }
        w.send();
        left -= n as u64;
    }
    w.finish();
}

/// Contents of a small file, fully determined by `(content_seed, size)`.
fn small_content(content_seed: u64, size: usize) -> Vec<u8> {
    let mut rng = Rng::new(content_seed);
    match content_seed % 4 {
        0 | 1 => text_bytes(&mut rng, size),
        2 => {
            let mut v = vec![0u8; size];
            rng.fill(&mut v);
            v
        }
        _ => {
            // Half text, half binary.
            let mut v = text_bytes(&mut rng, size / 2);
            let mut b = vec![0u8; size - v.len()];
            rng.fill(&mut b);
            v.extend_from_slice(&b);
            v
        }
    }
}

/// Deterministic mtime for a relative path (seconds in 2001..2023, with
/// whole-second, millisecond and nanosecond precision variants).
fn mtime_for(seed: u64, rel: &Path) -> FileTime {
    let h = blake3::hash(rel.as_os_str().as_bytes());
    let h = mix(
        seed,
        u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap()),
    );
    let secs = 1_000_000_000 + (h % 700_000_000) as i64;
    let nanos = match (h >> 40) % 4 {
        0 => 0,
        1 => ((h >> 8) % 1000) as u32 * 1_000_000,
        _ => ((h >> 20) % 1_000_000_000) as u32,
    };
    FileTime::from_unix_time(secs, nanos)
}

/// Create a deterministic test tree under `root` (created if missing; should
/// be empty). Layout: `empty/`, `big.bin`, `small/dN/eM/`, `links/`, `hard/`,
/// `odd/`, `deep/`, `sparse.img`, `modes/`. Every entry (including `root`)
/// gets an explicit mode and a deterministic mtime, so two calls with the
/// same spec produce trees that pass [`assert_trees_equal`].
pub fn generate_tree(root: &Path, spec: &TreeSpec) {
    let seed = spec.seed;
    let mut rng = Rng::new(mix(seed, 1));
    mkdir(root, 0o755);

    // Empty files.
    if spec.empty_files > 0 {
        mkdir(&root.join("empty"), 0o755);
        for i in 0..spec.empty_files {
            write_file(&root.join(format!("empty/empty_{i:04}")), b"", 0o644);
        }
    }

    // Big file.
    if spec.big_file_bytes > 0 {
        let p = root.join("big.bin");
        write_big_content(&p, spec.big_file_bytes, seed);
        set_mode(&p, 0o644);
    }

    // Small files over 10 x 10 leaf directories.
    if spec.small_files > 0 {
        let exts = ["txt", "dat", "json", "log", "bin", "c", "md", ""];
        let mut made: Vec<(u64, usize)> = Vec::new();
        for i in 0..spec.small_files {
            let d = rng.below(100);
            let dir = root.join(format!("small/d{:02}/e{:02}", d / 10, d % 10));
            let (cseed, size) = if !made.is_empty() && rng.below(5) == 0 {
                *rng.pick(&made)
            } else {
                let v = (rng.next_u64(), rng.below(8 * 1024 + 1) as usize);
                made.push(v);
                v
            };
            let ext = rng.pick(&exts);
            let name = if ext.is_empty() {
                format!("f{i:05}")
            } else {
                format!("f{i:05}.{ext}")
            };
            write_file(&dir.join(name), &small_content(cseed, size), 0o644);
        }
        for a in 0..10 {
            for b in 0..10 {
                // Make sure all ~100 dirs exist, even with few files.
                mkdir(&root.join(format!("small/d{a:02}/e{b:02}")), 0o755);
            }
            set_mode(&root.join(format!("small/d{a:02}")), 0o755);
        }
        set_mode(&root.join("small"), 0o755);
    }

    // Symlinks.
    if spec.symlinks {
        let l = root.join("links");
        mkdir(&l, 0o755);
        write_file(&l.join("target.txt"), b"symlink target file\n", 0o644);
        mkdir(&l.join("target_dir"), 0o755);
        write_file(
            &l.join("target_dir/inner.txt"),
            b"inside the target dir\n",
            0o644,
        );
        mk_symlink("target.txt", &l.join("to_file"));
        mk_symlink("target_dir", &l.join("to_dir"));
        mk_symlink("../links/target_dir/inner.txt", &l.join("up_and_back"));
        mk_symlink("does/not/exist", &l.join("dangling"));
        mk_symlink("/etc/passwd", &l.join("absolute"));
        mk_symlink(
            "/nonexistent/ocvault-test/target",
            &l.join("absolute_dangling"),
        );
        mk_symlink("loop_b", &l.join("loop_a"));
        mk_symlink("loop_a", &l.join("loop_b"));
        mk_symlink(".", &l.join("self_dir"));
        if spec.odd_names {
            mk_symlink("../odd/héllo wörld.txt", &l.join("to_unicode"));
            mk_symlink(
                OsStr::from_bytes(b"bad\xff\xfetarget"),
                &l.join("non_utf8_target"),
            );
        }
    }

    // Hard links.
    if spec.hardlinks {
        let h = root.join("hard");
        mkdir(&h.join("a"), 0o755);
        mkdir(&h.join("b"), 0o755);
        let mut data = text_bytes(&mut Rng::new(mix(seed, 0x4A)), 3000);
        data.extend_from_slice(b"\nhard linked\n");
        write_file(&h.join("a/original.txt"), &data, 0o644);
        fs::hard_link(h.join("a/original.txt"), h.join("b/link.txt")).unwrap();
        write_file(
            &h.join("a/triple_1"),
            &small_content(mix(seed, 0x3), 5000),
            0o640,
        );
        fs::hard_link(h.join("a/triple_1"), h.join("b/triple_2")).unwrap();
        fs::hard_link(h.join("a/triple_1"), h.join("triple_3")).unwrap();
        // Same contents as original.txt but a separate inode: must stay separate.
        write_file(&h.join("b/copy_not_link.txt"), &data, 0o644);
        write_file(&h.join("a/empty_1"), b"", 0o644);
        fs::hard_link(h.join("a/empty_1"), h.join("b/empty_2")).unwrap();
    }

    // Odd names.
    if spec.odd_names {
        let o = root.join("odd");
        mkdir(&o, 0o755);
        let names: Vec<OsString> = vec![
            "héllo wörld.txt".into(),
            "日本語".into(),
            "🦀 crab 🎉.txt".into(),
            "  leading and trailing spaces  ".into(),
            " ".into(),
            "-leading-dash".into(),
            "--".into(),
            "new\nline".into(),
            "tab\tname".into(),
            "back\\slash".into(),
            "quote\"s and 'apos'".into(),
            "*?[glob]{x}".into(),
            "%s%n$HOME".into(),
            ".hidden".into(),
            "...".into(),
            "Ω≈ç√∫˜µ≤≥÷".into(),
            "e\u{301}-combining".into(),
            "é-precomposed".into(),
            format!("{}.txt", "x".repeat(251)).into(),
            OsString::from_vec(b"bad\xff\xfename".to_vec()),
            OsString::from_vec(b"latin1-caf\xe9".to_vec()),
        ];
        for (i, n) in names.iter().enumerate() {
            let content = format!("odd file #{i}: {:?}\n", n);
            write_file(&o.join(n), content.as_bytes(), 0o644);
        }
        let d = o.join(OsStr::from_bytes(b"dir-\xc3\x28-invalid"));
        mkdir(&d, 0o755);
        write_file(&d.join("inside.txt"), b"inside a non-UTF-8 dir\n", 0o644);
        let d = o.join("目录 with spaces");
        mkdir(&d, 0o755);
        write_file(
            &d.join("ファイル.txt"),
            "日本語のテキスト\n".as_bytes(),
            0o644,
        );
    }

    // Deep nesting.
    if spec.deep_nesting > 0 {
        let mut p = root.join("deep");
        for i in 0..spec.deep_nesting {
            p.push(format!("l{i:03}"));
        }
        mkdir(&p, 0o755);
        write_file(&p.join("bottom.txt"), b"at the bottom\n", 0o644);
        let mut q = p.clone();
        while q != root.join("deep") {
            set_mode(&q, 0o755);
            q.pop();
        }
        set_mode(&q, 0o755);
    }

    // Sparse file.
    if spec.sparse_file_bytes > 0 {
        let n = spec.sparse_file_bytes;
        let p = root.join("sparse.img");
        let f = File::create(&p).unwrap();
        f.set_len(n).unwrap();
        let mut srng = Rng::new(mix(seed, 0x5A));
        for off in [0, n / 3 + 12345, n / 2 + 1, n.saturating_sub(100)] {
            let mut block = vec![0u8; 4096.min((n - off.min(n)) as usize)];
            srng.fill(&mut block);
            let k = 16.min(block.len());
            block[..k].copy_from_slice(&b"SPARSE-REGION-->"[..k]);
            f.write_all_at(&block, off).unwrap();
        }
        drop(f);
        set_mode(&p, 0o644);
    }

    // Modes.
    {
        let m = root.join("modes");
        mkdir(&m, 0o755);
        write_file(&m.join("private.txt"), b"secret\n", 0o600);
        write_file(&m.join("script.sh"), b"#!/bin/sh\necho hello\n", 0o755);
        write_file(&m.join("readonly.txt"), b"read only\n", 0o444);
        write_file(&m.join("group.txt"), b"group readable\n", 0o640);
        write_file(&m.join("old.txt"), b"from 1970\n", 0o644);
        write_file(&m.join("future.txt"), b"from 2100\n", 0o644);
        mkdir(&m.join("private_dir"), 0o755);
        write_file(&m.join("private_dir/inner"), b"inner\n", 0o600);
        set_mode(&m.join("private_dir"), 0o700);
        if spec.special_modes {
            write_file(&m.join("setuid_bin"), b"#!/bin/sh\n", 0o4755);
            mkdir(&m.join("sticky_dir"), 0o1777);
        }
    }

    set_tree_times(root, Path::new(""), seed);
    // A few extreme-but-valid mtimes.
    let fixed = [
        ("modes/old.txt", FileTime::from_unix_time(1, 500_000_000)),
        (
            "modes/future.txt",
            FileTime::from_unix_time(4_102_444_800, 123_456_789),
        ),
    ];
    for (rel, t) in fixed {
        filetime::set_file_times(root.join(rel), t, t).unwrap();
    }
}

/// Recursively set deterministic atime=mtime on everything under `root/rel`
/// (children before their directory; symlinks themselves, not their targets).
fn set_tree_times(root: &Path, rel: &Path, seed: u64) {
    let abs = root.join(rel);
    let meta = fs::symlink_metadata(&abs).unwrap();
    if meta.is_dir() {
        for name in sorted_names(&abs) {
            set_tree_times(root, &rel.join(name), seed);
        }
    }
    let t = mtime_for(seed, rel);
    if meta.file_type().is_symlink() {
        filetime::set_symlink_file_times(&abs, t, t)
    } else {
        filetime::set_file_times(&abs, t, t)
    }
    .unwrap_or_else(|e| panic!("set times on {abs:?}: {e}"));
}

/// Directory entry names sorted by raw bytes.
pub(super) fn sorted_names(dir: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}"))
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    names
}

/// All entries below `root` as relative paths (root itself excluded),
/// pre-order, sorted by raw name bytes, never following symlinks.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    fn rec(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        for name in sorted_names(&root.join(rel)) {
            let r = rel.join(&name);
            let is_dir = fs::symlink_metadata(root.join(&r)).unwrap().is_dir();
            out.push(r.clone());
            if is_dir {
                rec(root, &r, out);
            }
        }
    }
    let mut out = Vec::new();
    rec(root, Path::new(""), &mut out);
    out
}

pub(super) fn is_root_user() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Deterministically mutate the tree: each regular file is edited with
/// probability `fraction` (append 1..16 KiB, or overwrite a region of up to
/// 8 KiB with guaranteed-different bytes; at least one file is edited when
/// `fraction > 0`), a few files are added and a few removed. Edited files and
/// touched directories get new deterministic mtimes, modes are preserved.
pub fn mutate_tree(root: &Path, fraction: f64, seed: u64) {
    let mseed = mix(seed, 0x6D75_7461_7465);
    let mut rng = Rng::new(mseed);
    let entries = walk(root);
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    for rel in entries {
        let m = fs::symlink_metadata(root.join(&rel)).unwrap();
        if m.is_file() {
            files.push(rel);
        } else if m.is_dir() {
            dirs.push(rel);
        }
    }
    let mut edited: BTreeSet<usize> = BTreeSet::new();
    for i in 0..files.len() {
        if rng.chance(fraction) {
            edited.insert(i);
        }
    }
    if fraction > 0.0 && edited.is_empty() && !files.is_empty() {
        edited.insert(rng.below(files.len() as u64) as usize);
    }
    let mut touched_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for &i in &edited {
        edit_file(root, &files[i], &mut rng, mseed);
    }

    let few = ((files.len() as f64 * fraction * 0.05).ceil() as usize).clamp(2, 50);
    // Removals (never a file we just edited, so edits stay observable).
    let mut removable: Vec<usize> = (0..files.len()).filter(|i| !edited.contains(i)).collect();
    for _ in 0..few.min(removable.len()) {
        let k = rng.below(removable.len() as u64) as usize;
        let rel = &files[removable.swap_remove(k)];
        fs::remove_file(root.join(rel)).unwrap_or_else(|e| panic!("rm {rel:?}: {e}"));
        touched_dirs.insert(rel.parent().unwrap().to_path_buf());
    }
    // Additions.
    for k in 0..few {
        let dir = rng.pick(&dirs).clone();
        let rel = dir.join(format!("added_{:08x}_{k}.dat", seed as u32));
        let size = rng.below(32 * 1024 + 1) as usize;
        write_file(
            &root.join(&rel),
            &small_content(rng.next_u64(), size),
            0o644,
        );
        let t = mtime_for(mseed, &rel);
        filetime::set_file_times(root.join(&rel), t, t).unwrap();
        touched_dirs.insert(dir);
    }
    for d in touched_dirs {
        let t = mtime_for(mseed, &d);
        filetime::set_file_times(root.join(&d), t, t).unwrap();
    }
}

fn edit_file(root: &Path, rel: &Path, rng: &mut Rng, mseed: u64) {
    let p = root.join(rel);
    let meta = fs::symlink_metadata(&p).unwrap();
    let mode = meta.mode() & 0o7777;
    let old_mtime = FileTime::from_last_modification_time(&meta);
    if mode & 0o200 == 0 && !is_root_user() {
        set_mode(&p, mode | 0o200);
    }
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap_or_else(|e| panic!("open {p:?} for edit: {e}"));
    let len = meta.len();
    if len == 0 || rng.below(2) == 0 {
        let n = rng.range(1, 16 * 1024 + 1) as usize;
        let data = small_content(rng.next_u64(), n);
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(&data).unwrap();
    } else {
        let off = rng.below(len);
        let n = rng.range(1, 8 * 1024 + 1).min(len - off) as usize;
        let mut buf = vec![0u8; n];
        f.read_exact_at(&mut buf, off).unwrap();
        for b in buf.iter_mut() {
            *b ^= (rng.next_u64() as u8) | 1; // never XOR with 0 => always changes
        }
        f.write_all_at(&buf, off).unwrap();
    }
    drop(f);
    set_mode(&p, mode);
    let mut t = mtime_for(mseed, rel);
    if t == old_mtime {
        t = FileTime::from_unix_time(t.unix_seconds() + 1, t.nanoseconds());
    }
    filetime::set_file_times(&p, t, t).unwrap();
}

pub fn random_file(path: &Path, len: usize, seed: u64) {
    let mut data = vec![0u8; len];
    Rng::new(seed).fill(&mut data);
    fs::write(path, data).unwrap();
}

/// Changes the owner of everything below `path` (like `chown -R`).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    for rel in walk(path) {
        std::os::unix::fs::lchown(path.join(rel), Some(uid), Some(gid)).unwrap();
    }
}

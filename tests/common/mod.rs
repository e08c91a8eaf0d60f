//! Shared helpers for the ocvault integration tests (`mod common;`).
//!
//! * [`generate_tree`] / [`mutate_tree`]: deterministic, nasty source trees.
//! * [`assert_trees_equal`] / [`tree_digest`]: exact comparison of a restore.
//! * [`sql_dump`]: pg_dump-like SQL text with controlled day-to-day changes.
//! * [`ocvault`] / [`TestRepo`]: run the CLI against a throw-away repository.
//!
//! Everything is deterministic for a given seed (no wall-clock or random
//! state leaks into contents, names, modes or mtimes).
#![allow(dead_code)]

pub mod servers;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;

// ---------------------------------------------------------------------------
// Cheap deterministic PRNG
// ---------------------------------------------------------------------------

/// SplitMix64 finaliser: a good 64-bit mixing function.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mix two values into one well-distributed u64 (for deriving sub-seeds).
pub fn mix(a: u64, b: u64) -> u64 {
    splitmix64(a ^ splitmix64(b.wrapping_add(0x5851_F42D_4C95_7F2D)))
}

/// Tiny, fast, deterministic xorshift64* generator (stable across platforms
/// and crate versions, unlike `rand`'s small RNGs).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// New generator; any seed (including 0) is fine.
    pub fn new(seed: u64) -> Self {
        Rng(splitmix64(seed) | 1)
    }
    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (0 if n == 0).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in `lo..hi` (returns lo if the range is empty).
    #[inline]
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.below(hi - lo)
        }
    }
    /// Uniform in `[0, 1)`.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    /// Pick an element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// Fill `buf` with random bytes (8 bytes per step).
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rem = chunks.into_remainder();
        if !rem.is_empty() {
            let v = self.next_u64().to_le_bytes();
            let n = rem.len();
            rem.copy_from_slice(&v[..n]);
        }
    }
}

#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at",
    "from", "his", "her", "they", "we", "an", "be", "this", "which", "or", "had", "not", "are",
    "but", "have", "were", "one", "all", "their", "there", "been", "has", "when", "who", "will",
    "more", "no", "if", "out", "so", "said", "what", "up", "its", "about", "into", "than", "them",
    "can", "only", "other", "new", "some", "could", "time", "these", "two", "may", "then", "do",
    "first", "any", "my", "now", "such", "like", "our", "over", "man", "me", "even", "most",
    "made", "after", "also", "did", "many", "before", "must", "through", "back", "years", "where",
    "much", "your", "way", "well", "down", "should", "because", "each", "just", "those", "people",
    "how", "too", "little", "state", "good", "very", "make", "world", "still", "own", "see",
    "men", "work", "long", "get", "here", "between", "both", "life", "being", "under", "never",
    "day", "same", "another", "know", "while", "last", "might", "us", "great", "old", "year",
    "off", "come", "since", "against", "go", "came", "right", "used", "take", "three", "invoice",
    "customer", "order", "shipment", "payment", "refund", "pending", "approved", "rejected",
    "account", "balance", "ledger", "warehouse", "backorder", "priority", "express", "standard",
    "discount", "coupon", "subscription", "renewal", "cancelled", "delivered", "returned",
    "damaged", "replacement", "warranty", "support", "ticket", "escalated", "resolved", "closed",
    "billing", "address", "postal", "region", "north", "south", "east", "west", "central",
    "quarterly", "monthly", "weekly", "daily", "report", "summary", "audit", "compliance",
];

#[rustfmt::skip]
const FIRST_NAMES: &[&str] = &[
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Charles", "Karen", "Christopher", "Lisa", "Daniel", "Nancy", "Matthew", "Betty", "Anthony",
    "Margaret", "Mark", "Sandra", "Donald", "Ashley", "Steven", "Kimberly", "Paul", "Emily",
    "Andrew", "Donna", "Joshua", "Michelle", "Kenneth", "Carol", "Kevin", "Amanda", "Brian",
    "Dorothy", "George", "Melissa", "Timothy", "Deborah", "Ronald", "Stephanie", "Edward",
    "Rebecca", "Jason", "Sharon", "Jeffrey", "Laura", "Ryan", "Cynthia", "Jacob", "Kathleen",
    "Gary", "Amy",
];

#[rustfmt::skip]
const LAST_NAMES: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Gomez", "Phillips", "Evans",
    "Turner", "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris",
    "Morales", "Murphy",
];

#[rustfmt::skip]
const DOMAINS: &[&str] = &[
    "example.com", "example.org", "mail.example.net", "corp.example.com", "shop.example.io",
    "example.co.uk", "users.example.de", "example.fr",
];

/// Text-like bytes: lines of words from a small vocabulary with some numbers.
fn text_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut line_words = 0;
    while out.len() < len {
        if rng.below(12) == 0 {
            push_u64(&mut out, rng.below(100_000));
        } else {
            out.extend_from_slice(rng.pick(WORDS).as_bytes());
        }
        line_words += 1;
        if line_words >= 6 + rng.below(10) as usize {
            out.push(b'\n');
            line_words = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}

/// Append the decimal representation of `v` (manual itoa).
#[inline]
fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

// ---------------------------------------------------------------------------
// Tree generation
// ---------------------------------------------------------------------------

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
fn sorted_names(dir: &Path) -> Vec<OsString> {
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

fn is_root_user() -> bool {
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------
// Mutation
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------

/// Streaming blake3 hash of a file's contents.
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

// ---------------------------------------------------------------------------
// pg_dump-like SQL
// ---------------------------------------------------------------------------

/// Number of tables in [`sql_dump`] output.
pub const SQL_TABLES: u32 = 50;
/// Tables whose rows in one contiguous region change on day 2.
pub const SQL_UPDATED_TABLES: [u32; 3] = [3, 17, 31];
/// Tables that get ~1% extra rows appended on day 2.
pub const SQL_APPENDED_TABLES: [u32; 5] = [5, 12, 24, 40, 45];

/// Per-table plan of a [`sql_dump`] (identical for every `day`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlTablePlan {
    /// Table index (table name is `public.t{index}`).
    pub index: u32,
    /// Row count on day 1 (ids `1..=rows`).
    pub rows: u64,
    /// Day 2: row indices (0-based) whose amount/note change.
    pub updated: std::ops::Range<u64>,
    /// Day 2: number of rows appended (ids `rows+1..=rows+appended`).
    pub appended: u64,
}

/// Row layout of [`sql_dump`] for `(target_bytes, seed)`; table sizes vary
/// (weights 1..8) and sum to ~target_bytes.
pub fn sql_plan(target_bytes: u64, seed: u64) -> Vec<SqlTablePlan> {
    // Measure the average row length on a sample.
    let vocab = SqlVocab::new();
    let mut row = RowBuf::new();
    let sample = 4000u64;
    let mut total = 0u64;
    for id in 0..sample {
        row.n = 0;
        sql_row(&mut row, &vocab, seed, 999, id, false);
        total += row.n as u64;
    }
    let avg = (total / sample).max(1);
    let weights: Vec<u64> = (0..SQL_TABLES)
        .map(|t| 1 + mix(seed, t as u64 + 77) % 8)
        .collect();
    let wsum: u64 = weights.iter().sum();
    let budget = target_bytes.saturating_sub(30_000); // header + DDL
    (0..SQL_TABLES)
        .map(|t| {
            let rows = ((budget as u128 * weights[t as usize] as u128 / wsum as u128 / avg as u128)
                as u64)
                .max(10);
            let updated = if SQL_UPDATED_TABLES.contains(&t) {
                let n = (rows / 50).max(1);
                let start = rows * 2 / 5 + mix(seed, t as u64 + 1000) % (rows / 5 + 1);
                start..(start + n).min(rows)
            } else {
                0..0
            };
            let appended = if SQL_APPENDED_TABLES.contains(&t) {
                (rows / 100).max(1)
            } else {
                0
            };
            SqlTablePlan {
                index: t,
                rows,
                updated,
                appended,
            }
        })
        .collect()
}

/// Days-since-epoch -> (year, month, day) (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u64, u64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i64 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A word padded to 16 bytes (so copies are one fixed-size move) + length.
#[derive(Clone, Copy)]
struct Word([u8; 16], u8);

impl Word {
    fn new(s: &str, lower: bool) -> Self {
        assert!(s.len() <= 16, "vocabulary word too long: {s}");
        let mut b = [0u8; 16];
        b[..s.len()].copy_from_slice(s.as_bytes());
        if lower {
            b.make_ascii_lowercase();
        }
        Word(b, s.len() as u8)
    }
}

struct SqlVocab {
    words: Vec<Word>,
    first: Vec<Word>,
    last: Vec<Word>,
    first_lc: Vec<Word>,
    last_lc: Vec<Word>,
    domains: Vec<Word>,
}

impl SqlVocab {
    fn new() -> Self {
        let w = |l: &[&str], lc| l.iter().map(|s| Word::new(s, lc)).collect::<Vec<_>>();
        SqlVocab {
            words: w(WORDS, false),
            first: w(FIRST_NAMES, false),
            last: w(LAST_NAMES, false),
            first_lc: w(FIRST_NAMES, true),
            last_lc: w(LAST_NAMES, true),
            domains: w(DOMAINS, false),
        }
    }
}

/// Fixed-size buffer for one COPY row (rows are < 512 bytes).
struct RowBuf {
    b: [u8; 1024],
    n: usize,
}

impl RowBuf {
    fn new() -> Self {
        RowBuf { b: [0; 1024], n: 0 }
    }
}

/// Local write cursor over a RowBuf (keeps the position in a register).
struct Cur<'a> {
    b: &'a mut [u8; 1024],
    n: usize,
}

impl Cur<'_> {
    #[inline(always)]
    fn byte(&mut self, c: u8) {
        self.b[self.n] = c;
        self.n += 1;
    }
    #[inline(always)]
    fn word(&mut self, w: &Word) {
        self.b[self.n..self.n + 16].copy_from_slice(&w.0);
        self.n += w.1 as usize;
    }
    #[inline(always)]
    fn lit<const N: usize>(&mut self, s: &[u8; N]) {
        self.b[self.n..self.n + N].copy_from_slice(s);
        self.n += N;
    }
    #[inline(always)]
    fn num(&mut self, mut v: u64) {
        let len = if v == 0 { 1 } else { v.ilog10() as usize + 1 };
        let mut i = self.n + len;
        self.n = i;
        loop {
            i -= 1;
            self.b[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
    }
    #[inline(always)]
    fn two(&mut self, v: u64) {
        self.b[self.n] = b'0' + (v / 10 % 10) as u8;
        self.b[self.n + 1] = b'0' + (v % 10) as u8;
        self.n += 2;
    }
}

/// Append one COPY row for `(seed, table, row)` to `out`; `updated` gives
/// the day-2 variant (different amount and note, everything else identical).
#[inline]
fn sql_row(buf: &mut RowBuf, v: &SqlVocab, seed: u64, table: u32, row: u64, updated: bool) {
    let mut c = Cur {
        b: &mut buf.b,
        n: buf.n,
    };
    let out = &mut c;
    let key = mix(mix(seed, table as u64), row);
    let mut rng = Rng::new(key);
    // id
    out.num(row + 1);
    out.byte(b'\t');
    // name
    let fi = rng.below(v.first.len() as u64) as usize;
    let li = rng.below(v.last.len() as u64) as usize;
    out.word(&v.first[fi]);
    out.byte(b' ');
    out.word(&v.last[li]);
    out.byte(b'\t');
    // email
    out.word(&v.first_lc[fi]);
    out.byte(b'.');
    out.word(&v.last_lc[li]);
    out.num(rng.below(1000));
    out.byte(b'@');
    out.word(&v.domains[rng.below(v.domains.len() as u64) as usize]);
    out.byte(b'\t');
    // created_at (mostly increasing with the row id); printed after amount
    let ts = 1_600_000_000 + table as u64 * 86_400 + row * 17 + rng.below(17);
    let mut amount_note_rng = if updated {
        Rng::new(mix(key, 0xDA72))
    } else {
        rng
    };
    let r = &mut amount_note_rng;
    // amount
    let digits = 2 + r.below(6) as u32;
    let cents = r.below(10u64.pow(digits));
    out.num(cents / 100);
    out.byte(b'.');
    out.two(cents % 100);
    out.byte(b'\t');
    let tod = ts % 86_400;
    let (y, mo, d) = civil_from_days((ts / 86_400) as i64);
    out.num(y as u64);
    out.byte(b'-');
    out.two(mo);
    out.byte(b'-');
    out.two(d);
    out.byte(b' ');
    out.two(tod / 3600);
    out.byte(b':');
    out.two(tod / 60 % 60);
    out.byte(b':');
    out.two(tod % 60);
    out.lit(b"+00\t");
    // note
    if r.below(10) == 0 {
        out.lit(b"\\N");
    } else {
        if updated {
            out.lit(b"updated: ");
        }
        let n = 2 + r.below(13);
        for i in 0..n {
            if i > 0 {
                out.byte(b' ');
            }
            out.word(&v.words[r.below(v.words.len() as u64) as usize]);
        }
    }
    out.byte(b'\n');
    buf.n = c.n;
}

const SQL_HEADER: &str = "--
-- PostgreSQL database dump
--

-- Dumped from database version 16.3
-- Dumped by pg_dump version 16.3

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

";

/// Write a pg_dump-like plain SQL dump of ~`target_bytes` to `path`: header,
/// 50 `CREATE TABLE public.tN`, then one `COPY ... FROM stdin;` block per
/// table (tab-separated rows, `\.` terminator), then primary keys.
/// Rows depend only on (seed, table, row). `day >= 2` changes, relative to
/// day 1, only: amount/note of a contiguous ~2% row region (middle of the
/// table) in tables 3, 17, 31, and ~1% extra rows appended to tables 5, 12,
/// 24, 40, 45 (see [`sql_plan`]). Compresses roughly 3x.
pub fn sql_dump(path: &Path, target_bytes: u64, seed: u64, day: u32) {
    /// Output pieces in file order; row ranges are generated by workers.
    enum Piece {
        Text(Vec<u8>),
        Rows,
    }
    const ROWS_PER_ITEM: u64 = 32 * 1024; // ~4 MB of text
    let plan = sql_plan(target_bytes, seed);
    let vocab = SqlVocab::new();
    let day2 = day >= 2;

    let mut pieces: Vec<Piece> = Vec::new();
    // (table, rows start..end, updated range)
    let mut items: Vec<(u32, std::ops::Range<u64>, std::ops::Range<u64>)> = Vec::new();
    let mut text: Vec<u8> = SQL_HEADER.as_bytes().to_vec();
    for t in &plan {
        let n = t.index;
        write!(
            text,
            "--\n-- Name: t{n}; Type: TABLE; Schema: public; Owner: app\n--\n\n\
             CREATE TABLE public.t{n} (\n    id bigint NOT NULL,\n    name text NOT NULL,\n    \
             email text,\n    amount numeric(12,2),\n    created_at timestamp with time zone NOT NULL,\n    \
             note text\n);\n\n\nALTER TABLE public.t{n} OWNER TO app;\n\n"
        )
        .unwrap();
    }
    for t in &plan {
        let n = t.index;
        write!(
            text,
            "--\n-- Data for Name: t{n}; Type: TABLE DATA; Schema: public; Owner: app\n--\n\n\
             COPY public.t{n} (id, name, email, amount, created_at, note) FROM stdin;\n"
        )
        .unwrap();
        pieces.push(Piece::Text(std::mem::take(&mut text)));
        let rows = t.rows + if day2 { t.appended } else { 0 };
        let updated = if day2 { t.updated.clone() } else { 0..0 };
        let mut start = 0;
        while start < rows {
            let end = (start + ROWS_PER_ITEM).min(rows);
            items.push((n, start..end, updated.clone()));
            pieces.push(Piece::Rows);
            start = end;
        }
        text.extend_from_slice(b"\\.\n\n\n");
    }
    for t in &plan {
        let n = t.index;
        write!(
            text,
            "--\n-- Name: t{n} t{n}_pkey; Type: CONSTRAINT; Schema: public; Owner: app\n--\n\n\
             ALTER TABLE ONLY public.t{n}\n    ADD CONSTRAINT t{n}_pkey PRIMARY KEY (id);\n\n\n"
        )
        .unwrap();
    }
    text.extend_from_slice(b"--\n-- PostgreSQL database dump complete\n--\n\n");
    pieces.push(Piece::Text(text));

    // Workers generate items k, k+W, k+2W, ... ; this thread writes in order.
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
    std::thread::scope(|s| {
        let mut rxs = Vec::new();
        for w in 0..workers {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
            rxs.push(rx);
            let (items, vocab) = (&items, &vocab);
            s.spawn(move || {
                let mut row = RowBuf::new();
                for (table, rows, updated) in items.iter().skip(w).step_by(workers) {
                    let mut buf = Vec::with_capacity(ROWS_PER_ITEM as usize * 160);
                    for r in rows.clone() {
                        row.n = 0;
                        sql_row(&mut row, vocab, seed, *table, r, updated.contains(&r));
                        buf.extend_from_slice(&row.b[..row.n]);
                    }
                    if tx.send(buf).is_err() {
                        return;
                    }
                }
            });
        }
        let mut k = 0;
        for piece in &pieces {
            let data = match piece {
                Piece::Text(t) => std::borrow::Cow::Borrowed(t),
                Piece::Rows => {
                    k += 1;
                    std::borrow::Cow::Owned(rxs[(k - 1) % workers].recv().expect("sql worker died"))
                }
            };
            f.write_all(&data)
                .unwrap_or_else(|e| panic!("write {path:?}: {e}"));
        }
    });
}

// ---------------------------------------------------------------------------
// CLI helpers
// ---------------------------------------------------------------------------

/// `ocvault` binary as an assert_cmd Command, with every `OCVAULT_*`
/// variable (notably `OCVAULT_PASSWORD`) removed from its environment.
pub fn ocvault() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("ocvault").expect("ocvault binary not built");
    for (k, _) in std::env::vars_os() {
        if k.as_bytes().starts_with(b"OCVAULT_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("OCVAULT_PASSWORD");
    cmd
}

/// A number from the environment (test durations and counts), or `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A throw-away repository location plus its password.
pub struct TestRepo {
    /// Temp dir owning everything (deleted on drop).
    pub dir: tempfile::TempDir,
    /// `dir/repo` — not initialised by `new()`.
    pub repo: PathBuf,
    /// Password passed via `OCVAULT_PASSWORD`.
    pub password: String,
}

impl TestRepo {
    /// New temp dir; repo path `dir/repo` (not yet initialised).
    pub fn new() -> Self {
        // OCVAULT_KEEP_TMP=1 keeps the folder (repository and sources) for a post-mortem.
        let dir = tempfile::Builder::new()
            .prefix("ocvault-test-")
            .disable_cleanup(std::env::var_os("OCVAULT_KEEP_TMP").is_some())
            .tempdir()
            .unwrap();
        let repo = dir.path().join("repo");
        TestRepo {
            dir,
            repo,
            password: "correct horse battery staple".to_string(),
        }
    }

    /// `ocvault --repo <repo>` with `OCVAULT_PASSWORD` set; add subcommand args.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut c = ocvault();
        c.arg("--repo")
            .arg(&self.repo)
            .env("OCVAULT_PASSWORD", &self.password);
        c
    }

    /// The same as [`TestRepo::cmd`] as a plain `std::process::Command`, for spawning and killing.
    pub fn cmd_std(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("ocvault"));
        for (k, _) in std::env::vars_os() {
            if k.as_bytes().starts_with(b"OCVAULT_") {
                c.env_remove(k);
            }
        }
        c.arg("--repo")
            .arg(&self.repo)
            .env("OCVAULT_PASSWORD", &self.password);
        c
    }

    /// Run `init` and assert success.
    pub fn init(&self) -> &Self {
        self.cmd().arg("init").assert().success();
        self
    }

    /// A fresh path inside the temp dir (not created), e.g. a restore target.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for TestRepo {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------
// Repository helpers shared by the CLI tests
// ---------------------------------------------------------------------------

/// `init` with a tiny Argon2id (tests spend their time on what they test); `extra` adds
/// init options such as `--pack-size`.
pub fn init_small(repo: &TestRepo, extra: &[&str]) {
    repo.cmd()
        .args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"])
        .args(extra)
        .assert()
        .success();
}

/// [`init_small`] with small chunks (4/16/64 KiB) and packs of `pack_size` bytes: many packs
/// and index files from little data.
pub fn init_small_packs(repo: &TestRepo, pack_size: u32) {
    let pack_size = pack_size.to_string();
    init_small(
        repo,
        &[
            "--pack-size",
            &pack_size,
            "--chunk-min",
            "4096",
            "--chunk-avg",
            "16384",
            "--chunk-max",
            "65536",
        ],
    );
}

/// The last line of standard output as JSON (`--json` commands print one document last).
pub fn last_json(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {text:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Snapshots `dir` (with more `args`), asserts success, returns the full snapshot id.
pub fn snapshot_id(repo: &TestRepo, args: &[&str], dir: &Path) -> String {
    let out = repo
        .cmd()
        .args(["--json", "snapshot"])
        .args(args)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    last_json(&out)["snapshot_id"].as_str().unwrap().to_string()
}

/// The full ids of every snapshot, oldest first.
pub fn snapshot_ids(repo: &TestRepo) -> Vec<String> {
    let out = repo.cmd().args(["--json", "snapshots"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    last_json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

pub fn random_file(path: &Path, len: usize, seed: u64) {
    let mut data = vec![0u8; len];
    Rng::new(seed).fill(&mut data);
    fs::write(path, data).unwrap();
}

/// Restores snapshot `id` into a fresh folder and compares its top-level entry `name` with
/// `expected` exactly.
pub fn restore_and_compare(repo: &TestRepo, id: &str, expected: &Path, name: &str) {
    let target = repo.path(&format!("restore-{id}"));
    let _ = fs::remove_dir_all(&target);
    restore_into(repo, id, &target);
    assert_trees_equal(expected, &target.join(name));
    fs::remove_dir_all(&target).unwrap();
}

/// Restores snapshot `id` into `target`, asserting success.
pub fn restore_into(repo: &TestRepo, id: &str, target: &Path) {
    repo.cmd()
        .args(["restore", id, "--target"])
        .arg(target)
        .assert()
        .success();
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

/// A failed command: the documented exit code and exactly one line on standard error.
pub fn assert_one_line_error(out: &std::process::Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "want one line, got: {err:?}"
    );
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(err.starts_with("ocvault: "), "{err:?}");
}

/// `check` (with `args`, e.g. `--read-data`) exits 0: the repository is intact.
pub fn assert_check_passes(repo: &TestRepo, args: &[&str]) {
    let out = repo.cmd().arg("check").args(args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "check {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// User and group id of `nobody`, for running ocvault without root's permission bypass.
pub const NOBODY: u32 = 65534;

impl TestRepo {
    /// [`TestRepo::cmd`] run as `nobody` through `setpriv`. Tests run as root, which reads
    /// and writes past permission bits; only an unprivileged process sees them.
    pub fn cmd_as_nobody(&self) -> assert_cmd::Command {
        assert!(
            is_root_user(),
            "this test changes user with setpriv and must run as root"
        );
        // The temp folder is 0700; nobody must reach the repository and sources inside it.
        fs::set_permissions(self.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = assert_cmd::Command::new("setpriv");
        for (k, _) in std::env::vars_os() {
            if k.as_bytes().starts_with(b"OCVAULT_") {
                c.env_remove(k);
            }
        }
        c.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .arg(assert_cmd::cargo::cargo_bin("ocvault"))
            .arg("--repo")
            .arg(&self.repo)
            .env("OCVAULT_PASSWORD", &self.password);
        c
    }
}

/// Changes the owner of everything below `path` (like `chown -R`).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    for rel in walk(path) {
        std::os::unix::fs::lchown(path.join(rel), Some(uid), Some(gid)).unwrap();
    }
}

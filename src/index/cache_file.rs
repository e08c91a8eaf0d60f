//! The on-disk index: the live index of a repository as one file in the local cache, mapped
//! rather than read, so a command's resident memory does not grow with the repository.
//! It is a cache, never the repository's truth: it names the index files it was built from
//! and is rebuilt when they change (`load`). Layout, all numbers little-endian:
//!
//! ```text
//! 0     8   magic "OCVIDXv1"
//! 8     32  repository id
//! 40    32  tiers digest: which packs were archived when built (`cold::Tiers::digest`)
//! 72    4   directory bits (16..=24)
//! 76    4   pack count P
//! 80    8   entry count N
//! 88    4   live index files L
//! 92    4   superseded index files S
//! 96    32  BLAKE3 of bytes 0..96 and of every section after the entries
//! 4096  N × 46 entries (table.rs), sorted by id
//! then  P × 42 packs: id 32, blob type 1, archived 1, size 8
//! then  (L + S) × 32 index file ids, live ones first
//! then  (2^bits + 1) × 4 directory
//! then  ceil(N × 46 / 64 KiB) × 16 block checks: BLAKE3 of each 64 KiB of entries, cut
//! ```
//!
//! The entries are checked block by block when first read (a whole-file hash at every start
//! would read gigabytes); a block that fails is treated as holding no blob, with one warning,
//! and the file is deleted so the next command rebuilds it. Resident pages are given back to
//! the kernel every 32 MiB touched and every 100 ms (`madvise(DONTNEED)`): they stay in the
//! page cache, and touching them again costs a minor fault, not a read.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::table::{Entry, ENTRY_LEN};
use super::PackInfo;
use crate::format::BlobType;
use crate::id::{Id, IndexFileId, PackId};
use std::io::Result;

const MAGIC: &[u8; 8] = b"OCVIDXv1";
pub(super) const HEADER_LEN: usize = 4096;
const FIXED_LEN: usize = 96;
pub(super) const BLOCK: usize = 64 << 10;
const PACK_LEN: usize = 42;
/// Pages mapped between two `madvise(DONTNEED)` of the whole map (32 MiB).
const SHED_PAGES: usize = 8192;
/// And at least this often, whatever was counted (a scan maps up to ~25 MiB in that time).
const SHED_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// Pages one fault maps: the kernel maps the cached pages around a faulting one (64 KiB,
/// `fault_around_bytes`), whatever `MADV_RANDOM` says.
pub(super) const FAULT_PAGES: usize = 16;

/// What a cache file says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub repository_id: Id,
    pub tiers: [u8; 32],
    pub bits: u32,
    pub packs: u32,
    pub entries: u64,
    pub live_files: u32,
    pub superseded_files: u32,
}

impl Header {
    fn encode(&self) -> [u8; FIXED_LEN] {
        let mut b = [0u8; FIXED_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8..40].copy_from_slice(&self.repository_id.0);
        b[40..72].copy_from_slice(&self.tiers);
        b[72..76].copy_from_slice(&self.bits.to_le_bytes());
        b[76..80].copy_from_slice(&self.packs.to_le_bytes());
        b[80..88].copy_from_slice(&self.entries.to_le_bytes());
        b[88..92].copy_from_slice(&self.live_files.to_le_bytes());
        b[92..96].copy_from_slice(&self.superseded_files.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Header> {
        if b.len() < FIXED_LEN || &b[..8] != MAGIC {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let h = Header {
            repository_id: Id(b[8..40].try_into().unwrap()),
            tiers: b[40..72].try_into().unwrap(),
            bits: u32_at(72),
            packs: u32_at(76),
            entries: u64::from_le_bytes(b[80..88].try_into().unwrap()),
            live_files: u32_at(88),
            superseded_files: u32_at(92),
        };
        (16..=24).contains(&h.bits).then_some(h)
    }

    fn entries_len(&self) -> u64 {
        self.entries * ENTRY_LEN as u64
    }

    fn blocks(&self) -> u64 {
        self.entries_len().div_ceil(BLOCK as u64)
    }

    /// Bytes after the entries: packs, file ids, directory, block checks.
    fn tail_len(&self) -> Option<u64> {
        let files = self.live_files as u64 + self.superseded_files as u64;
        Some(
            (self.packs as u64).checked_mul(PACK_LEN as u64)?
                + files.checked_mul(32)?
                + ((1u64 << self.bits) + 1) * 4
                + self.blocks() * 16,
        )
    }
}

/// The directory bits for about 32 entries a bucket (one or two pages a lookup).
pub(super) fn bits_for(entries: u64) -> u32 {
    let mut bits = 16;
    while bits < 24 && (entries >> bits) > 32 {
        bits += 1;
    }
    bits
}

/// An opened cache file: its packs and file ids in memory, its entries and directory mapped.
pub(crate) struct Mapped {
    map: memmap2::Mmap,
    header: Header,
    dir_off: usize,
    checks: Vec<[u8; 16]>,
    /// One bit per block: checked and good.
    checked: Vec<AtomicU64>,
    damaged: AtomicBool,
    touched: AtomicUsize,
    /// Where it lies, to delete it when damaged; none for an unnamed temporary file.
    path: Option<PathBuf>,
}

/// What `Mapped::open` returns beside the map: the packs and index files it covers.
pub(super) struct Opened {
    pub mapped: Mapped,
    pub packs: Vec<PackInfo>,
    pub live_files: Vec<IndexFileId>,
    pub superseded_files: Vec<IndexFileId>,
}

impl Mapped {
    /// Opens and checks a cache file's header and tail; `None` when it is absent, damaged,
    /// or of another repository or tier view.
    pub fn open(
        file: &File,
        path: Option<&Path>,
        repository_id: &Id,
        tiers: &[u8; 32],
    ) -> Option<Opened> {
        let len = file.metadata().ok()?.len();
        let mut head = [0u8; HEADER_LEN];
        (&*file).read_exact(&mut head).ok()?;
        let header = Header::decode(&head)?;
        if header.repository_id != *repository_id || header.tiers != *tiers {
            return None;
        }
        let tail_off = HEADER_LEN as u64 + header.entries_len();
        if tail_off.checked_add(header.tail_len()?)? != len {
            return None;
        }
        // SAFETY: the file is only ever replaced by rename, never written in place, so the
        // mapped bytes do not change under us; every bit pattern is a valid `Entry`.
        let map = unsafe { memmap2::Mmap::map(file) }.ok()?;
        // Lookups are random: no read-ahead around them.
        let _ = map.advise(memmap2::Advice::Random);
        let tail = &map[tail_off as usize..];
        let mut hasher = blake3::Hasher::new();
        hasher.update(&head[..FIXED_LEN]);
        hasher.update(tail);
        if hasher.finalize().as_bytes() != &head[FIXED_LEN..FIXED_LEN + 32] {
            return None;
        }
        let (packs_b, rest) = tail.split_at(header.packs as usize * PACK_LEN);
        let files_n = header.live_files as usize + header.superseded_files as usize;
        let (files_b, rest) = rest.split_at(files_n * 32);
        let dir_len = ((1usize << header.bits) + 1) * 4;
        let checks_b = &rest[dir_len..];
        let packs = packs_b
            .chunks_exact(PACK_LEN)
            .map(decode_pack)
            .collect::<Option<Vec<_>>>()?;
        let ids: Vec<IndexFileId> = files_b
            .chunks_exact(32)
            .map(|c| IndexFileId(Id(c.try_into().unwrap())))
            .collect();
        let (live, superseded) = ids.split_at(header.live_files as usize);
        let checks = checks_b
            .chunks_exact(16)
            .map(|c| c.try_into().unwrap())
            .collect();
        let dir_off = tail_off as usize + packs_b.len() + files_b.len();
        let blocks = header.blocks() as usize;
        let mapped = Mapped {
            checked: (0..blocks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            header,
            dir_off,
            checks,
            map,
            damaged: AtomicBool::new(false),
            touched: AtomicUsize::new(0),
            path: path.map(Path::to_path_buf),
        };
        // The directory must be monotone and end at N, or lookups would read out of range.
        let n = mapped.len();
        let mut last = 0;
        for k in 0..=(1usize << mapped.header.bits) {
            let d = mapped.dir(k);
            if d < last || d > n {
                return None;
            }
            last = d;
        }
        if last != n {
            return None;
        }
        mapped.shed();
        Some(Opened {
            mapped,
            packs,
            live_files: live.to_vec(),
            superseded_files: superseded.to_vec(),
        })
    }

    pub fn len(&self) -> usize {
        self.header.entries as usize
    }

    pub fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed)
    }

    pub fn bits(&self) -> u32 {
        self.header.bits
    }

    pub fn dir(&self, k: usize) -> usize {
        let o = self.dir_off + k * 4;
        u32::from_le_bytes(self.map[o..o + 4].try_into().unwrap()) as usize
    }

    /// Entries `s..e`, once the blocks holding them pass their checks.
    pub fn entries(&self, s: usize, e: usize) -> Option<&[Entry]> {
        if s == e {
            return Some(&[]);
        }
        let (from, to) = (s * ENTRY_LEN, e * ENTRY_LEN);
        for block in from / BLOCK..=(to - 1) / BLOCK {
            self.check_block(block)?;
        }
        let bytes = &self.map[HEADER_LEN + from..HEADER_LEN + to];
        // SAFETY: `Entry` is `repr(C)` of byte arrays: size 46, alignment 1, no padding, and
        // every bit pattern is valid; `bytes` holds exactly `e - s` of them.
        Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<Entry>(), e - s) })
    }

    fn check_block(&self, block: usize) -> Option<()> {
        let (word, bit) = (&self.checked[block / 64], 1u64 << (block % 64));
        if word.load(Ordering::Relaxed) & bit != 0 {
            return Some(());
        }
        let start = HEADER_LEN + block * BLOCK;
        let end = (start + BLOCK).min(HEADER_LEN + self.header.entries_len() as usize);
        if blake3::hash(&self.map[start..end]).as_bytes()[..16] != self.checks[block] {
            self.report_damage(block);
            return None;
        }
        word.fetch_or(bit, Ordering::Relaxed);
        // A block spans two fault-around windows (it starts 4 KiB past one).
        self.touched(2 * FAULT_PAGES);
        Some(())
    }

    fn report_damage(&self, block: usize) {
        if !self.damaged.swap(true, Ordering::Relaxed) {
            if let Some(p) = &self.path {
                let _ = std::fs::remove_file(p);
            }
            eprintln!(
                "warning: the local index cache is damaged (block {block}); it was deleted and the next command rebuilds it; this one treats the blobs listed there as unknown"
            );
        }
    }

    /// Counts pages a lookup or scan touched; past `SHED_PAGES`, gives every resident page
    /// of the map back to the kernel.
    pub fn touched(&self, pages: usize) {
        if self.touched.fetch_add(pages, Ordering::Relaxed) + pages >= SHED_PAGES {
            self.touched.store(0, Ordering::Relaxed);
            self.shed();
        }
    }

    /// Gives the map's resident pages back every `SHED_EVERY` from a thread of its own, as
    /// long as the map lives: whatever reads it (lookups, scans, the kernel's fault-around),
    /// the pages it keeps mapped are what it touched in that time. Small maps need none.
    pub fn shed_periodically(self: &std::sync::Arc<Self>) {
        if self.map.len() < SHED_PAGES * 4096 {
            return;
        }
        let weak = std::sync::Arc::downgrade(self);
        let _ = std::thread::Builder::new()
            .name("ocvault-index-shed".into())
            .spawn(move || loop {
                std::thread::sleep(SHED_EVERY);
                match weak.upgrade() {
                    Some(m) => m.shed(),
                    None => break,
                }
            });
    }

    fn shed(&self) {
        // SAFETY: a read-only mapping of a file never written in place: dropped pages are
        // read again from the page cache (or the file) with the same contents.
        let _ = unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
    }

    pub fn heap_bytes(&self) -> usize {
        self.checks.capacity() * 16 + self.checked.capacity() * 8
    }
}

fn decode_pack(b: &[u8]) -> Option<PackInfo> {
    Some(PackInfo {
        id: PackId(Id(b[..32].try_into().unwrap())),
        blob_type: match b[32] {
            0 => BlobType::Data,
            1 => BlobType::Tree,
            _ => return None,
        },
        archived: match b[33] {
            0 => false,
            1 => true,
            _ => return None,
        },
        size: u64::from_le_bytes(b[34..42].try_into().unwrap()),
    })
}

fn encode_pack(p: &PackInfo) -> [u8; PACK_LEN] {
    let mut b = [0u8; PACK_LEN];
    b[..32].copy_from_slice(&p.id.0 .0);
    b[32] = match p.blob_type {
        BlobType::Data => 0,
        BlobType::Tree => 1,
    };
    b[33] = p.archived as u8;
    b[34..].copy_from_slice(&p.size.to_le_bytes());
    b
}

/// Writes a cache file: entries first, in order, then `finish` with the rest.
pub(super) struct Writer {
    out: BufWriter<File>,
    bits: u32,
    dir: Vec<u32>,
    count: u64,
    block: Vec<u8>,
    checks: Vec<[u8; 16]>,
    last: Option<[u8; 32]>,
}

impl Writer {
    /// `bits`: the directory's width, from the number of entries expected.
    pub fn new(mut file: File, bits: u32) -> Result<Writer> {
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER_LEN])?;
        Ok(Writer {
            out,
            bits,
            dir: vec![0u32; (1 << bits) + 1],
            count: 0,
            block: Vec::with_capacity(BLOCK),
            checks: Vec::new(),
            last: None,
        })
    }

    /// Adds the next entry (ids strictly increasing); a repeat of the last id is dropped
    /// (the first of equal ids wins: callers order them by preference).
    pub fn push(&mut self, id: &[u8; 32], e: &Entry) -> Result<()> {
        if self.last.as_ref() == Some(id) {
            return Ok(());
        }
        self.last = Some(*id);
        self.dir[super::table::bucket(id, self.bits) + 1] += 1;
        self.count += 1;
        // SAFETY: `Entry` is 46 bytes of byte arrays with no padding.
        let bytes: &[u8; ENTRY_LEN] = unsafe { &*(e as *const Entry).cast::<[u8; ENTRY_LEN]>() };
        let mut rest: &[u8] = bytes;
        while !rest.is_empty() {
            let n = (BLOCK - self.block.len()).min(rest.len());
            self.block.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.block.len() == BLOCK {
                self.end_block()?;
            }
        }
        Ok(())
    }

    fn end_block(&mut self) -> Result<()> {
        self.checks.push(
            blake3::hash(&self.block).as_bytes()[..16]
                .try_into()
                .unwrap(),
        );
        self.out.write_all(&self.block)?;
        self.block.clear();
        Ok(())
    }

    /// Writes packs, file ids, directory and checks, then the header.
    pub fn finish(
        mut self,
        repository_id: &Id,
        tiers: &[u8; 32],
        packs: &[PackInfo],
        live_files: &[IndexFileId],
        superseded_files: &[IndexFileId],
    ) -> Result<File> {
        if !self.block.is_empty() {
            self.end_block()?;
        }
        for k in 0..(1usize << self.bits) {
            self.dir[k + 1] += self.dir[k];
        }
        let header = Header {
            repository_id: *repository_id,
            tiers: *tiers,
            bits: self.bits,
            packs: u32::try_from(packs.len())
                .map_err(|_| std::io::Error::other("too many packs"))?,
            entries: self.count,
            live_files: live_files.len() as u32,
            superseded_files: superseded_files.len() as u32,
        };
        let fixed = header.encode();
        let mut hasher = blake3::Hasher::new();
        hasher.update(&fixed);
        let mut put = |out: &mut BufWriter<File>, b: &[u8]| -> Result<()> {
            hasher.update(b);
            out.write_all(b)?;
            Ok(())
        };
        for p in packs {
            put(&mut self.out, &encode_pack(p))?;
        }
        for f in live_files.iter().chain(superseded_files) {
            put(&mut self.out, &f.0 .0)?;
        }
        for d in &self.dir {
            put(&mut self.out, &d.to_le_bytes())?;
        }
        for c in &self.checks {
            put(&mut self.out, c)?;
        }
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&fixed)?;
        file.write_all(hasher.finalize().as_bytes())?;
        file.seek(SeekFrom::Start(0))?;
        Ok(file)
    }
}

//! The in-memory index: lookups agree with a plain map, and its memory stays within the design
//! brief's budget of 48 bytes per blob, measured by a counting allocator (every heap byte the
//! index keeps after it is built, not a size computed from its fields).
//!
//! `index_memory_1m` runs in CI; the 10-million-blob figure the brief asks for comes from
//! `cargo test --release --test index -- --ignored --nocapture index_memory_10m`.

use ocvault::format::{BlobType, IndexFile, IndexPack, PackedBlob};
use ocvault::index::Index;
use ocvault::{BlobId, Id, IndexFileId, PackId};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::sync::Mutex;

/// Counts live heap bytes and their peak, for the whole test binary.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size() as isize, Relaxed) + l.size() as isize;
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size() as isize, Relaxed) + l.size() as isize;
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size() as isize, Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            let now = LIVE.fetch_add(new as isize - l.size() as isize, Relaxed) + new as isize
                - l.size() as isize;
            PEAK.fetch_max(now, Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The memory tests measure process-wide counters: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// SplitMix64: synthetic ids that look like hashes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn id(&mut self) -> Id {
        let mut id = [0u8; 32];
        for c in id.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        Id(id)
    }
}

/// `blobs` synthetic blobs, `per_pack` to a pack.
fn synthetic_packs(blobs: usize, per_pack: usize) -> Vec<IndexPack> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut packs = Vec::with_capacity(blobs / per_pack + 1);
    let mut made = 0;
    while made < blobs {
        let n = per_pack.min(blobs - made);
        let mut list = Vec::with_capacity(n);
        let mut offset = 0u32;
        for _ in 0..n {
            let id = rng.id();
            let length = 200_000 + (rng.next() % 100_000) as u32;
            list.push(PackedBlob {
                id: BlobId(id),
                offset,
                length,
                raw_length: length + 1000,
            });
            offset += length;
        }
        packs.push(IndexPack {
            id: PackId(rng.id()),
            blob_type: BlobType::Data,
            size: offset as u64 + 4096,
            blobs: list,
        });
        made += n;
    }
    packs
}

/// Builds an index of `blobs` synthetic blobs and returns its heap bytes per blob, measured.
fn measure(blobs: usize) -> f64 {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 64 blobs a pack: 16 MiB packs of 256 KiB chunks. Smaller chunks put more blobs in a
    // pack, which only lowers the per-pack share.
    let packs = synthetic_packs(blobs, 64);
    let probe: Vec<(Id, u32)> = packs
        .iter()
        .step_by(97)
        .map(|p| (p.blobs[1].id.0, p.blobs[1].offset))
        .collect();
    let input_bytes = LIVE.load(Relaxed);
    let before = input_bytes - packs_heap_bytes(&packs);
    PEAK.store(LIVE.load(Relaxed), Relaxed);
    let started = std::time::Instant::now();
    let index = Index::from_packs(packs);
    let built = started.elapsed();
    let held = LIVE.load(Relaxed) - before;
    let peak = PEAK.load(Relaxed) - input_bytes;
    assert_eq!(index.len(), blobs);
    let started = std::time::Instant::now();
    for (id, offset) in &probe {
        assert_eq!(index.get(id).map(|l| l.offset), Some(*offset));
    }
    let looked = started.elapsed();
    let measured = held as f64 / blobs as f64;
    println!(
        "index of {blobs} blobs in {} packs: built in {built:.2?}, {} lookups in {looked:.2?}; \
         {measured:.3} heap bytes per blob held (the index's own count: {:.3}); building \
         needed {:.1} bytes per blob beyond its input",
        index.packs().len(),
        probe.len(),
        index.bytes_per_blob(),
        peak as f64 / blobs as f64,
    );
    measured
}

/// Heap bytes of the synthetic input, so that it is not counted as the index's.
#[allow(clippy::ptr_arg)] // the Vec's capacity is part of the count
fn packs_heap_bytes(packs: &Vec<IndexPack>) -> isize {
    (packs.capacity() * std::mem::size_of::<IndexPack>()
        + packs
            .iter()
            .map(|p| p.blobs.capacity() * std::mem::size_of::<PackedBlob>())
            .sum::<usize>()) as isize
}

#[test]
fn index_memory_1m() {
    let bpb = measure(1_000_000);
    assert!(
        bpb <= 48.0,
        "{bpb:.3} bytes per blob exceeds the budget of 48"
    );
}

/// The design brief's figure: 10 million synthetic blobs (about 1.5 GB of memory at peak, of
/// which the synthetic input is most; ~10 s in release).
#[test]
#[ignore]
fn index_memory_10m() {
    let bpb = measure(10_000_000);
    assert!(
        bpb <= 48.0,
        "{bpb:.3} bytes per blob exceeds the budget of 48"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Lookups and iteration agree with a map built from the same packs: the first pack that
    /// lists a blob wins, ids that share or differ only in the first two bytes stay apart.
    #[test]
    fn lookups_agree_with_a_map(
        packs in proptest::collection::vec(
            proptest::collection::vec((0u8..4, 0u8..3, any::<u8>(), any::<u32>()), 0..40),
            0..6,
        ),
        probes in proptest::collection::vec((0u8..4, 0u8..3, any::<u8>()), 0..40),
    ) {
        // Few distinct bytes, so that prefixes and whole ids collide often.
        let id = |a: u8, b: u8, c: u8| {
            let mut x = [0u8; 32];
            x[0] = a;
            x[1] = b * 85;
            x[31] = c % 8;
            Id(x)
        };
        let mut model: HashMap<Id, (PackId, u32)> = HashMap::new();
        let mut index_packs = Vec::new();
        for (n, blobs) in packs.iter().enumerate() {
            let pid = PackId(Id([n as u8 + 1; 32]));
            let list: Vec<PackedBlob> = blobs
                .iter()
                .map(|&(a, b, c, off)| PackedBlob {
                    id: BlobId(id(a, b, c)),
                    offset: off,
                    length: off / 2,
                    raw_length: off / 3,
                })
                .collect();
            for b in &list {
                model.entry(b.id.0).or_insert((pid, b.offset));
            }
            index_packs.push(IndexPack { id: pid, blob_type: BlobType::Data, size: 1, blobs: list });
        }
        let index = Index::from_files(vec![(
            IndexFileId::default(),
            IndexFile { supersedes: vec![], packs: index_packs },
        )]);
        prop_assert_eq!(index.len(), model.len());
        for (a, b, c) in probes {
            let i = id(a, b, c);
            let got = index.get(&i).map(|l| (index.pack(l.pack).id, l.offset));
            prop_assert_eq!(got, model.get(&i).copied());
        }
        let listed: Vec<(Id, (PackId, u32))> = index
            .iter()
            .map(|(i, l)| (i, (index.pack(l.pack).id, l.offset)))
            .collect();
        let mut expected: Vec<(Id, (PackId, u32))> = model.into_iter().collect();
        expected.sort();
        prop_assert_eq!(listed, expected);
    }
}

//! Micro-benchmarks of the backup pipeline's CPU stages: chunk, hash, compress, seal, pack,
//! index, tree encoding. `cargo bench --bench pipeline` (add `-- --quick` for a fast pass).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ocvault::chunker::Chunker;
use ocvault::crypto::{Keys, MasterKey, SealKind};
use ocvault::format::{self, BlobType, IndexPack, Node, NodeKind, PackedBlob, Tree};
use ocvault::index::Index;
use ocvault::pack::{seal_blob, PackBuilder};
use ocvault::repository::InitOptions;
use ocvault::Id;
use std::hint::black_box;
use std::time::Duration;

const CHUNK: usize = 256 * 1024;

fn keys() -> Keys {
    MasterKey::from_bytes([7; 32]).derive()
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Text-like bytes: SQL-ish lines from a small vocabulary with varying numbers; zstd level 3
/// shrinks them about 3-5x, like source code or logs.
fn text_bytes(n: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "INSERT",
        "INTO",
        "users",
        "VALUES",
        "name",
        "email",
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dog",
        "NULL",
        "example.com",
    ];
    let r = random_bytes(n, seed);
    let mut out = Vec::with_capacity(n + 64);
    let mut i = 0;
    while out.len() < n {
        let w = WORDS[(r[i % n] & 15) as usize];
        out.extend_from_slice(w.as_bytes());
        out.push(b' ');
        if r[(i + 1) % n] & 7 == 0 {
            out.extend_from_slice(format!("{}, ", u32::from(r[(i + 2) % n]) * 7919).as_bytes());
        }
        if r[(i + 3) % n] & 15 == 0 {
            out.push(b'\n');
        }
        i += 4;
    }
    out.truncate(n);
    out
}

fn synthetic_id(i: u64) -> Id {
    Id(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

fn synthetic_packs(blobs: usize, per_pack: usize) -> Vec<IndexPack> {
    (0..blobs.div_ceil(per_pack))
        .map(|p| {
            let first = p * per_pack;
            let n = per_pack.min(blobs - first);
            let blobs = (0..n)
                .map(|j| PackedBlob {
                    id: ocvault::BlobId(synthetic_id((first + j) as u64)),
                    offset: (j * CHUNK) as u32,
                    length: CHUNK as u32,
                    raw_length: CHUNK as u32 + 100,
                })
                .collect();
            IndexPack {
                id: ocvault::PackId(synthetic_id(u64::MAX - p as u64)),
                blob_type: BlobType::Data,
                size: (n * CHUNK) as u64,
                blobs,
            }
        })
        .collect()
}

fn sample_tree(nodes: usize) -> Tree {
    let nodes = (0..nodes)
        .map(|i| Node {
            name: format!("file-{i:05}.rs").into_bytes(),
            kind: if i % 10 == 0 {
                NodeKind::Dir
            } else {
                NodeKind::File
            },
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            user: "alice".into(),
            group: "staff".into(),
            mtime_ns: 1_700_000_000_000_000_000 + i as i64 * 1_000_003,
            ctime_ns: 1_700_000_000_000_000_000 + i as i64 * 1_000_033,
            atime_ns: 1_700_000_000_000_000_000,
            size: (i as u64 * 7919) % 1_000_000,
            inode: 1_000_000 + i as u64,
            device: 2049,
            links: 1,
            rdev: 0,
            xattrs: vec![],
            link_target: vec![],
            content: if i % 10 == 0 {
                vec![]
            } else {
                (0..1 + i % 3)
                    .map(|j| ocvault::DataId(synthetic_id((i * 4 + j) as u64)))
                    .collect()
            },
            subtree: (i % 10 == 0).then(|| ocvault::TreeId(synthetic_id(i as u64 + 1_000_000))),
        })
        .collect();
    Tree { nodes }
}

fn chunking(c: &mut Criterion) {
    let data = random_bytes(64 << 20, 1);
    let chunker = Chunker::new(InitOptions::default().chunker, keys().chunker_seed());
    let mut g = c.benchmark_group("chunk");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("split_all_64MiB", |b| {
        b.iter(|| black_box(chunker.split_all(black_box(&data))).len())
    });
    g.finish();
}

fn hashing_compression_sealing(c: &mut Criterion) {
    let keys = keys();
    let random = random_bytes(CHUNK, 2);
    let text = text_bytes(CHUNK, 3);
    let mut g = c.benchmark_group("blob");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes(CHUNK as u64));
    g.bench_function("blob_id_256KiB", |b| {
        b.iter(|| keys.blob_id(black_box(&random)))
    });
    g.bench_function("frame_zstd3_text_256KiB", |b| {
        b.iter(|| format::frame(black_box(&text), 3))
    });
    g.bench_function("frame_zstd3_random_256KiB", |b| {
        b.iter(|| format::frame(black_box(&random), 3))
    });
    let id = keys.blob_id(&random);
    g.bench_function("seal_256KiB", |b| {
        b.iter(|| keys.seal(SealKind::DataBlob, &id.0, black_box(&random)))
    });
    let sealed = keys.seal(SealKind::DataBlob, &id.0, &random);
    g.bench_function("open_256KiB", |b| {
        b.iter(|| {
            keys.open(SealKind::DataBlob, &id.0, black_box(&sealed))
                .unwrap()
        })
    });
    let text_id = keys.blob_id(&text);
    g.bench_function("seal_blob_text_256KiB", |b| {
        b.iter(|| seal_blob(&keys, BlobType::Data, &text_id, black_box(&text), 3))
    });
    g.finish();
}

fn packing(c: &mut Criterion) {
    let keys = keys();
    let blobs: Vec<(Id, Vec<u8>)> = (0..64)
        .map(|i| {
            let raw = random_bytes(CHUNK, 100 + i);
            let id = keys.blob_id(&raw);
            (id, seal_blob(&keys, BlobType::Data, &id, &raw, 0))
        })
        .collect();
    let total: usize = blobs.iter().map(|(_, s)| s.len()).sum();
    let mut g = c.benchmark_group("pack");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("add_finish_64x256KiB", |b| {
        b.iter(|| {
            let mut p = PackBuilder::new(BlobType::Data, total + 4096);
            for (id, sealed) in &blobs {
                p.add(*id, CHUNK as u32, sealed);
            }
            p.finish(&keys).0.len()
        })
    });
    g.finish();
}

fn indexing(c: &mut Criterion) {
    const N: usize = 1_000_000;
    let packs = synthetic_packs(N, 64);
    let mut g = c.benchmark_group("index");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("build_1M", |b| {
        b.iter_batched(
            || packs.clone(),
            |p| Index::from_packs(p).len(),
            BatchSize::LargeInput,
        )
    });
    let index = Index::from_packs(packs);
    let present: Vec<Id> = (0..4096u64).map(|i| synthetic_id(i * 241)).collect();
    let absent: Vec<Id> = (0..4096u64)
        .map(|i| synthetic_id(u64::MAX / 2 + i))
        .collect();
    g.throughput(Throughput::Elements(present.len() as u64));
    g.sample_size(30);
    g.bench_function("lookup_hit_x4096", |b| {
        b.iter(|| present.iter().filter(|id| index.get(id).is_some()).count())
    });
    g.bench_function("lookup_miss_x4096", |b| {
        b.iter(|| absent.iter().filter(|id| index.contains(id)).count())
    });
    g.finish();
}

fn trees(c: &mut Criterion) {
    let tree = sample_tree(1000);
    let enc = format::to_postcard(&tree);
    let framed = format::frame(&enc, 3);
    let mut g = c.benchmark_group("tree");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes(enc.len() as u64));
    g.bench_function("encode_1000_nodes", |b| {
        b.iter(|| format::to_postcard(black_box(&tree)))
    });
    g.bench_function("decode_1000_nodes", |b| {
        b.iter(|| format::from_postcard::<Tree>(black_box(&enc), "tree").unwrap())
    });
    g.bench_function("encode_frame_1000_nodes", |b| {
        b.iter(|| format::frame(&format::to_postcard(black_box(&tree)), 3))
    });
    g.bench_function("unframe_decode_1000_nodes", |b| {
        b.iter(|| {
            let raw = format::unframe(black_box(&framed), format::MAX_OBJECT_SIZE, "tree").unwrap();
            format::from_postcard::<Tree>(&raw, "tree").unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // No plots: rendering them takes longer than a `--quick` run of each benchmark.
    config = Criterion::default().without_plots();
    targets = chunking, hashing_compression_sealing, packing, indexing, trees
}
criterion_main!(benches);

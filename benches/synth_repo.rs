//! Builds a large synthetic repository quickly, for the scale measurement (benches/scale.sh,
//! benches/README.md). Every file is real: packs assembled and sealed by the library's
//! `PackBuilder` with real sealed headers, index files and snapshots sealed and written through
//! a write session, trees encoded and stored as tree blobs, ids keyed hashes. Only the blob
//! contents are tiny (16 bytes: a per-run salt and a counter), so 50 million blobs take
//! minutes, not the days that 3 TiB of real data would.
//!
//! Shape: packs of `--blobs-per-pack` blobs, files of `--chunks-per-file` blobs, directories of
//! `--files-per-dir` files. Snapshot k (of `--snapshots`) holds `synth/part-0..=k` (each part
//! a tree of directories, shared with every later snapshot) and, for the first three,
//! `synth/scratch-k`, directories no later snapshot keeps: its directories alternate in the
//! blob stream with part k's, so forgetting those snapshots leaves packs wholly unused (to
//! delete) and partly used (to repack). `synth/part-0/real.bin` is a real file of random bytes
//! (also written to `--real-file-out`), chunked by the repository's chunker, for a byte-exact
//! restore.
//!
//! Pack files are written with plain `std::fs::write` into `data/xx/` and synced once at the
//! end, not fsynced one by one as a backup does: the bytes are the same, and 195,000 fsyncs
//! would be most of the time.

use clap::Parser;
use ocvault::backend::{Backend, FileKind};
use ocvault::chunker::Chunker;
use ocvault::crypto::Keys;
use ocvault::format::{
    BlobType, IndexFile, IndexPack, Node, NodeKind, Snapshot, SnapshotSummary, Tree,
};
use ocvault::pack::{seal_blob, PackBuilder};
use ocvault::repository::{InitOptions, Repository};
use ocvault::session::WriteSession;
use ocvault::{DataId, Id, TreeId};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Builds a synthetic ocvault repository of N tiny blobs (benches/README.md)")]
struct Args {
    /// Local repository folder to create (must not hold a repository yet)
    #[arg(long)]
    repo: PathBuf,
    /// Data blobs in the synthetic directories (rounded up to whole directories)
    #[arg(long)]
    blobs: u64,
    #[arg(long, default_value_t = 8)]
    snapshots: usize,
    /// 256: a 16 MiB pack of 64 KiB chunks
    #[arg(long, default_value_t = 256)]
    blobs_per_pack: u64,
    #[arg(long, default_value_t = 100)]
    chunks_per_file: u64,
    #[arg(long, default_value_t = 100)]
    files_per_dir: u64,
    /// Packs per index file (16: as a backup writes them)
    #[arg(long, default_value_t = ocvault::packer::PACKS_PER_INDEX)]
    packs_per_index: usize,
    /// Size of the one real file, synth/part-0/real.bin
    #[arg(long, default_value_t = 8)]
    real_file_mib: usize,
    /// Where to write a copy of the real file, to compare a restore with
    #[arg(long)]
    real_file_out: PathBuf,
    /// Operations-log entries to add, one chain of `wal-push` entries (a 15-minute archive
    /// schedule for 7 years is about 245,000)
    #[arg(long, default_value_t = 0)]
    log_entries: u64,
}

/// Bytes of a blob's content: an 8-byte salt (new each run) and an 8-byte counter.
fn blob_raw(salt: u64, counter: u64) -> [u8; 16] {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&salt.to_le_bytes());
    raw[8..].copy_from_slice(&counter.to_le_bytes());
    raw
}

/// The synthetic directories, in the order their blobs are stored.
struct Layout {
    /// Per directory: the group it belongs to (part k or scratch k).
    dirs: Vec<Group>,
    blobs_per_dir: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    Part(usize),
    Scratch(usize),
}

const SCRATCH_SNAPSHOTS: usize = 3;

impl Layout {
    /// Scratch k gets a sixteenth of the directories, parts share the rest equally; in the
    /// stream, scratch k's directories alternate with part k's.
    fn new(a: &Args) -> Layout {
        let blobs_per_dir = a.chunks_per_file * a.files_per_dir;
        let total = a.blobs.div_ceil(blobs_per_dir).max(a.snapshots as u64 + 3) as usize;
        let scratch_groups = SCRATCH_SNAPSHOTS.min(a.snapshots);
        let scratch_each = (total / 16).max(1);
        let parts_total = total - scratch_each * scratch_groups;
        let mut dirs = Vec::with_capacity(total);
        for k in 0..a.snapshots {
            let part = parts_total / a.snapshots + usize::from(k < parts_total % a.snapshots);
            let scratch = if k < scratch_groups { scratch_each } else { 0 };
            for i in 0..part.max(scratch) {
                if i < part {
                    dirs.push(Group::Part(k));
                }
                if i < scratch {
                    dirs.push(Group::Scratch(k));
                }
            }
        }
        Layout {
            dirs,
            blobs_per_dir,
        }
    }

    fn blobs(&self) -> u64 {
        self.dirs.len() as u64 * self.blobs_per_dir
    }
}

struct Ctx<'a> {
    keys: &'a Keys,
    root: &'a Path,
    session: &'a WriteSession<'a>,
    level: i32,
    salt: u64,
}

impl Ctx<'_> {
    /// Seals a pack and writes it (no fsync; see the module comment).
    fn write_pack(&self, b: PackBuilder) -> IndexPack {
        let (bytes, entry) = b.finish(self.keys);
        let path = self.root.join(FileKind::Pack.path(&entry.id));
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        entry
    }

    /// One data pack of the blobs with counters `range`.
    fn data_pack(&self, range: std::ops::Range<u64>) -> IndexPack {
        let mut b = PackBuilder::new(BlobType::Data, (range.end - range.start) as usize * 64);
        for c in range {
            let raw = blob_raw(self.salt, c);
            let id = self.keys.blob_id(&raw);
            let sealed = seal_blob(self.keys, BlobType::Data, &id, &raw, self.level);
            b.add(id, raw.len() as u32, &sealed);
        }
        self.write_pack(b)
    }

    fn save_index(&self, packs: Vec<IndexPack>) {
        self.session
            .save_file(&IndexFile {
                supersedes: Vec::new(),
                packs,
            })
            .expect("save index file");
    }

    /// Stores the blobs of `0..n` in packs of `per_pack`, `per_index` packs an index file.
    fn data_packs(&self, n: u64, per_pack: u64, per_index: usize) {
        let packs = n.div_ceil(per_pack);
        let groups = packs.div_ceil(per_index as u64);
        (0..groups).into_par_iter().for_each(|g| {
            let first = g * per_index as u64;
            let last = (first + per_index as u64).min(packs);
            let entries = (first..last)
                .map(|p| self.data_pack(p * per_pack..((p + 1) * per_pack).min(n)))
                .collect();
            self.save_index(entries);
        });
    }

    /// A tree blob: sealed for a tree pack.
    fn seal_tree(&self, tree: &Tree) -> (Id, u32, Vec<u8>) {
        let raw = ocvault::format::to_postcard(tree);
        let id = self.keys.blob_id(&raw);
        let sealed = seal_blob(self.keys, BlobType::Tree, &id, &raw, self.level);
        (id, raw.len() as u32, sealed)
    }

    /// The tree of synthetic directory `d`: files of `chunks` blobs each.
    fn dir_tree(&self, a: &Args, d: u64) -> Tree {
        let nodes = (0..a.files_per_dir)
            .map(|f| {
                let first = (d * a.files_per_dir + f) * a.chunks_per_file;
                let content = (first..first + a.chunks_per_file)
                    .map(|c| DataId(self.keys.blob_id(&blob_raw(self.salt, c))))
                    .collect();
                Node {
                    size: a.chunks_per_file * 16,
                    content,
                    ..node(format!("file-{f:05}"), NodeKind::File)
                }
            })
            .collect();
        Tree { nodes }
    }
}

/// A node with fixed metadata (so equal contents make equal trees, as in real backups).
fn node(name: String, kind: NodeKind) -> Node {
    let t = 1_700_000_000_000_000_000;
    Node {
        name: name.into_bytes(),
        kind,
        mode: if kind == NodeKind::Dir { 0o755 } else { 0o644 },
        uid: 1000,
        gid: 1000,
        user: "synth".into(),
        group: "synth".into(),
        mtime_ns: t,
        ctime_ns: t,
        atime_ns: t,
        size: 0,
        inode: 0,
        device: 0,
        links: 1,
        rdev: 0,
        xattrs: Vec::new(),
        link_target: Vec::new(),
        content: Vec::new(),
        subtree: None,
    }
}

fn dir_node(name: String, subtree: Id) -> Node {
    Node {
        subtree: Some(TreeId(subtree)),
        ..node(name, NodeKind::Dir)
    }
}

/// Stores every directory's tree, in tree packs of about 16 MiB; returns their ids in order.
fn dir_trees(ctx: &Ctx, a: &Args, dirs: u64, per_index: usize) -> Vec<Id> {
    let tree_bytes = (a.files_per_dir * (a.chunks_per_file * 33 + 80)).max(1);
    let per_pack = ((16u64 << 20) / tree_bytes).max(1);
    let packs: Vec<(Vec<Id>, IndexPack)> = (0..dirs.div_ceil(per_pack))
        .into_par_iter()
        .map(|p| {
            let mut b = PackBuilder::new(BlobType::Tree, 17 << 20);
            let mut ids = Vec::new();
            for d in p * per_pack..((p + 1) * per_pack).min(dirs) {
                let (id, raw_len, sealed) = ctx.seal_tree(&ctx.dir_tree(a, d));
                b.add(id, raw_len, &sealed);
                ids.push(id);
            }
            (ids, ctx.write_pack(b))
        })
        .collect();
    let mut ids = Vec::new();
    let mut entries = Vec::new();
    for (i, e) in packs {
        ids.extend(i);
        entries.push(e);
    }
    for chunk in entries.chunks(per_index) {
        ctx.save_index(chunk.to_vec());
    }
    ids
}

/// Stores the real file's chunks in one data pack; returns its node.
fn real_file(ctx: &Ctx, repo: &Repository, a: &Args) -> Node {
    let mut data = vec![0u8; a.real_file_mib << 20];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut data);
    std::fs::write(&a.real_file_out, &data).expect("write the real file's copy");
    let chunker = Chunker::new(repo.config().chunker, ctx.keys.chunker_seed());
    let mut b = PackBuilder::new(BlobType::Data, data.len() + (1 << 20));
    let mut content = Vec::new();
    for r in chunker.split_all(&data) {
        let raw = &data[r];
        let id = ctx.keys.blob_id(raw);
        b.add(
            id,
            raw.len() as u32,
            &seal_blob(ctx.keys, BlobType::Data, &id, raw, ctx.level),
        );
        content.push(DataId(id));
    }
    ctx.save_index(vec![ctx.write_pack(b)]);
    Node {
        size: data.len() as u64,
        content,
        ..node("real.bin".into(), NodeKind::File)
    }
}

/// Stores the part, scratch, `synth` and root trees and the snapshots.
fn snapshots(ctx: &Ctx, a: &Args, layout: &Layout, dir_ids: &[Id], real: Node) {
    let mut b = PackBuilder::new(BlobType::Tree, 1 << 20);
    let mut store = |tree: &Tree| {
        let (id, raw_len, sealed) = ctx.seal_tree(tree);
        b.add(id, raw_len, &sealed);
        id
    };
    let group_tree = |g: Group| Tree {
        nodes: layout
            .dirs
            .iter()
            .zip(dir_ids)
            .enumerate()
            .filter(|(_, (dg, _))| **dg == g)
            .map(|(d, (_, id))| dir_node(format!("dir-{d:07}"), *id))
            .collect(),
    };
    let mut part0 = group_tree(Group::Part(0));
    part0.nodes.push(real);
    let mut parts = vec![store(&part0)];
    for k in 1..a.snapshots {
        parts.push(store(&group_tree(Group::Part(k))));
    }
    let mut roots = Vec::new();
    for k in 0..a.snapshots {
        let mut synth: Vec<Node> = (0..=k)
            .map(|j| dir_node(format!("part-{j}"), parts[j]))
            .collect();
        if k < SCRATCH_SNAPSHOTS {
            let scratch = store(&group_tree(Group::Scratch(k)));
            synth.push(dir_node(format!("scratch-{k}"), scratch));
        }
        let synth = store(&Tree { nodes: synth });
        roots.push(store(&Tree {
            nodes: vec![dir_node("synth".into(), synth)],
        }));
    }
    ctx.save_index(vec![ctx.write_pack(b)]);
    let day = 86_400_000_000_000i64;
    for (k, root) in roots.into_iter().enumerate() {
        let snap = Snapshot {
            time_unix_ns: 1_700_000_000_000_000_000 + k as i64 * day,
            hostname: "synth-host".into(),
            username: "synth".into(),
            paths: vec!["/synth".into()],
            tags: vec!["synthetic".into()],
            tree: TreeId(root),
            parent: None,
            excludes: Vec::new(),
            incomplete: false,
            summary: SnapshotSummary::default(),
            program_version: format!("ocvault {} synth-repo", env!("CARGO_PKG_VERSION")),
            postgres: None,
            log_heads: Vec::new(),
        };
        ctx.session.save_file(&snap).expect("save snapshot");
    }
}

/// `n` log entries, each naming the one before it as its parent, as a WAL archive's pushes
/// write them.
fn log_entries(session: &WriteSession, n: u64) {
    let mut parent: Option<Id> = None;
    for i in 0..n {
        let entry = ocvault::format::LogEntry {
            time_unix_ns: 1_700_000_000_000_000_000 + i as i64 * 900_000_000_000,
            hostname: "synth-host".into(),
            username: "postgres".into(),
            operation: "wal-push".into(),
            arguments: vec![
                "ocvault".into(),
                "wal-push".into(),
                format!("pg_wal/{:024X}", i + 1),
            ],
            result: "ok".into(),
            snapshots: Vec::new(),
            parents: parent.into_iter().collect(),
            key_id: session.repo().key_id(),
            approvals: Vec::new(),
        };
        parent = Some(session.save_file(&entry).expect("save log entry"));
    }
}

fn main() {
    let a = Args::parse();
    let password = std::env::var("OCVAULT_PASSWORD").expect("set OCVAULT_PASSWORD");
    let start = Instant::now();
    let url = a.repo.to_str().expect("a UTF-8 repository path");
    let backend = Backend::open(url, true).expect("open the repository folder");
    let repo =
        Repository::init(backend, password.as_bytes(), &InitOptions::default()).expect("init");
    for i in 0..=255u8 {
        std::fs::create_dir_all(a.repo.join(format!("data/{i:02x}"))).expect("data/xx");
    }
    let session = repo.write_session().expect("write session");
    let ctx = Ctx {
        keys: repo.keys(),
        root: &a.repo,
        session: &session,
        level: repo.config().compression_level,
        salt: rand::random(),
    };
    let layout = Layout::new(&a);
    let n = layout.blobs();
    ctx.data_packs(n, a.blobs_per_pack, a.packs_per_index);
    let data_secs = start.elapsed().as_secs_f64();
    let dir_ids = dir_trees(&ctx, &a, layout.dirs.len() as u64, a.packs_per_index);
    let real = real_file(&ctx, &repo, &a);
    snapshots(&ctx, &a, &layout, &dir_ids, real);
    log_entries(&session, a.log_entries);
    drop(session);
    // One sync for every pack written without fsync.
    unsafe { libc::sync() };
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "blobs": n,
            "dirs": layout.dirs.len(),
            "data_packs": n.div_ceil(a.blobs_per_pack),
            "data_seconds": data_secs,
            "seconds": secs,
            "real_file": "synth/part-0/real.bin",
        })
    );
}

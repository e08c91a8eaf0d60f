//! `copy`: snapshots from one repository into another that has its own keys.
//!
//! Blob ids are keyed hashes, so the same bytes have different ids in the two repositories:
//! every blob copied is opened, hashed with the destination's key, and sealed anew. To avoid
//! reading what the destination already holds, copy pairs each snapshot copied before with
//! its source (same time, host, user and paths) and walks both trees side by side: that maps
//! source ids to destination ids without reading any data. Only blobs neither mapped nor
//! present are read, grouped by pack.

use crate::error::{Error, Result};
use crate::format::{BlobType, IndexFile, Snapshot, Tree};
use crate::id::{DataId, Id, SnapshotId, TreeId};
use crate::index::Index;
use crate::pack;
use crate::packer::{self, Indexing, Packer, PackerParts, PACKS_PER_INDEX};
use crate::repository::{IndexedRepository, Repository};
use crate::session::IndexedWriteSession;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// A blob read for copying: source id, destination id, plaintext.
/// A blob read for copying: source id, destination id, and its payload, framed (compressed)
/// as the source stored it when the two repositories compress alike, else plaintext.
type ReadBlob = (Id, Id, Payload);

enum Payload {
    Framed { raw_length: u32, framed: Vec<u8> },
    Plain(Vec<u8>),
}

/// Packs read at once; bounds memory to a few packs' worth of blobs (two groups are held:
/// one being stored while the next is read).
const PACKS_AT_ONCE: usize = 2;

#[derive(Debug, Default, Serialize)]
pub struct CopyReport {
    /// (source id, destination id) of each snapshot copied.
    pub copied: Vec<(String, String)>,
    /// Source snapshots the destination already holds.
    pub skipped: Vec<String>,
    /// Data blobs read from the source.
    pub blobs_read: u64,
    /// Blobs (data and tree) stored in the destination.
    pub blobs_copied: u64,
    /// Pack bytes the destination grew by.
    pub bytes_copied: u64,
    /// The PostgreSQL WAL archive (see [`copy_wal`]).
    pub wal: WalCopyReport,
}

/// What copying the WAL archive did.
#[derive(Debug, Default, Serialize)]
pub struct WalCopyReport {
    /// WAL files copied.
    pub copied: u64,
    /// WAL files the destination held already (by name).
    pub present: u64,
    /// Names the destination holds with other content: left as they are.
    pub conflicts: Vec<String>,
    /// Blobs stored in the destination for them, and their pack bytes.
    pub blobs_copied: u64,
    pub bytes_copied: u64,
}

/// What makes two snapshots the same backup, whatever repository holds them.
fn identity(s: &Snapshot) -> (i64, &str, &str, Vec<&str>) {
    let mut paths: Vec<&str> = s.paths.iter().map(String::as_str).collect();
    paths.sort();
    (s.time_unix_ns, &s.hostname, &s.username, paths)
}

/// Copies `selected` from `src` into the repository of the session `dst`.
pub fn copy(
    src: &IndexedRepository,
    dst_session: &IndexedWriteSession,
    selected: &[(SnapshotId, Snapshot)],
) -> Result<CopyReport> {
    let dst = dst_session.repo();
    if src.config().repository_id == dst.config().repository_id {
        return Err(Error::usage(
            "source and destination are the same repository",
        ));
    }
    let dst_snaps = dst.list_snapshots()?;
    let src_snaps = src.list_snapshots()?;
    let mut report = CopyReport::default();
    let present: HashMap<_, &SnapshotId> =
        dst_snaps.iter().map(|(id, s)| (identity(s), id)).collect();
    let mut todo: Vec<&(SnapshotId, Snapshot)> = Vec::new();
    for pair in selected {
        if present.contains_key(&identity(&pair.1)) {
            report.skipped.push(pair.0.to_hex());
        } else {
            todo.push(pair);
        }
    }
    todo.sort_by_key(|(_, s)| s.time_unix_ns);
    todo.dedup_by_key(|(id, _)| *id);
    if todo.is_empty() {
        return Ok(report);
    }

    let dst_live = dst.live_index();
    let ends = Ends {
        src,
        src_index: src.index(),
        dst,
        dst_live,
    };
    let mut map = seeded_map(&ends, dst.index(), &src_snaps, &dst_snaps, &present);

    // Pass 1: the trees to copy, and the data blobs that must be read.
    let mut trees: HashMap<Id, Tree> = HashMap::new();
    let mut need: HashSet<Id> = HashSet::new();
    for (_, s) in &todo {
        collect(&ends, &map, &s.tree.0, &mut trees, &mut need)?;
    }

    // Passes 2 and 3 store data before trees, and every pack is stored and indexed before the
    // snapshots are saved: a snapshot never names what is not stored.
    let save_index = |f: &IndexFile| dst_session.save_file(f).map(Id::from);
    let parts = PackerParts::new(dst_session, Indexing::Every(PACKS_PER_INDEX, &save_index));
    let (roots, packed) = packer::run(parts, |packer| -> Result<Vec<Id>> {
        report.blobs_read = copy_data(&ends, &need, &mut map, packer)?;
        // Pass 3: trees, bottom up, with destination ids.
        let map = std::sync::RwLock::new(std::mem::take(&mut map));
        todo.iter()
            .map(|(_, s)| copy_tree(&s.tree.0, &trees, dst_live, &map, packer))
            .collect()
    });
    let roots = roots?;
    let packed = packed?;
    report.blobs_copied = packed.blobs_added;
    report.bytes_copied = packed.bytes_added;
    let mut new_ids: HashMap<SnapshotId, SnapshotId> = HashMap::new();
    // The destination's log, not the source's: its snapshots name its own entries.
    let log_heads = crate::oplog::heads(dst)?;
    for ((sid, s), root) in todo.iter().zip(roots) {
        let mut d = s.clone();
        d.log_heads = log_heads.clone();
        d.tree = TreeId(root);
        d.parent = s.parent.and_then(|p| new_ids.get(&p).copied());
        let did = dst_session.save_file(&d)?;
        new_ids.insert(*sid, did);
        report.copied.push((sid.to_hex(), did.to_hex()));
    }
    Ok(report)
}

/// The two repositories of a copy, with the source's readable index and the destination's
/// live one.
struct Ends<'a> {
    src: &'a Repository,
    src_index: &'a Index,
    dst: &'a Repository,
    dst_live: &'a Index,
}

/// Source ids mapped to destination ids, from the latest copied pair of each backup group.
fn seeded_map(
    ends: &Ends,
    dst_read: &Index,
    src_snaps: &[(SnapshotId, Snapshot)],
    dst_snaps: &[(SnapshotId, Snapshot)],
    present: &HashMap<(i64, &str, &str, Vec<&str>), &SnapshotId>,
) -> HashMap<Id, Id> {
    let mut map: HashMap<Id, Id> = HashMap::new();
    let mut latest: BTreeMap<(String, Vec<String>), (&Snapshot, &Snapshot)> = BTreeMap::new();
    for (_, s) in src_snaps {
        if let Some(did) = present.get(&identity(s)) {
            let d = &dst_snaps.iter().find(|(i, _)| i == *did).expect("listed").1;
            let mut paths = s.paths.clone();
            paths.sort();
            let key = (s.hostname.clone(), paths);
            if latest
                .get(&key)
                .is_none_or(|(p, _)| p.time_unix_ns < s.time_unix_ns)
            {
                latest.insert(key, (s, d));
            }
        }
    }
    let mut seeded = HashSet::new();
    for (s, d) in latest.values() {
        // A pair that cannot be walked only costs reading more data.
        let _ = seed_map(
            ends.src,
            ends.src_index,
            ends.dst,
            dst_read,
            &s.tree,
            &d.tree,
            &mut map,
            &mut seeded,
        );
    }
    map
}

/// Pass 2: reads the missing data blobs, pack by pack, and stores what the destination lacks.
/// Returns the number of blobs read.
fn copy_data(
    ends: &Ends,
    need: &HashSet<Id>,
    map: &mut HashMap<Id, Id>,
    packer: &Packer,
) -> Result<u64> {
    let mut by_pack: BTreeMap<u32, Vec<(Id, crate::index::BlobLocation)>> = BTreeMap::new();
    for id in need {
        let loc = ends.src_index.get(id).ok_or_else(|| {
            Error::corrupt(format!("blob {}", id.short()), "not in the source index")
        })?;
        by_pack.entry(loc.pack).or_default().push((*id, loc));
    }
    let packs: Vec<_> = by_pack.into_iter().collect();
    let mut blobs_read = 0;
    // Same compression: the source's frames are sealed again as they are (compressing
    // is most of a copy's work); the plaintext is still opened, to check it and to name it.
    let reuse_frames = ends.src.config().compression_level == packer.compression_level();
    let read_group = |group: &[(u32, Vec<(Id, crate::index::BlobLocation)>)]| {
        group
            .par_iter()
            .map(|(pack_no, blobs)| read_pack_blobs(ends, *pack_no, blobs, reuse_frames))
            .collect::<Result<Vec<Vec<ReadBlob>>>>()
    };
    // Each group's blobs are compressed and sealed on every core while the next group is
    // read (and opened and hashed, also in parallel).
    let mut groups = packs.chunks(PACKS_AT_ONCE);
    let mut ready = match groups.next() {
        Some(g) => read_group(g)?,
        None => Vec::new(),
    };
    loop {
        crate::interrupt::check()?;
        let blobs: Vec<ReadBlob> = std::mem::take(&mut ready).into_iter().flatten().collect();
        if blobs.is_empty() {
            break;
        }
        let next = groups.next();
        let (read, stored) = rayon::join(
            || next.map(read_group).transpose(),
            || {
                blobs
                    .par_iter()
                    .try_for_each(|(_, did, payload)| match payload {
                        Payload::Framed { raw_length, framed } => packer
                            .store_framed_as(BlobType::Data, *did, *raw_length, framed)
                            .map(drop),
                        Payload::Plain(raw) => packer.store_as(BlobType::Data, *did, raw).map(drop),
                    })
            },
        );
        stored?;
        blobs_read += blobs.len() as u64;
        map.extend(blobs.into_iter().map(|(sid, did, _)| (sid, did)));
        ready = read?.unwrap_or_default();
    }
    Ok(blobs_read)
}

/// Maps the ids of a source tree onto those of its earlier copy, walking both side by side.
#[allow(clippy::too_many_arguments)]
fn seed_map(
    src: &Repository,
    src_index: &Index,
    dst: &Repository,
    dst_index: &Index,
    src_tree: &TreeId,
    dst_tree: &TreeId,
    map: &mut HashMap<Id, Id>,
    seen: &mut HashSet<TreeId>,
) -> Result<()> {
    if !seen.insert(*src_tree) {
        return Ok(());
    }
    let a = src.load_tree_in(src_index, src_tree)?;
    let b = dst.load_tree_in(dst_index, dst_tree)?;
    map.insert(src_tree.0, dst_tree.0);
    for n in &a.nodes {
        // A destination rewritten since may lack nodes; only identical shapes are mapped.
        let Some(m) = b.find(&n.name) else { continue };
        if n.kind != m.kind || n.size != m.size || n.content.len() != m.content.len() {
            continue;
        }
        for (x, y) in n.content.iter().zip(&m.content) {
            map.insert(x.0, y.0);
        }
        if let (Some(x), Some(y)) = (&n.subtree, &m.subtree) {
            seed_map(src, src_index, dst, dst_index, x, y, map, seen)?;
        }
    }
    Ok(())
}

/// Loads the source trees a copy needs and notes the data blobs it must read: level by
/// level, each level's trees loaded (read, opened, decoded) on every core.
fn collect(
    ends: &Ends,
    map: &HashMap<Id, Id>,
    root: &Id,
    trees: &mut HashMap<Id, Tree>,
    need: &mut HashSet<Id>,
) -> Result<()> {
    // Trees loaded, or mapped to one the destination holds, are not walked again.
    let done = |trees: &HashMap<Id, Tree>, id: &Id| {
        trees.contains_key(id) || mapped(map, ends.dst_live, id).is_some()
    };
    let mut level: Vec<Id> = vec![*root];
    level.retain(|id| !done(trees, id));
    while !level.is_empty() {
        crate::interrupt::check()?;
        let loaded: Vec<(Id, Tree)> = level
            .par_iter()
            .map(|id| Ok((*id, ends.src.load_tree_in(ends.src_index, &TreeId(*id))?)))
            .collect::<Result<_>>()?;
        let mut next: Vec<Id> = Vec::new();
        for (id, tree) in loaded {
            for node in &tree.nodes {
                for c in &node.content {
                    if mapped(map, ends.dst_live, c).is_none() {
                        need.insert(c.0);
                    }
                }
                if let Some(sub) = node.subtree {
                    next.push(sub.0);
                }
            }
            trees.insert(id, tree);
        }
        next.sort_unstable();
        next.dedup();
        next.retain(|id| !done(trees, id));
        level = next;
    }
    Ok(())
}

/// A mapping is only used while the destination still holds its blob.
fn mapped(map: &HashMap<Id, Id>, dst_live: &Index, id: &Id) -> Option<Id> {
    map.get(id).copied().filter(|d| dst_live.contains(d))
}

/// Reads the wanted blobs of one source pack in one ranged read; returns
/// (source id, destination id, payload) for each.
fn read_pack_blobs(
    ends: &Ends,
    pack_no: u32,
    blobs: &[(Id, crate::index::BlobLocation)],
    reuse_frames: bool,
) -> Result<Vec<ReadBlob>> {
    let (src, dst) = (ends.src, ends.dst);
    let pack = ends.src_index.pack(pack_no);
    let start = blobs.iter().map(|(_, l)| l.offset).min().unwrap_or(0) as u64;
    let end = blobs
        .iter()
        .map(|(_, l)| l.offset as u64 + l.length as u64)
        .max()
        .unwrap_or(0);
    let path = crate::backend::FileKind::Pack.path(&pack.id);
    let bytes = src.backend().read_range(&path, start, end - start)?;
    // Blob by blob on every core: a pack's blobs are a third of a second's work on one
    // core, and whole packs as tasks left a core idle at the end of each group.
    blobs
        .par_iter()
        .map(|(id, l)| {
            let at = (l.offset as u64 - start) as usize;
            let sealed = &bytes[at..at + l.length as usize];
            let (did, payload) = if reuse_frames {
                let (framed, raw) =
                    pack::open_blob_framed(src.keys(), BlobType::Data, id, sealed, l.raw_length)?;
                let raw_length = raw.len() as u32;
                (
                    dst.keys().blob_id(&raw),
                    Payload::Framed { raw_length, framed },
                )
            } else {
                let raw = pack::open_blob(src.keys(), BlobType::Data, id, sealed, l.raw_length)?;
                (dst.keys().blob_id(&raw), Payload::Plain(raw))
            };
            Ok((*id, did, payload))
        })
        .collect()
}

/// Writes a source tree with destination ids, children first (on every core); returns its
/// destination id. `map` holds the data blobs' ids (complete by now) and the trees copied.
fn copy_tree(
    id: &Id,
    trees: &HashMap<Id, Tree>,
    dst_live: &Index,
    map: &std::sync::RwLock<HashMap<Id, Id>>,
    packer: &Packer,
) -> Result<Id> {
    if let Some(d) = map.read().expect("copy map").get(id).copied() {
        if dst_live.contains(&d) || packer.has(&d) {
            return Ok(d);
        }
    }
    let tree = trees
        .get(id)
        .ok_or_else(|| Error::other(format!("tree {} was not loaded", id.short())))?;
    let subtrees: Vec<Option<Id>> = tree
        .nodes
        .par_iter()
        .map(|n| {
            n.subtree
                .map(|s| copy_tree(&s.0, trees, dst_live, map, packer))
                .transpose()
        })
        .collect::<Result<_>>()?;
    let mut out = Tree {
        nodes: Vec::with_capacity(tree.nodes.len()),
    };
    let ids = map.read().expect("copy map");
    for (n, sub) in tree.nodes.iter().zip(subtrees) {
        let mut n = n.clone();
        for c in n.content.iter_mut() {
            *c = ids
                .get(&c.0)
                .copied()
                .map(DataId)
                .ok_or_else(|| Error::other(format!("blob {} was not copied", c.short())))?;
        }
        n.subtree = sub.map(TreeId);
        out.nodes.push(n);
    }
    drop(ids);
    let did = packer.store_tree(&out)?;
    map.write().expect("copy map").insert(*id, did);
    Ok(did)
}

/// Copies the `wal/` records the destination lacks (by name) with their blocks: each block is
/// read, re-keyed for the destination (blob ids are keyed per repository) and stored through
/// the packer; the records are saved once their packs and index files are. A name the
/// destination holds with other content is left alone and reported. The caller refuses a
/// destination of format version 1 beforehand ([`crate::wal::catalog::require_wal_support`]).
pub fn copy_wal(
    src: &IndexedRepository,
    dst_session: &IndexedWriteSession,
) -> Result<WalCopyReport> {
    let mut report = WalCopyReport::default();
    if src.config().version < 2 {
        return Ok(report);
    }
    let source = crate::wal::catalog::list(src.repository())?;
    if let Some((_, e)) = source.damaged.into_iter().next() {
        return Err(Error::other(format!(
            "{e}; copy stops rather than leave a WAL file out (run `ocvault check`)"
        )));
    }
    if source.records.is_empty() {
        return Ok(report);
    }
    let dst = dst_session.repo().repository();
    crate::wal::catalog::require_wal_support(dst)?;
    let present: HashMap<String, [u8; 32]> = crate::wal::catalog::list(dst)?
        .records
        .into_iter()
        .map(|(_, r)| (r.name, r.hash))
        .collect();
    let mut todo = Vec::new();
    for (_, rec) in source.records {
        match present.get(&rec.name) {
            None => todo.push(rec),
            Some(hash) if *hash == rec.hash => report.present += 1,
            Some(_) => report.conflicts.push(rec.name),
        }
    }
    let save_index = |f: &IndexFile| dst_session.save_file(f).map(Id::from);
    let parts = PackerParts::new(dst_session, Indexing::Every(PACKS_PER_INDEX, &save_index))
        .with_compression_level(crate::wal::push::WAL_COMPRESSION_LEVEL);
    let (records, packed) = packer::run(parts, |packer| {
        todo.into_par_iter()
            .map(|mut rec| {
                crate::interrupt::check()?;
                for block in rec.content.iter_mut() {
                    let raw = src.read_blob(block)?;
                    *block = DataId(packer.store(BlobType::Data, &raw)?);
                }
                Ok(rec)
            })
            .collect::<Result<Vec<_>>>()
    });
    let packed = packed?;
    // Records last: each names blobs that are now in packs and index files.
    for saved in dst_session.save_wal_records(&records?)? {
        saved?;
        report.copied += 1;
    }
    report.blobs_copied = packed.blobs_added;
    report.bytes_copied = packed.bytes_added;
    Ok(report)
}

//! The one way blobs become packs: snapshot, `--stdin`, copy, rewrite and prune's repack all
//! store through a [`Packer`].
//!
//! A `Packer` is shared by the threads that produce blobs (rayon workers in a snapshot): each
//! blob is named, deduplicated (against the live index and against what this packer already
//! took) and sealed on the caller's thread, then handed over a bounded channel to one pack
//! writer thread. That thread fills one pack per blob type and starts uploading a pack as soon
//! as it reaches the target size; at most [`UPLOADS_IN_FLIGHT`] uploads run beside the pack
//! being filled. Uploaded packs are indexed every [`Indexing::Every`] packs (so an interrupted
//! backup's packs are found and reused next time), or handed back to the caller
//! ([`Indexing::Returned`], prune's consolidated index).

use crate::backend::Backend;
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::format::{self, BlobType, IndexFile, IndexPack, Tree};
use crate::id::Id;
use crate::index::Index;
use crate::pack::{self, PackBuilder};
use crate::session::{IndexedWriteSession, WriteSession};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Pack uploads running at once, beside the pack being filled. On a remote backend each holds
/// a whole pack; on local disk only its fsync and rename are pending.
pub const UPLOADS_IN_FLIGHT: usize = 2;
/// Packs per intermediate index file of a backup, so an interrupted backup's packs are reused.
pub const PACKS_PER_INDEX: usize = 16;
/// Sealed blobs waiting for the pack writer. Where uploads are the bottleneck (S3) the queue
/// stays full, so it is memory and no throughput: 64 held ~5 MiB of stream chunks there
/// (snapshots to s3s-fs peaked 10-17% above local disk); 16 keep the writer fed as well.
const QUEUE: usize = 16;
/// Shards of the set of blobs taken, to keep lock contention low among the workers.
const SHARDS: usize = 64;

/// Saves an index file (through the repository's write session, which checks its marker).
pub type SaveIndex<'a> = &'a (dyn Fn(&IndexFile) -> Result<Id> + Sync);

/// What the packer does with the packs it uploaded.
#[derive(Clone, Copy)]
pub enum Indexing<'a> {
    /// Saves an index file every `n` uploaded packs, and one for the rest at the end.
    Every(usize, SaveIndex<'a>),
    /// Saves none: the packs are returned in [`Packed::packs`] for the caller to index.
    Returned,
}

/// Everything a packer needs, in one place: the keys that name and seal, where packs go, the
/// repository's pack settings, the index it deduplicates against, how packs get indexed. Only
/// a write session makes one, so no pack is written without a backup marker held.
pub struct PackerParts<'a> {
    keys: &'a Keys,
    backend: &'a Backend,
    pack_target_size: u32,
    compression_level: i32,
    /// Blobs already stored: never stored again.
    index: &'a Index,
    indexing: Indexing<'a>,
    /// Bytes of packs started, for a progress display.
    progress: Option<&'a AtomicU64>,
}

impl<'a> PackerParts<'a> {
    /// For new blobs: deduplicated against the live index the session loaded under its marker.
    pub fn new(session: &'a IndexedWriteSession<'_>, indexing: Indexing<'a>) -> Self {
        let repo = session.repo();
        Self::with_index(session, repo.live_index(), indexing)
    }

    /// For prune's repack, which builds its own index (strictly, under its own marker) and
    /// stores blobs it already holds sealed.
    pub fn for_repack(
        session: &'a WriteSession<'_>,
        index: &'a Index,
        indexing: Indexing<'a>,
    ) -> Self {
        Self::with_index(session, index, indexing)
    }

    fn with_index(session: &'a WriteSession<'_>, index: &'a Index, indexing: Indexing<'a>) -> Self {
        let repo = session.repo();
        PackerParts {
            keys: repo.keys(),
            backend: repo.backend(),
            pack_target_size: repo.config().pack_target_size,
            compression_level: repo.config().compression_level,
            index,
            indexing,
            progress: None,
        }
    }

    /// Compresses at `level` instead of the repository's level (WAL: a fast zstd level),
    /// unless the repository was created without compression.
    pub fn with_compression_level(self, level: i32) -> Self {
        PackerParts {
            compression_level: if self.compression_level == 0 {
                0
            } else {
                level
            },
            ..self
        }
    }

    /// Counts the bytes of packs started into `progress`.
    pub fn with_progress(self, progress: &'a AtomicU64) -> Self {
        PackerParts {
            progress: Some(progress),
            ..self
        }
    }
}

/// What a packer stored.
#[derive(Debug, Default)]
pub struct Packed {
    /// Bytes of the packs uploaded.
    pub bytes_added: u64,
    /// Blobs stored.
    pub blobs_added: u64,
    /// Of those, blobs the index had only in packs of an archive class (stored again so
    /// that reads need no thaw), and their stored bytes.
    pub restored_blobs: u64,
    pub restored_bytes: u64,
    /// The packs uploaded and not yet indexed ([`Indexing::Returned`]), in upload order.
    pub packs: Vec<IndexPack>,
    /// Most uploads left running while the next pack was filled (at most
    /// [`UPLOADS_IN_FLIGHT`]).
    pub max_uploads_in_flight: usize,
}

struct PackItem {
    blob_type: BlobType,
    id: Id,
    raw_length: u32,
    sealed: Vec<u8>,
}

/// The producers' side of a packer: `Sync`, so any number of threads store through it.
pub struct Packer<'a> {
    keys: &'a Keys,
    index: &'a Index,
    level: i32,
    /// Blobs taken by this packer.
    pending: Vec<Mutex<HashSet<Id>>>,
    tx: Sender<PackItem>,
    blobs_added: AtomicU64,
    restored_blobs: AtomicU64,
    restored_bytes: AtomicU64,
}

/// Runs `work` with a packer, then uploads the last packs, waits for every upload and indexes
/// them. Returns what `work` returned and what was stored (an error if any pack or index file
/// could not be written; the blobs `work` stored are then not all stored).
pub fn run<R>(parts: PackerParts<'_>, work: impl FnOnce(&Packer) -> R) -> (R, Result<Packed>) {
    let (tx, rx) = bounded::<PackItem>(QUEUE);
    let packer = Packer {
        keys: parts.keys,
        index: parts.index,
        level: parts.compression_level,
        pending: (0..SHARDS).map(|_| Mutex::new(HashSet::new())).collect(),
        tx,
        blobs_added: AtomicU64::new(0),
        restored_blobs: AtomicU64::new(0),
        restored_bytes: AtomicU64::new(0),
    };
    std::thread::scope(|s| {
        let writer = PackWriter::new(&parts);
        let handle = s.spawn(move || writer.run(rx));
        let out = work(&packer);
        let blobs_added = packer.blobs_added.load(Relaxed);
        let restored_blobs = packer.restored_blobs.load(Relaxed);
        let restored_bytes = packer.restored_bytes.load(Relaxed);
        // Dropping the last sender lets the writer flush and finish.
        drop(packer);
        let packed = handle.join().expect("pack writer thread");
        let packed = packed.map(|p| Packed {
            blobs_added,
            restored_blobs,
            restored_bytes,
            ..p
        });
        (out, packed)
    })
}

impl Packer<'_> {
    /// Whether the repository has (outside archived packs), or this packer took, the blob.
    pub fn has(&self, id: &Id) -> bool {
        self.index.contains_hot(id) || self.shard(id).lock().unwrap().contains(id)
    }

    fn shard(&self, id: &Id) -> &Mutex<HashSet<Id>> {
        &self.pending[id.0[0] as usize % self.pending.len()]
    }

    /// Takes a blob for storing; false when it is already stored or taken. A blob stored only
    /// in archived packs (S3 Glacier) is stored again: reads of it then need no thaw.
    fn claim(&self, id: &Id) -> bool {
        if self.index.contains_hot(id) {
            return false;
        }
        self.shard(id).lock().unwrap().insert(*id)
    }

    /// Names and stores a blob unless it is stored already; returns its id.
    pub fn store(&self, blob_type: BlobType, raw: &[u8]) -> Result<Id> {
        let id = self.keys.blob_id(raw);
        self.store_as(blob_type, id, raw)?;
        Ok(id)
    }

    /// Stores a blob whose id the caller computed from `raw` with this repository's keys;
    /// returns whether it was new.
    pub fn store_as(&self, blob_type: BlobType, id: Id, raw: &[u8]) -> Result<bool> {
        if !self.claim(&id) {
            return Ok(false);
        }
        let sealed = pack::seal_blob(self.keys, blob_type, &id, raw, self.level);
        self.send_new(blob_type, id, raw.len() as u32, sealed)
    }

    /// The zstd level blobs are framed at (0: not compressed).
    pub fn compression_level(&self) -> i32 {
        self.level
    }

    /// Like [`Packer::store_as`] for a blob framed already ([`pack::open_blob_framed`]
    /// under other keys, at this packer's compression level): sealed, not compressed again.
    pub fn store_framed_as(
        &self,
        blob_type: BlobType,
        id: Id,
        raw_length: u32,
        framed: &[u8],
    ) -> Result<bool> {
        if !self.claim(&id) {
            return Ok(false);
        }
        let sealed = pack::seal_framed(self.keys, blob_type, &id, framed);
        self.send_new(blob_type, id, raw_length, sealed)
    }

    /// Counts and sends a blob [`Packer::claim`]ed and sealed.
    fn send_new(
        &self,
        blob_type: BlobType,
        id: Id,
        raw_length: u32,
        sealed: Vec<u8>,
    ) -> Result<bool> {
        self.blobs_added.fetch_add(1, Relaxed);
        if self.index.contains(&id) {
            self.restored_blobs.fetch_add(1, Relaxed);
            self.restored_bytes.fetch_add(sealed.len() as u64, Relaxed);
        }
        self.send(PackItem {
            blob_type,
            id,
            raw_length,
            sealed,
        })?;
        Ok(true)
    }

    /// Encodes and stores a tree; returns its id.
    pub fn store_tree(&self, tree: &Tree) -> Result<Id> {
        self.store(BlobType::Tree, &format::to_postcard(tree))
    }

    /// Stores a blob sealed already (prune's repack copies sealed blobs as they are), without
    /// deduplication: the caller decides what is stored once.
    pub fn store_sealed(
        &self,
        blob_type: BlobType,
        id: Id,
        raw_length: u32,
        sealed: Vec<u8>,
    ) -> Result<()> {
        self.blobs_added.fetch_add(1, Relaxed);
        self.send(PackItem {
            blob_type,
            id,
            raw_length,
            sealed,
        })
    }

    fn send(&self, item: PackItem) -> Result<()> {
        self.tx
            .send(item)
            .map_err(|_| Error::other("pack writer stopped"))
    }
}

type Upload = (tokio::task::JoinHandle<Result<()>>, IndexPack);

/// The pack writer thread's state: the packs being filled, the uploads running, the packs
/// uploaded but not yet indexed.
struct PackWriter<'a> {
    keys: &'a Keys,
    backend: &'a Backend,
    target: usize,
    indexing: Indexing<'a>,
    progress: Option<&'a AtomicU64>,
    data: Option<PackBuilder>,
    trees: Option<PackBuilder>,
    uploads: VecDeque<Upload>,
    uploaded: Vec<IndexPack>,
    out: Packed,
    /// The first error; the writer then drains its queue so producers never block.
    err: Option<Error>,
}

impl<'a> PackWriter<'a> {
    fn new(parts: &PackerParts<'a>) -> Self {
        PackWriter {
            keys: parts.keys,
            backend: parts.backend,
            target: parts.pack_target_size as usize,
            indexing: parts.indexing,
            progress: parts.progress,
            data: None,
            trees: None,
            uploads: VecDeque::new(),
            uploaded: Vec::new(),
            out: Packed::default(),
            err: None,
        }
    }

    fn run(mut self, rx: Receiver<PackItem>) -> Result<Packed> {
        loop {
            // Wake at least every touch_every() / 2 so the packs being filled stay marked as
            // in use.
            let item = match rx.recv_timeout(pack::touch_every() / 2) {
                Ok(item) => item,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    self.keep_alive();
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            };
            if self.err.is_none() {
                self.add(item);
            }
        }
        self.finish()
    }

    fn keep_alive(&mut self) {
        for b in [&mut self.data, &mut self.trees].into_iter().flatten() {
            b.keep_alive();
        }
    }

    fn add(&mut self, item: PackItem) {
        let (backend, target) = (self.backend, self.target);
        let slot = match item.blob_type {
            BlobType::Data => &mut self.data,
            BlobType::Tree => &mut self.trees,
        };
        let b = slot.get_or_insert_with(|| {
            PackBuilder::for_backend(backend, item.blob_type, target + (1 << 20))
        });
        b.add(item.id, item.raw_length, &item.sealed);
        if b.len() >= target {
            let full = slot.take().expect("just filled");
            self.upload(full);
        }
        if let Indexing::Every(n, _) = self.indexing {
            if self.uploaded.len() >= n && self.err.is_none() {
                self.save_index();
            }
        }
    }

    /// Starts uploading a full pack; waits for the oldest uploads beyond the bound.
    fn upload(&mut self, b: PackBuilder) {
        let (handle, entry) = b.write(self.keys, self.backend);
        if let Some(p) = self.progress {
            p.fetch_add(entry.size, Relaxed);
        }
        self.uploads.push_back((handle, entry));
        while self.uploads.len() > UPLOADS_IN_FLIGHT {
            self.wait_oldest();
        }
        self.out.max_uploads_in_flight = self.out.max_uploads_in_flight.max(self.uploads.len());
    }

    fn wait_oldest(&mut self) {
        let Some((h, entry)) = self.uploads.pop_front() else {
            return;
        };
        match self.backend.runtime().block_on(h) {
            Ok(Ok(())) => self.uploaded.push(entry),
            Ok(Err(x)) => {
                self.err.get_or_insert(x);
            }
            Err(x) => {
                self.err
                    .get_or_insert(Error::other(format!("upload task failed: {x}")));
            }
        }
    }

    fn save_index(&mut self) {
        let packs = std::mem::take(&mut self.uploaded);
        self.out.bytes_added += packs.iter().map(|p| p.size).sum::<u64>();
        match self.indexing {
            Indexing::Every(_, save) => {
                let file = IndexFile {
                    supersedes: Vec::new(),
                    packs,
                };
                if let Err(e) = save(&file) {
                    self.err.get_or_insert(e);
                }
            }
            Indexing::Returned => self.out.packs.extend(packs),
        }
    }

    fn finish(mut self) -> Result<Packed> {
        for b in [self.data.take(), self.trees.take()].into_iter().flatten() {
            if !b.is_empty() && self.err.is_none() {
                self.upload(b);
            }
        }
        while !self.uploads.is_empty() {
            self.wait_oldest();
        }
        if self.err.is_none() && !self.uploaded.is_empty() {
            self.save_index();
        }
        match self.err {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::FileKind;
    use crate::crypto::MasterKey;
    use std::collections::HashMap;

    const TARGET: u32 = 64 << 10;

    /// Incompressible bytes, different for each `seed`.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn parts<'a>(
        keys: &'a Keys,
        backend: &'a Backend,
        index: &'a Index,
        indexing: Indexing<'a>,
    ) -> PackerParts<'a> {
        PackerParts {
            keys,
            backend,
            pack_target_size: TARGET,
            compression_level: 3,
            index,
            indexing,
            progress: None,
        }
    }

    #[test]
    fn packs_close_at_the_target_and_hold_each_blob_once() {
        let backend = Backend::open("memory:", true).unwrap();
        let keys = MasterKey::generate().derive();
        let empty = Index::build(&[], &[]);
        let data: Vec<Vec<u8>> = (0..100).map(|i| noise(i, 5000)).collect();
        let tree = Tree::default();
        let (ids, packed) = run(parts(&keys, &backend, &empty, Indexing::Returned), |p| {
            let mut ids = Vec::new();
            // Each blob twice, from two threads at once: stored once.
            std::thread::scope(|s| {
                let twice = s.spawn(|| {
                    for d in &data {
                        p.store(BlobType::Data, d).unwrap();
                    }
                });
                for d in &data {
                    ids.push(p.store(BlobType::Data, d).unwrap());
                }
                twice.join().unwrap();
            });
            let tree_id = p.store_tree(&tree).unwrap();
            assert!(ids.iter().chain([&tree_id]).all(|id| p.has(id)));
            (ids, tree_id)
        });
        let packed = packed.unwrap();
        let (ids, tree_id) = ids;
        assert_eq!(packed.blobs_added, 101);

        let mut stored: HashMap<Id, BlobType> = HashMap::new();
        let data_packs: Vec<&IndexPack> = packed
            .packs
            .iter()
            .filter(|p| p.blob_type == BlobType::Data)
            .collect();
        // 100 blobs of about 5 KiB in packs of 64 KiB: several packs, each closed by the blob
        // that took it to the target (the last one holds the rest).
        assert!(data_packs.len() >= 7, "{} data packs", data_packs.len());
        for (k, pack) in data_packs.iter().enumerate() {
            let lens: Vec<u64> = pack.blobs.iter().map(|b| b.length as u64).collect();
            let total: u64 = lens.iter().sum();
            let before_last = total - lens.last().unwrap();
            assert!(
                before_last < TARGET as u64,
                "pack {k} passed the target early"
            );
            if k + 1 < data_packs.len() {
                assert!(total >= TARGET as u64, "pack {k} closed below the target");
            }
        }
        for pack in &packed.packs {
            let bytes = backend.read(&FileKind::Pack.path(&pack.id)).unwrap();
            assert_eq!(Id::of_stored_bytes(&bytes), *pack.id);
            assert_eq!(bytes.len() as u64, pack.size);
            let header = pack::parse_header_from_tail(&keys, &bytes, pack.size)
                .unwrap()
                .unwrap();
            assert_eq!(header.blobs, pack.blobs);
            for b in &pack.blobs {
                assert!(
                    stored.insert(*b.id, pack.blob_type).is_none(),
                    "stored twice"
                );
            }
        }
        assert_eq!(stored.len(), 101);
        assert!(ids.iter().all(|id| stored[id] == BlobType::Data));
        assert_eq!(stored[&tree_id], BlobType::Tree);
        assert_eq!(
            packed.bytes_added,
            packed.packs.iter().map(|p| p.size).sum::<u64>()
        );
    }

    #[test]
    fn blobs_in_the_index_are_not_stored_again_and_uploads_are_indexed() {
        let backend = Backend::open("memory:", true).unwrap();
        let keys = MasterKey::generate().derive();
        let files: Mutex<Vec<(crate::id::IndexFileId, IndexFile)>> = Mutex::new(Vec::new());
        let save = |f: &IndexFile| {
            let id = Id(*blake3::hash(&format::to_postcard(f)).as_bytes());
            files.lock().unwrap().push((id.into(), f.clone()));
            Ok(id)
        };
        let first: Vec<Vec<u8>> = (0..600).map(|i| noise(i, 5000)).collect();
        let empty = Index::build(&[], &[]);
        let indexing = Indexing::Every(PACKS_PER_INDEX, &save);
        let (_, packed) = run(parts(&keys, &backend, &empty, indexing), |p| {
            for d in &first {
                p.store(BlobType::Data, d).unwrap();
            }
        });
        let packed = packed.unwrap();
        assert!(packed.packs.is_empty(), "indexed, not returned");
        // Intermediate index files of PACKS_PER_INDEX packs, then one for the rest.
        let files = files.into_inner().unwrap();
        let packs: Vec<&IndexPack> = files.iter().flat_map(|(_, f)| &f.packs).collect();
        assert!(packs.len() > 2 * PACKS_PER_INDEX, "{} packs", packs.len());
        assert!(files.len() >= 3);
        for (_, f) in &files[..files.len() - 1] {
            assert_eq!(f.packs.len(), PACKS_PER_INDEX);
        }
        assert_eq!(
            packed.bytes_added,
            packs.iter().map(|p| p.size).sum::<u64>()
        );
        for p in &packs {
            assert!(backend.read(&FileKind::Pack.path(&p.id)).is_ok());
        }

        // A second packer over that index stores only what is new.
        let index = Index::build(&files, &[]);
        let (new, packed) = run(parts(&keys, &backend, &index, Indexing::Returned), |p| {
            let old = first
                .iter()
                .filter(|d| p.store_as(BlobType::Data, keys.blob_id(d), d).unwrap())
                .count();
            assert_eq!(old, 0, "blobs in the index were stored again");
            let fresh = noise(1000, 5000);
            let id = p.store(BlobType::Data, &fresh).unwrap();
            assert!(p.has(&id) && p.has(&keys.blob_id(&first[0])));
            id
        });
        let packed = packed.unwrap();
        assert_eq!(packed.blobs_added, 1);
        assert_eq!(packed.packs.len(), 1);
        assert_eq!(packed.packs[0].blobs.len(), 1);
        assert_eq!(*packed.packs[0].blobs[0].id, new);
    }

    #[test]
    fn uploads_in_flight_stay_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        for backend in [
            Backend::open("memory:", true).unwrap(),
            Backend::open(dir.path().to_str().unwrap(), true).unwrap(),
        ] {
            let keys = MasterKey::generate().derive();
            let empty = Index::build(&[], &[]);
            let (_, packed) = run(parts(&keys, &backend, &empty, Indexing::Returned), |p| {
                for i in 0..200 {
                    p.store(BlobType::Data, &noise(i, 20_000)).unwrap();
                }
            });
            let packed = packed.unwrap();
            assert!(packed.packs.len() > 10 * UPLOADS_IN_FLIGHT);
            assert_eq!(packed.max_uploads_in_flight, UPLOADS_IN_FLIGHT);
        }
    }

    #[test]
    fn sealed_blobs_are_stored_as_given() {
        let backend = Backend::open("memory:", true).unwrap();
        let keys = MasterKey::generate().derive();
        let raw = noise(7, 3000);
        let id = keys.blob_id(&raw);
        let sealed = pack::seal_blob(&keys, BlobType::Data, &id, &raw, 3);

        let (_, packed) = run(
            parts(&keys, &backend, &Index::build(&[], &[]), Indexing::Returned),
            |p| {
                p.store_sealed(BlobType::Data, id, raw.len() as u32, sealed.clone())
                    .unwrap();
            },
        );
        let pack = &packed.unwrap().packs[0];
        let bytes = backend.read(&FileKind::Pack.path(&pack.id)).unwrap();
        let b = pack.blobs[0];
        assert_eq!(
            &bytes[b.offset as usize..][..b.length as usize],
            &sealed[..]
        );
        let opened =
            pack::open_blob(&keys, BlobType::Data, &id, &sealed, raw.len() as u32).unwrap();
        assert_eq!(opened, raw);
    }
}

//! The index: where every blob lives. Two tables of 46-byte entries sorted by id (`table`):
//! a *base* mapped from the local cache (`cache_file`), built from the index files it names
//! and reused by every command until they change (`load`), and a small *delta* in memory
//! for index files written since and packs read beside the live ones. Their ids are
//! disjoint, so a blob has one position: base positions first, then the delta's. Indexes
//! built straight from index files (`build`) have only the delta. The layout of the base is
//! local; the repository's index files are unchanged.

mod build;
mod cache_file;
pub mod load;
mod table;

use crate::format::{BlobType, IndexFile, IndexPack};
use crate::id::{Id, IndexFileId, PackId};
use table::{Entry, Table};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackInfo {
    pub id: PackId,
    pub blob_type: BlobType,
    pub size: u64,
    /// Stored in an archive storage class (S3 Glacier, Deep Archive): not readable without
    /// a thaw. Only set when the index was built with the storage's classes (`crate::cold`).
    pub archived: bool,
}

/// Where one blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: u32,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

#[derive(Default)]
pub struct Index {
    /// Every pack, by number: the base's first.
    packs: Vec<PackInfo>,
    /// How many of `packs` the base numbers.
    base_packs: usize,
    base: Table,
    delta: Table,
    /// Index files this was built from (excluding superseded ones).
    pub files: Vec<IndexFileId>,
}

/// The index files that another of `files` supersedes (prune's and repair's replacements
/// name the files they replace): readers treat their packs as not live.
pub fn superseded_ids(
    files: &[(IndexFileId, IndexFile)],
) -> std::collections::HashSet<IndexFileId> {
    files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect()
}

impl Index {
    /// Builds the index from index files; blobs stored twice resolve to one place (the pack
    /// listed first wins, and a pack listed twice counts once).
    pub fn from_files(files: Vec<(IndexFileId, IndexFile)>) -> Index {
        Index::build(&files, &[])
    }

    /// Builds the index from index files (superseded ones left out) followed by `extra` packs,
    /// so a blob both in a file and in an extra pack resolves to the file's pack.
    pub fn build(files: &[(IndexFileId, IndexFile)], extra: &[IndexPack]) -> Index {
        Index::build_tiered(files, extra, &|_| false)
    }

    /// [`Index::build`] knowing which packs are in an archive class: a blob stored both in
    /// an archived pack and elsewhere (a snapshot stored it again, see `crate::cold`)
    /// resolves to the readable copy.
    pub fn build_tiered(
        files: &[(IndexFileId, IndexFile)],
        extra: &[IndexPack],
        archived: &dyn Fn(&PackId) -> bool,
    ) -> Index {
        let superseded = superseded_ids(files);
        let live = files.iter().filter(|(fid, _)| !superseded.contains(fid));
        let packs = live.clone().flat_map(|(_, f)| f.packs.iter()).chain(extra);
        let mut idx = Index::with_base(Vec::new(), Table::default());
        idx.files = live.map(|(fid, _)| *fid).collect();
        idx.add_delta(packs, archived, |_| true);
        idx
    }

    /// An index of `base` (numbering `packs`) with an empty delta.
    fn with_base(packs: Vec<PackInfo>, base: Table) -> Index {
        Index {
            base_packs: packs.len(),
            packs,
            base,
            delta: Table::default(),
            files: Vec::new(),
        }
    }

    /// Numbers `packs` (skipping ids already numbered) after the existing ones and puts
    /// their blobs that `keep` accepts into the delta, the first-numbered copy of an id
    /// winning unless it is archived and another is not.
    fn add_delta<'p>(
        &mut self,
        packs: impl Iterator<Item = &'p IndexPack>,
        archived: &dyn Fn(&PackId) -> bool,
        keep: impl Fn(&Id) -> bool,
    ) {
        let mut seen: std::collections::HashSet<PackId> = self.packs.iter().map(|p| p.id).collect();
        let mut chosen: Vec<(&IndexPack, u32)> = Vec::new();
        for p in packs {
            if seen.insert(p.id) {
                chosen.push((p, self.packs.len() as u32));
                self.packs.push(PackInfo {
                    id: p.id,
                    blob_type: p.blob_type,
                    size: p.size,
                    archived: archived(&p.id),
                });
            }
        }
        drop(seen);
        self.packs.shrink_to_fit();
        let blobs = chosen.iter().flat_map(|(p, n)| {
            p.blobs
                .iter()
                .filter(|b| keep(&b.id.0))
                .map(move |b| (b.id.0, Entry::new(b, *n)))
        });
        let total = blobs.clone().count();
        let packs = &self.packs;
        self.delta = Table::build_heap(total, blobs, |e| {
            (packs[e.pack() as usize].archived, e.pack())
        });
    }

    fn find(&self, id: &Id) -> Option<(usize, Entry)> {
        self.base.find(id).or_else(|| {
            self.delta
                .find(id)
                .map(|(pos, e)| (self.base.len() + pos, e))
        })
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.find(id).is_some()
    }

    /// Whether the blob is stored in a pack that is not in an archive class: what a new
    /// snapshot may deduplicate against (a blob only in archived packs is stored again).
    pub fn contains_hot(&self, id: &Id) -> bool {
        self.find(id)
            .is_some_and(|(_, e)| !self.packs[e.pack() as usize].archived)
    }

    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        self.find(id).map(|(_, e)| e.location())
    }

    pub fn pack(&self, n: u32) -> &PackInfo {
        &self.packs[n as usize]
    }

    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    pub fn len(&self) -> usize {
        self.base.len() + self.delta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A blob's position (a dense number in `0..len()`, the order of [`Index::iter`], for
    /// per-blob tables such as bitsets) and its location.
    pub fn locate(&self, id: &Id) -> Option<(usize, BlobLocation)> {
        self.find(id).map(|(pos, e)| (pos, e.location()))
    }

    /// Locates many blobs at once: sorts `ids` and looks them up in id order, so on a large
    /// mapped index each page is mapped once per sweep rather than once per lookup (`check`
    /// and `prune` marking every blob the snapshots use). Calls `found` for each id in order.
    pub fn locate_sorted(
        &self,
        ids: &mut [Id],
        mut found: impl FnMut(&Id, Option<(usize, BlobLocation)>),
    ) {
        ids.sort_unstable();
        let mut window = usize::MAX;
        for id in ids.iter() {
            let hit = self.base.find_in_order(id, &mut window).or_else(|| {
                self.delta
                    .find(id)
                    .map(|(pos, e)| (self.base.len() + pos, e))
            });
            found(id, hit.map(|(pos, e)| (pos, e.location())));
        }
    }

    /// The blob at a position.
    pub fn at(&self, pos: usize) -> (Id, BlobLocation) {
        let (id, e) = match pos.checked_sub(self.base.len()) {
            None => self.base.at(pos),
            Some(p) => self.delta.at(p),
        };
        (id, e.location())
    }

    /// Every blob, as (id, location), in position order.
    pub fn iter(&self) -> impl Iterator<Item = (Id, BlobLocation)> + '_ {
        self.base
            .iter()
            .chain(self.delta.iter())
            .map(|(id, e)| (id, e.location()))
    }

    /// Every blob as (position, id, location) in id order: the base and the delta are each
    /// sorted, and disjoint, so this merges the two ([`Index::iter`] gives position order,
    /// which is not id order once there is a delta).
    pub fn iter_by_id(&self) -> impl Iterator<Item = (usize, Id, BlobLocation)> + '_ {
        let b = self.base.len();
        let mut base = self.base.iter().enumerate().peekable();
        let mut delta = self
            .delta
            .iter()
            .enumerate()
            .map(move |(p, x)| (b + p, x))
            .peekable();
        std::iter::from_fn(move || {
            let take_base = match (base.peek(), delta.peek()) {
                (Some((_, (x, _))), Some((_, (y, _)))) => x < y,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return None,
            };
            let (pos, (id, e)) = match take_base {
                true => base.next()?,
                false => delta.next()?,
            };
            Some((pos, id, e.location()))
        })
    }

    /// Heap bytes the index holds per blob (tables, packs, file list), as allocated; the
    /// budget test also measures it with a counting allocator. A mapped base counts only
    /// what it keeps in memory.
    pub fn bytes_per_blob(&self) -> f64 {
        let bytes = self.base.heap_bytes()
            + self.delta.heap_bytes()
            + self.packs.capacity() * std::mem::size_of::<PackInfo>()
            + self.files.capacity() * std::mem::size_of::<IndexFileId>();
        bytes as f64 / self.len().max(1) as f64
    }

    /// Builds an index straight from packs (tests and benches).
    pub fn from_packs(packs: Vec<IndexPack>) -> Index {
        Index::from_files(vec![(
            IndexFileId::default(),
            IndexFile {
                supersedes: vec![],
                packs,
            },
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;

    use crate::format::PackedBlob;

    #[test]
    fn entry_is_46_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 46);
        assert_eq!(std::mem::align_of::<Entry>(), 1);
    }

    #[test]
    fn lookup_finds_every_blob() {
        let mut blobs = Vec::new();
        for i in 0..5000u32 {
            let id = Id(*blake3::hash(&i.to_le_bytes()).as_bytes());
            blobs.push(PackedBlob {
                id: BlobId(id),
                offset: i,
                length: i + 1,
                raw_length: i + 2,
            });
        }
        let idx = Index::from_packs(vec![IndexPack {
            id: PackId(Id([7; 32])),
            blob_type: BlobType::Data,
            size: 1,
            blobs: blobs.clone(),
        }]);
        for b in &blobs {
            let loc = idx.get(&b.id).unwrap();
            assert_eq!(loc.offset, b.offset);
            assert_eq!(idx.pack(loc.pack).id, PackId(Id([7; 32])));
        }
        assert!(!idx.contains(&Id([1; 32])));
        // Positions are dense, in iteration order, and lead back to the same blob.
        for (pos, (id, loc)) in idx.iter().enumerate() {
            assert_eq!(idx.locate(&id), Some((pos, loc)));
            assert_eq!(idx.at(pos), (id, loc));
        }
        assert_eq!(idx.locate(&Id([1; 32])), None);
        // In bulk, in id order, the same answers.
        let mut ids: Vec<Id> = blobs.iter().map(|b| b.id.0).chain([Id([1; 32])]).collect();
        let mut seen = Vec::new();
        idx.locate_sorted(&mut ids, |id, hit| {
            assert_eq!(hit, idx.locate(id));
            seen.push(*id);
        });
        assert!(seen.windows(2).all(|w| w[0] < w[1]) && seen.len() == 5001);
    }

    fn blob(id: Id, offset: u32) -> PackedBlob {
        PackedBlob {
            id: BlobId(id),
            offset,
            length: 10,
            raw_length: 20,
        }
    }

    #[test]
    fn duplicates_resolve_to_the_first_listed_pack_and_iter_rebuilds_full_ids() {
        // Ids sharing the 16-bit prefix, ids differing only there, and one stored twice.
        let mut a = [0u8; 32];
        a[31] = 1;
        let mut b = a;
        b[0] = 0xff;
        b[1] = 0x01;
        let mut c = a;
        c[31] = 2;
        let (a, b, c) = (Id(a), Id(b), Id(c));
        let p1 = IndexPack {
            id: PackId(Id([1; 32])),
            blob_type: BlobType::Data,
            size: 100,
            blobs: vec![blob(c, 0), blob(a, 10)],
        };
        let p2 = IndexPack {
            id: PackId(Id([2; 32])),
            blob_type: BlobType::Tree,
            size: 100,
            blobs: vec![blob(a, 50), blob(b, 60)],
        };
        let f1 = IndexFile {
            supersedes: vec![],
            packs: vec![p1.clone()],
        };
        let f2 = IndexFile {
            supersedes: vec![],
            // p1 again: counted once.
            packs: vec![p2, p1],
        };
        let idx = Index::from_files(vec![
            (IndexFileId(Id([10; 32])), f1),
            (IndexFileId(Id([11; 32])), f2),
        ]);
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.packs().len(), 2);
        let loc = idx.get(&a).unwrap();
        assert_eq!(
            (idx.pack(loc.pack).id, loc.offset),
            (PackId(Id([1; 32])), 10)
        );
        assert_eq!(idx.get(&b).unwrap().offset, 60);
        assert_eq!(
            idx.pack(idx.get(&b).unwrap().pack).blob_type,
            BlobType::Tree
        );
        let all: Vec<(Id, u32)> = idx.iter().map(|(id, l)| (id, l.offset)).collect();
        assert_eq!(all, vec![(a, 10), (c, 0), (b, 60)]);
        let mut d = b.0;
        d[1] = 0x02;
        assert!(!idx.contains(&Id(d)));
    }

    #[test]
    fn superseded_files_are_left_out_and_empty_index_works() {
        let p = IndexPack {
            id: PackId(Id([1; 32])),
            blob_type: BlobType::Data,
            size: 1,
            blobs: vec![blob(Id([5; 32]), 0)],
        };
        let old = IndexFile {
            supersedes: vec![],
            packs: vec![p],
        };
        let new = IndexFile {
            supersedes: vec![IndexFileId(Id([10; 32]))],
            packs: vec![],
        };
        let idx = Index::from_files(vec![
            (IndexFileId(Id([10; 32])), old),
            (IndexFileId(Id([11; 32])), new),
        ]);
        assert!(idx.is_empty());
        assert_eq!(idx.files, vec![IndexFileId(Id([11; 32]))]);
        assert!(!idx.contains(&Id([5; 32])));
        assert_eq!(idx.iter().count(), 0);
    }

    #[test]
    fn archived_packs_lose_to_any_other_copy() {
        let (x, y) = (Id([3; 32]), Id([4; 32]));
        let cold = IndexPack {
            id: PackId(Id([1; 32])),
            blob_type: BlobType::Data,
            size: 100,
            blobs: vec![blob(x, 0), blob(y, 10)],
        };
        let hot = IndexPack {
            id: PackId(Id([2; 32])),
            blob_type: BlobType::Data,
            size: 100,
            blobs: vec![blob(x, 50)],
        };
        // The archived pack is listed first: without tiers it would win.
        let files = vec![(
            IndexFileId(Id([10; 32])),
            IndexFile {
                supersedes: vec![],
                packs: vec![cold.clone(), hot],
            },
        )];
        let plain = Index::build(&files, &[]);
        assert_eq!(plain.get(&x).unwrap().offset, 0);
        assert!(plain.contains_hot(&x) && plain.contains_hot(&y));
        let tiered = Index::build_tiered(&files, &[], &|id| *id == cold.id);
        let loc = tiered.get(&x).unwrap();
        assert_eq!(
            (tiered.pack(loc.pack).id, loc.offset),
            (PackId(Id([2; 32])), 50)
        );
        assert!(tiered.contains_hot(&x));
        // Only in the archived pack: known, but not for dedup.
        assert!(tiered.contains(&y) && !tiered.contains_hot(&y));
        assert!(tiered.pack(tiered.get(&y).unwrap().pack).archived);
        assert_eq!(tiered.len(), 2);
    }
}

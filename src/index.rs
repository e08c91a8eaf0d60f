//! The in-memory index: where every blob lives. 46 bytes a blob: the id's last 30 bytes, the
//! pack's number, offset, stored length and plaintext length, in one array sorted by id with a
//! 16-bit directory in front. The directory implies the id's first two bytes, so they are not
//! stored; lookups touch one small range (about 150 entries at 10 million blobs) and there is no
//! per-entry allocation. This layout is in memory only; index files are unchanged.

use crate::format::{BlobType, IndexFile, IndexPack, PackedBlob};
use crate::id::{Id, IndexFileId, PackId};

const DIR_BITS: usize = 16;
const PREFIX_LEN: usize = DIR_BITS / 8;
const SUFFIX_LEN: usize = 32 - PREFIX_LEN;

/// One blob. Byte arrays only, so the struct has alignment 1 and no padding: 46 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct Entry {
    id: [u8; SUFFIX_LEN],
    pack: [u8; 4],
    offset: [u8; 4],
    length: [u8; 4],
    raw_length: [u8; 4],
}

impl Entry {
    const ZERO: Entry = Entry {
        id: [0; SUFFIX_LEN],
        pack: [0; 4],
        offset: [0; 4],
        length: [0; 4],
        raw_length: [0; 4],
    };

    fn new(b: &PackedBlob, pack: u32) -> Entry {
        Entry {
            id: b.id.0 .0[PREFIX_LEN..].try_into().unwrap(),
            pack: pack.to_ne_bytes(),
            offset: b.offset.to_ne_bytes(),
            length: b.length.to_ne_bytes(),
            raw_length: b.raw_length.to_ne_bytes(),
        }
    }

    fn pack(&self) -> u32 {
        u32::from_ne_bytes(self.pack)
    }

    fn location(&self) -> BlobLocation {
        BlobLocation {
            pack: u32::from_ne_bytes(self.pack),
            offset: u32::from_ne_bytes(self.offset),
            length: u32::from_ne_bytes(self.length),
            raw_length: u32::from_ne_bytes(self.raw_length),
        }
    }
}

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
    packs: Vec<PackInfo>,
    entries: Vec<Entry>,
    /// `dir[k]..dir[k+1]` are the entries whose id starts with the 16-bit prefix k; empty
    /// when the index is.
    dir: Vec<u32>,
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

    /// [`Index::build`] knowing which packs are in an archive class: those are numbered after
    /// every other pack, so a blob stored both in an archived pack and elsewhere (a snapshot
    /// stored it again, see `crate::cold`) resolves to the readable copy.
    pub fn build_tiered(
        files: &[(IndexFileId, IndexFile)],
        extra: &[IndexPack],
        archived: &dyn Fn(&PackId) -> bool,
    ) -> Index {
        let superseded = superseded_ids(files);
        let mut idx = Index::default();
        let mut seen_packs = std::collections::HashSet::new();
        // The packs to index; a pack's number is its position here.
        let mut chosen: Vec<&IndexPack> = Vec::new();
        let live = files.iter().filter(|(fid, _)| !superseded.contains(fid));
        for (fid, _) in live.clone() {
            idx.files.push(*fid);
        }
        for p in live.flat_map(|(_, f)| f.packs.iter()).chain(extra) {
            if seen_packs.insert(p.id) {
                chosen.push(p);
            }
        }
        drop(seen_packs);
        // Stable: otherwise the first-listed pack still wins among equals.
        let mut chosen: Vec<(&IndexPack, bool)> =
            chosen.into_iter().map(|p| (p, archived(&p.id))).collect();
        chosen.sort_by_key(|(_, a)| *a);
        idx.packs = chosen
            .iter()
            .map(|(p, archived)| PackInfo {
                id: p.id,
                blob_type: p.blob_type,
                size: p.size,
                archived: *archived,
            })
            .collect();
        let chosen: Vec<&IndexPack> = chosen.into_iter().map(|(p, _)| p).collect();
        idx.packs.shrink_to_fit();
        idx.build_entries(&chosen);
        idx
    }

    /// Bucket sort by the 16-bit prefix straight into the final array (no temporary copy of
    /// the entries), then sort and deduplicate each bucket.
    fn build_entries(&mut self, packs: &[&IndexPack]) {
        let total: usize = packs.iter().map(|p| p.blobs.len()).sum();
        if total == 0 {
            return;
        }
        let mut dir = vec![0u32; (1 << DIR_BITS) + 1];
        for p in packs {
            for b in &p.blobs {
                dir[prefix(&b.id.0 .0) + 1] += 1;
            }
        }
        for k in 0..(1 << DIR_BITS) {
            dir[k + 1] += dir[k];
        }
        let mut entries = vec![Entry::ZERO; total];
        let mut cursor = dir.clone();
        for (n, p) in packs.iter().enumerate() {
            for b in &p.blobs {
                let c = &mut cursor[prefix(&b.id.0 .0)];
                entries[*c as usize] = Entry::new(b, n as u32);
                *c += 1;
            }
        }
        drop(cursor);
        // Sort each bucket by id, then by pack number so the first-listed pack wins, and
        // compact the buckets leftwards dropping duplicates.
        let mut w = 0usize;
        for k in 0..(1 << DIR_BITS) {
            let (s, e) = (dir[k] as usize, dir[k + 1] as usize);
            entries[s..e].sort_unstable_by(|a, b| a.id.cmp(&b.id).then(a.pack().cmp(&b.pack())));
            dir[k] = w as u32;
            for i in s..e {
                if w > dir[k] as usize && entries[w - 1].id == entries[i].id {
                    continue;
                }
                entries[w] = entries[i];
                w += 1;
            }
        }
        dir[1 << DIR_BITS] = w as u32;
        entries.truncate(w);
        entries.shrink_to_fit();
        self.entries = entries;
        self.dir = dir;
    }

    fn find(&self, id: &Id) -> Option<&Entry> {
        if self.entries.is_empty() {
            return None;
        }
        let k = prefix(&id.0);
        let range = &self.entries[self.dir[k] as usize..self.dir[k + 1] as usize];
        let suffix = &id.0[PREFIX_LEN..];
        // The first 8 bytes as one integer decide almost every step; ids are uniform.
        let key = head(suffix);
        range
            .binary_search_by(|e| {
                head(&e.id)
                    .cmp(&key)
                    .then_with(|| e.id[8..].cmp(&suffix[8..]))
            })
            .ok()
            .map(|i| &range[i])
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.find(id).is_some()
    }

    /// Whether the blob is stored in a pack that is not in an archive class: what a new
    /// snapshot may deduplicate against (a blob only in archived packs is stored again).
    pub fn contains_hot(&self, id: &Id) -> bool {
        self.find(id)
            .is_some_and(|e| !self.packs[e.pack() as usize].archived)
    }

    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        self.find(id).map(Entry::location)
    }

    pub fn pack(&self, n: u32) -> &PackInfo {
        &self.packs[n as usize]
    }

    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A blob's position in id order (the order of [`Index::iter`], a dense number for
    /// per-blob tables such as bitsets) and its location.
    pub fn locate(&self, id: &Id) -> Option<(usize, BlobLocation)> {
        let e = self.find(id)?;
        let pos = (e as *const Entry as usize - self.entries.as_ptr() as usize)
            / std::mem::size_of::<Entry>();
        Some((pos, e.location()))
    }

    /// The blob at a position in id order.
    pub fn at(&self, pos: usize) -> (Id, BlobLocation) {
        // The bucket is the last one starting at or before `pos`; it cannot be empty.
        let k = self.dir.partition_point(|&d| d as usize <= pos) - 1;
        let mut id = [0u8; 32];
        id[0] = (k >> 8) as u8;
        id[1] = k as u8;
        id[PREFIX_LEN..].copy_from_slice(&self.entries[pos].id);
        (Id(id), self.entries[pos].location())
    }

    /// Every blob, as (id, location), in id order.
    pub fn iter(&self) -> impl Iterator<Item = (Id, BlobLocation)> + '_ {
        let buckets = if self.entries.is_empty() {
            0
        } else {
            1 << DIR_BITS
        };
        (0..buckets).flat_map(move |k| {
            let range = &self.entries[self.dir[k] as usize..self.dir[k + 1] as usize];
            range.iter().map(move |e| {
                let mut id = [0u8; 32];
                id[0] = (k >> 8) as u8;
                id[1] = k as u8;
                id[PREFIX_LEN..].copy_from_slice(&e.id);
                (Id(id), e.location())
            })
        })
    }

    /// Heap bytes the index holds per blob (entries, directory, packs, file list), as
    /// allocated; the budget test also measures it with a counting allocator.
    pub fn bytes_per_blob(&self) -> f64 {
        let bytes = self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.dir.capacity() * 4
            + self.packs.capacity() * std::mem::size_of::<PackInfo>()
            + self.files.capacity() * std::mem::size_of::<IndexFileId>();
        bytes as f64 / self.entries.len().max(1) as f64
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

fn head(suffix: &[u8]) -> u64 {
    u64::from_be_bytes(suffix[..8].try_into().unwrap())
}

fn prefix(id: &[u8; 32]) -> usize {
    ((id[0] as usize) << 8) | id[1] as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;

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

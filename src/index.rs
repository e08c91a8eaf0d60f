//! The in-memory index: where every blob lives. 48 bytes a blob: the id, the pack's number,
//! offset, stored length and plaintext length, in one sorted array with a 16-bit directory
//! in front, so lookups touch one small range and there is no per-entry allocation.

use crate::format::{BlobType, IndexFile, IndexPack, PackedBlob};
use crate::id::Id;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct Entry {
    id: [u8; 32],
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackInfo {
    pub id: Id,
    pub blob_type: BlobType,
    pub size: u64,
}

/// Where one blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: u32,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

const DIR_BITS: usize = 16;

#[derive(Default)]
pub struct Index {
    packs: Vec<PackInfo>,
    entries: Vec<Entry>,
    /// `dir[k]..dir[k+1]` are the entries whose id starts with the 16-bit prefix k.
    dir: Vec<u32>,
    /// Index files this was built from (excluding superseded ones).
    pub files: Vec<Id>,
}

impl Index {
    /// Builds the index from index files; blobs stored twice resolve to one place.
    pub fn from_files(files: Vec<(Id, IndexFile)>) -> Index {
        let superseded: std::collections::HashSet<Id> = files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        let mut idx = Index::default();
        let mut seen_packs = std::collections::HashMap::new();
        for (fid, file) in files {
            if superseded.contains(&fid) {
                continue;
            }
            idx.files.push(fid);
            for p in file.packs {
                idx.add_pack(&p, &mut seen_packs);
            }
        }
        idx.finish();
        idx
    }

    fn add_pack(&mut self, p: &IndexPack, seen: &mut std::collections::HashMap<Id, u32>) {
        if seen.contains_key(&p.id) {
            return;
        }
        let n = self.packs.len() as u32;
        seen.insert(p.id, n);
        self.packs.push(PackInfo {
            id: p.id,
            blob_type: p.blob_type,
            size: p.size,
        });
        self.entries.extend(p.blobs.iter().map(|b| Entry {
            id: b.id.0,
            pack: n,
            offset: b.offset,
            length: b.length,
            raw_length: b.raw_length,
        }));
    }

    fn finish(&mut self) {
        self.entries
            .sort_unstable_by(|a, b| a.id.cmp(&b.id).then(a.pack.cmp(&b.pack)));
        self.entries.dedup_by(|b, a| a.id == b.id);
        self.entries.shrink_to_fit();
        self.dir = vec![0u32; (1 << DIR_BITS) + 1];
        for e in &self.entries {
            let k = prefix(&e.id);
            self.dir[k + 1] += 1;
        }
        for k in 0..(1 << DIR_BITS) {
            self.dir[k + 1] += self.dir[k];
        }
    }

    fn find(&self, id: &Id) -> Option<&Entry> {
        if self.entries.is_empty() {
            return None;
        }
        let k = prefix(&id.0);
        let range = &self.entries[self.dir[k] as usize..self.dir[k + 1] as usize];
        range
            .binary_search_by(|e| e.id.cmp(&id.0))
            .ok()
            .map(|i| &range[i])
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.find(id).is_some()
    }

    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        self.find(id).map(|e| BlobLocation {
            pack: e.pack,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
        })
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

    /// Every blob, as (id, location).
    pub fn iter(&self) -> impl Iterator<Item = (Id, BlobLocation)> + '_ {
        self.entries.iter().map(|e| {
            (
                Id(e.id),
                BlobLocation {
                    pack: e.pack,
                    offset: e.offset,
                    length: e.length,
                    raw_length: e.raw_length,
                },
            )
        })
    }

    /// Bytes of memory the index uses per blob (entries plus directory), for the budget test.
    pub fn bytes_per_blob(&self) -> f64 {
        let bytes = self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.dir.capacity() * 4
            + self.packs.capacity() * std::mem::size_of::<PackInfo>();
        bytes as f64 / self.entries.len().max(1) as f64
    }

    /// Builds an index straight from packs (tests and benches).
    pub fn from_packs(packs: Vec<IndexPack>) -> Index {
        Index::from_files(vec![(
            Id::default(),
            IndexFile {
                supersedes: vec![],
                packs,
            },
        )])
    }
}

fn prefix(id: &[u8; 32]) -> usize {
    ((id[0] as usize) << 8) | id[1] as usize
}

/// The blobs of one pack as the index file lists them.
pub fn index_pack(id: Id, blob_type: BlobType, size: u64, blobs: Vec<PackedBlob>) -> IndexPack {
    IndexPack {
        id,
        blob_type,
        size,
        blobs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 48);
    }

    #[test]
    fn lookup_finds_every_blob() {
        let mut blobs = Vec::new();
        for i in 0..5000u32 {
            let id = Id(*blake3::hash(&i.to_le_bytes()).as_bytes());
            blobs.push(PackedBlob {
                id,
                offset: i,
                length: i + 1,
                raw_length: i + 2,
            });
        }
        let idx = Index::from_packs(vec![IndexPack {
            id: Id([7; 32]),
            blob_type: BlobType::Data,
            size: 1,
            blobs: blobs.clone(),
        }]);
        for b in &blobs {
            let loc = idx.get(&b.id).unwrap();
            assert_eq!(loc.offset, b.offset);
            assert_eq!(idx.pack(loc.pack).id, Id([7; 32]));
        }
        assert!(!idx.contains(&Id([1; 32])));
    }
}

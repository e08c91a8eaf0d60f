//! A sorted table of blob entries with a directory in front, held in memory (`Heap`) or
//! mapped from the local cache (`Mapped`, see `cache_file`). The directory, indexed by an
//! id's first `bits` bits (16 to 24), gives the range of entries sharing that prefix; the
//! first two bytes of an id are implied by it and not stored, so an entry is 46 bytes.

use std::sync::Arc;

use super::cache_file::Mapped;
use super::BlobLocation;
use crate::format::PackedBlob;
use crate::id::Id;

pub(super) const PREFIX_LEN: usize = 2;
pub(super) const SUFFIX_LEN: usize = 32 - PREFIX_LEN;
/// The directory's width for tables held in memory (256 KiB of directory).
pub(super) const HEAP_BITS: u32 = 16;

/// One blob. Byte arrays only, so the struct has alignment 1 and no padding: 46 bytes, and
/// any 46 bytes are a valid `Entry` (the mapped table relies on it). Numbers are
/// little-endian, so a table file reads the same on any machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(super) struct Entry {
    pub id: [u8; SUFFIX_LEN],
    pub pack: [u8; 4],
    pub offset: [u8; 4],
    pub length: [u8; 4],
    pub raw_length: [u8; 4],
}

pub(super) const ENTRY_LEN: usize = std::mem::size_of::<Entry>();

impl Entry {
    pub const ZERO: Entry = Entry {
        id: [0; SUFFIX_LEN],
        pack: [0; 4],
        offset: [0; 4],
        length: [0; 4],
        raw_length: [0; 4],
    };

    pub fn new(b: &PackedBlob, pack: u32) -> Entry {
        Entry {
            id: b.id.0 .0[PREFIX_LEN..].try_into().unwrap(),
            pack: pack.to_le_bytes(),
            offset: b.offset.to_le_bytes(),
            length: b.length.to_le_bytes(),
            raw_length: b.raw_length.to_le_bytes(),
        }
    }

    pub fn pack(&self) -> u32 {
        u32::from_le_bytes(self.pack)
    }

    pub fn location(&self) -> BlobLocation {
        BlobLocation {
            pack: u32::from_le_bytes(self.pack),
            offset: u32::from_le_bytes(self.offset),
            length: u32::from_le_bytes(self.length),
            raw_length: u32::from_le_bytes(self.raw_length),
        }
    }
}

/// The directory bucket of an id: its first `bits` bits.
pub(super) fn bucket(id: &[u8; 32], bits: u32) -> usize {
    (u32::from_be_bytes(id[..4].try_into().unwrap()) >> (32 - bits)) as usize
}

fn head(suffix: &[u8]) -> u64 {
    u64::from_be_bytes(suffix[..8].try_into().unwrap())
}

pub(super) enum Table {
    Heap {
        entries: Vec<Entry>,
        /// `dir[k]..dir[k+1]` are the entries of bucket k; empty when the table is.
        dir: Vec<u32>,
    },
    Mapped(Arc<Mapped>),
}

impl Default for Table {
    fn default() -> Table {
        Table::Heap {
            entries: Vec::new(),
            dir: Vec::new(),
        }
    }
}

impl Table {
    /// The same mapped table (a shared reference to the map); an empty one for a table in
    /// memory, which only the delta is.
    pub fn share(&self) -> Table {
        match self {
            Table::Heap { .. } => Table::default(),
            Table::Mapped(m) => Table::Mapped(m.clone()),
        }
    }

    /// Whether a mapped table found damaged bytes (and so left entries out).
    pub fn is_damaged(&self) -> bool {
        matches!(self, Table::Mapped(m) if m.is_damaged())
    }

    pub fn len(&self) -> usize {
        match self {
            Table::Heap { entries, .. } => entries.len(),
            Table::Mapped(m) => m.len(),
        }
    }

    fn bits(&self) -> u32 {
        match self {
            Table::Heap { .. } => HEAP_BITS,
            Table::Mapped(m) => m.bits(),
        }
    }

    fn dir(&self, k: usize) -> usize {
        match self {
            Table::Heap { dir, .. } => dir[k] as usize,
            Table::Mapped(m) => m.dir(k),
        }
    }

    /// Entries `s..e`; none when a mapped table's bytes there fail their check.
    fn range(&self, s: usize, e: usize) -> Option<&[Entry]> {
        match self {
            Table::Heap { entries, .. } => Some(&entries[s..e]),
            Table::Mapped(m) => m.entries(s, e),
        }
    }

    /// The position of `id`, and its entry.
    pub fn find(&self, id: &Id) -> Option<(usize, Entry)> {
        let found = self.find_unaccounted(id);
        if let Table::Mapped(m) = self {
            // A directory page and one or two of entries, each faulted with its neighbours.
            m.touched(3 * super::cache_file::FAULT_PAGES);
        }
        found
    }

    /// [`Table::find`] for ids in increasing order: pages are counted only when the lookup
    /// moves to another fault-around window (`window` carries the last one between calls),
    /// so a sorted sweep keeps what it maps until it has moved on by the budget.
    pub fn find_in_order(&self, id: &Id, window: &mut usize) -> Option<(usize, Entry)> {
        let found = self.find_unaccounted(id);
        if let Table::Mapped(m) = self {
            let k = bucket(&id.0, self.bits());
            let w = self.dir(k) * ENTRY_LEN / (4096 * super::cache_file::FAULT_PAGES);
            if w != *window {
                *window = w;
                m.touched(3 * super::cache_file::FAULT_PAGES);
            }
        }
        found
    }

    fn find_unaccounted(&self, id: &Id) -> Option<(usize, Entry)> {
        if self.len() == 0 {
            return None;
        }
        let k = bucket(&id.0, self.bits());
        let (s, e) = (self.dir(k), self.dir(k + 1));
        let range = self.range(s, e)?;
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
            .map(|i| (s + i, range[i]))
    }

    /// The id and entry at a position.
    pub fn at(&self, pos: usize) -> (Id, Entry) {
        // The bucket is the last one starting at or before `pos`; it cannot be empty.
        let (mut lo, mut hi) = (0usize, 1usize << self.bits());
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.dir(mid) <= pos {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let e = self
            .range(pos, pos + 1)
            .map(|r| r[0])
            .unwrap_or(Entry::ZERO);
        (self.full_id(lo, &e), e)
    }

    fn full_id(&self, bucket: usize, e: &Entry) -> Id {
        let prefix = ((bucket as u32) << (32 - self.bits())).to_be_bytes();
        let mut id = [0u8; 32];
        id[..PREFIX_LEN].copy_from_slice(&prefix[..PREFIX_LEN]);
        id[PREFIX_LEN..].copy_from_slice(&e.id);
        Id(id)
    }

    /// Every entry in position order, with its full id. A mapped table's entries whose bytes
    /// fail their check are left out (the table says so once).
    pub fn iter(&self) -> impl Iterator<Item = (Id, Entry)> + '_ {
        let buckets = if self.len() == 0 {
            0
        } else {
            1usize << self.bits()
        };
        (0..buckets).flat_map(move |k| {
            let (s, e) = (self.dir(k), self.dir(k + 1));
            if let Table::Mapped(m) = self {
                m.touched((e - s) * ENTRY_LEN / 4096 + 1);
            }
            let range = self.range(s, e).unwrap_or(&[]);
            range.iter().map(move |e| (self.full_id(k, e), *e))
        })
    }

    /// Heap bytes held (mapped tables: what `Mapped` keeps in memory).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Table::Heap { entries, dir } => entries.capacity() * ENTRY_LEN + dir.capacity() * 4,
            Table::Mapped(m) => m.heap_bytes(),
        }
    }

    /// A table in memory from entries with their full ids: bucket sort by prefix straight
    /// into the final array, then sort each bucket by id and then by `rank` (lower wins),
    /// dropping later copies of an id.
    pub fn build_heap(
        total: usize,
        blobs: impl Iterator<Item = (Id, Entry)> + Clone,
        rank: impl Fn(&Entry) -> (bool, u32),
    ) -> Table {
        if total == 0 {
            return Table::default();
        }
        let nb = 1usize << HEAP_BITS;
        let mut dir = vec![0u32; nb + 1];
        for (id, _) in blobs.clone() {
            dir[bucket(&id.0, HEAP_BITS) + 1] += 1;
        }
        for k in 0..nb {
            dir[k + 1] += dir[k];
        }
        let mut entries = vec![Entry::ZERO; total];
        let mut cursor = dir.clone();
        for (id, e) in blobs {
            let c = &mut cursor[bucket(&id.0, HEAP_BITS)];
            entries[*c as usize] = e;
            *c += 1;
        }
        drop(cursor);
        let mut w = 0usize;
        for k in 0..nb {
            let (s, e) = (dir[k] as usize, dir[k + 1] as usize);
            entries[s..e].sort_unstable_by(|a, b| a.id.cmp(&b.id).then(rank(a).cmp(&rank(b))));
            dir[k] = w as u32;
            for i in s..e {
                if w > dir[k] as usize && entries[w - 1].id == entries[i].id {
                    continue;
                }
                entries[w] = entries[i];
                w += 1;
            }
        }
        dir[nb] = w as u32;
        entries.truncate(w);
        entries.shrink_to_fit();
        Table::Heap { entries, dir }
    }
}

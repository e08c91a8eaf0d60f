//! Builds a cache file (`cache_file`) from index files in bounded memory: blobs are gathered
//! into sorted runs of at most `RUN` entries, runs beyond the first are spilled to unnamed
//! temporary files, and the runs (with the entries of an old base, when merging) are merged
//! into the file in id order. Memory: one run (24 MiB), a 64 KiB buffer per spilled run, the
//! packs and the directory.

use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use rayon::slice::ParallelSliceMut;

use super::cache_file::{bits_for, Writer};
use super::table::{Entry, Table, ENTRY_LEN, PREFIX_LEN};
use super::PackInfo;
use crate::format::IndexPack;
use crate::id::{Id, IndexFileId, PackId};
use std::io::Result;

/// Entries in one sorted run (24 MiB, allocated once: growing it by doubling would hold the
/// old and the new buffer at once).
const RUN: usize = 1 << 19;

/// One blob with its full id, as sorted and spilled.
#[derive(Clone, Copy)]
struct Rec {
    id: [u8; 32],
    entry: Entry,
}

const REC_LEN: usize = 32 + ENTRY_LEN - (32 - PREFIX_LEN);

impl Rec {
    fn encode(&self, out: &mut [u8; REC_LEN]) {
        out[..32].copy_from_slice(&self.id);
        out[32..36].copy_from_slice(&self.entry.pack);
        out[36..40].copy_from_slice(&self.entry.offset);
        out[40..44].copy_from_slice(&self.entry.length);
        out[44..48].copy_from_slice(&self.entry.raw_length);
    }

    fn decode(b: &[u8; REC_LEN]) -> Rec {
        let id: [u8; 32] = b[..32].try_into().unwrap();
        Rec {
            id,
            entry: Entry {
                id: id[PREFIX_LEN..].try_into().unwrap(),
                pack: b[32..36].try_into().unwrap(),
                offset: b[36..40].try_into().unwrap(),
                length: b[40..44].try_into().unwrap(),
                raw_length: b[44..48].try_into().unwrap(),
            },
        }
    }
}

/// Gathers packs, then writes the file.
pub(super) struct Builder<'d> {
    packs: Vec<PackInfo>,
    numbers: HashMap<PackId, u32>,
    run: Vec<Rec>,
    spilled: Vec<File>,
    total: u64,
    tmp_dir: &'d Path,
}

impl<'d> Builder<'d> {
    /// Starts from the packs of an old base (kept with their numbers), spilling runs into
    /// `tmp_dir`.
    pub fn new(base_packs: &[PackInfo], tmp_dir: &'d Path) -> Builder<'d> {
        Builder {
            numbers: base_packs
                .iter()
                .enumerate()
                .map(|(n, p)| (p.id, n as u32))
                .collect(),
            packs: base_packs.to_vec(),
            run: Vec::new(),
            spilled: Vec::new(),
            total: 0,
            tmp_dir,
        }
    }

    /// Adds a pack's blobs unless a pack of that id was added before.
    pub fn add_pack(&mut self, p: &IndexPack, archived: bool) -> Result<()> {
        if self.numbers.contains_key(&p.id) {
            return Ok(());
        }
        let n = self.packs.len() as u32;
        self.numbers.insert(p.id, n);
        self.packs.push(PackInfo {
            id: p.id,
            blob_type: p.blob_type,
            size: p.size,
            archived,
        });
        if self.run.capacity() == 0 {
            self.run.reserve_exact(RUN);
        }
        for b in &p.blobs {
            self.run.push(Rec {
                id: b.id.0 .0,
                entry: Entry::new(b, n),
            });
            if self.run.len() == RUN {
                self.spill()?;
            }
        }
        self.total += p.blobs.len() as u64;
        Ok(())
    }

    fn sort_run(&mut self) {
        let packs = &self.packs;
        self.run
            .par_sort_unstable_by(|a, b| a.id.cmp(&b.id).then(rank(packs, a).cmp(&rank(packs, b))));
    }

    fn spill(&mut self) -> Result<()> {
        self.sort_run();
        let mut out = BufWriter::with_capacity(1 << 20, tempfile::tempfile_in(self.tmp_dir)?);
        let mut buf = [0u8; REC_LEN];
        for r in &self.run {
            r.encode(&mut buf);
            out.write_all(&buf)?;
        }
        let mut f = out.into_inner().map_err(|e| e.into_error())?;
        f.seek(SeekFrom::Start(0))?;
        self.spilled.push(f);
        self.run.clear();
        Ok(())
    }

    /// Merges the runs (and `base`'s entries, whose packs `new` was given) into `file`.
    pub fn finish(
        mut self,
        base: Option<&Table>,
        file: File,
        repository_id: &Id,
        tiers: &[u8; 32],
        live_files: &[IndexFileId],
        superseded_files: &[IndexFileId],
    ) -> Result<File> {
        self.sort_run();
        let expected = self.total + base.map_or(0, |b| b.len() as u64);
        let mut writer = Writer::new(file, bits_for(expected))?;
        let run = std::mem::take(&mut self.run);
        let mut sources: Vec<Box<dyn Iterator<Item = Result<Rec>> + '_>> = Vec::new();
        if let Some(b) = base {
            sources.push(Box::new(
                b.iter().map(|(id, entry)| Ok(Rec { id: id.0, entry })),
            ));
        }
        sources.push(Box::new(run.into_iter().map(Ok)));
        for f in std::mem::take(&mut self.spilled) {
            sources.push(Box::new(SpilledRun(BufReader::with_capacity(64 << 10, f))));
        }
        let packs = &self.packs;
        let mut heap = BinaryHeap::new();
        let mut heads: Vec<Option<Rec>> = Vec::with_capacity(sources.len());
        for (i, s) in sources.iter_mut().enumerate() {
            let r = s.next().transpose()?;
            if let Some(r) = &r {
                heap.push(std::cmp::Reverse((r.id, rank(packs, r), i)));
            }
            heads.push(r);
        }
        while let Some(std::cmp::Reverse((_, _, i))) = heap.pop() {
            let r = heads[i].take().expect("a source in the heap has a head");
            writer.push(&r.id, &r.entry)?;
            if let Some(next) = sources[i].next().transpose()? {
                heap.push(std::cmp::Reverse((next.id, rank(packs, &next), i)));
                heads[i] = Some(next);
            }
        }
        drop(sources);
        writer.finish(repository_id, tiers, packs, live_files, superseded_files)
    }
}

/// Among copies of one blob: a copy in an archived pack loses, then the lower pack number
/// (listed first) wins.
fn rank(packs: &[PackInfo], r: &Rec) -> (bool, u32) {
    let n = r.entry.pack();
    (packs[n as usize].archived, n)
}

struct SpilledRun(BufReader<File>);

impl Iterator for SpilledRun {
    type Item = Result<Rec>;
    fn next(&mut self) -> Option<Result<Rec>> {
        let mut buf = [0u8; REC_LEN];
        match self.0.read_exact(&mut buf) {
            Ok(()) => Some(Ok(Rec::decode(&buf))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
            Err(e) => Some(Err(e)),
        }
    }
}

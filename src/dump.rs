//! `dump`: one file of a snapshot written to a stream, in order, with reads of neighbouring
//! blobs joined and the next window decoded while the last one is written.

use crate::error::{Error, Result};
use crate::format::{Node, NodeKind};
use crate::id::Id;
use crate::index::Index;
use crate::repository::{IndexedRepository, Repository};
use crate::restorer::RESTORE_PIECE;
use rayon::prelude::*;

/// Raw bytes of a file `dump` decodes at once; the previous window is written out meanwhile.
const DUMP_WINDOW: u64 = 8 << 20;
/// A gap between two blobs of one pack that a single read still spans (read and dropped).
const DUMP_GAP: u64 = 256 << 10;

/// Writes one file's content to `out`. Consecutive blobs that lie together in a pack are read
/// with one request; a window of such runs is opened on all cores while the one before it is
/// written, so the output never waits for one blob at a time.
pub fn dump(indexed: &IndexedRepository, node: &Node, out: &mut dyn std::io::Write) -> Result<u64> {
    let (repo, index): (&Repository, &Index) = (indexed, indexed.index());
    if node.kind != NodeKind::File {
        return Err(Error::usage(format!(
            "{} is not a regular file",
            node.name_lossy()
        )));
    }
    let mut locs = Vec::with_capacity(node.content.len());
    for id in &node.content {
        let loc = index
            .get(id)
            .ok_or_else(|| Error::corrupt(format!("blob {}", id.short()), "not in the index"))?;
        locs.push((**id, loc));
    }
    indexed.refuse_cold(locs.iter().map(|(_, l)| l.pack))?;
    let runs = read_runs(&locs);
    // windows: ranges of runs of about DUMP_WINDOW raw bytes each
    let mut windows = Vec::new();
    let (mut first, mut raw) = (0, 0u64);
    for (k, run) in runs.iter().enumerate() {
        raw += locs[run.clone()]
            .iter()
            .map(|(_, l)| l.raw_length as u64)
            .sum::<u64>();
        if raw >= DUMP_WINDOW || k + 1 == runs.len() {
            windows.push(&runs[first..=k]);
            (first, raw) = (k + 1, 0);
        }
    }
    // built once: every window reads on it
    let pool = repo.backend().read_pool();
    let decode = |window: &[std::ops::Range<usize>]| -> Result<Vec<Vec<u8>>> {
        let open_window = || -> Result<Vec<Vec<u8>>> {
            // one request per run, then every blob of the window opened on its own
            let sealed: Vec<Vec<u8>> = window
                .par_iter()
                .map(|run| read_run(repo, index, &locs[run.clone()]))
                .collect::<Result<_>>()?;
            let blobs: Vec<(&[u8], &(Id, crate::index::BlobLocation))> = window
                .iter()
                .zip(&sealed)
                .flat_map(|(run, bytes)| {
                    let start = locs[run.start].1.offset as usize;
                    locs[run.clone()].iter().map(move |b| {
                        let s = b.1.offset as usize - start;
                        (&bytes[s..s + b.1.length as usize], b)
                    })
                })
                .collect();
            blobs
                .par_iter()
                .map(|(bytes, (id, loc))| {
                    let blob_type = index.pack(loc.pack).blob_type;
                    crate::pack::open_blob(repo.keys(), blob_type, id, bytes, loc.raw_length)
                })
                .collect()
        };
        match &pool {
            Some(pool) => pool.install(open_window),
            None => open_window(),
        }
    };
    let write = |out: &mut dyn std::io::Write, blobs: Vec<Vec<u8>>| -> Result<u64> {
        let mut n = 0;
        for b in blobs {
            out.write_all(&b)
                .map_err(|e| Error::io("standard output", e))?;
            n += b.len() as u64;
        }
        Ok(n)
    };
    let mut written = 0u64;
    let mut pending: Vec<Vec<u8>> = Vec::new();
    for window in windows {
        // `out` (a locked stdout) stays on this thread; the next window decodes beside it
        let (w, next) = std::thread::scope(|s| {
            let next = s.spawn(|| decode(window));
            let w = write(&mut *out, std::mem::take(&mut pending));
            (w, next.join().expect("dump decode thread panicked"))
        });
        written += w?;
        pending = next?;
    }
    written += write(out, pending)?;
    out.flush().map_err(|e| Error::io("standard output", e))?;
    Ok(written)
}

/// Splits a file's blobs (in content order) into runs that one read covers: the same pack,
/// each blob after the previous one, gaps of at most DUMP_GAP, at most RESTORE_PIECE in all
/// (a single larger blob is a run of its own).
fn read_runs(locs: &[(Id, crate::index::BlobLocation)]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    for k in 1..=locs.len() {
        let split = k == locs.len() || {
            let (first, prev, cur) = (&locs[start].1, &locs[k - 1].1, &locs[k].1);
            let prev_end = prev.offset as u64 + prev.length as u64;
            let cur_end = cur.offset as u64 + cur.length as u64;
            cur.pack != prev.pack
                || (cur.offset as u64) < prev_end
                || cur.offset as u64 - prev_end > DUMP_GAP
                || cur_end - first.offset as u64 > RESTORE_PIECE
        };
        if split {
            runs.push(start..k);
            start = k;
        }
    }
    runs
}

/// Reads the stored bytes of one run of blobs with a single request.
fn read_run(
    repo: &Repository,
    index: &Index,
    run: &[(Id, crate::index::BlobLocation)],
) -> Result<Vec<u8>> {
    let (first, last) = (&run[0].1, &run[run.len() - 1].1);
    let path = crate::backend::FileKind::Pack.path(&index.pack(first.pack).id);
    let start = first.offset as u64;
    let end = last.offset as u64 + last.length as u64;
    repo.backend().read_range(&path, start, end - start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::BlobLocation;

    fn at(pack: u32, offset: u32, length: u32) -> (Id, BlobLocation) {
        let loc = BlobLocation {
            pack,
            offset,
            length,
            raw_length: length,
        };
        (Id([0; 32]), loc)
    }

    #[test]
    fn read_runs_join_neighbours_and_split_elsewhere() {
        let big = RESTORE_PIECE as u32;
        let locs = [
            at(0, 0, 100),
            at(0, 100, 100),            // adjacent: same run
            at(0, 300, 100),            // small gap: same run
            at(1, 400, 100),            // other pack
            at(1, 0, 100),              // backwards in the pack
            at(1, 1 << 20, 10),         // gap over DUMP_GAP
            at(1, (1 << 20) + 10, big), // would pass RESTORE_PIECE
            at(1, (1 << 20) + 10 + big, 5),
        ];
        assert_eq!(read_runs(&locs), vec![0..3, 3..4, 4..5, 5..6, 6..7, 7..8]);
        assert!(read_runs(&[]).is_empty());
    }
}

//! `dump`: one file of a snapshot written to a stream, in order. Reads of neighbouring blobs
//! are joined into runs; worker threads each take the next run, read and open it, and hand it
//! to the writing thread, which puts runs out in order. Workers stay at most `AHEAD_PER_WORKER`
//! runs a worker ahead of the writer, so memory is bounded and no worker waits on another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::format::{Node, NodeKind};
use crate::id::Id;
use crate::index::{BlobLocation, Index};
use crate::repository::{IndexedRepository, Repository};
use crate::restorer::RESTORE_PIECE;

/// A gap between two blobs of one pack that a single read still spans (read and dropped).
const DUMP_GAP: u64 = 256 << 10;
/// Runs (at most `RESTORE_PIECE` stored bytes each) a worker may be ahead of the writer.
const AHEAD_PER_WORKER: usize = 3;

/// Writes one file's content to `out`.
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
    // Remote reads mostly wait on the network: as many workers as connections.
    let workers = repo
        .backend()
        .read_pool()
        .map_or(rayon::current_num_threads(), |p| p.current_num_threads())
        .clamp(1, runs.len().max(1));
    let ahead = workers * AHEAD_PER_WORKER;
    let (tickets, take) = crossbeam_channel::unbounded::<usize>();
    let (done, results) = crossbeam_channel::unbounded::<(usize, Result<Vec<u8>>)>();
    // Written buffers go back to the workers: fresh multi-MiB buffers cost page faults.
    let (recycle, reuse) = crossbeam_channel::unbounded::<Vec<u8>>();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (take, done, stop, locs, runs) = (take.clone(), done.clone(), &stop, &locs, &runs);
            let reuse = reuse.clone();
            s.spawn(move || {
                for k in take {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut plain = reuse.try_recv().unwrap_or_default();
                    plain.clear();
                    let opened = open_run(repo, index, &locs[runs[k].clone()], plain);
                    if done.send((k, opened)).is_err() {
                        break;
                    }
                }
            });
        }
        drop((take, done));
        for k in 0..ahead.min(runs.len()) {
            let _ = tickets.send(k);
        }
        let written = write_in_order(out, runs.len(), &results, |k, buf| {
            let _ = recycle.send(buf);
            if k + ahead < runs.len() {
                let _ = tickets.send(k + ahead);
            }
        });
        // On an error the workers finish the run in hand and stop.
        stop.store(true, Ordering::Relaxed);
        drop(tickets);
        written
    })
}

/// Writes runs `0..count` from `results` in order, holding those that arrive early; calls
/// `written(k, buffer)` after run k is out.
fn write_in_order(
    out: &mut dyn std::io::Write,
    count: usize,
    results: &crossbeam_channel::Receiver<(usize, Result<Vec<u8>>)>,
    mut written: impl FnMut(usize, Vec<u8>),
) -> Result<u64> {
    let mut early: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut total = 0u64;
    for k in 0..count {
        let bytes = loop {
            if let Some(b) = early.remove(&k) {
                break b;
            }
            let (j, r) = results
                .recv()
                .map_err(|_| Error::other("dump: a worker stopped early"))?;
            early.insert(j, r?);
        };
        out.write_all(&bytes)
            .map_err(|e| Error::io("standard output", e))?;
        total += bytes.len() as u64;
        written(k, bytes);
    }
    out.flush().map_err(|e| Error::io("standard output", e))?;
    Ok(total)
}

/// Reads one run with a single request and opens its blobs, in order, into `plain`.
fn open_run(
    repo: &Repository,
    index: &Index,
    run: &[(Id, BlobLocation)],
    mut plain: Vec<u8>,
) -> Result<Vec<u8>> {
    let mut sealed = read_run(repo, index, run)?;
    let start = run[0].1.offset as usize;
    let raw: usize = run.iter().map(|(_, l)| l.raw_length as usize).sum();
    plain.reserve(raw);
    for (id, loc) in run {
        let s = loc.offset as usize - start;
        let blob_type = index.pack(loc.pack).blob_type;
        let bytes = &mut sealed[s..s + loc.length as usize];
        crate::pack::open_blob_in_place_into(
            repo.keys(),
            blob_type,
            id,
            bytes,
            loc.raw_length,
            &mut plain,
        )?;
    }
    Ok(plain)
}

/// Splits a file's blobs (in content order) into runs that one read covers: the same pack,
/// each blob after the previous one, gaps of at most DUMP_GAP, at most RESTORE_PIECE in all
/// (a single larger blob is a run of its own).
fn read_runs(locs: &[(Id, BlobLocation)]) -> Vec<std::ops::Range<usize>> {
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
fn read_run(repo: &Repository, index: &Index, run: &[(Id, BlobLocation)]) -> Result<Vec<u8>> {
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

//! Restoring WAL files (`wal-fetch`): one record's blocks read (in parallel, each verified
//! against its keyed id), checked against the record's size and hash, written under a
//! temporary name and renamed into place. Fetch-ahead fills a spool folder with the segments
//! that follow, so that PostgreSQL's next calls find them without opening the repository.

use crate::error::{Error, Result};
use crate::format::WalRecord;
use crate::repository::IndexedRepository;
use crate::wal::catalog;
use crate::wal::name::WalName;
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;

/// What `fetch` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetched {
    Written {
        size: u64,
    },
    /// The repository holds no record of the name: it was never archived (or was forgotten).
    NotArchived,
}

/// Writes the archived file `name` to `dest`.
pub fn fetch(repo: &IndexedRepository, name: &str, dest: &Path) -> Result<Fetched> {
    catalog::require_wal_support(repo.repository())?;
    match catalog::load(repo.repository(), name)? {
        None => Ok(Fetched::NotArchived),
        Some(rec) => {
            write_record(repo, &rec, dest)?;
            Ok(Fetched::Written { size: rec.size })
        }
    }
}

/// Reads a record's content, verifies it whole and writes it to `dest` atomically.
pub fn write_record(repo: &IndexedRepository, rec: &WalRecord, dest: &Path) -> Result<()> {
    let blocks: Vec<Vec<u8>> = rec
        .content
        .par_iter()
        .map(|id| repo.read_blob(id))
        .collect::<Result<_>>()?;
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    for b in &blocks {
        hasher.update(b);
        size += b.len() as u64;
    }
    if size != rec.size || *hasher.finalize().as_bytes() != rec.hash {
        return Err(Error::corrupt(
            format!("WAL file {}", rec.name),
            "its blocks do not add up to the archived file",
        ));
    }
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".ocvault-wal-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    for b in &blocks {
        tmp.write_all(b).map_err(|e| Error::io(dest, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(dest, e))?;
    tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    Ok(())
}

/// Keeps up to `window` segments after `after` (on its timeline) fetched into `spool`, as
/// recovery takes them away, until the archive ends or nothing was taken for `idle_limit`.
/// One process with the repository open serves the whole recovery: no key derivation or
/// index load per segment. Returns how many segments it wrote.
pub fn prefetch(
    repo: &IndexedRepository,
    after: &str,
    window: usize,
    spool: &Path,
    idle_limit: std::time::Duration,
) -> Result<usize> {
    let Some(WalName::Segment(first)) = WalName::parse(after) else {
        return Ok(0);
    };
    let Some(rec) = catalog::load(repo.repository(), after)? else {
        return Ok(0);
    };
    let seg_size = rec.size;
    if !seg_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&seg_size) {
        return Ok(0);
    }
    std::fs::create_dir_all(spool).map_err(|e| Error::io(spool, e))?;
    let mut next = first.next(seg_size);
    let mut written = 0;
    let mut last_progress = std::time::Instant::now();
    loop {
        if segments_in(spool) >= window {
            if last_progress.elapsed() > idle_limit {
                return Ok(written);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        }
        last_progress = std::time::Instant::now();
        // Two at a time, nearest first: those are the ones PostgreSQL asks for next.
        let pair = [next, next.next(seg_size)];
        let got: Vec<Result<bool>> = pair
            .par_iter()
            .map(|seg| {
                let name = seg.file_name();
                let dest = spool.join(&name);
                if dest.exists() {
                    return Ok(true);
                }
                match catalog::load(repo.repository(), &name)? {
                    None => Ok(false),
                    Some(rec) => write_record(repo, &rec, &dest).map(|_| true),
                }
            })
            .collect();
        for g in got {
            if !g? {
                return Ok(written);
            }
            written += 1;
        }
        next = pair[1].next(seg_size);
    }
}

/// WAL segments waiting in the spool.
fn segments_in(spool: &Path) -> usize {
    std::fs::read_dir(spool).map_or(0, |rd| {
        rd.flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| matches!(WalName::parse(n), Some(WalName::Segment(_))))
            })
            .count()
    })
}

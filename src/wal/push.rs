//! Archiving WAL files (`wal-push`): each file cut into fixed-size blocks stored as data blobs
//! through the one packer, then the index, then one `wal/` record per file. A record is
//! written only after the packs and index entries it names, so a record that exists is
//! always restorable; a push killed before its records are written leaves only packs that
//! the next push (which deduplicates against the index) or `prune` takes care of.

use crate::error::{Error, Result};
use crate::format::{BlobType, IndexFile, WalRecord, WAL_BLOCK_SIZE};
use crate::id::{DataId, Id};
use crate::packer::{self, Indexing, Packer, PackerParts, PACKS_PER_INDEX};
use crate::session::IndexedWriteSession;
use crate::wal::catalog;
use rayon::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};

/// zstd level for WAL: its first fast mode. On pgbench WAL (one run, one core): 714 MB/s
/// and 7.2x, against 534 MB/s and 7.6x at level 1, and lz4's 946 MB/s and 4.1x.
pub const WAL_COMPRESSION_LEVEL: i32 = -1;

/// A file PostgreSQL asks to archive: its name (`%f`) and where it is.
#[derive(Clone, Debug)]
pub struct WalFile {
    pub name: String,
    pub path: PathBuf,
}

/// What became of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// Archived before with the same content: nothing to do.
    AlreadyArchived,
}

/// What became of one file: archived (now or before), with the BLAKE3 of its content, or
/// refused.
pub type PushResult = Result<(Pushed, [u8; 32])>;

/// One result per file pushed, in the order given, and what the repository grew by.
pub struct PushReport {
    pub results: Vec<(String, PushResult)>,
    pub bytes_added: u64,
    pub blobs_added: u64,
}

/// Plain BLAKE3 of a whole file, the fingerprint a record keeps.
pub fn file_hash(path: &Path) -> Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    h.update_reader(f).map_err(|e| Error::io(path, e))?;
    Ok(*h.finalize().as_bytes())
}

/// Archives `files` in one write session. Files already archived with the same content are
/// left alone; one archived with other content is refused (its result is an error) and
/// nothing of it is written. An error of the whole push (a pack or index file that could not
/// be stored) means no record was written.
pub fn push(session: &IndexedWriteSession, files: &[WalFile]) -> Result<PushReport> {
    let repo = session.repo().repository();
    catalog::require_wal_support(repo)?;
    // Which files are archived already, and with what content; `None`: to store.
    let mut results: Vec<Option<PushResult>> = files
        .par_iter()
        .map(|f| match catalog::load(repo, &f.name) {
            Err(e) => Some(Err(e)),
            Ok(None) => None,
            Ok(Some(rec)) => Some(match file_hash(&f.path) {
                Ok(h) if h == rec.hash => Ok((Pushed::AlreadyArchived, h)),
                Ok(_) => Err(Error::other(format!(
                    "WAL file {} is already archived with different content; refusing to replace it",
                    f.name
                ))),
                Err(e) => Err(e),
            }),
        })
        .collect();
    let to_store: Vec<usize> = (0..files.len()).filter(|&i| results[i].is_none()).collect();

    let save_index = |f: &IndexFile| session.save_file(f).map(Id::from);
    let parts = PackerParts::new(session, Indexing::Every(PACKS_PER_INDEX, &save_index))
        .with_compression_level(WAL_COMPRESSION_LEVEL);
    let (stored, packed) = packer::run(parts, |p| {
        to_store
            .par_iter()
            .map(|&i| store_file(p, &files[i]))
            .collect::<Vec<Result<WalRecord>>>()
    });
    let packed = packed?;
    // Records last: each names blobs that are now in packs and index files.
    let records: Vec<WalRecord> = stored.iter().flatten().cloned().collect();
    let mut written = session.save_wal_records(&records)?.into_iter();
    for (i, r) in to_store.into_iter().zip(stored) {
        results[i] = Some(r.and_then(|rec| {
            let saved = written.next().expect("one result per record");
            saved.map(|_| (Pushed::Stored, rec.hash))
        }));
    }
    let results = files
        .iter()
        .zip(results)
        .map(|(f, r)| (f.name.clone(), r.expect("every file has a result")))
        .collect();
    Ok(PushReport {
        results,
        bytes_added: packed.bytes_added,
        blobs_added: packed.blobs_added,
    })
}

/// Stores one file's blocks; returns its record.
fn store_file(p: &Packer, f: &WalFile) -> Result<WalRecord> {
    let mut file = std::fs::File::open(&f.path).map_err(|e| Error::io(&f.path, e))?;
    let mut hasher = blake3::Hasher::new();
    let mut content = Vec::new();
    let mut size = 0u64;
    let mut block = vec![0u8; WAL_BLOCK_SIZE];
    loop {
        let n = read_full(&mut file, &mut block).map_err(|e| Error::io(&f.path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
        content.push(DataId(p.store(BlobType::Data, &block[..n])?));
        size += n as u64;
        if n < block.len() {
            break;
        }
    }
    Ok(WalRecord {
        name: f.name.clone(),
        size,
        hash: *hasher.finalize().as_bytes(),
        content,
        archived_unix_ns: crate::host::now_ns(),
        hostname: crate::host::hostname(),
    })
}

/// Fills `buf` unless the file ends first; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

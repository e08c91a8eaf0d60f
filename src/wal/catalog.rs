//! `wal/` records (format-spec §10b): one per file PostgreSQL archived, named by the keyed
//! hash of the WAL file's name so that one name is found (or proved absent) with one read.

use crate::backend::{is_not_found, FileKind};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::format::WalRecord;
use crate::id::Id;
use crate::repository::Repository;

/// Where the record of `name` lives.
pub fn record_path(keys: &Keys, name: &str) -> String {
    FileKind::Wal.path(&keys.wal_record_id(name))
}

/// Refuses repositories of format version 1, which have no `wal/` (an older ocvault's prune
/// would delete what the records name).
pub fn require_wal_support(repo: &Repository) -> Result<()> {
    if repo.config().version < 2 {
        return Err(Error::NeedsNewerFormat(
            "repository format version 1 cannot hold PostgreSQL WAL or base backups: create a \
             version 2 repository (`ocvault init`) and `ocvault copy` the snapshots into it"
                .into(),
        ));
    }
    Ok(())
}

pub use crate::repofile::{decode_wal_record as decode, encode_wal_record as encode};

/// The record of `name`, or `None` when the repository holds none: the proof `wal-fetch`
/// needs before it tells PostgreSQL a file was never archived.
pub fn load(repo: &Repository, name: &str) -> Result<Option<WalRecord>> {
    let id = repo.keys().wal_record_id(name);
    match repo.backend().read(&FileKind::Wal.path(&id)) {
        Ok(bytes) => decode(repo.keys(), &id, &bytes).map(Some),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The text of a small archived file (a `.history` or `.backup` file), its blocks read with
/// `read_blob` (each verified against its id) and joined.
pub fn read_text(
    record: &WalRecord,
    read_blob: impl Fn(&crate::id::DataId) -> Result<Vec<u8>>,
) -> Result<String> {
    let blocks: Vec<Vec<u8>> = record
        .content
        .iter()
        .map(read_blob)
        .collect::<Result<_>>()?;
    Ok(String::from_utf8_lossy(&blocks.concat()).into_owned())
}

/// Every record: the intact ones, and the damaged ones with what is wrong. A storage error
/// stops the listing; a record deleted since the listing (by `forget`) is left out.
pub struct Catalog {
    pub records: Vec<(Id, WalRecord)>,
    pub damaged: Vec<(Id, Error)>,
}

pub fn list(repo: &Repository) -> Result<Catalog> {
    let ids: Vec<Id> = repo
        .backend()
        .list_ids(FileKind::Wal)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let paths: Vec<String> = ids.iter().map(|id| FileKind::Wal.path(id)).collect();
    let loaded = repo.read_each(paths, |i, bytes| {
        bytes.and_then(|b| decode(repo.keys(), &ids[i], &b))
    });
    let mut catalog = Catalog {
        records: Vec::new(),
        damaged: Vec::new(),
    };
    for (id, r) in ids.into_iter().zip(loaded) {
        match r {
            Ok(rec) => catalog.records.push((id, rec)),
            Err(e) if is_not_found(&e) => {}
            Err(e @ Error::Corrupt { .. }) => catalog.damaged.push((id, e)),
            Err(e) => return Err(e),
        }
    }
    catalog.records.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    Ok(catalog)
}

/// The blobs every `wal/` record names (format version 2): a WAL file's blocks are live as
/// long as its record exists. Strict: a record that cannot be read could name any blob, so
/// its damage is the error.
pub fn blobs(repo: &Repository) -> Result<Vec<crate::id::BlobId>> {
    if repo.config().version < 2 {
        return Ok(Vec::new());
    }
    let catalog = list(repo)?;
    if let Some((_, e)) = catalog.damaged.into_iter().next() {
        return Err(e);
    }
    Ok(catalog
        .records
        .into_iter()
        .flat_map(|(_, r)| r.content)
        .map(crate::id::BlobId::from)
        .collect())
}

//! Stored files as one trait: each type stored as a sealed, hash-named file says which folder
//! it lives in, how it is sealed, what names it, and whether a write of it must be fenced by
//! a write session's marker. `Repository::load_file`/`load_all` and
//! `WriteSession::save_file`/`delete_file` take the type, not those facts one by one.
//!
//! `config` and key files do not implement it: the config lives at a fixed name behind a
//! clear header and its seal binds the format version (one decoder,
//! `repository::decode_config`); key files are wrapped under a password, not sealed under the
//! master key (`WriteSession::add_key`, `repository::decode_key_file`).

use crate::backend::FileKind;
use crate::crypto::{Keys, SealKind};
use crate::format::{
    BackupMarker, IndexFile, LogEntry, PruneMark, RetentionLedger, Snapshot, WalRecord,
};
use crate::id::{FileId, Id, IndexFileId, SnapshotId};
use serde::{de::DeserializeOwned, Serialize};

/// A structured file: postcard, framed, sealed with `SEAL`, stored as `KIND`/<hash>.
pub trait RepoFile: Serialize + DeserializeOwned + Send {
    const KIND: FileKind;
    const SEAL: SealKind;
    /// Points at packs a prune could delete (snapshots, index files): stored only while the
    /// session's marker is held, checked before and after the write (format-spec §11a).
    const FENCED: bool;
    /// What names a file of this type.
    type Id: FileId;

    /// The stored encoding in a repository of format `version` (postcard; a type whose
    /// layout changed between versions writes the one its repository's version has).
    fn encode(&self, _version: u32) -> Vec<u8> {
        crate::format::to_postcard(self)
    }

    /// Decodes a file stored in a repository of format `version`.
    fn decode(bytes: &[u8], _version: u32, what: &str) -> crate::error::Result<Self> {
        crate::format::from_postcard(bytes, what)
    }
}

impl RepoFile for Snapshot {
    const KIND: FileKind = FileKind::Snapshot;
    const SEAL: SealKind = SealKind::Snapshot;
    const FENCED: bool = true;
    type Id = SnapshotId;

    fn encode(&self, version: u32) -> Vec<u8> {
        Snapshot::encode(self, version)
    }

    fn decode(bytes: &[u8], version: u32, what: &str) -> crate::error::Result<Self> {
        Snapshot::decode(bytes, version, what)
    }
}

impl RepoFile for IndexFile {
    const KIND: FileKind = FileKind::Index;
    const SEAL: SealKind = SealKind::Index;
    const FENCED: bool = true;
    type Id = IndexFileId;
}

impl RepoFile for LogEntry {
    const KIND: FileKind = FileKind::Log;
    const SEAL: SealKind = SealKind::Log;
    const FENCED: bool = false;
    type Id = Id;

    fn encode(&self, version: u32) -> Vec<u8> {
        LogEntry::encode(self, version)
    }

    fn decode(bytes: &[u8], version: u32, what: &str) -> crate::error::Result<Self> {
        LogEntry::decode(bytes, version, what)
    }
}

impl RepoFile for BackupMarker {
    const KIND: FileKind = FileKind::Lock;
    const SEAL: SealKind = SealKind::Lock;
    const FENCED: bool = false;
    type Id = Id;
}

impl RepoFile for PruneMark {
    const KIND: FileKind = FileKind::PruneMark;
    const SEAL: SealKind = SealKind::PruneMark;
    const FENCED: bool = false;
    type Id = Id;
}

impl RepoFile for RetentionLedger {
    const KIND: FileKind = FileKind::Retention;
    const SEAL: SealKind = SealKind::Retention;
    const FENCED: bool = false;
    type Id = Id;
}

/// `wal/` records are not `RepoFile`s: they are named by the keyed hash of the WAL file's
/// name, not by the hash of their bytes (format-spec §10b).
/// The stored bytes of a record: sealed with its file id as associated data, so a record
/// cannot be passed off under another name.
pub fn encode_wal_record(keys: &Keys, level: i32, record: &WalRecord) -> (Id, Vec<u8>) {
    let id = keys.wal_record_id(&record.name);
    let sealed = keys.seal(
        SealKind::Wal,
        &id.0,
        &crate::format::frame(&crate::format::to_postcard(record), level),
    );
    (id, sealed)
}

/// Opens a record stored as `wal/<id>` and checks it names itself.
pub fn decode_wal_record(keys: &Keys, id: &Id, bytes: &[u8]) -> crate::error::Result<WalRecord> {
    let what = crate::backend::FileKind::Wal.path(id);
    let framed = keys
        .open(SealKind::Wal, &id.0, bytes)
        .map_err(|_| crate::error::Error::corrupt(&what, "authentication failed"))?;
    let record: WalRecord = crate::format::from_postcard(
        &crate::format::unframe(&framed, crate::format::MAX_OBJECT_SIZE, &what)?,
        &what,
    )?;
    if keys.wal_record_id(&record.name) != *id {
        return Err(crate::error::Error::corrupt(
            &what,
            "record names another WAL file",
        ));
    }
    Ok(record)
}

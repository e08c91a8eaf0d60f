//! ocvault: a content-addressed, deduplicating, encrypted backup store.
//!
//! Backup data flows one way: [`archiver`] walks and reads sources, [`chunker`] cuts them,
//! [`crypto`] names and seals blobs, [`pack`] groups them into packs that [`backend`] stores,
//! and [`index`] and [`snapshot`] files make the result findable. [`restorer`] reverses it.
//!
//! The repository's handle is typed by what it may do: [`repository::Repository`] (open:
//! read files), [`repository::IndexedRepository`] (index loaded: read blobs and trees), and
//! [`session::WriteSession`] / [`session::IndexedWriteSession`] (a backup marker held: store
//! and delete files; only the indexed one stores blobs).

pub mod archiver;
pub mod backend;
pub mod checker;
pub mod chunker;
pub mod cli;
pub mod copy;
pub mod crypto;
pub mod error;
pub mod format;
pub mod id;
pub mod index;
pub mod interrupt;
pub mod locks;
pub mod oplog;
pub mod pack;
pub mod prune;
pub mod repofile;
pub mod repository;
pub mod restorer;
pub mod retention;
pub mod rewrite;
pub mod session;
pub mod snapshot;
pub mod sparse;
pub mod tree;

pub use error::{Error, Result};
pub use id::{BlobId, DataId, Id, IndexFileId, PackId, SnapshotId, TreeId};

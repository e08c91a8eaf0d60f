//! ocvault: a content-addressed, deduplicating, encrypted backup store.
//!
//! Backup data flows one way: [`archiver`] walks and reads sources, [`chunker`] cuts them,
//! [`crypto`] names and seals blobs, [`packer`] groups them into packs (format in [`pack`])
//! that [`backend`] stores, and [`index`] and [`snapshot`] files make the result findable.
//! [`restorer`] reverses it; [`walker`] is the one walk over a snapshot's trees.
//!
//! Each command's logic (selection of snapshots, stats, diff, forget's grouping, key rules,
//! tag, ls, find, and the operations log entry of every writing command) lives in
//! [`commands`], one module a command: an options struct in, a result struct out, nothing
//! printed. The command line itself (parsing, printing, exit codes) is the binary's private
//! `cli` module and no part of this library's API.
//!
//! The repository's handle is typed by what it may do: [`repository::Repository`] (open:
//! read files), [`repository::IndexedRepository`] (index loaded: read blobs and trees), and
//! [`session::WriteSession`] / [`session::IndexedWriteSession`] (a backup marker held: store
//! and delete files; only the indexed one stores blobs).

pub mod archiver;
pub mod backend;
pub mod checker;
pub mod chunker;
pub mod cold;
pub mod commands;
pub mod copy;
pub mod crypto;
pub mod dump;
pub mod error;
pub mod format;
pub mod host;
pub mod id;
pub mod index;
pub mod index_view;
pub mod interrupt;
pub mod locks;
pub mod mount;
pub mod oplog;
pub mod own_trees;
pub mod pack;
pub mod packer;
pub mod periodic;
pub mod prune;
pub mod repair;
pub mod repofile;
pub mod repository;
pub mod restorer;
pub mod retention;
pub mod retention_lock;
pub mod rewrite;
pub mod session;
pub mod shares;
pub mod snapshot;
pub mod sparse;
pub mod tree;
pub mod wal;
pub mod walker;

pub use error::{Error, Result};
pub use id::{BlobId, DataId, Id, IndexFileId, PackId, SnapshotId, TreeId};

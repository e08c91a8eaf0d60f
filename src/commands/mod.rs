//! Each command's logic, one module a command: a function taking an options struct and
//! returning a result struct, printing nothing and reading no process state (the command
//! line an operations log entry records is passed in). The binary's `cli` module parses
//! arguments into these options, prints the results and maps them to exit codes.
//!
//! Commands whose logic is one library call (`restore`, `dump`, `check`, `unlock`, `log`)
//! call [`crate::restorer`], [`crate::dump`], [`crate::checker`], [`crate::session`] and
//! [`crate::oplog`] directly; the modules here add what a command does around such a call
//! (selection, the log entry) or hold the logic that used to live in the CLI.

pub mod copy;
pub mod diff;
pub mod find;
pub mod forget;
pub mod init;
pub mod key;
pub mod ls;
pub mod pitr;
pub mod prune;
pub mod repair;
pub mod rewrite;
pub mod select;
pub mod snapshot;
pub mod snapshots;
pub mod stats;
pub mod tag;
pub mod thaw;

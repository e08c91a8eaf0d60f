//! Shared helpers for the ocvault integration tests (`mod common;`), one file a purpose:
//!
//! * [`env`]: the scratch folder every test writes under, durations and counts.
//! * [`cli`]: [`ocvault`] / [`TestRepo`], run the CLI against a throw-away repository, and
//!   the CLI contract's assertions.
//! * [`json`]: [`last_json`], the one parser of `--json` output.
//! * [`trees`]: [`generate_tree`] / [`mutate_tree`], deterministic, nasty source trees.
//! * [`compare`]: [`assert_trees_equal`] / [`tree_digest`], exact comparison of a restore.
//! * [`sql`]: [`sql_dump`], pg_dump-like SQL text with controlled day-to-day changes.
//! * [`rng`]: the deterministic generator behind them.
//! * [`servers`]: S3 (s3s-fs, and moto for Object Lock and storage classes), SFTP and WebDAV
//!   servers for the backend tests.
//! * [`s3_admin`]: S3 administration outside ocvault (the attacker, a lifecycle transition,
//!   listings with storage classes and versions), through `s3_admin.py` and boto3.
//! * [`s3_cli`]: the CLI against moto (run, init with small packs, a tree, a snapshot).
//! * [`postgres`]: a private PostgreSQL server run as `postgres`, and the scratch folder it
//!   shares with ocvault (archive and restore commands).
//! * [`process`]: commands run under a time limit.
//!
//! Everything is deterministic for a given seed (no wall-clock or random state leaks into
//! contents, names, modes or mtimes).
//!
//! Each test binary compiles all of this and uses a part, so what one binary leaves unused
//! is not dead code: the modules allow it with that reason. `tests/common_selftest.rs` uses
//! the generators and comparisons, so helpers no test uses still show up there.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary compiles every helper and uses only some"
)]

pub mod cli;
pub mod compare;
pub mod env;
pub mod json;
pub mod postgres;
pub mod process;
pub mod rng;
pub mod s3_admin;
pub mod s3_cli;
pub mod servers;
pub mod sql;
pub mod trees;

pub use cli::*;
pub use compare::*;
pub use env::*;
pub use json::*;
pub use rng::*;
pub use sql::*;
pub use trees::*;

//! One error type for the library. The exit codes are documented in README.md; the binary's
//! `cli::outcome` maps errors to them.

use std::fmt;

/// Exit codes, documented in README.md ("Exit codes").
pub mod exit {
    pub const OK: i32 = 0;
    pub const FATAL: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const INCOMPLETE: i32 = 3;
    pub const DAMAGE: i32 = 4;
    pub const TOO_OLD: i32 = 5;
    pub const NO_REPOSITORY: i32 = 10;
    pub const UNSUPPORTED_VERSION: i32 = 11;
    pub const WRONG_PASSWORD: i32 = 12;
    /// Packs the command needs are in an archive storage class: `ocvault thaw` first.
    pub const COLD: i32 = 13;
    /// The repository was opened with a write-only key, and the command must read what such
    /// a key cannot (file contents, names, trees) or would delete backups.
    pub const WRITE_ONLY: i32 = 14;
    /// SIGINT (128 + 2) and SIGTERM (128 + 15), as shells report a process they ended.
    pub const INTERRUPTED_SIGINT: i32 = 130;
    pub const INTERRUPTED_SIGTERM: i32 = 143;
    /// `wal-fetch` could not fetch a file for a reason other than "never archived": above 125,
    /// so PostgreSQL stops recovery instead of ending it on an incomplete archive.
    pub const WAL_FETCH_FAILED: i32 = 200;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no ocvault repository at {0}")]
    NoRepository(String),
    #[error("a repository already exists at {0}")]
    RepositoryExists(String),
    #[error("wrong password: no key in the repository opens with it")]
    WrongPassword,
    /// Key shares that cannot open the repository: too few, a wrong share password, shares
    /// of another split (exit 12, like a wrong password).
    #[error("{0}")]
    ShareRefused(String),
    #[error("repository format version {found} is not supported (this ocvault reads versions 1 to {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error(
        "key file format version {found} is not supported (this ocvault reads key file versions 1 and 2)"
    )]
    UnsupportedKeyFileVersion { found: u32 },
    /// A repository of an older format version cannot hold what this command stores.
    #[error("{0}")]
    NeedsNewerFormat(String),
    /// `wal-fetch`: the repository holds no record of this WAL file.
    #[error("WAL file {0} is not archived in this repository")]
    WalNotArchived(String),
    /// `wal-fetch`: any other failure, after retrying (exit 200).
    #[error("cannot fetch WAL file {name}: {why}")]
    WalFetchFailed { name: String, why: String },
    #[error("{0}")]
    Usage(String),
    #[error("corrupt {what}: {why}")]
    Corrupt { what: String, why: String },
    #[error("backend: {0}")]
    Backend(String),
    /// A stored file that is not there (the storage said so).
    #[error("backend: {0}: not found")]
    NotFound(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
    /// A folder or bucket that holds something else: a restic or borg repository, or files
    /// whose `config` is not ocvault's.
    #[error("{location} is not an ocvault repository{hint}")]
    NotOcvault { location: String, hint: String },
    /// Packs a command must read are in an archive storage class and not thawed (exit 13).
    /// The message is the first line; the CLI prints one line per pack after it.
    #[error("{}", cold_message(snapshot.as_deref(), packs))]
    Cold {
        /// The snapshot the packs belong to, when the command knows it.
        snapshot: Option<String>,
        packs: Vec<ColdPack>,
    },
    /// A read met a file in an archive storage class that no check before it caught (`copy`,
    /// `wal-fetch`, `pitr` over archived packs).
    #[error("{0} is in cold storage (an S3 archive class): thaw it first (`ocvault thaw`, or S3's restore for WAL), then retry")]
    ColdRead(String),
    /// A write-only key cannot do this (exit 14): the operation is named.
    #[error("this key is write-only: it cannot {0} (use a full key or key shares)")]
    WriteOnly(String),
    /// SIGINT or SIGTERM arrived; the command stopped and cleaned up.
    #[error("interrupted by {0}; stopped without saving")]
    Interrupted(&'static str),
}

impl Error {
    pub fn corrupt(what: impl fmt::Display, why: impl fmt::Display) -> Self {
        Error::Corrupt {
            what: what.to_string(),
            why: why.to_string(),
        }
    }

    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    pub fn usage(msg: impl fmt::Display) -> Self {
        Error::Usage(msg.to_string())
    }

    pub fn other(msg: impl fmt::Display) -> Self {
        Error::Other(msg.to_string())
    }

    /// Names the snapshot in a [`Error::Cold`] (other errors pass unchanged).
    pub fn for_snapshot(self, snapshot: &str) -> Self {
        match self {
            Error::Cold { packs, .. } => Error::Cold {
                snapshot: Some(snapshot.to_string()),
                packs,
            },
            e => e,
        }
    }
}

fn cold_message(snapshot: Option<&str>, packs: &[ColdPack]) -> String {
    let bytes: u64 = packs.iter().map(|p| p.size).sum();
    let (of, id) = match snapshot {
        Some(s) => (format!("snapshot {s}"), s),
        None => ("this snapshot".to_string(), "ID"),
    };
    format!(
        "{} packs ({} MiB) of {of} are in cold storage: run `ocvault thaw {id}` (then retry)",
        packs.len(),
        mib(bytes)
    )
}

impl From<opendal::Error> for Error {
    fn from(e: opendal::Error) -> Self {
        // opendal's Display carries context (service, path); keep it on one line.
        Error::Backend(e.to_string().replace('\n', " "))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A pack that cannot be read now.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ColdPack {
    pub path: String,
    pub size: u64,
    pub storage_class: String,
    /// "cold" (no restore requested) or "thawing" (requested, not finished).
    pub state: &'static str,
}

impl std::fmt::Display for ColdPack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            "thawing" => "thaw in progress",
            s => s,
        };
        write!(
            f,
            "{} ({}, {} MiB, {state})",
            self.path,
            self.storage_class,
            mib(self.size)
        )
    }
}

/// Bytes in MiB with one decimal, as the messages print them.
pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1u64 << 20) as f64)
}

//! The operations log: every operation on the repository (reads included) adds one sealed,
//! immutable entry under `log/`, named by its hash like every other file, so concurrent
//! writers never conflict and a crash leaves either a whole entry or none. From format
//! version 4 each entry names the log's heads when it was written ([`heads`]), so a deleted
//! entry is found by whoever names it ([`missing`]).

mod heads;

pub use heads::{cache_file, heads};

use crate::error::Result;
use crate::format::{LogEntry, Snapshot};
use crate::id::{Id, SnapshotId};
use crate::repository::Repository;
use crate::session::WriteSession;

/// Masks what looks secret in an argument: the password of a URL (`scheme://user:secret@host`)
/// and the value of `password=`-like options.
pub fn redact(arg: &str) -> String {
    let mut out = arg.to_string();
    let mut search = 0;
    while let Some(p) = out[search..].find("://").map(|i| i + search + 3) {
        let rest = &out[p..];
        let end = rest.find(['/', ' ', '\'', '"']).unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                out.replace_range(p + colon + 1..p + at, "***");
            }
        }
        search = p;
    }
    for key in ["password=", "passwd=", "secret=", "token=", "PGPASSWORD="] {
        let mut from = 0;
        while let Some(i) = out[from..]
            .to_ascii_lowercase()
            .find(&key.to_ascii_lowercase())
            .map(|i| i + from)
        {
            let start = i + key.len();
            let end = out[start..]
                .find([' ', '&', ';', '\'', '"'])
                .map(|e| e + start)
                .unwrap_or(out.len());
            out.replace_range(start..end, "***");
            from = start + 3;
        }
    }
    out
}

/// The arguments an entry records, with secrets masked: built only through [`redact`], so no
/// caller can log an unmasked password. The library never reads the process's argv itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandLine(Vec<String>);

impl CommandLine {
    /// Masks each argument; arguments that are not UTF-8 (a source path can be one) are kept
    /// lossily.
    pub fn new<I, S>(args: I) -> CommandLine
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        CommandLine(
            args.into_iter()
                .map(|a| redact(&a.as_ref().to_string_lossy()))
                .collect(),
        )
    }

    pub fn arguments(&self) -> &[String] {
        &self.0
    }
}

/// Adds one entry and returns its id. It names the log's current heads as its parents, and
/// the key file or the key shares that opened the repository.
pub fn record(
    session: &WriteSession,
    command_line: &CommandLine,
    operation: &str,
    result: &str,
    snapshots: Vec<SnapshotId>,
) -> Result<crate::id::Id> {
    let repo = session.repo();
    let entry = LogEntry {
        time_unix_ns: crate::host::now_ns(),
        hostname: crate::host::hostname(),
        username: crate::host::username(),
        operation: operation.to_string(),
        arguments: command_line.0.clone(),
        result: result.to_string(),
        snapshots,
        parents: heads(repo)?,
        key_id: repo.key_id(),
        approvals: repo.approvals().to_vec(),
    };
    session.save_file(&entry)
}

/// Adds one entry for a command that only read the repository (restore, dump, ls, ...),
/// when it finished, whether it succeeded (`outcome` is the result text: "ok",
/// "incomplete") or failed. Returns a warning when the entry could not be written: a
/// failure to log never fails the command.
pub fn record_read(
    repo: &Repository,
    command_line: &CommandLine,
    operation: &str,
    outcome: std::result::Result<&str, &crate::Error>,
    snapshots: Vec<SnapshotId>,
) -> Option<String> {
    let result = match outcome {
        Ok(r) => r.to_string(),
        Err(e) => format!("error: {e}"),
    };
    let session = match repo.write_session() {
        Ok(s) => s,
        Err(e) => return Some(format!("cannot write the operations log: {e}")),
    };
    record_or_warn(&session, command_line, operation, &result, snapshots)
}

/// Adds one entry for an operation that succeeded. A failure to log never fails the operation:
/// it comes back as a warning for the caller to show.
pub fn record_or_warn(
    session: &WriteSession,
    command_line: &CommandLine,
    operation: &str,
    result: &str,
    snapshots: Vec<SnapshotId>,
) -> Option<String> {
    record(session, command_line, operation, result, snapshots)
        .err()
        .map(|e| format!("cannot write the operations log: {e}"))
}

/// Adds one entry for an operation that failed. A failure to log is dropped: it most likely
/// has the same cause (full disk, read-only repository) as `error`, and that error must stay
/// the one line the user sees.
pub fn record_failure(
    session: &WriteSession,
    command_line: &CommandLine,
    operation: &str,
    error: &crate::Error,
) {
    let _ = record(
        session,
        command_line,
        operation,
        &format!("error: {error}"),
        Vec::new(),
    );
}

/// Like [`record_failure`], for a command that failed before it had a write session: one is
/// started for the entry (a log entry points at nothing a prune could delete, so the session
/// of the open repository is enough).
pub fn record_failure_unindexed(
    repo: &Repository,
    command_line: &CommandLine,
    operation: &str,
    error: &crate::Error,
) {
    if let Ok(session) = repo.write_session() {
        record_failure(&session, command_line, operation, error);
    }
}

/// Every intact entry, oldest first, and the damaged or unreadable entries (by id) with what
/// is wrong with each. Unlike other files, an entry that cannot be read at all (a permission
/// error, an I/O error) is listed as damaged too: the log must show every entry it can and
/// name the rest, not stop at the first. An entry deleted between listing and reading is left
/// out (a prune of the log does not exist, so only an outside hand does that).
pub fn list(repo: &Repository) -> Result<crate::repository::Loaded<LogEntry>> {
    let ids: Vec<crate::id::Id> = repo
        .backend()
        .list_ids(crate::backend::FileKind::Log)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let loaded = repo.load_files::<LogEntry>(&ids);
    let mut all = crate::repository::Loaded {
        intact: Vec::new(),
        damaged: Vec::new(),
    };
    for (id, res) in ids.into_iter().zip(loaded) {
        match res {
            Ok(entry) => all.intact.push((id, entry)),
            Err(e) if crate::backend::is_not_found(&e) => {}
            Err(e) => all.damaged.push((id, e)),
        }
    }
    all.intact
        .sort_by(|a, b| a.1.time_unix_ns.cmp(&b.1.time_unix_ns).then(a.0.cmp(&b.0)));
    all.damaged.sort_by_key(|d| d.0);
    Ok(all)
}

/// An entry that an entry or a snapshot names but that is not in `log/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub id: Id,
    /// Who names it: "log entry <short id>" or "snapshot <short id>", sorted.
    pub named_by: Vec<String>,
}

impl Missing {
    /// "log entry 1a2b3c4d is missing (named by log entry ... / snapshot ...)".
    pub fn describe(&self) -> String {
        format!(
            "log entry {} is missing (named by {})",
            self.id.short(),
            self.named_by.join(" / ")
        )
    }
}

/// The entries named as a parent by an intact entry, or as a log head by a snapshot, that
/// are not among `present` (every id listed in `log/`, damaged ones included: those are
/// damaged, not missing).
/// `parents` is each intact entry's id and the parents it names.
pub fn missing<'a>(
    present: &[Id],
    parents: impl IntoIterator<Item = (&'a Id, &'a [Id])>,
    snapshots: &[(SnapshotId, Snapshot)],
) -> Vec<Missing> {
    let present: std::collections::HashSet<&Id> = present.iter().collect();
    let mut named: std::collections::BTreeMap<Id, Vec<String>> = Default::default();
    let entry_names = parents.into_iter().flat_map(|(id, parents)| {
        parents
            .iter()
            .map(move |p| (*p, format!("log entry {}", id.short())))
    });
    let snapshot_names = snapshots.iter().flat_map(|(id, s)| {
        s.log_heads
            .iter()
            .map(move |h| (*h, format!("snapshot {}", id.short())))
    });
    for (id, by) in entry_names.chain(snapshot_names) {
        if !present.contains(&id) {
            named.entry(id).or_default().push(by);
        }
    }
    named
        .into_iter()
        .map(|(id, mut named_by)| {
            named_by.sort();
            named_by.dedup();
            Missing { id, named_by }
        })
        .collect()
}

/// Each entry's id and the parents it names, for [`missing`].
pub fn parents_of(entries: &[(Id, LogEntry)]) -> impl Iterator<Item = (&Id, &[Id])> {
    entries.iter().map(|(id, e)| (id, e.parents.as_slice()))
}

/// What is wrong with a damaged entry, without the file name the caller shows beside it.
pub fn damage_reason(e: &crate::Error) -> String {
    match e {
        crate::Error::Corrupt { why, .. } => why.clone(),
        e => format!("cannot read: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{missing, parents_of, redact, CommandLine, Missing};
    use crate::format::{LogEntry, Snapshot};
    use crate::id::{Id, SnapshotId};

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    fn entry(parents: &[u8]) -> LogEntry {
        LogEntry {
            parents: parents.iter().map(|n| id(*n)).collect(),
            ..LogEntry::default()
        }
    }

    /// Named but absent ids are missing, with who names them, sorted; present ones (damaged
    /// or not) are not.
    #[test]
    fn missing_entries_are_named_with_who_names_them() {
        // 1 <- 2 <- 4 and 1 <- 3 <- 4 (a fork); 1 and 3 are gone, 5 is present but damaged.
        let entries = vec![(id(2), entry(&[1])), (id(4), entry(&[2, 3, 5]))];
        let snap = Snapshot {
            log_heads: vec![id(1), id(4)],
            ..test_snapshot()
        };
        let snapshots = vec![(SnapshotId(id(9)), snap)];
        let present = [id(2), id(4), id(5)];
        let got = missing(&present, parents_of(&entries), &snapshots);
        assert_eq!(
            got,
            vec![
                Missing {
                    id: id(1),
                    named_by: vec![
                        format!("log entry {}", id(2).short()),
                        format!("snapshot {}", id(9).short()),
                    ],
                },
                Missing {
                    id: id(3),
                    named_by: vec![format!("log entry {}", id(4).short())],
                },
            ]
        );
        assert_eq!(
            got[1].describe(),
            "log entry 03030303 is missing (named by log entry 04040404)"
        );
        assert!(missing(
            &[id(1), id(2), id(3), id(4), id(5)],
            parents_of(&entries),
            &snapshots
        )
        .is_empty());
    }

    fn test_snapshot() -> Snapshot {
        Snapshot {
            time_unix_ns: 0,
            hostname: String::new(),
            username: String::new(),
            paths: vec![],
            tags: vec![],
            tree: crate::id::TreeId(id(0)),
            parent: None,
            excludes: vec![],
            incomplete: false,
            summary: Default::default(),
            program_version: String::new(),
            postgres: None,
            log_heads: vec![],
        }
    }

    #[test]
    fn secrets_are_masked() {
        assert_eq!(
            redact("pg_dump postgres://app:hunter2@db:5432/x"),
            "pg_dump postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("--opt password=abc def"), "--opt password=*** def");
        assert_eq!(redact("plain"), "plain");
        assert_eq!(redact("s3://bucket/prefix"), "s3://bucket/prefix");
    }

    #[test]
    fn command_lines_are_masked_once_and_for_all() {
        let args = [
            "snapshot",
            "--command",
            "pg_dump postgres://app:hunter2@db/x",
        ];
        let line = CommandLine::new(args);
        assert_eq!(line.arguments()[2], "pg_dump postgres://app:***@db/x");
        // Masking what is already masked changes nothing.
        assert_eq!(CommandLine::new(line.arguments()), line);
    }
}

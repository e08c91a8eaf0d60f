//! The operations log: every operation that changes the repository adds one sealed, immutable
//! entry under `log/`, named by its hash like every other file, so concurrent writers never
//! conflict and a crash leaves either a whole entry or none.

use crate::error::Result;
use crate::format::LogEntry;
use crate::id::SnapshotId;
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

/// Adds one entry; failures to log are reported but never fail the operation itself.
pub fn record(session: &WriteSession, operation: &str, result: &str, snapshots: Vec<SnapshotId>) {
    if let Err(e) = try_record(session, operation, result, snapshots) {
        eprintln!("ocvault: warning: cannot write the operations log: {e}");
    }
}

/// Adds one entry for an operation that failed. A failure to log is not reported: it most
/// likely has the same cause (full disk, read-only repository) as the error the user sees,
/// and that error must stay the one line on standard error.
pub fn record_failure(session: &WriteSession, operation: &str, error: &crate::Error) {
    let _ = try_record(session, operation, &format!("error: {error}"), Vec::new());
}

/// Like [`record_failure`], for a command that failed before it had a write session: one is
/// started for the entry (a log entry points at nothing a prune could delete, so the session
/// of the open repository is enough).
pub fn record_failure_unindexed(repo: &Repository, operation: &str, error: &crate::Error) {
    if let Ok(session) = repo.write_session() {
        record_failure(&session, operation, error);
    }
}

fn try_record(
    session: &WriteSession,
    operation: &str,
    result: &str,
    snapshots: Vec<SnapshotId>,
) -> Result<()> {
    let entry = LogEntry {
        time_unix_ns: crate::snapshot::now_ns(),
        hostname: crate::snapshot::hostname(),
        username: crate::snapshot::username(),
        operation: operation.to_string(),
        // args_os: `args` panics on an argument that is not UTF-8 (a source path can be one).
        arguments: std::env::args_os()
            .skip(1)
            .map(|a| redact(&a.to_string_lossy()))
            .collect(),
        result: result.to_string(),
        snapshots,
    };
    session.save_file(&entry).map(|_| ())
}

/// Every intact entry, oldest first, and the damaged entries with what is wrong with each.
pub fn list(repo: &Repository) -> Result<crate::repository::Loaded<LogEntry>> {
    let mut all = repo.load_all::<LogEntry>()?;
    all.intact
        .sort_by(|a, b| a.1.time_unix_ns.cmp(&b.1.time_unix_ns).then(a.0.cmp(&b.0)));
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::redact;

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
}

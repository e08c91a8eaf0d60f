//! `snapshot`: the archiver run plus what a command adds around it: the dump command whose
//! output is backed up, exclude files, and the operations log entry.

use crate::archiver::{self, Progress, SnapshotOptions, SnapshotOutcome, StreamSource};
use crate::error::{Error, Result};
use crate::oplog::CommandLine;
use crate::repository::Repository;
use std::path::Path;

/// Makes and saves the snapshot and logs it (a failure too, unless it was refused before it
/// wrote anything). A failure to log comes back in the outcome's warnings.
pub fn snapshot(
    repo: &Repository,
    opts: SnapshotOptions,
    progress: &Progress,
    command_line: &CommandLine,
) -> Result<SnapshotOutcome> {
    let log_failure =
        |e: &Error| crate::oplog::record_failure_unindexed(repo, command_line, "snapshot", e);
    // Blobs only in archived packs are stored again, hot; unless the user allows references
    // to them, or new data packs go to an archive class themselves, where that would store
    // them again every time.
    let archive_data_class = (repo.config().storage.data_storage_class.as_deref())
        .is_some_and(crate::cold::is_archive_class);
    let loaded = if archive_data_class || opts.reuse_cold_packs {
        repo.load_index()
    } else {
        repo.load_index_tiered()
    };
    let mut indexed = loaded.inspect_err(log_failure)?;
    let session = indexed.write_session().inspect_err(log_failure)?;
    match archiver::snapshot(&session, opts, progress) {
        Ok(mut out) => {
            let result = if out.snapshot.incomplete {
                "incomplete"
            } else {
                "ok"
            };
            out.warnings.extend(crate::oplog::record_or_warn(
                &session,
                command_line,
                "snapshot",
                result,
                vec![out.id],
            ));
            Ok(out)
        }
        Err(e) => {
            if !matches!(e, Error::Usage(_)) {
                crate::oplog::record_failure(&session, command_line, "snapshot", &e);
            }
            Err(e)
        }
    }
}

/// Exclude globs from a file: one a line, blank lines and `#` comments left out.
pub fn read_exclude_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Starts a dump command (split as a shell would, or run by `sh -c` with `shell`) whose
/// standard output is backed up as the file `name`. Its standard error passes through; its
/// exit status is checked after its output has been read in full, so a failed dump never
/// yields a snapshot.
pub fn command_source(cmd: &str, shell: bool, name: &str) -> Result<StreamSource> {
    let argv: Vec<String> = if shell {
        vec!["sh".into(), "-c".into(), cmd.into()]
    } else {
        shell_words::split(cmd).map_err(|e| Error::usage(format!("cannot parse --command: {e}")))?
    };
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| Error::usage("--command is empty"))?;
    let mut child = std::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| {
            Error::other(format!(
                "cannot run command {prog:?}: {e}; no snapshot saved"
            ))
        })?;
    let stdout = child.stdout.take().expect("piped stdout");
    let prog = prog.clone();
    Ok(StreamSource {
        name: name.to_string(),
        reader: Box::new(stdout),
        finish: Some(Box::new(move || {
            let status = child
                .wait()
                .map_err(|e| Error::other(format!("waiting for {prog}: {e}")))?;
            if status.success() {
                Ok(())
            } else {
                Err(Error::other(format!(
                    "command {prog} failed ({status}); no snapshot saved"
                )))
            }
        })),
    })
}

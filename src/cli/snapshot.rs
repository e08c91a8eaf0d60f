use super::GlobalOptions;
use crate::archiver::{self, ParentChoice, Progress, SnapshotOptions, StreamSource};
use crate::error::{exit, Error, Result};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Files and folders to back up
    paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Host name to record (default: this machine's)
    #[arg(long)]
    host: Option<String>,
    /// Time to record instead of now (RFC 3339)
    #[arg(long, value_name = "RFC3339")]
    time: Option<String>,
    /// Leave out paths matching this glob (repeatable); without '/', matches names anywhere
    #[arg(long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Read exclude globs from this file, one a line (# comments)
    #[arg(long, value_name = "FILE")]
    exclude_file: Vec<PathBuf>,
    /// Compare against this snapshot instead of the latest of the same host and paths
    #[arg(long, value_name = "ID")]
    parent: Option<String>,
    /// Read every file again, comparing against no parent
    #[arg(long, conflicts_with = "parent")]
    force: bool,
    /// Back up standard input as one file
    #[arg(long)]
    stdin: bool,
    /// Name of the file standard input (or the command's output) is stored as
    #[arg(long, value_name = "NAME", default_value = "stdin")]
    stdin_filename: String,
    /// Run this command (without a shell) and back up its standard output, e.g. 'pg_dump mydb';
    /// the snapshot is saved only if it exits 0
    #[arg(long, value_name = "CMD", conflicts_with = "stdin")]
    command: Option<String>,
    /// Run --command through `sh -c`
    #[arg(long, requires = "command")]
    command_shell: bool,
}

/// Starts the dump command; its standard error passes through, its exit status is checked
/// after its output has been read in full.
fn command_source(cmd: &str, shell: bool, name: &str) -> Result<StreamSource> {
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

pub fn run(g: &GlobalOptions, a: Args) -> Result<i32> {
    let mut excludes = a.excludes.clone();
    for f in &a.exclude_file {
        let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
        excludes.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    if a.paths.is_empty() && !a.stdin && a.command.is_none() {
        return Err(Error::usage(
            "nothing to back up: give paths, --stdin or --command",
        ));
    }
    let time = a
        .time
        .as_deref()
        .map(crate::snapshot::parse_time)
        .transpose()?;
    let repo = g.open()?;
    crate::interrupt::install()?;
    let stream = match &a.command {
        Some(cmd) => Some(command_source(cmd, a.command_shell, &a.stdin_filename)?),
        None => a.stdin.then(|| StreamSource {
            name: a.stdin_filename.clone(),
            reader: Box::new(std::io::stdin()),
            finish: None,
        }),
    };
    let opts = SnapshotOptions {
        paths: a.paths,
        stream,
        tags: a.tags,
        host: a.host,
        time_unix_ns: time,
        excludes,
        parent: if a.force {
            ParentChoice::None
        } else {
            a.parent.map(ParentChoice::Id).unwrap_or(ParentChoice::Auto)
        },
    };
    let progress = Arc::new(Progress::default());
    let p = progress.clone();
    let ticker = super::Ticker::start(g.show_progress(), None, move || {
        (
            p.bytes.load(Relaxed),
            format!(
                "{} files, {} added",
                p.files.load(Relaxed),
                super::human_bytes(p.bytes_added.load(Relaxed))
            ),
        )
    });
    // With --json: one status line a second on standard output, then the summary line.
    let json_status = g.json.then(|| {
        let p = progress.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let started = std::time::Instant::now();
        let h = std::thread::spawn(move || {
            let mut last = std::time::Instant::now();
            while !st.load(Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(50));
                if last.elapsed() >= std::time::Duration::from_secs(1) {
                    last = std::time::Instant::now();
                    super::print_json(&serde_json::json!({
                        "message_type": "status",
                        "seconds_elapsed": started.elapsed().as_secs_f64(),
                        "files_done": p.files.load(Relaxed),
                        "bytes_done": p.bytes.load(Relaxed),
                        "bytes_added": p.bytes_added.load(Relaxed),
                    }));
                }
            }
        });
        (stop, h)
    });
    let log_failure = |e: &Error| crate::oplog::record_failure_unindexed(&repo, "snapshot", e);
    let mut indexed = repo.load_index().inspect_err(log_failure)?;
    let session = indexed.write_session().inspect_err(log_failure)?;
    let result = archiver::snapshot(&session, opts, &progress);
    if let Some((stop, h)) = json_status {
        stop.store(true, Relaxed);
        let _ = h.join();
    }
    let out = match result {
        Ok(out) => {
            let result = if out.snapshot.incomplete {
                "incomplete"
            } else {
                "ok"
            };
            crate::oplog::record(&session, "snapshot", result, vec![out.id]);
            out
        }
        Err(e) => {
            // A snapshot refused before it wrote anything (bad arguments) changed nothing.
            if !matches!(e, Error::Usage(_)) {
                crate::oplog::record_failure(&session, "snapshot", &e);
            }
            return Err(e);
        }
    };
    drop(ticker);
    for w in &out.warnings {
        eprintln!("ocvault: warning: {w}");
    }
    let s = &out.snapshot.summary;
    if g.json {
        super::print_json(&serde_json::json!({
            "message_type": "summary",
            "snapshot_id": out.id.to_hex(),
            "files_new": s.files_new,
            "files_changed": s.files_changed,
            "files_unmodified": s.files_unmodified,
            "dirs": s.dirs,
            "bytes_read": s.bytes_read,
            "bytes_total": s.bytes_total,
            "blobs_added": s.blobs_added,
            "bytes_added": s.bytes_added,
            "errors": s.errors,
            "incomplete": out.snapshot.incomplete,
            "duration_seconds": s.duration_ms as f64 / 1000.0,
        }));
    } else {
        println!(
            "files: {} new, {} changed, {} unmodified; {} read of {}",
            s.files_new,
            s.files_changed,
            s.files_unmodified,
            super::human_bytes(s.bytes_read),
            super::human_bytes(s.bytes_total)
        );
        println!(
            "added to the repository: {} ({} blobs)",
            super::human_bytes(s.bytes_added),
            s.blobs_added
        );
        println!(
            "snapshot {} saved in {:.2}s",
            out.id.short(),
            s.duration_ms as f64 / 1000.0
        );
    }
    if out.snapshot.incomplete {
        eprintln!(
            "ocvault: snapshot {} is incomplete: {} source(s) could not be read",
            out.id.short(),
            s.errors
        );
        return Ok(exit::INCOMPLETE);
    }
    Ok(exit::OK)
}

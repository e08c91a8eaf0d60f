use super::{GlobalOptions, Outcome};
use indicatif::HumanBytes;
use ocvault::archiver::{ParentChoice, Progress, SnapshotOptions, SnapshotOutcome, StreamSource};
use ocvault::commands::snapshot;
use ocvault::error::{Error, Result};
use ocvault::periodic::Periodic;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Files and folders to back up
    pub(super) paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub(super) tags: Vec<String>,
    /// Host name to record (default: this machine's)
    #[arg(long)]
    pub(super) host: Option<String>,
    /// Time to record instead of now (RFC 3339)
    #[arg(long, value_name = "RFC3339")]
    time: Option<String>,
    /// Leave out paths matching this glob (repeatable); without '/', matches names anywhere
    #[arg(long = "exclude", value_name = "GLOB")]
    pub(super) excludes: Vec<String>,
    /// Read exclude globs from this file, one a line (# comments)
    #[arg(long, value_name = "FILE")]
    exclude_file: Vec<PathBuf>,
    /// Compare against this snapshot instead of the latest of the same host and paths
    #[arg(long, value_name = "ID")]
    parent: Option<String>,
    /// Read every file again, comparing against no parent
    #[arg(long, conflicts_with = "parent")]
    force: bool,
    /// S3: deduplicate against data packs in an archive class (Glacier, Deep Archive) rather
    /// than storing their blobs again; restoring this snapshot may then need `thaw`
    #[arg(long)]
    reuse_cold_packs: bool,
    /// Back up standard input as one file
    #[arg(long)]
    pub(super) stdin: bool,
    /// Name of the file standard input (or the command's output) is stored as
    #[arg(long, value_name = "NAME", default_value = "stdin")]
    stdin_filename: String,
    /// Run this command (without a shell) and back up its standard output, e.g. 'pg_dump mydb';
    /// the snapshot is saved only if it exits 0
    #[arg(long, value_name = "CMD", conflicts_with = "stdin")]
    pub(super) command: Option<String>,
    /// Run --command through `sh -c`
    #[arg(long, requires = "command")]
    command_shell: bool,
}

impl Args {
    /// Usage errors found before the repository is opened, and the options for the archiver.
    fn options(self) -> Result<SnapshotOptions> {
        let mut excludes = self.excludes;
        for f in &self.exclude_file {
            excludes.extend(snapshot::read_exclude_file(f)?);
        }
        if self.paths.is_empty() && !self.stdin && self.command.is_none() {
            return Err(Error::usage(
                "nothing to back up: give paths, --stdin or --command",
            ));
        }
        let time_unix_ns = self
            .time
            .as_deref()
            .map(ocvault::snapshot::parse_time)
            .transpose()?;
        Ok(SnapshotOptions {
            reuse_cold_packs: self.reuse_cold_packs,
            paths: self.paths,
            // The source is opened (the command started) only once the repository is open.
            stream: None,
            tags: self.tags,
            host: self.host,
            time_unix_ns,
            excludes,
            parent: if self.force {
                ParentChoice::None
            } else {
                self.parent
                    .map(ParentChoice::Id)
                    .unwrap_or(ParentChoice::Auto)
            },
        })
    }
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let (command, shell, stdin, name) = (
        a.command.clone(),
        a.command_shell,
        a.stdin,
        a.stdin_filename.clone(),
    );
    let mut opts = a.options()?;
    let repo = g.open()?;
    ocvault::interrupt::install()?;
    opts.stream = match &command {
        Some(cmd) => Some(snapshot::command_source(cmd, shell, &name)?),
        None => stdin.then(|| StreamSource {
            name,
            reader: Box::new(std::io::stdin()),
            finish: None,
        }),
    };
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(g, &progress);
    let result = snapshot::snapshot(&repo, opts, &progress, &super::command_line());
    drop(display);
    let out = result?;
    super::metrics::snapshot_done(&repo, &out);
    super::warn_all(&out.warnings);
    // Seconds from the command's start to the first file opened (none opened: null).
    let startup = progress
        .first_file_opened
        .get()
        .map(|t| t.duration_since(started).as_secs_f64());
    print_summary(g.json, &out, startup, repo.backend().cache_stats());
    if out.snapshot.incomplete {
        eprintln!(
            "ocvault: snapshot {} is incomplete: {} source(s) could not be read",
            out.id.short(),
            out.snapshot.summary.errors
        );
        return Ok(Outcome::Incomplete);
    }
    Ok(Outcome::Success)
}

/// The progress bar on a terminal, and with --json one status line a second on standard
/// output; both stop when dropped.
struct ProgressDisplay {
    _ticker: super::Ticker,
    _json_status: Option<Periodic>,
}

impl ProgressDisplay {
    fn start(g: &GlobalOptions, progress: &Arc<Progress>) -> ProgressDisplay {
        let p = progress.clone();
        let ticker = super::Ticker::start(g.show_progress(), None, move || {
            (
                p.bytes.load(Relaxed),
                format!(
                    "{} files, {} added",
                    p.files.load(Relaxed),
                    HumanBytes(p.bytes_added.load(Relaxed))
                ),
            )
        });
        let json_status = g.json.then(|| {
            let p = progress.clone();
            let started = std::time::Instant::now();
            Periodic::start(
                "json-status",
                std::time::Duration::from_secs(1),
                move || {
                    super::print_json(&serde_json::json!({
                        "message_type": "status",
                        "seconds_elapsed": started.elapsed().as_secs_f64(),
                        "files_done": p.files.load(Relaxed),
                        "bytes_done": p.bytes.load(Relaxed),
                        "bytes_added": p.bytes_added.load(Relaxed),
                    }));
                },
            )
        });
        ProgressDisplay {
            _ticker: ticker,
            _json_status: json_status,
        }
    }
}

fn print_summary(
    json: bool,
    out: &SnapshotOutcome,
    startup_seconds: Option<f64>,
    cache: ocvault::backend::disk_cache::CacheStats,
) {
    let s = &out.snapshot.summary;
    if json {
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
            "restored_from_cold_blobs": out.restored_blobs,
            "restored_from_cold_bytes": out.restored_bytes,
            "duration_seconds": s.duration_ms as f64 / 1000.0,
            "startup_seconds": startup_seconds,
            // Remote repositories: what had to be downloaded (the local cache serves the rest).
            "storage_downloads": cache,
        }));
        return;
    }
    println!(
        "files: {} new, {} changed, {} unmodified; {} read of {}",
        s.files_new,
        s.files_changed,
        s.files_unmodified,
        HumanBytes(s.bytes_read),
        HumanBytes(s.bytes_total)
    );
    println!(
        "added to the repository: {} ({} blobs)",
        HumanBytes(s.bytes_added),
        s.blobs_added
    );
    if out.restored_blobs > 0 {
        println!(
            "re-stored from cold packs: {} blobs, {} MiB",
            out.restored_blobs,
            ocvault::error::mib(out.restored_bytes)
        );
    }
    println!(
        "snapshot {} saved in {:.2}s",
        out.id.short(),
        s.duration_ms as f64 / 1000.0
    );
}

use super::{GlobalOptions, Outcome};
use ocvault::error::Result;
use ocvault::restorer::{self, RestoreOptions, RestoreProgress};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot id (any unique prefix) or "latest"
    snapshot: String,
    /// Folder to restore into (created; must be empty unless --overwrite)
    #[arg(long, short)]
    target: PathBuf,
    /// Restore only paths matching this glob, relative to the snapshot root (repeatable)
    #[arg(long = "include", value_name = "GLOB")]
    includes: Vec<String>,
    /// Restore into a non-empty folder, replacing files of the same name
    #[arg(long)]
    overwrite: bool,
    /// Read every restored file back and check it against the snapshot
    #[arg(long)]
    verify: bool,
}

/// Restores, then adds the operations-log entry (who restored which snapshot, and with
/// which key shares).
pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    super::logged_read(g, "restore", "restore snapshots", |repo, snapshots| {
        ocvault::interrupt::install()?;
        let (id, snap) = repo.find_snapshot(&a.snapshot)?;
        snapshots.push(id);
        restore(g, repo, a, id, snap)
    })
}

fn restore(
    g: &GlobalOptions,
    repo: &ocvault::repository::Repository,
    a: Args,
    id: ocvault::SnapshotId,
    snap: ocvault::format::Snapshot,
) -> Result<Outcome> {
    let repo = repo.load_index_tiered()?;
    let progress = Arc::new(RestoreProgress::default());
    let p = progress.clone();
    let ticker = super::Ticker::start(
        g.show_progress(),
        Some(snap.summary.bytes_total),
        move || (p.bytes.load(Relaxed), String::new()),
    );
    let opts = RestoreOptions {
        includes: a.includes,
        overwrite: a.overwrite,
        verify: a.verify,
    };
    let started = std::time::Instant::now();
    let summary = restorer::restore(&repo, &snap.tree, &a.target, &opts, &progress)
        .map_err(|e| super::cold_json(g, e.for_snapshot(&id.short())))?;
    drop(ticker);
    for w in &summary.warnings {
        eprintln!("ocvault: warning: {w}");
    }
    for m in &summary.mismatches {
        eprintln!("ocvault: verify: {m}");
    }
    if g.json {
        super::print_json(&serde_json::json!({
            "verified_files": summary.verified_files,
            "mismatches": summary.mismatches,
            "snapshot_id": id.to_hex(),
            "files": summary.files,
            "dirs": summary.dirs,
            "bytes": summary.bytes,
            "warnings": summary.warnings,
            "not_restored": summary.not_restored,
            "duration_seconds": started.elapsed().as_secs_f64(),
        }));
    } else {
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {} in {:.2}s",
            id.short(),
            a.target.display(),
            summary.files,
            summary.dirs,
            indicatif::HumanBytes(summary.bytes),
            started.elapsed().as_secs_f64()
        );
    }
    if a.verify && !g.json {
        println!(
            "verified {} files: {} mismatches",
            summary.verified_files,
            summary.mismatches.len()
        );
    }
    if !summary.mismatches.is_empty() {
        return Err(ocvault::Error::other(format!(
            "{} restored files differ from the snapshot",
            summary.mismatches.len()
        )));
    }
    if summary.not_restored > 0 {
        // Everything else is restored; each path left out was named in a warning.
        return Ok(Outcome::Incomplete);
    }
    Ok(Outcome::Success)
}

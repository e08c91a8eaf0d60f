use super::args::{duration, read_data_subset};
use super::{GlobalOptions, Outcome};
use indicatif::HumanBytes;
use ocvault::checker::{self, CheckOptions, CheckProgress, ReadData};
use ocvault::error::Result;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Also read every data pack and verify every blob in it
    #[arg(long)]
    read_data: bool,
    /// Read only part of the data: N/M (the N-th of M groups), P% (random) or SIZE (e.g. 500M)
    #[arg(long, value_name = "N/M|P%|SIZE", conflicts_with = "read_data", value_parser = read_data_subset)]
    read_data_subset: Option<ReadData>,
    /// Fail (exit code 5) when the newest snapshot of any host and paths is older than this, e.g. 25h
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    max_age: Option<Duration>,
    /// Fail (exit code 5) when the newest archived PostgreSQL WAL file is older than this
    /// (or none is), e.g. 30m: the "archiving has stalled" alert
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    max_wal_age: Option<Duration>,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let read_data = match (a.read_data_subset, a.read_data) {
        (Some(subset), _) => subset,
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let max_age = a.max_age;
    let backend = g.backend(false)?;
    ocvault::repository::Repository::probe(&backend)?;
    // With --share no password is asked: the shares give the master key.
    let (key, approvals) = if g.shares.is_empty() {
        (checker::CheckKey::Password(g.password()?), Vec::new())
    } else {
        let (master, approvals) = g.share_master_key(&backend)?;
        (checker::CheckKey::Master(master), approvals)
    };
    let progress = Arc::new(CheckProgress::default());
    let p = progress.clone();
    let ticker = super::Ticker::start(g.show_progress(), None, move || {
        (p.bytes.load(Relaxed), "checking".into())
    });
    let command_line = super::command_line();
    let (report, log_warning) = checker::check_logged(
        &backend,
        key,
        &CheckOptions {
            read_data,
            max_age,
            max_wal_age: a.max_wal_age,
        },
        &progress,
        checker::CheckLog {
            command_line: &command_line,
            approvals,
        },
    )?;
    drop(ticker);
    super::warn_all(log_warning);
    super::metrics::check_done(&report);
    let outcome = if !report.is_intact() {
        Outcome::Damage
    } else if report.has_cold() {
        Outcome::Cold
    } else if report.is_too_old() {
        Outcome::TooOld
    } else {
        Outcome::Success
    };
    if g.json {
        let mut v = serde_json::to_value(&report).expect("JSON");
        v["intact"] = serde_json::Value::Bool(report.is_intact());
        v["exit_code"] = super::outcome::exit_code(&Ok(outcome)).into();
        super::print_json(&v);
        return Ok(outcome);
    }
    print_report(&report);
    Ok(outcome)
}

/// The report as text: counts, reclaimable space, notes, damage with what it affects,
/// snapshots too old, cold packs, and the verdict.
fn print_report(report: &checker::CheckReport) {
    println!(
        "checked {} snapshots, {} index files, {} packs ({} tree packs read), {} blobs, \
         {} log entries",
        report.snapshots,
        report.index_files,
        report.packs,
        report.tree_packs,
        report.blobs,
        report.log_entries
    );
    if report.data_packs_read > 0 {
        println!(
            "read {} data packs ({})",
            report.data_packs_read,
            HumanBytes(report.data_bytes_read)
        );
    }
    let r = &report.reclaimable;
    if r.unreferenced_packs > 0 || r.unused_blobs > 0 {
        println!(
            "reclaimable by prune: {} packs in no index ({}), {} blobs no snapshot uses ({})",
            r.unreferenced_packs,
            HumanBytes(r.unreferenced_pack_bytes),
            r.unused_blobs,
            HumanBytes(r.unused_blob_bytes)
        );
    }
    if let Some(w) = &report.wal {
        print_wal(w);
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    for d in &report.damage {
        let blobs = if d.blobs > 0 {
            format!(" ({} blobs)", d.blobs)
        } else {
            String::new()
        };
        println!("damage: {}: {}{blobs}", d.object, d.problem);
    }
    for a in &report.affected {
        println!(
            "snapshot {} ({}, {}) cannot be restored fully:",
            &a.snapshot[..8],
            a.time,
            a.hostname
        );
        for p in a.paths.iter().take(50) {
            println!("    {p}");
        }
        if a.paths.len() > 50 {
            println!("    ... and {} more paths", a.paths.len() - 50);
        }
    }
    for t in &report.too_old {
        println!(
            "too old: newest snapshot of {} {} is {} ({}), {} ago",
            t.hostname,
            t.paths.join(" "),
            &t.newest_snapshot[..8],
            t.newest_time,
            humantime::format_duration(std::time::Duration::from_secs(t.age_seconds))
        );
    }
    print_cold(&report.cold_packs);
    if report.is_intact() {
        println!("no damage found");
    } else {
        eprintln!(
            "ocvault: the repository is damaged: {} problems found",
            report.damage.len()
        );
    }
}

/// Data packs `--read-data` could not read because they are in cold storage (exit 13).
fn print_cold(packs: &[ocvault::cold::ColdPack]) {
    if packs.is_empty() {
        return;
    }
    let bytes: u64 = packs.iter().map(|p| p.size).sum();
    eprintln!(
        "ocvault: {} data packs ({} MiB) are in cold storage and were not read: run \
         `ocvault thaw ID` for the snapshots that use them, then check again",
        packs.len(),
        ocvault::cold::mib(bytes)
    );
    for p in packs {
        eprintln!("  {p}");
    }
}

fn print_wal(w: &ocvault::checker::WalReport) {
    if w.files > 0 {
        println!(
            "checked {} WAL files; newest {} archived {}",
            w.files,
            w.newest.as_deref().unwrap_or("-"),
            w.newest_time.as_deref().unwrap_or("-")
        );
    }
    for g in &w.gaps_between_base_backups {
        println!(
            "note: {} WAL files from {} (timeline {}) are not archived: point-in-time recovery \
             cannot reach the moments between the base backups around them (forget \
             --keep-wal-within deletes such WAL)",
            g.missing, g.first_missing, g.timeline
        );
    }
    if let Some(t) = &w.too_old {
        let max = humantime::format_duration(Duration::from_secs(t.max_age_seconds));
        match t.age_seconds {
            Some(age) => println!(
                "too old: the newest WAL file was archived {} ago (limit {max})",
                humantime::format_duration(Duration::from_secs(age))
            ),
            None => println!("too old: no WAL file is archived (limit {max})"),
        }
    }
}

use super::GlobalOptions;
use crate::checker::{self, CheckOptions, CheckProgress, ReadData};
use crate::error::{exit, Error, Result};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Also read every data pack and verify every blob in it
    #[arg(long)]
    read_data: bool,
    /// Read only part of the data: N/M (the N-th of M groups), P% (random) or SIZE (e.g. 500M)
    #[arg(long, value_name = "N/M|P%|SIZE", conflicts_with = "read_data")]
    read_data_subset: Option<String>,
    /// Fail (exit code 5) when the newest snapshot of any host and paths is older than this, e.g. 25h
    #[arg(long, value_name = "DURATION")]
    max_age: Option<String>,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<i32> {
    let read_data = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => ReadData::parse_subset(s)?,
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let max_age = a
        .max_age
        .as_deref()
        .map(|s| {
            humantime::parse_duration(s)
                .map_err(|e| Error::usage(format!("invalid --max-age {s:?}: {e}")))
        })
        .transpose()?;
    let backend = g.backend(false)?;
    crate::repository::Repository::probe(&backend)?;
    let pw = g.password()?;
    let progress = Arc::new(CheckProgress::default());
    let p = progress.clone();
    let ticker = super::Ticker::start(g.show_progress(), None, move || {
        (p.bytes.load(Relaxed), "checking".into())
    });
    let report = checker::check(
        &backend,
        &pw,
        &CheckOptions { read_data, max_age },
        &progress,
    )?;
    drop(ticker);
    let code = if !report.is_intact() {
        exit::DAMAGE
    } else if !report.too_old.is_empty() {
        exit::TOO_OLD
    } else {
        exit::OK
    };
    if g.json {
        let mut v = serde_json::to_value(&report).expect("JSON");
        v["intact"] = serde_json::Value::Bool(report.is_intact());
        v["exit_code"] = code.into();
        super::print_json(&v);
        return Ok(code);
    }
    println!(
        "checked {} snapshots, {} index files, {} packs ({} tree packs read), {} blobs",
        report.snapshots, report.index_files, report.packs, report.tree_packs, report.blobs
    );
    if report.data_packs_read > 0 {
        println!(
            "read {} data packs ({})",
            report.data_packs_read,
            super::human_bytes(report.data_bytes_read)
        );
    }
    let r = &report.reclaimable;
    if r.unreferenced_packs > 0 || r.unused_blobs > 0 {
        println!(
            "reclaimable by prune: {} packs in no index ({}), {} blobs no snapshot uses ({})",
            r.unreferenced_packs,
            super::human_bytes(r.unreferenced_pack_bytes),
            r.unused_blobs,
            super::human_bytes(r.unused_blob_bytes)
        );
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
    if report.is_intact() {
        println!("no damage found");
    } else {
        eprintln!(
            "ocvault: the repository is damaged: {} problems found",
            report.damage.len()
        );
    }
    Ok(code)
}

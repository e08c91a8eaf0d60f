//! `thaw`: asks S3 for readable copies of the packs of a snapshot that are in an archive
//! storage class (one restore request each), and with `wait` polls until they are readable,
//! so that `restore`, `dump` and `check --read-data` can then read them.

use crate::backend::lifecycle::{ThawRequest, ThawTier};
use crate::cold::{self, ColdPack};
use crate::error::{Error, Result};
use crate::oplog::CommandLine;
use crate::repository::Repository;
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ThawOptions {
    /// Snapshot id (any unique prefix) or "latest".
    pub snapshot: String,
    /// Only the packs of paths matching these globs (as `restore --include`).
    pub includes: Vec<String>,
    /// Days the readable copies stay.
    pub days: u32,
    pub tier: ThawTier,
    /// Poll until every pack is readable.
    pub wait: bool,
    pub poll_interval: Duration,
    /// With `wait`: give up after this long (the report then says `complete: false`).
    pub timeout: Option<Duration>,
}

/// What `thaw` did. Packs and bytes are those the snapshot's restore reads.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ThawReport {
    pub snapshot_id: String,
    /// Whether the storage has storage classes at all (S3); nothing is cold elsewhere.
    pub storage_classes: bool,
    pub packs_needed: u64,
    pub bytes_needed: u64,
    /// Needed packs in an archive class (thawed or not).
    pub packs_archived: u64,
    /// Needed packs that were not readable when thaw started.
    pub packs_cold: u64,
    pub bytes_cold: u64,
    /// Replies to the restore requests.
    pub requests_started: u64,
    pub requests_in_progress: u64,
    pub requests_already_readable: u64,
    /// With `wait`: poll rounds made and HEAD requests they sent.
    pub polls: u64,
    pub poll_requests: u64,
    /// Of the cold packs, those readable at the end.
    pub packs_thawed: u64,
    pub bytes_thawed: u64,
    /// Every needed pack is readable (with `wait`), or every request was accepted (without).
    pub complete: bool,
    /// The packs still not readable at the end.
    pub still_cold: Vec<ColdPack>,
    pub seconds: f64,
    pub warnings: Vec<String>,
}

/// Progress of a wait, reported once a poll.
#[derive(Clone, Copy, Debug)]
pub struct ThawProgress {
    pub packs_thawed: u64,
    pub packs: u64,
    pub bytes_thawed: u64,
    pub bytes: u64,
}

/// Thaws and logs the outcome.
pub fn thaw(
    repo: &Repository,
    opts: &ThawOptions,
    command_line: &CommandLine,
    on_poll: &mut dyn FnMut(&ThawProgress),
) -> Result<ThawReport> {
    match thaw_packs(repo, opts, on_poll) {
        Ok((id, report)) => {
            let result = format!(
                "{}: {} restore requests, {} of {} cold packs readable",
                if report.complete { "ok" } else { "timeout" },
                report.requests_started,
                report.packs_thawed,
                report.packs_cold
            );
            // The session is started only now: a wait can last hours.
            let mut report = report;
            match repo.write_session() {
                Ok(session) => report.warnings.extend(crate::oplog::record_or_warn(
                    &session,
                    command_line,
                    "thaw",
                    &result,
                    vec![id],
                )),
                Err(e) => report
                    .warnings
                    .push(format!("cannot write the operations log: {e}")),
            }
            Ok(report)
        }
        Err(e) => {
            crate::oplog::record_failure_unindexed(repo, command_line, "thaw", &e);
            Err(e)
        }
    }
}

fn thaw_packs(
    repo: &Repository,
    opts: &ThawOptions,
    on_poll: &mut dyn FnMut(&ThawProgress),
) -> Result<(crate::id::SnapshotId, ThawReport)> {
    let started = Instant::now();
    let (id, snap) = repo.find_snapshot(&opts.snapshot)?;
    let indexed = repo.load_index_tiered()?;
    let needed = crate::restorer::needed_packs(&indexed, &snap.tree, &opts.includes)?;
    let index = indexed.index();
    let mut report = ThawReport {
        snapshot_id: id.to_hex(),
        storage_classes: indexed.tiers().is_some(),
        packs_needed: needed.len() as u64,
        bytes_needed: needed.iter().map(|n| index.pack(*n).size).sum(),
        packs_archived: needed.iter().filter(|n| index.pack(**n).archived).count() as u64,
        ..Default::default()
    };
    let cold = indexed.cold_packs(needed.iter().copied())?;
    report.packs_cold = cold.len() as u64;
    report.bytes_cold = cold.iter().map(|p| p.size).sum();
    let Some(lc) = repo.backend().lifecycle() else {
        report.complete = true;
        return Ok((id, report));
    };
    let paths: Vec<String> = cold.iter().map(|p| p.path.clone()).collect();
    let replies = cold::request_thaws(repo.backend(), lc, &paths, opts.days, opts.tier)?;
    for r in &replies {
        match r {
            ThawRequest::Started => report.requests_started += 1,
            ThawRequest::AlreadyInProgress => report.requests_in_progress += 1,
            ThawRequest::AlreadyReadable => report.requests_already_readable += 1,
        }
    }
    // A pack that turned readable between the HEAD and the request needs no waiting.
    let mut pending: Vec<ColdPack> = cold
        .into_iter()
        .zip(&replies)
        .filter(|(_, r)| **r != ThawRequest::AlreadyReadable)
        .map(|(p, _)| ColdPack {
            state: "thawing",
            ..p
        })
        .collect();
    if opts.wait {
        wait(repo, opts, &mut report, &mut pending, started, on_poll)?;
    }
    report.packs_thawed = report.packs_cold - pending.len() as u64;
    report.bytes_thawed = report.bytes_cold - pending.iter().map(|p| p.size).sum::<u64>();
    report.complete = !opts.wait || pending.is_empty();
    report.still_cold = pending;
    report.seconds = started.elapsed().as_secs_f64();
    Ok((id, report))
}

/// Polls the pending packs every `poll_interval` until none is left or the timeout passes.
fn wait(
    repo: &Repository,
    opts: &ThawOptions,
    report: &mut ThawReport,
    pending: &mut Vec<ColdPack>,
    started: Instant,
    on_poll: &mut dyn FnMut(&ThawProgress),
) -> Result<()> {
    let Some(lc) = repo.backend().lifecycle() else {
        return Ok(());
    };
    let deadline = opts.timeout.map(|t| started + t);
    while !pending.is_empty() {
        let next = Instant::now() + opts.poll_interval;
        if deadline.is_some_and(|d| next > d) {
            break;
        }
        sleep_until(next)?;
        let paths: Vec<String> = pending.iter().map(|p| p.path.clone()).collect();
        let states = cold::thaw_states(repo.backend(), lc, &paths)?;
        report.polls += 1;
        report.poll_requests += paths.len() as u64;
        let mut states = states.into_iter();
        pending.retain(|_| !states.next().is_some_and(|s| s.readable()));
        let bytes_pending: u64 = pending.iter().map(|p| p.size).sum();
        on_poll(&ThawProgress {
            packs_thawed: report.packs_cold - pending.len() as u64,
            packs: report.packs_cold,
            bytes_thawed: report.bytes_cold - bytes_pending,
            bytes: report.bytes_cold,
        });
    }
    Ok(())
}

/// Sleeps until `t`, stopping early on SIGINT/SIGTERM.
fn sleep_until(t: Instant) -> Result<()> {
    loop {
        crate::interrupt::check()?;
        let now = Instant::now();
        if now >= t {
            return Ok(());
        }
        std::thread::sleep((t - now).min(Duration::from_millis(100)));
    }
}

/// The retrieval tier named on the command line.
pub fn parse_tier(s: &str) -> Result<ThawTier> {
    match s {
        "standard" => Ok(ThawTier::Standard),
        "bulk" => Ok(ThawTier::Bulk),
        "expedited" => Ok(ThawTier::Expedited),
        _ => Err(Error::usage(format!(
            "unknown retrieval tier {s:?}: use standard, bulk or expedited"
        ))),
    }
}

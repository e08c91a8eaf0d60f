use super::args::duration;
use super::{GlobalOptions, Outcome};
use ocvault::cold::mib;
use ocvault::commands::thaw::{self, ThawOptions, ThawProgress};
use ocvault::error::Result;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot id (any unique prefix) or "latest"
    snapshot: String,
    /// Only the packs of paths matching this glob, as restore --include (repeatable)
    #[arg(long = "include", value_name = "GLOB")]
    includes: Vec<String>,
    /// Days the readable copies stay
    #[arg(long, value_name = "N", default_value_t = 7)]
    days: u32,
    /// Retrieval tier: standard, bulk or expedited (faster costs more)
    #[arg(long, value_name = "TIER", default_value = "standard")]
    tier: String,
    /// Wait until every pack is readable
    #[arg(long)]
    wait: bool,
    /// With --wait: time between checks
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    poll_interval: Duration,
    /// With --wait: give up after this long (exit code 13)
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    timeout: Option<Duration>,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let tier = thaw::parse_tier(&a.tier)?;
    if a.days == 0 {
        return Err(ocvault::Error::usage("--days must be at least 1"));
    }
    let repo = g.open_full("read snapshots' trees")?;
    ocvault::interrupt::install()?;
    let opts = ThawOptions {
        snapshot: a.snapshot,
        includes: a.includes,
        days: a.days,
        tier,
        wait: a.wait,
        poll_interval: a.poll_interval,
        timeout: a.timeout,
    };
    let quiet = g.quiet;
    let mut on_poll = |p: &ThawProgress| {
        if !quiet {
            eprintln!(
                "thawed {} of {} packs, {} of {} MiB",
                p.packs_thawed,
                p.packs,
                mib(p.bytes_thawed),
                mib(p.bytes)
            );
        }
    };
    let r = thaw::thaw(&repo, &opts, &super::command_line(), &mut on_poll)?;
    super::warn_all(&r.warnings);
    let outcome = if r.complete {
        Outcome::Success
    } else {
        Outcome::Cold
    };
    if g.json {
        let mut v = serde_json::to_value(&r).expect("JSON");
        v["exit_code"] = super::outcome::exit_code(&Ok(outcome)).into();
        super::print_json(&v);
        return Ok(outcome);
    }
    let short = &r.snapshot_id[..8];
    if !r.storage_classes {
        println!("snapshot {short}: this storage has no storage classes; nothing to thaw");
        return Ok(outcome);
    }
    println!(
        "snapshot {short}: {} packs ({} MiB) needed, {} in an archive class, {} cold ({} MiB)",
        r.packs_needed,
        mib(r.bytes_needed),
        r.packs_archived,
        r.packs_cold,
        mib(r.bytes_cold)
    );
    if r.packs_cold > 0 {
        println!(
            "restore requests: {} started, {} already in progress, {} already readable",
            r.requests_started, r.requests_in_progress, r.requests_already_readable
        );
    }
    if a.wait {
        println!(
            "{} of {} packs readable ({} of {} MiB) after {:.0}s",
            r.packs_thawed,
            r.packs_cold,
            mib(r.bytes_thawed),
            mib(r.bytes_cold),
            r.seconds
        );
    }
    if !r.complete {
        eprintln!(
            "ocvault: timed out: {} packs ({} MiB) are not readable yet; run `ocvault thaw {short} --wait` again later",
            r.still_cold.len(),
            mib(r.still_cold.iter().map(|p| p.size).sum())
        );
        for p in &r.still_cold {
            eprintln!("  {p}");
        }
    }
    Ok(outcome)
}

use super::args::{duration, percent, size};
use super::{GlobalOptions, Outcome};
use indicatif::HumanBytes;
use ocvault::error::Result;
use ocvault::prune::{PruneOptions, PruneReport};
use ocvault::repository::Repository;
use std::time::Duration;

#[derive(clap::Args, Clone)]
pub struct PruneArgs {
    /// Repack packs whose unused share is above this, e.g. 5% (0% removes every unused blob)
    #[arg(long, value_name = "P%", default_value = "5%", value_parser = percent)]
    pub max_unused: f64,
    /// Repack at most this much, e.g. 2G or 2GiB
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_repack: Option<u64>,
    /// Delete packs marked by an earlier prune only once the mark is this old (e.g. 1h)
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = duration)]
    pub grace: Duration,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    prune: PruneArgs,
    /// Show what would be deleted and repacked; change nothing
    #[arg(long)]
    dry_run: bool,
}

impl PruneArgs {
    pub fn options(&self, dry_run: bool) -> PruneOptions {
        PruneOptions {
            max_unused_percent: self.max_unused,
            max_repack_bytes: self.max_repack,
            dry_run,
            grace: self.grace,
        }
    }
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let opts = a.prune.options(a.dry_run);
    let repo = g.open_full("prune")?;
    run_prune(g, &repo, &opts)?;
    Ok(Outcome::Success)
}

/// Prunes (after `forget --prune` too) and prints the report.
pub fn run_prune(g: &GlobalOptions, repo: &Repository, opts: &PruneOptions) -> Result<()> {
    ocvault::interrupt::install()?;
    let (r, warning) = ocvault::commands::prune::prune(repo, opts, &super::command_line())?;
    super::warn_all(warning);
    super::metrics::prune_done(&r);
    if g.json {
        super::print_json(&r);
    } else {
        print_report(&r);
    }
    Ok(())
}

fn print_report(r: &PruneReport) {
    let h = HumanBytes;
    println!(
        "used blobs: {}, unused blobs: {}",
        r.used_blobs, r.unused_blobs
    );
    println!(
        "{}packs to remove: {} ({}), to repack: {} ({}), unindexed: {}",
        if r.dry_run { "would: " } else { "" },
        r.packs_to_remove,
        h(r.bytes_to_remove),
        r.packs_to_repack,
        h(r.bytes_to_repack),
        r.unindexed_packs
    );
    if r.cold_packs_kept > 0 {
        println!(
            "{} unused cold packs ({} MiB) kept until {} to avoid early-deletion charges",
            r.cold_packs_kept,
            ocvault::cold::mib(r.cold_bytes_kept),
            r.cold_kept_until.as_deref().unwrap_or("-")
        );
    }
    if r.cold_packs_not_repacked > 0 {
        println!(
            "{} partly used cold packs left as they are (repacking would need a thaw)",
            r.cold_packs_not_repacked
        );
    }
    if r.dry_run {
        return;
    }
    if r.recovered_packs > 0 {
        println!(
            "put back into the index: {} packs a snapshot needs",
            r.recovered_packs
        );
    }
    println!(
        "repacked into {}; replaced {} index files",
        h(r.bytes_repacked_written),
        r.index_files_replaced
    );
    println!(
        "deleted {} packs, freed {}",
        r.packs_deleted,
        h(r.bytes_deleted)
    );
    if let Some(v) = &r.versions {
        print_versions(v);
    }
    if r.marks_pending > 0 {
        println!("{} prune marks wait for running backups or the grace period; a later prune deletes their packs", r.marks_pending);
    }
}

/// Object Lock: what prune reclaimed of deleted files' versions and what stays locked.
fn print_versions(v: &ocvault::retention_lock::reclaim::ReclaimReport) {
    let h = HumanBytes;
    let date = |t: Option<i64>| {
        t.map(super::forget::utc_date)
            .unwrap_or_else(|| "an unknown date".into())
    };
    if v.versions_deleted > 0 || v.delete_markers_removed > 0 {
        println!(
            "deleted {} old versions of deleted files ({}) and {} delete markers",
            v.versions_deleted,
            h(v.version_bytes_deleted),
            v.delete_markers_removed
        );
    }
    if v.versions_retained > 0 {
        println!(
            "{} deleted objects ({}) are retained by Object Lock until {} (the latest); a later prune removes them",
            v.versions_retained,
            h(v.version_bytes_retained),
            date(v.retained_until_unix_s)
        );
    }
    if v.packs_retained > 0 {
        println!(
            "{} packs holding data removed from snapshots stay readable in locked versions until {}",
            v.packs_retained,
            date(v.packs_retained_until_unix_s)
        );
    }
}

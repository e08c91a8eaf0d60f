use super::GlobalOptions;
use crate::error::{Error, Result};
use crate::prune::{self, PruneOptions, PruneReport};
use crate::repository::Repository;
use crate::session::WriteSession;

#[derive(clap::Args, Clone)]
pub struct PruneArgs {
    /// Repack packs whose unused share is above this, e.g. 5% (0% removes every unused blob)
    #[arg(long, value_name = "P%", default_value = "5%")]
    pub max_unused: String,
    /// Repack at most this much, e.g. 2G
    #[arg(long, value_name = "SIZE")]
    pub max_repack: Option<String>,
    /// Delete packs marked by an earlier prune only once the mark is this old (e.g. 1h)
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub grace: String,
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
    pub fn options(&self, dry_run: bool) -> Result<PruneOptions> {
        let pct = self.max_unused.trim().trim_end_matches('%');
        let max_unused_percent: f64 = pct
            .parse()
            .map_err(|_| Error::usage(format!("invalid --max-unused {:?}", self.max_unused)))?;
        if !(0.0..=100.0).contains(&max_unused_percent) {
            return Err(Error::usage("--max-unused must be between 0% and 100%"));
        }
        let max_repack_bytes = match &self.max_repack {
            Some(s) => Some(
                crate::checker::parse_size(s)
                    .ok_or_else(|| Error::usage(format!("invalid --max-repack {s:?}")))?,
            ),
            None => None,
        };
        let grace = humantime::parse_duration(&self.grace)
            .map_err(|e| Error::usage(format!("invalid --grace {:?}: {e}", self.grace)))?;
        Ok(PruneOptions {
            max_unused_percent,
            max_repack_bytes,
            dry_run,
            grace,
        })
    }
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<i32> {
    let opts = a.prune.options(a.dry_run)?;
    let repo = g.open()?;
    if opts.dry_run {
        run_prune(g, &repo, None, &opts)?;
        return Ok(0);
    }
    let session = match repo.write_session() {
        Ok(s) => s,
        Err(e) => {
            crate::oplog::record_failure_unindexed(&repo, "prune", &e);
            return Err(e);
        }
    };
    run_prune(g, &repo, Some(&session), &opts)?;
    Ok(0)
}

/// Prunes under `session`, or without one (changing nothing) as a dry run.
pub fn run_prune(
    g: &GlobalOptions,
    repo: &Repository,
    session: Option<&WriteSession>,
    opts: &PruneOptions,
) -> Result<PruneReport> {
    crate::interrupt::install()?;
    let r = match session {
        Some(s) => prune::prune(s, opts),
        None => prune::prune_dry_run(repo, opts),
    };
    if let Some(session) = session {
        match &r {
            Ok(r) => crate::oplog::record(
                session,
                "prune",
                &format!(
                    "ok: deleted {} packs, freed {} bytes",
                    r.packs_deleted, r.bytes_deleted
                ),
                vec![],
            ),
            Err(e) => crate::oplog::record_failure(session, "prune", e),
        }
    }
    let r = r?;
    if g.json {
        super::print_json(&r);
    } else {
        print_report(&r);
    }
    Ok(r)
}

fn print_report(r: &PruneReport) {
    let h = super::human_bytes;
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
    if r.marks_pending > 0 {
        println!("{} prune marks wait for running backups or the grace period; a later prune deletes their packs", r.marks_pending);
    }
}

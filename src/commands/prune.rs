//! `prune` as a command: the prune itself plus its operations log entry.

use crate::error::Result;
use crate::oplog::CommandLine;
use crate::prune::{PruneOptions, PruneReport};
use crate::repository::Repository;

/// Prunes and logs the outcome (not for a dry run, which changes nothing). The report's
/// counters are unchanged; a failure to log comes back as the second value.
pub fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    command_line: &CommandLine,
) -> Result<(PruneReport, Option<String>)> {
    let r = crate::prune::prune(repo, opts);
    if opts.dry_run {
        return r.map(|r| (r, None));
    }
    match r {
        Ok(r) => {
            let result = format!(
                "ok: deleted {} packs, freed {} bytes",
                r.packs_deleted, r.bytes_deleted
            );
            let warning =
                crate::oplog::record_or_warn(repo, command_line, "prune", &result, vec![]);
            Ok((r, warning))
        }
        Err(e) => {
            crate::oplog::record_failure(repo, command_line, "prune", &e);
            Err(e)
        }
    }
}

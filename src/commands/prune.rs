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
    if opts.dry_run {
        return crate::prune::prune_dry_run(repo, opts).map(|r| (r, None));
    }
    let session = match repo.write_session() {
        Ok(s) => s,
        Err(e) => {
            crate::oplog::record_failure_unindexed(repo, command_line, "prune", &e);
            return Err(e);
        }
    };
    match crate::prune::prune(&session, opts) {
        Ok(r) => {
            let result = format!(
                "ok: deleted {} packs, freed {} bytes",
                r.packs_deleted, r.bytes_deleted
            );
            let warning =
                crate::oplog::record_or_warn(&session, command_line, "prune", &result, vec![]);
            Ok((r, warning))
        }
        Err(e) => {
            crate::oplog::record_failure(&session, command_line, "prune", &e);
            Err(e)
        }
    }
}

//! `rewrite` as a command: chosen snapshots written anew without excluded paths, and logged.

use super::select::Selection;
use crate::error::Result;
use crate::oplog::CommandLine;
use crate::repository::Repository;
use crate::rewrite::Rewritten;

#[derive(Clone, Debug, Default)]
pub struct RewriteOptions {
    pub selection: Selection,
    /// Globs as for `snapshot --exclude`.
    pub excludes: Vec<String>,
    pub dry_run: bool,
}

#[derive(Default)]
pub struct RewriteResult {
    pub rewritten: Vec<Rewritten>,
    pub warnings: Vec<String>,
}

pub fn rewrite(
    repo: &Repository,
    opts: &RewriteOptions,
    command_line: &CommandLine,
) -> Result<RewriteResult> {
    opts.selection.validate("rewrite", true)?;
    let chosen = opts.selection.select(&repo.list_snapshots()?)?;
    let rewritten = crate::rewrite::rewrite(repo, &chosen, &opts.excludes, opts.dry_run)?;
    let mut warnings = Vec::new();
    if !opts.dry_run {
        let new_ids = rewritten.iter().filter_map(|r| r.new).collect();
        warnings.extend(crate::oplog::record_or_warn(
            repo,
            command_line,
            "rewrite",
            "ok",
            new_ids,
        ));
    }
    Ok(RewriteResult {
        rewritten,
        warnings,
    })
}

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
    let mut indexed = repo.load_index()?;
    let mut warnings = Vec::new();
    let rewritten = if opts.dry_run {
        crate::rewrite::rewrite_dry_run(&indexed, &chosen, &opts.excludes)?
    } else {
        let session = indexed.write_session()?;
        let rewritten = crate::rewrite::rewrite(&session, &chosen, &opts.excludes)?;
        let new_ids = rewritten.iter().filter_map(|r| r.new).collect();
        warnings.extend(crate::oplog::record_or_warn(
            &session,
            command_line,
            "rewrite",
            "ok",
            new_ids,
        ));
        rewritten
    };
    Ok(RewriteResult {
        rewritten,
        warnings,
    })
}

//! `tag`: adds and removes snapshot tags. Snapshot files are immutable: a changed snapshot is
//! saved anew (a new id) and the old file removed, under a backup marker like any writer.

use super::select::Selection;
use crate::error::{Error, Result};
use crate::format::Snapshot;
use crate::id::SnapshotId;
use crate::oplog::CommandLine;
use crate::repository::Repository;

#[derive(Clone, Debug, Default)]
pub struct TagOptions {
    pub selection: Selection,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct TagResult {
    /// (old id, new id) of each snapshot whose tags changed; unchanged ones are left alone.
    pub changed: Vec<(SnapshotId, SnapshotId)>,
    pub warnings: Vec<String>,
}

impl TagOptions {
    pub fn validate(&self) -> Result<()> {
        if self.add.is_empty() && self.remove.is_empty() {
            return Err(Error::usage("tag needs --add or --remove"));
        }
        self.selection.validate("tag", true)
    }
}

pub fn tag(repo: &Repository, opts: &TagOptions, command_line: &CommandLine) -> Result<TagResult> {
    opts.validate()?;
    let session = repo.write_session()?;
    let mut result = TagResult::default();
    let log_heads = crate::oplog::heads(repo)?;
    for (old, snap) in opts.selection.select(&repo.list_snapshots()?)? {
        let mut s = snap.clone();
        s.log_heads = log_heads.clone();
        s.tags.retain(|t| !opts.remove.contains(t));
        s.tags.extend(opts.add.iter().cloned());
        s.tags.sort();
        s.tags.dedup();
        if s.tags == snap.tags {
            continue;
        }
        let new = session.save_file(&s)?;
        session.delete_file::<Snapshot>(&old)?;
        result.changed.push((old, new));
    }
    let new_ids = result.changed.iter().map(|(_, n)| *n).collect();
    result.warnings.extend(crate::oplog::record_or_warn(
        &session,
        command_line,
        "tag",
        "ok",
        new_ids,
    ));
    Ok(result)
}

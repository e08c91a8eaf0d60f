//! `copy` as a command: chosen snapshots of one repository copied into another, logged in the
//! destination (which is the repository that changes).

use super::select::Selection;
use crate::copy::CopyReport;
use crate::error::Result;
use crate::oplog::CommandLine;
use crate::repository::Repository;

#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    pub selection: Selection,
}

pub fn copy(
    src: &Repository,
    dst: &Repository,
    opts: &CopyOptions,
    command_line: &CommandLine,
) -> Result<(CopyReport, Option<String>)> {
    opts.selection.validate("copy", true)?;
    let selected = opts.selection.select(&src.list_snapshots()?)?;
    let src = src.load_index()?;
    let mut dst = dst.load_index()?;
    let session = dst.write_session()?;
    let report = match crate::copy::copy(&src, &session, &selected) {
        Ok(r) => r,
        Err(e) => {
            // As for any failed operation, a failure to log it is not reported.
            let _ = crate::oplog::record(&session, command_line, "copy", "failed", vec![]);
            return Err(e);
        }
    };
    let new_ids = report
        .copied
        .iter()
        .filter_map(|(_, d)| crate::id::SnapshotId::from_hex(d))
        .collect();
    let warning = crate::oplog::record_or_warn(&session, command_line, "copy", "ok", new_ids);
    Ok((report, warning))
}

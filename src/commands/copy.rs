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
    refuse_postgres_into_v1(src, dst, &selected)?;
    let src = src.load_index()?;
    let mut dst = dst.load_index()?;
    let session = dst.write_session()?;
    let copied = crate::copy::copy(&src, &session, &selected).and_then(|mut report| {
        report.wal = crate::copy::copy_wal(&src, &session)?;
        Ok(report)
    });
    let report = match copied {
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

/// A destination of format version 1 can hold neither WAL nor base-backup metadata: refused
/// before anything is written, rather than copying the snapshots and leaving out the WAL
/// that makes their base backups useful.
fn refuse_postgres_into_v1(
    src: &Repository,
    dst: &Repository,
    selected: &[(crate::id::SnapshotId, crate::format::Snapshot)],
) -> Result<()> {
    if dst.config().version >= 2 {
        return Ok(());
    }
    let base_backups = selected.iter().any(|(_, s)| s.postgres.is_some());
    let wal = src.config().version >= 2
        && !src
            .backend()
            .list_ids(crate::backend::FileKind::Wal)?
            .is_empty();
    if base_backups || wal {
        return Err(crate::error::Error::NeedsNewerFormat(
            "the destination has repository format version 1, which cannot hold PostgreSQL WAL \
             or base backups: copy into a version 2 repository (`ocvault init`); nothing was copied"
                .into(),
        ));
    }
    Ok(())
}

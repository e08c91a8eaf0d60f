//! `repair index|snapshots|packs` as commands: each in one write session (none in a dry run),
//! and logged.

use super::select::Selection;
use crate::error::{Error, Result};
use crate::id::PackId;
use crate::oplog::CommandLine;
use crate::repair::index::IndexRepair;
use crate::repair::packs::PacksRepair;
use crate::repair::snapshots::SnapshotRepair;
use crate::repository::Repository;

/// A repair's report and the warnings of its logging.
pub struct Repaired<T> {
    pub report: T,
    pub warnings: Vec<String>,
}

/// The operations-log result of a repair: "ok", or "incomplete" when damage remains.
fn logged_result(damage_remains: bool) -> &'static str {
    if damage_remains {
        "incomplete"
    } else {
        "ok"
    }
}

pub fn repair_index(
    repo: &Repository,
    read_all_packs: bool,
    dry_run: bool,
    command_line: &CommandLine,
) -> Result<Repaired<IndexRepair>> {
    if dry_run {
        let report = crate::repair::index::repair_index(repo, None, read_all_packs)?;
        return Ok(Repaired {
            report,
            warnings: Vec::new(),
        });
    }
    let session = repo.write_session()?;
    let report = crate::repair::index::repair_index(repo, Some(&session), read_all_packs)?;
    let result = logged_result(report.damage_remains());
    let warnings =
        crate::oplog::record_or_warn(&session, command_line, "repair index", result, vec![])
            .into_iter()
            .collect();
    Ok(Repaired { report, warnings })
}

pub fn repair_snapshots(
    repo: &Repository,
    selection: &Selection,
    forget: bool,
    dry_run: bool,
    command_line: &CommandLine,
) -> Result<Repaired<Vec<SnapshotRepair>>> {
    selection.validate("repair snapshots", false)?;
    repo.require_full_key("repair snapshots")?;
    let chosen = selection.select(&repo.list_snapshots()?)?;
    let mut indexed = repo.load_index()?;
    if dry_run {
        let report = crate::repair::snapshots::repair_snapshots_dry_run(&indexed, &chosen)?;
        return Ok(Repaired {
            report,
            warnings: Vec::new(),
        });
    }
    let session = indexed.write_session()?;
    let report = crate::repair::snapshots::repair_snapshots(&session, &chosen, forget)?;
    let new_ids = report.iter().filter_map(|r| r.new).collect();
    let remains = report.iter().any(|r| r.damaged() && !r.forgotten);
    let warnings = crate::oplog::record_or_warn(
        &session,
        command_line,
        "repair snapshots",
        logged_result(remains),
        new_ids,
    )
    .into_iter()
    .collect();
    Ok(Repaired { report, warnings })
}

/// Pack ids from full hex ids or unique prefixes of packs present in `data/`.
pub fn resolve_packs(repo: &Repository, specs: &[String]) -> Result<Vec<PackId>> {
    let present = repo.backend().list_ids(crate::backend::FileKind::Pack)?;
    let mut out = Vec::new();
    for spec in specs {
        // `check` names a pack by its path: data/xx/<id>.
        let hex = spec.rsplit('/').next().unwrap_or(spec).to_ascii_lowercase();
        let matches: Vec<PackId> = present
            .iter()
            .filter(|(id, _)| id.to_hex().starts_with(&hex))
            .map(|(id, _)| PackId(*id))
            .collect();
        if hex.len() < 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::usage(format!(
                "pack {spec}: give at least 4 hex digits of its id"
            )));
        }
        match matches.as_slice() {
            [one] => {
                if !out.contains(one) {
                    out.push(*one)
                }
            }
            [] => return Err(Error::usage(format!("no pack {spec} in data/"))),
            _ => {
                return Err(Error::usage(format!(
                    "pack {spec} is ambiguous: give more of its id"
                )))
            }
        }
    }
    Ok(out)
}

pub fn repair_packs(
    repo: &Repository,
    specs: &[String],
    dry_run: bool,
    command_line: &CommandLine,
) -> Result<Repaired<PacksRepair>> {
    repo.require_full_key("repair packs")?;
    let ids = resolve_packs(repo, specs)?;
    if dry_run {
        let report = crate::repair::packs::repair_packs(repo, None, &ids)?;
        return Ok(Repaired {
            report,
            warnings: Vec::new(),
        });
    }
    let session = repo.write_session()?;
    let report = crate::repair::packs::repair_packs(repo, Some(&session), &ids)?;
    let result = logged_result(report.damage_remains());
    let warnings =
        crate::oplog::record_or_warn(&session, command_line, "repair packs", result, vec![])
            .into_iter()
            .collect();
    Ok(Repaired { report, warnings })
}

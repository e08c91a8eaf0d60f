//! `forget`: removes snapshots named by id, or those a keep policy lets go, group by group.

use super::select::Selection;
use crate::error::{Error, Result};
use crate::format::{PgBaseBackup, Snapshot};
use crate::id::{Id, SnapshotId};
use crate::oplog::CommandLine;
use crate::repository::Repository;
use crate::retention::{self, Decision, GroupBy, Policy};
use crate::wal::name::WalName;
use crate::wal::timeline;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct ForgetOptions {
    /// Ids remove exactly those snapshots; otherwise the policy decides among the snapshots
    /// the selection's filter lets through.
    pub selection: Selection,
    pub policy: Policy,
    pub group_by: GroupBy,
    /// Let a policy remove every snapshot of a group.
    pub allow_empty_group: bool,
    /// Decide and report; remove nothing.
    pub dry_run: bool,
    /// Delete the archived WAL files the kept base backups and this recovery window do not
    /// need (`wal::timeline::to_delete`); `None` deletes no WAL.
    pub keep_wal_within: Option<Duration>,
}

/// What WAL retention decided.
#[derive(Clone, Debug, Default)]
pub struct WalForgotten {
    /// Names of the WAL files deleted (or, with `dry_run`, to be deleted), in order.
    pub deleted: Vec<String>,
    /// WAL files left in the archive.
    pub kept: usize,
    /// The oldest WAL segment left, if any.
    pub oldest_kept: Option<String>,
    /// The base backups of the snapshots kept, which retention went by.
    pub base_backups: usize,
}

/// One group's decisions, newest first, with each snapshot's time.
#[derive(Clone, Debug)]
pub struct GroupReport {
    pub key: String,
    pub decisions: Vec<(Decision, i64)>,
}

#[derive(Clone, Debug, Default)]
pub struct ForgetResult {
    /// Empty when snapshots were named by id.
    pub groups: Vec<GroupReport>,
    /// Removed (or, with `dry_run`, to be removed).
    pub removed: Vec<SnapshotId>,
    pub warnings: Vec<String>,
    /// With `keep_wal_within`.
    pub wal: Option<WalForgotten>,
    /// On a repository with Object Lock: the retention extended for the kept snapshots.
    pub retention: Option<crate::retention_lock::ExtendReport>,
}

impl ForgetOptions {
    /// The usage errors found without the repository.
    pub fn validate(&self) -> Result<()> {
        let by_id = !self.selection.ids.is_empty();
        if !by_id && self.policy.is_empty() && self.keep_wal_within.is_none() {
            return Err(Error::usage(
                "forget needs snapshot ids, a keep policy (--keep-last, --keep-daily, ...) or \
                 --keep-wal-within",
            ));
        }
        if by_id && !self.policy.is_empty() {
            return Err(Error::usage(
                "give either snapshot ids or a keep policy, not both",
            ));
        }
        self.selection.validate("forget", false)
    }
}

pub fn forget(
    repo: &Repository,
    opts: &ForgetOptions,
    command_line: &CommandLine,
) -> Result<ForgetResult> {
    opts.validate()?;
    let snaps = repo.list_snapshots()?;
    let mut result = ForgetResult::default();
    if opts.selection.ids.is_empty() && opts.policy.is_empty() {
        // WAL retention alone: every snapshot stays.
    } else if opts.selection.ids.is_empty() {
        result.groups = decide(&opts.selection.filter.apply(&snaps), opts)?;
        result.removed = result
            .groups
            .iter()
            .flat_map(|g| g.decisions.iter())
            .filter(|(d, _)| !d.keep)
            .map(|(d, _)| d.id)
            .collect();
    } else {
        result.removed = opts
            .selection
            .select(&snaps)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
    }
    let wal = match opts.keep_wal_within {
        Some(window) => Some(wal_retention(repo, &snaps, &result.removed, window)?),
        None => None,
    };
    if opts.dry_run {
        result.wal = wal.map(|(w, _)| w);
        return Ok(result);
    }
    let session = repo.write_session()?;
    for id in &result.removed {
        session.delete_file::<Snapshot>(id)?;
    }
    let mut outcome = "ok".to_string();
    if let Some((w, ids)) = wal {
        for id in &ids {
            session.delete_wal_record(id)?;
        }
        outcome = format!("ok: {} WAL files deleted", w.deleted.len());
        result.wal = Some(w);
    }
    result.retention = extend_retention(&session, &snaps, &result)?;
    if repo.config().storage.lock.is_some() && result.retention.is_none() {
        result.warnings.push(
            "this repository has Object Lock, but its storage here cannot extend retention \
             (not S3?): no retention was extended"
                .to_string(),
        );
    }
    if let Some(r) = &result.retention {
        outcome = format!(
            "{outcome}; retention of {} objects extended, {} failed",
            r.objects_extended, r.failed
        );
    }
    result.warnings.extend(crate::oplog::record_or_warn(
        &session,
        command_line,
        "forget",
        &outcome,
        result.removed.clone(),
    ));
    Ok(result)
}

/// Object Lock: extends the retention of what the snapshots left need, each by the rule
/// that keeps it (`retention_lock`).
fn extend_retention(
    session: &crate::session::WriteSession,
    snaps: &[(SnapshotId, Snapshot)],
    result: &ForgetResult,
) -> Result<Option<crate::retention_lock::ExtendReport>> {
    if session.repo().config().storage.lock.is_none() {
        return Ok(None);
    }
    let removed: HashSet<&SnapshotId> = result.removed.iter().collect();
    let rules: HashMap<SnapshotId, &[retention::Rule]> = result
        .groups
        .iter()
        .flat_map(|g| g.decisions.iter())
        .filter(|(d, _)| d.keep)
        .map(|(d, _)| (d.id, d.rules.as_slice()))
        .collect();
    let kept: Vec<crate::retention_lock::Kept> = snaps
        .iter()
        .filter(|(id, _)| !removed.contains(id))
        .map(|(id, s)| crate::retention_lock::Kept {
            id: *id,
            snapshot: s,
            rules: rules.get(id).copied().unwrap_or(&[]),
        })
        .collect();
    crate::retention_lock::extend(session, &kept)
}

/// Which WAL records retention deletes once `removed` are gone, and their ids. A record that
/// cannot be read is left alone (its name is unknown; `check` reports it).
fn wal_retention(
    repo: &Repository,
    snaps: &[(SnapshotId, Snapshot)],
    removed: &[SnapshotId],
    window: Duration,
) -> Result<(WalForgotten, Vec<Id>)> {
    if repo.config().version < 2 {
        return Ok((WalForgotten::default(), Vec::new()));
    }
    let removed: HashSet<&SnapshotId> = removed.iter().collect();
    let base_backups: Vec<PgBaseBackup> = snaps
        .iter()
        .filter(|(id, _)| !removed.contains(id))
        .filter_map(|(_, s)| s.postgres.clone())
        .collect();
    let records = crate::wal::catalog::list(repo)?.records;
    let names: Vec<&str> = records.iter().map(|(_, r)| r.name.as_str()).collect();
    let seg_size = timeline::segment_size(records.iter().map(|(_, r)| (r.name.as_str(), r.size)));
    let deleted = timeline::to_delete(
        &names,
        seg_size,
        &base_backups,
        crate::host::now_ns(),
        window,
    );
    let doomed: HashSet<&str> = deleted.iter().map(String::as_str).collect();
    let ids = records
        .iter()
        .filter(|(_, r)| doomed.contains(r.name.as_str()))
        .map(|(id, _)| *id)
        .collect();
    let left: Vec<&str> = names.into_iter().filter(|n| !doomed.contains(n)).collect();
    let oldest_kept = left
        .iter()
        .filter(|n| matches!(WalName::parse(n), Some(WalName::Segment(_))))
        .min()
        .map(|n| n.to_string());
    let forgotten = WalForgotten {
        deleted,
        kept: left.len(),
        oldest_kept,
        base_backups: base_backups.len(),
    };
    Ok((forgotten, ids))
}

/// The policy's decisions for each group of `snaps`; refuses to empty a group unless allowed.
fn decide(snaps: &[(SnapshotId, Snapshot)], opts: &ForgetOptions) -> Result<Vec<GroupReport>> {
    let mut groups: BTreeMap<String, Vec<(SnapshotId, Snapshot)>> = BTreeMap::new();
    for s in snaps {
        groups
            .entry(opts.group_by.key(&s.1))
            .or_default()
            .push(s.clone());
    }
    let mut out = Vec::new();
    for (key, group) in groups {
        let decisions = retention::apply(&group, &opts.policy);
        if decisions.iter().all(|d| !d.keep) && !opts.allow_empty_group {
            return Err(Error::usage(format!(
                "the policy would remove every snapshot of group [{key}]; pass --allow-empty-group if that is intended"
            )));
        }
        let times: HashMap<SnapshotId, i64> =
            group.iter().map(|(i, s)| (*i, s.time_unix_ns)).collect();
        let decisions = decisions
            .into_iter()
            .map(|d| {
                let t = times[&d.id];
                (d, t)
            })
            .collect();
        out.push(GroupReport { key, decisions });
    }
    Ok(out)
}

//! `forget`: removes snapshots named by id, or those a keep policy lets go, group by group.

use super::select::Selection;
use crate::error::{Error, Result};
use crate::format::Snapshot;
use crate::id::SnapshotId;
use crate::oplog::CommandLine;
use crate::repository::Repository;
use crate::retention::{self, Decision, GroupBy, Policy};
use std::collections::{BTreeMap, HashMap};

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
}

impl ForgetOptions {
    /// The usage errors found without the repository.
    pub fn validate(&self) -> Result<()> {
        let by_id = !self.selection.ids.is_empty();
        if !by_id && self.policy.is_empty() {
            return Err(Error::usage(
                "forget needs snapshot ids or a keep policy (--keep-last, --keep-daily, ...)",
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
    if opts.selection.ids.is_empty() {
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
    if opts.dry_run {
        return Ok(result);
    }
    let session = repo.write_session()?;
    for id in &result.removed {
        session.delete_file::<Snapshot>(id)?;
    }
    result.warnings.extend(crate::oplog::record_or_warn(
        &session,
        command_line,
        "forget",
        "ok",
        result.removed.clone(),
    ));
    Ok(result)
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

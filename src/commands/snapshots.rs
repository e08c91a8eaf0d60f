//! `snapshots`: the snapshots a filter lets through, optionally only the newest of each host
//! and set of paths.

use super::select::SnapshotFilter;
use crate::error::Result;
use crate::format::Snapshot;
use crate::id::SnapshotId;
use crate::repository::Repository;
use std::collections::HashMap;

#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub filter: SnapshotFilter,
    /// Only the newest N snapshots of each host and set of paths.
    pub latest: Option<usize>,
}

/// The matching snapshots, oldest first.
pub fn list(repo: &Repository, opts: &ListOptions) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let snaps = opts.filter.apply(&repo.list_snapshots()?);
    Ok(match opts.latest {
        Some(n) => latest_per_group(snaps, n),
        None => snaps,
    })
}

/// Keeps the newest `n` snapshots of each host and set of paths (`snaps` oldest first), in
/// their order.
pub fn latest_per_group(
    snaps: Vec<(SnapshotId, Snapshot)>,
    n: usize,
) -> Vec<(SnapshotId, Snapshot)> {
    let mut counts: HashMap<(String, Vec<String>), usize> = HashMap::new();
    let mut keep = vec![false; snaps.len()];
    for (i, (_, s)) in snaps.iter().enumerate().rev() {
        let mut paths = s.paths.clone();
        paths.sort();
        let c = counts.entry((s.hostname.clone(), paths)).or_insert(0);
        if *c < n {
            keep[i] = true;
            *c += 1;
        }
    }
    snaps
        .into_iter()
        .zip(keep)
        .filter_map(|(s, k)| k.then_some(s))
        .collect()
}

//! `prune` on a repository with Object Lock: reclaims the versions that deletes left behind.
//!
//! On a versioned bucket ocvault's deletes only add delete markers; the locked versions stay
//! (and are billed) until deleted by version id, which S3 refuses while they are locked. One
//! ListObjectVersions pass finds every key whose latest entry is a delete marker; each older
//! version of such a key whose retention is over (one HEAD each, none for transient files,
//! which are never locked) is deleted, then the markers once no version is left. What is
//! still locked is counted and dated.

use crate::backend::lifecycle::{Lifecycle, StoredVersion};
use crate::backend::StorageError;
use crate::error::{Error, Result};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;

/// Folders of files that are never locked: their old versions go without a HEAD.
const TRANSIENT_PREFIXES: [&str; 4] = ["locks/", "prune/", "retention/", "tmp/"];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReclaimReport {
    /// Old versions of deleted files deleted for good (with `dry_run`: deletable).
    pub versions_deleted: u64,
    pub version_bytes_deleted: u64,
    pub delete_markers_removed: u64,
    /// Old versions still locked (or whose deletion the storage refused).
    pub versions_retained: u64,
    pub version_bytes_retained: u64,
    /// The latest retain-until among them.
    pub retained_until_unix_s: Option<i64>,
    /// Of those, versions of packs (`data/`): data no snapshot has any more, still readable
    /// (encrypted) in the locked versions.
    pub packs_retained: u64,
    pub pack_bytes_retained: u64,
    pub packs_retained_until_unix_s: Option<i64>,
    /// HEADs made to read versions' retention.
    pub retention_lookups: u64,
}

impl ReclaimReport {
    fn retain(&mut self, v: &StoredVersion, until: Option<i64>) {
        self.versions_retained += 1;
        self.version_bytes_retained += v.size;
        self.retained_until_unix_s = self.retained_until_unix_s.max(until);
        if v.path.starts_with("data/") {
            self.packs_retained += 1;
            self.pack_bytes_retained += v.size;
            self.packs_retained_until_unix_s = self.packs_retained_until_unix_s.max(until);
        }
    }
}

fn is_transient(path: &str) -> bool {
    TRANSIENT_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// A refusal of a permanent delete: the version is still locked (or the credentials may not
/// delete versions); counted as retained, never an error.
fn refused(e: &StorageError) -> bool {
    e.kind() == opendal::ErrorKind::PermissionDenied
}

/// Reclaims (or with `dry_run` only counts) the versions of deleted files whose retention is
/// over by `now_s` (the storage's clock), `in_flight` requests at once.
pub async fn reclaim(
    lc: &dyn Lifecycle,
    now_s: i64,
    dry_run: bool,
    in_flight: usize,
) -> Result<ReclaimReport> {
    let versions = lc.list_versions("").await.map_err(Error::from)?;
    let mut by_key: BTreeMap<&str, Vec<&StoredVersion>> = BTreeMap::new();
    for v in &versions {
        by_key.entry(v.path.as_str()).or_default().push(v);
    }
    let mut report = ReclaimReport::default();
    // Old versions to judge: of deleted keys, and of transient keys whatever their state.
    let mut candidates: Vec<&StoredVersion> = Vec::new();
    let mut markers: BTreeMap<&str, Vec<&StoredVersion>> = BTreeMap::new();
    for (key, vs) in &by_key {
        let deleted = vs.iter().any(|v| v.is_latest && v.is_delete_marker);
        if deleted {
            markers.insert(
                key,
                vs.iter().filter(|v| v.is_delete_marker).copied().collect(),
            );
        }
        if deleted || is_transient(key) {
            candidates.extend(vs.iter().filter(|v| !v.is_latest && !v.is_delete_marker));
        }
    }
    let judged: Vec<(&StoredVersion, Result<Option<i64>>)> = futures::stream::iter(candidates)
        .map(|v| async move {
            if is_transient(&v.path) {
                return (v, Ok(None));
            }
            let r = lc.version_retention(&v.path, &v.version_id).await;
            (v, r.map_err(Error::from))
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    let mut deletable = Vec::new();
    for (v, retention) in judged {
        if !is_transient(&v.path) {
            report.retention_lookups += 1;
        }
        match retention? {
            Some(until) if until > now_s => report.retain(v, Some(until)),
            _ => deletable.push(v),
        }
    }
    let mut left: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, vs) in &by_key {
        left.insert(key, vs.iter().filter(|v| !v.is_delete_marker).count());
    }
    for (v, r) in delete_versions(lc, &deletable, dry_run, in_flight).await {
        match r {
            Ok(()) => {
                report.versions_deleted += 1;
                report.version_bytes_deleted += v.size;
                *left.get_mut(v.path.as_str()).expect("listed key") -= 1;
            }
            Err(e) if refused(&e) => report.retain(v, None),
            Err(e) => return Err(e.into()),
        }
    }
    // A deleted key's markers, once no version is left under them.
    let empty: Vec<&StoredVersion> = markers
        .into_iter()
        .filter(|(key, _)| left[key] == 0)
        .flat_map(|(_, ms)| ms)
        .collect();
    for (_, r) in delete_versions(lc, &empty, dry_run, in_flight).await {
        match r {
            Ok(()) => report.delete_markers_removed += 1,
            Err(e) if refused(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

/// Deletes versions by id, `in_flight` at once; a version already gone counts as deleted.
async fn delete_versions<'v>(
    lc: &dyn Lifecycle,
    versions: &[&'v StoredVersion],
    dry_run: bool,
    in_flight: usize,
) -> Vec<(&'v StoredVersion, std::result::Result<(), StorageError>)> {
    futures::stream::iter(versions.iter().copied())
        .map(|v| async move {
            if dry_run {
                return (v, Ok(()));
            }
            match lc.delete_version(&v.path, &v.version_id).await {
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => (v, Ok(())),
                r => (v, r),
            }
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await
}

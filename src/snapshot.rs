//! Snapshots: finding them by id prefix or `latest`, filtering, grouping, and their times.

use crate::error::{Error, Result};
use crate::format::Snapshot;
use crate::id::SnapshotId;

pub fn format_time(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

pub fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

pub fn parse_time(s: &str) -> Result<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| {
        Error::usage(format!(
            "invalid time {s:?}: {e} (want RFC 3339, e.g. 2026-01-31T23:00:00Z)"
        ))
    })?;
    t.timestamp_nanos_opt()
        .ok_or_else(|| Error::usage(format!("time {s:?} out of range")))
}

/// Resolves `latest` or a unique hex prefix among `snaps` (oldest first).
pub fn resolve<'a>(
    snaps: &'a [(SnapshotId, Snapshot)],
    spec: &str,
) -> Result<&'a (SnapshotId, Snapshot)> {
    if spec == "latest" {
        return snaps
            .last()
            .ok_or_else(|| Error::usage("the repository holds no snapshot"));
    }
    let spec_l = spec.to_ascii_lowercase();
    if spec_l.is_empty() || !spec_l.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::usage(format!("{spec:?} is not a snapshot id")));
    }
    let matches: Vec<_> = snaps
        .iter()
        .filter(|(id, _)| id.to_hex().starts_with(&spec_l))
        .collect();
    match matches.len() {
        0 => Err(Error::usage(format!("no snapshot with id {spec}"))),
        1 => Ok(matches[0]),
        n => Err(Error::usage(format!(
            "snapshot id prefix {spec} is ambiguous: {n} snapshots match"
        ))),
    }
}

/// Filters as `snapshots`, `forget` and `--parent` selection use them.
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    pub tags: Vec<String>,
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.tags.is_empty() && self.paths.is_empty()
    }

    /// The snapshots of `snaps` that match, in their order.
    pub fn apply(&self, snaps: &[(SnapshotId, Snapshot)]) -> Vec<(SnapshotId, Snapshot)> {
        snaps
            .iter()
            .filter(|(_, s)| self.matches(s))
            .cloned()
            .collect()
    }

    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.hostname))
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.paths.iter().all(|p| s.paths.contains(p))
    }
}

/// The parent for a new snapshot: the latest one of the same host and the same paths.
pub fn find_parent<'a>(
    snaps: &'a [(SnapshotId, Snapshot)],
    host: &str,
    paths: &[String],
) -> Option<&'a (SnapshotId, Snapshot)> {
    let mut want: Vec<&String> = paths.iter().collect();
    want.sort();
    snaps.iter().rev().find(|(_, s)| {
        let mut have: Vec<&String> = s.paths.iter().collect();
        have.sort();
        s.hostname == host && have == want
    })
}

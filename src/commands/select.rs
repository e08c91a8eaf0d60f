//! Which snapshots a command works on: ids (or unique prefixes, or `latest`), or every snapshot,
//! narrowed by host, tag and path. Written once for every command that selects snapshots.

use crate::error::{Error, Result};
use crate::format::Snapshot;
use crate::id::SnapshotId;
pub use crate::snapshot::SnapshotFilter;

/// `ID... | --all`, with `--host/--tag/--path` narrowing the snapshots `--all` (or a default of
/// all) considers. Filters with ids are refused rather than silently ignored.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub ids: Vec<String>,
    pub all: bool,
    pub filter: SnapshotFilter,
}

impl Selection {
    /// Every snapshot the filter lets through.
    pub fn all(filter: SnapshotFilter) -> Selection {
        Selection {
            ids: Vec::new(),
            all: true,
            filter,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && !self.all
    }

    /// Usage errors found without the repository: for commands that need ids or `--all`
    /// (`command` names it in the message), and filters beside ids.
    pub fn validate(&self, command: &str, ids_or_all_required: bool) -> Result<()> {
        if ids_or_all_required && self.is_empty() {
            return Err(Error::usage(format!(
                "{command} needs snapshot ids or --all"
            )));
        }
        if !self.ids.is_empty() && !self.filter.is_empty() {
            return Err(Error::usage(
                "--host, --tag and --path select among all snapshots; give them with --all, not with snapshot ids",
            ));
        }
        Ok(())
    }

    /// The chosen snapshots from `snaps` (oldest first): the ids in the order given, or
    /// every snapshot the filter lets through. Unknown or ambiguous ids are usage errors.
    pub fn select(&self, snaps: &[(SnapshotId, Snapshot)]) -> Result<Vec<(SnapshotId, Snapshot)>> {
        if self.ids.is_empty() {
            return Ok(self.filter.apply(snaps));
        }
        self.ids
            .iter()
            .map(|spec| crate::snapshot::resolve(snaps, spec).cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(host: &str, tag: &str) -> Snapshot {
        Snapshot {
            time_unix_ns: 0,
            hostname: host.into(),
            username: String::new(),
            paths: vec!["/srv".into()],
            tags: vec![tag.into()],
            tree: Default::default(),
            parent: None,
            excludes: Vec::new(),
            incomplete: false,
            summary: Default::default(),
            program_version: String::new(),
            postgres: None,
            log_heads: Vec::new(),
        }
    }

    fn repo_snaps() -> Vec<(SnapshotId, Snapshot)> {
        (0u8..3)
            .map(|i| {
                let mut b = [0u8; 32];
                b[0] = 0x10 * (i + 1);
                (
                    SnapshotId(crate::id::Id(b)),
                    snap(if i == 1 { "b" } else { "a" }, "daily"),
                )
            })
            .collect()
    }

    #[test]
    fn ids_filters_and_all() {
        let snaps = repo_snaps();
        let by_id = Selection {
            ids: vec!["20".into(), "latest".into()],
            ..Selection::default()
        };
        let got = by_id.select(&snaps).unwrap();
        assert_eq!(
            got.iter().map(|s| s.0 .0 .0[0]).collect::<Vec<_>>(),
            [0x20, 0x30]
        );
        let host_a = Selection::all(SnapshotFilter {
            hosts: vec!["a".into()],
            ..SnapshotFilter::default()
        });
        assert_eq!(host_a.select(&snaps).unwrap().len(), 2);
        assert!(Selection::default().validate("copy", true).is_err());
        assert!(Selection::default().validate("stats", false).is_ok());
        let mixed = Selection {
            ids: vec!["10".into()],
            filter: host_a.filter.clone(),
            ..Selection::default()
        };
        assert!(matches!(mixed.validate("tag", true), Err(Error::Usage(_))));
        let unknown = Selection {
            ids: vec!["ff".into()],
            ..Selection::default()
        };
        assert!(matches!(unknown.select(&snaps), Err(Error::Usage(_))));
    }
}

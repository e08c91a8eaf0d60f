//! `pitr`: point-in-time recovery of PostgreSQL. Picks the base backup that serves the
//! target, unpacks it into a new data folder and writes the recovery settings that make the
//! server fetch the archived WAL from this repository and replay it to the target.

use crate::error::{Error, Result};
use crate::format::{PgBaseBackup, Snapshot, WalRecord};
use crate::id::SnapshotId;
use crate::repository::{IndexedRepository, Repository};
use crate::snapshot::rfc3339;
use crate::wal::name::{Lsn, WalName};
use crate::wal::{catalog, timeline};
use std::io::Write;
use std::path::Path;

/// Where recovery stops.
#[derive(Clone, Debug)]
pub enum PitrTarget {
    /// A moment (ns since the epoch) and the text the user gave, handed to PostgreSQL as is.
    Time(i64, String),
    /// The end of the archived WAL.
    Latest,
}

pub struct PitrOptions {
    pub target: PitrTarget,
    /// A base backup snapshot chosen by the user.
    pub base: Option<String>,
}

/// What recovery will use.
#[derive(Debug)]
pub struct PitrPlan {
    pub base_id: SnapshotId,
    pub base: PgBaseBackup,
    /// The newest archived WAL segment and when it was archived.
    pub newest_wal: Option<(String, i64)>,
}

/// Parses a target time such as `2026-12-02 03:30:00+00` or RFC 3339; a zone is required
/// (PostgreSQL would otherwise read it in its own time zone).
pub fn parse_target_time(s: &str) -> Result<i64> {
    let t = s.trim();
    let parsed = chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .or_else(|| chrono::DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z").ok())
        .or_else(|| chrono::DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f %#z").ok())
        .ok_or_else(|| {
            Error::usage(format!(
                "--time {s:?}: give a moment with its zone, e.g. '2026-12-02 03:30:00+00'"
            ))
        })?;
    parsed
        .timestamp_nanos_opt()
        .ok_or_else(|| Error::usage(format!("--time {s:?} is out of range")))
}

/// The base backups whose stop is known. A backup host with a write-only key cannot read the
/// backup history file when it saves the snapshot, so the stop is looked up here instead.
fn base_backups(
    repo: &Repository,
    snaps: Vec<(SnapshotId, Snapshot)>,
) -> Vec<(SnapshotId, PgBaseBackup)> {
    snaps
        .into_iter()
        .filter_map(|(id, s)| Some((id, s.postgres?)))
        .filter_map(|(id, mut pg)| {
            if pg.stop_lsn.is_none() {
                let _ = crate::wal::basebackup::fill_stop(repo, &mut pg);
            }
            (pg.stop_unix_ns.is_some() && pg.stop_lsn.is_some()).then_some((id, pg))
        })
        .collect()
}

fn newest_segment(records: &[(crate::id::Id, WalRecord)]) -> Option<(String, i64)> {
    records
        .iter()
        .filter(|(_, r)| matches!(WalName::parse(&r.name), Some(WalName::Segment(_))))
        .max_by_key(|(_, r)| r.archived_unix_ns)
        .map(|(_, r)| (r.name.clone(), r.archived_unix_ns))
}

/// Chooses the base backup: the one given, or the newest that had stopped by the target.
/// Refuses a target no base backup and archived WAL can reach, naming what can be reached.
pub fn plan(indexed: &IndexedRepository, opts: &PitrOptions) -> Result<PitrPlan> {
    let repo: &Repository = indexed;
    catalog::require_wal_support(repo)?;
    let catalog = catalog::list(repo)?;
    let newest_wal = newest_segment(&catalog.records);
    let bases = base_backups(repo, repo.list_snapshots()?);
    let reachable = || {
        match (bases.iter().filter_map(|(_, b)| b.stop_unix_ns).min(), &newest_wal) {
        (Some(oldest), Some((name, at))) => format!(
            "the oldest reachable moment is {} (end of the oldest base backup), the newest about {} (WAL file {name} archived)",
            rfc3339(oldest),
            rfc3339(*at)
        ),
        (None, _) => "the repository holds no complete base backup".into(),
        (_, None) => "the repository holds no archived WAL".into(),
    }
    };
    let chosen = match (&opts.base, &opts.target) {
        (Some(spec), _) => {
            let (id, snap) = repo.find_snapshot(spec)?;
            let pg = snap.postgres.ok_or_else(|| {
                Error::usage(format!(
                    "snapshot {} is not a PostgreSQL base backup",
                    id.short()
                ))
            })?;
            (id, pg)
        }
        (None, PitrTarget::Latest) => bases
            .iter()
            .max_by_key(|(_, b)| b.stop_unix_ns)
            .cloned()
            .ok_or_else(|| Error::usage(format!("nothing to recover: {}", reachable())))?,
        (None, PitrTarget::Time(t, text)) => bases
            .iter()
            .filter(|(_, b)| b.stop_unix_ns.is_some_and(|s| s <= *t))
            .max_by_key(|(_, b)| b.stop_unix_ns)
            .cloned()
            .ok_or_else(|| Error::usage(format!("cannot recover to {text}: {}", reachable())))?,
    };
    if let PitrTarget::Time(t, text) = &opts.target {
        match &newest_wal {
            Some((_, at)) if at >= t => {}
            _ => {
                return Err(Error::usage(format!(
                    "cannot recover to {text}: it is newer than the archived WAL; {}",
                    reachable()
                )))
            }
        }
        if chosen.1.stop_unix_ns.is_some_and(|s| s > *t) {
            return Err(Error::usage(format!(
                "base backup {} ended after {text}: it cannot recover to an earlier moment",
                chosen.0.short()
            )));
        }
    }
    refuse_gaps(indexed, &catalog.records, &chosen, &opts.target)?;
    Ok(PitrPlan {
        base_id: chosen.0,
        base: chosen.1,
        newest_wal,
    })
}

/// Refuses a recovery that a gap in the archive would cut short: PostgreSQL takes a missing
/// file as the end of the archive and promotes there, without the transactions after it.
/// A gap after the target (the first segment archived after it) does not matter.
fn refuse_gaps(
    indexed: &IndexedRepository,
    records: &[(crate::id::Id, WalRecord)],
    base: &(SnapshotId, PgBaseBackup),
    target: &PitrTarget,
) -> Result<()> {
    let mut histories = std::collections::HashMap::new();
    for (_, rec) in records {
        if let Some(WalName::History { timeline }) = WalName::parse(&rec.name) {
            let text = catalog::read_text(rec, |b| indexed.read_blob(b))?;
            histories.insert(timeline, timeline::parse_history(&text));
        }
    }
    let names: Vec<&str> = records.iter().map(|(_, r)| r.name.as_str()).collect();
    let seg_size = timeline::segment_size(records.iter().map(|(_, r)| (r.name.as_str(), r.size)));
    let position = |name: &str| match WalName::parse(name) {
        Some(WalName::Segment(s)) => Some(s.number(seg_size)),
        _ => None,
    };
    // Segments from here on are past the target: a gap there is never reached.
    let past_target = match target {
        PitrTarget::Latest => None,
        PitrTarget::Time(t, _) => records
            .iter()
            .filter(|(_, r)| r.archived_unix_ns >= *t)
            .filter_map(|(_, r)| position(&r.name))
            .min(),
    };
    let gaps = timeline::gaps(&names, &histories, std::slice::from_ref(&base.1), seg_size);
    let blocking = gaps
        .iter()
        .find(|g| match (position(&g.first_missing), past_target) {
            (Some(p), Some(limit)) => p <= limit,
            _ => true,
        });
    match blocking {
        None => Ok(()),
        Some(g) => Err(Error::other(format!(
            "the WAL archive has a gap after base backup {}: {} is missing ({} missing in a row); recovery would stop there and promote without what follows",
            base.0.short(),
            g.first_missing,
            g.missing
        ))),
    }
}

/// Unpacks the base backup's tar into `dir` (which must be empty or absent; made 0700, as
/// PostgreSQL requires) and makes sure `pg_wal` exists.
pub fn unpack_base(repo: &IndexedRepository, plan: &PitrPlan, dir: &Path) -> Result<u64> {
    use std::os::unix::fs::PermissionsExt;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .next()
            .is_some()
    {
        return Err(Error::usage(format!("{}: not empty", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(dir, e))?;
    let snap: Snapshot = repo.load_file(&plan.base_id)?;
    let node = the_tar_file(repo, &snap)?;
    let (reader, mut writer) = std::io::pipe().map_err(|e| Error::io(dir, e))?;
    let written = std::thread::scope(|s| {
        let dumper = s.spawn(move || {
            let r = crate::dump::dump(repo, &node, &mut writer);
            drop(writer);
            r
        });
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(false);
        let unpacked = archive.unpack(dir).map_err(|e| Error::io(dir, e));
        // Drain what the tar reader left (its end-of-archive blocks), so the dumper finishes.
        drop(archive);
        let dumped = dumper.join().expect("dump thread panicked");
        unpacked.and(dumped)
    })?;
    std::fs::create_dir_all(dir.join("pg_wal").join("archive_status"))
        .map_err(|e| Error::io(dir, e))?;
    Ok(written)
}

/// The one file of a base backup snapshot (`--stdin-filename`, e.g. base.tar).
fn the_tar_file(repo: &IndexedRepository, snap: &Snapshot) -> Result<crate::format::Node> {
    let name = snap
        .paths
        .iter()
        .find_map(|p| p.strip_prefix("stdin:"))
        .ok_or_else(|| Error::usage("the base backup snapshot holds no tar stream"))?;
    crate::tree::find_node(repo, &snap.tree, name)
}

/// Writes `recovery.signal` and appends the recovery settings to `postgresql.auto.conf`.
pub fn write_recovery_settings(
    dir: &Path,
    restore_command: &str,
    target: &PitrTarget,
    base_id: &SnapshotId,
) -> Result<()> {
    let quote = |v: &str| format!("'{}'", v.replace('\'', "''"));
    let mut conf = format!(
        "\n# Added by ocvault pitr: recovery from base backup {}\nrestore_command = {}\n",
        base_id.short(),
        quote(restore_command)
    );
    if let PitrTarget::Time(_, text) = target {
        conf.push_str(&format!("recovery_target_time = {}\n", quote(text)));
        conf.push_str("recovery_target_action = 'promote'\n");
    }
    conf.push_str("recovery_target_timeline = 'latest'\n");
    let auto = dir.join("postgresql.auto.conf");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&auto)
        .map_err(|e| Error::io(&auto, e))?;
    f.write_all(conf.as_bytes())
        .map_err(|e| Error::io(&auto, e))?;
    let signal = dir.join("recovery.signal");
    std::fs::write(&signal, b"").map_err(|e| Error::io(&signal, e))?;
    Ok(())
}

/// The LSN text PostgreSQL shows for a base backup's start, for messages.
pub fn describe(pg: &PgBaseBackup) -> String {
    format!(
        "started {} at {}, ended {}",
        rfc3339(pg.start_unix_ns),
        Lsn(pg.start_lsn),
        pg.stop_unix_ns.map(rfc3339).unwrap_or_else(|| "?".into())
    )
}

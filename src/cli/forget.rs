use super::GlobalOptions;
use crate::error::{Error, Result};
use crate::format::Snapshot;
use crate::retention::{self, GroupBy, Policy};
use crate::snapshot::SnapshotFilter;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to forget (ids or unique prefixes); without them, the keep policy decides
    ids: Vec<String>,
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have snapshots
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot this close to the group's newest (e.g. 2d12h)
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<String>,
    #[arg(long, value_name = "DURATION")]
    keep_within_hourly: Option<String>,
    #[arg(long, value_name = "DURATION")]
    keep_within_daily: Option<String>,
    #[arg(long, value_name = "DURATION")]
    keep_within_weekly: Option<String>,
    #[arg(long, value_name = "DURATION")]
    keep_within_monthly: Option<String>,
    #[arg(long, value_name = "DURATION")]
    keep_within_yearly: Option<String>,
    /// Keep snapshots with this tag (repeatable)
    #[arg(long = "keep-tag", value_name = "TAG")]
    keep_tags: Vec<String>,
    /// Group snapshots by these fields (host, paths, tags)
    #[arg(long, default_value = "host,paths")]
    group_by: String,
    /// Only snapshots of this host (repeatable)
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Only snapshots with this tag (repeatable)
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only snapshots with this path (repeatable)
    #[arg(long = "path")]
    paths: Vec<String>,
    /// Allow a policy to remove every snapshot of a group
    #[arg(long)]
    allow_empty_group: bool,
    /// List what would be kept and removed; change nothing
    #[arg(long)]
    dry_run: bool,
    /// Run prune afterwards
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_args: super::prune::PruneArgs,
}

fn dur(s: &Option<String>, flag: &str) -> Result<Option<Duration>> {
    s.as_deref()
        .map(|v| {
            humantime::parse_duration(v)
                .map_err(|e| Error::usage(format!("invalid {flag} {v:?}: {e}")))
        })
        .transpose()
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<i32> {
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: dur(&a.keep_within, "--keep-within")?,
        within_hourly: dur(&a.keep_within_hourly, "--keep-within-hourly")?,
        within_daily: dur(&a.keep_within_daily, "--keep-within-daily")?,
        within_weekly: dur(&a.keep_within_weekly, "--keep-within-weekly")?,
        within_monthly: dur(&a.keep_within_monthly, "--keep-within-monthly")?,
        within_yearly: dur(&a.keep_within_yearly, "--keep-within-yearly")?,
        tags: a.keep_tags.clone(),
    };
    let group_by = GroupBy::parse(&a.group_by).ok_or_else(|| {
        Error::usage(format!(
            "invalid --group-by {:?}: use host, paths, tags",
            a.group_by
        ))
    })?;
    if a.ids.is_empty() && policy.is_empty() {
        return Err(Error::usage(
            "forget needs snapshot ids or a keep policy (--keep-last, --keep-daily, ...)",
        ));
    }
    if !a.ids.is_empty() && !policy.is_empty() {
        return Err(Error::usage(
            "give either snapshot ids or a keep policy, not both",
        ));
    }
    let prune_opts = a.prune_args.options(a.dry_run)?;
    let repo = g.open()?;
    let snaps = repo.list_snapshots()?;
    let mut remove = Vec::new();
    let mut report = Vec::new();
    if !a.ids.is_empty() {
        for spec in &a.ids {
            let (id, _) = crate::snapshot::resolve(&snaps, spec)?;
            remove.push(*id);
        }
    } else {
        let filter = SnapshotFilter {
            hosts: a.hosts.clone(),
            tags: a.tags.clone(),
            paths: a.paths.clone(),
        };
        let mut groups: BTreeMap<String, Vec<(crate::SnapshotId, crate::format::Snapshot)>> =
            BTreeMap::new();
        for s in snaps.iter().filter(|(_, s)| filter.matches(s)) {
            groups
                .entry(group_by.key(&s.1))
                .or_default()
                .push(s.clone());
        }
        for (key, group) in &groups {
            let decisions = retention::apply(group, &policy);
            if decisions.iter().all(|d| !d.keep) && !a.allow_empty_group {
                return Err(Error::usage(format!(
                    "the policy would remove every snapshot of group [{key}]; pass --allow-empty-group if that is intended"
                )));
            }
            let times: std::collections::HashMap<_, _> =
                group.iter().map(|(i, s)| (*i, s.time_unix_ns)).collect();
            remove.extend(decisions.iter().filter(|d| !d.keep).map(|d| d.id));
            report.push((key.clone(), decisions, times));
        }
    }
    if g.json {
        let groups: Vec<_> = report
            .iter()
            .map(|(key, ds, times)| {
                serde_json::json!({
                    "group": key,
                    "keep": ds.iter().filter(|d| d.keep).map(|d| serde_json::json!({"id": d.id.to_hex(), "time": crate::snapshot::rfc3339(times[&d.id]), "reasons": d.reasons})).collect::<Vec<_>>(),
                    "remove": ds.iter().filter(|d| !d.keep).map(|d| serde_json::json!({"id": d.id.to_hex(), "time": crate::snapshot::rfc3339(times[&d.id])})).collect::<Vec<_>>(),
                })
            })
            .collect();
        super::print_json(
            &serde_json::json!({"dry_run": a.dry_run, "groups": groups, "removed": remove.iter().map(|i| i.to_hex()).collect::<Vec<_>>()}),
        );
    } else {
        for (key, ds, times) in &report {
            println!(
                "group [{key}]: keep {}, remove {}",
                ds.iter().filter(|d| d.keep).count(),
                ds.iter().filter(|d| !d.keep).count()
            );
            for d in ds {
                let t = crate::snapshot::format_time(times[&d.id]);
                if d.keep {
                    println!("  keep    {} {t}  ({})", d.id.short(), d.reasons.join(", "));
                } else {
                    println!("  remove  {} {t}", d.id.short());
                }
            }
        }
        if report.is_empty() {
            for id in &remove {
                println!("remove  {}", id.short());
            }
        }
    }
    if a.dry_run {
        return Ok(0);
    }
    forget_and_prune(g, &repo, &remove, a.prune.then_some(&prune_opts))
}

/// Deletes the snapshots, then prunes if asked, in one write session: a second session would
/// make the prune wait for this one as for a running backup.
fn forget_and_prune(
    g: &GlobalOptions,
    repo: &crate::repository::Repository,
    remove: &[crate::SnapshotId],
    prune: Option<&crate::prune::PruneOptions>,
) -> Result<i32> {
    let session = repo.write_session()?;
    for id in remove {
        session.delete_file::<Snapshot>(id)?;
    }
    crate::oplog::record(&session, "forget", "ok", remove.to_vec());
    if !g.json {
        println!("forgot {} snapshots", remove.len());
    }
    if let Some(opts) = prune {
        super::prune::run_prune(g, repo, Some(&session), opts)?;
    }
    Ok(0)
}

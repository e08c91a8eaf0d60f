use super::args::{duration, SelectionArgs};
use super::{GlobalOptions, Outcome};
use ocvault::commands::forget::{self, ForgetOptions, ForgetResult};
use ocvault::error::{Error, Result};
use ocvault::retention::{GroupBy, Policy};
use ocvault::retention_lock::ExtendReport;
use ocvault::snapshot::{format_time, rfc3339};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to forget (ids or unique prefixes); without them, the keep policy decides
    /// among the snapshots --host, --tag and --path let through
    #[command(flatten)]
    pub(super) selection: SelectionArgs,
    #[arg(long, value_name = "N")]
    pub(super) keep_last: Option<u32>,
    #[arg(long, value_name = "N")]
    pub(super) keep_hourly: Option<u32>,
    #[arg(long, value_name = "N")]
    pub(super) keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have snapshots
    #[arg(long, value_name = "N")]
    pub(super) keep_weekly: Option<u32>,
    #[arg(long, value_name = "N")]
    pub(super) keep_monthly: Option<u32>,
    #[arg(long, value_name = "N")]
    pub(super) keep_yearly: Option<u32>,
    /// Keep every snapshot this close to the group's newest (e.g. 2d12h)
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(super) keep_within: Option<Duration>,
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(super) keep_within_hourly: Option<Duration>,
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(super) keep_within_daily: Option<Duration>,
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(super) keep_within_weekly: Option<Duration>,
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(super) keep_within_monthly: Option<Duration>,
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(super) keep_within_yearly: Option<Duration>,
    /// Then delete the archived PostgreSQL WAL that neither the kept base backups nor
    /// point-in-time recovery over this window (e.g. 7d) need
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    keep_wal_within: Option<Duration>,
    /// Keep snapshots with this tag (repeatable)
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub(super) keep_tags: Vec<String>,
    /// Group snapshots by these fields (host, paths, tags)
    #[arg(long, default_value = "host,paths", value_parser = group_by)]
    group_by: GroupBy,
    /// Allow a policy to remove every snapshot of a group
    #[arg(long)]
    allow_empty_group: bool,
    /// List what would be kept and removed; change nothing
    #[arg(long)]
    dry_run: bool,
    /// Run prune afterwards
    #[arg(long)]
    pub(super) prune: bool,
    #[command(flatten)]
    prune_args: super::prune::PruneArgs,
}

fn group_by(s: &str) -> std::result::Result<GroupBy, String> {
    GroupBy::parse(s).ok_or_else(|| "use host, paths, tags".to_string())
}

impl Args {
    fn options(self) -> ForgetOptions {
        ForgetOptions {
            selection: self.selection.selection(),
            policy: Policy {
                last: self.keep_last,
                hourly: self.keep_hourly,
                daily: self.keep_daily,
                weekly: self.keep_weekly,
                monthly: self.keep_monthly,
                yearly: self.keep_yearly,
                within: self.keep_within,
                within_hourly: self.keep_within_hourly,
                within_daily: self.keep_within_daily,
                within_weekly: self.keep_within_weekly,
                within_monthly: self.keep_within_monthly,
                within_yearly: self.keep_within_yearly,
                tags: self.keep_tags,
            },
            group_by: self.group_by,
            allow_empty_group: self.allow_empty_group,
            dry_run: self.dry_run,
            keep_wal_within: self.keep_wal_within,
        }
    }
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let (prune, dry_run) = (a.prune, a.dry_run);
    let prune_opts = a.prune_args.options(dry_run);
    let opts = a.options();
    opts.validate()?;
    let repo = g.open_full("forget snapshots")?;
    let result = forget::forget(&repo, &opts, &super::command_line())?;
    super::warn_all(&result.warnings);
    if g.json {
        print_json(&result, dry_run);
    } else {
        print_text(&result);
    }
    if dry_run {
        return Ok(Outcome::Success);
    }
    super::metrics::forget_done(&repo, &result);
    if !g.json {
        println!("forgot {} snapshots", result.removed.len());
        if let Some(w) = &result.wal {
            println!("deleted {} WAL files", w.deleted.len());
        }
        if let Some(r) = &result.retention {
            print_retention(r);
        }
    }
    if prune {
        super::prune::run_prune(g, &repo, &prune_opts)?;
    }
    match result.retention.filter(|r| r.failed > 0) {
        Some(r) => Err(Error::Backend(format!(
            "could not extend the Object Lock retention of {} objects ({}); run forget again \
             to retry",
            r.failed,
            r.first_error.unwrap_or_default()
        ))),
        None => Ok(Outcome::Success),
    }
}

fn print_retention(r: &ExtendReport) {
    let date = |t: Option<i64>| t.map(utc_date).unwrap_or_default();
    println!(
        "extended retention of {} objects ({}) to {}..{} in {} requests",
        r.objects_extended,
        indicatif::HumanBytes(r.bytes_extended),
        date(r.earliest_until_unix_s),
        date(r.latest_until_unix_s),
        r.requests
    );
}

/// A date (UTC) from seconds since the epoch.
pub fn utc_date(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| t.to_string())
}

fn print_json(r: &ForgetResult, dry_run: bool) {
    let groups: Vec<_> = r
        .groups
        .iter()
        .map(|grp| {
            let (keep, remove): (Vec<_>, Vec<_>) = grp.decisions.iter().partition(|(d, _)| d.keep);
            serde_json::json!({
                "group": grp.key,
                "keep": keep.iter().map(|(d, t)| serde_json::json!({"id": d.id.to_hex(), "time": rfc3339(*t), "reasons": d.reasons})).collect::<Vec<_>>(),
                "remove": remove.iter().map(|(d, t)| serde_json::json!({"id": d.id.to_hex(), "time": rfc3339(*t)})).collect::<Vec<_>>(),
            })
        })
        .collect();
    super::print_json(&serde_json::json!({
        "dry_run": dry_run,
        "groups": groups,
        "removed": r.removed.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
        "retention": r.retention,
        "wal": r.wal.as_ref().map(|w| serde_json::json!({
            "deleted": w.deleted.len(),
            "deleted_files": w.deleted,
            "kept": w.kept,
            "oldest_kept": w.oldest_kept,
            "base_backups": w.base_backups,
        })),
    }));
}

fn print_text(r: &ForgetResult) {
    for grp in &r.groups {
        let kept = grp.decisions.iter().filter(|(d, _)| d.keep).count();
        println!(
            "group [{}]: keep {kept}, remove {}",
            grp.key,
            grp.decisions.len() - kept
        );
        for (d, t) in &grp.decisions {
            let t = format_time(*t);
            if d.keep {
                println!("  keep    {} {t}  ({})", d.id.short(), d.reasons.join(", "));
            } else {
                println!("  remove  {} {t}", d.id.short());
            }
        }
    }
    if r.groups.is_empty() {
        for id in &r.removed {
            println!("remove  {}", id.short());
        }
    }
    if let Some(w) = &r.wal {
        println!(
            "WAL: {} base backups kept; remove {} WAL files, keep {} (oldest kept: {})",
            w.base_backups,
            w.deleted.len(),
            w.kept,
            w.oldest_kept.as_deref().unwrap_or("none")
        );
    }
}

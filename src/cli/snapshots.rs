use super::args::FilterArgs;
use super::{GlobalOptions, Outcome};
use indicatif::HumanBytes;
use ocvault::commands::snapshots::{self, ListOptions};
use ocvault::error::Result;
use ocvault::snapshot::{format_time, rfc3339};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filter: FilterArgs,
    /// Only the newest N snapshots of each host and paths
    #[arg(long, value_name = "N")]
    latest: Option<usize>,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let repo = g.open()?;
    let snaps = snapshots::list(
        &repo,
        &ListOptions {
            filter: a.filter.filter(),
            latest: a.latest,
        },
    )?;
    if g.json {
        let list: Vec<_> = snaps.iter().map(|(id, s)| snapshot_json(id, s)).collect();
        super::print_json(&list);
        return Ok(Outcome::Success);
    }
    println!(
        "{:<8}  {:<19}  {:<15}  {:<20}  {:>10}  paths",
        "id", "time", "host", "tags", "size"
    );
    for (id, s) in &snaps {
        println!(
            "{:<8}  {:<19}  {:<15}  {:<20}  {:>10}  {}{}",
            id.short(),
            format_time(s.time_unix_ns),
            s.hostname,
            s.tags.join(","),
            // HumanBytes ignores width: pad its text.
            HumanBytes(s.summary.bytes_total).to_string(),
            s.paths.join(" "),
            if s.incomplete { "  (incomplete)" } else { "" }
        );
    }
    println!("{} snapshots", snaps.len());
    Ok(Outcome::Success)
}

fn snapshot_json(id: &ocvault::Id, s: &ocvault::format::Snapshot) -> serde_json::Value {
    let postgres = s.postgres.as_ref().map(|pg| {
        use ocvault::wal::name::Lsn;
        serde_json::json!({
            "label": pg.label,
            "timeline": pg.timeline,
            "start_lsn": Lsn(pg.start_lsn).to_string(),
            "start_wal": pg.start_wal,
            "start_time": rfc3339(pg.start_unix_ns),
            "stop_lsn": pg.stop_lsn.map(|l| Lsn(l).to_string()),
            "stop_time": pg.stop_unix_ns.map(rfc3339),
            "stop_timeline": pg.stop_timeline,
        })
    });
    serde_json::json!({
        "postgres": postgres,
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": rfc3339(s.time_unix_ns),
        "hostname": s.hostname,
        "username": s.username,
        "paths": s.paths,
        "tags": s.tags,
        "tree": s.tree.to_hex(),
        "log_heads": s.log_heads.iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
        "parent": s.parent.map(|p| p.to_hex()),
        "incomplete": s.incomplete,
        "summary": s.summary,
    })
}

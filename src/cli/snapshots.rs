use super::GlobalOptions;
use crate::error::Result;
use crate::snapshot::SnapshotFilter;

#[derive(clap::Args)]
pub struct Args {
    /// Only snapshots of this host (repeatable)
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Only snapshots with this tag (repeatable: all must match)
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only snapshots that include this path (repeatable)
    #[arg(long = "path")]
    paths: Vec<String>,
    /// Only the newest N snapshots of each host and paths
    #[arg(long, value_name = "N")]
    latest: Option<usize>,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let filter = SnapshotFilter {
        hosts: a.hosts,
        tags: a.tags,
        paths: a.paths,
    };
    let mut snaps: Vec<_> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(_, s)| filter.matches(s))
        .collect();
    if let Some(n) = a.latest {
        let mut counts = std::collections::HashMap::new();
        let mut keep = vec![false; snaps.len()];
        for (i, (_, s)) in snaps.iter().enumerate().rev() {
            let mut paths = s.paths.clone();
            paths.sort();
            let c = counts.entry((s.hostname.clone(), paths)).or_insert(0usize);
            if *c < n {
                keep[i] = true;
                *c += 1;
            }
        }
        let mut i = 0;
        snaps.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }
    if g.json {
        let list: Vec<_> = snaps.iter().map(|(id, s)| snapshot_json(id, s)).collect();
        super::print_json(&list);
        return Ok(0);
    }
    println!(
        "{:<8}  {:<19}  {:<15}  {:<20}  {:>10}  paths",
        "id", "time", "host", "tags", "size"
    );
    for (id, s) in &snaps {
        println!(
            "{:<8}  {:<19}  {:<15}  {:<20}  {:>10}  {}{}",
            id.short(),
            crate::snapshot::format_time(s.time_unix_ns),
            s.hostname,
            s.tags.join(","),
            super::human_bytes(s.summary.bytes_total),
            s.paths.join(" "),
            if s.incomplete { "  (incomplete)" } else { "" }
        );
    }
    println!("{} snapshots", snaps.len());
    Ok(0)
}

pub fn snapshot_json(id: &crate::Id, s: &crate::format::Snapshot) -> serde_json::Value {
    serde_json::json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": crate::snapshot::rfc3339(s.time_unix_ns),
        "hostname": s.hostname,
        "username": s.username,
        "paths": s.paths,
        "tags": s.tags,
        "tree": s.tree.to_hex(),
        "parent": s.parent.map(|p| p.to_hex()),
        "incomplete": s.incomplete,
        "summary": s.summary,
    })
}

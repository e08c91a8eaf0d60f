use super::GlobalOptions;
use crate::error::Result;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(g: &GlobalOptions, _a: Args) -> Result<i32> {
    let repo = g.open()?;
    // Every intact entry is listed; each damaged one is named on standard error.
    let entries = crate::oplog::list(&repo)?.skip_damaged();
    if g.json {
        let v: Vec<_> = entries
            .iter()
            .map(|(_, e)| {
                serde_json::json!({
                    "time": crate::snapshot::rfc3339(e.time_unix_ns),
                    "hostname": e.hostname,
                    "username": e.username,
                    "operation": e.operation,
                    "arguments": e.arguments,
                    "result": e.result,
                    "snapshots": e.snapshots.iter().map(|s| s.to_hex()).collect::<Vec<_>>(),
                })
            })
            .collect();
        super::print_json(&v);
        return Ok(0);
    }
    for (_, e) in &entries {
        let snaps: Vec<String> = e.snapshots.iter().map(|s| s.short()).collect();
        println!(
            "{}  {}@{}  {:<10} {:<12} {}  {}",
            crate::snapshot::format_time(e.time_unix_ns),
            e.username,
            e.hostname,
            e.operation,
            e.result,
            snaps.join(","),
            e.arguments.join(" ")
        );
    }
    Ok(0)
}

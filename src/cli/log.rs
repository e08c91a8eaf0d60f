use super::{GlobalOptions, Outcome};
use ocvault::error::Result;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(g: &GlobalOptions, _a: Args) -> Result<Outcome> {
    let repo = g.open()?;
    // Every intact entry is listed; each damaged one is named on standard error.
    let entries = ocvault::oplog::list(&repo)?.skip_damaged();
    if g.json {
        let v: Vec<_> = entries
            .iter()
            .map(|(_, e)| {
                serde_json::json!({
                    "time": ocvault::snapshot::rfc3339(e.time_unix_ns),
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
        return Ok(Outcome::Success);
    }
    for (_, e) in &entries {
        let snaps: Vec<String> = e.snapshots.iter().map(|s| s.short()).collect();
        println!(
            "{}  {}@{}  {:<10} {:<12} {}  {}",
            ocvault::snapshot::format_time(e.time_unix_ns),
            e.username,
            e.hostname,
            e.operation,
            e.result,
            snaps.join(","),
            e.arguments.join(" ")
        );
    }
    Ok(Outcome::Success)
}

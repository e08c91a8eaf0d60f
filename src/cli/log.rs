use super::{GlobalOptions, Outcome};
use ocvault::error::Result;

#[derive(clap::Args)]
pub struct Args {}

/// Lists every readable entry, then one line per damaged or unreadable entry; exit code 4
/// (damage) when there is any, so a cron job notices a log someone edited.
pub fn run(g: &GlobalOptions, _a: Args) -> Result<Outcome> {
    let repo = g.open()?;
    let listing = ocvault::oplog::list(&repo)?;
    let damaged: Vec<(String, String)> = listing
        .damaged
        .iter()
        .map(|(id, e)| (id.to_hex(), ocvault::oplog::damage_reason(e)))
        .collect();
    if g.json {
        print_json(&listing.intact, &damaged);
    } else {
        print_text(&listing.intact, &damaged);
    }
    if damaged.is_empty() {
        return Ok(Outcome::Success);
    }
    eprintln!(
        "ocvault: {} log entries are damaged; `ocvault check` reports them",
        damaged.len()
    );
    Ok(Outcome::Damage)
}

type Entries = [(ocvault::id::Id, ocvault::format::LogEntry)];

fn print_json(entries: &Entries, damaged: &[(String, String)]) {
    let entries: Vec<_> = entries
        .iter()
        .map(|(id, e)| {
            serde_json::json!({
                "id": id.to_hex(),
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
    let damaged: Vec<_> = damaged
        .iter()
        .map(|(id, problem)| {
            serde_json::json!({
                "id": id,
                "file": format!("log/{id}"),
                "problem": problem,
            })
        })
        .collect();
    super::print_json(&serde_json::json!({ "entries": entries, "damaged": damaged }));
}

fn print_text(entries: &Entries, damaged: &[(String, String)]) {
    for (_, e) in entries {
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
    for (id, problem) in damaged {
        println!("{id}  DAMAGED: {problem}");
    }
}

use super::{GlobalOptions, Outcome};
use ocvault::error::Result;
use ocvault::format::{LogEntry, ShareApproval};
use ocvault::id::Id;
use ocvault::oplog::Missing;

#[derive(clap::Args)]
pub struct Args {}

/// Lists every readable entry, then one line per damaged or unreadable entry and per entry
/// that an entry or a snapshot names but that is gone; exit code 4 (damage) when there is
/// any, so a cron job notices a log someone edited.
pub fn run(g: &GlobalOptions, _a: Args) -> Result<Outcome> {
    let repo = g.open()?;
    let listing = ocvault::oplog::list(&repo)?;
    let damaged: Vec<(String, String)> = listing
        .damaged
        .iter()
        .map(|(id, e)| (id.to_hex(), ocvault::oplog::damage_reason(e)))
        .collect();
    let present: Vec<Id> = listing
        .intact
        .iter()
        .map(|(id, _)| *id)
        .chain(listing.damaged.iter().map(|(id, _)| *id))
        .collect();
    let snapshots = repo.list_snapshots()?;
    let missing = ocvault::oplog::missing(
        &present,
        ocvault::oplog::parents_of(&listing.intact),
        &snapshots,
    );
    if g.json {
        print_json(&listing.intact, &damaged, &missing);
    } else {
        print_text(&listing.intact, &damaged, &missing);
    }
    if damaged.is_empty() && missing.is_empty() {
        return Ok(Outcome::Success);
    }
    eprintln!(
        "ocvault: {} log entries are damaged and {} missing; `ocvault check` reports them",
        damaged.len(),
        missing.len()
    );
    Ok(Outcome::Damage)
}

type Entries = [(Id, LogEntry)];

/// "approved by shares 1, 3 of 3" (a split's count is the same for all its shares).
fn approved_by(approvals: &[ShareApproval]) -> Option<String> {
    let first = approvals.first()?;
    let indexes: Vec<String> = approvals.iter().map(|a| a.index.to_string()).collect();
    Some(format!(
        "approved by shares {} of {}",
        indexes.join(", "),
        first.count
    ))
}

/// Who opened the repository: the key file (short id), or the key shares.
fn opened_by(e: &LogEntry) -> String {
    if let Some(shares) = approved_by(&e.approvals) {
        return shares;
    }
    if e.key_id == Id::default() {
        // An entry of format version 1 to 3 does not say.
        return "-".into();
    }
    format!("key {}", e.key_id.short())
}

fn print_json(entries: &Entries, damaged: &[(String, String)], missing: &[Missing]) {
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
                "parents": e.parents.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
                "key_id": (e.key_id != Id::default()).then(|| e.key_id.to_hex()),
                "approvals": e.approvals.iter().map(|a| serde_json::json!({
                    "index": a.index,
                    "threshold": a.threshold,
                    "count": a.count,
                })).collect::<Vec<_>>(),
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
    let missing: Vec<_> = missing
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id.to_hex(),
                "file": format!("log/{}", m.id.to_hex()),
                "named_by": m.named_by,
            })
        })
        .collect();
    super::print_json(&serde_json::json!({
        "entries": entries,
        "damaged": damaged,
        "missing": missing,
    }));
}

fn print_text(entries: &Entries, damaged: &[(String, String)], missing: &[Missing]) {
    for (_, e) in entries {
        let snaps: Vec<String> = e.snapshots.iter().map(|s| s.short()).collect();
        println!(
            "{}  {}@{}  {:<10} {:<12} {}  {}  [{}]",
            ocvault::snapshot::format_time(e.time_unix_ns),
            e.username,
            e.hostname,
            e.operation,
            e.result,
            snaps.join(","),
            e.arguments.join(" "),
            opened_by(e),
        );
    }
    for (id, problem) in damaged {
        println!("{id}  DAMAGED: {problem}");
    }
    for m in missing {
        println!("{}  MISSING: {}", m.id.to_hex(), m.describe());
    }
}

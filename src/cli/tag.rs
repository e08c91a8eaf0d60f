use super::GlobalOptions;
use crate::error::{Error, Result};
use crate::format::Snapshot;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to change (ids or unique prefixes)
    #[arg(required = true)]
    ids: Vec<String>,
    /// Add this tag (repeatable)
    #[arg(long = "add", value_name = "TAG")]
    add: Vec<String>,
    /// Remove this tag (repeatable)
    #[arg(long = "remove", value_name = "TAG")]
    remove: Vec<String>,
}

/// Snapshot files are immutable: a changed snapshot is saved anew and the old file removed.
pub fn run(g: &GlobalOptions, a: Args) -> Result<i32> {
    if a.add.is_empty() && a.remove.is_empty() {
        return Err(Error::usage("tag needs --add or --remove"));
    }
    let repo = g.open()?;
    let session = repo.write_session()?;
    let snaps = repo.list_snapshots()?;
    let mut changed = Vec::new();
    for spec in &a.ids {
        let (old, snap) = crate::snapshot::resolve(&snaps, spec)?.clone();
        let mut s = snap.clone();
        s.tags.retain(|t| !a.remove.contains(t));
        s.tags.extend(a.add.iter().cloned());
        s.tags.sort();
        s.tags.dedup();
        if s.tags == snap.tags {
            continue;
        }
        let new = session.save_file(&s)?;
        session.delete_file::<Snapshot>(&old)?;
        changed.push((old, new));
    }
    crate::oplog::record(
        &session,
        "tag",
        "ok",
        changed.iter().map(|(_, n)| *n).collect(),
    );
    if g.json {
        let v: Vec<_> = changed
            .iter()
            .map(|(o, n)| serde_json::json!({"old": o.to_hex(), "new": n.to_hex()}))
            .collect();
        super::print_json(&v);
    } else {
        for (o, n) in &changed {
            println!("{} -> {}", o.short(), n.short());
        }
        println!("{} snapshots changed", changed.len());
    }
    Ok(0)
}

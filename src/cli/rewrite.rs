use super::GlobalOptions;
use crate::error::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to rewrite (ids or unique prefixes)
    ids: Vec<String>,
    /// Rewrite every snapshot
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// Leave out paths matching this glob (repeatable); as for `snapshot --exclude`
    #[arg(long = "exclude", value_name = "GLOB", required = true)]
    excludes: Vec<String>,
    /// Show what would be removed; change nothing
    #[arg(long)]
    dry_run: bool,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<i32> {
    if a.ids.is_empty() && !a.all {
        return Err(Error::usage("rewrite needs snapshot ids or --all"));
    }
    let repo = g.open()?;
    crate::interrupt::install()?;
    let snaps = repo.list_snapshots()?;
    let chosen: Vec<_> = if a.all {
        snaps.clone()
    } else {
        a.ids
            .iter()
            .map(|s| crate::snapshot::resolve(&snaps, s).cloned())
            .collect::<Result<_>>()?
    };
    let mut repo = repo.load_index()?;
    let results = if a.dry_run {
        crate::rewrite::rewrite_dry_run(&repo, &chosen, &a.excludes)?
    } else {
        let session = repo.write_session()?;
        let results = crate::rewrite::rewrite(&session, &chosen, &a.excludes)?;
        crate::oplog::record(
            &session,
            "rewrite",
            "ok",
            results.iter().filter_map(|r| r.new).collect(),
        );
        results
    };
    if g.json {
        let v: Vec<_> = results
            .iter()
            .map(|r| serde_json::json!({"old": r.old.to_hex(), "new": r.new.map(|n| n.to_hex()), "removed_paths": r.removed_paths}))
            .collect();
        super::print_json(&v);
        return Ok(0);
    }
    for r in &results {
        match (&r.new, r.removed_paths.is_empty()) {
            (_, true) => println!("{}: nothing to exclude", r.old.short()),
            (Some(n), false) => println!(
                "{} -> {}: removed {} paths",
                r.old.short(),
                n.short(),
                r.removed_paths.len()
            ),
            (None, false) => println!(
                "{}: would remove {} paths",
                r.old.short(),
                r.removed_paths.len()
            ),
        }
        for p in r.removed_paths.iter().take(20) {
            println!("    {p}");
        }
    }
    Ok(0)
}

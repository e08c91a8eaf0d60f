use super::args::SelectionArgs;
use super::{GlobalOptions, Outcome};
use ocvault::commands::find::{self, FindOptions};
use ocvault::error::Result;
use ocvault::snapshot::{format_time, rfc3339};

#[derive(clap::Args)]
pub struct Args {
    /// Glob; without '/', matched against names, with '/', against whole paths in the snapshot
    pattern: String,
    /// Snapshots to search (default: all)
    #[command(flatten)]
    selection: SelectionArgs,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let opts = FindOptions {
        pattern: a.pattern,
        selection: a.selection.selection(),
    };
    opts.validate()?;
    super::logged_read(g, "find", "read file names", |repo, snapshots| {
        let found = find::find(repo, &opts)?;
        snapshots.extend(found.iter().map(|m| m.snapshot));
        print(g, &found);
        Ok(Outcome::Success)
    })
}

fn print(g: &GlobalOptions, found: &[find::Match]) {
    if g.json {
        let v: Vec<_> = found
            .iter()
            .map(|m| serde_json::json!({"snapshot": m.snapshot.to_hex(), "snapshot_time": rfc3339(m.snapshot_time_unix_ns), "path": m.path, "size": m.size, "mtime": rfc3339(m.mtime_ns)}))
            .collect();
        super::print_json(&v);
    } else {
        for m in found {
            println!(
                "{} {}  {}  {} bytes",
                m.snapshot.short(),
                format_time(m.snapshot_time_unix_ns),
                m.path,
                m.size
            );
        }
        println!("{} matches", found.len());
    }
}

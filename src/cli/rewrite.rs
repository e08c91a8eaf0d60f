use super::args::SelectionArgs;
use super::{GlobalOptions, Outcome};
use ocvault::commands::rewrite::{self, RewriteOptions};
use ocvault::error::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to rewrite
    #[command(flatten)]
    selection: SelectionArgs,
    /// Leave out paths matching this glob (repeatable); as for `snapshot --exclude`
    #[arg(long = "exclude", value_name = "GLOB", required = true)]
    excludes: Vec<String>,
    /// Show what would be removed; change nothing
    #[arg(long)]
    dry_run: bool,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let opts = RewriteOptions {
        selection: a.selection.selection(),
        excludes: a.excludes,
        dry_run: a.dry_run,
    };
    opts.selection.validate("rewrite", true)?;
    let repo = g.open_full("rewrite snapshots")?;
    ocvault::interrupt::install()?;
    let r = rewrite::rewrite(&repo, &opts, &super::command_line())?;
    super::warn_all(&r.warnings);
    if g.json {
        let v: Vec<_> = r
            .rewritten
            .iter()
            .map(|r| serde_json::json!({"old": r.old.to_hex(), "new": r.new.map(|n| n.to_hex()), "removed_paths": r.removed_paths}))
            .collect();
        super::print_json(&v);
        return Ok(Outcome::Success);
    }
    for r in &r.rewritten {
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
    Ok(Outcome::Success)
}

use super::args::SelectionArgs;
use super::{GlobalOptions, Outcome};
use ocvault::commands::tag::{self, TagOptions};
use ocvault::error::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to change
    #[command(flatten)]
    selection: SelectionArgs,
    /// Add this tag (repeatable)
    #[arg(long = "add", value_name = "TAG")]
    add: Vec<String>,
    /// Remove this tag (repeatable)
    #[arg(long = "remove", value_name = "TAG")]
    remove: Vec<String>,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let opts = TagOptions {
        selection: a.selection.selection(),
        add: a.add,
        remove: a.remove,
    };
    opts.validate()?;
    let repo = g.open_full("change snapshots")?;
    let r = tag::tag(&repo, &opts, &super::command_line())?;
    super::warn_all(&r.warnings);
    if g.json {
        let v: Vec<_> = r
            .changed
            .iter()
            .map(|(o, n)| serde_json::json!({"old": o.to_hex(), "new": n.to_hex()}))
            .collect();
        super::print_json(&v);
    } else {
        for (o, n) in &r.changed {
            println!("{} -> {}", o.short(), n.short());
        }
        println!("{} snapshots changed", r.changed.len());
    }
    Ok(Outcome::Success)
}

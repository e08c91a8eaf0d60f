use super::{GlobalOptions, Outcome};
use ocvault::commands::diff::{self, ChangeKind, DiffOptions};
use ocvault::error::Result;

#[derive(clap::Args)]
pub struct Args {
    /// The older snapshot
    first: String,
    /// The newer snapshot
    second: String,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    super::logged_read(g, "diff", "read snapshots' trees", |repo, snapshots| {
        for spec in [&a.first, &a.second] {
            snapshots.push(repo.find_snapshot(spec)?.0);
        }
        let out = diff::diff(
            repo,
            &DiffOptions {
                first: a.first,
                second: a.second,
            },
        )?;
        print(g, &out);
        Ok(Outcome::Success)
    })
}

fn print(g: &GlobalOptions, out: &[diff::Change]) {
    if g.json {
        super::print_json(&out);
        return;
    }
    for c in out {
        let sym = match c.change {
            ChangeKind::Added => "+",
            ChangeKind::Removed => "-",
            ChangeKind::Changed => "M",
            ChangeKind::Metadata => "T",
        };
        let size = match (c.old_size, c.new_size) {
            (Some(o), Some(n)) if o != n => format!("  {o} -> {n} bytes"),
            (_, Some(n)) | (Some(n), None) => format!("  {n} bytes"),
            _ => String::new(),
        };
        println!("{sym} {}{size}", c.path);
    }
    let count = |k: ChangeKind| out.iter().filter(|c| c.change == k).count();
    println!(
        "{} added, {} removed, {} changed, {} metadata only",
        count(ChangeKind::Added),
        count(ChangeKind::Removed),
        count(ChangeKind::Changed),
        count(ChangeKind::Metadata)
    );
}

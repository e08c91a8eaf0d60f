use super::{GlobalOptions, Outcome};
use ocvault::error::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Also remove markers of backups that look alive (only when you know none runs)
    #[arg(long)]
    remove_all: bool,
}

/// Removes stale backup markers. Backups never wait on markers; only prune's deletion phase
/// does, and only while a marker is fresh, so this is housekeeping, not a way out of a hang.
/// A marker removed from a live writer makes that writer fail before it saves anything.
pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let repo = g.open()?;
    let session = repo.write_session()?;
    let removed = ocvault::session::unlock(&session, a.remove_all)?;
    if g.json {
        super::print_json(&serde_json::json!({"removed": removed}));
    } else {
        println!("removed {removed} backup markers");
    }
    Ok(Outcome::Success)
}

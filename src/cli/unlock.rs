use super::GlobalOptions;
use crate::backend::FileKind;
use crate::error::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Also remove markers of backups that look alive (only when you know none runs)
    #[arg(long)]
    remove_all: bool,
}

/// Removes stale backup markers. Backups never wait on markers; only prune's deletion phase
/// does, and only while a marker is fresh, so this is housekeeping, not a way out of a hang.
pub fn run(g: &GlobalOptions, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let mut removed = 0;
    for (id, _, stale) in crate::locks::list_markers(&repo)? {
        if stale || a.remove_all {
            repo.backend.delete(&FileKind::Lock.path(&id))?;
            removed += 1;
        }
    }
    crate::locks::remove_stale_temp_files(&repo);
    if g.json {
        super::print_json(&serde_json::json!({"removed": removed}));
    } else {
        println!("removed {removed} backup markers");
    }
    Ok(0)
}

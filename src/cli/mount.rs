use super::{GlobalOptions, Outcome};
use ocvault::error::{Error, Result};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Empty directory to mount the snapshots on (read-only; unmounted on Ctrl-C or SIGTERM)
    dir: std::path::PathBuf,
    /// Let other users than the one mounting see the files (FUSE allow_other)
    #[arg(long)]
    allow_other: bool,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    if !a.dir.is_dir() {
        let dir = a.dir.display();
        return Err(Error::usage(format!("{dir} is not a folder to mount on")));
    }
    // Shared with the file system's threads, which outlive any borrow of it.
    let repo = Arc::new(g.open()?);
    super::logged_read_on(&repo, "mount", "read file contents", |r, logged| {
        let snapshots = r.list_snapshots()?;
        logged.extend(snapshots.iter().map(|(id, _)| *id));
        let index = r.load_index_tiered()?.into_read_index();
        let fs = ocvault::mount::SnapshotFs::new(Arc::clone(&repo), index, &snapshots);
        ocvault::mount::serve(fs, &a.dir, a.allow_other)?;
        Ok(Outcome::Success)
    })
}

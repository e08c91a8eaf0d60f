use super::{GlobalOptions, Outcome};
use ocvault::error::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot id (any unique prefix) or "latest"
    snapshot: String,
    /// Path of a file inside the snapshot, e.g. db.sql or etc/app.conf
    path: String,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    super::logged_read(g, "dump", "read file contents", |repo, snapshots| {
        let (id, snap) = repo.find_snapshot(&a.snapshot)?;
        snapshots.push(id);
        let repo = repo.load_index_tiered()?;
        let node = ocvault::tree::find_node(&repo, &snap.tree, &a.path)?;
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        ocvault::dump::dump(&repo, &node, &mut out)
            .map_err(|e| super::cold_json(g, e.for_snapshot(&id.short())))?;
        Ok(Outcome::Success)
    })
}

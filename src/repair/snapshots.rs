//! `repair snapshots`: new versions of snapshots without the files whose blobs are lost.

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::format::{IndexFile, Snapshot, Tree};
use crate::id::{Id, PackId, SnapshotId, TreeId};
use crate::packer::{self, Indexing, PackerParts, PACKS_PER_INDEX};
use crate::repository::IndexedRepository;
use crate::session::IndexedWriteSession;
use std::collections::HashSet;

/// The tag every repaired snapshot carries.
pub const REPAIRED_TAG: &str = "repaired";

/// What `repair snapshots` did to one snapshot.
#[derive(Debug)]
pub struct SnapshotRepair {
    pub old: SnapshotId,
    /// The repaired version saved; none when the snapshot is intact, or in a dry run.
    pub new: Option<SnapshotId>,
    /// Files left out because a blob of theirs is lost (paths from the snapshot's root).
    pub dropped_files: Vec<String>,
    /// Folders whose tree is lost or does not open: kept as empty folders.
    pub emptied_dirs: Vec<String>,
    /// Whether the original was deleted (`--forget`).
    pub forgotten: bool,
}

impl SnapshotRepair {
    pub fn damaged(&self) -> bool {
        !self.dropped_files.is_empty() || !self.emptied_dirs.is_empty()
    }
}

/// Writes a repaired version of each damaged snapshot of `snaps` (same time, host and paths,
/// tag `repaired`, `parent` the original) and, with `forget`, deletes the original. A blob is
/// lost when the index does not place it in a pack present in `data/`. Data is never deleted.
pub fn repair_snapshots(
    session: &IndexedWriteSession,
    snaps: &[(SnapshotId, Snapshot)],
    forget: bool,
) -> Result<Vec<SnapshotRepair>> {
    let repo = session.repo();
    let available = Available::list(repo)?;
    let save_index = |f: &IndexFile| session.save_file(f).map(Id::from);
    let parts = PackerParts::new(session, Indexing::Every(PACKS_PER_INDEX, &save_index));
    let (planned, packed) = packer::run(parts, |p| {
        plan(repo, &available, snaps, &|t| p.store_tree(t))
    });
    let planned = planned?;
    packed?;
    crate::interrupt::check()?;
    let log_heads = crate::oplog::heads(repo)?;
    let mut out = Vec::new();
    for (mut r, snap) in planned {
        if let Some(mut s) = snap {
            s.log_heads = log_heads.clone();
            r.new = Some(session.save_file(&s)?);
            if forget {
                session.delete_file::<Snapshot>(&r.old)?;
                r.forgotten = true;
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// What [`repair_snapshots`] would cut, storing nothing.
pub fn repair_snapshots_dry_run(
    repo: &IndexedRepository,
    snaps: &[(SnapshotId, Snapshot)],
) -> Result<Vec<SnapshotRepair>> {
    let available = Available::list(repo)?;
    let name = |t: &Tree| Ok(repo.keys().blob_id(&crate::format::to_postcard(t)));
    Ok(plan(repo, &available, snaps, &name)?
        .into_iter()
        .map(|(r, _)| r)
        .collect())
}

/// Which blobs can be read: indexed in a pack that is present.
struct Available<'a> {
    repo: &'a IndexedRepository<'a>,
    packs: HashSet<PackId>,
}

impl<'a> Available<'a> {
    fn list(repo: &'a IndexedRepository<'a>) -> Result<Self> {
        let packs = repo
            .backend()
            .list_ids(FileKind::Pack)?
            .into_iter()
            .map(|(id, _)| PackId(id))
            .collect();
        Ok(Available { repo, packs })
    }

    fn has(&self, id: &Id) -> bool {
        let index = self.repo.index();
        index
            .get(id)
            .is_some_and(|l| self.packs.contains(&index.pack(l.pack).id))
    }
}

/// Each snapshot's repair and, when damaged, the snapshot to save instead.
fn plan(
    repo: &IndexedRepository,
    available: &Available,
    snaps: &[(SnapshotId, Snapshot)],
    save_tree: &dyn Fn(&Tree) -> Result<Id>,
) -> Result<Vec<(SnapshotRepair, Option<Snapshot>)>> {
    let mut out = Vec::new();
    // Trees found intact, shared by all snapshots: most of a repository's trees are in many.
    let mut intact = HashSet::new();
    for (id, snap) in snaps {
        crate::interrupt::check()?;
        let mut cut = Cut {
            repo,
            available,
            save_tree,
            intact: &mut intact,
            dropped_files: Vec::new(),
            emptied_dirs: Vec::new(),
        };
        let root = cut.tree(snap.tree, "")?;
        let new = root.map(|root| {
            let mut s = snap.clone();
            s.tree = root;
            s.parent = Some(*id);
            if !s.tags.iter().any(|t| t == REPAIRED_TAG) {
                s.tags.push(REPAIRED_TAG.to_string());
            }
            s
        });
        let repair = SnapshotRepair {
            old: *id,
            new: None,
            dropped_files: cut.dropped_files,
            emptied_dirs: cut.emptied_dirs,
            forgotten: false,
        };
        out.push((repair, new));
    }
    Ok(out)
}

/// One snapshot's walk, cutting what is lost.
struct Cut<'a> {
    repo: &'a IndexedRepository<'a>,
    available: &'a Available<'a>,
    save_tree: &'a dyn Fn(&Tree) -> Result<Id>,
    /// Trees with nothing lost below them: not walked again.
    intact: &'a mut HashSet<TreeId>,
    dropped_files: Vec<String>,
    emptied_dirs: Vec<String>,
}

impl Cut<'_> {
    /// The tree at `path` without lost files; its new id when anything was cut below it.
    fn tree(&mut self, id: TreeId, path: &str) -> Result<Option<TreeId>> {
        if self.intact.contains(&id) {
            return Ok(None);
        }
        let tree = if self.available.has(&id.0) {
            match self.repo.load_tree(&id) {
                Ok(t) => Some(t),
                // Damage only: a storage error must not empty a folder.
                Err(Error::Corrupt { .. }) => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let Some(tree) = tree else {
            self.emptied_dirs
                .push(if path.is_empty() { "/" } else { path }.to_string());
            return Ok(Some(TreeId((self.save_tree)(&Tree::default())?)));
        };
        let mut changed = false;
        let mut kept = Vec::with_capacity(tree.nodes.len());
        for mut node in tree.nodes {
            let child = format!("{path}/{}", node.name_lossy());
            if let Some(sub) = node.subtree {
                if let Some(new) = self.tree(sub, &child)? {
                    node.subtree = Some(new);
                    changed = true;
                }
            } else if node.content.iter().any(|b| !self.available.has(&b.0)) {
                self.dropped_files.push(child);
                changed = true;
                continue;
            }
            kept.push(node);
        }
        if !changed {
            self.intact.insert(id);
            return Ok(None);
        }
        Ok(Some(TreeId((self.save_tree)(&Tree { nodes: kept })?)))
    }
}

//! `repair packs`: the intact blobs of damaged packs, stored again in new packs.

use super::IndexState;
use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::format::{BlobType, IndexPack, PackedBlob};
use crate::id::{BlobId, Id, PackId};
use crate::index::Index;
use crate::packer::{self, Indexing, PackerParts};
use crate::repository::Repository;
use crate::session::WriteSession;
use std::collections::HashSet;

/// Stores one intact blob again: its type, its place in the damaged pack, its sealed bytes.
type StoreBlob<'a> = &'a dyn Fn(BlobType, &PackedBlob, &[u8]) -> Result<()>;

/// What `repair packs` did with one damaged pack.
#[derive(Debug)]
pub struct PackRepair {
    pub pack: PackId,
    /// Where its blob list came from: "index" or "header".
    pub listed_by: &'static str,
    /// Blobs listed.
    pub blobs: u64,
    /// Blobs that open and match their id (stored again), or have a copy in another pack.
    pub kept: u64,
    /// Blobs that do not open or do not match their id, with no copy in another pack.
    pub lost: Vec<BlobId>,
}

/// The result of `repair packs`.
#[derive(Debug, Default)]
pub struct PacksRepair {
    pub packs: Vec<PackRepair>,
    /// Blobs written into new packs.
    pub blobs_stored: u64,
    /// New packs written.
    pub new_packs: u64,
}

impl PacksRepair {
    /// Whether blobs were lost (snapshots using them need `repair snapshots`).
    pub fn damage_remains(&self) -> bool {
        self.packs.iter().any(|p| !p.lost.is_empty())
    }
}

/// Reads every blob each of `ids` lists (in the index, else in its header), stores those that
/// open and match their id again in new packs, and writes an index without the damaged packs
/// (superseding every index file) so a later prune deletes them; nothing is deleted here but
/// the superseded index files. Without `session`, only counts. Refuses while an index file is
/// damaged: `repair index` first.
pub fn repair_packs(
    repo: &Repository,
    session: Option<&WriteSession>,
    ids: &[PackId],
) -> Result<PacksRepair> {
    // A write-only key cannot open blobs: every one would look lost.
    repo.require_full_key("repair packs")?;
    let state = IndexState::read(repo)?;
    if let Some(id) = state.damaged.first() {
        return Err(Error::other(format!(
            "index file {} is damaged: run `ocvault repair index` first",
            id.short()
        )));
    }
    let damaged: HashSet<PackId> = ids.iter().copied().collect();
    let others: Vec<IndexPack> = state
        .live
        .values()
        .filter(|p| !damaged.contains(&p.id))
        .cloned()
        .collect();
    let elsewhere = Index::from_packs(others.clone());
    let mut report = PacksRepair::default();
    let salvage = |store: StoreBlob| {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for id in ids {
            crate::interrupt::check()?;
            out.push(salvage_one(
                repo, &state, &elsewhere, *id, &mut seen, store,
            )?);
        }
        Ok::<_, Error>(out)
    };
    let Some(session) = session else {
        report.packs = salvage(&|_, _, _| Ok(()))?;
        return Ok(report);
    };
    let parts = PackerParts::for_repack(session, &elsewhere, Indexing::Returned);
    let (salvaged, packed) = packer::run(parts, |p| {
        salvage(&|t, b, sealed| p.store_sealed(t, b.id.0, b.raw_length, sealed.to_vec()))
    });
    report.packs = salvaged?;
    let packed = packed?;
    report.blobs_stored = packed.blobs_added;
    report.new_packs = packed.packs.len() as u64;
    crate::interrupt::check()?;
    let mut packs = others;
    packs.extend(packed.packs);
    super::replace_index(session, packs, &state.all_file_ids())?;
    Ok(report)
}

/// Salvages one pack: each listed blob that opens is handed to `store` unless stored in
/// another pack or taken already (`seen`).
fn salvage_one(
    repo: &Repository,
    state: &IndexState,
    elsewhere: &Index,
    id: PackId,
    seen: &mut HashSet<Id>,
    store: StoreBlob,
) -> Result<PackRepair> {
    let path = FileKind::Pack.path(&id);
    let bytes = repo.backend().read(&path)?;
    let (listed_by, blob_type, blobs) = match state.live.get(&id) {
        Some(p) => ("index", p.blob_type, p.blobs.clone()),
        None => {
            let max_len = crate::pack::max_header_len(repo.config().pack_target_size);
            let h = crate::pack::read_header(
                repo.backend(),
                repo.keys(),
                &id,
                bytes.len() as u64,
                max_len,
            )
            .map_err(|e| {
                Error::other(format!(
                    "pack {}: in no index and its header does not open ({e}): nothing to salvage",
                    id.short()
                ))
            })?;
            ("header", h.blob_type, h.blobs)
        }
    };
    let mut r = PackRepair {
        pack: id,
        listed_by,
        blobs: blobs.len() as u64,
        kept: 0,
        lost: Vec::new(),
    };
    for b in &blobs {
        let (start, end) = (b.offset as usize, b.offset as usize + b.length as usize);
        let intact = end <= bytes.len()
            && crate::pack::open_blob(
                repo.keys(),
                blob_type,
                &b.id.0,
                &bytes[start..end],
                b.raw_length,
            )
            .is_ok();
        if !intact {
            // A copy in another pack keeps it (the index then points there).
            if elsewhere.contains(&b.id.0) {
                r.kept += 1;
            } else {
                r.lost.push(b.id);
            }
            continue;
        }
        r.kept += 1;
        if !elsewhere.contains(&b.id.0) && seen.insert(b.id.0) {
            store(blob_type, b, &bytes[start..end])?;
        }
    }
    Ok(r)
}

//! Storage tiers: which packs sit in an S3 archive class (Glacier Flexible Retrieval, Deep
//! Archive) and cannot be read until a restore request ("thaw") makes a readable copy.
//!
//! Cost model: one listing of `data/` with storage classes (one request per 1000 packs)
//! tells which packs are archived; only those get a HEAD to see whether a thawed copy is
//! there. Storage without lifecycle support (`Backend::lifecycle` is `None`) has no cold
//! packs and is asked nothing.

use crate::backend::lifecycle::{ClassedObject, Lifecycle, ThawRequest, ThawState, ThawTier};
use crate::backend::{Backend, FileKind};
pub use crate::error::{mib, ColdPack};
use crate::error::{Error, Result};
use crate::id::{Id, PackId};
use futures::stream::{self, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;

pub mod testing;

/// Storage classes whose objects cannot be read without a restore request. Glacier Instant
/// Retrieval (GLACIER_IR) reads like STANDARD and is not one of them.
pub use crate::backend::lifecycle::{is_archive_class, ARCHIVE_CLASSES};

/// Days S3 charges an object of this class for at least, deleted earlier or not.
pub fn min_storage_days(class: &str) -> u32 {
    match class {
        "STANDARD_IA" | "ONEZONE_IA" => 30,
        "GLACIER_IR" | "GLACIER" => 90,
        "DEEP_ARCHIVE" => 180,
        _ => 0,
    }
}

/// A pack in an archive class, as the listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedPack {
    /// One of [`ARCHIVE_CLASSES`] (no allocation per pack).
    pub storage_class: &'static str,
    pub size: u64,
    /// Upload time by the server's clock, seconds since the epoch.
    pub modified_unix_s: i64,
}

impl ArchivedPack {
    /// When deleting the pack stops costing an early-deletion charge (seconds since the epoch).
    pub fn min_storage_until(&self) -> i64 {
        self.modified_unix_s + min_storage_days(self.storage_class) as i64 * 86_400
    }
}

/// The packs in archive classes, from one listing of `data/` with classes.
#[derive(Debug, Default)]
pub struct Tiers {
    archived: HashMap<PackId, ArchivedPack>,
    /// Files the listing returned (S3 lists 1000 a request).
    pub listed: u64,
}

impl Tiers {
    /// Lists `data/` with storage classes; `None` when the storage has no classes.
    pub fn list(backend: &Backend) -> Result<Option<Arc<Tiers>>> {
        let Some(lc) = backend.lifecycle() else {
            return Ok(None);
        };
        let objects = backend
            .runtime()
            .block_on(lc.list_classes(FileKind::Pack.prefix()))?;
        Ok(Some(Arc::new(Tiers::from_listing(&objects))))
    }

    pub fn from_listing(objects: &[ClassedObject]) -> Tiers {
        let archived = objects
            .iter()
            .filter_map(|o| {
                let class = o.storage_class.as_deref()?;
                let class = *ARCHIVE_CLASSES.iter().find(|c| **c == class)?;
                let id = pack_id_of(&o.path)?;
                Some((
                    id,
                    ArchivedPack {
                        storage_class: class,
                        size: o.size,
                        modified_unix_s: o.modified_unix_s,
                    },
                ))
            })
            .collect();
        Tiers {
            archived,
            listed: objects.len() as u64,
        }
    }

    pub fn get(&self, id: &PackId) -> Option<&ArchivedPack> {
        self.archived.get(id)
    }

    /// The archived packs' ids (for the on-disk index, which is kept per set of them).
    pub fn archived_ids(&self) -> impl Iterator<Item = &PackId> {
        self.archived.keys()
    }

    pub fn is_archived(&self, id: &PackId) -> bool {
        self.archived.contains_key(id)
    }

    /// Packs in archive classes.
    pub fn len(&self) -> usize {
        self.archived.len()
    }

    pub fn is_empty(&self) -> bool {
        self.archived.is_empty()
    }
}

/// The pack id a `data/xx/<id>` path names.
fn pack_id_of(path: &str) -> Option<PackId> {
    let id = Id::from_hex(path.rsplit('/').next()?)?;
    (FileKind::Pack.path(&id) == path).then_some(PackId(id))
}

/// Of `packs` (ids and sizes), the ones that cannot be read now: one HEAD for each pack the
/// listing put in an archive class, `backend.connections()` at once; none for the others.
pub fn find_cold(
    backend: &Backend,
    tiers: &Tiers,
    packs: impl IntoIterator<Item = PackId>,
) -> Result<Vec<ColdPack>> {
    let Some(lc) = backend.lifecycle() else {
        return Ok(Vec::new());
    };
    let mut archived: Vec<(PackId, &ArchivedPack)> = packs
        .into_iter()
        .filter_map(|id| tiers.get(&id).map(|a| (id, a)))
        .collect();
    archived.sort_by_key(|(id, _)| *id);
    archived.dedup_by_key(|(id, _)| *id);
    let paths: Vec<String> = archived
        .iter()
        .map(|(id, _)| FileKind::Pack.path(id))
        .collect();
    let states = thaw_states(backend, lc, &paths)?;
    Ok(archived
        .into_iter()
        .zip(paths)
        .zip(states)
        .filter(|(_, s)| !s.readable())
        .map(|(((_, a), path), s)| ColdPack {
            path,
            size: a.size,
            storage_class: a.storage_class.to_string(),
            state: if s == ThawState::Thawing {
                "thawing"
            } else {
                "cold"
            },
        })
        .collect())
}

/// The thaw state of each path (in order), `backend.connections()` HEADs at once.
pub fn thaw_states(
    backend: &Backend,
    lc: &Arc<dyn Lifecycle>,
    paths: &[String],
) -> Result<Vec<ThawState>> {
    let states: Vec<_> = backend.runtime().block_on(
        stream::iter(paths)
            .map(|p| lc.thaw_state(p))
            .buffered(backend.connections().max(1))
            .collect(),
    );
    states.into_iter().map(|s| s.map_err(Error::from)).collect()
}

/// One restore request per path (in order), `backend.connections()` at once.
pub fn request_thaws(
    backend: &Backend,
    lc: &Arc<dyn Lifecycle>,
    paths: &[String],
    days: u32,
    tier: ThawTier,
) -> Result<Vec<ThawRequest>> {
    let replies: Vec<_> = backend.runtime().block_on(
        stream::iter(paths)
            .map(|p| lc.request_thaw(p, days, tier))
            .buffered(backend.connections().max(1))
            .collect(),
    );
    replies
        .into_iter()
        .map(|s| s.map_err(Error::from))
        .collect()
}

/// The error restore and dump stop with when packs they need are cold (exit code 13).
pub fn cold_error(packs: Vec<ColdPack>) -> Error {
    Error::Cold {
        snapshot: None,
        packs,
    }
}

#[cfg(test)]
mod tests;

//! The operations log's heads: the entries no other entry names as a parent. Every new entry
//! and snapshot names them, so the entries form a chain (a small DAG where writers ran at the
//! same time) in which a deleted entry is missed by whoever names it.
//!
//! `wal-push` adds an entry every few seconds and the log is kept for years, so the parents
//! of each entry are cached locally (entry ids are hashes of immutable files, so a cached
//! answer never goes stale): a call lists `log/` and reads only the entries it has not seen.

use crate::error::Result;
use crate::format::LogEntry;
use crate::id::Id;
use crate::repository::Repository;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// First bytes of a cache file, then the BLAKE3 hash of the rest, then postcard of
/// [`ParentsCache`].
const CACHE_MAGIC: &[u8; 8] = b"OCVLOGP1";

#[derive(Serialize, Deserialize, Default)]
struct ParentsCache {
    /// The repository the entries belong to: a cache copied from another one is ignored.
    repository_id: Id,
    entries: Vec<(Id, Vec<Id>)>,
}

/// [`ParentsCache`] as it is written, borrowing the entries.
#[derive(Serialize)]
struct ParentsCacheRef<'a> {
    repository_id: Id,
    entries: Vec<(&'a Id, &'a Vec<Id>)>,
}

/// The log's heads, sorted: every listed entry that no listed entry names as a parent.
/// Empty before format version 4, whose entries name no parents. An entry that cannot be
/// read counts as naming none (`check` reports it).
pub fn heads(repo: &Repository) -> Result<Vec<Id>> {
    if repo.config().version < 4 {
        return Ok(Vec::new());
    }
    let mut listed: Vec<Id> = repo
        .backend()
        .list_ids(crate::backend::FileKind::Log)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    // Sorted and searched rather than hashed: the log holds hundreds of thousands of entries
    // after years of WAL pushes, and every logged command lists it.
    listed.sort_unstable();
    let repository_id = repo.config().repository_id;
    let path = cache_file(repo.backend().cache_root(), &repository_id);
    let mut known = path
        .as_deref()
        .and_then(|p| read_cache(p, &repository_id))
        .unwrap_or_default();
    let before = known.len();
    known.retain(|id, _| listed.binary_search(id).is_ok());
    let mut changed = known.len() != before;
    let unseen: Vec<Id> = listed
        .iter()
        .filter(|id| !known.contains_key(id))
        .copied()
        .collect();
    let mut vanished = HashSet::new();
    for (id, res) in unseen.iter().zip(repo.load_files::<LogEntry>(&unseen)) {
        match res {
            Ok(entry) => {
                known.insert(*id, entry.parents);
                changed = true;
            }
            Err(e) if crate::backend::is_not_found(&e) => {
                vanished.insert(*id);
            }
            // Damaged: not cached, so read again next time; it names no parents here.
            Err(_) => {}
        }
    }
    if changed {
        if let Some(p) = &path {
            // Only a cache: a failure to write it costs the next call a full read.
            let _ = write_cache(p, &repository_id, &known);
        }
    }
    let named: HashSet<&Id> = known.values().flatten().collect();
    let mut heads: Vec<Id> = listed
        .into_iter()
        .filter(|id| !named.contains(id) && !vanished.contains(id))
        .collect();
    heads.sort();
    heads.dedup();
    Ok(heads)
}

/// `<root>/<repository id hex>/log-parents` under the local cache's root (`--cache-dir`,
/// `OCVAULT_CACHE_DIR`, `$XDG_CACHE_HOME/ocvault`, `$HOME/.cache/ocvault`; see
/// `host::cache_root`); none without one.
pub fn cache_file(root: Option<&Path>, repository_id: &Id) -> Option<PathBuf> {
    Some(root?.join(repository_id.to_hex()).join("log-parents"))
}

/// The cached parents, or none when the file is absent, damaged or of another repository.
fn read_cache(path: &Path, repository_id: &Id) -> Option<HashMap<Id, Vec<Id>>> {
    let bytes = std::fs::read(path).ok()?;
    let rest = bytes.strip_prefix(CACHE_MAGIC)?;
    if rest.len() < 32 || blake3::hash(&rest[32..]).as_bytes() != &rest[..32] {
        return None;
    }
    let cache: ParentsCache = postcard::from_bytes(&rest[32..]).ok()?;
    if cache.repository_id != *repository_id {
        return None;
    }
    Some(cache.entries.into_iter().collect())
}

/// Writes the cache whole through a temporary file and a rename, so a reader sees an old
/// or a new file, never half of one; of two processes racing, the last rename wins.
fn write_cache(
    path: &Path,
    repository_id: &Id,
    known: &HashMap<Id, Vec<Id>>,
) -> std::io::Result<()> {
    let dir = path.parent().expect("the cache file is in a folder");
    std::fs::create_dir_all(dir)?;
    // Borrowed, not cloned: the same bytes as `ParentsCache` (serde writes `&T` as `T`).
    let mut entries: Vec<(&Id, &Vec<Id>)> = known.iter().collect();
    entries.sort_unstable_by_key(|(id, _)| **id);
    let payload = crate::format::to_postcard(&ParentsCacheRef {
        repository_id: *repository_id,
        entries,
    });
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, CACHE_MAGIC)?;
    std::io::Write::write_all(&mut tmp, blake3::hash(&payload).as_bytes())?;
    std::io::Write::write_all(&mut tmp, &payload)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

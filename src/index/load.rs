//! Loads a repository's live index through its cache file (`cache_file`): the file is
//! reused while every index file it was built from is still listed, index files written
//! since go into the in-memory delta, and the file is rebuilt (merged with them, in bounded
//! memory, `build`) when the delta grows past `MERGE_BLOBS` blobs or `MERGE_FILES` files, or
//! from scratch when an index file it holds is gone or superseded (after a prune).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::build::Builder;
use super::cache_file::{Mapped, Opened};
use super::table::Table;
#[cfg(test)]
use super::BlobLocation;
use super::{superseded_ids, Index};
use crate::error::{Error, Result};
use crate::format::{IndexFile, IndexPack};
use crate::id::{Id, IndexFileId, PackId};

/// Blobs in the delta past which the cache file is rebuilt with them (46 MiB of memory).
const MERGE_BLOBS: usize = 1 << 20;
/// Index files in the delta past which the cache file is rebuilt with them (each command
/// reads and decodes the delta's files).
const MERGE_FILES: usize = 64;
/// Index files read and decoded at once while building (a consolidated one lists 100,000
/// blobs, about 4.4 MiB decoded).
const BATCH: usize = 4;

/// How the loader reaches the repository's index files.
pub trait IndexFiles {
    /// The ids in `index/`.
    fn list(&self) -> Result<Vec<IndexFileId>>;
    /// Reads and decodes these files, leaving out (or refusing, when strict) damaged ones;
    /// `None` when one has vanished since the listing (a prune deleted it): the loader
    /// lists again.
    fn load(&self, ids: &[IndexFileId]) -> Result<Option<Vec<(IndexFileId, IndexFile)>>>;
}

/// Where and for what the cache file is kept.
pub struct CacheSpec<'a> {
    /// The repository's folder in the local cache; `None` (`--no-cache`): the file is built
    /// in an unnamed temporary file for this command only.
    pub dir: Option<PathBuf>,
    pub repository_id: Id,
    pub archived: &'a dyn Fn(&PackId) -> bool,
    /// `tiers_digest` of the archived packs (a file built for other tiers is not reused);
    /// asked once `index/` is listed (`check` lists `data/` only then).
    pub tiers: &'a dyn Fn() -> [u8; 32],
}

/// The digest of a set of archived packs, naming the tier view a cache file was built for.
pub fn tiers_digest<'p>(archived: impl Iterator<Item = &'p PackId>) -> [u8; 32] {
    let mut ids: Vec<&PackId> = archived.collect();
    ids.sort();
    let mut h = blake3::Hasher::new();
    for id in ids {
        h.update(&id.0 .0);
    }
    *h.finalize().as_bytes()
}

/// The live index, and what readers need beside it.
pub struct LoadedIndex {
    pub live: Index,
    /// The packs of the live files in the delta (so a read index can share the base).
    delta_packs: Vec<IndexPack>,
    /// Packs of superseded index files still listed: readable until a prune's mark names
    /// them (for the read index only).
    pub superseded_packs: Vec<IndexPack>,
    /// Every index file taken into account (intact and listed): the live ones, then the
    /// superseded ones.
    pub files: Vec<IndexFileId>,
    /// Those of `files` that another supersedes.
    pub superseded: HashSet<IndexFileId>,
    /// Superseded files the cache file already knows as such.
    covered_superseded: Vec<IndexFileId>,
}

impl LoadedIndex {
    /// An index sharing the live one's base, with `extra` packs numbered after every live
    /// one (so a blob in both resolves to the live copy).
    pub fn with_extra(&self, extra: &[IndexPack], archived: &dyn Fn(&PackId) -> bool) -> Index {
        let base = &self.live.base;
        let mut idx = Index::with_base(
            self.live.packs[..self.live.base_packs].to_vec(),
            base.share(),
        );
        idx.files = self.live.files.clone();
        idx.add_delta(self.delta_packs.iter().chain(extra), archived, |id| {
            base.find(id).is_none()
        });
        idx
    }
}

/// Loads the live index of the files `files` lists, through the cache file of `spec`.
pub fn load(files: &dyn IndexFiles, spec: &CacheSpec) -> Result<LoadedIndex> {
    if let Some(dir) = &spec.dir {
        // Only a cache: a folder that cannot be made means building in the temporary folder.
        let _ = std::fs::create_dir_all(dir);
    }
    let mut tiers = None;
    loop {
        let listed = files.list()?;
        let tiers = *tiers.get_or_insert_with(|| (spec.tiers)());
        if let Some(loaded) = try_load(files, spec, &tiers, &listed)? {
            return Ok(loaded);
        }
    }
}

fn cache_path(dir: &Path, tiers: &[u8; 32]) -> PathBuf {
    dir.join(format!("index-{}", &hex::encode(tiers)[..16]))
}

/// One attempt on one listing; `None` when a file vanished meanwhile.
fn try_load(
    files: &dyn IndexFiles,
    spec: &CacheSpec,
    tiers: &[u8; 32],
    listed: &[IndexFileId],
) -> Result<Option<LoadedIndex>> {
    let listed_set: HashSet<IndexFileId> = listed.iter().copied().collect();
    let Some(base) =
        open_base(spec, tiers).filter(|b| b.live_files.iter().all(|f| listed_set.contains(f)))
    else {
        return full_build(files, spec, tiers, listed);
    };
    let covered: HashSet<IndexFileId> = base
        .live_files
        .iter()
        .chain(&base.superseded_files)
        .copied()
        .collect();
    let new_ids: Vec<IndexFileId> = listed
        .iter()
        .filter(|f| !covered.contains(f))
        .copied()
        .collect();
    let still_superseded: Vec<IndexFileId> = base
        .superseded_files
        .iter()
        .filter(|f| listed_set.contains(f))
        .copied()
        .collect();
    let Some(new) = files.load(&new_ids)? else {
        return Ok(None);
    };
    let superseded = superseded_ids(&new);
    if base.live_files.iter().any(|f| superseded.contains(f)) {
        return full_build(files, spec, tiers, listed);
    }
    let Some(old) = files.load(&still_superseded)? else {
        return Ok(None);
    };
    let (live_new, gone): (Vec<_>, Vec<_>) = new
        .into_iter()
        .partition(|(id, _)| !superseded.contains(id));
    let delta_blobs: usize = live_new
        .iter()
        .flat_map(|(_, f)| &f.packs)
        .map(|p| p.blobs.len())
        .sum();
    let mut loaded = from_base(base, &live_new, spec);
    loaded.files = loaded.live.files.clone();
    loaded.files.extend(still_superseded.iter().copied());
    loaded.files.extend(gone.iter().map(|(id, _)| *id));
    loaded.superseded = loaded.files[loaded.live.files.len()..]
        .iter()
        .copied()
        .collect();
    let merge = delta_blobs > MERGE_BLOBS.min((loaded.live.base.len() / 8).max(4096))
        || live_new.len() > MERGE_FILES
        || shadows_archived(&loaded, spec);
    if merge {
        if let Some(merged) = merge_into_new(&loaded, &gone, spec, tiers)? {
            loaded = LoadedIndex {
                files: std::mem::take(&mut loaded.files),
                superseded: std::mem::take(&mut loaded.superseded),
                ..merged
            };
        }
    }
    loaded.superseded_packs = packs_not_in(&loaded.live, gone.iter().chain(&old));
    Ok(Some(loaded))
}

fn open_base(spec: &CacheSpec, tiers: &[u8; 32]) -> Option<Opened> {
    let path = cache_path(spec.dir.as_deref()?, tiers);
    let file = std::fs::File::open(&path).ok()?;
    Mapped::open(&file, Some(&path), &spec.repository_id, tiers)
}

/// The index of an opened cache file plus the live files written since.
fn from_base(base: Opened, live_new: &[(IndexFileId, IndexFile)], spec: &CacheSpec) -> LoadedIndex {
    let mapped = Arc::new(base.mapped);
    mapped.shed_periodically();
    let table = Table::Mapped(mapped);
    let mut live = Index::with_base(base.packs, table);
    live.files = base.live_files;
    let covered_superseded = base.superseded_files;
    live.files.extend(live_new.iter().map(|(id, _)| *id));
    let delta_packs: Vec<IndexPack> = live_new
        .iter()
        .flat_map(|(_, f)| f.packs.iter().cloned())
        .collect();
    let base_table = &live.base;
    let mut delta = Index::with_base(Vec::new(), Table::default());
    std::mem::swap(&mut delta.packs, &mut live.packs);
    delta.add_delta(delta_packs.iter(), spec.archived, |id| {
        base_table.find(id).is_none()
    });
    live.packs = delta.packs;
    live.delta = delta.delta;
    LoadedIndex {
        live,
        delta_packs,
        superseded_packs: Vec::new(),
        files: Vec::new(),
        superseded: HashSet::new(),
        covered_superseded,
    }
}

/// Whether a blob of the delta is in the base only in an archived pack while the delta has
/// it in a readable one: the base's copy would win, so the two are merged first.
fn shadows_archived(loaded: &LoadedIndex, spec: &CacheSpec) -> bool {
    let live = &loaded.live;
    live.packs[..live.base_packs].iter().any(|p| p.archived)
        && loaded.delta_packs.iter().any(|p| {
            !(spec.archived)(&p.id)
                && p.blobs.iter().any(|b| {
                    live.base
                        .find(&b.id.0)
                        .is_some_and(|(_, e)| live.packs[e.pack() as usize].archived)
                })
        })
}

/// Packs of `files` that the live index does not hold.
fn packs_not_in<'f>(
    live: &Index,
    files: impl Iterator<Item = &'f (IndexFileId, IndexFile)>,
) -> Vec<IndexPack> {
    let held: HashSet<PackId> = live.packs.iter().map(|p| p.id).collect();
    files
        .flat_map(|(_, f)| f.packs.iter())
        .filter(|p| !held.contains(&p.id))
        .cloned()
        .collect()
}

/// A new file in the cache folder, renamed into place once written; or, without a cache
/// folder or when it cannot be written, an unnamed temporary file.
fn new_file(spec: &CacheSpec) -> std::io::Result<(std::fs::File, Option<tempfile::TempPath>)> {
    let named = spec.dir.as_ref().and_then(|dir| {
        tempfile::Builder::new()
            .prefix("index-building-")
            .tempfile_in(dir)
            .ok()
    });
    Ok(match named {
        Some(named) => {
            let (file, path) = named.into_parts();
            (file, Some(path))
        }
        None => (tempfile::tempfile()?, None),
    })
}

/// Where sorted runs are spilled: the cache folder (the same disk as the file), else the
/// temporary folder.
fn tmp_dir(spec: &CacheSpec) -> PathBuf {
    spec.dir
        .clone()
        .filter(|d| tempfile::tempfile_in(d).is_ok())
        .unwrap_or_else(std::env::temp_dir)
}

/// Writes the builder's file and opens it, renamed into place when there is a cache folder.
fn write_and_open(
    builder: Builder,
    base: Option<&Table>,
    spec: &CacheSpec,
    tiers: &[u8; 32],
    live_files: &[IndexFileId],
    superseded_files: &[IndexFileId],
) -> Result<Option<Opened>> {
    let io = |e| Error::io(tmp_dir(spec), e);
    let (file, temp_path) = new_file(spec).map_err(io)?;
    let file = builder
        .finish(
            base,
            file,
            &spec.repository_id,
            tiers,
            live_files,
            superseded_files,
        )
        .map_err(io)?;
    let path = match (temp_path, &spec.dir) {
        (Some(t), Some(dir)) => {
            let path = cache_path(dir, tiers);
            t.persist(&path).map_err(|e| io(e.error))?;
            Some(path)
        }
        _ => None,
    };
    Ok(Mapped::open(
        &file,
        path.as_deref(),
        &spec.repository_id,
        tiers,
    ))
}

/// Builds the cache file from every listed index file, reading `BATCH` at a time.
fn full_build(
    files: &dyn IndexFiles,
    spec: &CacheSpec,
    tiers: &[u8; 32],
    listed: &[IndexFileId],
) -> Result<Option<LoadedIndex>> {
    let tmp = tmp_dir(spec);
    // Superseded files are known only once every file is read; they are rare (a prune
    // deletes them right after superseding them), so the build starts over without them.
    let mut leave_out: HashSet<IndexFileId> = HashSet::new();
    loop {
        let mut builder = Builder::new(&[], &tmp);
        let mut superseded = HashSet::new();
        let mut read: Vec<IndexFileId> = Vec::new();
        for batch in listed.chunks(BATCH) {
            let Some(loaded) = files.load(batch)? else {
                return Ok(None);
            };
            for (id, f) in &loaded {
                superseded.extend(f.supersedes.iter().copied());
                read.push(*id);
                if leave_out.contains(id) {
                    continue;
                }
                for p in &f.packs {
                    builder
                        .add_pack(p, (spec.archived)(&p.id))
                        .map_err(|e| Error::io(&tmp, e))?;
                }
            }
        }
        let (live, gone): (Vec<IndexFileId>, Vec<IndexFileId>) =
            read.into_iter().partition(|id| !superseded.contains(id));
        if gone.iter().any(|id| !leave_out.contains(id)) {
            leave_out = gone.into_iter().collect();
            continue;
        }
        let Some(opened) = write_and_open(builder, None, spec, tiers, &live, &gone)? else {
            return Err(Error::other(
                "the index cache file just written does not read back",
            ));
        };
        let Some(old) = files.load(&gone)? else {
            return Ok(None);
        };
        let mut loaded = from_base(opened, &[], spec);
        loaded.superseded_packs = packs_not_in(&loaded.live, old.iter());
        loaded.files = live;
        loaded.superseded = gone.iter().copied().collect();
        loaded.files.extend(gone);
        return Ok(Some(loaded));
    }
}

/// Merges the delta's live files into a new cache file; `None` when the old file turned out
/// damaged while merging (the caller keeps what it has; the next command rebuilds).
fn merge_into_new(
    loaded: &LoadedIndex,
    gone: &[(IndexFileId, IndexFile)],
    spec: &CacheSpec,
    tiers: &[u8; 32],
) -> Result<Option<LoadedIndex>> {
    let live = &loaded.live;
    let tmp = tmp_dir(spec);
    let mut builder = Builder::new(&live.packs[..live.base_packs], &tmp);
    for p in &loaded.delta_packs {
        builder
            .add_pack(p, (spec.archived)(&p.id))
            .map_err(|e| Error::io(&tmp, e))?;
    }
    let superseded: Vec<IndexFileId> = loaded
        .covered_superseded
        .iter()
        .copied()
        .chain(gone.iter().map(|(id, _)| *id))
        .collect();
    let Some(opened) = write_and_open(
        builder,
        Some(&live.base),
        spec,
        tiers,
        &live.files,
        &superseded,
    )?
    else {
        return Ok(None);
    };
    if live.base.is_damaged() {
        return Ok(None);
    }
    Ok(Some(from_base(opened, &[], spec)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BlobType, PackedBlob};
    use crate::id::BlobId;
    use std::sync::Mutex;

    /// Index files in memory; `vanish_once` deletes a file right after the next listing.
    #[derive(Default)]
    struct FakeFiles {
        files: Mutex<Vec<(IndexFileId, IndexFile)>>,
        vanish_once: Mutex<Option<IndexFileId>>,
        loads: Mutex<usize>,
    }

    impl IndexFiles for FakeFiles {
        fn list(&self) -> Result<Vec<IndexFileId>> {
            let ids = self
                .files
                .lock()
                .unwrap()
                .iter()
                .map(|(id, _)| *id)
                .collect();
            if let Some(v) = self.vanish_once.lock().unwrap().take() {
                self.files.lock().unwrap().retain(|(id, _)| *id != v);
            }
            Ok(ids)
        }
        fn load(&self, ids: &[IndexFileId]) -> Result<Option<Vec<(IndexFileId, IndexFile)>>> {
            *self.loads.lock().unwrap() += ids.len();
            let files = self.files.lock().unwrap();
            let mut out = Vec::new();
            for id in ids {
                match files.iter().find(|(f, _)| f == id) {
                    Some(f) => out.push(f.clone()),
                    None => return Ok(None),
                }
            }
            Ok(Some(out))
        }
    }

    fn id(n: u64, salt: u8) -> Id {
        let mut b = [salt; 8].to_vec();
        b.extend_from_slice(&n.to_le_bytes());
        Id(*blake3::hash(&b).as_bytes())
    }

    /// A file of `packs` packs of `per` blobs, blob ids numbered from `first`.
    fn file(n: u8, first: u64, packs: u64, per: u64) -> (IndexFileId, IndexFile) {
        let packs = (0..packs)
            .map(|p| IndexPack {
                id: PackId(id(first + p, 200)),
                blob_type: BlobType::Data,
                size: 1000,
                blobs: (0..per)
                    .map(|b| {
                        let k = first + p * per + b;
                        PackedBlob {
                            id: BlobId(id(k, 1)),
                            offset: k as u32,
                            length: 7,
                            raw_length: 9,
                        }
                    })
                    .collect(),
            })
            .collect();
        (
            IndexFileId(Id([n; 32])),
            IndexFile {
                supersedes: vec![],
                packs,
            },
        )
    }

    fn no_tiers() -> [u8; 32] {
        tiers_digest(std::iter::empty())
    }

    fn spec<'a>(dir: &Path, archived: &'a dyn Fn(&PackId) -> bool) -> CacheSpec<'a> {
        CacheSpec {
            dir: Some(dir.to_path_buf()),
            repository_id: Id([9; 32]),
            archived,
            tiers: &no_tiers,
        }
    }

    /// The mapped-and-delta index answers exactly like one built in memory.
    fn assert_same(loaded: &Index, files: &[(IndexFileId, IndexFile)]) {
        let plain = Index::from_files(files.to_vec());
        assert_eq!(loaded.len(), plain.len());
        for (bid, loc) in plain.iter() {
            let got = loaded.get(&bid).expect("every blob is found");
            assert_eq!(loaded.pack(got.pack).id, plain.pack(loc.pack).id);
            assert_eq!((got.offset, got.length), (loc.offset, loc.length));
        }
        let mut seen = 0;
        for (pos, (bid, loc)) in loaded.iter().enumerate() {
            assert_eq!(loaded.locate(&bid), Some((pos, loc)));
            assert_eq!(loaded.at(pos), (bid, loc));
            seen += 1;
        }
        assert_eq!(seen, plain.len());
        assert!(!loaded.contains(&id(u64::MAX, 1)));
        let mut ids: Vec<Id> = plain.iter().map(|(bid, _)| bid).collect();
        ids.push(id(u64::MAX, 1));
        loaded.locate_sorted(&mut ids, |bid, hit| assert_eq!(hit, loaded.locate(bid)));
        // In id order, with the positions `locate` gives.
        let by_id: Vec<(usize, Id, BlobLocation)> = loaded.iter_by_id().collect();
        assert_eq!(by_id.len(), plain.len());
        assert!(by_id.windows(2).all(|w| w[0].1 < w[1].1));
        for (pos, bid, loc) in by_id {
            assert_eq!(loaded.locate(&bid), Some((pos, loc)));
        }
    }

    #[test]
    fn builds_reuses_extends_merges_and_rebuilds() {
        let dir = tempfile::tempdir().unwrap();
        let none = |_: &PackId| false;
        let spec = spec(dir.path(), &none);
        let fake = FakeFiles::default();
        *fake.files.lock().unwrap() = vec![file(1, 0, 40, 250), file(2, 10_000, 40, 250)];
        let first = load(&fake, &spec).unwrap();
        assert_eq!(first.live.base.len(), 20_000);
        assert_same(&first.live, &fake.files.lock().unwrap());
        // Unchanged: the file is reused, no index file is read.
        *fake.loads.lock().unwrap() = 0;
        let again = load(&fake, &spec).unwrap();
        assert_eq!(*fake.loads.lock().unwrap(), 0);
        assert_eq!(again.live.base.len(), 20_000);
        // A new small file: read into the delta; a blob also in the base is counted once.
        let mut extra = file(3, 20_000, 2, 100);
        extra.1.packs[0]
            .blobs
            .push(fake.files.lock().unwrap()[0].1.packs[0].blobs[0]);
        fake.files.lock().unwrap().push(extra);
        *fake.loads.lock().unwrap() = 0;
        let delta = load(&fake, &spec).unwrap();
        assert_eq!(*fake.loads.lock().unwrap(), 1);
        assert_eq!(
            (delta.live.base.len(), delta.live.delta.len()),
            (20_000, 200)
        );
        assert_same(&delta.live, &fake.files.lock().unwrap());
        // A large new file: merged into a new cache file.
        fake.files.lock().unwrap().push(file(4, 30_000, 40, 250));
        let merged = load(&fake, &spec).unwrap();
        assert_eq!(
            (merged.live.base.len(), merged.live.delta.len()),
            (30_200, 0)
        );
        assert_same(&merged.live, &fake.files.lock().unwrap());
        // A prune's consolidated file supersedes two: rebuilt from scratch without them.
        let mut all = fake.files.lock().unwrap().clone();
        let mut consolidated = file(5, 0, 40, 250);
        consolidated.1.supersedes = vec![all[0].0, all[1].0];
        all.push(consolidated);
        *fake.files.lock().unwrap() = all.clone();
        let rebuilt = load(&fake, &spec).unwrap();
        let live: Vec<_> = all
            .iter()
            .filter(|(i, _)| i.0 .0[0] != 1 && i.0 .0[0] != 2)
            .cloned()
            .collect();
        assert_same(&rebuilt.live, &live);
        // The superseded files' packs beyond the live ones are for reading only.
        assert_eq!(rebuilt.superseded_packs.len(), 40);
        assert_eq!(rebuilt.files.len(), 5);
        assert_eq!(rebuilt.superseded, HashSet::from([all[0].0, all[1].0]));
        // Once they are deleted the file stays valid.
        fake.files.lock().unwrap().retain(|(i, _)| i.0 .0[0] > 2);
        *fake.loads.lock().unwrap() = 0;
        let after = load(&fake, &spec).unwrap();
        assert_eq!(*fake.loads.lock().unwrap(), 0);
        assert_same(&after.live, &live);
        assert!(after.superseded_packs.is_empty());
    }

    #[test]
    fn a_file_vanishing_after_the_listing_makes_the_loader_list_again() {
        let dir = tempfile::tempdir().unwrap();
        let none = |_: &PackId| false;
        let spec = spec(dir.path(), &none);
        let fake = FakeFiles::default();
        *fake.files.lock().unwrap() = vec![file(1, 0, 4, 10), file(2, 100, 4, 10)];
        *fake.vanish_once.lock().unwrap() = Some(IndexFileId(Id([2; 32])));
        let loaded = load(&fake, &spec).unwrap();
        assert_same(&loaded.live, &fake.files.lock().unwrap());
        assert_eq!(loaded.live.len(), 40);
    }

    #[test]
    fn damaged_cache_files_are_rebuilt_or_their_blocks_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let none = |_: &PackId| false;
        let spec = spec(dir.path(), &none);
        let fake = FakeFiles::default();
        *fake.files.lock().unwrap() = vec![file(1, 0, 100, 250)];
        load(&fake, &spec).unwrap();
        let path = cache_path(dir.path(), &no_tiers());
        let original = std::fs::read(&path).unwrap();
        // A flipped byte in the tail: the file is not used, and is rebuilt.
        let mut bytes = original.clone();
        let n = bytes.len();
        bytes[n - 3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        *fake.loads.lock().unwrap() = 0;
        let rebuilt = load(&fake, &spec).unwrap();
        assert_eq!(*fake.loads.lock().unwrap(), 1);
        assert_same(&rebuilt.live, &fake.files.lock().unwrap());
        drop(rebuilt);
        // A flipped byte in the entries: that block's blobs are unknown (never a wrong
        // location), the rest are found, and the file is deleted for the next command.
        let mut bytes = original.clone();
        bytes[super::super::cache_file::HEADER_LEN + 100_000] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let damaged = load(&fake, &spec).unwrap();
        let plain = Index::from_files(fake.files.lock().unwrap().clone());
        let mut found = 0;
        for (bid, loc) in plain.iter() {
            if let Some(got) = damaged.live.get(&bid) {
                assert_eq!(got.offset, loc.offset);
                found += 1;
            }
        }
        let per_block = super::super::cache_file::BLOCK / 46;
        assert!(
            found < plain.len() && found >= plain.len() - per_block - 2,
            "{found}"
        );
        assert!(!path.exists());
    }

    #[test]
    fn without_a_cache_folder_the_file_is_temporary() {
        let none = |_: &PackId| false;
        let spec = CacheSpec {
            dir: None,
            repository_id: Id([9; 32]),
            archived: &none,
            tiers: &no_tiers,
        };
        let fake = FakeFiles::default();
        *fake.files.lock().unwrap() = vec![file(1, 0, 10, 100), file(2, 5000, 3, 7)];
        let loaded = load(&fake, &spec).unwrap();
        assert_same(&loaded.live, &fake.files.lock().unwrap());
    }

    #[test]
    fn spilled_runs_merge_in_bounded_memory() {
        // More blobs than one run holds: the build spills and merges.
        let dir = tempfile::tempdir().unwrap();
        let none = |_: &PackId| false;
        let spec = spec(dir.path(), &none);
        let fake = FakeFiles::default();
        let per_file = 400_000u64;
        *fake.files.lock().unwrap() = (0..3)
            .map(|n| file(n as u8 + 1, n * per_file, 1600, 250))
            .collect();
        let loaded = load(&fake, &spec).unwrap();
        assert_eq!(loaded.live.len(), 1_200_000);
        assert_same(&loaded.live, &fake.files.lock().unwrap());
    }

    #[test]
    fn archived_copies_lose_to_readable_ones_in_base_and_delta() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeFiles::default();
        let cold = file(1, 0, 4, 10);
        let cold_pack = cold.1.packs[0].id;
        *fake.files.lock().unwrap() = vec![cold];
        let archived = move |p: &PackId| *p == cold_pack;
        let mut spec = spec(dir.path(), &archived);
        let cold_tiers = move || tiers_digest([cold_pack].iter());
        spec.tiers = &cold_tiers;
        let first = load(&fake, &spec).unwrap();
        let b0 = fake.files.lock().unwrap()[0].1.packs[0].blobs[0].id;
        assert!(first.live.contains(&b0) && !first.live.contains_hot(&b0));
        // A snapshot stores the blob again in a readable pack: it wins.
        let mut again = file(2, 1000, 1, 1);
        again.1.packs[0].blobs.push(PackedBlob {
            id: b0,
            offset: 77,
            length: 7,
            raw_length: 9,
        });
        fake.files.lock().unwrap().push(again);
        let loaded = load(&fake, &spec).unwrap();
        assert!(loaded.live.contains_hot(&b0));
        assert_eq!(loaded.live.get(&b0).unwrap().offset, 77);
        assert_eq!(loaded.live.len(), 41);
    }
}

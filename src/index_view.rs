//! The indexes `prune` and `check` work from, loaded in one place ([`load`]), and what they
//! keep per blob: one bit ([`Bits`], over positions of an [`Index`]). Index files are never
//! all held decoded after loading: what needs their packs' blob lists again reads them a few
//! at a time ([`IndexView::for_each_pack`]); remote repositories serve them from the disk
//! cache.

use crate::error::{Error, Result};
use crate::format::{IndexFile, IndexPack, PruneMark};
use crate::id::{Id, IndexFileId, PackId};
use crate::index::load::LoadedIndex;
use crate::index::Index;
use crate::repository::{IndexFilesOf, Loaded, Repository};
use std::collections::HashSet;

/// Index files [`IndexView::for_each_pack`] holds decoded at once.
const FILES_AT_ONCE: usize = 4;

/// One bit per position `0..len` (of an [`Index`], see [`Index::locate`]).
#[derive(Clone, Debug, Default)]
pub struct Bits(Vec<u64>);

impl Bits {
    pub fn new(len: usize) -> Bits {
        Bits(vec![0; len.div_ceil(64)])
    }

    pub fn get(&self, pos: usize) -> bool {
        self.0[pos / 64] & (1 << (pos % 64)) != 0
    }

    pub fn set(&mut self, pos: usize) {
        self.0[pos / 64] |= 1 << (pos % 64);
    }

    /// Sets the bit; whether it was clear before.
    pub fn insert(&mut self, pos: usize) -> bool {
        let was = self.get(pos);
        self.set(pos);
        !was
    }

    /// How many bits are set.
    pub fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// What [`load`] builds, and how.
pub(crate) struct ViewOptions<'a> {
    /// A damaged index file or prune mark is an error (prune), or reported in
    /// [`IndexView::damaged_files`] / [`IndexView::damaged_marks`] (check).
    pub strict: bool,
    /// Build the live index too (prune), or only the readable one (check).
    pub live: bool,
    /// Packs in an archive storage class: other copies of their blobs win.
    pub archived: &'a dyn Fn(&PackId) -> bool,
    /// Which marked or superseded packs (not live) the readable index includes; called
    /// after every index file and mark is read.
    pub readable_extra: &'a dyn Fn(&IndexPack) -> bool,
    /// The digest of the archived packs' ids (`index::load::tiers_digest`), which names the
    /// on-disk index built for them; asked, like `archived`, once `index/` is listed. `None`:
    /// no pack is archived.
    pub tiers: Option<&'a dyn Fn() -> [u8; 32]>,
    /// Reuse the on-disk index of the local cache (prune), or read every index file and
    /// build the index in a temporary file (check, which must find a damaged index file that
    /// the cache would stand in for).
    pub use_cache: bool,
}

/// The index files and prune marks, and the indexes made of them.
pub(crate) struct IndexView {
    /// The live index files' packs, what stays findable, when it differs from `readable`
    /// (see [`IndexView::live`]).
    live: Option<Index>,
    /// The live packs, then the marked packs and those of superseded index files still
    /// present, as [`ViewOptions::readable_extra`] chose them.
    pub readable: Index,
    /// Every intact index file read, superseded ones too, in listing order.
    pub files: Vec<IndexFileId>,
    /// Those of `files` another of them supersedes.
    pub superseded: HashSet<IndexFileId>,
    pub marks: Vec<(Id, PruneMark)>,
    pub damaged_files: Vec<(IndexFileId, Error)>,
    pub damaged_marks: Vec<(Id, Error)>,
}

/// Loads the index (through the on-disk index of the local cache, `index::load`) and the
/// prune marks as one consistent view ([`Repository::load_consistent`]) and builds the
/// readable index (and the live one when asked); both share the mapped base.
pub(crate) fn load(repo: &Repository, opts: &ViewOptions) -> Result<IndexView> {
    let damaged = std::sync::Mutex::new(Vec::new());
    let files = IndexFilesOf {
        repo,
        strict: opts.strict,
        damaged: Some(&damaged),
    };
    // The classes (and with them which packs are archived) are asked for once `index/` is
    // listed: `check` lists `data/` only then.
    let tiers = || crate::index::load::tiers_digest(std::iter::empty());
    let mut spec = repo.index_cache_spec(opts.archived, opts.tiers.unwrap_or(&tiers));
    if !opts.use_cache {
        spec.dir = None;
    }
    let (loaded, marks): (LoadedIndex, Loaded<PruneMark>) = repo.load_consistent(
        |_| crate::index::load::load(&files, &spec),
        |r| r.load_all::<PruneMark>(),
    )?;
    let Loaded {
        intact: marks,
        damaged: mut damaged_marks,
    } = marks;
    if opts.strict && !damaged_marks.is_empty() {
        return Err(damaged_marks.swap_remove(0).1);
    }
    let live_packs: HashSet<PackId> = loaded.live.packs().iter().map(|p| p.id).collect();
    let extra: Vec<IndexPack> = Repository::marked_packs(&marks)
        .into_iter()
        .chain(loaded.superseded_packs.iter().cloned())
        .filter(|p| !live_packs.contains(&p.id) && (opts.readable_extra)(p))
        .collect();
    drop(live_packs);
    // Without marked or superseded packs the two would be equal: one index.
    let readable = (!extra.is_empty()).then(|| loaded.with_extra(&extra, opts.archived));
    let (live, readable) = match readable {
        Some(r) => (opts.live.then_some(loaded.live), r),
        None => (None, loaded.live),
    };
    Ok(IndexView {
        live,
        readable,
        files: loaded.files,
        superseded: loaded.superseded,
        marks,
        damaged_files: damaged.into_inner().expect("damaged index files"),
        damaged_marks,
    })
}

impl IndexView {
    /// The live index, with [`ViewOptions::live`] (else the readable one).
    pub fn live(&self) -> &Index {
        self.live.as_ref().unwrap_or(&self.readable)
    }

    /// Reads the live index files (or, with `superseded`, the superseded ones) a few at a
    /// time and hands each of their packs to `f`. A file deleted since [`load`] (a prune beside
    /// this one superseded it, after writing the files that hold its packs) is passed over:
    /// callers leave the packs they did not see alone.
    pub fn for_each_pack(
        &self,
        repo: &Repository,
        superseded: bool,
        mut f: impl FnMut(&IndexPack) -> Result<()>,
    ) -> Result<()> {
        let ids: Vec<IndexFileId> = (self.files.iter())
            .filter(|id| self.superseded.contains(id) == superseded)
            .copied()
            .collect();
        // A few files at once, read and decoded in parallel (both cores busy), holding only
        // these: consolidated files list 100,000 blobs, about 5 MiB decoded.
        for chunk in ids.chunks(FILES_AT_ONCE) {
            crate::interrupt::check()?;
            for file in repo.load_files::<IndexFile>(chunk) {
                let file = match file {
                    Ok(f) => f,
                    Err(e) if crate::backend::is_not_found(&e) => continue,
                    Err(e) => return Err(e),
                };
                for p in &file.packs {
                    f(p)?;
                }
            }
        }
        Ok(())
    }

    /// The full entries (blob lists) of the wanted packs that are not live: from the marks,
    /// then from the superseded index files.
    pub fn readable_entries(
        &self,
        repo: &Repository,
        wanted: &HashSet<PackId>,
    ) -> Result<Vec<IndexPack>> {
        let mut out: Vec<IndexPack> = Vec::new();
        let mut found = HashSet::new();
        for p in Repository::marked_packs(&self.marks) {
            // A pack marked while in no index is listed without blobs.
            if wanted.contains(&p.id) && !p.blobs.is_empty() && found.insert(p.id) {
                out.push(p);
            }
        }
        if found.len() < wanted.len() {
            self.for_each_pack(repo, true, |p| {
                if wanted.contains(&p.id) && found.insert(p.id) {
                    out.push(p.clone());
                }
                Ok(())
            })?;
        }
        Ok(out)
    }
}

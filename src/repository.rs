//! A repository: its storage, its keys and config, and typed access to the files in it.

use crate::backend::lifecycle::{RetentionMode, WritePolicy};
use crate::backend::{is_not_found, Backend, FileKind, ObjectClass, CONFIG_PATH};
use crate::crypto::{self, Keys, MasterKey, SealKind};
use crate::error::{Error, Result};
use crate::format::{
    self, BlobType, ChunkerParams, Config, IndexFile, KdfParams, KeyFile, KeyPayload, Snapshot,
    Tree, WriteOnlyKeyPayload, WriteOnlyKeys, CONFIG_MAGIC, FORMAT_VERSION, KEY_FILE_VERSION,
    KEY_FILE_VERSION_WRITE_ONLY, KEY_MAGIC, OLDEST_FORMAT_VERSION,
};
use crate::id::{Id, IndexFileId, PackId, SnapshotId, TreeId};
use crate::index::Index;
use crate::repofile::RepoFile;
use rayon::prelude::*;
use zeroize::Zeroizing;

/// Files read from storage at once when loading many (index files, snapshots).
const READS_IN_FLIGHT: usize = 16;

/// The live index (for dedup) and, when prune marks exist, the index for reading.
pub(crate) struct Indexes {
    live: Index,
    /// The live index plus marked packs and packs of superseded index files still present;
    /// `None` when there are none (it would equal `live`).
    marked: Option<Index>,
}

impl Indexes {
    /// Loads the live index through the local cache's on-disk index (`index::load`), then the
    /// read index beside it from the marks, read after the index files (`load_consistent`);
    /// with `tiers`, packs in an archive class are known as such and lose to any other copy
    /// of a blob.
    fn load(
        repo: &Repository,
        strict: bool,
        tiers: Option<&crate::cold::Tiers>,
    ) -> Result<(Indexes, MarkListing)> {
        let archived = |id: &PackId| tiers.is_some_and(|t| t.is_archived(id));
        let digest =
            || crate::index::load::tiers_digest(tiers.into_iter().flat_map(|t| t.archived_ids()));
        let spec = repo.index_cache_spec(&archived, &digest);
        let files = IndexFilesOf {
            repo,
            strict,
            damaged: None,
        };
        let (loaded, marks, listing) = repo.load_consistent_listing(
            |_| crate::index::load::load(&files, &spec),
            |r| r.load_prune_marks(),
        )?;
        let live_packs: std::collections::HashSet<PackId> =
            loaded.live.packs().iter().map(|p| p.id).collect();
        let extra: Vec<crate::format::IndexPack> = Repository::marked_packs(&marks)
            .into_iter()
            .chain(loaded.superseded_packs.iter().cloned())
            .filter(|p| !live_packs.contains(&p.id))
            .collect();
        // Listed last, so a blob in both a live and a marked pack resolves to the live one.
        let marked = (!extra.is_empty()).then(|| loaded.with_extra(&extra, &archived));
        Ok((
            Indexes {
                live: loaded.live,
                marked,
            },
            listing,
        ))
    }

    /// The index for reading snapshots.
    pub fn read(&self) -> &Index {
        self.marked.as_ref().unwrap_or(&self.live)
    }

    fn into_read(self) -> Index {
        self.marked.unwrap_or(self.live)
    }
}

/// The repository's index files for `index::load`: damaged ones left out with a warning (or
/// gathered in `damaged`), or refused when `strict`.
pub(crate) struct IndexFilesOf<'r> {
    pub repo: &'r Repository,
    pub strict: bool,
    pub damaged: Option<&'r std::sync::Mutex<Vec<(IndexFileId, Error)>>>,
}

impl crate::index::load::IndexFiles for IndexFilesOf<'_> {
    fn list(&self) -> Result<Vec<IndexFileId>> {
        Ok(self
            .repo
            .backend
            .list_ids(IndexFile::KIND)?
            .into_iter()
            .map(|(id, _)| IndexFileId(id))
            .collect())
    }

    fn load(&self, ids: &[IndexFileId]) -> Result<Option<Vec<(IndexFileId, IndexFile)>>> {
        let mut loaded = Loaded {
            intact: Vec::new(),
            damaged: Vec::new(),
        };
        for (id, res) in ids.iter().zip(self.repo.load_files::<IndexFile>(ids)) {
            match res {
                Ok(f) => loaded.intact.push((*id, f)),
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e @ Error::Corrupt { .. }) => loaded.damaged.push((*id, e)),
                Err(e) => return Err(e),
            }
        }
        match (self.strict, self.damaged) {
            (true, _) => loaded.strict().map(Some),
            (false, Some(d)) => {
                let mut d = d.lock().expect("damaged index files");
                for (id, e) in loaded.damaged {
                    if !d.iter().any(|(i, _)| *i == id) {
                        d.push((id, e));
                    }
                }
                Ok(Some(loaded.intact))
            }
            (false, None) => Ok(Some(loaded.skip_damaged())),
        }
    }
}

/// The ids and sizes of the files in `prune/`, sorted.
type MarkListing = Vec<(Id, u64)>;

/// Settings fixed at `init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub pack_target_size: u32,
    pub kdf_memory_kib: u32,
    pub kdf_iterations: u32,
    /// Object Lock and the data packs' storage class (S3 only).
    pub storage: format::StoragePolicy,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            // Chosen by measurement: README.md, "Chunk sizes and compression".
            chunker: ChunkerParams {
                min_size: 16 * 1024,
                avg_size: 64 * 1024,
                max_size: 256 * 1024,
            },
            compression_level: 3,
            pack_target_size: 16 * 1024 * 1024,
            // 16 MiB x 16 passes: more memory traffic per guess than RFC 9106's 64 MiB x 3
            // (256 against 192 MiB), a quarter of its memory; README.md, "Memory".
            kdf_memory_kib: 16 * 1024,
            kdf_iterations: 16,
            storage: format::StoragePolicy::default(),
        }
    }
}

/// An open repository: its storage, keys and config. Reading goes through it; loading the
/// index gives an [`IndexedRepository`], and every write goes through a write session
/// (`crate::session`), which holds a backup marker for its whole life.
pub struct Repository {
    backend: Backend,
    keys: Keys,
    config: Config,
    /// The key file that opened the repository.
    key_id: Id,
    /// Kept for adding keys; zeroized on drop. `None` when a write-only key opened it.
    master: Option<MasterKey>,
    /// A write-only key's local store of the trees it wrote, for change detection.
    own_trees: Option<crate::own_trees::OwnTrees>,
    /// The key shares that opened it (none when a key file did), for the operations log.
    approvals: Vec<format::ShareApproval>,
}

/// What a key file opens to.
pub enum KeySecret {
    Master(MasterKey),
    /// Key file version 2: the sub-keys of a write-only key.
    WriteOnly(WriteOnlyKeys),
}

/// An opened key file: its secret and who made it.
pub struct OpenedKey {
    pub secret: KeySecret,
    pub created_unix_ns: i64,
    pub hostname: String,
    pub username: String,
}

impl OpenedKey {
    /// The master key, unless this is a write-only key.
    pub fn master(&self) -> Option<&MasterKey> {
        match &self.secret {
            KeySecret::Master(m) => Some(m),
            KeySecret::WriteOnly(_) => None,
        }
    }
}

impl Repository {
    pub(crate) fn new(
        backend: Backend,
        keys: Keys,
        config: Config,
        key_id: Id,
        master: Option<MasterKey>,
    ) -> Repository {
        backend.apply_policy(write_policy(&config.storage));
        backend.attach_cache(&config.repository_id);
        Repository {
            backend,
            keys,
            config,
            key_id,
            master,
            own_trees: None,
            approvals: Vec::new(),
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The key file that opened the repository.
    pub fn key_id(&self) -> Id {
        self.key_id
    }

    /// The master key; a write-only key has none, and cannot do what needs it (`what`).
    pub(crate) fn master(&self, what: &str) -> Result<&MasterKey> {
        self.master
            .as_ref()
            .ok_or_else(|| Error::WriteOnly(what.to_string()))
    }

    /// Whether a write-only key opened the repository.
    pub fn is_write_only(&self) -> bool {
        self.keys.is_write_only()
    }

    /// Fails with exit 14 when a write-only key opened the repository: `what` names the
    /// operation ("restore snapshots").
    pub fn require_full_key(&self, what: &str) -> Result<()> {
        match self.is_write_only() {
            true => Err(Error::WriteOnly(what.to_string())),
            false => Ok(()),
        }
    }

    /// A write-only key's local store of the trees it wrote (see `crate::own_trees`).
    pub fn own_trees(&self) -> Option<&crate::own_trees::OwnTrees> {
        self.own_trees.as_ref()
    }

    /// The key shares that opened the repository, sorted by index; empty when a key file did.
    pub fn approvals(&self) -> &[format::ShareApproval] {
        &self.approvals
    }

    /// Remembers the key shares that opened the repository (for the operations log).
    pub(crate) fn set_approvals(&mut self, mut approvals: Vec<format::ShareApproval>) {
        approvals.sort();
        self.approvals = approvals;
    }

    /// Creates a new repository; refuses when one is already there.
    pub fn init(backend: Backend, password: &[u8], opts: &InitOptions) -> Result<Repository> {
        if backend.exists(CONFIG_PATH)? {
            return Err(Error::RepositoryExists(backend.location().to_string()));
        }
        let master = MasterKey::generate();
        let keys = master.derive();
        let config = Config {
            version: FORMAT_VERSION,
            repository_id: Id(crypto::random_bytes()),
            chunker: opts.chunker,
            compression_level: opts.compression_level,
            pack_target_size: opts.pack_target_size,
            storage: opts.storage.clone(),
        };
        // The key file and the config are locked (and classed) like everything after them.
        backend.apply_policy(write_policy(&config.storage));
        let key_id = write_key_file(
            &backend,
            &master,
            false,
            password,
            opts.kdf_memory_kib,
            opts.kdf_iterations,
        )?;
        let mut bytes = CONFIG_MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&keys.seal(
            SealKind::Config,
            &FORMAT_VERSION.to_le_bytes(),
            &format::frame(&config.encode(), 0),
        ));
        backend.write(CONFIG_PATH, bytes, ObjectClass::Metadata)?;
        Ok(Repository::new(backend, keys, config, key_id, Some(master)))
    }

    /// Checks that a repository of a known format is there, before any password is asked for.
    pub fn probe(backend: &Backend) -> Result<Vec<u8>> {
        let config_bytes = match backend.read(CONFIG_PATH) {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => {
                return Err(Error::NoRepository(backend.location().to_string()))
            }
            Err(e) => return Err(e),
        };
        if !looks_like_ocvault_config(&config_bytes) {
            return Err(Error::NotOcvault {
                location: backend.location().to_string(),
                hint: foreign_repository_hint(backend),
            });
        }
        read_config_version(&config_bytes)?;
        Ok(config_bytes)
    }

    /// Opens a repository: checks the format version, then finds a key the password opens.
    pub fn open(backend: Backend, password: &[u8]) -> Result<Repository> {
        Self::probe(&backend)?;
        match open_key(&backend, password)? {
            (KeySecret::Master(master), key_id) => {
                Self::open_with_master_key(backend, master, key_id)
            }
            (KeySecret::WriteOnly(w), key_id) => Self::open_write_only(backend, &w, key_id),
        }
    }

    /// Opens a repository with a write-only key: it can store snapshots, WAL and log entries
    /// and read the metadata around them, never a blob (format-spec §4b).
    fn open_write_only(backend: Backend, w: &WriteOnlyKeys, key_id: Id) -> Result<Repository> {
        let config_bytes = Self::probe(&backend)?;
        let keys = Keys::from_write_only(w)?;
        let config = decode_config(&keys, &config_bytes)?;
        let own_trees = backend
            .cache_root()
            .map(|root| crate::own_trees::OwnTrees::open(root, &config.repository_id, &key_id, w));
        let mut repo = Repository::new(backend, keys, config, key_id, None);
        repo.own_trees = own_trees;
        Ok(repo)
    }

    /// Opens a repository with its master key itself (combined from key shares): no key
    /// file is used, so [`Repository::key_id`] is all zeros. A wrong key fails to open the
    /// config (a corrupt-config error).
    pub fn open_with_master(backend: Backend, master: MasterKey) -> Result<Repository> {
        Self::open_with_master_key(backend, master, Id::default())
    }

    fn open_with_master_key(backend: Backend, master: MasterKey, key_id: Id) -> Result<Repository> {
        let config_bytes = Self::probe(&backend)?;
        let keys = master.derive();
        let config = decode_config(&keys, &config_bytes)?;
        if let Some(asked) = &backend.s3_settings().data_storage_class {
            if config.storage.data_storage_class.as_ref() != Some(asked) {
                return Err(Error::usage(format!(
                    "s3.data_storage_class is fixed at init ({}); this repository's is {}",
                    asked,
                    config
                        .storage
                        .data_storage_class
                        .as_deref()
                        .unwrap_or("the standard class")
                )));
            }
        }
        Ok(Repository::new(backend, keys, config, key_id, Some(master)))
    }

    /// Seals and stores a structured file; its name is the hash of the stored bytes. Only
    /// write sessions (`crate::session`) and the marker they hold call this.
    pub(crate) fn save_file<F: RepoFile>(&self, value: &F) -> Result<F::Id> {
        let sealed = self.keys.seal(
            F::SEAL,
            &[],
            &format::frame(
                &value.encode(self.config.version),
                self.config.compression_level,
            ),
        );
        let id = Id::of_stored_bytes(&sealed);
        self.backend
            .write(&F::KIND.path(&id), sealed, F::KIND.object_class())?;
        Ok(id.into())
    }

    /// Reads, verifies against its name, opens and decodes a structured file.
    pub fn load_file<F: RepoFile>(&self, id: &F::Id) -> Result<F> {
        let bytes = self.backend.read(&F::KIND.path(&(*id).into()))?;
        self.decode_file(id, &bytes)
    }

    /// Verifies stored bytes against their name, opens and decodes them.
    pub fn decode_file<F: RepoFile>(&self, id: &F::Id, bytes: &[u8]) -> Result<F> {
        let id: Id = (*id).into();
        let what = F::KIND.path(&id);
        if Id::of_stored_bytes(bytes) != id {
            return Err(Error::corrupt(&what, "content does not match its name"));
        }
        let framed = self
            .keys
            .open(F::SEAL, &[], bytes)
            .map_err(|_| Error::corrupt(&what, "authentication failed"))?;
        F::decode(
            &format::unframe(&framed, format::MAX_OBJECT_SIZE, &what)?,
            self.config.version,
            &what,
        )
    }

    /// Reads and decodes files of one kind: up to `READS_IN_FLIGHT` reads at once on the I/O
    /// runtime, each file decoded (verified, opened, parsed) on rayon as it arrives. One
    /// result per id, in the order of `ids`.
    pub fn load_files<F: RepoFile>(&self, ids: &[F::Id]) -> Vec<Result<F>> {
        // Paths are made as they are read: held all at once they would be ~100 bytes a file.
        let paths = paths_of(F::KIND, ids.iter().map(|id| (*id).into()).collect());
        self.read_each(paths, |i, bytes| {
            bytes.and_then(|b| self.decode_file(&ids[i], &b))
        })
    }

    /// Reads and decodes files like [`Repository::load_files`], handing each result to `visit`
    /// (on rayon, in no order) instead of collecting them: for a kind with more files than
    /// could be held decoded at once (the operations log gains an entry per command for years).
    pub fn visit_files<F: RepoFile>(&self, ids: &[F::Id], visit: impl Fn(F::Id, Result<F>) + Sync) {
        let paths = paths_of(F::KIND, ids.iter().map(|id| (*id).into()).collect());
        self.reads(paths).par_bridge().for_each(|(i, bytes)| {
            visit(ids[i], bytes.and_then(|b| self.decode_file(&ids[i], &b)))
        });
    }

    /// Reads files at `paths`, up to `READS_IN_FLIGHT` at once on the I/O runtime, and hands
    /// each (its position in `paths`, its bytes) to `decode` on rayon as it arrives. One
    /// result per path, in the order of `paths`.
    pub(crate) fn read_each<T: Send>(
        &self,
        paths: impl IntoIterator<Item = String, IntoIter: Send + 'static>,
        decode: impl Fn(usize, Result<Vec<u8>>) -> T + Sync,
    ) -> Vec<T> {
        let mut out: Vec<(usize, T)> = self
            .reads(paths)
            .par_bridge()
            .map(|(i, bytes)| (i, decode(i, bytes)))
            .collect();
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, r)| r).collect()
    }

    /// The files at `paths` as they are read, up to `READS_IN_FLIGHT` at once on the I/O
    /// runtime: each with its position in `paths`.
    fn reads(
        &self,
        paths: impl IntoIterator<Item = String, IntoIter: Send + 'static>,
    ) -> impl Iterator<Item = (usize, Result<Vec<u8>>)> + Send {
        use futures::StreamExt;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Result<Vec<u8>>)>(READS_IN_FLIGHT);
        let backend = self.backend.clone();
        let paths = paths.into_iter();
        self.backend.runtime().spawn(async move {
            let mut reads = futures::stream::iter(paths.enumerate())
                .map(move |(i, path)| {
                    let backend = backend.clone();
                    async move { (i, backend.read_async(&path).await) }
                })
                .buffer_unordered(READS_IN_FLIGHT);
            while let Some(r) = reads.next().await {
                if tx.send(r).await.is_err() {
                    break;
                }
            }
        });
        std::iter::from_fn(move || rx.blocking_recv())
    }

    /// Every file of one kind, read once: the intact ones, and the damaged ones with what is
    /// wrong; a storage error stops the listing. A file that vanished since the listing (a
    /// superseded index file, a forgotten snapshot) is left out, and the folder is listed
    /// again until a listing's files are all read: a prune deletes index files only after
    /// writing the files that supersede them, so those are never missed.
    pub fn load_all<F: RepoFile>(&self) -> Result<Loaded<F>> {
        let mut out = Loaded {
            intact: Vec::new(),
            damaged: Vec::new(),
        };
        let mut seen = std::collections::HashSet::new();
        loop {
            let ids: Vec<F::Id> = self
                .backend
                .list_ids(F::KIND)?
                .into_iter()
                .map(|(id, _)| F::Id::from(id))
                .filter(|id| !seen.contains(id))
                .collect();
            let loaded = self.load_files::<F>(&ids);
            let mut vanished = false;
            for (id, res) in ids.iter().zip(loaded) {
                match res {
                    Ok(f) => out.intact.push((*id, f)),
                    Err(e) if is_not_found(&e) => vanished = true,
                    Err(e @ Error::Corrupt { .. }) => out.damaged.push((*id, e)),
                    Err(e) => return Err(e),
                }
            }
            if !vanished {
                return Ok(out);
            }
            // Only a listing that lost a file pays for remembering what was read.
            seen.extend(ids);
        }
    }

    /// Every intact index file, read once. A damaged one is left out with a warning (once a
    /// process), so one bad file does not stop backups and restores; `check` reports it.
    pub fn load_index_files(&self) -> Result<Vec<(IndexFileId, IndexFile)>> {
        Ok(self.load_all::<IndexFile>()?.skip_damaged())
    }

    /// Every index file; a damaged one is an error (for `prune`, which must not replace an
    /// index file it cannot read, nor delete the packs it may list).
    pub fn load_index_files_strict(&self) -> Result<Vec<(IndexFileId, IndexFile)>> {
        self.load_all::<IndexFile>()?.strict()
    }

    /// Packs of index files that other loaded files supersede, as far as the live ones do not
    /// hold them: a prune deletes superseded files only after writing its mark, so a reader
    /// that saw them may not see that mark yet; for reading only, like marked packs.
    pub fn superseded_packs(files: &[(IndexFileId, IndexFile)]) -> Vec<crate::format::IndexPack> {
        let superseded = crate::index::superseded_ids(files);
        files
            .iter()
            .filter(|(id, _)| superseded.contains(id))
            .flat_map(|(_, f)| f.packs.iter().cloned())
            .collect()
    }

    /// Prune marks: packs taken out of the index, awaiting deletion.
    pub fn load_prune_marks(&self) -> Result<Vec<(Id, crate::format::PruneMark)>> {
        let mut out = Vec::new();
        for (id, _) in self.backend.list_ids(FileKind::PruneMark)? {
            match self.load_file::<crate::format::PruneMark>(&id) {
                Ok(m) => out.push((id, m)),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The packs of all marks, one entry per pack: where marks disagree, the entry that lists
    /// the pack's blobs wins (a pack marked while in no index is listed without blobs).
    pub fn marked_packs(marks: &[(Id, crate::format::PruneMark)]) -> Vec<crate::format::IndexPack> {
        let mut by_id: std::collections::HashMap<PackId, &crate::format::IndexPack> =
            std::collections::HashMap::new();
        for (_, m) in marks {
            for p in &m.packs {
                let e = by_id.entry(p.id).or_insert(p);
                if e.blobs.is_empty() && !p.blobs.is_empty() {
                    *e = p;
                }
            }
        }
        let mut v: Vec<_> = by_id.into_values().cloned().collect();
        v.sort_by_key(|p| p.id);
        v
    }

    /// Index files and prune marks as one consistent view. A prune writes a mark between its
    /// consolidated index and the deletion of what that supersedes, and puts a marked pack back
    /// into an index file before it deletes the mark, so a pack can move between the two while
    /// they are read: the marks are listed before and after the index files, and everything is
    /// read again until the two listings agree.
    pub fn load_consistent<F, M>(
        &self,
        files: impl Fn(&Repository) -> Result<F>,
        marks: impl Fn(&Repository) -> Result<M>,
    ) -> Result<(F, M)> {
        let (f, m, _) = self.load_consistent_listing(files, marks)?;
        Ok((f, m))
    }

    /// Like [`Self::load_consistent`], also returning the listing of `prune/` (sorted).
    fn load_consistent_listing<F, M>(
        &self,
        files: impl Fn(&Repository) -> Result<F>,
        marks: impl Fn(&Repository) -> Result<M>,
    ) -> Result<(F, M, MarkListing)> {
        loop {
            let mut before = self.list_prune_marks()?;
            let f = files(self)?;
            let m = marks(self)?;
            let after = self.list_prune_marks()?;
            before.sort();
            if before == after {
                return Ok((f, m, after));
            }
        }
    }

    /// The ids and sizes of the prune marks present, sorted.
    pub(crate) fn list_prune_marks(&self) -> Result<MarkListing> {
        let mut marks = self.backend.list_ids(FileKind::PruneMark)?;
        marks.sort();
        Ok(marks)
    }

    /// Every snapshot, oldest first, and the damaged snapshot files.
    fn load_snapshots(&self) -> Result<Loaded<Snapshot>> {
        let mut all = self.load_all::<Snapshot>()?;
        all.intact.sort_by(|a: &(SnapshotId, Snapshot), b| {
            a.1.time_unix_ns.cmp(&b.1.time_unix_ns).then(a.0.cmp(&b.0))
        });
        Ok(all)
    }

    /// Every intact snapshot, oldest first. A damaged snapshot file is left out with a
    /// warning (once a process), so the others can still be listed, restored and backed up
    /// beside; `check` reports it.
    pub fn list_snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        Ok(self.load_snapshots()?.skip_damaged())
    }

    /// Every snapshot, oldest first; a damaged snapshot file is an error (for `prune`, which
    /// cannot know what such a snapshot uses).
    pub fn list_snapshots_strict(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        self.load_snapshots()?.strict()
    }

    /// Resolves `latest` or a unique id prefix to one snapshot. An id that names only a
    /// damaged snapshot file gives that damage (exit code 1), not "no snapshot".
    pub fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        let all = self.load_snapshots()?;
        let found = crate::snapshot::resolve(&all.intact, spec).cloned();
        let spec = spec.to_ascii_lowercase();
        if found.is_err() && spec != "latest" && !spec.is_empty() {
            if let Some(i) = all
                .damaged
                .iter()
                .position(|(id, _)| id.to_hex().starts_with(&spec))
            {
                let (_, e) = all.damaged.into_iter().nth(i).unwrap();
                return Err(with_hint(
                    e,
                    "this snapshot cannot be read; run `ocvault check`",
                ));
            }
        }
        all.skip_damaged();
        found
    }

    /// Reads one blob from its pack, opens it and checks its id; `index` says where it is.
    /// For `prune` and `check`, which build their own index; everything else reads through
    /// an [`IndexedRepository`].
    pub fn read_blob_in(&self, index: &Index, id: &Id) -> Result<Vec<u8>> {
        if self.keys.is_write_only() {
            // A write-only key reads back only the trees it stored, from its local store.
            return self
                .own_trees
                .as_ref()
                .and_then(|t| t.get(&self.keys, id))
                .ok_or_else(|| Error::WriteOnly("read file contents or names".into()));
        }
        let loc = index
            .get(id)
            .ok_or_else(|| Error::corrupt(format!("blob {}", id.short()), "not in the index"))?;
        let pack = index.pack(loc.pack);
        let path = FileKind::Pack.path(&pack.id);
        let sealed = match pack.blob_type {
            // Trees are read one by one in walks: remote backends fetch their pack once.
            BlobType::Tree => self.backend.read_range_cached(
                &path,
                pack.size,
                loc.offset as u64,
                loc.length as u64,
            )?,
            BlobType::Data => {
                self.backend
                    .read_range(&path, loc.offset as u64, loc.length as u64)?
            }
        };
        crate::pack::open_blob(&self.keys, pack.blob_type, id, &sealed, loc.raw_length)
    }

    /// Reads and decodes one tree; `index` says where it is (see [`Self::read_blob_in`]).
    pub fn load_tree_in(&self, index: &Index, id: &TreeId) -> Result<Tree> {
        let raw = self.read_blob_in(index, id)?;
        format::from_postcard(&raw, &format!("tree {}", id.short()))
    }

    /// Loads the index: the repository can then read blobs, and a write session can be had
    /// from it to store new ones. The live index and the index for reading come from one
    /// read of the index files (then the prune marks). The read index is the live one plus
    /// packs a prune has marked but not yet deleted, so a snapshot saved by a backup that ran
    /// during the prune stays readable until a later prune puts those packs back. It is never
    /// for dedup: new snapshots must not come to depend on marked packs.
    pub fn load_index(&self) -> Result<IndexedRepository<'_>> {
        self.load_index_with(None)
    }

    /// [`Self::load_index`] for commands that read data packs or store blobs (restore, dump,
    /// snapshot, thaw): on storage with classes (S3), one listing of `data/` first tells which
    /// packs are in an archive class (`crate::cold`); the index then resolves blobs to other
    /// copies where there are any, and new blobs are not deduplicated against archived ones.
    pub fn load_index_tiered(&self) -> Result<IndexedRepository<'_>> {
        self.load_index_with(crate::cold::Tiers::list(&self.backend)?)
    }

    /// Where and for what this repository's on-disk index is kept (`index::load`).
    pub(crate) fn index_cache_spec<'a>(
        &self,
        archived: &'a dyn Fn(&PackId) -> bool,
        tiers: &'a dyn Fn() -> [u8; 32],
    ) -> crate::index::load::CacheSpec<'a> {
        crate::index::load::CacheSpec {
            dir: self
                .backend
                .cache_root()
                .map(|root| root.join(self.config.repository_id.to_hex()).join("index")),
            repository_id: self.config.repository_id,
            archived,
            tiers,
        }
    }

    /// The live index alone, no prune mark read (prune's phase 2 reads marks one at a time).
    pub(crate) fn load_live_index(&self) -> Result<Index> {
        let archived = |_: &PackId| false;
        let digest = || crate::index::load::tiers_digest(std::iter::empty());
        let spec = self.index_cache_spec(&archived, &digest);
        let files = IndexFilesOf {
            repo: self,
            strict: false,
            damaged: None,
        };
        Ok(crate::index::load::load(&files, &spec)?.live)
    }

    pub(crate) fn load_index_with(
        &self,
        tiers: Option<std::sync::Arc<crate::cold::Tiers>>,
    ) -> Result<IndexedRepository<'_>> {
        let (indexes, listing) = Indexes::load(self, false, tiers.as_deref())?;
        Ok(IndexedRepository {
            repo: self,
            indexes,
            marks_listed: listing,
            tiers,
        })
    }
}

/// A repository with its index loaded. It picks the index itself: blobs and trees are read
/// through the read index (which includes packs a prune has marked), while dedup in its write
/// session uses the live one.
pub struct IndexedRepository<'r> {
    repo: &'r Repository,
    pub(crate) indexes: Indexes,
    /// The prune marks listed when the index was loaded (`prune/` ids and sizes, sorted):
    /// a write session compares them with a listing made after its marker is stored.
    pub(crate) marks_listed: MarkListing,
    /// Which packs are in an archive class, when loaded with `load_index_tiered` on storage
    /// that has classes.
    pub(crate) tiers: Option<std::sync::Arc<crate::cold::Tiers>>,
}

impl std::ops::Deref for IndexedRepository<'_> {
    type Target = Repository;
    fn deref(&self) -> &Repository {
        self.repo
    }
}

impl<'r> IndexedRepository<'r> {
    /// The open repository this one indexes.
    pub fn repository(&self) -> &'r Repository {
        self.repo
    }

    /// The index for reading: the live index plus marked packs still present.
    pub fn index(&self) -> &Index {
        self.indexes.read()
    }

    /// The index for reading, owned: for `mount`, whose file system outlives any borrow and
    /// reads through [`Repository::read_blob_in`].
    pub fn into_read_index(self) -> Index {
        self.indexes.into_read()
    }

    /// The live index: what new data may be deduplicated against.
    pub fn live_index(&self) -> &Index {
        &self.indexes.live
    }

    /// Reads one blob from its pack, opens it and checks its id.
    pub fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        self.repo.read_blob_in(self.index(), id)
    }

    pub fn load_tree(&self, id: &TreeId) -> Result<Tree> {
        self.repo.load_tree_in(self.index(), id)
    }

    /// The packs in archive classes (see [`Repository::load_index_tiered`]).
    pub fn tiers(&self) -> Option<&crate::cold::Tiers> {
        self.tiers.as_deref()
    }

    /// Of the read index's packs numbered `packs`, the ones that cannot be read now (HEAD
    /// requests only for archived ones; none without tiers).
    pub fn cold_packs(
        &self,
        packs: impl IntoIterator<Item = u32>,
    ) -> Result<Vec<crate::cold::ColdPack>> {
        let Some(tiers) = self.tiers() else {
            return Ok(Vec::new());
        };
        let index = self.index();
        let archived = packs
            .into_iter()
            .map(|n| index.pack(n))
            .filter(|p| p.archived)
            .map(|p| p.id);
        crate::cold::find_cold(self.backend(), tiers, archived)
    }

    /// Stops with [`Error::Cold`] (exit 13) when any of these packs cannot be read now.
    pub fn refuse_cold(&self, packs: impl IntoIterator<Item = u32>) -> Result<()> {
        let cold = self.cold_packs(packs)?;
        if cold.is_empty() {
            return Ok(());
        }
        Err(crate::cold::cold_error(cold))
    }
}

/// The paths of files of `kind`, made one at a time (outside the generic callers, so the
/// iterator is `'static` whatever file type they read).
fn paths_of(kind: FileKind, ids: Vec<Id>) -> impl Iterator<Item = String> + Send + 'static {
    ids.into_iter().map(move |id| kind.path(&id))
}

/// Files of one kind as read: the intact ones and the damaged ones.
pub struct Loaded<F: RepoFile> {
    pub intact: Vec<(F::Id, F)>,
    pub damaged: Vec<(F::Id, Error)>,
}

impl<F: RepoFile> Loaded<F> {
    /// The intact files; each damaged one is named in a warning, once a process.
    pub fn skip_damaged(self) -> Vec<(F::Id, F)> {
        for (id, e) in &self.damaged {
            warn_skipped_once(&F::KIND.path(&(*id).into()), e);
        }
        self.intact
    }

    /// The intact files, or an error naming the first damaged one.
    pub fn strict(self) -> Result<Vec<(F::Id, F)>> {
        match self.damaged.into_iter().next() {
            None => Ok(self.intact),
            Some((_, e)) => Err(with_hint(e, "run `ocvault check`")),
        }
    }
}

/// A damage error with advice appended.
fn with_hint(e: Error, hint: &str) -> Error {
    match e {
        Error::Corrupt { what, why } => Error::Corrupt {
            what,
            why: format!("{why}; {hint}"),
        },
        e => e,
    }
}

/// Prints one warning line for a damaged file a command skipped, at most once a process.
fn warn_skipped_once(path: &str, e: &Error) {
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if !warned.iter().any(|p| p == path) {
        warned.push(path.to_string());
        eprintln!("ocvault: warning: {e}; skipped it (`ocvault check` reports it)");
    }
}

/// Reads the clear format version at the start of `config`, refusing unknown ones.
/// Whether a config file is ocvault's, perhaps damaged: its magic matches but for at most two
/// bytes, or it is a (possibly empty) start of it. Anything else (restic's JSON or encrypted
/// config, borg's INI) is another tool's.
fn looks_like_ocvault_config(bytes: &[u8]) -> bool {
    let n = bytes.len().min(CONFIG_MAGIC.len());
    let differing = bytes[..n]
        .iter()
        .zip(CONFIG_MAGIC.iter())
        .filter(|(a, b)| a != b)
        .count();
    if n < CONFIG_MAGIC.len() {
        return differing == 0;
    }
    differing <= 2
}

/// Names the tool whose repository this seems to be, for the "not an ocvault repository"
/// line; empty when none is recognised. Only reached on that error, so the extra reads cost
/// nothing in ordinary use.
fn foreign_repository_hint(backend: &Backend) -> String {
    let borg = backend
        .read("README")
        .is_ok_and(|b| b.starts_with(b"This is a Borg Backup repository"));
    if borg {
        return " (it looks like a Borg repository)".into();
    }
    // restic's key files are JSON naming their scrypt parameters; ocvault's are binary.
    let restic = backend.list(FileKind::Key).ok().and_then(|keys| {
        let (path, _) = keys.first()?;
        let bytes = backend.read_range(path, 0, 1).ok()?;
        Some(bytes == b"{")
    });
    if restic == Some(true) {
        return " (it looks like a restic repository)".into();
    }
    String::new()
}

/// How the storage is to write this repository's files.
pub fn write_policy(p: &format::StoragePolicy) -> WritePolicy {
    WritePolicy {
        lock: p.lock.map(|l| {
            let mode = match l.mode {
                format::LockMode::Governance => RetentionMode::Governance,
                format::LockMode::Compliance => RetentionMode::Compliance,
            };
            (mode, l.days)
        }),
        data_storage_class: p.data_storage_class.clone(),
    }
}

/// Decodes the `config` file with the repository's keys: the clear format version (refusing
/// unknown ones), then the sealed settings, which must name the same version. The one decoder
/// behind `open`, `check` and the fuzz targets.
pub fn decode_config(keys: &Keys, bytes: &[u8]) -> Result<Config> {
    let version = read_config_version(bytes)?;
    let framed = keys
        .open(SealKind::Config, &version.to_le_bytes(), &bytes[12..])
        .map_err(|_| Error::corrupt("config", "authentication failed"))?;
    let config = Config::decode(&format::unframe(&framed, 1 << 20, "config")?, version)?;
    if config.version != version {
        return Err(Error::corrupt(
            "config",
            "sealed version differs from the clear one",
        ));
    }
    Ok(config)
}

pub fn read_config_version(bytes: &[u8]) -> Result<u32> {
    if bytes.len() < 12 || &bytes[..8] != CONFIG_MAGIC {
        return Err(Error::corrupt("config", "not an ocvault config file"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(Error::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(version)
}

/// Wraps the master key under a password into a new key file; returns its id.
/// Writes a key file for `master` under `password`: a full key (key file version 1), or with
/// `write_only` a write-only key (version 2) holding the sub-keys derived from it.
pub(crate) fn write_key_file(
    backend: &Backend,
    master: &MasterKey,
    write_only: bool,
    password: &[u8],
    memory_kib: u32,
    iterations: u32,
) -> Result<Id> {
    let kdf = KdfParams {
        memory_kib,
        iterations,
        parallelism: 1,
        salt: crypto::random_bytes(),
    };
    if !kdf_within_limits(&kdf) {
        return Err(Error::usage(format!(
            "Argon2id parameters too large: at most {MAX_KDF_MEMORY_KIB} KiB, \
             {MAX_KDF_ITERATIONS} iterations, and memory times iterations at most \
             {MAX_KDF_COST_KIB} KiB"
        )));
    }
    let (version, plain) = match write_only {
        false => {
            let payload = KeyPayload {
                master_key: *master.as_bytes(),
                created_unix_ns: crate::host::now_ns(),
                hostname: crate::host::hostname(),
                username: crate::host::username(),
            };
            (KEY_FILE_VERSION, format::to_postcard(&payload))
        }
        true => {
            let payload = WriteOnlyKeyPayload {
                keys: master.write_only_keys(),
                created_unix_ns: crate::host::now_ns(),
                hostname: crate::host::hostname(),
                username: crate::host::username(),
            };
            (KEY_FILE_VERSION_WRITE_ONLY, format::to_postcard(&payload))
        }
    };
    let plain = Zeroizing::new(plain);
    let wrap = crypto::password_key(password, &kdf)?;
    let file = KeyFile {
        version,
        kdf,
        sealed_payload: crypto::wrap_with_password_key(&wrap, &plain),
    };
    let mut bytes = KEY_MAGIC.to_vec();
    bytes.extend_from_slice(&format::to_postcard(&file));
    let id = Id::of_stored_bytes(&bytes);
    backend.write(&FileKind::Key.path(&id), bytes, ObjectClass::Metadata)?;
    Ok(id)
}

pub fn decode_key_file(bytes: &[u8]) -> Result<KeyFile> {
    if bytes.len() < 8 || &bytes[..8] != KEY_MAGIC {
        return Err(Error::corrupt("key file", "not an ocvault key file"));
    }
    let kf: KeyFile = format::from_postcard(&bytes[8..], "key file")?;
    if kf.version != KEY_FILE_VERSION && kf.version != KEY_FILE_VERSION_WRITE_ONLY {
        return Err(Error::UnsupportedKeyFileVersion { found: kf.version });
    }
    // Refuse parameters that would make a hostile key file eat all memory or time.
    if !kdf_within_limits(&kf.kdf) {
        return Err(Error::corrupt(
            "key file",
            "Argon2id parameters out of range",
        ));
    }
    Ok(kf)
}

/// Argon2id memory a key file may ask for, in KiB (2 GiB: RFC 9106's first recommendation).
pub const MAX_KDF_MEMORY_KIB: u32 = 2 * 1024 * 1024;
/// Argon2id passes a key file may ask for.
pub const MAX_KDF_ITERATIONS: u32 = 100;
/// Memory times passes a key file may ask for, in KiB (8 GiB: about 6 s on one core of the
/// test machine), so no key file costs more than that to try.
pub const MAX_KDF_COST_KIB: u64 = 8 * 1024 * 1024;

/// Whether Argon2id parameters are within what `init` and `key add` write and readers accept.
pub fn kdf_within_limits(kdf: &KdfParams) -> bool {
    kdf.memory_kib <= MAX_KDF_MEMORY_KIB
        && kdf.iterations <= MAX_KDF_ITERATIONS
        && kdf.memory_kib as u64 * kdf.iterations as u64 <= MAX_KDF_COST_KIB
        && kdf.parallelism <= 64
}

/// What trying a password on a key file costs, for trying the cheapest first.
fn kdf_cost(kdf: &KdfParams) -> u64 {
    kdf.memory_kib as u64 * kdf.iterations as u64
}

/// Tries the password against one key file; `Ok(None)` when it does not fit.
pub fn try_key_file(bytes: &[u8], password: &[u8]) -> Result<Option<OpenedKey>> {
    open_key_file(&decode_key_file(bytes)?, password)
}

/// Tries the password against one decoded key file; `Ok(None)` when it does not fit.
fn open_key_file(kf: &KeyFile, password: &[u8]) -> Result<Option<OpenedKey>> {
    let wrap = crypto::password_key(password, &kf.kdf)?;
    let Some(plain) = crypto::unwrap_with_password_key(&wrap, &kf.sealed_payload)? else {
        return Ok(None);
    };
    if kf.version == KEY_FILE_VERSION_WRITE_ONLY {
        let p: WriteOnlyKeyPayload = format::from_postcard(&plain, "key payload")?;
        // Refuse a malformed payload here, so `check` reports it as a damaged key file.
        Keys::from_write_only(&p.keys)?;
        return Ok(Some(OpenedKey {
            secret: KeySecret::WriteOnly(p.keys.clone()),
            created_unix_ns: p.created_unix_ns,
            hostname: p.hostname.clone(),
            username: p.username.clone(),
        }));
    }
    let p: KeyPayload = format::from_postcard(&plain, "key payload")?;
    Ok(Some(OpenedKey {
        secret: KeySecret::Master(MasterKey::from_bytes(p.master_key)),
        created_unix_ns: p.created_unix_ns,
        hostname: p.hostname.clone(),
        username: p.username.clone(),
    }))
}

/// A key file that could not be used (its path), and why.
pub enum KeyProblem {
    Unreadable(String, Error),
    WrongName(String),
    /// Read and named right, but not a usable key file.
    Invalid(String, Error),
}

/// What trying the password on the key files found.
pub struct KeyScan {
    /// The first key file the password opens.
    pub opened: Option<(KeySecret, Id)>,
    pub problems: Vec<KeyProblem>,
    /// Key files listed.
    pub listed: usize,
}

/// Tries the password on the key files, the cheapest Argon2id parameters first, and stops at
/// the first that opens: the one loop behind `open` and `check`. Every key file is read and
/// decoded first (key files are small), so one with expensive parameters, which anyone who
/// can write to the storage could add, never slows down a cheaper one the password opens.
/// With `check_all` (check) every key file is also compared with its name and every problem
/// is reported; otherwise (open) a key file of an unknown version stops the scan with that
/// error, a read error is returned when no key opens, and problems only matter then.
/// Without a password (`check` with key shares) the key files are only read and decoded.
pub fn scan_key_files(
    backend: &Backend,
    password: Option<&[u8]>,
    check_all: bool,
) -> Result<KeyScan> {
    let keys = backend.list_ids(FileKind::Key)?;
    let mut scan = KeyScan {
        opened: None,
        problems: Vec::new(),
        listed: keys.len(),
    };
    let mut read_error = None;
    let mut candidates: Vec<(u64, Id, KeyFile)> = Vec::new();
    for (id, _) in keys {
        let path = FileKind::Key.path(&id);
        let bytes = match backend.read(&path) {
            Ok(b) => b,
            Err(e) if check_all => {
                scan.problems.push(KeyProblem::Unreadable(path, e));
                continue;
            }
            Err(e) => {
                read_error.get_or_insert(e);
                continue;
            }
        };
        if check_all && Id::of_stored_bytes(&bytes) != id {
            scan.problems.push(KeyProblem::WrongName(path));
            continue;
        }
        match decode_key_file(&bytes) {
            Ok(kf) => candidates.push((kdf_cost(&kf.kdf), id, kf)),
            Err(
                e @ (Error::UnsupportedVersion { .. } | Error::UnsupportedKeyFileVersion { .. }),
            ) if !check_all => return Err(e),
            Err(e) => scan.problems.push(KeyProblem::Invalid(path, e)),
        }
    }
    candidates.sort_by_key(|(cost, id, _)| (*cost, *id));
    let Some(password) = password else {
        return match read_error {
            Some(e) => Err(e),
            None => Ok(scan),
        };
    };
    for (_, id, kf) in candidates {
        match open_key_file(&kf, password) {
            Ok(Some(k)) => {
                scan.opened = Some((k.secret, id));
                break;
            }
            Ok(None) => {}
            Err(e) => scan
                .problems
                .push(KeyProblem::Invalid(FileKind::Key.path(&id), e)),
        }
    }
    match read_error {
        Some(e) if scan.opened.is_none() => Err(e),
        _ => Ok(scan),
    }
}

fn open_key(backend: &Backend, password: &[u8]) -> Result<(KeySecret, Id)> {
    let mut scan = scan_key_files(backend, Some(password), false)?;
    if scan.listed == 0 {
        // `key remove` with key shares open may remove the last key file on purpose.
        return Err(Error::ShareRefused(
            "no key file in the repository: no password opens it (key shares do, with --share, if it was split)"
                .into(),
        ));
    }
    if let Some(found) = scan.opened {
        return Ok(found);
    }
    // A damaged key file must not be reported as a wrong password when it is the only one.
    match scan.problems.pop() {
        Some(KeyProblem::Invalid(_, e)) if scan.listed == 1 => Err(e),
        _ => Err(Error::WrongPassword),
    }
}

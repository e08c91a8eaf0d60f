//! A repository: its storage, its keys and config, and typed access to the files in it.

use crate::backend::{is_not_found, Backend, FileKind, CONFIG_PATH};
use crate::crypto::{self, Keys, MasterKey, SealKind};
use crate::error::{Error, Result};
use crate::format::{
    self, BlobType, ChunkerParams, Config, IndexFile, KdfParams, KeyFile, KeyPayload, Snapshot,
    Tree, CONFIG_MAGIC, FORMAT_VERSION, KEY_MAGIC,
};
use crate::id::Id;
use crate::index::Index;
use rayon::prelude::*;
use serde::{de::DeserializeOwned, Serialize};
use zeroize::Zeroizing;

/// Files read from storage at once when loading many (index files, snapshots).
const READS_IN_FLIGHT: usize = 16;

/// The live index (for dedup) and, when prune marks exist, the index for reading.
pub struct Indexes {
    pub live: Index,
    /// The live index plus marked packs; `None` when there are no marks (it would equal
    /// `live`).
    marked: Option<Index>,
}

impl Indexes {
    /// Builds both from the same index files and marks.
    pub fn build(files: Vec<(Id, IndexFile)>, marks: &[(Id, crate::format::PruneMark)]) -> Indexes {
        let live = Index::build(&files, &[]);
        if marks.is_empty() {
            return Indexes { live, marked: None };
        }
        let live_packs: std::collections::HashSet<Id> = live.packs().iter().map(|p| p.id).collect();
        let extra: Vec<crate::format::IndexPack> = Repository::marked_packs(marks)
            .into_iter()
            .filter(|p| !live_packs.contains(&p.id))
            .collect();
        // Listed last, so a blob in both a live and a marked pack resolves to the live one.
        let marked = Index::build(&files, &extra);
        Indexes {
            live,
            marked: Some(marked),
        }
    }

    /// The index for reading snapshots.
    pub fn read(&self) -> &Index {
        self.marked.as_ref().unwrap_or(&self.live)
    }

    pub fn into_read(self) -> Index {
        self.marked.unwrap_or(self.live)
    }
}

/// Settings fixed at `init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub pack_target_size: u32,
    pub kdf_memory_kib: u32,
    pub kdf_iterations: u32,
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
        }
    }
}

pub struct Repository {
    pub backend: Backend,
    pub keys: Keys,
    pub config: Config,
    /// The key file that opened the repository.
    pub key_id: Id,
    /// Kept for adding keys; zeroized on drop.
    pub master: MasterKey,
}

impl Repository {
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
        };
        let key_id = write_key_file(
            &backend,
            &master,
            password,
            opts.kdf_memory_kib,
            opts.kdf_iterations,
        )?;
        let mut bytes = CONFIG_MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&keys.seal(
            SealKind::Config,
            &FORMAT_VERSION.to_le_bytes(),
            &format::frame(&format::to_postcard(&config), 0),
        ));
        backend.write(CONFIG_PATH, bytes)?;
        Ok(Repository {
            backend,
            keys,
            config,
            key_id,
            master,
        })
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
        let config_bytes = Self::probe(&backend)?;
        let version = read_config_version(&config_bytes)?;
        let (master, key_id) = open_master_key(&backend, password)?;
        let keys = master.derive();
        let framed = keys
            .open(
                SealKind::Config,
                &version.to_le_bytes(),
                &config_bytes[12..],
            )
            .map_err(|_| Error::corrupt("config", "authentication failed"))?;
        let config: Config =
            format::from_postcard(&format::unframe(&framed, 1 << 20, "config")?, "config")?;
        if config.version != version {
            return Err(Error::corrupt(
                "config",
                "sealed version differs from the clear one",
            ));
        }
        Ok(Repository {
            backend,
            keys,
            config,
            key_id,
            master,
        })
    }

    /// Seals and stores a structured file; its name is the hash of the stored bytes.
    pub fn save_file<T: Serialize>(&self, kind: FileKind, seal: SealKind, value: &T) -> Result<Id> {
        let sealed = self.keys.seal(
            seal,
            &[],
            &format::frame(&format::to_postcard(value), self.config.compression_level),
        );
        let id = Id::of_stored_bytes(&sealed);
        self.backend.write(&kind.path(&id), sealed)?;
        Ok(id)
    }

    /// Reads, verifies against its name, opens and decodes a structured file.
    pub fn load_file<T: DeserializeOwned>(
        &self,
        kind: FileKind,
        seal: SealKind,
        id: &Id,
    ) -> Result<T> {
        let bytes = self.backend.read(&kind.path(id))?;
        self.decode_file(kind, seal, id, &bytes)
    }

    pub fn decode_file<T: DeserializeOwned>(
        &self,
        kind: FileKind,
        seal: SealKind,
        id: &Id,
        bytes: &[u8],
    ) -> Result<T> {
        let what = kind.path(id);
        if Id::of_stored_bytes(bytes) != *id {
            return Err(Error::corrupt(&what, "content does not match its name"));
        }
        let framed = self
            .keys
            .open(seal, &[], bytes)
            .map_err(|_| Error::corrupt(&what, "authentication failed"))?;
        format::from_postcard(
            &format::unframe(&framed, format::MAX_OBJECT_SIZE, &what)?,
            &what,
        )
    }

    pub fn save_index(&self, file: &IndexFile) -> Result<Id> {
        self.save_file(FileKind::Index, SealKind::Index, file)
    }

    /// Reads and decodes files of one kind: up to `READS_IN_FLIGHT` reads at once on the I/O
    /// runtime, each file decoded (verified, opened, parsed) on rayon as it arrives. One
    /// result per id, in the order of `ids`.
    pub fn load_files<T: DeserializeOwned + Send>(
        &self,
        kind: FileKind,
        seal: SealKind,
        ids: &[Id],
    ) -> Vec<Result<T>> {
        use futures::StreamExt;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Result<Vec<u8>>)>(READS_IN_FLIGHT);
        let backend = self.backend.clone();
        let paths: Vec<String> = ids.iter().map(|id| kind.path(id)).collect();
        self.backend.runtime().spawn(async move {
            let mut reads = futures::stream::iter(paths.into_iter().enumerate())
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
        let mut out: Vec<(usize, Result<T>)> = std::iter::from_fn(|| rx.blocking_recv())
            .par_bridge()
            .map(|(i, bytes)| {
                (
                    i,
                    bytes.and_then(|b| self.decode_file(kind, seal, &ids[i], &b)),
                )
            })
            .collect();
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, r)| r).collect()
    }

    /// Every index file, read once; a file that vanished since the listing (superseded and
    /// deleted by a prune) is left out.
    pub fn load_index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        let ids: Vec<Id> = self
            .backend
            .list_ids(FileKind::Index)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let loaded = self.load_files(FileKind::Index, SealKind::Index, &ids);
        let mut files = Vec::with_capacity(ids.len());
        for (id, res) in ids.into_iter().zip(loaded) {
            match res {
                Ok(f) => files.push((id, f)),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(files)
    }

    /// Loads every index file into the in-memory index.
    pub fn load_index(&self) -> Result<Index> {
        Ok(Index::from_files(self.load_index_files()?))
    }

    /// Prune marks: packs taken out of the index, awaiting deletion.
    pub fn load_prune_marks(&self) -> Result<Vec<(Id, crate::format::PruneMark)>> {
        let mut out = Vec::new();
        for (id, _) in self.backend.list_ids(FileKind::PruneMark)? {
            match self.load_file(FileKind::PruneMark, SealKind::PruneMark, &id) {
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
        let mut by_id: std::collections::HashMap<Id, &crate::format::IndexPack> =
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

    /// The live index and the index for reading, from one read of the index files (then the
    /// prune marks). The read index is the live one plus packs a prune has marked but not yet
    /// deleted, so a snapshot saved by a backup that ran during the prune stays readable
    /// until a later prune puts those packs back. It is never for dedup: new snapshots must
    /// not come to depend on marked packs.
    pub fn load_indexes(&self) -> Result<Indexes> {
        let files = self.load_index_files()?;
        let marks = self.load_prune_marks()?;
        Ok(Indexes::build(files, &marks))
    }

    /// The index for reading (see `load_indexes`).
    pub fn load_read_index(&self) -> Result<Index> {
        Ok(self.load_indexes()?.into_read())
    }

    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        self.save_file(FileKind::Snapshot, SealKind::Snapshot, snap)
    }

    /// Every snapshot, oldest first.
    pub fn list_snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let ids: Vec<Id> = self
            .backend
            .list_ids(FileKind::Snapshot)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let loaded = self.load_files(FileKind::Snapshot, SealKind::Snapshot, &ids);
        let mut snaps = Vec::with_capacity(ids.len());
        for (id, res) in ids.into_iter().zip(loaded) {
            match res {
                Ok(s) => snaps.push((id, s)),
                // Forgotten by another client between listing and reading.
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        snaps.sort_by(|a: &(Id, Snapshot), b| {
            a.1.time_unix_ns.cmp(&b.1.time_unix_ns).then(a.0.cmp(&b.0))
        });
        Ok(snaps)
    }

    /// Resolves `latest` or a unique id prefix to one snapshot.
    pub fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        let snaps = self.list_snapshots()?;
        crate::snapshot::resolve(&snaps, spec).cloned()
    }

    /// Reads one blob from its pack, opens it and checks its id.
    pub fn read_blob(&self, index: &Index, id: &Id) -> Result<Vec<u8>> {
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

    pub fn load_tree(&self, index: &Index, id: &Id) -> Result<Tree> {
        let raw = self.read_blob(index, id)?;
        format::from_postcard(&raw, &format!("tree {}", id.short()))
    }

    pub fn blob_type_of(&self, index: &Index, id: &Id) -> Option<BlobType> {
        index.get(id).map(|l| index.pack(l.pack).blob_type)
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

pub fn read_config_version(bytes: &[u8]) -> Result<u32> {
    if bytes.len() < 12 || &bytes[..8] != CONFIG_MAGIC {
        return Err(Error::corrupt("config", "not an ocvault config file"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(version)
}

/// Wraps the master key under a password into a new key file; returns its id.
pub fn write_key_file(
    backend: &Backend,
    master: &MasterKey,
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
    let wrap = crypto::password_key(password, &kdf)?;
    let payload = KeyPayload {
        master_key: *master.as_bytes(),
        created_unix_ns: crate::snapshot::now_ns(),
        hostname: crate::snapshot::hostname(),
        username: crate::snapshot::username(),
    };
    let plain = Zeroizing::new(format::to_postcard(&payload));
    let file = KeyFile {
        version: FORMAT_VERSION,
        kdf,
        sealed_payload: crypto::wrap_with_password_key(&wrap, &plain),
    };
    let mut bytes = KEY_MAGIC.to_vec();
    bytes.extend_from_slice(&format::to_postcard(&file));
    let id = Id::of_stored_bytes(&bytes);
    backend.write(&FileKind::Key.path(&id), bytes)?;
    Ok(id)
}

pub fn decode_key_file(bytes: &[u8]) -> Result<KeyFile> {
    if bytes.len() < 8 || &bytes[..8] != KEY_MAGIC {
        return Err(Error::corrupt("key file", "not an ocvault key file"));
    }
    let kf: KeyFile = format::from_postcard(&bytes[8..], "key file")?;
    if kf.version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            found: kf.version,
            supported: FORMAT_VERSION,
        });
    }
    // Refuse parameters that would make a hostile key file eat all memory or time.
    if kf.kdf.memory_kib > 4 * 1024 * 1024 || kf.kdf.iterations > 100 || kf.kdf.parallelism > 64 {
        return Err(Error::corrupt(
            "key file",
            "Argon2id parameters out of range",
        ));
    }
    Ok(kf)
}

/// Tries the password against one key file; `Ok(None)` when it does not fit.
pub fn try_key_file(bytes: &[u8], password: &[u8]) -> Result<Option<(MasterKey, KeyPayload)>> {
    let kf = decode_key_file(bytes)?;
    let wrap = crypto::password_key(password, &kf.kdf)?;
    let Some(plain) = crypto::unwrap_with_password_key(&wrap, &kf.sealed_payload)? else {
        return Ok(None);
    };
    let payload: KeyPayload = format::from_postcard(&plain, "key payload")?;
    Ok(Some((MasterKey::from_bytes(payload.master_key), payload)))
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
    pub master: Option<(MasterKey, Id)>,
    pub problems: Vec<KeyProblem>,
    /// Key files listed.
    pub listed: usize,
}

/// Tries the password on the key files in listing order: the one loop behind `open` and
/// `check`. With `check_all` (check), every key file is read, compared with its name and
/// tried, and every problem is reported; otherwise (open) the first key that opens wins, a
/// read error or a key file of an unknown version stops the scan with that error, and
/// problems only matter when no key opens.
pub fn scan_key_files(backend: &Backend, password: &[u8], check_all: bool) -> Result<KeyScan> {
    let keys = backend.list_ids(FileKind::Key)?;
    let mut scan = KeyScan {
        master: None,
        problems: Vec::new(),
        listed: keys.len(),
    };
    for (id, _) in keys {
        let path = FileKind::Key.path(&id);
        let bytes = match backend.read(&path) {
            Ok(b) => b,
            Err(e) if check_all => {
                scan.problems.push(KeyProblem::Unreadable(path, e));
                continue;
            }
            Err(e) => return Err(e),
        };
        if check_all && Id::of_stored_bytes(&bytes) != id {
            scan.problems.push(KeyProblem::WrongName(path));
            continue;
        }
        match try_key_file(&bytes, password) {
            Ok(Some((m, _))) => {
                if scan.master.is_none() {
                    scan.master = Some((m, id));
                }
                if !check_all {
                    break;
                }
            }
            Ok(None) => {}
            Err(e @ Error::UnsupportedVersion { .. }) if !check_all => return Err(e),
            Err(e) => scan.problems.push(KeyProblem::Invalid(path, e)),
        }
    }
    Ok(scan)
}

fn open_master_key(backend: &Backend, password: &[u8]) -> Result<(MasterKey, Id)> {
    let mut scan = scan_key_files(backend, password, false)?;
    if scan.listed == 0 {
        return Err(Error::corrupt("repository", "no key files"));
    }
    if let Some(found) = scan.master {
        return Ok(found);
    }
    // A damaged key file must not be reported as a wrong password when it is the only one.
    match scan.problems.pop() {
        Some(KeyProblem::Invalid(_, e)) if scan.listed == 1 => Err(e),
        _ => Err(Error::WrongPassword),
    }
}

//! Write sessions: the only way to change a repository.
//!
//! A [`WriteSession`] holds a backup marker (`locks::MarkerGuard`) for its whole life, so a
//! concurrent `prune` keeps what it may rely on (format-spec §11a), and checks before and
//! after each snapshot or index file it stores that the marker is still there: a session a
//! prune judged stale withdraws what it just wrote and fails with one clear line.
//!
//! Two kinds, by what they may store:
//! - [`IndexedWriteSession`], from an [`IndexedRepository`]: the only way to get a packer for
//!   new blobs (`packer::PackerParts::new`), whose dedup uses the live index loaded
//!   under the session's marker. `snapshot`, `copy` and `rewrite` use it.
//! - [`WriteSession`], from an open [`Repository`]: snapshots, index files, prune marks, log
//!   entries and key files, and deletions, but no new blobs (prune's repack, which stores blobs
//!   it already holds sealed against its own strictly loaded index, is the one exception:
//!   `packer::PackerParts::for_repack`). That is enough for writes that add nothing
//!   new for a snapshot to point at: `tag` (a snapshot anew, same tree), `forget`, `prune`,
//!   `unlock`, key changes and log entries. Loading the index for them would cost time for
//!   nothing; holding the marker anyway keeps one rule for every write and lets prune see
//!   every writer.
//!
//! A packer for new blobs comes only from an indexed write session:
//! ```no_run
//! use ocvault::packer::{self, Indexing, PackerParts};
//! fn store(s: &ocvault::session::IndexedWriteSession) {
//!     let (_id, _packed) = packer::run(PackerParts::new(s, Indexing::Returned), |p| {
//!         p.store(ocvault::format::BlobType::Data, b"bytes")
//!     });
//! }
//! ```
//! not from an indexed repository without a session:
//! ```compile_fail
//! use ocvault::packer::{Indexing, PackerParts};
//! fn sneak(repo: &ocvault::repository::IndexedRepository) {
//!     let _parts = PackerParts::new(repo, Indexing::Returned);
//! }
//! ```
//! nor from a session of an open repository (no index to dedup against):
//! ```compile_fail
//! use ocvault::packer::{Indexing, PackerParts};
//! fn sneak(s: &ocvault::session::WriteSession) {
//!     let _parts = PackerParts::new(s, Indexing::Returned);
//! }
//! ```
//! nor by building one from its pieces (its fields are private to the packer):
//! ```compile_fail
//! use ocvault::packer::{Indexing, PackerParts};
//! fn sneak(repo: &ocvault::repository::IndexedRepository) {
//!     let _parts = PackerParts {
//!         keys: repo.keys(),
//!         backend: repo.backend(),
//!         pack_target_size: 1 << 24,
//!         compression_level: 3,
//!         index: repo.live_index(),
//!         indexing: Indexing::Returned,
//!         progress: None,
//!     };
//! }
//! ```

use crate::backend::FileKind;
use crate::error::Result;
use crate::format::BackupMarker;
use crate::id::{Id, PackId};
use crate::locks::{stale_after, MarkerGuard, MarkerSession, Markers};
use crate::repofile::RepoFile;
use crate::repository::{IndexedRepository, Repository};
use std::collections::HashMap;

/// A write session on an open repository (see the module comment): holds a backup marker
/// and stores or deletes files, but cannot store blobs.
pub struct WriteSession<'r> {
    repo: &'r Repository,
    marker: MarkerGuard,
}

impl Repository {
    /// Starts a write session for changes that add no blobs (see the module comment).
    pub fn write_session(&self) -> Result<WriteSession<'_>> {
        Ok(WriteSession {
            repo: self,
            marker: MarkerGuard::acquire(
                self.backend(),
                self.keys(),
                self.config().compression_level,
            )?,
        })
    }
}

impl<'r> WriteSession<'r> {
    pub fn repo(&self) -> &'r Repository {
        self.repo
    }

    /// Seals and stores a file. One that points at packs (`F::FENCED`: a snapshot, an index
    /// file) is stored only under the marker: refused once the marker is lost, and withdrawn
    /// (deleted again) if it turns out lost right after the write.
    pub fn save_file<F: RepoFile>(&self, value: &F) -> Result<F::Id> {
        if !F::FENCED {
            return self.repo.save_file(value);
        }
        self.marker.ensure_held()?;
        let id = self.repo.save_file(value)?;
        if let Err(e) = self.marker.ensure_held() {
            let _ = self.delete_file::<F>(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// Stores `wal/` records, all at once (each a write of its own: on local disk an fsync,
    /// on S3 a round trip). Like every file that names blobs, only under the marker, and
    /// withdrawn if the marker turns out lost right after the writes. One result per record.
    pub fn save_wal_records(
        &self,
        records: &[crate::format::WalRecord],
    ) -> Result<Vec<Result<Id>>> {
        const IN_FLIGHT: usize = 16;
        let repo = self.repo;
        self.marker.ensure_held()?;
        let mut results = Vec::with_capacity(records.len());
        for batch in records.chunks(IN_FLIGHT) {
            let writes: Vec<(Id, _)> = batch
                .iter()
                .map(|r| {
                    let (id, bytes) = crate::repofile::encode_wal_record(
                        repo.keys(),
                        repo.config().compression_level,
                        r,
                    );
                    (
                        id,
                        repo.backend().spawn_write(
                            FileKind::Wal.path(&id),
                            bytes,
                            FileKind::Wal.object_class(),
                        ),
                    )
                })
                .collect();
            for (id, handle) in writes {
                let done = repo.backend().runtime().block_on(handle);
                results.push(match done {
                    Ok(r) => r.map(|_| id),
                    Err(e) => Err(crate::error::Error::other(format!(
                        "write task failed: {e}"
                    ))),
                });
            }
        }
        if let Err(e) = self.marker.ensure_held() {
            for id in results.iter().flatten() {
                let _ = repo.backend().delete(&FileKind::Wal.path(id));
            }
            return Err(e);
        }
        Ok(results)
    }

    /// Deletes one `wal/` record (`forget --keep-wal-within`; `prune` reclaims its blocks).
    pub fn delete_wal_record(&self, id: &Id) -> Result<()> {
        self.repo.backend().delete(&FileKind::Wal.path(id))
    }

    /// Deletes one stored file.
    pub fn delete_file<F: RepoFile>(&self, id: &F::Id) -> Result<()> {
        self.repo.backend().delete(&F::KIND.path(&(*id).into()))
    }

    /// Deletes one transient file (a backup marker, a prune mark, a retention ledger). A
    /// refusal (credentials without delete rights) is a warning, not an error: such a file
    /// only holds prunes back or is read again, and a later prune or `unlock` with delete
    /// rights removes it.
    pub fn delete_transient<F: RepoFile>(&self, id: &F::Id) -> Result<()> {
        let path = F::KIND.path(&(*id).into());
        if !self.repo.backend().delete_transient(&path)? {
            crate::locks::warn_refused_delete(&path);
        }
        Ok(())
    }

    /// Deletes one pack.
    pub fn delete_pack(&self, id: &PackId) -> Result<()> {
        self.repo.backend().delete(&FileKind::Pack.path(id))
    }

    /// Deletes one key file (`key remove`, `key passwd`).
    pub fn delete_key(&self, id: &Id) -> Result<()> {
        self.repo.backend().delete(&FileKind::Key.path(id))
    }

    /// Wraps the master key under a new password into a new key file (with `write_only`, the
    /// sub-keys of a write-only key instead); returns its id.
    pub fn add_key(
        &self,
        write_only: bool,
        password: &[u8],
        memory_kib: u32,
        iterations: u32,
    ) -> Result<Id> {
        crate::repository::write_key_file(
            self.repo.backend(),
            self.repo.master("add keys")?,
            write_only,
            password,
            memory_kib,
            iterations,
        )
    }

    /// The storage's current time, read off a heartbeat marker written now; `None` when the
    /// service reports no modification times.
    pub fn storage_now(&self) -> Result<Option<i64>> {
        self.marker.storage_now()
    }

    /// This session's first marker, which [`list_sessions`] reports like any other.
    pub fn first_marker(&self) -> Id {
        self.marker.first_marker()
    }

    /// Fails if the session lost its first marker (see `locks`).
    pub fn ensure_held(&self) -> Result<()> {
        self.marker.ensure_held()
    }

    /// Removes another session's marker files, heartbeats before the first marker.
    pub fn remove_marker_session(&self, s: &MarkerSession) -> Result<()> {
        let heartbeats = s.files.iter().filter(|id| Some(**id) != s.first);
        for id in heartbeats.chain(s.first.iter()) {
            match self.delete_transient::<BackupMarker>(id) {
                Ok(()) => {}
                Err(e) if crate::backend::is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Removes temporary files (`tmp/` of a local repository) that no write has touched for
    /// `stale_after()` by the storage clock (`storage_now`, the kernel's time on local disk):
    /// the remains of writes cut short by a killed or crashed client. A live write touches its
    /// file continuously and finishes within seconds. Returns how many were removed.
    pub fn remove_stale_temp_files(&self, storage_now: Option<i64>) -> usize {
        let (Some(dir), Some(now)) = (self.repo.backend().local_temp_dir(), storage_now) else {
            return 0;
        };
        let mut removed = 0;
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let stale = e
                .metadata()
                .ok()
                .filter(|m| m.is_file())
                .and_then(|m| m.modified().ok())
                .map(crate::backend::system_time_ns)
                .is_some_and(|t| now - t > stale_after().as_nanos() as i64);
            if stale && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// `unlock`: removes the markers of stale writer sessions (by the storage clock), or of every
/// other session with `remove_all`, and temporary files no write has touched for
/// `stale_after()`. Returns how many marker files were removed. Removing a live session's
/// markers is safe: that writer then fails before it saves anything further.
pub fn unlock(own: &WriteSession, remove_all: bool) -> Result<usize> {
    let now = own.storage_now()?;
    let Markers {
        sessions,
        unreadable,
    } = list_sessions(own.repo())?;
    let mut removed = 0;
    for s in sessions {
        if s.files.contains(&own.first_marker()) || !(remove_all || s.is_stale(now)) {
            continue;
        }
        own.remove_marker_session(&s)?;
        removed += s.files.len();
    }
    for (id, time) in unreadable {
        let old =
            matches!((now, time), (Some(n), Some(t)) if n - t > stale_after().as_nanos() as i64);
        if (remove_all || old) && own.delete_file::<BackupMarker>(&id).is_ok() {
            removed += 1;
        }
    }
    own.remove_stale_temp_files(now);
    Ok(removed)
}

/// Every writer session with markers in the repository.
pub fn list_sessions(repo: &Repository) -> Result<Markers> {
    let mut groups: HashMap<(String, u32, i64), MarkerSession> = HashMap::new();
    let mut unreadable = Vec::new();
    for (id, _) in repo.backend().list_ids(BackupMarker::KIND)? {
        let time = match repo.backend().modified_ns(&BackupMarker::KIND.path(&id)) {
            Ok(t) => t,
            Err(e) if crate::backend::is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        let m = match repo.load_file::<BackupMarker>(&id) {
            Ok(m) => m,
            // Deleted between listing and reading (a heartbeat replaced it).
            Err(e) if crate::backend::is_not_found(&e) => continue,
            Err(_) => {
                unreadable.push((id, time));
                continue;
            }
        };
        let first = m.heartbeat_unix_ns == m.started_unix_ns;
        let g = groups
            .entry((m.hostname.clone(), m.pid, m.started_unix_ns))
            .or_insert_with(|| MarkerSession {
                files: Vec::new(),
                first: None,
                hostname: m.hostname.clone(),
                pid: m.pid,
                started: None,
                newest: time,
                heartbeat_unix_ns: m.heartbeat_unix_ns,
            });
        g.files.push(id);
        if first {
            g.first = Some(id);
            g.started = time;
        }
        // Unknown if any file's time is unknown (then staleness falls back to the host clock).
        g.newest = match (g.newest, time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        g.heartbeat_unix_ns = g.heartbeat_unix_ns.max(m.heartbeat_unix_ns);
    }
    Ok(Markers {
        sessions: groups.into_values().collect(),
        unreadable,
    })
}

/// A write session on an indexed repository: everything a [`WriteSession`] does, and blob
/// writers that deduplicate against the live index.
pub struct IndexedWriteSession<'r> {
    session: WriteSession<'r>,
    repo: &'r IndexedRepository<'r>,
}

impl<'a> IndexedRepository<'a> {
    /// Starts a write session. Its marker is stored first; then the prune marks are listed
    /// again, and if any appeared or went since the index was loaded, the index is loaded
    /// anew. So the live index a blob writer dedups against never holds a pack that a prune
    /// marked before this session's marker existed: a prune's second phase deletes a mark's
    /// packs only when no session may predate the mark, and this one provably does not.
    pub fn write_session(&mut self) -> Result<IndexedWriteSession<'_>> {
        let repo = self.repository();
        let marker =
            MarkerGuard::acquire(repo.backend(), repo.keys(), repo.config().compression_level)?;
        if repo.list_prune_marks()? != self.marks_listed {
            let fresh = repo.load_index_with(self.tiers.clone())?;
            self.indexes = fresh.indexes;
            self.marks_listed = fresh.marks_listed;
        }
        let repo: &IndexedRepository<'_> = self;
        Ok(IndexedWriteSession {
            session: WriteSession {
                repo: repo.repository(),
                marker,
            },
            repo,
        })
    }
}

impl<'r> std::ops::Deref for IndexedWriteSession<'r> {
    type Target = WriteSession<'r>;
    fn deref(&self) -> &Self::Target {
        &self.session
    }
}

impl<'r> IndexedWriteSession<'r> {
    /// The indexed repository this session writes to.
    pub fn repo(&self) -> &'r IndexedRepository<'r> {
        self.repo
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::format::{BlobType, IndexFile, PruneMark};
    use crate::packer::{self, Indexing, PackerParts};
    use crate::repository::InitOptions;

    /// Stores one data blob through a packer of `session`; whether it was new.
    fn store(session: &IndexedWriteSession, id: Id, raw: &[u8]) -> bool {
        let save = |f: &IndexFile| session.save_file(f).map(Id::from);
        let parts = PackerParts::new(session, Indexing::Every(1, &save));
        let (stored, packed) = packer::run(parts, |p| p.store_as(BlobType::Data, id, raw));
        packed.unwrap();
        stored.unwrap()
    }

    /// An index loaded before a prune marked a pack must not be what a session started after
    /// the mark dedups against (format-spec §11a): the session loads it again.
    #[test]
    fn a_session_reloads_an_index_that_a_prune_marked_meanwhile() {
        let opts = InitOptions {
            kdf_memory_kib: 1024,
            kdf_iterations: 1,
            ..InitOptions::default()
        };
        let backend = Backend::open("memory:", true).unwrap();
        let repo = Repository::init(backend, b"pw", &opts).unwrap();
        let id = repo.keys().blob_id(b"data");
        {
            let mut indexed = repo.load_index().unwrap();
            let session = indexed.write_session().unwrap();
            assert!(store(&session, id, b"data"));
        }
        let mut indexed = repo.load_index().unwrap();
        assert!(indexed.live_index().contains(&id));

        // A prune meanwhile: consolidated index without the pack, then its mark.
        {
            let prune = repo.write_session().unwrap();
            let files = repo.load_index_files().unwrap();
            let (old_id, old) = &files[0];
            prune
                .save_file(&IndexFile {
                    supersedes: vec![*old_id],
                    packs: vec![],
                })
                .unwrap();
            prune
                .save_file(&PruneMark {
                    marked_unix_ns: 0,
                    packs: old.packs.clone(),
                })
                .unwrap();
            prune.delete_file::<IndexFile>(old_id).unwrap();
        }

        let session = indexed.write_session().unwrap();
        assert!(
            !session.repo().live_index().contains(&id),
            "would dedup against a marked pack"
        );
        assert!(
            session.repo().index().contains(&id),
            "marked packs stay readable"
        );
        assert!(store(&session, id, b"data"), "the blob is stored anew");
    }
}

//! Backup markers (`locks/`): non-exclusive, never waited on by backups. Every command that
//! writes packs, index files or snapshots does so through a write session
//! (`crate::session`), which holds a `MarkerGuard` for its whole life; prune's second phase
//! deletes no pack marked after a writer started whose markers are still there.
//!
//! Nothing here trusts a host's clock (format-spec §11a argues the design):
//! - *Order and age* come from the storage's own clock: the modification times the backend
//!   reports for marker and mark files, all stamped by the same server (or kernel).
//! - *Safety* does not depend on any clock at all. A session keeps its first marker file for its
//!   whole life; a prune that judges a session stale deletes that file before it deletes
//!   anything the session may rely on, and the session checks the file is still there before
//!   and after each index file or snapshot it writes. A session that lost it (paused past the
//!   staleness limit, or removed by `unlock --remove-all`) withdraws what it just wrote and
//!   fails with one clear line; it never saves a snapshot that points at deleted packs.
//! - A wrong staleness judgment (clock jumps, a backend without modification times) can only
//!   fail a live writer, never lose data.

use crate::error::{Error, Result};
use crate::format::BackupMarker;
use crate::id::Id;
use crate::periodic::Periodic;
use crate::repofile::RepoFile;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A session none of whose marker files was written for this long (storage clock) is stale,
/// unless `OCVAULT_STALE_AFTER_SECS` says otherwise (tests shorten it). Every host should use
/// the same value; a mismatch can only fail a live writer, never lose data.
pub fn stale_after() -> Duration {
    static STALE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *STALE.get_or_init(|| {
        let secs = std::env::var("OCVAULT_STALE_AFTER_SECS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s >= 1.0)
            .unwrap_or(300.0);
        Duration::from_secs_f64(secs)
    })
}

/// How often a session writes a fresh heartbeat marker: five times per staleness limit.
pub fn heartbeat() -> Duration {
    stale_after() / 5
}

/// Files in locks/ returned by `list_sessions`.
pub struct Markers {
    pub sessions: Vec<MarkerSession>,
    /// Files that cannot be read (damaged, or not this repository's), with storage times.
    pub unreadable: Vec<(Id, Option<i64>)>,
}
/// Modification times of some services have a resolution of one second (HTTP dates); two
/// times closer than this are treated as possibly in either order.
pub const CLOCK_SLACK_NS: i64 = 2_000_000_000;

/// What a running session shares with its heartbeat thread.
struct Session {
    backend: crate::backend::Backend,
    keys: crate::crypto::Keys,
    level: i32,
    marker: BackupMarker,
    /// The session's first marker: kept for its whole life, its absence means it was judged
    /// stale (or removed by `unlock --remove-all`).
    first: Id,
    /// The newest heartbeat marker, deleted when the next one is written.
    heartbeat: Mutex<Option<Id>>,
    lost: AtomicBool,
}

impl Session {
    fn sealed(&self, marker: &BackupMarker) -> Vec<u8> {
        self.keys.seal(
            BackupMarker::SEAL,
            &[],
            &crate::format::frame(&crate::format::to_postcard(marker), self.level),
        )
    }

    /// Writes a fresh heartbeat marker and removes the previous one; returns the new one's
    /// storage time when the service reports it.
    fn beat(&self) -> Result<Option<i64>> {
        let sealed = self.sealed(&BackupMarker {
            // Informational only: decisions use the file's storage time.
            heartbeat_unix_ns: crate::host::now_ns().max(self.marker.started_unix_ns + 1),
            ..self.marker.clone()
        });
        let id = Id::of_stored_bytes(&sealed);
        let path = BackupMarker::KIND.path(&id);
        self.backend
            .write(&path, sealed, BackupMarker::KIND.object_class())?;
        let old = self.heartbeat.lock().unwrap().replace(id);
        if let Some(old) = old {
            delete_marker(&self.backend, &old);
        }
        self.backend.modified_ns(&path)
    }

    /// Fails once the first marker is gone; the check is a read of that one file.
    fn still_held(&self) -> Result<()> {
        if !self.lost.load(Ordering::Relaxed)
            && self.backend.exists(&BackupMarker::KIND.path(&self.first))?
        {
            return Ok(());
        }
        self.lost.store(true, Ordering::Relaxed);
        Err(Error::other(format!(
            "this command lost its backup marker (locks/{}): it was paused or cut off from the \
             repository for more than {} s and a prune or `unlock --remove-all` judged it \
             stale; to stay safe it saved nothing further. Run it again: what it stored is \
             reused",
            self.first.short(),
            stale_after().as_secs()
        )))
    }

    fn heartbeat_tick(&self) {
        // A session that lost its first marker stops announcing itself: a heartbeat without
        // a first marker would only hold back prunes until it went stale. (Once lost,
        // `still_held` answers without a read.)
        if self.still_held().is_ok() {
            let _ = self.beat();
        }
    }
}

/// Holds a backup marker for its lifetime and refreshes it on a thread (see the module
/// comment). Only write sessions (`crate::session`) hold one.
pub(crate) struct MarkerGuard {
    session: Arc<Session>,
    heartbeat: Option<Periodic>,
}

impl MarkerGuard {
    /// Writes the session's first marker (sealed with `keys`, framed at `level`, as every
    /// structured file) and starts its heartbeat.
    pub(crate) fn acquire(
        backend: &crate::backend::Backend,
        keys: &crate::crypto::Keys,
        level: i32,
    ) -> Result<MarkerGuard> {
        let started = crate::host::now_ns();
        let marker = BackupMarker {
            hostname: crate::host::hostname(),
            pid: std::process::id(),
            started_unix_ns: started,
            // Equal to `started_unix_ns` only in a session's first marker (§11a).
            heartbeat_unix_ns: started,
        };
        let mut session = Session {
            backend: backend.clone(),
            keys: keys.clone(),
            level,
            marker,
            first: Id::default(),
            heartbeat: Mutex::new(None),
            lost: AtomicBool::new(false),
        };
        let sealed = session.sealed(&session.marker);
        let first = Id::of_stored_bytes(&sealed);
        backend.write(
            &BackupMarker::KIND.path(&first),
            sealed,
            BackupMarker::KIND.object_class(),
        )?;
        session.first = first;
        let session = Arc::new(session);
        let s = session.clone();
        let heartbeat =
            Periodic::start("ocvault-heartbeat", heartbeat(), move || s.heartbeat_tick());
        Ok(MarkerGuard {
            session,
            heartbeat: Some(heartbeat),
        })
    }

    /// The storage's current time, read off a heartbeat marker written now; `None` when the
    /// service reports no modification times.
    pub(crate) fn storage_now(&self) -> Result<Option<i64>> {
        self.session.still_held()?;
        self.session.beat()
    }

    /// This session's first marker, which `list_sessions` reports like any other.
    pub(crate) fn first_marker(&self) -> Id {
        self.session.first
    }

    /// Fails if the session lost its first marker (see the module comment).
    pub(crate) fn ensure_held(&self) -> Result<()> {
        self.session.still_held()
    }
}

impl Drop for MarkerGuard {
    fn drop(&mut self) {
        // Stops the heartbeat (waiting for a write in progress) before the markers go.
        drop(self.heartbeat.take());
        let backend = &self.session.backend;
        // Heartbeat first: a heartbeat left without its first marker holds prunes back.
        if let Some(id) = self.session.heartbeat.lock().unwrap().take() {
            delete_marker(backend, &id);
        }
        delete_marker(backend, &self.session.first);
    }
}

/// Deletes a marker file of this session; a failure is never an error (a stale marker is
/// removed by a later prune or `unlock`), and a refusal (credentials that may not delete, as
/// a backup-only key on a locked bucket) is a warning.
fn delete_marker(backend: &crate::backend::Backend, id: &Id) {
    let path = BackupMarker::KIND.path(id);
    if let Ok(false) = backend.delete_transient(&path) {
        warn_refused_delete(&path);
    }
}

/// One warning line for a transient file the storage refused to delete; later refusals in
/// the same process are not repeated.
pub(crate) fn warn_refused_delete(path: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "ocvault: warning: the storage refused to delete {path} (no delete permission?); \
             left in place for a later prune or `ocvault unlock`"
        );
    }
}

/// One writer's marker files, grouped by (hostname, pid, start) as read from inside them.
#[derive(Clone, Debug)]
pub struct MarkerSession {
    pub files: Vec<Id>,
    /// The session's first marker, when it is still there.
    pub first: Option<Id>,
    pub hostname: String,
    pub pid: u32,
    /// Storage time of the session's first marker; `None` when unknown (first marker missing,
    /// written by an older ocvault, or no modification times): then it counts as older than
    /// every prune mark.
    pub started: Option<i64>,
    /// Storage time of its newest marker file.
    pub newest: Option<i64>,
    /// The host-clock heartbeat written inside the newest marker (for display, and for
    /// staleness only where the service reports no modification times).
    pub heartbeat_unix_ns: i64,
}

impl MarkerSession {
    /// Stale by the storage clock (`now` from `storage_now`); without storage times, by the
    /// host clock (which can only fail a live writer, never lose data).
    pub fn is_stale(&self, storage_now: Option<i64>) -> bool {
        let limit = stale_after().as_nanos() as i64;
        match (storage_now, self.newest) {
            // Saturating: the times come from storage and from inside a file, and a far-past
            // heartbeat must not wrap into a session that never goes stale.
            (Some(now), Some(newest)) => now.saturating_sub(newest) > limit,
            _ => crate::host::now_ns().saturating_sub(self.heartbeat_unix_ns) > limit,
        }
    }

    /// Whether this writer may have loaded an index that still held the packs of a prune mark
    /// stored at `mark_time`: yes unless it provably started after the mark.
    pub fn may_predate(&self, mark_time: Option<i64>) -> bool {
        match (self.started, mark_time) {
            (Some(start), Some(mark)) => start <= mark.saturating_add(CLOCK_SLACK_NS),
            _ => true,
        }
    }
}

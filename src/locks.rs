//! Backup markers (`locks/`): non-exclusive, never waited on by backups. Every command that
//! writes packs, index files or snapshots holds a `MarkerGuard` for its whole run; prune's
//! second phase deletes no pack marked after a writer started whose markers are still there.
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

use crate::backend::FileKind;
use crate::crypto::SealKind;
use crate::error::{Error, Result};
use crate::format::BackupMarker;
use crate::id::Id;
use crate::repository::{Repository, WriteFence};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
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

/// What a running session shares with its heartbeat thread and with the repository's write
/// fence.
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
            SealKind::Lock,
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
        let path = FileKind::Lock.path(&id);
        self.backend.write(&path, sealed)?;
        let old = self.heartbeat.lock().unwrap().replace(id);
        if let Some(old) = old {
            let _ = self.backend.delete(&FileKind::Lock.path(&old));
        }
        self.backend.modified_ns(&path)
    }

    /// Fails once the first marker is gone; the check is a read of that one file.
    fn still_held(&self) -> Result<()> {
        if !self.lost.load(Ordering::Relaxed)
            && self.backend.exists(&FileKind::Lock.path(&self.first))?
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

    fn heartbeat_loop(&self, stop: Receiver<()>) {
        loop {
            match stop.recv_timeout(heartbeat()) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            // A session that lost its first marker stops announcing itself: a heartbeat
            // without a first marker would only hold back prunes until it went stale.
            if self.still_held().is_err() {
                return;
            }
            let _ = self.beat();
        }
    }
}

impl WriteFence for Session {
    fn before_write(&self) -> Result<()> {
        self.still_held()
    }
    fn after_write(&self) -> Result<()> {
        self.still_held()
    }
}

/// Holds a backup marker for its lifetime, refreshes it on a thread, and fences the
/// repository's index and snapshot writes (see the module comment).
pub struct MarkerGuard<'a> {
    repo: &'a Repository,
    session: Arc<Session>,
    stop: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<'a> MarkerGuard<'a> {
    /// Writes the session's first marker and registers the session as the repository's write
    /// fence. Fails if another session is registered on the same handle.
    pub fn acquire(repo: &'a Repository) -> Result<MarkerGuard<'a>> {
        let started = crate::host::now_ns();
        let marker = BackupMarker {
            hostname: crate::host::hostname(),
            pid: std::process::id(),
            started_unix_ns: started,
            // Equal to `started_unix_ns` only in a session's first marker (§11a).
            heartbeat_unix_ns: started,
        };
        let first = repo.save_file(FileKind::Lock, SealKind::Lock, &marker)?;
        let session = Arc::new(Session {
            backend: repo.backend.clone(),
            keys: repo.keys.clone(),
            level: repo.config.compression_level,
            marker,
            first,
            heartbeat: Mutex::new(None),
            lost: AtomicBool::new(false),
        });
        if let Err(e) = repo.set_write_fence(Some(session.clone() as Arc<dyn WriteFence>)) {
            let _ = repo.backend.delete(&FileKind::Lock.path(&first));
            return Err(e);
        }
        let (stop, stopped) = bounded(1);
        let s = session.clone();
        let thread = std::thread::Builder::new()
            .name("ocvault-heartbeat".into())
            .spawn(move || s.heartbeat_loop(stopped))
            .map_err(|e| Error::other(format!("cannot start the heartbeat thread: {e}")))?;
        Ok(MarkerGuard {
            repo,
            session,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The storage's current time, read off a heartbeat marker written now; `None` when the
    /// service reports no modification times.
    pub fn storage_now(&self) -> Result<Option<i64>> {
        self.session.still_held()?;
        self.session.beat()
    }

    /// This session's first marker, which `list_sessions` reports like any other.
    pub fn first_marker(&self) -> Id {
        self.session.first
    }

    /// Fails if the session lost its first marker (see the module comment).
    pub fn ensure_held(&self) -> Result<()> {
        self.session.still_held()
    }
}

impl Drop for MarkerGuard<'_> {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self.repo.set_write_fence(None);
        // Heartbeat first: a heartbeat left without its first marker holds prunes back.
        if let Some(id) = self.session.heartbeat.lock().unwrap().take() {
            let _ = self.repo.backend.delete(&FileKind::Lock.path(&id));
        }
        let _ = self
            .repo
            .backend
            .delete(&FileKind::Lock.path(&self.session.first));
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

/// Every writer session with markers in the repository.
pub fn list_sessions(repo: &Repository) -> Result<Markers> {
    let mut groups: HashMap<(String, u32, i64), MarkerSession> = HashMap::new();
    let mut unreadable = Vec::new();
    for (id, _) in repo.backend.list_ids(FileKind::Lock)? {
        let time = match repo.backend.modified_ns(&FileKind::Lock.path(&id)) {
            Ok(t) => t,
            Err(e) if crate::backend::is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        let m = match repo.load_file::<BackupMarker>(FileKind::Lock, SealKind::Lock, &id) {
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

/// Removes a session's marker files, heartbeats before the first marker.
pub fn remove_session(repo: &Repository, s: &MarkerSession) -> Result<()> {
    let heartbeats = s.files.iter().filter(|id| Some(**id) != s.first);
    for id in heartbeats.chain(s.first.iter()) {
        match repo.backend.delete(&FileKind::Lock.path(id)) {
            Ok(()) => {}
            Err(e) if crate::backend::is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes temporary files (`tmp/` of a local repository) that no write has touched for
/// `stale_after()` by the storage clock (`storage_now`, the kernel's time on local disk): the
/// remains of writes cut short by a killed or crashed client. A live write touches its file
/// continuously and finishes within seconds. Returns how many were removed.
pub fn remove_stale_temp_files(repo: &Repository, storage_now: Option<i64>) -> usize {
    let (Some(dir), Some(now)) = (repo.backend.local_temp_dir(), storage_now) else {
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

/// `unlock`: removes the markers of stale writer sessions (by the storage clock), or of every
/// other session with `remove_all`, and temporary files no write has touched for
/// `stale_after()`. Returns how many marker files were removed. Removing a live session's markers
/// is safe: that writer then fails before it saves anything further.
pub fn unlock(repo: &Repository, remove_all: bool) -> Result<usize> {
    let own = MarkerGuard::acquire(repo)?;
    let now = own.storage_now()?;
    let Markers {
        sessions,
        unreadable,
    } = list_sessions(repo)?;
    let mut removed = 0;
    for s in sessions {
        if s.files.contains(&own.first_marker()) || !(remove_all || s.is_stale(now)) {
            continue;
        }
        remove_session(repo, &s)?;
        removed += s.files.len();
    }
    for (id, time) in unreadable {
        let old =
            matches!((now, time), (Some(n), Some(t)) if n - t > stale_after().as_nanos() as i64);
        if (remove_all || old) && repo.backend.delete(&FileKind::Lock.path(&id)).is_ok() {
            removed += 1;
        }
    }
    remove_stale_temp_files(repo, now);
    Ok(removed)
}

//! Backup markers (`locks/`): non-exclusive, never waited on by backups. A backup writes one
//! when it starts and refreshes it while it runs; prune's second phase deletes no pack marked
//! after a backup started whose heartbeat is fresh. A crashed client's marker goes stale after
//! `STALE_AFTER` and is then ignored (and removed by `unlock` or the next prune).

use crate::backend::FileKind;
use crate::crypto::SealKind;
use crate::error::Result;
use crate::format::BackupMarker;
use crate::id::Id;
use crate::repository::Repository;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const HEARTBEAT: Duration = Duration::from_secs(60);
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// Holds a backup marker for its lifetime and refreshes it on a thread.
pub struct MarkerGuard<'a> {
    repo: &'a Repository,
    current: Arc<Mutex<Option<Id>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<'a> MarkerGuard<'a> {
    pub fn acquire(repo: &'a Repository) -> Result<MarkerGuard<'a>> {
        let started = crate::snapshot::now_ns();
        let marker = BackupMarker {
            hostname: crate::snapshot::hostname(),
            pid: std::process::id(),
            started_unix_ns: started,
            heartbeat_unix_ns: started,
        };
        let id = repo.save_file(FileKind::Lock, SealKind::Lock, &marker)?;
        let current = Arc::new(Mutex::new(Some(id)));
        let stop = Arc::new(AtomicBool::new(false));
        let (backend, keys, level) = (
            repo.backend.clone(),
            repo.keys.clone(),
            repo.config.compression_level,
        );
        let (cur, st) = (current.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut waited = Duration::ZERO;
            while !st.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                waited += Duration::from_millis(200);
                if waited < HEARTBEAT {
                    continue;
                }
                waited = Duration::ZERO;
                let m = BackupMarker {
                    heartbeat_unix_ns: crate::snapshot::now_ns(),
                    ..marker.clone()
                };
                let sealed = keys.seal(
                    SealKind::Lock,
                    &[],
                    &crate::format::frame(&crate::format::to_postcard(&m), level),
                );
                let new_id = Id::of_stored_bytes(&sealed);
                if backend.write(&FileKind::Lock.path(&new_id), sealed).is_ok() {
                    let old = cur.lock().unwrap().replace(new_id);
                    if let Some(old) = old {
                        let _ = backend.delete(&FileKind::Lock.path(&old));
                    }
                }
            }
        });
        Ok(MarkerGuard {
            repo,
            current,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for MarkerGuard<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(id) = self.current.lock().unwrap().take() {
            let _ = self.repo.backend.delete(&FileKind::Lock.path(&id));
        }
    }
}

/// Every marker in the repository with whether it is stale; unreadable ones count as stale.
pub fn list_markers(repo: &Repository) -> Result<Vec<(Id, Option<BackupMarker>, bool)>> {
    let now = crate::snapshot::now_ns();
    let mut out = Vec::new();
    for (id, _) in repo.backend.list_ids(FileKind::Lock)? {
        match repo.load_file::<BackupMarker>(FileKind::Lock, SealKind::Lock, &id) {
            Ok(m) => {
                let stale = now - m.heartbeat_unix_ns > STALE_AFTER.as_nanos() as i64;
                out.push((id, Some(m), stale));
            }
            // Deleted between listing and reading (a refresh), or damaged.
            Err(_) => out.push((id, None, true)),
        }
    }
    Ok(out)
}

/// The start time of the oldest backup still running (fresh marker), if any.
pub fn oldest_running_backup(repo: &Repository) -> Result<Option<i64>> {
    Ok(list_markers(repo)?
        .into_iter()
        .filter(|(_, m, stale)| !stale && m.is_some())
        .map(|(_, m, _)| m.unwrap().started_unix_ns)
        .min())
}

/// Removes temporary files (`tmp/` of a local repository) that no write has touched for
/// `STALE_AFTER`: the remains of writes cut short by a killed or crashed client. A live write
/// touches its file continuously and finishes within seconds. Returns how many were removed.
pub fn remove_stale_temp_files(repo: &Repository) -> usize {
    let Some(dir) = repo.backend.local_temp_dir() else {
        return 0;
    };
    let mut removed = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let stale = e
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if stale && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

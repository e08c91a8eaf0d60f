//! Local state `wal-push` and `wal-fetch` keep beside PostgreSQL's `pg_wal`, under
//! `pg_wal/ocvault/`: what this host pushed already (so PostgreSQL's call for a file pushed
//! in an earlier batch returns at once), and the segments fetched ahead during recovery.
//! Neither is trusted for more than it says: a pushed mark only counts for the same
//! repository and the same file content; a prefetched file was verified before it was renamed
//! into the spool.

use crate::wal::name::WalName;
use std::path::{Path, PathBuf};

/// `pg_wal/ocvault/pushed/<name>`: "<BLAKE3 of the file> <repository> <size> <mtime ns>
/// <ctime ns> <inode>", written once the file is durably archived. PostgreSQL never rewrites
/// a file it marked ready (it recycles segments by renaming them to a new name), so a file
/// whose name, size, times and inode match its mark is the content that was archived; that
/// check is a `stat`, where hashing the file costs about 10 ms a segment.
pub struct PushedMarks {
    dir: PathBuf,
    repository: String,
}

/// Identifies a repository in local marks without writing its URL (which may name a user).
fn repository_tag(location: &str) -> String {
    blake3::hash(location.as_bytes()).to_hex()[..16].to_string()
}

fn identity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
    Some(format!(
        "{} {} {} {}",
        m.size(),
        ns(m.mtime(), m.mtime_nsec()),
        ns(m.ctime(), m.ctime_nsec()),
        m.ino()
    ))
}

impl PushedMarks {
    pub fn new(pg_wal: &Path, location: &str) -> PushedMarks {
        PushedMarks {
            dir: pg_wal.join("ocvault").join("pushed"),
            repository: repository_tag(location),
        }
    }

    /// Whether the file at `path`, unchanged since, was pushed as `name` to this repository.
    pub fn pushed_unchanged(&self, name: &str, path: &Path) -> bool {
        let Some(now) = identity(path) else {
            return false;
        };
        std::fs::read_to_string(self.dir.join(name)).is_ok_and(|mark| {
            let mut words = mark.trim_end().splitn(3, ' ');
            let (_hash, repo, id) = (words.next(), words.next(), words.next());
            repo == Some(self.repository.as_str()) && id == Some(now.as_str())
        })
    }

    /// Whether a mark for `name` exists, whatever it says (choosing a batch: PostgreSQL's own
    /// call for that file checks it).
    pub fn has(&self, name: &str) -> bool {
        self.dir.join(name).exists()
    }

    /// Notes that the file at `path`, with this content hash, is archived as `name`. A mark
    /// that cannot be written only costs a later call opening the repository.
    pub fn record(&self, name: &str, path: &Path, hash: &[u8; 32]) {
        let Some(id) = identity(path) else {
            return;
        };
        if std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let line = format!("{} {} {id}\n", hex::encode(hash), self.repository);
        if std::fs::write(&tmp, line).is_ok() {
            let _ = std::fs::rename(&tmp, self.dir.join(name));
        }
    }

    /// Drops the marks of files PostgreSQL has since removed from `pg_wal`.
    pub fn forget_removed(&self, pg_wal: &Path) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if !pg_wal.join(&name).exists() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// `<folder of the restore destination>/ocvault/prefetch/`: segments fetched ahead.
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// The spool for a destination PostgreSQL gave (`%p`, in `pg_wal`).
    pub fn for_destination(dest: &Path) -> Spool {
        let parent = dest.parent().filter(|d| !d.as_os_str().is_empty());
        Spool {
            dir: parent
                .unwrap_or(Path::new("."))
                .join("ocvault")
                .join("prefetch"),
        }
    }

    pub fn at(dir: PathBuf) -> Spool {
        Spool { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves a prefetched `name` to `dest`; false when it is not in the spool (or the spool
    /// cannot be used: it only saves work, the repository is asked instead).
    pub fn take(&self, name: &str, dest: &Path) -> bool {
        std::fs::rename(self.dir.join(name), dest).is_ok()
    }

    /// Segments in the spool after `name` on its timeline; removes those before it, which
    /// recovery has passed.
    pub fn ahead_of(&self, name: &str) -> usize {
        let Some(WalName::Segment(current)) = WalName::parse(name) else {
            return 0;
        };
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut ahead = 0;
        for e in rd.flatten() {
            let file = e.file_name();
            let Some(WalName::Segment(s)) = file.to_str().and_then(WalName::parse) else {
                continue;
            };
            if s.timeline != current.timeline {
                continue;
            }
            if (s.log, s.seg) > (current.log, current.seg) {
                ahead += 1;
            } else {
                let _ = std::fs::remove_file(e.path());
            }
        }
        ahead
    }

    /// Holds the prefetch lock while the returned file lives; `None` when a prefetcher is
    /// already running.
    pub fn try_lock(&self) -> Option<std::fs::File> {
        std::fs::create_dir_all(&self.dir).ok()?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".lock"))
            .ok()?;
        f.try_lock().ok()?;
        Some(f)
    }
}

//! Local state `wal-push` and `wal-fetch` keep beside PostgreSQL's `pg_wal`, under
//! `pg_wal/ocvault/`: what this host pushed already (so PostgreSQL's call for a file pushed
//! in an earlier batch returns at once), and the segments fetched ahead during recovery.
//! Neither is trusted for more than it says: a pushed mark only counts for the same
//! repository and the same file content; a prefetched file was verified before it was renamed
//! into the spool.

use crate::wal::name::WalName;
use std::path::{Path, PathBuf};

/// `pg_wal/ocvault/pushed/<name>`: "<BLAKE3 of the file> <repository>", written once the file
/// is durably archived.
pub struct PushedMarks {
    dir: PathBuf,
    repository: String,
}

/// Identifies a repository in local marks without writing its URL (which may name a user).
fn repository_tag(location: &str) -> String {
    blake3::hash(location.as_bytes()).to_hex()[..16].to_string()
}

impl PushedMarks {
    pub fn new(pg_wal: &Path, location: &str) -> PushedMarks {
        PushedMarks {
            dir: pg_wal.join("ocvault").join("pushed"),
            repository: repository_tag(location),
        }
    }

    fn line(&self, hash: &[u8; 32]) -> String {
        format!("{} {}\n", hex::encode(hash), self.repository)
    }

    /// Whether `name` with this content was pushed to this repository by this host.
    pub fn pushed(&self, name: &str, hash: &[u8; 32]) -> bool {
        std::fs::read_to_string(self.dir.join(name)).is_ok_and(|s| s == self.line(hash))
    }

    /// Whether a mark for `name` exists, whatever it says (choosing a batch: PostgreSQL's own
    /// call for that file checks the content).
    pub fn has(&self, name: &str) -> bool {
        self.dir.join(name).exists()
    }

    /// Notes that `name` is archived. A mark that cannot be written only costs a later
    /// call opening the repository.
    pub fn record(&self, name: &str, hash: &[u8; 32]) {
        if std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let tmp = self.dir.join(format!(".{name}.tmp"));
        if std::fs::write(&tmp, self.line(hash)).is_ok() {
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

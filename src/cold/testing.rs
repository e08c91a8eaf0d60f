//! A stand-in for S3 storage classes over any storage, for tests: packs put in an archive
//! class here cannot be read (as S3 answers `InvalidObjectState`) until a thaw request has
//! been polled a set number of times. Counts the requests a real bucket would be sent.

use crate::backend::lifecycle::{
    ClassedObject, Lifecycle, RetentionMode, StoredVersion, ThawRequest, ThawState, ThawTier,
};
use crate::backend::storage::{Meta, SpillFile};
use crate::backend::{Backend, DynStorage, ObjectClass, Storage, StorageResult};
use async_trait::async_trait;
use bytes::Bytes;
use opendal::ErrorKind;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
struct Archived {
    class: String,
    modified_unix_s: i64,
    state: ThawState,
    /// Polls (`thaw_state`) left until a requested thaw finishes.
    polls_left: u32,
}

/// Storage classes and thawing for a local or memory backend (see the module comment).
pub struct FakeTiers {
    /// The storage below: listed for `list_classes`.
    inner: DynStorage,
    archived: Mutex<HashMap<String, Archived>>,
    /// Polls a thaw takes after its request.
    thaw_polls: u32,
    /// Requests a bucket would have been sent: listings with classes, HEADs, restore
    /// requests, and reads refused because the file was cold.
    pub lists: AtomicU64,
    pub heads: AtomicU64,
    pub thaw_requests: AtomicU64,
    pub refused_reads: AtomicU64,
}

impl FakeTiers {
    /// Installs the fake on `backend` (and clones made afterwards); a thaw finishes at the
    /// `thaw_polls`-th poll after its request.
    pub fn install(backend: &mut Backend, thaw_polls: u32) -> Arc<FakeTiers> {
        let fake = Arc::new(FakeTiers {
            inner: backend.storage().clone(),
            archived: Mutex::new(HashMap::new()),
            thaw_polls,
            lists: AtomicU64::new(0),
            heads: AtomicU64::new(0),
            thaw_requests: AtomicU64::new(0),
            refused_reads: AtomicU64::new(0),
        });
        let layer = fake.clone();
        backend.set_lifecycle(fake.clone(), move |inner| {
            Arc::new(ColdReads { inner, fake: layer })
        });
        fake
    }

    /// Puts a file in `class`, uploaded at `modified_unix_s`: in an archive class it is cold
    /// (no thaw requested); other classes read as usual.
    pub fn archive(&self, path: &str, class: &str, modified_unix_s: i64) {
        let state = if super::is_archive_class(class) {
            ThawState::Cold
        } else {
            ThawState::Hot
        };
        self.archived.lock().unwrap().insert(
            path.to_string(),
            Archived {
                class: class.to_string(),
                modified_unix_s,
                state,
                polls_left: 0,
            },
        );
    }

    /// Whether `path` can be read now.
    pub fn readable(&self, path: &str) -> bool {
        self.archived
            .lock()
            .unwrap()
            .get(path)
            .is_none_or(|a| a.state.readable())
    }

    /// The current state, without counting a poll.
    pub fn state(&self, path: &str) -> ThawState {
        self.archived
            .lock()
            .unwrap()
            .get(path)
            .map_or(ThawState::Hot, |a| a.state)
    }

    /// Counters as (lists, heads, thaw requests, refused reads).
    pub fn counts(&self) -> (u64, u64, u64, u64) {
        (
            self.lists.load(Relaxed),
            self.heads.load(Relaxed),
            self.thaw_requests.load(Relaxed),
            self.refused_reads.load(Relaxed),
        )
    }
}

fn unsupported() -> opendal::Error {
    opendal::Error::new(ErrorKind::Unsupported, "not in the storage-class fake")
}

#[async_trait]
impl Lifecycle for FakeTiers {
    async fn object_lock_enabled(&self) -> StorageResult<bool> {
        Ok(false)
    }

    async fn list_classes(&self, prefix: &str) -> StorageResult<Vec<ClassedObject>> {
        self.lists.fetch_add(1, Relaxed);
        let files = self.inner.list(prefix).await?;
        let archived = self.archived.lock().unwrap();
        Ok(files
            .into_iter()
            .map(|(path, size)| {
                let a = archived.get(&path);
                ClassedObject {
                    storage_class: a.map(|a| a.class.clone()),
                    modified_unix_s: a.map_or(0, |a| a.modified_unix_s),
                    path,
                    size,
                }
            })
            .collect())
    }

    async fn thaw_state(&self, path: &str) -> StorageResult<ThawState> {
        self.heads.fetch_add(1, Relaxed);
        let mut archived = self.archived.lock().unwrap();
        let Some(a) = archived.get_mut(path) else {
            return Ok(ThawState::Hot);
        };
        if a.state == ThawState::Thawing {
            a.polls_left = a.polls_left.saturating_sub(1);
            if a.polls_left == 0 {
                a.state = ThawState::Thawed {
                    until_unix_s: crate::host::now_ns() / 1_000_000_000 + 86_400,
                };
            }
        }
        Ok(a.state)
    }

    async fn request_thaw(
        &self,
        path: &str,
        days: u32,
        _tier: ThawTier,
    ) -> StorageResult<ThawRequest> {
        self.thaw_requests.fetch_add(1, Relaxed);
        let _ = days;
        let mut archived = self.archived.lock().unwrap();
        let Some(a) = archived.get_mut(path) else {
            return Ok(ThawRequest::AlreadyReadable);
        };
        Ok(match a.state {
            ThawState::Cold => {
                a.state = ThawState::Thawing;
                a.polls_left = self.thaw_polls;
                if a.polls_left == 0 {
                    a.state = ThawState::Thawed {
                        until_unix_s: crate::host::now_ns() / 1_000_000_000 + 86_400,
                    };
                }
                ThawRequest::Started
            }
            ThawState::Thawing => ThawRequest::AlreadyInProgress,
            ThawState::Hot | ThawState::Thawed { .. } => ThawRequest::AlreadyReadable,
        })
    }

    async fn retention(&self, _: &str) -> StorageResult<Option<(RetentionMode, i64)>> {
        Err(unsupported())
    }

    async fn extend_retention(&self, _: &str, _: RetentionMode, _: i64) -> StorageResult<()> {
        Err(unsupported())
    }

    async fn list_versions(&self, _: &str) -> StorageResult<Vec<StoredVersion>> {
        Err(unsupported())
    }

    async fn version_retention(&self, _: &str, _: &str) -> StorageResult<Option<i64>> {
        Err(unsupported())
    }

    async fn delete_version(&self, _: &str, _: &str) -> StorageResult<()> {
        Err(unsupported())
    }
}

/// The storage layer of the fake: reads of cold files fail as S3's do (403 InvalidObjectState).
struct ColdReads {
    inner: DynStorage,
    fake: Arc<FakeTiers>,
}

impl ColdReads {
    fn check(&self, path: &str) -> StorageResult<()> {
        if self.fake.readable(path) {
            return Ok(());
        }
        self.fake.refused_reads.fetch_add(1, Relaxed);
        Err(opendal::Error::new(
            ErrorKind::PermissionDenied,
            "InvalidObjectState: the object's storage class needs a restore first",
        ))
    }
}

#[async_trait]
impl Storage for ColdReads {
    async fn read(&self, path: &str, range: Option<Range<u64>>) -> StorageResult<Vec<u8>> {
        self.check(path)?;
        self.inner.read(path, range).await
    }

    async fn read_nearby(
        &self,
        path: &str,
        size: u64,
        range: Range<u64>,
    ) -> StorageResult<Vec<u8>> {
        self.check(path)?;
        self.inner.read_nearby(path, size, range).await
    }

    async fn write(&self, path: &str, bytes: Bytes, class: ObjectClass) -> StorageResult<()> {
        self.inner.write(path, bytes, class).await
    }

    fn spill_file(&self, name: &str) -> Option<std::io::Result<SpillFile>> {
        self.inner.spill_file(name)
    }

    async fn write_spilled(
        &self,
        path: &str,
        file: Arc<SpillFile>,
        class: ObjectClass,
    ) -> StorageResult<()> {
        self.inner.write_spilled(path, file, class).await
    }

    async fn delete(&self, path: &str) -> StorageResult<()> {
        self.inner.delete(path).await?;
        self.fake.archived.lock().unwrap().remove(path);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<(String, u64)>> {
        self.inner.list(prefix).await
    }

    async fn stat(&self, path: &str) -> StorageResult<Meta> {
        self.inner.stat(path).await
    }
}

//! The storage of an s3:// repository, every request through `S3Api`: writes with the Object
//! Lock headers and storage class the policy gives (one PUT with the lock in it, never a
//! second call); `Lifecycle` through the same client; and the `-o s3.original_versions=true`
//! view, which reads every file as ocvault first wrote it, past versions and delete markers
//! added since (recovery after an attack on a locked bucket).
//!
//! One S3 client, not OpenDAL's s3 service beside ours: one connection pool, one credential
//! chain, one set of error kinds, and a snapshot touches one HTTP stack's code, not two
//! (that code is most of what a snapshot to S3 holds beyond one to local disk).
//! `opendal:s3` still reaches OpenDAL's service.

use super::lifecycle::{
    initial_retain_until, is_archive_class, ClassedObject, Lifecycle, RetentionMode, StoredVersion,
    ThawRequest, ThawState, ThawTier, WritePolicy,
};
use super::retry::RetryPolicy;
use super::s3api::{PutOptions, RestoreRequested, RestoreStatus, RestoreTier, S3Api};
use super::storage::{
    DynStorage, Meta, ObjectClass, SpillFile, Storage, StorageError, StorageResult,
};
use async_trait::async_trait;
use backon::Retryable;
use bytes::Bytes;
use opendal::ErrorKind;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, RwLock};

/// The tag data packs carry when they have a storage class of their own, so that a bucket
/// lifecycle rule can select them (`x-amz-tagging`).
pub const DATA_PACK_TAG: &str = "ocvault-pack=data";

/// What one write must set beyond the `-o s3.storage_class` default (`None`: nothing).
pub fn put_options(
    class: ObjectClass,
    policy: &WritePolicy,
    default_class: Option<&str>,
    now_unix_s: i64,
) -> Option<PutOptions> {
    let lock = match class {
        ObjectClass::Transient => None,
        ObjectClass::Metadata | ObjectClass::DataPack => policy
            .lock
            .map(|(mode, days)| (mode, initial_retain_until(now_unix_s, days))),
    };
    if lock.is_none() && policy.data_storage_class.is_none() {
        return None;
    }
    let (storage_class, tagging) = match (&policy.data_storage_class, class) {
        (Some(data), ObjectClass::DataPack) => (Some(data.clone()), Some(DATA_PACK_TAG.into())),
        // With a data class set, everything else stays STANDARD whatever -o s3.storage_class
        // says: metadata is read by every command.
        (Some(_), _) => (Some("STANDARD".to_string()), None),
        (None, _) => (default_class.map(str::to_string), None),
    };
    Some(PutOptions {
        storage_class,
        lock,
        tagging,
    })
}

fn now_unix_s() -> i64 {
    super::system_time_ns(std::time::SystemTime::now()).div_euclid(1_000_000_000)
}

/// The file a path stands for in the original-versions view.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Original {
    /// The oldest version that is not a delete marker.
    Version {
        id: String,
        size: u64,
        modified_unix_s: i64,
    },
    /// Written (through this view) since the map was built: the current version.
    Current,
}

/// Per path, the oldest version that is not a delete marker (ListObjectVersions lists each
/// key's versions newest first, so the last one listed).
fn original_versions(versions: Vec<super::s3api::ObjectVersion>) -> HashMap<String, Original> {
    let mut map = HashMap::new();
    for v in versions.into_iter().filter(|v| !v.is_delete_marker) {
        map.insert(
            v.path,
            Original::Version {
                id: v.version_id,
                size: v.size,
                modified_unix_s: v.last_modified_unix_s,
            },
        );
    }
    map
}

pub struct S3Storage {
    api: Arc<S3Api>,
    /// Shared with `Backend::apply_policy`.
    policy: Arc<RwLock<WritePolicy>>,
    /// `-o s3.original_versions=true`: built by one ListObjectVersions pass at first use.
    originals: Option<tokio::sync::OnceCell<Mutex<HashMap<String, Original>>>>,
}

impl S3Storage {
    pub fn open(
        api: Arc<S3Api>,
        policy: Arc<RwLock<WritePolicy>>,
        original_versions: bool,
    ) -> DynStorage {
        Arc::new(S3Storage {
            api,
            policy,
            originals: original_versions.then(tokio::sync::OnceCell::new),
        })
    }

    /// The original-versions map, listed on first use; `None` outside that view.
    async fn originals(&self) -> StorageResult<Option<&Mutex<HashMap<String, Original>>>> {
        let Some(cell) = &self.originals else {
            return Ok(None);
        };
        let map = cell
            .get_or_try_init(|| async {
                let versions = self.api.list_versions("").await?;
                Ok::<_, StorageError>(Mutex::new(original_versions(versions)))
            })
            .await?;
        Ok(Some(map))
    }

    /// In the original-versions view, what `path` stands for (`Err` NotFound when nothing).
    async fn original(&self, path: &str) -> StorageResult<Option<Original>> {
        let Some(map) = self.originals().await? else {
            return Ok(None);
        };
        let found = map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned();
        match found {
            Some(o) => Ok(Some(o)),
            None => Err(StorageError::new(
                ErrorKind::NotFound,
                format!("{path}: no original version"),
            )),
        }
    }

    /// The headers a write of `class` gets under the current policy.
    fn put_options_now(&self, class: ObjectClass) -> PutOptions {
        let policy = self
            .policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let default_class = self.api.default_storage_class();
        put_options(class, &policy, default_class, now_unix_s()).unwrap_or_else(|| PutOptions {
            storage_class: default_class.map(str::to_string),
            ..PutOptions::default()
        })
    }

    /// The current versions under `prefix`, which names a folder (as `Storage::list` means it,
    /// so "locks" does not also list "locksmith/").
    async fn list_current(&self, prefix: &str) -> StorageResult<Vec<(String, u64)>> {
        let folder = match prefix {
            "" => String::new(),
            p if p.ends_with('/') => p.to_string(),
            p => format!("{p}/"),
        };
        let objects = self.api.list_objects(&folder).await?;
        Ok(objects
            .into_iter()
            // Folder markers some tools create ("data/"), never ours.
            .filter(|o| !o.path.ends_with('/'))
            .map(|o| (o.path, o.size))
            .collect())
    }

    async fn note_written(&self, path: &str) -> StorageResult<()> {
        if let Some(map) = self.originals().await? {
            map.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_string(), Original::Current);
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for S3Storage {
    async fn read(&self, path: &str, range: Option<Range<u64>>) -> StorageResult<Vec<u8>> {
        let version = match self.original(path).await? {
            Some(Original::Version { id, .. }) => Some(id),
            Some(Original::Current) | None => None,
        };
        let bytes = self.api.get_object(path, version.as_deref(), range).await?;
        Ok(Vec::from(bytes))
    }

    /// One PUT, which S3 makes visible whole or not at all.
    async fn write(&self, path: &str, bytes: Bytes, class: ObjectClass) -> StorageResult<()> {
        let opts = self.put_options_now(class);
        self.api.put_object(path, bytes, &opts).await?;
        self.note_written(path).await
    }

    /// Packs (the builder asks for "pack") are built in a local temporary file and streamed
    /// from it, so a snapshot to S3 holds about what one to local disk does; other files
    /// are small and sent from memory.
    fn spill_file(&self, name: &str) -> Option<std::io::Result<SpillFile>> {
        (name == "pack")
            .then(|| SpillFile::create(&std::env::temp_dir().join("ocvault-spill"), name))
    }

    async fn write_spilled(
        &self,
        path: &str,
        file: Arc<SpillFile>,
        class: ObjectClass,
    ) -> StorageResult<()> {
        let opts = self.put_options_now(class);
        self.api.put_object_file(path, file.path(), &opts).await?;
        self.note_written(path).await
    }

    /// A plain DELETE: on a versioned bucket a delete marker, which never fails on a locked
    /// version.
    async fn delete(&self, path: &str) -> StorageResult<()> {
        self.api.delete_object(path).await?;
        if let Some(map) = self.originals().await? {
            map.lock().unwrap_or_else(|e| e.into_inner()).remove(path);
        }
        Ok(())
    }

    /// In the original-versions view, the paths the map holds (files written through the
    /// view since: their current size).
    async fn list(&self, prefix: &str) -> StorageResult<Vec<(String, u64)>> {
        let Some(map) = self.originals().await? else {
            return self.list_current(prefix).await;
        };
        let (mut out, written) = {
            let map = map.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = Vec::new();
            let mut written = Vec::new();
            for (path, o) in map.iter().filter(|(p, _)| p.starts_with(prefix)) {
                match o {
                    Original::Version { size, .. } => out.push((path.clone(), *size)),
                    Original::Current => written.push(path.clone()),
                }
            }
            (out, written)
        };
        for path in written {
            let size = self.stat_current(&path).await?.size;
            out.push((path, size));
        }
        out.sort();
        Ok(out)
    }

    async fn stat(&self, path: &str) -> StorageResult<Meta> {
        match self.original(path).await? {
            Some(Original::Version {
                size,
                modified_unix_s,
                ..
            }) => Ok(Meta {
                size,
                modified_ns: Some(modified_unix_s.saturating_mul(1_000_000_000)),
            }),
            Some(Original::Current) | None => self.stat_current(path).await,
        }
    }
}

impl S3Storage {
    async fn stat_current(&self, path: &str) -> StorageResult<Meta> {
        let head = self.api.head_object(path, None).await?;
        Ok(Meta {
            size: head.size,
            modified_ns: head
                .last_modified_unix_s
                .map(|s| s.saturating_mul(1_000_000_000)),
        })
    }
}

/// `Lifecycle` through `S3Api`, each request retried like the storage stack's (temporary
/// errors, with backoff).
pub struct S3Lifecycle {
    api: Arc<S3Api>,
    retry: RetryPolicy,
}

impl S3Lifecycle {
    pub fn new(api: Arc<S3Api>, retry: RetryPolicy) -> S3Lifecycle {
        S3Lifecycle { api, retry }
    }

    async fn run<T, Fut>(&self, f: impl FnMut() -> Fut) -> StorageResult<T>
    where
        Fut: std::future::Future<Output = StorageResult<T>>,
    {
        f.retry(self.retry.backoff())
            .when(super::retry::worth_retrying)
            .await
    }
}

/// Whether an object of `class` in `restore` state can be read now.
pub fn thaw_state(class: Option<&str>, restore: RestoreStatus) -> ThawState {
    if !class.is_some_and(is_archive_class) {
        return ThawState::Hot;
    }
    match restore {
        RestoreStatus::NotRequested => ThawState::Cold,
        RestoreStatus::InProgress => ThawState::Thawing,
        RestoreStatus::Available { expiry_unix_s } => ThawState::Thawed {
            until_unix_s: expiry_unix_s.unwrap_or(i64::MAX),
        },
    }
}

#[async_trait]
impl Lifecycle for S3Lifecycle {
    async fn object_lock_enabled(&self) -> StorageResult<bool> {
        self.run(|| self.api.object_lock_enabled()).await
    }

    async fn list_classes(&self, prefix: &str) -> StorageResult<Vec<ClassedObject>> {
        let listed = self.run(|| self.api.list_objects(prefix)).await?;
        Ok(listed
            .into_iter()
            .map(|o| ClassedObject {
                path: o.path,
                size: o.size,
                storage_class: o.storage_class.filter(|c| c != "STANDARD"),
                modified_unix_s: o.last_modified_unix_s,
            })
            .collect())
    }

    async fn thaw_state(&self, path: &str) -> StorageResult<ThawState> {
        let head = self.run(|| self.api.head_object(path, None)).await?;
        Ok(thaw_state(head.storage_class.as_deref(), head.restore))
    }

    async fn request_thaw(
        &self,
        path: &str,
        days: u32,
        tier: ThawTier,
    ) -> StorageResult<ThawRequest> {
        let tier = match tier {
            ThawTier::Expedited => RestoreTier::Expedited,
            ThawTier::Standard => RestoreTier::Standard,
            ThawTier::Bulk => RestoreTier::Bulk,
        };
        let done = self
            .run(|| self.api.restore_object(path, days, tier))
            .await?;
        Ok(match done {
            RestoreRequested::Started => ThawRequest::Started,
            RestoreRequested::AlreadyInProgress => ThawRequest::AlreadyInProgress,
            RestoreRequested::AlreadyRestored => ThawRequest::AlreadyReadable,
        })
    }

    async fn retention(&self, path: &str) -> StorageResult<Option<(RetentionMode, i64)>> {
        Ok(self.run(|| self.api.head_object(path, None)).await?.lock)
    }

    async fn extend_retention(
        &self,
        path: &str,
        mode: RetentionMode,
        until_unix_s: i64,
    ) -> StorageResult<()> {
        self.run(|| self.api.put_retention(path, None, mode, until_unix_s))
            .await
    }

    async fn list_versions(&self, prefix: &str) -> StorageResult<Vec<StoredVersion>> {
        let versions = self.run(|| self.api.list_versions(prefix)).await?;
        Ok(versions
            .into_iter()
            .map(|v| StoredVersion {
                path: v.path,
                version_id: v.version_id,
                is_latest: v.is_latest,
                is_delete_marker: v.is_delete_marker,
                size: v.size,
                modified_unix_s: v.last_modified_unix_s,
            })
            .collect())
    }

    async fn version_retention(&self, path: &str, version_id: &str) -> StorageResult<Option<i64>> {
        let head = self
            .run(|| self.api.head_object(path, Some(version_id)))
            .await?;
        Ok(head.lock.map(|(_, until)| until))
    }

    async fn delete_version(&self, path: &str, version_id: &str) -> StorageResult<()> {
        self.run(|| self.api.delete_version(path, version_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_S: i64 = 86_400;

    #[test]
    fn retain_until_is_next_utc_midnight() {
        // 2030-03-17T17:46:40Z + 1 day -> 2030-03-19T00:00:00Z.
        assert_eq!(initial_retain_until(1_900_000_000, 1), 1_900_108_800);
        // Exactly midnight stays.
        assert_eq!(
            initial_retain_until(1_900_108_800 - DAY_S, 1),
            1_900_108_800
        );
        assert_eq!(
            initial_retain_until(1_900_108_800 - DAY_S + 1, 1),
            1_900_108_800 + DAY_S
        );
        // Times from storage may be anything: no overflow.
        assert_eq!(initial_retain_until(i64::MAX, 36_500), i64::MAX);
        assert!(initial_retain_until(i64::MIN, 1) < 0);
    }

    #[test]
    fn which_writes_carry_headers() {
        let none = WritePolicy::default();
        assert_eq!(
            put_options(ObjectClass::DataPack, &none, Some("STANDARD_IA"), 0),
            None
        );

        let locked = WritePolicy {
            lock: Some((RetentionMode::Compliance, 30)),
            data_storage_class: None,
        };
        let meta = put_options(ObjectClass::Metadata, &locked, None, 1_900_000_000).unwrap();
        assert_eq!(
            meta.lock,
            Some((
                RetentionMode::Compliance,
                initial_retain_until(1_900_000_000, 30)
            ))
        );
        assert_eq!(meta.storage_class, None);
        assert_eq!(meta.tagging, None);
        // -o s3.storage_class still applies when only a lock is set.
        let data = put_options(ObjectClass::DataPack, &locked, Some("STANDARD_IA"), 0).unwrap();
        assert_eq!(data.storage_class.as_deref(), Some("STANDARD_IA"));
        // Transient files are never locked: a plain PUT.
        assert_eq!(put_options(ObjectClass::Transient, &locked, None, 0), None);

        let tiered = WritePolicy {
            lock: None,
            data_storage_class: Some("GLACIER".into()),
        };
        let data = put_options(ObjectClass::DataPack, &tiered, Some("STANDARD_IA"), 0).unwrap();
        assert_eq!(data.storage_class.as_deref(), Some("GLACIER"));
        assert_eq!(data.tagging.as_deref(), Some(DATA_PACK_TAG));
        assert_eq!(data.lock, None);
        let meta = put_options(ObjectClass::Metadata, &tiered, Some("STANDARD_IA"), 0).unwrap();
        assert_eq!(meta.storage_class.as_deref(), Some("STANDARD"));
        let transient = put_options(ObjectClass::Transient, &tiered, None, 0).unwrap();
        assert_eq!(transient.storage_class.as_deref(), Some("STANDARD"));
        assert_eq!(transient.lock, None);
    }

    #[test]
    fn thaw_states() {
        assert_eq!(
            thaw_state(None, RestoreStatus::NotRequested),
            ThawState::Hot
        );
        assert_eq!(
            thaw_state(Some("GLACIER_IR"), RestoreStatus::NotRequested),
            ThawState::Hot
        );
        assert_eq!(
            thaw_state(Some("DEEP_ARCHIVE"), RestoreStatus::NotRequested),
            ThawState::Cold
        );
        assert_eq!(
            thaw_state(Some("GLACIER"), RestoreStatus::InProgress),
            ThawState::Thawing
        );
        assert_eq!(
            thaw_state(
                Some("GLACIER"),
                RestoreStatus::Available {
                    expiry_unix_s: Some(5)
                }
            ),
            ThawState::Thawed { until_unix_s: 5 }
        );
    }

    #[test]
    fn original_is_oldest_non_marker() {
        let v = |path: &str, id: &str, marker: bool, t: i64| super::super::s3api::ObjectVersion {
            path: path.into(),
            version_id: id.into(),
            is_latest: false,
            is_delete_marker: marker,
            size: if marker { 0 } else { t as u64 },
            last_modified_unix_s: t,
        };
        // Listing order: per key, newest first.
        let map = original_versions(vec![
            v("a", "a-marker", true, 30),
            v("a", "a-overwrite", false, 20),
            v("a", "a-ocvault", false, 10),
            v("b", "b-marker", true, 5),
            v("c", "c-only", false, 7),
        ]);
        assert_eq!(
            map.get("a"),
            Some(&Original::Version {
                id: "a-ocvault".into(),
                size: 10,
                modified_unix_s: 10
            })
        );
        assert_eq!(map.get("b"), None);
        assert!(matches!(map.get("c"), Some(Original::Version { id, .. }) if id == "c-only"));
    }
}

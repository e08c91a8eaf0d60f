//! What S3 can do with a stored file beyond reading and writing it: Object Lock retention,
//! storage classes and thawing from archive classes, and object versions. Only storage that
//! has these (S3) implements `Lifecycle`; `Backend::lifecycle` is `None` elsewhere, and the
//! commands that need it say so.

use super::storage::StorageResult;
use async_trait::async_trait;

/// S3's archive classes: an object in one cannot be read until a restore request makes a
/// readable copy (Glacier Instant Retrieval, `GLACIER_IR`, reads like the standard class).
pub const ARCHIVE_CLASSES: [&str; 2] = ["GLACIER", "DEEP_ARCHIVE"];

pub fn is_archive_class(class: &str) -> bool {
    ARCHIVE_CLASSES.contains(&class)
}

const DAY_S: i64 = 86_400;

/// The retain-until a file written at `written_unix_s` gets under a lock of `days`: that time
/// plus the days, rounded up to the next UTC midnight, so the files of one day share a date.
/// Saturates (times from storage may be anything).
pub fn initial_retain_until(written_unix_s: i64, days: u32) -> i64 {
    let t = written_unix_s.saturating_add(i64::from(days) * DAY_S);
    let floor = t.div_euclid(DAY_S).saturating_mul(DAY_S);
    if floor == t {
        t
    } else {
        floor.saturating_add(DAY_S)
    }
}

/// Object Lock mode, as S3 names it (the repository's `format::LockMode` maps onto it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetentionMode {
    Governance,
    Compliance,
}

/// How a repository's files are to be written: set from the config once it is read
/// (`Backend::apply_policy`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WritePolicy {
    /// Lock every `Metadata` and `DataPack` file for this many days from its write, rounded
    /// up to the next UTC midnight.
    pub lock: Option<(RetentionMode, u32)>,
    /// Storage class of `DataPack` files (metadata stays in the standard class).
    pub data_storage_class: Option<String>,
}

/// One file in a listing with its storage class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassedObject {
    pub path: String,
    pub size: u64,
    /// `None` means the standard class.
    pub storage_class: Option<String>,
    /// The server's modification (upload) time, seconds since the epoch.
    pub modified_unix_s: i64,
}

/// Whether a file in an archive class can be read now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThawState {
    /// Readable: not in an archive class.
    Hot,
    /// In an archive class, no restore requested.
    Cold,
    /// A restore was requested and is not finished.
    Thawing,
    /// A restored copy is readable until this time (seconds since the epoch).
    Thawed { until_unix_s: i64 },
}

impl ThawState {
    pub fn readable(self) -> bool {
        matches!(self, ThawState::Hot | ThawState::Thawed { .. })
    }
}

/// S3 Glacier retrieval tiers: faster costs more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThawTier {
    Expedited,
    Standard,
    Bulk,
}

/// What a restore request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThawRequest {
    Started,
    AlreadyInProgress,
    AlreadyReadable,
}

/// One version of a stored file (versioned buckets: every bucket with Object Lock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredVersion {
    pub path: String,
    pub version_id: String,
    pub is_latest: bool,
    pub is_delete_marker: bool,
    pub size: u64,
    pub modified_unix_s: i64,
}

#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// Whether the bucket has Object Lock enabled (a locked `init` refuses a bucket without).
    async fn object_lock_enabled(&self) -> StorageResult<bool>;

    /// Every file under `prefix` with its storage class (one request per 1000 files).
    async fn list_classes(&self, prefix: &str) -> StorageResult<Vec<ClassedObject>>;

    /// Whether a file can be read now (one HEAD).
    async fn thaw_state(&self, path: &str) -> StorageResult<ThawState>;

    /// Asks for a readable copy of an archived file for `days` days.
    async fn request_thaw(
        &self,
        path: &str,
        days: u32,
        tier: ThawTier,
    ) -> StorageResult<ThawRequest>;

    /// The current version's retention: mode and retain-until (seconds since the epoch).
    async fn retention(&self, path: &str) -> StorageResult<Option<(RetentionMode, i64)>>;

    /// Extends the current version's retention to `until_unix_s` (never shortens: S3 refuses
    /// that in compliance mode, and callers only ask for later dates).
    async fn extend_retention(
        &self,
        path: &str,
        mode: RetentionMode,
        until_unix_s: i64,
    ) -> StorageResult<()>;

    /// Every version and delete marker under `prefix`.
    async fn list_versions(&self, prefix: &str) -> StorageResult<Vec<StoredVersion>>;

    /// The retention of one version (seconds since the epoch), if it has one.
    async fn version_retention(&self, path: &str, version_id: &str) -> StorageResult<Option<i64>>;

    /// Deletes one version for good; refused (PermissionDenied) while it is locked.
    async fn delete_version(&self, path: &str, version_id: &str) -> StorageResult<()>;
}

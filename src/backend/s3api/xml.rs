//! The XML bodies `S3Api` sends and reads (quick-xml's serde support for reading).

use super::{parse_iso8601, ListedObject, ObjectVersion, RestoreTier, RetentionMode};
use crate::backend::storage::{StorageError, StorageResult};
use opendal::ErrorKind;
use serde::Deserialize;

const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

pub fn restore_request(days: u32, tier: RestoreTier) -> String {
    format!(
        "<RestoreRequest xmlns=\"{NS}\"><Days>{days}</Days><GlacierJobParameters><Tier>{}</Tier></GlacierJobParameters></RestoreRequest>",
        tier.as_s3()
    )
}

/// `until` in ISO 8601 (`iso8601`).
pub fn retention(mode: RetentionMode, until: &str) -> String {
    format!(
        "<Retention xmlns=\"{NS}\"><Mode>{}</Mode><RetainUntilDate>{until}</RetainUntilDate></Retention>",
        super::retention_mode_name(mode)
    )
}

pub fn create_bucket(region: &str) -> String {
    format!(
        "<CreateBucketConfiguration xmlns=\"{NS}\"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
        quick_xml::escape::escape(region)
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The code and message of an S3 `<Error>` body; `None` if the body is not one.
pub fn parse_error(body: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(body).ok()?;
    let e: ErrorBody = quick_xml::de::from_str(text).ok()?;
    (!e.code.is_empty()).then_some((e.code, e.message))
}

fn unreadable(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::new(
        ErrorKind::Unexpected,
        format!("s3: unreadable {what} answer: {e}"),
    )
}

fn parse<'de, T: Deserialize<'de>>(body: &'de [u8], what: &str) -> StorageResult<T> {
    let text = std::str::from_utf8(body).map_err(|e| unreadable(what, e))?;
    quick_xml::de::from_str(text).map_err(|e| unreadable(what, e))
}

fn date(s: &str, what: &str) -> StorageResult<i64> {
    parse_iso8601(s).ok_or_else(|| unreadable(what, format!("date {s:?}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LockConfiguration {
    #[serde(default)]
    object_lock_enabled: String,
}

pub fn parse_lock_configuration(body: &[u8]) -> StorageResult<bool> {
    let c: LockConfiguration = parse(body, "GetObjectLockConfiguration")?;
    Ok(c.object_lock_enabled == "Enabled")
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    contents: Vec<Contents>,
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_continuation_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Contents {
    key: String,
    #[serde(default)]
    size: u64,
    last_modified: String,
    #[serde(default)]
    storage_class: Option<String>,
}

/// One page of ListObjectsV2; keys are the bucket's (the caller strips the root).
pub struct ObjectsPage {
    pub objects: Vec<ListedObject>,
    pub truncated: bool,
    pub next: Option<String>,
}

pub fn parse_list_objects(body: &[u8]) -> StorageResult<ObjectsPage> {
    const WHAT: &str = "ListObjectsV2";
    let r: ListBucketResult = parse(body, WHAT)?;
    let objects = r
        .contents
        .into_iter()
        .map(|c| {
            Ok(ListedObject {
                last_modified_unix_s: date(&c.last_modified, WHAT)?,
                path: c.key,
                size: c.size,
                storage_class: c.storage_class.filter(|s| !s.is_empty()),
            })
        })
        .collect::<StorageResult<_>>()?;
    let next = r.next_continuation_token.filter(|t| !t.is_empty());
    if r.is_truncated && next.is_none() {
        return Err(unreadable(
            WHAT,
            "truncated page without NextContinuationToken",
        ));
    }
    Ok(ObjectsPage {
        objects,
        truncated: r.is_truncated,
        next,
    })
}

/// Versions and delete markers come interleaved in key order, so they are read as one
/// sequence of elements.
#[derive(Deserialize)]
struct ListVersionsResult {
    #[serde(rename = "$value", default)]
    items: Vec<VersionsItem>,
}

#[derive(Deserialize)]
enum VersionsItem {
    Version(VersionEntry),
    DeleteMarker(VersionEntry),
    IsTruncated(bool),
    NextKeyMarker(String),
    NextVersionIdMarker(String),
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VersionEntry {
    key: String,
    version_id: String,
    #[serde(default)]
    is_latest: bool,
    last_modified: String,
    #[serde(default)]
    size: u64,
}

/// One page of ListObjectVersions; `next` is the key and version-id markers.
pub struct VersionsPage {
    pub versions: Vec<ObjectVersion>,
    pub truncated: bool,
    pub next: Option<(String, String)>,
}

pub fn parse_list_versions(body: &[u8]) -> StorageResult<VersionsPage> {
    const WHAT: &str = "ListObjectVersions";
    let r: ListVersionsResult = parse(body, WHAT)?;
    let mut page = VersionsPage {
        versions: Vec::new(),
        truncated: false,
        next: None,
    };
    let (mut next_key, mut next_version) = (None, String::new());
    for item in r.items {
        let (entry, is_delete_marker) = match item {
            VersionsItem::Version(v) => (v, false),
            VersionsItem::DeleteMarker(v) => (v, true),
            VersionsItem::IsTruncated(t) => {
                page.truncated = t;
                continue;
            }
            VersionsItem::NextKeyMarker(k) => {
                next_key = Some(k);
                continue;
            }
            VersionsItem::NextVersionIdMarker(v) => {
                next_version = v;
                continue;
            }
            VersionsItem::Other => continue,
        };
        page.versions.push(ObjectVersion {
            last_modified_unix_s: date(&entry.last_modified, WHAT)?,
            path: entry.key,
            version_id: entry.version_id,
            is_latest: entry.is_latest,
            is_delete_marker,
            size: if is_delete_marker { 0 } else { entry.size },
        });
    }
    page.next = next_key.map(|k| (k, next_version));
    if page.truncated && page.next.is_none() {
        return Err(unreadable(WHAT, "truncated page without NextKeyMarker"));
    }
    Ok(page)
}

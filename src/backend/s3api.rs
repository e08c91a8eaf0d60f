//! The small signed S3 client every request of an s3:// repository goes through: GET (whole,
//! ranged, of one version), PUTs with Object Lock headers, storage class and tags (from memory
//! or streamed from a file); HEAD with restore and retention state; DELETE; RestoreObject;
//! PutObjectRetention; the bucket's Object Lock configuration; listings with storage classes;
//! object versions and their permanent deletion. OpenDAL 0.59's s3 service cannot send most
//! of these.
//!
//! Built from the `(key, value)` config pairs `location::parse_s3` gives (OpenDAL's s3 keys), signed
//! with the reqsign OpenDAL uses (same credential chain), sent with reqwest. Every method is one
//! request, except listings, which loop over pages. Errors are `StorageError`s of the kind the
//! status and S3 code say (`NotFound`, `PermissionDenied`, ...), temporary for 5xx, throttling,
//! timeouts and broken connections, so the `Retry` layer retries them; the server's code and
//! message travel as the error's source (`service_error`).

pub use super::lifecycle::RetentionMode;
use super::storage::{StorageError, StorageResult};
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use md5::Digest;
use opendal::ErrorKind;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqsign_aws_v4::{Credential, DefaultCredentialProvider, RequestSigner};
use reqsign_core::{Context, OsEnv, ProvideCredentialChain, Signer};
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

mod xml;

/// The mode as S3 spells it in headers and XML.
pub fn retention_mode_name(mode: RetentionMode) -> &'static str {
    match mode {
        RetentionMode::Governance => "GOVERNANCE",
        RetentionMode::Compliance => "COMPLIANCE",
    }
}

pub fn parse_retention_mode(s: &str) -> Option<RetentionMode> {
    match s.trim().to_ascii_uppercase().as_str() {
        "GOVERNANCE" => Some(RetentionMode::Governance),
        "COMPLIANCE" => Some(RetentionMode::Compliance),
        _ => None,
    }
}

/// What a PUT sets besides the bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// `x-amz-storage-class`; `None` leaves the bucket's default (STANDARD).
    pub storage_class: Option<String>,
    /// Mode and retain-until (seconds since the epoch).
    pub lock: Option<(RetentionMode, i64)>,
    /// `x-amz-tagging`, URL-query encoded (`key=value&key2=value2`).
    pub tagging: Option<String>,
}

/// Whether an archived object (GLACIER, DEEP_ARCHIVE) has a readable restored copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreStatus {
    /// No `x-amz-restore` header: never restored, or the copy expired.
    NotRequested,
    InProgress,
    /// The restored copy is readable until `expiry_unix_s` (when the server says).
    Available {
        expiry_unix_s: Option<i64>,
    },
}

/// What HEAD says of one object version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    /// `None` is STANDARD (S3 omits the header for it).
    pub storage_class: Option<String>,
    pub restore: RestoreStatus,
    /// Mode and retain-until (seconds since the epoch).
    pub lock: Option<(RetentionMode, i64)>,
    pub last_modified_unix_s: Option<i64>,
    /// `None` on an unversioned bucket.
    pub version_id: Option<String>,
}

/// How fast (and how dear) a restore from GLACIER / DEEP_ARCHIVE is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreTier {
    Standard,
    Bulk,
    Expedited,
}

impl RestoreTier {
    pub fn as_s3(self) -> &'static str {
        match self {
            RestoreTier::Standard => "Standard",
            RestoreTier::Bulk => "Bulk",
            RestoreTier::Expedited => "Expedited",
        }
    }
}

/// What a RestoreObject request found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreRequested {
    /// 202: a restore job started.
    Started,
    /// 200: a restored copy is there already (its expiry was extended).
    AlreadyRestored,
    /// 409 RestoreAlreadyInProgress.
    AlreadyInProgress,
}

/// One object of a ListObjectsV2 listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    /// Relative to the repository root.
    pub path: String,
    pub size: u64,
    /// `None` when the server omits it (STANDARD).
    pub storage_class: Option<String>,
    pub last_modified_unix_s: i64,
}

/// One version (or delete marker) of a ListObjectVersions listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectVersion {
    /// Relative to the repository root.
    pub path: String,
    pub version_id: String,
    pub is_latest: bool,
    pub is_delete_marker: bool,
    /// 0 for a delete marker.
    pub size: u64,
    pub last_modified_unix_s: i64,
}

/// The server's answer to a failed request, kept as the source of the `StorageError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3ServiceError {
    pub status: u16,
    /// S3's error code ("AccessDenied", "InvalidObjectState", ...); for HEAD, which has no
    /// body, the status's name.
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for S3ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "S3 {} (HTTP {}): {}",
            self.code, self.status, self.message
        )
    }
}

impl std::error::Error for S3ServiceError {}

/// The server's code and message under a storage error from `S3Api`, if it came from one.
pub fn service_error(e: &StorageError) -> Option<&S3ServiceError> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(found) = s.downcast_ref::<S3ServiceError>() {
            return Some(found);
        }
        source = s.source();
    }
    None
}

/// Whether a read failed because the object is archived (GLACIER, DEEP_ARCHIVE) with no
/// restored copy: S3's `InvalidObjectState`, from `S3Api` or from OpenDAL (which keeps the
/// code in its message).
pub fn is_cold_object_error(e: &StorageError) -> bool {
    match service_error(e) {
        Some(s) => s.code == "InvalidObjectState",
        None => e.message().contains("InvalidObjectState"),
    }
}

/// A signed S3 client for one bucket and root (see the module comment).
pub struct S3Api {
    http: reqwest::Client,
    signer: Signer<Credential>,
    /// `scheme://host[:port]`, without the bucket.
    endpoint: String,
    bucket: String,
    region: String,
    virtual_host: bool,
    /// `-o s3.storage_class` (OpenDAL's `default_storage_class`), for callers that write
    /// through both.
    default_storage_class: Option<String>,
    /// The key prefix of the repository: empty, or ending with '/'.
    root: String,
    /// Bounds this client's requests in flight (OpenDAL's own are bounded apart).
    permits: tokio::sync::Semaphore,
    /// Requests sent so far (`requests_sent`), for the cost figures of tests and reports.
    sent: std::sync::atomic::AtomicU64,
    /// `max-keys` of listings; `None`: the server's (1000).
    page_size: Option<String>,
}

/// The answer to one request, read whole.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

/// Path characters S3 wants escaped: everything but unreserved characters and '/'.
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Query characters S3 wants escaped: everything but unreserved characters.
const QUERY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl S3Api {
    /// A client from `location::parse_s3`'s config pairs; `timeout` bounds each request,
    /// `connections` the requests in flight. Without `access_key_id`/`secret_access_key` the
    /// credentials come from the AWS default chain (environment, ~/.aws, instance metadata),
    /// as OpenDAL's s3 service does.
    pub fn new(
        config: &[(String, String)],
        timeout: Duration,
        connections: usize,
    ) -> StorageResult<S3Api> {
        let get = |k: &str| {
            config
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let flag = |k: &str| get(k) == Some("true");
        let bucket = get("bucket")
            .filter(|b| !b.is_empty())
            .ok_or_else(|| StorageError::new(ErrorKind::ConfigInvalid, "s3: no bucket"))?
            .to_string();
        let region = get("region").unwrap_or("us-east-1").to_string();
        let endpoint = normalize_endpoint(get("endpoint"), &region);
        let root = normalize_root(get("root").unwrap_or(""));
        let mut http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(30)));
        if endpoint.starts_with("http://") {
            // No TLS on this endpoint: trust no certificate rather than load the system's
            // (rustls' platform verifier reads and parses every file in /etc/ssl/certs when
            // the client is built, ~290 here, for a client that never verifies one).
            http = http.tls_certs_only([]);
        }
        let http = http.build().map_err(|e| {
            StorageError::new(ErrorKind::Unexpected, "s3: cannot build HTTP client").set_source(e)
        })?;
        let mut provider = {
            let mut builder = DefaultCredentialProvider::builder();
            if flag("disable_config_load") {
                builder = builder.no_env().no_profile();
            }
            if flag("disable_ec2_metadata") {
                builder = builder.no_imds();
            }
            ProvideCredentialChain::new().push(builder.build())
        };
        if let (Some(id), Some(secret)) = (get("access_key_id"), get("secret_access_key")) {
            let mut fixed = reqsign_aws_v4::StaticCredentialProvider::new(id, secret);
            if let Some(token) = get("session_token") {
                fixed = fixed.with_session_token(token);
            }
            provider = provider.push_front(fixed);
        }
        let ctx = Context::new()
            .with_file_read(reqsign_file_read_tokio::TokioFileRead)
            .with_http_send(CredentialHttp::new(timeout))
            .with_env(OsEnv);
        let signer = Signer::new(ctx, provider, RequestSigner::new("s3", &region));
        Ok(S3Api {
            http,
            signer,
            endpoint,
            bucket,
            region,
            virtual_host: flag("enable_virtual_host_style"),
            default_storage_class: get("default_storage_class").map(str::to_string),
            root,
            permits: tokio::sync::Semaphore::new(connections.max(1)),
            sent: std::sync::atomic::AtomicU64::new(0),
            page_size: None,
        })
    }

    /// The storage class of plain writes (`-o s3.storage_class`); `None`: the bucket's.
    pub fn default_storage_class(&self) -> Option<&str> {
        self.default_storage_class.as_deref()
    }

    /// Listings ask for pages of at most `n` keys (tests of the paging, on few objects).
    pub fn with_page_size(mut self, n: u32) -> S3Api {
        self.page_size = Some(n.to_string());
        self
    }

    /// Requests this client has sent (each page of a listing counts).
    pub fn requests_sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The object key of a repository path.
    fn key(&self, path: &str) -> String {
        format!("{}{}", self.root, path.trim_start_matches('/'))
    }

    /// A repository path from an object key; `None` for keys outside the root.
    fn path_of(&self, key: &str) -> Option<String> {
        key.strip_prefix(&self.root).map(str::to_string)
    }

    /// The URL of `key` (empty: the bucket) with `query` (an empty value writes the key alone,
    /// as in `?restore`).
    fn url(&self, key: &str, query: &[(&str, &str)]) -> String {
        let path = utf8_percent_encode(key, KEY_ENCODE).to_string();
        let mut url = if self.virtual_host {
            let (scheme, host) = self
                .endpoint
                .split_once("://")
                .unwrap_or(("https", &self.endpoint));
            format!("{scheme}://{}.{host}/{path}", self.bucket)
        } else if key.is_empty() {
            format!("{}/{}", self.endpoint, self.bucket)
        } else {
            format!("{}/{}/{path}", self.endpoint, self.bucket)
        };
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&utf8_percent_encode(k, QUERY_ENCODE).to_string());
            if !v.is_empty() {
                url.push('=');
                url.push_str(&utf8_percent_encode(v, QUERY_ENCODE).to_string());
            }
        }
        url
    }

    /// Signs and sends one request, reading the whole answer; an error status becomes a
    /// `StorageError` unless `accept` lists it.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
        accept: &[u16],
    ) -> StorageResult<Reply> {
        self.send_body(method, url, headers, body.into(), accept)
            .await
    }

    /// [`Self::send`] with any body (a stream read from a file). The payload is not part of
    /// the signature (`UNSIGNED-PAYLOAD`), so a streamed body needs no second pass to sign.
    async fn send_body(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: reqwest::Body,
        accept: &[u16],
    ) -> StorageResult<Reply> {
        let mut builder = http::Request::builder().method(method).uri(url);
        if let Some(h) = builder.headers_mut() {
            *h = headers;
        }
        let (mut parts, ()) = builder
            .body(())
            .map_err(|e| {
                StorageError::new(ErrorKind::Unexpected, "s3: invalid request").set_source(e)
            })?
            .into_parts();
        self.signer
            .sign(&mut parts, None)
            .await
            .map_err(sign_error)?;
        // reqwest sets Host from the URL (as the signature expects).
        parts.headers.remove(http::header::HOST);
        let _permit = self.permits.acquire().await.map_err(|_| {
            StorageError::new(ErrorKind::Unexpected, "s3: client closed").set_temporary()
        })?;
        self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resp = self
            .http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(transport_error)?;
        let reply = Reply {
            status,
            headers,
            body,
        };
        if (200..300).contains(&status) || accept.contains(&status) {
            Ok(reply)
        } else {
            Err(reply_error(&reply))
        }
    }

    /// PutObject with lock, storage class and tags; `Content-MD5` always (S3 requires it, or a
    /// checksum, with lock headers). Returns the new version's id, if the bucket versions.
    pub async fn put_object(
        &self,
        path: &str,
        bytes: Bytes,
        opts: &PutOptions,
    ) -> StorageResult<Option<String>> {
        let mut headers = put_headers(opts)?;
        insert(&mut headers, "content-md5", &content_md5(&bytes))?;
        let url = self.url(&self.key(path), &[]);
        let reply = self.send(Method::PUT, &url, headers, bytes, &[]).await?;
        Ok(header_str(&reply.headers, "x-amz-version-id").map(str::to_string))
    }
}

/// Bytes of a streamed upload read from disk at a time.
const STREAM_PIECE: usize = 64 << 10;

/// The MD5 (base64, as `Content-MD5` wants it) and length of a file, read in pieces; the
/// file comes back rewound, ready to be sent. Blocking: run it on a blocking thread.
fn file_md5(file: &std::path::Path) -> std::io::Result<(String, u64, std::fs::File)> {
    use std::io::{Read, Seek};
    let mut f = std::fs::File::open(file)?;
    let mut hasher = md5::Md5::new();
    let mut buf = vec![0u8; STREAM_PIECE];
    let mut len = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    f.rewind()?;
    Ok((
        base64::engine::general_purpose::STANDARD.encode(hasher.finalize()),
        len,
        f,
    ))
}

/// A file's bytes as a request body: one blocking thread reads it piece by piece into a
/// channel of two pieces. tokio::fs would hand every 64 KiB read to whichever blocking-pool
/// thread is free: a 4 GiB snapshot to S3 then ran 21-25 threads against 10-11 to local
/// disk, each with its own stack and allocations. The reader stops when the body is dropped
/// (a failed or timed-out request).
fn file_body(mut file: std::fs::File) -> reqwest::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        loop {
            let mut buf = vec![0u8; STREAM_PIECE];
            let piece = match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    Ok(Bytes::from(buf))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = piece.is_err();
            if tx.blocking_send(piece).is_err() || failed {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    reqwest::Body::wrap_stream(stream)
}

/// The headers of a PUT besides its body's: storage class, lock, tags.
fn put_headers(opts: &PutOptions) -> StorageResult<HeaderMap> {
    let mut headers = HeaderMap::new();
    {
        if let Some(class) = &opts.storage_class {
            insert(&mut headers, "x-amz-storage-class", class)?;
        }
        if let Some((mode, until)) = opts.lock {
            insert(
                &mut headers,
                "x-amz-object-lock-mode",
                retention_mode_name(mode),
            )?;
            insert(
                &mut headers,
                "x-amz-object-lock-retain-until-date",
                &iso8601(until),
            )?;
        }
        if let Some(tags) = &opts.tagging {
            insert(&mut headers, "x-amz-tagging", tags)?;
        }
    }
    Ok(headers)
}

impl S3Api {
    /// PutObject of a local file, streamed from disk in pieces (never held whole), with the
    /// same headers as [`Self::put_object`]; `Content-MD5` comes from a first pass over it.
    pub async fn put_object_file(
        &self,
        path: &str,
        file: &std::path::Path,
        opts: &PutOptions,
    ) -> StorageResult<Option<String>> {
        let io = |e: std::io::Error| {
            StorageError::new(ErrorKind::Unexpected, "s3: cannot read a spilled pack").set_source(e)
        };
        let owned = file.to_path_buf();
        let (md5, len, reader) = tokio::task::spawn_blocking(move || file_md5(&owned))
            .await
            .map_err(|e| {
                StorageError::new(ErrorKind::Unexpected, "s3: reading a spilled pack failed")
                    .set_source(e)
            })?
            .map_err(io)?;
        let mut headers = put_headers(opts)?;
        insert(&mut headers, "content-md5", &md5)?;
        insert(&mut headers, "content-length", &len.to_string())?;
        let url = self.url(&self.key(path), &[]);
        let reply = self
            .send_body(Method::PUT, &url, headers, file_body(reader), &[])
            .await?;
        Ok(header_str(&reply.headers, "x-amz-version-id").map(str::to_string))
    }

    /// GetObject of the current version or of `version`, whole or a `range`.
    pub async fn get_object(
        &self,
        path: &str,
        version: Option<&str>,
        range: Option<Range<u64>>,
    ) -> StorageResult<Bytes> {
        let mut headers = HeaderMap::new();
        if let Some(r) = &range {
            if r.is_empty() {
                return Ok(Bytes::new());
            }
            insert(
                &mut headers,
                "range",
                &format!("bytes={}-{}", r.start, r.end - 1),
            )?;
        }
        let query: Vec<(&str, &str)> = version.map(|v| ("versionId", v)).into_iter().collect();
        let url = self.url(&self.key(path), &query);
        let reply = self
            .send(Method::GET, &url, headers, Bytes::new(), &[])
            .await?;
        Ok(reply.body)
    }

    /// HeadObject: size, class, restore state, retention, version.
    pub async fn head_object(
        &self,
        path: &str,
        version: Option<&str>,
    ) -> StorageResult<ObjectHead> {
        let query: Vec<(&str, &str)> = version.map(|v| ("versionId", v)).into_iter().collect();
        let url = self.url(&self.key(path), &query);
        let reply = self
            .send(Method::HEAD, &url, HeaderMap::new(), Bytes::new(), &[])
            .await?;
        Ok(parse_head(&reply.headers))
    }

    /// RestoreObject: a readable copy of an archived object for `days` days.
    pub async fn restore_object(
        &self,
        path: &str,
        days: u32,
        tier: RestoreTier,
    ) -> StorageResult<RestoreRequested> {
        let body = xml::restore_request(days, tier);
        let mut headers = HeaderMap::new();
        insert(&mut headers, "content-md5", &content_md5(body.as_bytes()))?;
        let url = self.url(&self.key(path), &[("restore", "")]);
        let reply = self
            .send(Method::POST, &url, headers, Bytes::from(body), &[409])
            .await?;
        match reply.status {
            200 => Ok(RestoreRequested::AlreadyRestored),
            409 => match xml::parse_error(&reply.body) {
                Some((code, _)) if code == "RestoreAlreadyInProgress" => {
                    Ok(RestoreRequested::AlreadyInProgress)
                }
                _ => Err(reply_error(&reply)),
            },
            _ => Ok(RestoreRequested::Started),
        }
    }

    /// PutObjectRetention: sets the retention of the current version or of `version`.
    /// S3 refuses to shorten a COMPLIANCE retention (and a GOVERNANCE one without bypass).
    pub async fn put_retention(
        &self,
        path: &str,
        version: Option<&str>,
        mode: RetentionMode,
        until_unix_s: i64,
    ) -> StorageResult<()> {
        let body = xml::retention(mode, &iso8601(until_unix_s));
        let mut headers = HeaderMap::new();
        insert(&mut headers, "content-md5", &content_md5(body.as_bytes()))?;
        let mut query = vec![("retention", "")];
        if let Some(v) = version {
            query.push(("versionId", v));
        }
        let url = self.url(&self.key(path), &query);
        self.send(Method::PUT, &url, headers, Bytes::from(body), &[])
            .await?;
        Ok(())
    }

    /// Whether the bucket has Object Lock enabled (GetObjectLockConfiguration).
    pub async fn object_lock_enabled(&self) -> StorageResult<bool> {
        let url = self.url("", &[("object-lock", "")]);
        let reply = self
            .send(Method::GET, &url, HeaderMap::new(), Bytes::new(), &[404])
            .await?;
        if reply.status == 404 {
            return match xml::parse_error(&reply.body) {
                Some((code, _)) if code == "ObjectLockConfigurationNotFoundError" => Ok(false),
                _ => Err(reply_error(&reply)),
            };
        }
        xml::parse_lock_configuration(&reply.body)
    }

    /// CreateBucket, with Object Lock (and so versioning) when `object_lock`; for tests and
    /// setup scripts.
    pub async fn create_bucket(&self, object_lock: bool) -> StorageResult<()> {
        let mut headers = HeaderMap::new();
        if object_lock {
            insert(&mut headers, "x-amz-bucket-object-lock-enabled", "true")?;
        }
        let body = if self.region == "us-east-1" {
            Bytes::new()
        } else {
            Bytes::from(xml::create_bucket(&self.region))
        };
        let url = self.url("", &[]);
        self.send(Method::PUT, &url, headers, body, &[]).await?;
        Ok(())
    }

    /// ListObjectsV2 of every object under `prefix` (relative to the root), with classes.
    pub async fn list_objects(&self, prefix: &str) -> StorageResult<Vec<ListedObject>> {
        let key_prefix = self.key(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", key_prefix.as_str())];
            if let Some(n) = &self.page_size {
                query.push(("max-keys", n.as_str()));
            }
            if let Some(t) = &token {
                query.push(("continuation-token", t.as_str()));
            }
            let url = self.url("", &query);
            let reply = self
                .send(Method::GET, &url, HeaderMap::new(), Bytes::new(), &[])
                .await?;
            let page = xml::parse_list_objects(&reply.body)?;
            out.extend(page.objects.into_iter().filter_map(|mut o| {
                o.path = self.path_of(&o.path)?;
                Some(o)
            }));
            match page.next {
                Some(next) if page.truncated => token = Some(next),
                _ => return Ok(out),
            }
        }
    }

    /// ListObjectVersions of every version and delete marker under `prefix`.
    pub async fn list_versions(&self, prefix: &str) -> StorageResult<Vec<ObjectVersion>> {
        let key_prefix = self.key(prefix);
        let mut out = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut query = vec![("versions", ""), ("prefix", key_prefix.as_str())];
            if let Some(n) = &self.page_size {
                query.push(("max-keys", n.as_str()));
            }
            if let Some((key, version)) = &marker {
                query.push(("key-marker", key.as_str()));
                if !version.is_empty() {
                    query.push(("version-id-marker", version.as_str()));
                }
            }
            let url = self.url("", &query);
            let reply = self
                .send(Method::GET, &url, HeaderMap::new(), Bytes::new(), &[])
                .await?;
            let page = xml::parse_list_versions(&reply.body)?;
            out.extend(page.versions.into_iter().filter_map(|mut v| {
                v.path = self.path_of(&v.path)?;
                Some(v)
            }));
            match page.next {
                Some(next) if page.truncated => marker = Some(next),
                _ => return Ok(out),
            }
        }
    }

    /// DeleteObject of the current version: on a versioned bucket a delete marker, which
    /// never fails on a locked version. A key that is not there is no error (S3 answers 204
    /// either way; some servers say 404 NoSuchKey).
    pub async fn delete_object(&self, path: &str) -> StorageResult<()> {
        let url = self.url(&self.key(path), &[]);
        let reply = self
            .send(Method::DELETE, &url, HeaderMap::new(), Bytes::new(), &[404])
            .await?;
        match reply.status {
            404 if !matches!(xml::parse_error(&reply.body), Some((code, _)) if code == "NoSuchKey") => {
                Err(reply_error(&reply))
            }
            _ => Ok(()),
        }
    }

    /// DeleteObject of one version: permanent. The server refuses a version under retention
    /// (a `PermissionDenied` error whose `service_error` has the server's code).
    pub async fn delete_version(&self, path: &str, version_id: &str) -> StorageResult<()> {
        let url = self.url(&self.key(path), &[("versionId", version_id)]);
        self.send(Method::DELETE, &url, HeaderMap::new(), Bytes::new(), &[])
            .await?;
        Ok(())
    }
}

/// Sends the credential chain's own requests (instance metadata, STS, SSO) with a client of
/// its own, built with the system's trusted certificates on the first such request: the S3
/// client may trust none (an http:// endpoint), and static keys never need this one.
#[derive(Clone, Debug)]
struct CredentialHttp {
    timeout: Duration,
    client: Arc<OnceLock<reqwest::Client>>,
}

impl CredentialHttp {
    fn new(timeout: Duration) -> CredentialHttp {
        CredentialHttp {
            timeout,
            client: Arc::default(),
        }
    }

    fn client(&self) -> reqwest::Result<&reqwest::Client> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let built = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(30)))
            .build()?;
        Ok(self.client.get_or_init(|| built))
    }
}

impl reqsign_core::HttpSend for CredentialHttp {
    async fn http_send(
        &self,
        req: http::Request<Bytes>,
    ) -> reqsign_core::Result<http::Response<Bytes>> {
        let fail = |e: reqwest::Error| {
            reqsign_core::Error::unexpected("credential request failed")
                .with_source(e)
                .set_retryable(true)
        };
        let req = reqwest::Request::try_from(req).map_err(fail)?;
        let resp = self
            .client()
            .map_err(fail)?
            .execute(req)
            .await
            .map_err(fail)?;
        let mut out = http::Response::builder().status(resp.status());
        if let Some(h) = out.headers_mut() {
            *h = resp.headers().clone();
        }
        let body = resp.bytes().await.map_err(fail)?;
        out.body(body).map_err(|e| {
            reqsign_core::Error::unexpected("credential response unreadable").with_source(e)
        })
    }
}

fn normalize_endpoint(endpoint: Option<&str>, region: &str) -> String {
    let e = match endpoint {
        Some(e) if e.starts_with("http://") || e.starts_with("https://") => e.to_string(),
        Some(e) => format!("https://{e}"),
        None => format!("https://s3.{region}.amazonaws.com"),
    };
    e.trim_end_matches('/').to_string()
}

/// "/a/b/" or "a/b" or "/" as the key prefix "a/b/" (or "").
fn normalize_root(root: &str) -> String {
    let r = root.trim_matches('/');
    if r.is_empty() {
        String::new()
    } else {
        format!("{r}/")
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) -> StorageResult<()> {
    let v = HeaderValue::from_str(value).map_err(|e| {
        StorageError::new(
            ErrorKind::Unexpected,
            format!("s3: invalid value for header {name}"),
        )
        .set_source(e)
    })?;
    headers.insert(HeaderName::from_static(name), v);
    Ok(())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Base64 of the MD5 of the body, as `Content-MD5` wants it.
pub fn content_md5(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

/// Seconds since the epoch as ISO 8601 UTC (`2030-01-02T00:00:00Z`), as S3 wants dates.
pub fn iso8601(unix_s: i64) -> String {
    chrono::DateTime::from_timestamp(unix_s, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// ISO 8601 / RFC 3339 (`2030-01-02T00:00:00.000Z`) as seconds since the epoch.
pub fn parse_iso8601(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.timestamp())
}

/// An HTTP date (`Wed, 12 Oct 2009 17:50:00 GMT`) as seconds since the epoch.
pub fn parse_http_date(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc2822(s.trim())
        .ok()
        .map(|t| t.timestamp())
}

/// `x-amz-restore`: `ongoing-request="true"`, or `ongoing-request="false",
/// expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"`.
pub fn parse_restore_header(value: Option<&str>) -> RestoreStatus {
    let Some(v) = value else {
        return RestoreStatus::NotRequested;
    };
    let field = |name: &str| {
        let start = v.find(&format!("{name}=\""))? + name.len() + 2;
        let len = v[start..].find('"')?;
        Some(&v[start..start + len])
    };
    match field("ongoing-request") {
        Some("true") => RestoreStatus::InProgress,
        Some("false") => RestoreStatus::Available {
            expiry_unix_s: field("expiry-date").and_then(parse_http_date),
        },
        _ => RestoreStatus::NotRequested,
    }
}

fn parse_head(headers: &HeaderMap) -> ObjectHead {
    let get = |name| header_str(headers, name);
    let lock = match (
        get("x-amz-object-lock-mode").and_then(parse_retention_mode),
        get("x-amz-object-lock-retain-until-date").and_then(parse_iso8601),
    ) {
        (Some(mode), Some(until)) => Some((mode, until)),
        _ => None,
    };
    ObjectHead {
        size: get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        storage_class: get("x-amz-storage-class").map(str::to_string),
        restore: parse_restore_header(get("x-amz-restore")),
        lock,
        last_modified_unix_s: get("last-modified").and_then(parse_http_date),
        version_id: get("x-amz-version-id")
            .filter(|v| *v != "null")
            .map(str::to_string),
    }
}

fn sign_error(e: reqsign_core::Error) -> StorageError {
    let kind = match e.kind() {
        reqsign_core::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        reqsign_core::ErrorKind::ConfigInvalid => ErrorKind::ConfigInvalid,
        reqsign_core::ErrorKind::RateLimited => ErrorKind::RateLimited,
        _ => ErrorKind::Unexpected,
    };
    let temporary = e.is_retryable();
    StorageError::new(kind, "s3: cannot sign the request (credentials)")
        .set_source(e)
        .with_temporary(temporary)
}

/// A request that got no answer (timeout, refused or dropped connection): worth a retry.
fn transport_error(e: reqwest::Error) -> StorageError {
    let what = if e.is_timeout() {
        "s3: request timed out"
    } else if e.is_connect() {
        "s3: cannot connect"
    } else {
        "s3: request failed"
    };
    StorageError::new(ErrorKind::Unexpected, what)
        .set_source(e)
        .set_temporary()
}

/// An error status as a `StorageError` of the matching kind, with the server's code and
/// message as its source.
fn reply_error(reply: &Reply) -> StorageError {
    let (code, message) = xml::parse_error(&reply.body).unwrap_or_else(|| {
        let reason = http::StatusCode::from_u16(reply.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error");
        (reason.replace(' ', ""), String::new())
    });
    let (kind, temporary) = error_kind(reply.status, &code);
    let detail = S3ServiceError {
        status: reply.status,
        code,
        message,
    };
    StorageError::new(kind, detail.to_string())
        .with_temporary(temporary)
        .set_source(detail)
}

/// The kind of an error answer, and whether a retry may succeed.
fn error_kind(status: u16, code: &str) -> (ErrorKind, bool) {
    match code {
        "NoSuchBucket" => return (ErrorKind::ConfigInvalid, false),
        "SlowDown" | "Throttling" | "RequestLimitExceeded" => {
            return (ErrorKind::RateLimited, true)
        }
        "InternalError" | "RequestTimeout" | "ServiceUnavailable" => {
            return (ErrorKind::Unexpected, true)
        }
        "AccessDenied" | "InvalidObjectState" => return (ErrorKind::PermissionDenied, false),
        _ => {}
    }
    match status {
        403 => (ErrorKind::PermissionDenied, false),
        404 => (ErrorKind::NotFound, false),
        412 => (ErrorKind::ConditionNotMatch, false),
        416 => (ErrorKind::RangeNotSatisfied, false),
        429 => (ErrorKind::RateLimited, true),
        499..=599 => (ErrorKind::Unexpected, true),
        _ => (ErrorKind::Unexpected, false),
    }
}

#[cfg(test)]
mod tests;

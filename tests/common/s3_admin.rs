//! S3 administration through the S3 API, outside ocvault ([`S3Admin`]): what the attacker with
//! the backup host's credentials does, what a bucket lifecycle rule does, what the operator
//! sees. It runs `tests/common/s3_admin.py` (boto3, installed with moto) under a time limit and
//! parses the JSON it prints.

use super::process::output_within;
use serde::Deserialize;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// How long one admin call may take (it makes one request per object it acts on).
pub const ADMIN_LIMIT: Duration = Duration::from_secs(180);

/// An access key pair. Passed to children through the environment only.
#[derive(Clone, Debug)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl S3Credentials {
    /// What the tests sign with while moto's authentication is off (moto accepts any key).
    pub fn test_default() -> S3Credentials {
        S3Credentials {
            access_key_id: "ocvaulttestkey".into(),
            secret_access_key: "ocvault-test-secret-0123456789".into(),
        }
    }

    /// The environment ocvault and boto3 read the credentials from.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                self.secret_access_key.clone(),
            ),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }
}

/// One object of a listing (ListObjectsV2).
#[derive(Clone, Debug, Deserialize)]
pub struct ObjectEntry {
    pub key: String,
    pub size: u64,
    pub storage_class: String,
    pub last_modified: Option<String>,
}

/// One version or delete marker of a version listing (ListObjectVersions).
#[derive(Clone, Debug, Deserialize)]
pub struct VersionEntry {
    pub key: String,
    pub version_id: String,
    pub is_latest: bool,
    pub delete_marker: bool,
    pub size: u64,
    pub storage_class: Option<String>,
    pub last_modified: Option<String>,
}

/// What happened to one object of a delete, overwrite or class change: `ok`, or the S3
/// error code the server refused it with (`AccessDenied` for a locked version).
#[derive(Clone, Debug, Deserialize)]
pub struct Outcome {
    pub key: String,
    pub version_id: Option<String>,
    pub ok: bool,
    pub error: Option<String>,
    #[serde(default)]
    pub delete_marker: bool,
    #[serde(default)]
    pub new_version_id: Option<String>,
}

/// HeadObject of one object (or version).
#[derive(Clone, Debug, Deserialize)]
pub struct HeadInfo {
    pub key: String,
    pub version_id: Option<String>,
    pub ok: bool,
    pub error: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub storage_class: Option<String>,
    /// `GOVERNANCE` or `COMPLIANCE`, none without retention.
    #[serde(default)]
    pub lock_mode: Option<String>,
    /// ISO 8601, none without retention.
    #[serde(default)]
    pub retain_until: Option<String>,
    /// The object's tags (`ocvault-pack=data` on data packs); none when moto will not say
    /// (it refuses GetObjectTagging of a GLACIER object).
    #[serde(default)]
    pub tags: Option<std::collections::BTreeMap<String, String>>,
    /// The `x-amz-restore` header: `ongoing-request="false", expiry-date=...` once thawed.
    #[serde(default)]
    pub restore: Option<String>,
}

impl HeadInfo {
    /// Readable by GET: not in an archive class, or its restored copy is ready.
    pub fn readable(&self) -> bool {
        let cold = matches!(
            self.storage_class.as_deref(),
            Some("GLACIER") | Some("DEEP_ARCHIVE")
        );
        !cold
            || self
                .restore
                .as_deref()
                .is_some_and(|r| r.contains("ongoing-request=\"false\""))
    }
}

impl HeadInfo {
    /// Tagged as a data pack (`ocvault-pack=data`), what a lifecycle rule filters on.
    pub fn is_data_pack(&self) -> bool {
        let tags = self
            .tags
            .as_ref()
            .unwrap_or_else(|| panic!("tags unknown: {self:?}"));
        tags.get("ocvault-pack").map(String::as_str) == Some("data")
    }
}

/// A key, or one version of it, to act on.
#[derive(serde::Serialize)]
struct Target<'a> {
    key: &'a str,
    version_id: Option<&'a str>,
}

/// The admin helper for one bucket of an S3 server.
pub struct S3Admin {
    pub endpoint: String,
    pub bucket: String,
    pub credentials: S3Credentials,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/common/s3_admin.py")
}

fn targets<'a>(keys: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> serde_json::Value {
    let list: Vec<Target> = keys
        .map(|(key, version_id)| Target { key, version_id })
        .collect();
    serde_json::to_value(list).unwrap()
}

fn parse<T: for<'de> Deserialize<'de>>(v: serde_json::Value) -> T {
    let text = v.to_string();
    serde_json::from_value(v).unwrap_or_else(|e| panic!("s3_admin.py printed {text}: {e}"))
}

impl S3Admin {
    /// Runs one action of s3_admin.py (`targets`: the objects it acts on, passed as a JSON
    /// file) within [`ADMIN_LIMIT`]; panics with its output unless it exits 0 with JSON.
    pub fn run(
        &self,
        action: &str,
        args: &[&str],
        targets: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let out = self.try_run(action, args, targets);
        let what = format!("s3_admin.py {action} {args:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{what} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {stdout}"))
    }

    /// [`S3Admin::run`] without judging the outcome: the finished process.
    pub fn try_run(
        &self,
        action: &str,
        args: &[&str],
        targets: Option<serde_json::Value>,
    ) -> std::process::Output {
        let python = super::servers::require("python3", &[], "apt-get install python3");
        let scratch = super::env::scratch_dir("ocvault-s3-admin-");
        let mut cmd = Command::new(python);
        cmd.arg(script())
            .arg(action)
            .args(["--endpoint", &self.endpoint]);
        if !self.bucket.is_empty() {
            cmd.args(["--bucket", &self.bucket]);
        }
        if let Some(t) = targets {
            let file = scratch.path().join("targets.json");
            std::fs::write(&file, t.to_string()).unwrap();
            cmd.arg("--targets").arg(file);
        }
        cmd.args(args)
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .envs(self.credentials.env());
        output_within(&mut cmd, ADMIN_LIMIT)
    }

    /// CreateBucket (with Object Lock, which turns versioning on; or versioning alone).
    pub fn create_bucket(&self, object_lock: bool, versioning: bool) -> serde_json::Value {
        super::servers::assert_valid_bucket_name(&self.bucket);
        let mut args = vec![];
        if object_lock {
            args.push("--object-lock");
        }
        if versioning {
            args.push("--versioning");
        }
        self.run("create-bucket", &args, None)
    }

    /// Current objects under `prefix`, with their storage class.
    pub fn list(&self, prefix: &str) -> Vec<ObjectEntry> {
        parse(self.run("list", &["--prefix", prefix], None))
    }

    /// Every version and delete marker under `prefix`.
    pub fn versions(&self, prefix: &str) -> Vec<VersionEntry> {
        parse(self.run("versions", &["--prefix", prefix], None))
    }

    /// Plain DELETE of each key: on a versioned bucket it adds a delete marker.
    pub fn delete(&self, keys: &[String]) -> Vec<Outcome> {
        let t = targets(keys.iter().map(|k| (k.as_str(), None)));
        parse(self.run("delete", &[], Some(t)))
    }

    /// DELETE ?versionId= of each (key, version): permanent, refused for a locked version.
    pub fn delete_versions(&self, versions: &[(String, String)]) -> Vec<Outcome> {
        let t = targets(versions.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))));
        parse(self.run("delete", &[], Some(t)))
    }

    /// PUT junk over each key (a new version on a versioned bucket).
    pub fn overwrite(&self, keys: &[String]) -> Vec<Outcome> {
        let t = targets(keys.iter().map(|k| (k.as_str(), None)));
        parse(self.run("overwrite", &[], Some(t)))
    }

    /// PUT a small object at each key with COMPLIANCE retention for `days` days.
    pub fn put_locked(&self, keys: &[String], days: u32) -> Vec<Outcome> {
        let t = targets(keys.iter().map(|k| (k.as_str(), None)));
        let days = days.to_string();
        parse(self.run("put-locked", &["--days", &days], Some(t)))
    }

    /// CopyObject of each key onto itself with storage class `class`: a lifecycle transition.
    pub fn set_storage_class(&self, keys: &[String], class: &str) -> Vec<Outcome> {
        let t = targets(keys.iter().map(|k| (k.as_str(), None)));
        parse(self.run("set-class", &["--storage-class", class], Some(t)))
    }

    /// HeadObject of each key (current version).
    pub fn head(&self, keys: &[String]) -> Vec<HeadInfo> {
        let t = targets(keys.iter().map(|k| (k.as_str(), None)));
        parse(self.run("head", &[], Some(t)))
    }

    /// HeadObject of each (key, version).
    pub fn head_versions(&self, versions: &[(String, String)]) -> Vec<HeadInfo> {
        let t = targets(versions.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))));
        parse(self.run("head", &[], Some(t)))
    }
}

//! `backend::s3api::S3Api`, and ocvault repositories on S3 through it, against a real S3
//! server with Object Lock and archive storage classes: moto in server mode (`moto_server`,
//! started here on a free port and killed on drop). A missing moto_server fails the test,
//! never skips it.

mod common;

use bytes::Bytes;
use common::compare::assert_trees_equal;
use common::json::last_json;
use common::trees::{generate_tree, TreeSpec};
use ocvault::backend::lifecycle::initial_retain_until;
use ocvault::backend::s3api::{
    is_cold_object_error, service_error, PutOptions, RestoreRequested, RestoreStatus, RestoreTier,
    RetentionMode, S3Api,
};
use opendal::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A moto server on 127.0.0.1, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server is not installed (pip install 'moto[server]')");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("moto_server exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// OpenDAL/`S3Api` config pairs, as `location::parse_s3` makes them.
    fn config(&self, bucket: &str, root: &str) -> Vec<(String, String)> {
        [
            ("bucket", bucket),
            ("root", root),
            ("region", "us-east-1"),
            ("endpoint", &self.endpoint()),
            ("access_key_id", "testing"),
            ("secret_access_key", "testing"),
            ("disable_config_load", "true"),
            ("disable_ec2_metadata", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn api(moto: &Moto, bucket: &str, root: &str) -> S3Api {
    S3Api::new(&moto.config(bucket, root), Duration::from_secs(30), 4).unwrap()
}

fn operator(moto: &Moto, bucket: &str, root: &str) -> opendal::Operator {
    opendal::install_default();
    opendal::Operator::via_iter("s3", moto.config(bucket, root)).unwrap()
}

/// Waits for the restored copy of an archived object (moto finishes at once; S3 takes hours).
async fn wait_restored(s3: &S3Api, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let head = s3.head_object(path, None).await.unwrap();
        if matches!(head.restore, RestoreStatus::Available { .. }) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "restore never finished: {head:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Compliance lock in the PUT itself: HEAD shows it, permanent deletion of the version is
/// refused, its extension shows on HEAD; a plain DELETE (OpenDAL's) only adds a
/// delete marker, and the locked version still reads by its id.
#[test]
fn compliance_lock_survives_deletes() {
    let moto = Moto::start();
    let rt = runtime();
    rt.block_on(async {
        let s3 = api(&moto, "locked-bucket", "/repo");
        s3.create_bucket(true).await.unwrap();
        assert!(s3.object_lock_enabled().await.unwrap());
        let plain = api(&moto, "plain-bucket", "/");
        plain.create_bucket(false).await.unwrap();
        assert!(!plain.object_lock_enabled().await.unwrap());

        let until = now_s() + 86_400;
        let bytes = Bytes::from_static(b"the repository config");
        let opts = PutOptions {
            lock: Some((RetentionMode::Compliance, until)),
            ..PutOptions::default()
        };
        let version = s3.put_object("config", bytes.clone(), &opts).await.unwrap();
        let version = version.expect("a lock-enabled bucket versions objects");
        let head = s3.head_object("config", None).await.unwrap();
        assert_eq!(head.lock, Some((RetentionMode::Compliance, until)));
        assert_eq!(head.size, bytes.len() as u64);
        assert_eq!(head.version_id.as_deref(), Some(version.as_str()));
        assert_eq!(head.restore, RestoreStatus::NotRequested);

        let refused = s3.delete_version("config", &version).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
        let code = &service_error(&refused).expect("server's code").code;
        assert_eq!(code, "AccessDenied", "{refused}");

        // Extension moves the date. (S3 refuses to shorten a compliance lock; moto 5.2
        // accepts it, so that is not asserted here.)
        s3.put_retention(
            "config",
            Some(&version),
            RetentionMode::Compliance,
            until + 86_400,
        )
        .await
        .unwrap();
        let head = s3.head_object("config", Some(&version)).await.unwrap();
        assert_eq!(head.lock, Some((RetentionMode::Compliance, until + 86_400)));

        // A plain DELETE, as forget and prune send it through OpenDAL.
        operator(&moto, "locked-bucket", "/repo")
            .delete("config")
            .await
            .unwrap();
        let versions = s3.list_versions("").await.unwrap();
        let of_config: Vec<_> = versions.iter().filter(|v| v.path == "config").collect();
        assert_eq!(of_config.len(), 2, "{versions:?}");
        let marker = of_config.iter().find(|v| v.is_delete_marker).unwrap();
        assert!(marker.is_latest);
        let kept = of_config.iter().find(|v| !v.is_delete_marker).unwrap();
        assert_eq!(kept.version_id, version);
        assert!(!kept.is_latest);
        assert_eq!(kept.size, bytes.len() as u64);
        assert!(s3.list_objects("").await.unwrap().is_empty());
        let e = s3.get_object("config", None, None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        let old = s3.get_object("config", Some(&version), None).await.unwrap();
        assert_eq!(old, bytes);
        let part = s3
            .get_object("config", Some(&version), Some(4..14))
            .await
            .unwrap();
        assert_eq!(&part[..], &bytes[4..14]);
        // The delete marker itself is not locked: removing it brings the file back.
        s3.delete_version("config", &marker.version_id)
            .await
            .unwrap();
        assert_eq!(s3.get_object("config", None, None).await.unwrap(), bytes);
    });
}

/// A GLACIER object: listed with its class, unreadable (InvalidObjectState, through S3Api and
/// through OpenDAL) until restore_object, then readable; tags and class set in the PUT.
#[test]
fn glacier_object_reads_after_restore() {
    let moto = Moto::start();
    let rt = runtime();
    rt.block_on(async {
        let s3 = api(&moto, "tiers-bucket", "/repo");
        s3.create_bucket(false).await.unwrap();
        let pack = Bytes::from(vec![7u8; 100_000]);
        let opts = PutOptions {
            storage_class: Some("GLACIER".into()),
            tagging: Some("ocvault-pack=data".into()),
            ..PutOptions::default()
        };
        s3.put_object("data/ab/ab01", pack.clone(), &opts)
            .await
            .unwrap();
        s3.put_object(
            "index/i1",
            Bytes::from_static(b"index"),
            &PutOptions::default(),
        )
        .await
        .unwrap();

        let listed = s3.list_objects("").await.unwrap();
        let classes: Vec<(&str, Option<&str>, u64)> = listed
            .iter()
            .map(|o| (o.path.as_str(), o.storage_class.as_deref(), o.size))
            .collect();
        assert_eq!(
            classes,
            vec![
                ("data/ab/ab01", Some("GLACIER"), 100_000),
                ("index/i1", Some("STANDARD"), 5)
            ]
        );
        assert!(listed
            .iter()
            .all(|o| (o.last_modified_unix_s - now_s()).abs() < 600));
        assert_eq!(s3.list_objects("data/").await.unwrap().len(), 1);

        let e = s3.get_object("data/ab/ab01", None, None).await.unwrap_err();
        assert!(is_cold_object_error(&e), "{e}");
        assert!(!e.is_temporary());
        let op = operator(&moto, "tiers-bucket", "/repo");
        let e = op.read("data/ab/ab01").await.unwrap_err();
        assert!(is_cold_object_error(&e), "OpenDAL: {e}");
        let head = s3.head_object("data/ab/ab01", None).await.unwrap();
        assert_eq!(head.storage_class.as_deref(), Some("GLACIER"));
        assert_eq!(head.restore, RestoreStatus::NotRequested);

        let first = s3
            .restore_object("data/ab/ab01", 1, RestoreTier::Standard)
            .await
            .unwrap();
        assert_eq!(first, RestoreRequested::Started);
        wait_restored(&s3, "data/ab/ab01").await;
        assert_eq!(
            s3.get_object("data/ab/ab01", None, None).await.unwrap(),
            pack
        );
        assert_eq!(op.read("data/ab/ab01").await.unwrap().to_bytes(), pack);
        let again = s3
            .restore_object("data/ab/ab01", 2, RestoreTier::Bulk)
            .await
            .unwrap();
        assert_ne!(again, RestoreRequested::Started);

        let missing = s3.head_object("data/ab/none", None).await.unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound);
    });
}

/// Listings loop over pages: with pages of 2 keys, 5 objects take 3 ListObjectsV2 requests
/// and 7 versions and markers 4 ListObjectVersions requests, and nothing is lost or repeated
/// (a key's versions split across pages included). Every other call is one request.
#[test]
fn listings_page_and_calls_are_one_request() {
    let moto = Moto::start();
    let rt = runtime();
    rt.block_on(async {
        let s3 = api(&moto, "paged-bucket", "/repo").with_page_size(2);
        s3.create_bucket(true).await.unwrap();
        let sent = s3.requests_sent();
        for i in 0..5 {
            let path = format!("index/{i}");
            s3.put_object(&path, Bytes::from(path.clone()), &PutOptions::default())
                .await
                .unwrap();
        }
        assert_eq!(s3.requests_sent() - sent, 5);
        // Outside the root: never listed.
        api(&moto, "paged-bucket", "/other")
            .put_object("index/x", Bytes::new(), &PutOptions::default())
            .await
            .unwrap();

        let sent = s3.requests_sent();
        let listed = s3.list_objects("index/").await.unwrap();
        assert_eq!(s3.requests_sent() - sent, 3);
        let paths: Vec<&str> = listed.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(
            paths,
            ["index/0", "index/1", "index/2", "index/3", "index/4"]
        );

        // index/1 gets a second version, index/3 a delete marker: 7 entries.
        s3.put_object("index/1", Bytes::from_static(b"v2"), &PutOptions::default())
            .await
            .unwrap();
        operator(&moto, "paged-bucket", "/repo")
            .delete("index/3")
            .await
            .unwrap();
        let sent = s3.requests_sent();
        let versions = s3.list_versions("index/").await.unwrap();
        assert_eq!(s3.requests_sent() - sent, 4);
        let mut seen: Vec<(&str, bool, bool)> = versions
            .iter()
            .map(|v| (v.path.as_str(), v.is_latest, v.is_delete_marker))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                ("index/0", true, false),
                ("index/1", false, false),
                ("index/1", true, false),
                ("index/2", true, false),
                ("index/3", false, false),
                ("index/3", true, true),
                ("index/4", true, false),
            ]
        );
        let ids: std::collections::HashSet<&str> =
            versions.iter().map(|v| v.version_id.as_str()).collect();
        assert_eq!(ids.len(), 7);

        let sent = s3.requests_sent();
        s3.head_object("index/0", None).await.unwrap();
        s3.restore_object("index/0", 1, RestoreTier::Standard)
            .await
            .unwrap_err();
        s3.object_lock_enabled().await.unwrap();
        assert_eq!(s3.requests_sent() - sent, 3);
    });
}

const PW: &str = "s3 lock test password";

/// `ocvault` on `s3://BUCKET/repo` of this moto, with its credentials; `opts` adds `-o`s.
fn ocvault(moto: &Moto, bucket: &str, opts: &[&str]) -> assert_cmd::Command {
    let mut c = common::cli::ocvault();
    c.arg("--repo")
        .arg(format!("s3://{bucket}/repo"))
        .arg("-o")
        .arg(format!("s3.endpoint={}", moto.endpoint()))
        .env("OCVAULT_PASSWORD", PW)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .timeout(Duration::from_secs(300));
    for o in opts {
        c.arg("-o").arg(o);
    }
    c
}

fn run_ok(mut cmd: assert_cmd::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn source_tree(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("src");
    generate_tree(
        &src,
        &TreeSpec {
            small_files: 60,
            big_file_bytes: 3 << 20,
            sparse_file_bytes: 0,
            deep_nesting: 4,
            seed: 18,
            ..TreeSpec::default()
        },
    );
    src
}

fn restore_matches(moto: &Moto, bucket: &str, opts: &[&str], src: &std::path::Path) {
    let target = src.parent().unwrap().join(format!("restored-{}", now_ns()));
    let mut cmd = ocvault(moto, bucket, opts);
    cmd.args(["restore", "latest", "--target"]).arg(&target);
    run_ok(cmd);
    assert_trees_equal(src, &target.join("src"));
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A repository created with `--lock-mode compliance --lock-days 1`: every object a restore
/// needs is locked in its PUT until the UTC midnight after a day, markers are not; the
/// server refuses to delete any locked version; after an "attacker" with the same
/// credentials overwrites and deletes every object, `-o s3.original_versions=true` restores
/// the snapshot byte for byte and `check --read-data` passes.
#[test]
fn locked_repository_survives_ransomware() {
    let moto = Moto::start();
    let rt = runtime();
    let bucket = "locked-repo";
    let s3 = api(&moto, bucket, "/repo");
    rt.block_on(s3.create_bucket(true)).unwrap();
    let scratch = common::env::scratch_dir("ocvault-s3lock-");
    let src = source_tree(scratch.path());

    let before = now_s();
    let mut init = ocvault(&moto, bucket, &[]);
    init.args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"])
        .args(["--lock-mode", "compliance", "--lock-days", "1"]);
    run_ok(init);
    let mut snap = ocvault(&moto, bucket, &[]);
    snap.args(["--json", "snapshot"]).arg(&src);
    let id = last_json(&run_ok(snap))["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let after = now_s();

    let versions = rt.block_on(s3.list_versions("")).unwrap();
    let mut locked_prefixes = std::collections::BTreeSet::new();
    let mut locked = Vec::new();
    for v in versions.iter().filter(|v| !v.is_delete_marker) {
        let head = rt
            .block_on(s3.head_object(&v.path, Some(&v.version_id)))
            .unwrap();
        let transient = ["locks/", "prune/", "tmp/"]
            .iter()
            .any(|p| v.path.starts_with(p));
        if transient {
            assert_eq!(head.lock, None, "{} is locked", v.path);
            continue;
        }
        let (mode, until) = head
            .lock
            .unwrap_or_else(|| panic!("{} is not locked", v.path));
        assert_eq!(mode, RetentionMode::Compliance);
        assert!(
            (initial_retain_until(before, 1)..=initial_retain_until(after, 1)).contains(&until)
                && until % 86_400 == 0,
            "{}: retain until {until}",
            v.path
        );
        locked_prefixes.insert(v.path.split('/').next().unwrap().to_string());
        locked.push(v.clone());
    }
    for p in ["config", "keys", "snapshots", "index", "data"] {
        assert!(
            locked_prefixes.contains(p),
            "nothing locked under {p}: {locked_prefixes:?}"
        );
    }
    // Backup markers were written and deleted normally.
    assert!(versions.iter().any(|v| v.path.starts_with("locks/")));
    for v in &locked {
        let e = rt
            .block_on(s3.delete_version(&v.path, &v.version_id))
            .expect_err(&v.path);
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{}: {e}", v.path);
    }

    // The attacker: overwrite some objects, then delete every current one.
    let op = operator(&moto, bucket, "/repo");
    rt.block_on(async {
        for v in locked.iter().filter(|v| v.is_latest).step_by(2) {
            op.write(&v.path, vec![0u8; 100]).await.unwrap();
        }
        for o in s3.list_objects("").await.unwrap() {
            op.delete(&o.path).await.unwrap();
        }
        assert!(s3.list_objects("").await.unwrap().is_empty());
    });
    let gone = ocvault(&moto, bucket, &[])
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(10), "{gone:?}");

    let view = ["s3.original_versions=true"];
    restore_matches(&moto, bucket, &view, &src);
    let mut restore_by_id = ocvault(&moto, bucket, &view);
    let target = scratch.path().join("by-id");
    restore_by_id
        .args(["restore", &id, "--target"])
        .arg(&target);
    run_ok(restore_by_id);
    assert_trees_equal(&src, &target.join("src"));
    let mut check = ocvault(&moto, bucket, &view);
    check.args(["check", "--read-data"]);
    run_ok(check);
}

/// `-o s3.data_storage_class=GLACIER` at init: data packs are PUT as GLACIER, everything
/// else STANDARD; `check` (structure) works with every data pack cold; a restore fails
/// until the packs are restored (RestoreObject), then matches byte for byte.
#[test]
fn glacier_data_packs_restore_after_thaw() {
    let moto = Moto::start();
    let rt = runtime();
    let bucket = "tiered-repo";
    let s3 = api(&moto, bucket, "/repo");
    rt.block_on(s3.create_bucket(false)).unwrap();
    let scratch = common::env::scratch_dir("ocvault-s3tier-");
    let src = source_tree(scratch.path());

    let mut init = ocvault(&moto, bucket, &["s3.data_storage_class=GLACIER"]);
    init.args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"]);
    run_ok(init);
    let mut snap = ocvault(&moto, bucket, &[]);
    snap.arg("snapshot").arg(&src);
    run_ok(snap);

    let listed = rt.block_on(s3.list_objects("")).unwrap();
    let mut cold = Vec::new();
    for o in &listed {
        let class = o.storage_class.as_deref().unwrap_or("STANDARD");
        // Tree packs live under data/ too: only some packs there are data packs.
        if class == "GLACIER" {
            assert!(o.path.starts_with("data/"), "{} is GLACIER", o.path);
            cold.push(o.path.clone());
        } else {
            assert_eq!(class, "STANDARD", "{}", o.path);
        }
    }
    assert!(!cold.is_empty(), "no GLACIER pack in {listed:?}");
    run_ok({
        let mut c = ocvault(&moto, bucket, &[]);
        c.arg("check");
        c
    });

    let target = scratch.path().join("cold-restore");
    let mut restore = ocvault(&moto, bucket, &[]);
    restore.args(["restore", "latest", "--target"]).arg(&target);
    let out = restore.output().unwrap();
    assert!(!out.status.success(), "restore read cold packs: {out:?}");

    rt.block_on(async {
        for path in &cold {
            let r = s3.restore_object(path, 1, RestoreTier::Bulk).await.unwrap();
            assert_eq!(r, RestoreRequested::Started, "{path}");
        }
        for path in &cold {
            wait_restored(&s3, path).await;
        }
    });
    restore_matches(&moto, bucket, &[], &src);
}

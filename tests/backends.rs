//! The same end-to-end suite on every backend: local disk, an S3 server (s3s-fs), an SFTP
//! server (a private sshd) and a WebDAV server (rclone), all on 127.0.0.1. Also the
//! fault-injecting layer, and `copy` between repositories.

mod common;

use common::servers::{self, Server};
use common::*;
use std::path::Path;

const PW: &str = "backend test password";
const DEST_PW: &str = "the copy's own password";

/// A local repository that stands in for a server, so one suite runs on every backend.
fn local() -> Server {
    servers::Server::local(scratch_dir("ocvault-fs-"))
}

fn small_tree(root: &Path, seed: u64) {
    std::fs::create_dir_all(root).unwrap();
    generate_tree(
        root,
        &TreeSpec {
            small_files: 150,
            big_file_bytes: 6 << 20,
            sparse_file_bytes: 4 << 20,
            deep_nesting: 12,
            seed,
            ..TreeSpec::default()
        },
    );
}

fn snapshot(s: &Server, src: &Path) -> String {
    let out = s
        .cmd(PW)
        .args(["--json", "snapshot"])
        .arg(src)
        .assert()
        .success();
    last_json(&out)["snapshot_id"].as_str().unwrap().to_string()
}

fn restore_equals(s: &Server, pw: &str, id: &str, expected: &Path, work: &Path) {
    let target = work.join(format!("restore-{}", rand_suffix()));
    s.cmd(pw)
        .args(["restore", id, "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_trees_equal(expected, &target.join(expected.file_name().unwrap()));
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}", N.fetch_add(1, Ordering::Relaxed))
}

fn init(s: &Server, pw: &str) {
    s.cmd(pw)
        .args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"])
        .assert()
        .success();
}

/// init, snapshot, snapshot again, restore both byte for byte, check --read-data,
/// forget + prune, copy to a local repository and restore from the copy.
fn end_to_end(s: &Server) {
    let work = scratch_dir("ocvault-backends-");
    let src = work.path().join("src");
    small_tree(&src, 11);
    init(s, PW);
    // A second init must refuse, not overwrite.
    s.cmd(PW).args(["init"]).assert().failure();
    let first = snapshot(s, &src);
    let day1 = work.path().join("day1");
    copy_tree(&src, &day1.join("src"));
    mutate_tree(&src, 0.05, 3);
    let second = snapshot(s, &src);
    assert_ne!(first, second);
    restore_equals(s, PW, &first, &day1.join("src"), work.path());
    restore_equals(s, PW, &second, &src, work.path());
    s.cmd(PW).args(["check", "--read-data"]).assert().code(0);

    s.cmd(PW)
        .args(["forget", "--keep-last", "1", "--prune"])
        .assert()
        .success();
    let out = s.cmd(PW).args(["--json", "snapshots"]).assert().success();
    let list = last_json(&out);
    assert_eq!(list.as_array().map(|a| a.len()), Some(1), "{list}");
    s.cmd(PW).args(["check", "--read-data"]).assert().code(0);
    restore_equals(s, PW, &second, &src, work.path());

    // Copy into a local repository with its own password; restore from the copy.
    let dest = local();
    init(&dest, DEST_PW);
    let copy = |json: bool| {
        let mut c = s.cmd(PW);
        if json {
            c.arg("--json");
        }
        let out = c
            .args(["copy", "--all", "--to", &dest.url])
            .env("OCVAULT_TO_PASSWORD", DEST_PW)
            .assert()
            .success();
        last_json(&out)
    };
    let r = copy(true);
    assert_eq!(r["copied"].as_array().unwrap().len(), 1, "{r}");
    assert!(r["blobs_copied"].as_u64().unwrap() > 0, "{r}");
    restore_equals(&dest, DEST_PW, "latest", &src, work.path());
    dest.cmd(DEST_PW)
        .args(["check", "--read-data"])
        .assert()
        .code(0);
    let again = copy(true);
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["blobs_copied"], 0, "{again}");
    assert_eq!(again["blobs_read"], 0, "{again}");
}

#[test]
fn local_disk_end_to_end() {
    end_to_end(&local());
}

#[test]
fn s3_end_to_end() {
    end_to_end(&servers::s3());
}

#[test]
fn sftp_end_to_end() {
    end_to_end(&servers::sftp());
}

#[test]
fn webdav_end_to_end() {
    end_to_end(&servers::webdav());
}

/// `-o fault.*` with fast retries, on a local repository.
fn faulty(s: &Server, opts: &[&str]) -> assert_cmd::Command {
    let mut c = s.cmd(PW);
    c.args(["-o", "retry.delay_ms=1"]);
    for o in opts {
        c.args(["-o", o]);
    }
    c
}

/// The count in the line "ocvault: N <what>" of a run's stderr; 0 without one.
fn reported(stderr: &[u8], what: &str) -> u64 {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("ocvault: ")
                .and_then(|r| r.strip_suffix(what))
                .and_then(|r| r.strip_suffix(' '))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn injected(stderr: &[u8]) -> u64 {
    reported(stderr, "faults injected")
}

/// Files the local writer stored from spilled temporary files (packs built in place).
fn spilled(stderr: &[u8]) -> u64 {
    reported(stderr, "files stored from local temporary files")
}

#[test]
fn ten_percent_faults_are_retried_through() {
    let s = local();
    let work = scratch_dir("ocvault-backends-");
    let src = work.path().join("src");
    small_tree(&src, 21);
    // Small packs, so that restore and check make enough requests to meet faults.
    s.cmd(PW)
        .args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"])
        .args(["--pack-size", "262144"])
        .assert()
        .success();
    let opts = ["fault.all=0.1", "fault.cut=0.5", "fault.seed=7"];
    let out = faulty(&s, &opts)
        .args(["--json", "snapshot"])
        .arg(&src)
        .assert()
        .success();
    assert!(
        injected(&out.get_output().stderr) > 0,
        "no fault was injected"
    );
    // The faults wrapped the local writer that production uses: packs were built in
    // temporary files and stored from them (before, any fault option switched it off).
    assert!(
        spilled(&out.get_output().stderr) > 0,
        "the local spilling writer did not run under faults"
    );
    let target = work.path().join("restored");
    let out = faulty(&s, &["fault.all=0.1", "fault.seed=8"])
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert!(injected(&out.get_output().stderr) > 0);
    assert_trees_equal(&src, &target.join("src"));
    let out = faulty(&s, &["fault.all=0.1", "fault.seed=9"])
        .args(["check", "--read-data"])
        .assert()
        .code(0);
    assert!(injected(&out.get_output().stderr) > 0);
    // And without faults, nothing is amiss: cut writes were rewritten whole.
    s.cmd(PW).args(["check", "--read-data"]).assert().code(0);
}

#[test]
fn total_failure_stops_cleanly_and_damages_nothing() {
    let s = local();
    let work = scratch_dir("ocvault-backends-");
    let src = work.path().join("src");
    small_tree(&src, 31);
    init(&s, PW);
    let first = snapshot(&s, &src);
    let day1 = work.path().join("day1");
    copy_tree(&src, &day1.join("src"));
    mutate_tree(&src, 0.2, 5);
    for opts in [
        &["fault.write=1"][..],
        &["fault.write=1", "fault.cut=1"],
        &["fault.all=1"],
        &["fault.no_space=1"],
    ] {
        let out = faulty(&s, opts)
            .args(["-o", "retry.max=2", "snapshot"])
            .arg(&src)
            .assert()
            .code(1);
        let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        let first_line = err.lines().next().unwrap_or("");
        assert!(first_line.starts_with("ocvault: "), "{err}");
        if opts == ["fault.no_space=1"] {
            assert!(first_line.contains("No space left on device"), "{err}");
        }
        if opts.contains(&"fault.cut=1") {
            // A cut write leaves half a file under its final name (a store without atomic
            // writes): the failed run's own backup marker and log entry. `check` verifies
            // both and names them; nothing else is touched.
            let out = s
                .cmd(PW)
                .args(["--json", "check", "--read-data"])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(4), "{out:?}");
            let report = last_json(&out);
            for d in report["damage"].as_array().unwrap() {
                let object = d["object"].as_str().unwrap();
                assert!(
                    object.starts_with("locks/") || object.starts_with("log/"),
                    "{report:#}"
                );
                std::fs::remove_file(s.dir.path().join("repo").join(object)).unwrap();
            }
        }
        s.cmd(PW).args(["check", "--read-data"]).assert().code(0);
    }
    let out = faulty(&s, &["fault.read=1", "retry.max=1"])
        .args(["restore", &first, "--target"])
        .arg(work.path().join("never"))
        .assert()
        .code(1);
    assert!(!out.get_output().stderr.is_empty());
    // The earlier snapshot is intact, and the next snapshot without faults completes.
    restore_equals(&s, PW, &first, &day1.join("src"), work.path());
    let next = snapshot(&s, &src);
    restore_equals(&s, PW, &next, &src, work.path());
    s.cmd(PW).args(["check", "--read-data"]).assert().code(0);
}

#[test]
fn copy_local_to_s3_then_restore_from_the_copy() {
    let local = local();
    let s3 = servers::s3();
    let work = scratch_dir("ocvault-backends-");
    let src = work.path().join("src");
    small_tree(&src, 41);
    init(&local, PW);
    init(&s3, DEST_PW);
    snapshot(&local, &src);
    mutate_tree(&src, 0.1, 6);
    snapshot(&local, &src);
    let dest_pw = work.path().join("dest-password");
    std::fs::write(&dest_pw, format!("{DEST_PW}\n")).unwrap();
    let copy = || {
        let mut c = local.cmd(PW);
        c.args([
            "--json",
            "copy",
            "--all",
            "--to",
            &s3.url,
            "--to-password-file",
        ])
        .arg(&dest_pw);
        for o in &s3.options {
            c.arg("--to-option").arg(o);
        }
        for (k, v) in &s3.env {
            c.env(k, v);
        }
        last_json(&c.assert().success())
    };
    let r = copy();
    assert_eq!(r["copied"].as_array().unwrap().len(), 2, "{r}");
    restore_equals(&s3, DEST_PW, "latest", &src, work.path());
    s3.cmd(DEST_PW)
        .args(["check", "--read-data"])
        .assert()
        .code(0);
    let again = copy();
    assert_eq!(again["blobs_copied"], 0, "{again}");
    assert_eq!(again["blobs_read"], 0, "{again}");
    assert_eq!(again["skipped"].as_array().unwrap().len(), 2, "{again}");

    // A new snapshot copies only what changed: the earlier copies map the rest.
    mutate_tree(&src, 0.02, 7);
    snapshot(&local, &src);
    let third = copy();
    assert_eq!(third["copied"].as_array().unwrap().len(), 1, "{third}");
    let total_blobs = r["blobs_copied"].as_u64().unwrap();
    assert!(
        third["blobs_read"].as_u64().unwrap() * 4 < total_blobs,
        "incremental copy read too much: {third} vs first {r}"
    );
    restore_equals(&s3, DEST_PW, "latest", &src, work.path());
}

/// `copy` from one account's S3 to another's: the source's credentials in AWS_*, the
/// destination's only in OCVAULT_TO_AWS_*; each server accepts only its own key.
#[test]
fn copy_between_two_s3_accounts_keeps_their_credentials_apart() {
    let src_s3 = servers::s3();
    let dst_s3 = servers::s3_with_credentials("ocvaultdrkey", "ocvault-dr-secret-9876543210");
    assert_ne!(src_s3.env, dst_s3.env);
    let work = scratch_dir("ocvault-backends-");
    let src = work.path().join("src");
    small_tree(&src, 43);
    init(&src_s3, PW);
    init(&dst_s3, DEST_PW);
    let id = snapshot(&src_s3, &src);
    let dest_pw = work.path().join("dest-password");
    std::fs::write(&dest_pw, format!("{DEST_PW}\n")).unwrap();
    // `src_s3.cmd` puts the source's credentials in AWS_*; `to_env` adds the destination's.
    let copy = |to_env: &[(String, String)]| {
        let mut c = src_s3.cmd(PW);
        c.args(["copy", "--all", "--to", &dst_s3.url, "--to-password-file"])
            .arg(&dest_pw);
        for o in &dst_s3.options {
            c.arg("--to-option").arg(o);
        }
        for (k, v) in to_env {
            c.env(k, v);
        }
        c.timeout(std::time::Duration::from_secs(300))
            .output()
            .unwrap()
    };
    let dest_snapshots = || {
        let out = dst_s3
            .cmd(DEST_PW)
            .args(["--json", "snapshots"])
            .assert()
            .success();
        last_json(&out).as_array().unwrap().len()
    };

    // Without the destination's own credentials the source's are sent there: refused.
    let out = copy(&[]);
    assert_one_line_error(
        &out,
        1,
        "backend: destination s3://bucket/repo: config: permission denied",
    );
    assert_eq!(dest_snapshots(), 0);
    // Half a credential set of its own is a usage error naming the missing variable.
    let half = [(
        "OCVAULT_TO_AWS_ACCESS_KEY_ID".to_string(),
        "ocvaultdrkey".to_string(),
    )];
    assert_one_line_error(&copy(&half), 2, "OCVAULT_TO_AWS_SECRET_ACCESS_KEY");
    // The source is as it was: its one snapshot, whole.
    let listed = src_s3
        .cmd(PW)
        .args(["--json", "snapshots"])
        .assert()
        .success();
    assert_eq!(last_json(&listed)[0]["id"], id.as_str());
    src_s3
        .cmd(PW)
        .args(["check", "--read-data"])
        .assert()
        .code(0);

    let own: Vec<(String, String)> = dst_s3
        .env
        .iter()
        .map(|(k, v)| (format!("OCVAULT_TO_{k}"), v.clone()))
        .collect();
    let out = copy(&own);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dest_snapshots(), 1);
    restore_equals(&dst_s3, DEST_PW, "latest", &src, work.path());

    // Or a named profile in a credentials file of the destination's own.
    let credentials = work.path().join("aws-credentials");
    std::fs::write(
        &credentials,
        "[dr-account]\naws_access_key_id = ocvaultdrkey\n\
         aws_secret_access_key = ocvault-dr-secret-9876543210\n",
    )
    .unwrap();
    mutate_tree(&src, 0.1, 44);
    snapshot(&src_s3, &src);
    let by_profile = [
        ("OCVAULT_TO_AWS_PROFILE", "dr-account".to_string()),
        (
            "OCVAULT_TO_AWS_SHARED_CREDENTIALS_FILE",
            credentials.display().to_string(),
        ),
        ("OCVAULT_TO_AWS_REGION", "us-east-1".to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let out = copy(&by_profile);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dest_snapshots(), 2);
    restore_equals(&dst_s3, DEST_PW, "latest", &src, work.path());
    dst_s3
        .cmd(DEST_PW)
        .args(["check", "--read-data"])
        .assert()
        .code(0);
}

#[test]
fn sftp_strict_known_hosts_refuses_an_unknown_host() {
    let s = servers::sftp();
    let mut c = s.cmd(PW);
    c.args(["-o", "sftp.known_hosts=strict", "snapshots"]);
    let out = c.assert().code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// Asserts that no ssh master of this server is left, allowing a moment for one that is
/// being told to exit.
fn assert_no_ssh_master(s: &Server, after: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !servers::ssh_masters(s.port).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let left = servers::ssh_masters(s.port);
    assert!(left.is_empty(), "ssh masters left after {after}: {left:?}");
}

/// Every way an SFTP command ends closes its ssh sessions: success, a wrong password, a usage
/// error, a run whose storage fails, `copy`, and SIGTERM in the middle of a snapshot.
#[test]
fn sftp_sessions_are_closed_on_every_exit_path() {
    let s = servers::sftp();
    let work = scratch_dir("ocvault-backends-");
    let src = work.path().join("src");
    small_tree(&src, 51);
    init(&s, PW);
    assert_no_ssh_master(&s, "init");
    snapshot(&s, &src);
    assert_no_ssh_master(&s, "snapshot");
    s.cmd("not the password").arg("snapshots").assert().code(12);
    assert_no_ssh_master(&s, "a wrong password");
    s.cmd(PW)
        .args(["restore", "ffffffff", "--target"])
        .arg(work.path().join("never"))
        .assert()
        .code(2);
    assert_no_ssh_master(&s, "an unknown snapshot id");
    s.cmd(PW)
        .args(["-o", "fault.write=1", "-o", "retry.max=1", "snapshot"])
        .arg(&src)
        .assert()
        .code(1);
    assert_no_ssh_master(&s, "failed writes");
    let dest = local();
    init(&dest, DEST_PW);
    s.cmd(PW)
        .args(["copy", "--all", "--to", &dest.url])
        .env("OCVAULT_TO_PASSWORD", DEST_PW)
        .assert()
        .success();
    assert_no_ssh_master(&s, "copy");

    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("ocvault"));
    c.arg("--repo").arg(&s.url).env("OCVAULT_PASSWORD", PW);
    for o in &s.options {
        c.arg("-o").arg(o);
    }
    let mut child = c
        .args(["snapshot", "--stdin", "--stdin-filename", "endless"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut rng = Rng::new(3);
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..4096 {
            rng.fill(&mut buf);
            if stdin.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let started = std::time::Instant::now();
    while servers::ssh_masters(s.port).is_empty() {
        assert!(started.elapsed().as_secs() < 60, "no ssh session started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    writer.join().unwrap();
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert_no_ssh_master(&s, "SIGTERM");
    s.cmd(PW).arg("check").assert().code(0);
    assert_no_ssh_master(&s, "check");
}

/// Several hosts writing into one bucket at once: every snapshot restores, check passes.
#[test]
fn concurrent_writers_into_one_s3_bucket() {
    let s3 = servers::s3();
    init(&s3, PW);
    let work = scratch_dir("ocvault-backends-");
    let trees: Vec<_> = (0..3)
        .map(|i| {
            let src = work.path().join(format!("src{i}"));
            small_tree(&src, 100 + i);
            src
        })
        .collect();
    let children: Vec<_> = trees
        .iter()
        .map(|src| {
            let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("ocvault"));
            c.arg("--repo").arg(&s3.url).env("OCVAULT_PASSWORD", PW);
            for o in &s3.options {
                c.arg("-o").arg(o);
            }
            c.envs(s3.env.iter().map(|(k, v)| (k, v)));
            c.args(["--json", "snapshot"]).arg(src);
            c.stdout(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let ids: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success());
            last_json(&out)["snapshot_id"].as_str().unwrap().to_string()
        })
        .collect();
    for (id, src) in ids.iter().zip(&trees) {
        restore_equals(&s3, PW, id, src, work.path());
    }
    s3.cmd(PW).args(["check", "--read-data"]).assert().code(0);
}

/// The persistent metadata cache on S3: a snapshot after another one downloads no index file
/// and no snapshot (the first command cached what it wrote); a fresh cache downloads them
/// (the counters count); a cached file that was tampered with is detected and downloaded
/// again, the restore staying byte for byte; `--no-cache` caches nothing; and a snapshot
/// that a `forget` through another cache removed is dropped from this cache at the next
/// listing.
#[test]
fn s3_metadata_cache_spares_downloads() {
    let s = servers::s3();
    let work = scratch_dir("ocvault-cache-");
    let src = work.path().join("src");
    small_tree(&src, 21);
    let cache = work.path().join("cache");
    let cmd = |cache: &Path| {
        let mut c = s.cmd(PW);
        c.env("OCVAULT_CACHE_DIR", cache)
            .timeout(std::time::Duration::from_secs(300));
        c
    };
    cmd(&cache).arg("init").assert().success();
    let downloads = |out: &serde_json::Value, what: &str| -> u64 {
        out["storage_downloads"][what]
            .as_u64()
            .unwrap_or_else(|| panic!("no storage_downloads.{what} in {out}"))
    };
    let snap = |cache: &Path, extra: &[&str]| {
        let out = cmd(cache)
            .args(extra)
            .args(["--json", "snapshot"])
            .arg(&src)
            .assert()
            .success();
        last_json(&out)
    };
    snap(&cache, &[]);
    mutate_tree(&src, 0.05, 5);
    let second = snap(&cache, &[]);
    assert_eq!(downloads(&second, "index_downloads"), 0, "{second}");
    assert_eq!(downloads(&second, "snapshot_downloads"), 0, "{second}");
    assert!(downloads(&second, "cache_hits") >= 2, "{second}");
    let index_files = std::fs::read_dir(
        cache
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("metadata/index"),
    )
    .unwrap()
    .count();
    assert_eq!(index_files, 2, "one index file per snapshot, both cached");

    // A fresh cache must download both index files and both snapshots.
    let fresh = work.path().join("fresh");
    let third = snap(&fresh, &[]);
    assert_eq!(downloads(&third, "index_downloads"), 2, "{third}");
    assert_eq!(downloads(&third, "snapshot_downloads"), 2, "{third}");
    // --no-cache keeps nothing.
    let none = work.path().join("none");
    snap(&none, &["--no-cache"]);
    assert!(!none.exists() || walk(&none).is_empty());

    // Tamper with every cached file: each is detected by its name and downloaded again.
    for rel in walk(&cache) {
        let p = cache.join(&rel);
        if p.is_file() && rel.to_string_lossy().contains("/metadata/") {
            let mut b = std::fs::read(&p).unwrap();
            b[0] ^= 0xff;
            std::fs::write(&p, b).unwrap();
        }
    }
    // Still two index files (the later snapshots added no data): both tampered, both
    // downloaded again; four snapshots, two tampered and two written through other caches.
    let fourth = snap(&cache, &[]);
    assert_eq!(downloads(&fourth, "index_downloads"), 2, "{fourth}");
    assert_eq!(downloads(&fourth, "snapshot_downloads"), 4, "{fourth}");
    let target = work.path().join("restored");
    cmd(&cache)
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_trees_equal(&src, &target.join("src"));

    // forget through the fresh cache; this cache drops the snapshots it no longer lists.
    cmd(&fresh)
        .args(["forget", "--keep-last", "1"])
        .assert()
        .success();
    cmd(&cache).arg("snapshots").assert().success();
    let snaps = std::fs::read_dir(
        cache
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("metadata/snapshots"),
    )
    .unwrap()
    .count();
    assert_eq!(snaps, 1, "forgotten snapshots stay in the cache");
}

/// Peak resident memory (VmHWM) of `cmd` fed `bytes` pseudo-random bytes on standard input,
/// sampled from /proc while it runs (the last sample before it exits holds the peak).
/// The storage of an s3:// repository (every request through ocvault's own S3 client):
/// whole and ranged reads, a listing of a folder that leaves out a sibling whose name only
/// starts the same, sizes from listings and from HEAD, a missing file as NotFound, and a
/// delete that is idempotent.
#[test]
fn s3_storage_reads_lists_stats_and_deletes() {
    use ocvault::backend::{location::StorageEnv, Backend, BackendSettings, ObjectClass};
    let s3 = servers::s3();
    let settings = BackendSettings {
        options: s3.options.clone(),
        env: StorageEnv::Own(s3.env.iter().cloned().collect()),
        no_cache: true,
        ..BackendSettings::default()
    };
    let b = Backend::open_with(&s3.url, &settings, true).unwrap();
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    b.write("locks/a", bytes.clone(), ObjectClass::Transient)
        .unwrap();
    b.write("locksmith/b", vec![1, 2, 3], ObjectClass::Transient)
        .unwrap();
    assert_eq!(b.read("locks/a").unwrap(), bytes);
    assert_eq!(
        b.read_range("locks/a", 99_990, 10).unwrap(),
        &bytes[99_990..]
    );
    assert_eq!(
        b.list_prefix("locks/").unwrap(),
        vec![("locks/a".to_string(), 100_000)]
    );
    assert_eq!(
        b.list_prefix("locks").unwrap(),
        vec![("locks/a".to_string(), 100_000)]
    );
    assert_eq!(b.list_prefix("").unwrap().len(), 2);
    assert_eq!(b.size("locksmith/b").unwrap(), 3);
    assert!(b.modified_ns("locks/a").unwrap().is_some());
    assert!(!b.exists("locks/none").unwrap());
    let e = b.read("locks/none").unwrap_err();
    assert!(e.to_string().contains("locks/none"), "{e}");
    b.delete("locks/a").unwrap();
    b.delete("locks/a").unwrap();
    assert!(b.list_prefix("locks/").unwrap().is_empty());
    assert!(!b.exists("locks/a").unwrap());
}

fn peak_rss_kib(mut cmd: std::process::Command, bytes: u64) -> u64 {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut rng = Rng::new(77);
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..bytes >> 20 {
            rng.fill(&mut buf);
            stdin.write_all(&buf).unwrap();
        }
    });
    let hwm = || -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let mut peak = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "snapshot did not finish"
        );
        peak = peak.max(hwm().unwrap_or(0));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    feeder.join().unwrap();
    assert!(child.wait().unwrap().success());
    peak
}

/// Packs for S3 are built in a temporary file and streamed from it: a snapshot of a 768 MiB
/// (`OCVAULT_S3_STREAM_MIB`) stream to S3 peaks within 10% of the same snapshot to local disk, plus 4 MiB for the HTTP
/// client's own buffers and TLS state (a fixed cost, about 3 MiB here: 8-11% of a ~28 MiB
/// peak at this size). Before, it held up to three 16 MiB packs in memory: +45 MiB. It leaves
/// no temporary file behind.
#[test]
fn s3_snapshot_memory_matches_local_disk() {
    let s3 = servers::s3();
    let disk = local();
    init(&s3, PW);
    init(&disk, PW);
    let run = |s: &Server| {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("ocvault"));
        c.arg("--repo").arg(&s.url).env("OCVAULT_PASSWORD", PW);
        for o in &s.options {
            c.arg("-o").arg(o);
        }
        c.envs(s.env.iter().map(|(k, v)| (k, v)));
        c.env("TMPDIR", s.dir.path());
        c.args(["-q", "snapshot", "--stdin"]);
        c
    };
    // OCVAULT_S3_STREAM_MIB=4096 for the issue's 4 GB figure (minutes, not run by CI).
    let mib: u64 = std::env::var("OCVAULT_S3_STREAM_MIB").map_or(768, |v| v.parse().unwrap());
    let bytes = mib << 20;
    let local_kib = peak_rss_kib(run(&disk), bytes);
    let s3_kib = peak_rss_kib(run(&s3), bytes);
    let spill = s3.dir.path().join("ocvault-spill/tmp");
    assert!(
        !spill.exists() || std::fs::read_dir(&spill).unwrap().next().is_none(),
        "temporary pack files left in {}",
        spill.display()
    );
    eprintln!("peak RSS: local {local_kib} KiB, s3 {s3_kib} KiB");
    assert!(
        s3_kib * 10 <= local_kib * 11 + 4096 * 10,
        "S3 snapshot peaked at {s3_kib} KiB, local at {local_kib} KiB"
    );
    s3.cmd(PW).args(["check", "--read-data"]).assert().code(0);
}

/// With no keys in the environment, s3:// takes them from the AWS credential chain: here the
/// container endpoint of ECS and Fargate (`AWS_CONTAINER_CREDENTIALS_FULL_URI`), served on
/// 127.0.0.1. The chain's requests have a client of their own: the one for an http:// S3
/// endpoint trusts no certificate.
#[test]
fn s3_credentials_from_the_container_endpoint() {
    use std::io::{BufRead, BufReader, Write};
    let s3 = servers::s3();
    let var = |k: &str| s3.env.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let (key, secret) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}/creds", listener.local_addr().unwrap());
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let body = format!(
                r#"{{"AccessKeyId":"{key}","SecretAccessKey":"{secret}","Token":"session-token","Expiration":"2099-01-01T00:00:00Z"}}"#
            );
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let home = scratch_dir("ocvault-container-creds-");
    let cmd = || {
        let mut c = ocvault();
        c.arg("--repo").arg(&s3.url).env("OCVAULT_PASSWORD", PW);
        for o in &s3.options {
            c.arg("-o").arg(o);
        }
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
        ] {
            c.env_remove(k);
        }
        c.env("AWS_REGION", "us-east-1")
            .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("HOME", home.path())
            .timeout(std::time::Duration::from_secs(120));
        c
    };
    cmd()
        .args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"])
        .assert()
        .success();
    let src = home.path().join("src");
    small_tree(&src, 5);
    cmd().arg("snapshot").arg(&src).assert().success();
    let out = home.path().join("out");
    cmd()
        .args(["restore", "latest", "--target"])
        .arg(&out)
        .assert()
        .success();
    assert_trees_equal(&src, &out.join("src"));
    assert!(served.load(std::sync::atomic::Ordering::Relaxed) >= 3);
}

//! Prune beside backups and other prunes whatever the hosts' clocks say: skewed clocks on the
//! backup or the prune side (libfaketime), backups and prunes paused past the staleness
//! limit (SIGSTOP), overlapping prunes, on local disk and on S3 (s3s-fs). Every case ends
//! with `check --read-data` passing and every snapshot restoring byte for byte.

mod common;

use common::servers::{self, Server};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "clock test password";

fn local() -> Server {
    Server::local(scratch_dir("ocvault-clock-"))
}

/// `ocvault` for `server`, under `faketime -f SKEW` when a skew is given, with the marker
/// staleness limit set to `stale` seconds when given.
fn cmd(server: &Server, skew: Option<&str>, stale: Option<u32>) -> Command {
    let bin = assert_cmd::cargo::cargo_bin("ocvault");
    let mut c = match skew {
        Some(s) => {
            let faketime = servers::require("faketime", &[], "apt-get install faketime");
            let mut c = Command::new(faketime);
            c.args(["-f", s]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OCVAULT_") {
            c.env_remove(k);
        }
    }
    c.arg("--repo").arg(&server.url);
    for o in &server.options {
        c.arg("-o").arg(o);
    }
    for (k, v) in &server.env {
        c.env(k, v);
    }
    c.env("OCVAULT_PASSWORD", PASSWORD);
    if let Some(s) = stale {
        c.env("OCVAULT_STALE_AFTER_SECS", s.to_string());
    }
    c.stdin(Stdio::null());
    c
}

/// Runs to the end within two minutes; a hang fails the test.
fn run(mut c: Command) -> Output {
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(120))
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("command still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn init(server: &Server) {
    let mut c = cmd(server, None, None);
    c.args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"]);
    ok(&run(c), "init");
}

fn snapshot(server: &Server, stale: Option<u32>, args: &[&str]) -> String {
    let mut c = cmd(server, None, stale);
    c.args(["--json", "snapshot"]).args(args);
    let out = run(c);
    ok(&out, "snapshot");
    last_json(&out)["snapshot_id"].as_str().unwrap().to_string()
}

fn forget(server: &Server, id: &str) {
    let mut c = cmd(server, None, None);
    c.args(["forget", id]);
    ok(&run(c), "forget");
}

fn prune_json(
    server: &Server,
    skew: Option<&str>,
    stale: Option<u32>,
    args: &[&str],
) -> serde_json::Value {
    let mut c = cmd(server, skew, stale);
    c.args(["--json", "prune"]).args(args);
    let out = run(c);
    ok(&out, "prune");
    last_json(&out)
}

fn assert_intact(server: &Server) {
    let mut c = cmd(server, None, None);
    c.args(["check", "--read-data"]);
    ok(&run(c), "check --read-data");
}

/// Restores `id` and compares the file `name` with `expected`.
fn assert_restores(server: &Server, id: &str, name: &str, expected: &Path) {
    let target = server.dir.path().join(format!("restore-{}", &id[..8]));
    let mut c = cmd(server, None, None);
    c.args(["restore", id, "--target"]).arg(&target);
    ok(&run(c), "restore");
    let got = walk_file(&target, name);
    assert_eq!(
        hash_file(&got),
        hash_file(expected),
        "restored {name} differs from the original"
    );
    std::fs::remove_dir_all(&target).unwrap();
}

fn walk_file(root: &Path, name: &str) -> PathBuf {
    walk(root)
        .into_iter()
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .find(|p| p.file_name().is_some_and(|n| n == name) && p.is_file())
        .unwrap_or_else(|| panic!("{name} not restored under {}", root.display()))
}

fn source(server: &Server, seed: u64) -> (PathBuf, PathBuf) {
    let src = server.dir.path().join(format!("src-{seed}"));
    std::fs::create_dir_all(&src).unwrap();
    let file = src.join("f");
    random_file(&file, 3 << 20, seed);
    (src, file)
}

/// The reproduction: a snapshot is forgotten, so its packs are unused; a backup of the
/// same data starts (dedups against them) and runs 6 s; a prune runs 2.5 s into it. With
/// either side's clock skewed the backup must still end in a snapshot that restores.
fn backup_beside_prune(server: &Server, backup_skew: Option<&str>, prune_skew: Option<&str>) {
    init(server);
    let (src, file) = source(server, 7);
    let first = snapshot(server, None, &[src.to_str().unwrap()]);
    forget(server, &first);
    let mut b = cmd(server, backup_skew, None);
    b.args([
        "--json",
        "snapshot",
        "--command-shell",
        "--command",
        "sleep 6",
    ])
    .args(["--stdin-filename", "x"])
    .arg(&src)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let backup = b.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let report = prune_json(server, prune_skew, None, &[]);
    let out = wait_output(backup, Duration::from_secs(120));
    ok(&out, "backup beside prune");
    let id = last_json(&out)["snapshot_id"].as_str().unwrap().to_string();
    eprintln!(
        "backup skew {backup_skew:?}, prune skew {prune_skew:?}: prune deleted {} packs, {} marks pending",
        report["packs_deleted"], report["marks_pending"]
    );
    assert_intact(server);
    assert_restores(server, &id, "f", &file);
    // Once the backup has ended, its data is used and nothing else is: a second prune with
    // the same skew deletes only what no snapshot holds.
    prune_json(server, prune_skew, None, &[]);
    assert_intact(server);
    assert_restores(server, &id, "f", &file);
}

macro_rules! skew_cases {
    ($($name:ident: $backup:expr, $prune:expr;)*) => {$(
        #[test]
        fn $name() {
            backup_beside_prune(&local(), $backup, $prune);
        }
    )*};
}

skew_cases! {
    backup_5s_ahead: Some("+5"), None;
    backup_5s_behind: Some("-5"), None;
    backup_10min_ahead: Some("+10m"), None;
    backup_10min_behind: Some("-10m"), None;
    prune_5s_ahead: None, Some("+5");
    prune_5s_behind: None, Some("-5");
    prune_10min_ahead: None, Some("+10m");
    prune_10min_behind: None, Some("-10m");
}

#[test]
fn s3_backup_and_prune_skewed_both_ways() {
    // Signatures carry the client's time; s3s-fs accepts 15 minutes of skew, as AWS does.
    for (b, p) in [
        (Some("+5"), None),
        (Some("-10m"), None),
        (Some("+10m"), None),
        (None, Some("-10m")),
        (None, Some("+10m")),
        (Some("-5"), Some("+5")),
    ] {
        let server = servers::s3();
        backup_beside_prune(&server, b, p);
    }
}

/// Ends a process this test may have left stopped (SIGSTOP) when an assertion fails, so a
/// failed run leaves nothing behind.
struct EndOnPanic(u32);

impl Drop for EndOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let pid = self.0.to_string();
            let _ = Command::new("kill").args(["-CONT", &pid]).status();
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// A backup paused (SIGSTOP) past the staleness limit while two prunes run: the first takes
/// its markers away, the second deletes the packs it was going to point to. Resumed, the
/// backup must fail with one clear line and save no snapshot; a new backup then works.
fn paused_backup(server: &Server, stale: u32) {
    init(server);
    let (src, file) = source(server, 11);
    let first = snapshot(server, Some(stale), &[src.to_str().unwrap()]);
    forget(server, &first);
    let mut b = cmd(server, None, Some(stale));
    b.args([
        "--json",
        "snapshot",
        "--command-shell",
        "--command",
        "sleep 2",
    ])
    .args(["--stdin-filename", "x"])
    .arg(&src)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let backup = b.spawn().unwrap();
    let _end = EndOnPanic(backup.id());
    std::thread::sleep(Duration::from_millis(1200));
    signal(&backup, "-STOP");
    std::thread::sleep(Duration::from_secs(stale as u64 + 3));
    let p1 = prune_json(server, None, Some(stale), &[]);
    let p2 = prune_json(server, None, Some(stale), &[]);
    let deleted = p1["packs_deleted"].as_u64().unwrap() + p2["packs_deleted"].as_u64().unwrap();
    assert!(
        deleted > 0,
        "the forgotten snapshot's packs are deleted: {p1} {p2}"
    );
    signal(&backup, "-CONT");
    let out = wait_output(backup, Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "resumed backup: {err}");
    assert!(err.contains("lost its backup marker"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let mut c = cmd(server, None, None);
    c.args(["--json", "snapshots"]);
    let list: serde_json::Value = serde_json::from_slice(&run(c).stdout).unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        0,
        "no snapshot saved: {list}"
    );
    assert_intact(server);
    let id = snapshot(server, Some(stale), &[src.to_str().unwrap()]);
    assert_restores(server, &id, "f", &file);
    assert_intact(server);
}

#[test]
fn paused_backup_fails_cleanly_local() {
    paused_backup(&local(), 3);
}

#[test]
fn paused_backup_fails_cleanly_s3() {
    // s3s-fs reports modification times to the second.
    paused_backup(&servers::s3(), 4);
}

/// A prune paused while a second prune forgets V and deletes its pack: the first must not
/// bring the deleted pack back into the index (which made a later backup of V's content add
/// nothing and its restore fail).
fn paused_prune(server: &Server, stale: u32) {
    init(server);
    let (v_src, v_file) = source(server, 21);
    let (w_src, _) = source(server, 22);
    let v = snapshot(server, Some(stale), &[v_src.to_str().unwrap()]);
    snapshot(server, Some(stale), &[w_src.to_str().unwrap()]);
    // Every storage operation of the first prune takes 150 ms, so the pause lands mid-prune.
    let mut p = cmd(server, None, Some(stale));
    p.args(["-o", "fault.latency_ms=150", "prune", "--max-unused", "0%"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let first = p.spawn().unwrap();
    let _end = EndOnPanic(first.id());
    std::thread::sleep(Duration::from_millis(1500));
    signal(&first, "-STOP");
    std::thread::sleep(Duration::from_secs(stale as u64 + 2));
    let mut c = cmd(server, None, Some(stale));
    c.args(["forget", &v, "--prune", "--max-unused", "100%"]);
    ok(&run(c), "forget V --prune");
    prune_json(server, None, Some(stale), &["--max-unused", "100%"]);
    signal(&first, "-CONT");
    let out = wait_output(first, Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("lost its backup marker"),
        "paused prune: {:?} {err}",
        out.status
    );
    assert_intact(server);
    // V's content again: it must be stored anew (its pack is gone) and restore.
    let again = snapshot(server, Some(stale), &[v_src.to_str().unwrap()]);
    assert_restores(server, &again, "f", &v_file);
    assert_intact(server);
}

#[test]
fn paused_prune_beside_second_prune_local() {
    paused_prune(&local(), 3);
}

#[test]
fn paused_prune_beside_second_prune_s3() {
    paused_prune(&servers::s3(), 4);
}

/// Backups of a changing tree in a loop beside two loops of prunes, one of which forgets, on
/// hosts whose clocks are 10 minutes off in either direction. `OCVAULT_STRESS_SECS` sets the
/// duration (default 30).
#[test]
fn overlapping_prunes_beside_backups() {
    let secs = env_num("OCVAULT_STRESS_SECS", 30);
    let repo = TestRepo::new();
    init_small_packs(&repo, 262_144);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    generate_tree(
        &src,
        &TreeSpec {
            small_files: 60,
            big_file_bytes: 1 << 20,
            sparse_file_bytes: 0,
            deep_nesting: 3,
            ..TreeSpec::default()
        },
    );
    let states = repo.path("states");
    std::fs::create_dir_all(&states).unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    // The two prune hosts' clocks are 10 minutes ahead and 10 minutes behind the backups'.
    let prune_loop = |skew: &str, args: &'static [&'static str]| {
        let mut n = 0u64;
        while Instant::now() < deadline {
            let mut c = Command::new(servers::require(
                "faketime",
                &[],
                "apt-get install faketime",
            ));
            c.args(["-f", skew])
                .arg(assert_cmd::cargo::cargo_bin("ocvault"));
            c.arg("--repo").arg(&repo.repo);
            c.env("OCVAULT_PASSWORD", &repo.password)
                .env_remove("OCVAULT_STALE_AFTER_SECS");
            let out = c.args(args).stdin(Stdio::null()).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() || err.contains("no snapshot"),
                "{args:?} failed: {err}"
            );
            n += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        n
    };
    let (backups, forgets, prunes) = std::thread::scope(|s| {
        let b = s.spawn(|| {
            let mut n = 0u64;
            while Instant::now() < deadline {
                mutate_tree(&src, 0.2, n);
                let id = snapshot_id(&repo, &[], &src);
                copy_tree(&src, &states.join(&id));
                n += 1;
            }
            n
        });
        let f = s.spawn(|| {
            prune_loop(
                "-10m",
                &[
                    "forget",
                    "--keep-last",
                    "2",
                    "--prune",
                    "--max-unused",
                    "0%",
                ],
            )
        });
        let p = s.spawn(|| prune_loop("+10m", &["prune", "--max-unused", "0%"]));
        (b.join().unwrap(), f.join().unwrap(), p.join().unwrap())
    });
    eprintln!("{backups} backups, {forgets} forget --prune and {prunes} prune runs in {secs} s");
    assert!(backups >= 3 && forgets >= 3 && prunes >= 3);
    repo.cmd()
        .args(["prune", "--max-unused", "0%"])
        .assert()
        .success();
    repo.cmd().args(["check", "--read-data"]).assert().code(0);
    let out = repo.cmd().args(["--json", "snapshots"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!list.as_array().unwrap().is_empty());
    for snap in list.as_array().unwrap() {
        let id = snap["id"].as_str().unwrap();
        restore_and_compare(&repo, id, &states.join(id), "src");
    }
}

/// `rewrite` beside `forget --prune`: each round takes a snapshot and rewrites it without one
/// file, so every rewritten snapshot has the same new root tree, which rewrite finds in the
/// index (written by the previous round) instead of writing it. Meanwhile the other loop
/// forgets all but the newest snapshot and prunes: when the newest is the not yet rewritten
/// one, the tree's only user is gone and its pack is deleted. A rewrite that loaded the index
/// before then and holds no backup marker saves a snapshot pointing at the deleted tree.
/// `OCVAULT_STRESS_SECS` sets the duration (default 30).
#[test]
fn rewrite_beside_forget_prune() {
    let secs = env_num("OCVAULT_STRESS_SECS", 30);
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(src.join("keep")).unwrap();
    random_file(&src.join("keep/data.bin"), 200_000, 5);
    std::fs::write(src.join("secret.txt"), b"erase me").unwrap();
    let expected = repo.path("expected");
    std::fs::create_dir_all(expected.join("keep")).unwrap();
    std::fs::copy(src.join("keep/data.bin"), expected.join("keep/data.bin")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (rounds, prunes) = std::thread::scope(|s| {
        let r = s.spawn(|| {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let id = snapshot_id(&repo, &["--force"], &src);
                // Every storage operation of the rewrite takes 30 ms: a wider window.
                let out = repo
                    .cmd()
                    .args([
                        "-o",
                        "fault.latency_ms=30",
                        "rewrite",
                        "--exclude",
                        "secret.txt",
                    ])
                    .arg(&id)
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                // The snapshot may have been forgotten before the rewrite found it.
                assert!(
                    out.status.success() || err.contains("no snapshot"),
                    "rewrite failed: {err}"
                );
                n += 1;
            }
            n
        });
        let p = s.spawn(|| {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let out = repo
                    .cmd()
                    .args([
                        "forget",
                        "--keep-last",
                        "1",
                        "--prune",
                        "--max-unused",
                        "0%",
                    ])
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    out.status.success() || err.contains("no snapshot"),
                    "forget --prune failed: {err}"
                );
                n += 1;
            }
            n
        });
        (r.join().unwrap(), p.join().unwrap())
    });
    eprintln!("{rounds} snapshot+rewrite rounds beside {prunes} forget --prune runs in {secs} s");
    assert!(rounds >= 3 && prunes >= 3);
    repo.cmd()
        .args(["prune", "--max-unused", "0%"])
        .assert()
        .success();
    repo.cmd().args(["check", "--read-data"]).assert().code(0);
    for id in snapshot_ids(&repo) {
        let target = repo.path(&format!("r-{}", &id[..8]));
        restore_into(&repo, &id, &target);
        let got = target.join("src");
        assert!(got.join("keep/data.bin").is_file(), "{id}: data restored");
        assert_eq!(
            hash_file(&got.join("keep/data.bin")),
            hash_file(&expected.join("keep/data.bin"))
        );
        std::fs::remove_dir_all(&target).unwrap();
    }
}

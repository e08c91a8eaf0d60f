//! The disaster-recovery runbook end to end: dumps from commands (a real PostgreSQL), git
//! mirrors, keys, the operations log, and the listing commands' JSON.

mod common;

use common::postgres::Postgres;
use common::*;
use std::path::Path;
use std::process::Command;

fn init_small(repo: &TestRepo) {
    repo.cmd()
        .args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"])
        .assert()
        .success();
}

fn snapshot_of(repo: &TestRepo, dir: &Path) -> String {
    let out = repo
        .cmd()
        .args(["--json", "snapshot"])
        .arg(dir)
        .output()
        .unwrap();
    last_json(&out)["snapshot_id"].as_str().unwrap().to_string()
}

fn snapshot_count(repo: &TestRepo) -> usize {
    last_json(&repo.cmd().args(["--json", "snapshots"]).output().unwrap())
        .as_array()
        .unwrap()
        .len()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn failing_dump_commands_save_no_snapshot() {
    let repo = TestRepo::new();
    init_small(&repo);
    repo.cmd()
        .args([
            "snapshot",
            "--command",
            "echo first",
            "--stdin-filename",
            "db.sql",
        ])
        .assert()
        .success();
    assert_eq!(snapshot_count(&repo), 1);
    for (cmd, shell, needle) in [
        ("false", false, "exit status: 1"),
        (
            "sh -c 'head -c 3000000 /dev/zero; kill -9 $$'",
            false,
            "SIGKILL",
        ),
        ("no-such-command-ocvault", false, "cannot run command"),
        ("echo partial; exit 3", true, "exit status: 3"),
    ] {
        let mut c = repo.cmd();
        c.args(["snapshot", "--command", cmd, "--stdin-filename", "db.sql"]);
        if shell {
            c.arg("--command-shell");
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(
            err.contains(needle) && err.contains("no snapshot saved"),
            "{cmd}: {err}"
        );
        assert_eq!(snapshot_count(&repo), 1, "{cmd} must not add a snapshot");
    }
    // Paths and a command in one snapshot.
    let conf = repo.path("config");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("app.env"), b"KEY=value\n").unwrap();
    repo.cmd()
        .args([
            "snapshot",
            "--command",
            "echo dump",
            "--stdin-filename",
            "db.sql",
        ])
        .arg(&conf)
        .assert()
        .success();
    let out = repo
        .cmd()
        .args(["dump", "latest", "db.sql"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"dump\n");
    let out = repo
        .cmd()
        .args(["dump", "latest", "config/app.env"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"KEY=value\n");
    repo.cmd().args(["check"]).assert().code(0);
}

#[test]
fn git_mirror_restores_and_passes_fsck() {
    let repo = TestRepo::new();
    init_small(&repo);
    let work = repo.path("work");
    std::fs::create_dir_all(&work).unwrap();
    let git = |dir: &Path, args: &[&str]| {
        run(Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@e")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@e"))
    };
    git(&work, &["init", "-q"]);
    for i in 0..30 {
        std::fs::write(
            work.join(format!("file{}.txt", i % 7)),
            format!("content {i}\n").repeat(200 + i),
        )
        .unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", &format!("commit {i}")]);
    }
    git(&work, &["gc", "-q"]);
    let mirror = repo.path("app.git");
    run(Command::new("git")
        .args(["clone", "-q", "--mirror"])
        .arg(&work)
        .arg(&mirror));
    repo.cmd().arg("snapshot").arg(&mirror).assert().success();
    let target = repo.path("restored");
    repo.cmd()
        .args(["restore", "latest", "--verify", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_trees_equal(&mirror, &target.join("app.git"));
    run(Command::new("git")
        .arg("-C")
        .arg(target.join("app.git"))
        .args(["fsck", "--full", "--strict"]));
    let log = run(Command::new("git")
        .arg("-C")
        .arg(target.join("app.git"))
        .args(["log", "--oneline"]));
    assert_eq!(log.lines().count(), 30);
}

#[test]
fn keys_add_open_remove_and_last_key_guard() {
    let repo = TestRepo::new();
    init_small(&repo);
    let pw2 = repo.path("pw2");
    std::fs::write(&pw2, "second operator password\n").unwrap();
    repo.cmd()
        .args([
            "key",
            "add",
            "--kdf-memory-kib",
            "1024",
            "--kdf-iterations",
            "1",
            "--new-password-file",
        ])
        .arg(&pw2)
        .assert()
        .success();
    let keys = last_json(&repo.cmd().args(["--json", "key", "list"]).output().unwrap());
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let first = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Both passwords open the repository.
    repo.cmd().arg("snapshots").assert().success();
    let second = || {
        let mut c = ocvault();
        c.arg("--repo")
            .arg(&repo.repo)
            .arg("--password-file")
            .arg(&pw2);
        c
    };
    second().arg("snapshots").assert().success();
    // The key in use cannot be removed; another can.
    repo.cmd()
        .args(["key", "remove", &first[..8]])
        .assert()
        .code(2);
    second()
        .args(["key", "remove", &first[..8]])
        .assert()
        .success();
    let out = repo.cmd().arg("snapshots").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(12),
        "the removed password must fail"
    );
    // The last key cannot be removed.
    let keys = last_json(&second().args(["--json", "key", "list"]).output().unwrap());
    let only = keys[0]["id"].as_str().unwrap().to_string();
    second().args(["key", "remove", &only]).assert().code(2);
    // passwd replaces the key in use.
    let pw3 = repo.path("pw3");
    std::fs::write(&pw3, "third").unwrap();
    second()
        .args([
            "key",
            "passwd",
            "--kdf-memory-kib",
            "1024",
            "--kdf-iterations",
            "1",
            "--new-password-file",
        ])
        .arg(&pw3)
        .assert()
        .success();
    second().arg("snapshots").assert().code(12);
    ocvault()
        .arg("--repo")
        .arg(&repo.repo)
        .arg("--password-file")
        .arg(&pw3)
        .arg("snapshots")
        .assert()
        .success();
}

#[test]
fn operations_log_lists_every_change_in_order_without_secrets() {
    let repo = TestRepo::new();
    init_small(&repo);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"1").unwrap();
    repo.cmd().arg("snapshot").arg(&src).assert().success();
    std::fs::write(src.join("a"), b"2").unwrap();
    repo.cmd().arg("snapshot").arg(&src).assert().success();
    repo.cmd()
        .args(["tag", "latest", "--add", "kept"])
        .assert()
        .success();
    repo.cmd()
        .args(["forget", "--keep-last", "1"])
        .assert()
        .success();
    repo.cmd().args(["prune"]).assert().success();
    repo.cmd()
        .args([
            "snapshot",
            "--command",
            "echo postgres://app:s3cr3t-pw@db/x",
            "--stdin-filename",
            "db.sql",
        ])
        .assert()
        .success();
    let pw = repo.path("pw2");
    std::fs::write(&pw, "another-secret-password").unwrap();
    repo.cmd()
        .args([
            "key",
            "add",
            "--kdf-memory-kib",
            "1024",
            "--kdf-iterations",
            "1",
            "--new-password-file",
        ])
        .arg(&pw)
        .assert()
        .success();
    let out = repo.cmd().args(["--json", "log"]).output().unwrap();
    let log = last_json(&out);
    assert_eq!(log["damaged"], serde_json::json!([]), "{log:#}");
    let ops: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        ["init", "snapshot", "snapshot", "tag", "forget", "prune", "snapshot", "key add"]
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for secret in [
        repo.password.as_str(),
        "s3cr3t-pw",
        "another-secret-password",
    ] {
        assert!(!text.contains(secret), "log shows {secret}: {text}");
    }
    assert!(text.contains("postgres://app:***@db/x"), "{text}");
    let plain = repo.cmd().arg("log").output().unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains(&repo.password));
}

#[test]
fn listing_commands_give_json() {
    let repo = TestRepo::new();
    init_small(&repo);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("keep.txt"), b"same").unwrap();
    std::fs::write(src.join("gone.txt"), b"old").unwrap();
    std::fs::write(src.join("edit.txt"), b"v1").unwrap();
    let s1 = snapshot_of(&repo, &src);
    std::fs::remove_file(src.join("gone.txt")).unwrap();
    std::fs::write(src.join("edit.txt"), b"version 2").unwrap();
    std::fs::write(src.join("new.txt"), b"n").unwrap();
    let s2 = snapshot_of(&repo, &src);
    let d = last_json(
        &repo
            .cmd()
            .args(["--json", "diff", &s1, &s2])
            .output()
            .unwrap(),
    );
    let has = |change: &str, path: &str| {
        d.as_array()
            .unwrap()
            .iter()
            .any(|c| c["change"] == change && c["path"] == path)
    };
    assert!(
        has("removed", "/src/gone.txt")
            && has("added", "/src/new.txt")
            && has("changed", "/src/edit.txt"),
        "{d:#}"
    );
    assert!(!d.to_string().contains("keep.txt"), "{d:#}");
    let f = last_json(
        &repo
            .cmd()
            .args(["--json", "find", "gone.txt"])
            .output()
            .unwrap(),
    );
    assert_eq!(f.as_array().unwrap().len(), 1);
    assert_eq!(f[0]["snapshot"], s1.as_str());
    let st = last_json(&repo.cmd().args(["--json", "stats"]).output().unwrap());
    assert_eq!(st["snapshots"], 2);
    assert!(st["dedup_ratio"].as_f64().unwrap() > 1.0, "{st:#}");
    let t = last_json(
        &repo
            .cmd()
            .args(["--json", "tag", &s2[..8], "--add", "weekly"])
            .output()
            .unwrap(),
    );
    let new = t[0]["new"].as_str().unwrap();
    let list = last_json(
        &repo
            .cmd()
            .args(["--json", "snapshots", "--tag", "weekly"])
            .output()
            .unwrap(),
    );
    assert_eq!(list[0]["id"], new);
}

#[test]
fn pg_dump_snapshot_and_restore_through_psql() {
    let repo = TestRepo::new();
    init_small(&repo);
    let pg = Postgres::start(repo.dir.path());
    pg.psql("postgres", "create database app");
    pg.psql(
        "app",
        "create table accounts (id int primary key, name text, balance numeric);
         create table history (id bigserial primary key, account int, delta numeric, note text, at timestamptz);
         create table notes (id int primary key, body text);
         insert into accounts select i, 'user' || i, (i * 37 % 1000)::numeric / 7 from generate_series(1, 50000) i;
         insert into history (account, delta, note, at) select i % 50000, (i % 997) - 500, md5(i::text), '2026-01-01'::timestamptz + i * interval '1 minute' from generate_series(1, 200000) i;
         insert into notes select i, repeat(md5(i::text), 20) from generate_series(1, 5000) i;",
    );
    let before = pg.checksums("app");
    let dump_cmd = format!(
        "{} -h 127.0.0.1 -p {} -U postgres app",
        pg.bin.join("pg_dump").display(),
        pg.port
    );
    let s1 = last_json(
        &repo
            .cmd()
            .args([
                "--json",
                "snapshot",
                "--command",
                &dump_cmd,
                "--stdin-filename",
                "db.sql",
            ])
            .output()
            .unwrap(),
    );
    pg.psql("postgres", "drop database app");
    pg.psql("postgres", "create database restored");
    let pipeline = format!(
        "{} dump latest db.sql | {} -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p {} -U postgres -d restored > /dev/null",
        assert_cmd::cargo::cargo_bin("ocvault").display(),
        pg.bin.join("psql").display(),
        pg.port
    );
    let st = Command::new("sh")
        .arg("-c")
        .arg(&pipeline)
        .env("OCVAULT_REPOSITORY", &repo.repo)
        .env("OCVAULT_PASSWORD", &repo.password)
        .status()
        .unwrap();
    assert!(st.success(), "dump | psql failed");
    assert_eq!(
        pg.checksums("restored"),
        before,
        "row counts and checksums differ after restore"
    );

    // Day two: scattered updates, then a second dump dedups against the first.
    pg.psql("restored", "update history set note = 'changed' where id % 4000 = 0; update accounts set balance = balance + 1 where id % 1000 = 0;");
    let dump2 = format!(
        "{} -h 127.0.0.1 -p {} -U postgres restored",
        pg.bin.join("pg_dump").display(),
        pg.port
    );
    let s2 = last_json(
        &repo
            .cmd()
            .args([
                "--json",
                "snapshot",
                "--command",
                &dump2,
                "--stdin-filename",
                "db.sql",
            ])
            .output()
            .unwrap(),
    );
    let (read2, added2, added1) = (
        s2["bytes_read"].as_u64().unwrap(),
        s2["bytes_added"].as_u64().unwrap(),
        s1["bytes_added"].as_u64().unwrap(),
    );
    eprintln!("day 1: {} bytes read, {added1} added; day 2: {read2} bytes read, {added2} added ({:.1}% of day 1)", s1["bytes_read"], added2 as f64 * 100.0 / added1 as f64);
    assert!(
        added2 < added1,
        "the second dump must dedup against the first"
    );
    repo.cmd().args(["check", "--read-data"]).assert().code(0);
}

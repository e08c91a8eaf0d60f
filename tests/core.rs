//! The core issue's end-to-end checks, through the real binary.

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn snapshot_json(repo: &TestRepo, args: &[&str]) -> serde_json::Value {
    let a = repo
        .cmd()
        .arg("--json")
        .arg("snapshot")
        .args(args)
        .assert()
        .success();
    last_json(&a)
}

#[test]
fn big_tree_restores_byte_for_byte() {
    let repo = TestRepo::new();
    repo.init();
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let spec = TreeSpec {
        empty_files: 20,
        big_file_bytes: 300 << 20,
        small_files: 20_000,
        symlinks: true,
        hardlinks: true,
        odd_names: true,
        deep_nesting: 120,
        sparse_file_bytes: 64 << 20,
        seed: 7,
        special_modes: true,
    };
    generate_tree(&src, &spec);
    let first = snapshot_json(&repo, &[src.to_str().unwrap()]);
    assert_eq!(first["errors"], 0, "{first}");
    assert!(first["files_new"].as_u64().unwrap() > 20_000);

    // An unchanged second snapshot reads nothing and adds almost nothing. (It runs before the
    // comparison below, whose reads would change access times, which trees record.)
    let before = dir_size(&repo.repo);
    let second = snapshot_json(&repo, &[src.to_str().unwrap()]);
    let added = dir_size(&repo.repo) - before;
    assert_eq!(second["bytes_read"], 0, "{second}");
    assert_eq!(second["files_new"], 0, "{second}");
    assert_eq!(second["files_changed"], 0, "{second}");
    assert_eq!(second["files_unmodified"], first["files_new"], "{second}");
    let total = first["bytes_total"].as_u64().unwrap();
    assert!(
        (added as f64) < total as f64 * 0.001,
        "unchanged snapshot added {added} bytes of {total}"
    );

    let target = repo.path("restored");
    repo.cmd()
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_trees_equal(&src, &target.join("src"));
    let sparse = target.join("src/sparse.img");
    if sparse.exists() {
        let apparent = std::fs::metadata(&sparse).unwrap().size();
        assert!(
            allocated_bytes(&sparse) < apparent / 2,
            "sparse file restored dense"
        );
    }

    // Edits are picked up and restored.
    mutate_tree(&src, 0.01, 99);
    let third = snapshot_json(&repo, &[src.to_str().unwrap()]);
    assert!(
        third["files_changed"].as_u64().unwrap() + third["files_new"].as_u64().unwrap() > 0,
        "{third}"
    );
    let target2 = repo.path("restored2");
    repo.cmd()
        .args(["restore", "latest", "--target"])
        .arg(&target2)
        .assert()
        .success();
    assert_trees_equal(&src, &target2.join("src"));
    repo.cmd().args(["check", "--read-data"]).assert().code(0);
}

/// Snapshots `file` through standard input as db.sql, checks it was read in full, and that
/// `dump latest` gives the same bytes back.
fn stdin_roundtrip(repo: &TestRepo, file: &Path) {
    let a = repo
        .cmd()
        .args([
            "--json",
            "snapshot",
            "--stdin",
            "--stdin-filename",
            "db.sql",
        ])
        .pipe_stdin(file)
        .unwrap()
        .assert()
        .success();
    let s = last_json(&a);
    assert_eq!(
        s["bytes_read"].as_u64().unwrap(),
        std::fs::metadata(file).unwrap().len()
    );
    let out = repo
        .cmd()
        .args(["dump", "latest", "db.sql"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(blake3::hash(&out.stdout), hash_file(file));
}

#[test]
fn stdin_snapshot_of_200_mb_dumps_back_identically() {
    let repo = TestRepo::new();
    repo.init();
    let dump = repo.path("db.sql");
    sql_dump(&dump, 200 << 20, 3, 1);
    stdin_roundtrip(&repo, &dump);
    // A second stdin snapshot is read in full again, never taken from the parent by name.
    let day2 = repo.path("db2.sql");
    sql_dump(&day2, 200 << 20, 3, 2);
    stdin_roundtrip(&repo, &day2);
    repo.cmd().args(["check", "--read-data"]).assert().code(0);
}

#[test]
fn day_two_dump_adds_under_ten_percent() {
    let repo = TestRepo::new();
    repo.init();
    let day1 = repo.path("day1.sql");
    let day2 = repo.path("day2.sql");
    sql_dump(&day1, 1 << 30, 11, 1);
    repo.cmd()
        .args(["snapshot", "--stdin", "--stdin-filename", "db.sql"])
        .pipe_stdin(&day1)
        .unwrap()
        .assert()
        .success();
    std::fs::remove_file(&day1).unwrap();
    let size1 = dir_size(&repo.repo);
    sql_dump(&day2, 1 << 30, 11, 2);
    repo.cmd()
        .args(["snapshot", "--stdin", "--stdin-filename", "db.sql"])
        .pipe_stdin(&day2)
        .unwrap()
        .assert()
        .success();
    let added = dir_size(&repo.repo) - size1;
    eprintln!(
        "day 1 repository: {size1} bytes; day 2 added {added} bytes ({:.2}%)",
        added as f64 * 100.0 / size1 as f64
    );
    assert!(
        (added as f64) < size1 as f64 * 0.10,
        "day 2 added {added} of {size1}"
    );
    let out = repo
        .cmd()
        .args(["dump", "latest", "db.sql"])
        .output()
        .unwrap();
    assert_eq!(blake3::hash(&out.stdout), hash_file(&day2));
}

#[test]
fn snapshot_ids_prefixes_parents_and_listing() {
    let repo = TestRepo::new();
    repo.init();
    let src = repo.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    std::fs::write(src.join("sub/b.log"), b"beta").unwrap();
    let s1 = snapshot_json(
        &repo,
        &[
            "--tag",
            "daily",
            "--host",
            "db1",
            "--time",
            "2026-01-01T00:00:00Z",
            src.to_str().unwrap(),
        ],
    );
    let s2 = snapshot_json(
        &repo,
        &["--host", "db2", "--exclude", "*.log", src.to_str().unwrap()],
    );
    let id1 = s1["snapshot_id"].as_str().unwrap();
    let id2 = s2["snapshot_id"].as_str().unwrap();
    assert_eq!(id1.len(), 64);

    let a = repo
        .cmd()
        .args(["--json", "snapshots", "--host", "db1"])
        .assert()
        .success();
    let list = last_json(&a);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id1);
    assert_eq!(list[0]["tags"][0], "daily");
    assert_eq!(list[0]["time"], "2026-01-01T00:00:00Z");
    let a = repo
        .cmd()
        .args(["--json", "snapshots", "--tag", "daily"])
        .assert()
        .success();
    assert_eq!(last_json(&a).as_array().unwrap().len(), 1);

    // Plain output shows 8-character ids; any unique prefix works.
    let plain = repo.cmd().arg("snapshots").output().unwrap();
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(
        text.contains(&id1[..8]) && !text.contains(&id1[..9]),
        "{text}"
    );
    let ls = repo.cmd().args(["ls", &id2[..6]]).output().unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.contains("/src/a.txt") && !ls.contains("b.log"),
        "exclude ignored: {ls}"
    );
    let out = repo
        .cmd()
        .args(["dump", &id1[..10], "src/sub/b.log"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"beta");
}

/// `startup_seconds` (the time up to the first file opened, benches/scale.sh's start-up
/// figure) is reported when a file is read, within the command's wall time, and null when
/// nothing was read (an unchanged tree).
#[test]
fn snapshot_reports_startup_seconds_until_the_first_file_read() {
    let repo = TestRepo::new();
    repo.init();
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    let started = std::time::Instant::now();
    let first = snapshot_json(&repo, &[src.to_str().unwrap()]);
    let wall = started.elapsed().as_secs_f64();
    let startup = first["startup_seconds"].as_f64().expect("a number");
    assert!(
        startup > 0.0 && startup < wall,
        "{startup} of {wall}: {first}"
    );
    let unchanged = snapshot_json(&repo, &[src.to_str().unwrap()]);
    assert!(unchanged["startup_seconds"].is_null(), "{unchanged}");
    let forced = snapshot_json(&repo, &["--force", src.to_str().unwrap()]);
    assert!(forced["startup_seconds"].as_f64().is_some(), "{forced}");
}

/// Measures candidate chunk sizes on the day-1/day-2 dump (run by hand, figures in format-spec):
/// `cargo test --release --test core chunk_size_candidates -- --ignored --nocapture`
#[test]
#[ignore]
fn chunk_size_candidates() {
    let dumps = scratch_dir("ocvault-chunk-sizes-");
    let (day1, day2) = (dumps.path().join("day1.sql"), dumps.path().join("day2.sql"));
    sql_dump(&day1, 1 << 30, 11, 1);
    sql_dump(&day2, 1 << 30, 11, 2);
    for (min, avg, max) in [
        (16 << 10, 64 << 10, 256 << 10),
        (32 << 10, 128 << 10, 512 << 10),
        (64 << 10, 256 << 10, 1 << 20),
        (256 << 10, 1 << 20, 4 << 20),
    ] {
        let repo = TestRepo::new();
        repo.cmd()
            .args([
                "init",
                "--chunk-min",
                &min.to_string(),
                "--chunk-avg",
                &avg.to_string(),
                "--chunk-max",
                &max.to_string(),
            ])
            .assert()
            .success();
        let t = std::time::Instant::now();
        let a = repo
            .cmd()
            .args([
                "--json",
                "snapshot",
                "--stdin",
                "--stdin-filename",
                "db.sql",
            ])
            .pipe_stdin(&day1)
            .unwrap()
            .assert()
            .success();
        let t1 = t.elapsed().as_secs_f64();
        let blobs1 = last_json(&a)["blobs_added"].as_u64().unwrap();
        let size1 = dir_size(&repo.repo);
        let a = repo
            .cmd()
            .args([
                "--json",
                "snapshot",
                "--stdin",
                "--stdin-filename",
                "db.sql",
            ])
            .pipe_stdin(&day2)
            .unwrap()
            .assert()
            .success();
        let blobs2 = last_json(&a)["blobs_added"].as_u64().unwrap();
        let added = dir_size(&repo.repo) - size1;
        println!(
            "avg {:>5} KiB: day1 {:.1} MiB in {t1:.2}s, {blobs1} blobs; day2 added {:.2} MiB ({:.2}%), {blobs2} blobs; index at 48 B/blob: {:.0} KiB per GB",
            avg >> 10,
            size1 as f64 / 1048576.0,
            added as f64 / 1048576.0,
            added as f64 * 100.0 / size1 as f64,
            blobs1 as f64 * 48.0 / 1024.0
        );
    }
}

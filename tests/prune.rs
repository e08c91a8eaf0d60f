//! forget, prune and rewrite: space is reclaimed, kept snapshots stay whole, erased data is
//! gone from storage, and prune is safe beside running backups and when killed.

mod common;

use common::*;
use ocvault::backend::{Backend, FileKind};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn forget_half_and_prune_shrinks_by_what_only_they_held() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    random_file(&src.join("shared"), 1 << 20, 1);
    let mut ids = Vec::new();
    let mut states = Vec::new();
    for i in 0..6u64 {
        let _ = std::fs::remove_file(src.join(format!("unique{}", i.wrapping_sub(1))));
        random_file(&src.join(format!("unique{i}")), 2 << 20, 100 + i);
        ids.push(snapshot_id(
            &repo,
            &["--time", &format!("2026-01-0{}T00:00:00Z", i + 1)],
            &src,
        ));
        let state = repo.path(&format!("state{i}"));
        copy_tree(&src, &state);
        states.push(state);
    }
    let before = dir_size(&repo.repo);
    let forget: Vec<&str> = ids.iter().step_by(2).map(|s| s.as_str()).collect();
    repo.cmd()
        .arg("forget")
        .args(&forget)
        .args(["--prune"])
        .assert()
        .success();
    let after = dir_size(&repo.repo);
    let freed = before - after;
    let expected = 3.0 * (2 << 20) as f64; // the three unique files only those snapshots held
    eprintln!("freed {freed} bytes, expected about {expected}");
    assert!(
        (freed as f64 - expected).abs() < expected * 0.10,
        "freed {freed}, expected {expected}"
    );
    repo.cmd().args(["check", "--read-data"]).assert().code(0);
    for i in [1usize, 3, 5] {
        restore_and_compare(&repo, &ids[i], &states[i], "src");
    }
    let out = repo.cmd().args(["--json", "snapshots"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
}

#[test]
fn forget_policy_dry_run_and_empty_group_guard() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    for d in 1..=9 {
        snapshot_id(&repo, &["--time", &format!("2026-03-0{d}T12:00:00Z")], &src);
    }
    let out = repo
        .cmd()
        .args(["--json", "forget", "--keep-daily", "3", "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let g = &v["groups"][0];
    assert_eq!(g["keep"].as_array().unwrap().len(), 3);
    assert_eq!(g["remove"].as_array().unwrap().len(), 6);
    assert_eq!(g["keep"][0]["time"], "2026-03-09T12:00:00Z");
    assert_eq!(g["keep"][0]["reasons"][0], "daily 3");
    // Nothing changed in a dry run.
    let out = repo.cmd().args(["--json", "snapshots"]).output().unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        9
    );
    // A policy that keeps nothing of a group is refused without the explicit flag.
    let out = repo
        .cmd()
        .args(["forget", "--keep-tag", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    repo.cmd()
        .args(["forget", "--keep-daily", "3"])
        .assert()
        .success();
    let out = repo.cmd().args(["--json", "snapshots"]).output().unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// Opens every blob of every pack in the repository and returns the plaintexts.
fn all_plaintexts(repo: &TestRepo) -> Vec<Vec<u8>> {
    let lib = ocvault::repository::Repository::open(
        Backend::open(repo.repo.to_str().unwrap(), false).unwrap(),
        repo.password.as_bytes(),
    )
    .unwrap();
    let mut out = Vec::new();
    for (id, size) in lib.backend.list_ids(FileKind::Pack).unwrap() {
        let bytes = lib.backend.read(&FileKind::Pack.path(&id)).unwrap();
        let header = ocvault::pack::parse_header_from_tail(&lib.keys, &bytes, size)
            .unwrap()
            .unwrap();
        for b in header.blobs {
            let sealed = &bytes[b.offset as usize..(b.offset + b.length) as usize];
            out.push(
                ocvault::pack::open_blob(&lib.keys, header.blob_type, &b.id, sealed, b.raw_length)
                    .unwrap(),
            );
        }
    }
    out
}

#[test]
fn gdpr_erase_removes_every_copy_of_the_data() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(src.join("people")).unwrap();
    let marker = b"GDPR-MARKER-7f3a9c-Jane-Doe-born-1970";
    let mut states = Vec::new();
    let mut ids = Vec::new();
    for i in 0..5u64 {
        let mut content = Vec::new();
        for _ in 0..100 {
            content.extend_from_slice(marker);
            content.extend_from_slice(format!(" record {i}\n").as_bytes());
        }
        std::fs::write(src.join("people/jane.csv"), &content).unwrap();
        random_file(&src.join(format!("other{i}.bin")), 200_000, i);
        ids.push(snapshot_id(&repo, &[], &src));
        let state = repo.path(&format!("state{i}"));
        copy_tree(&src, &state);
        std::fs::remove_file(state.join("people/jane.csv")).unwrap();
        // Removing the file touched the folder; the snapshot holds the folder's original times.
        let m = std::fs::metadata(src.join("people")).unwrap();
        filetime::set_file_times(
            state.join("people"),
            filetime::FileTime::from_last_access_time(&m),
            filetime::FileTime::from_last_modification_time(&m),
        )
        .unwrap();
        states.push(state);
    }
    let contains = |blobs: &[Vec<u8>]| {
        blobs
            .iter()
            .any(|b| b.windows(marker.len()).any(|w| w == marker))
    };
    assert!(
        contains(&all_plaintexts(&repo)),
        "the marker must be stored before the erase"
    );
    repo.cmd()
        .args(["rewrite", "--all", "--exclude", "jane.csv"])
        .assert()
        .success();
    repo.cmd()
        .args(["prune", "--max-unused", "0%"])
        .assert()
        .success();
    assert!(
        !contains(&all_plaintexts(&repo)),
        "a blob still decrypts to the marker"
    );
    repo.cmd().args(["check", "--read-data"]).assert().code(0);
    let out = repo.cmd().args(["--json", "snapshots"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 5);
    for (i, snap) in list.as_array().unwrap().iter().enumerate() {
        restore_and_compare(&repo, snap["id"].as_str().unwrap(), &states[i], "src");
    }
}

/// One thread loops backups of a changing tree while another loops forget + prune.
/// `OCVAULT_STRESS_SECS` changes the duration (default 60).
#[test]
fn prune_beside_running_backups() {
    let secs: u64 = std::env::var("OCVAULT_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let repo = TestRepo::new();
    init_small_packs(&repo, 262_144);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    generate_tree(
        &src,
        &TreeSpec {
            small_files: 100,
            big_file_bytes: 2 << 20,
            sparse_file_bytes: 0,
            deep_nesting: 5,
            ..TreeSpec::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(secs);
    let states = repo.path("states");
    std::fs::create_dir_all(&states).unwrap();
    let (backups, prunes) = std::thread::scope(|s| {
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
        let p = s.spawn(|| {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let out = repo
                    .cmd()
                    .args([
                        "forget",
                        "--keep-last",
                        "2",
                        "--prune",
                        "--max-unused",
                        "0%",
                    ])
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                // Before the first snapshot there is nothing to forget.
                assert!(
                    out.status.success()
                        || err.contains("needs snapshot")
                        || err.contains("no snapshot"),
                    "prune failed: {err}"
                );
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            n
        });
        (b.join().unwrap(), p.join().unwrap())
    });
    eprintln!("{backups} backups and {prunes} forget+prune runs in {secs}s");
    assert!(backups >= 3 && prunes >= 3);
    // Finish pending deletions now that nothing runs.
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

/// Prune killed with SIGKILL at random points never damages the repository.
#[test]
fn prune_killed_at_random_points() {
    let runs: u64 = std::env::var("OCVAULT_KILL_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let repo = TestRepo::new();
    init_small_packs(&repo, 131_072);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut kept: Vec<(String, PathBuf)> = Vec::new();
    let mut rng = Rng::new(2026);
    let mut interrupted = 0;
    for run in 0..runs {
        // Two snapshots a round, one of which is forgotten, so every prune has work to do.
        for k in 0..2 {
            random_file(
                &src.join(format!("f{}", rng.below(6))),
                300_000 + rng.below(300_000) as usize,
                run * 10 + k,
            );
            let id = snapshot_id(&repo, &[], &src);
            let state = repo.path(&format!("state-{id}"));
            copy_tree(&src, &state);
            kept.push((id, state));
        }
        let (gone, _) = kept.remove(kept.len() - 2);
        repo.cmd().args(["forget", &gone]).assert().success();
        let mut child = repo
            .cmd_std()
            .args(["prune", "--max-unused", "0%"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(60)));
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let out = repo.cmd().arg("check").output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {run}: check after a killed prune: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    eprintln!("{interrupted} of {runs} prunes were killed while running");
    assert!(
        interrupted * 2 >= runs,
        "most kills must land while prune runs: {interrupted} of {runs}"
    );
    repo.cmd()
        .args(["prune", "--max-unused", "0%"])
        .assert()
        .success();
    repo.cmd().args(["check", "--read-data"]).assert().code(0);
    for (id, state) in &kept {
        restore_and_compare(&repo, id, state, "src");
    }
}

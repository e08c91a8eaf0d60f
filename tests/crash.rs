//! Crash consistency: `ocvault snapshot` of a changing tree killed with SIGKILL at seeded
//! random moments. After every kill `check` passes and every earlier snapshot restores byte
//! for byte; at the end the next snapshot completes and restores. (Prune killed at random
//! points is tested in tests/prune.rs.)
//!
//! `OCVAULT_CRASH_RUNS` (default 6) kills, of a tree of `OCVAULT_CRASH_BYTES` (default 32 MiB;
//! the figure is 500 MB: `OCVAULT_CRASH_RUNS=30 OCVAULT_CRASH_BYTES=500000000`),
//! seeded by `OCVAULT_CRASH_SEED` (default 2026).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Files of `bulk/` holding most of the tree's bytes; one is rewritten each round.
const BULK_FILES: u64 = 8;

fn rewrite_bulk(src: &Path, file: u64, size: u64, seed: u64) {
    random_file(&src.join(format!("bulk/part{file}")), size as usize, seed);
}

/// Snapshots `src`, keeps a copy of the tree as it was, returns how long the run took.
fn complete_snapshot(repo: &TestRepo, src: &Path, kept: &mut Vec<(String, PathBuf)>) -> Duration {
    let started = Instant::now();
    let id = snapshot_id(repo, &[], src);
    let took = started.elapsed();
    let state = repo.path(&format!("state-{}", kept.len()));
    copy_tree(src, &state);
    kept.push((id, state));
    took
}

#[test]
fn snapshot_killed_at_random_moments() {
    let runs = env_u64("OCVAULT_CRASH_RUNS", 6);
    let bytes = env_u64("OCVAULT_CRASH_BYTES", 32 << 20);
    let mut rng = Rng::new(env_u64("OCVAULT_CRASH_SEED", 2026));
    let started = Instant::now();

    let repo = TestRepo::new();
    // Small packs and chunks: many pack uploads and intermediate index files to be cut.
    init_small(
        &repo,
        &[
            "--pack-size",
            "262144",
            "--chunk-min",
            "4096",
            "--chunk-avg",
            "16384",
            "--chunk-max",
            "65536",
        ],
    );
    let src = repo.path("src");
    std::fs::create_dir_all(src.join("bulk")).unwrap();
    generate_tree(
        &src,
        &TreeSpec {
            big_file_bytes: bytes / 4,
            small_files: 300,
            sparse_file_bytes: 0,
            ..TreeSpec::default()
        },
    );
    let part = bytes * 3 / 4 / BULK_FILES;
    for f in 0..BULK_FILES {
        rewrite_bulk(&src, f, part, f);
    }
    let mut kept: Vec<(String, PathBuf)> = Vec::new();
    complete_snapshot(&repo, &src, &mut kept);
    // One round's change done without a kill, to learn how long a round's snapshot takes.
    mutate_tree(&src, 0.05, 0);
    rewrite_bulk(&src, 0, part, 1000);
    let round = complete_snapshot(&repo, &src, &mut kept);

    let mut interrupted = 0;
    for run in 1..=runs {
        mutate_tree(&src, 0.05, run);
        rewrite_bulk(&src, run % BULK_FILES, part, 1000 + run);
        let child = repo
            .cmd_std()
            .args(["--json", "snapshot"])
            .arg(&src)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Anywhere from start-up to near the end of a typical round.
        let delay = round.mul_f64(rng.f64() * 0.9);
        std::thread::sleep(delay);
        let mut child = child;
        let running = child.try_wait().unwrap().is_none();
        // SIGKILL: no destructor, no cleanup, as in a power cut of the process.
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        if running {
            interrupted += 1;
        } else {
            // Finished before the kill: an earlier snapshot like any other.
            assert!(out.status.success(), "run {run}: {out:?}");
            let id = last_json(&out)["snapshot_id"].as_str().unwrap().to_string();
            let state = repo.path(&format!("state-{}", kept.len()));
            copy_tree(&src, &state);
            kept.push((id, state));
        }
        eprintln!(
            "run {run}: killed after {delay:?} ({})",
            if running {
                "while running"
            } else {
                "had finished"
            }
        );
        let out = repo.cmd().arg("check").output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {run}: check after a kill at {delay:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for (id, state) in &kept {
            restore_and_compare(&repo, id, state, "src");
        }
    }
    eprintln!(
        "{interrupted} of {runs} snapshots were killed while running ({bytes} bytes, {:?})",
        started.elapsed()
    );
    assert!(
        interrupted * 2 >= runs,
        "most kills must land while the snapshot runs: {interrupted} of {runs}"
    );

    // The next snapshot completes, reuses what the killed ones stored, and restores.
    mutate_tree(&src, 0.05, runs + 1);
    complete_snapshot(&repo, &src, &mut kept);
    assert_check_passes(&repo, &["--read-data"]);
    let (id, state) = kept.last().unwrap();
    restore_and_compare(&repo, id, state, "src");
    // Prune cleans up after the killed runs; every kept snapshot survives it.
    repo.cmd()
        .args(["prune", "--max-unused", "0%"])
        .assert()
        .success();
    assert_check_passes(&repo, &["--read-data"]);
    for (id, state) in &kept {
        restore_and_compare(&repo, id, state, "src");
    }
}

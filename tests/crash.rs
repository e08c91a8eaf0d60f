//! Crash consistency: `ocvault snapshot` and `ocvault copy` killed with SIGKILL at seeded
//! random moments. After every kill `check` passes and every earlier snapshot restores byte
//! for byte; at the end the next run completes and restores. (Prune killed at random points
//! is tested in tests/prune.rs.)
//!
//! `OCVAULT_CRASH_RUNS` (default 6) kills per test, of a tree of `OCVAULT_CRASH_BYTES`
//! (default 32 MiB; the figure: `OCVAULT_CRASH_RUNS=30 OCVAULT_CRASH_BYTES=500000000`),
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

/// A source tree of about `bytes` that changes every round: 5% of its files mutated and one
/// bulk file (an eighth of three quarters of the bytes) rewritten with new data.
struct ChangingTree {
    src: PathBuf,
    part: u64,
}

impl ChangingTree {
    fn new(repo: &TestRepo, bytes: u64) -> ChangingTree {
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
        let tree = ChangingTree {
            src,
            part: bytes * 3 / 4 / BULK_FILES,
        };
        for f in 0..BULK_FILES {
            tree.rewrite_bulk(f, f);
        }
        tree
    }

    fn rewrite_bulk(&self, file: u64, seed: u64) {
        let path = self.src.join(format!("bulk/part{file}"));
        random_file(&path, self.part as usize, seed);
    }

    fn change(&self, round: u64) {
        mutate_tree(&self.src, 0.05, round);
        self.rewrite_bulk(round % BULK_FILES, 1000 + round);
    }
}

/// Kills `child` with SIGKILL (no destructor, no cleanup, as in a power cut of the process)
/// after `delay`; returns whether it was still running, and its output.
fn kill_after(child: std::process::Child, delay: Duration) -> (bool, std::process::Output) {
    std::thread::sleep(delay);
    let mut child = child;
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    (running, child.wait_with_output().unwrap())
}

fn report(what: &str, run: u64, delay: Duration, running: bool) {
    let how = if running {
        "while running"
    } else {
        "had finished"
    };
    eprintln!("{what} run {run}: killed after {delay:?} ({how})");
}

/// Snapshots `src` (with more `args`), keeps a copy of the tree as it was, returns how long
/// the run took.
fn complete_snapshot(
    repo: &TestRepo,
    src: &Path,
    args: &[&str],
    kept: &mut Vec<(String, PathBuf)>,
) -> Duration {
    let started = Instant::now();
    let id = snapshot_id(repo, args, src);
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
    // Small packs: many pack writes and intermediate index files to be cut.
    init_small_packs(&repo, 262_144);
    let tree = ChangingTree::new(&repo, bytes);
    let src = tree.src.as_path();
    let mut kept: Vec<(String, PathBuf)> = Vec::new();
    complete_snapshot(&repo, src, &[], &mut kept);
    // One round's change done without a kill, to learn how long a round's snapshot takes.
    tree.change(0);
    let round = complete_snapshot(&repo, src, &[], &mut kept);

    let mut interrupted = 0;
    for run in 1..=runs {
        tree.change(run);
        let child = repo
            .cmd_std()
            .args(["--json", "snapshot"])
            .arg(src)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Anywhere from start-up to near the end of a typical round.
        let delay = round.mul_f64(rng.f64() * 0.9);
        let (running, out) = kill_after(child, delay);
        if running {
            interrupted += 1;
        } else {
            // Finished before the kill: an earlier snapshot like any other.
            assert!(out.status.success(), "run {run}: {out:?}");
            let id = last_json(&out)["snapshot_id"].as_str().unwrap().to_string();
            let state = repo.path(&format!("state-{}", kept.len()));
            copy_tree(src, &state);
            kept.push((id, state));
        }
        report("snapshot", run, delay, running);
        assert_check_passes(&repo, &[]);
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
    tree.change(runs + 1);
    complete_snapshot(&repo, src, &[], &mut kept);
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

/// The source state of each snapshot in `repo`, matched by snapshot time (a copy keeps the
/// time of its source, and each source snapshot here has its own second).
fn states_by_time(repo: &TestRepo, times: &[(String, PathBuf)]) -> Vec<(String, PathBuf)> {
    let out = repo.cmd().args(["--json", "snapshots"]).output().unwrap();
    last_json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let time = s["time"].as_str().unwrap();
            let state = &times.iter().find(|(t, _)| t == time).unwrap().1;
            (s["id"].as_str().unwrap().to_string(), state.clone())
        })
        .collect()
}

/// A source snapshot at its own second; records that time and the tree's state.
fn source_snapshot(repo: &TestRepo, src: &Path, round: u64, times: &mut Vec<(String, PathBuf)>) {
    let time = format!("2026-01-01T00:{:02}:{:02}Z", round / 60, round % 60);
    snapshot_id(repo, &["--time", &time], src);
    let state = repo.path(&format!("copy-state-{round}"));
    copy_tree(src, &state);
    times.push((time, state));
}

/// `copy --all` into a second repository, killed at random moments while each round a new
/// source snapshot waits to be copied.
#[test]
fn copy_killed_at_random_moments() {
    let runs = env_u64("OCVAULT_CRASH_RUNS", 6);
    let bytes = env_u64("OCVAULT_CRASH_BYTES", 32 << 20) / 2;
    let mut rng = Rng::new(env_u64("OCVAULT_CRASH_SEED", 2026) ^ 0xC0C0);

    let repo = TestRepo::new();
    // Small packs: many pack writes and intermediate index files to be cut.
    init_small_packs(&repo, 262_144);
    let dst = TestRepo::new();
    // Another compression level: blobs are compressed again, not resealed as framed (the
    // other copy tests cover that path).
    init_small(&dst, &["--compression", "1"]);
    let tree = ChangingTree::new(&repo, bytes);
    let src = tree.src.as_path();
    // (snapshot time, state of the tree)
    let mut times: Vec<(String, PathBuf)> = Vec::new();
    let copy = || {
        let mut c = repo.cmd_std();
        c.args(["copy", "--all", "--to"])
            .arg(&dst.repo)
            .env("OCVAULT_TO_PASSWORD", &dst.password)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let copy_completes = || {
        let out = copy().output().unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    source_snapshot(&repo, src, 0, &mut times);
    copy_completes();
    // One round without a kill, to learn how long copying a round's new data takes.
    tree.change(1);
    source_snapshot(&repo, src, 1, &mut times);
    let t = Instant::now();
    copy_completes();
    let round = t.elapsed();

    let mut interrupted = 0;
    for run in 2..runs + 2 {
        tree.change(run);
        source_snapshot(&repo, src, run, &mut times);
        let delay = round.mul_f64(rng.f64() * 0.9);
        let (running, out) = kill_after(copy().spawn().unwrap(), delay);
        if running {
            interrupted += 1;
        } else {
            assert!(out.status.success(), "run {run}: {out:?}");
        }
        report("copy", run, delay, running);
        assert_check_passes(&dst, &[]);
        for (id, state) in states_by_time(&dst, &times) {
            restore_and_compare(&dst, &id, &state, "src");
        }
    }
    eprintln!("{interrupted} of {runs} copies were killed while running");
    assert!(
        interrupted * 2 >= runs,
        "most kills must land while copy runs: {interrupted} of {runs}"
    );

    // The next copy completes: every source snapshot is in the destination, whole.
    copy_completes();
    let copied = states_by_time(&dst, &times);
    assert_eq!(copied.len(), times.len());
    assert_check_passes(&dst, &["--read-data"]);
    for (id, state) in copied {
        restore_and_compare(&dst, &id, &state, "src");
    }
}

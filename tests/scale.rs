//! Scale (issue 20): memory and start-up do not grow with the repository. Two synthetic
//! repositories (the synth-repo example, benches/synth_repo.rs: real packs with sealed
//! headers, index files, trees and snapshots; only the blob contents are tiny) of 1,000,000 and
//! 4,000,000 blobs, and on each the steps of benches/scale.sh: a snapshot of a small new tree
//! (then again with --force, caches warm), the restore of one real file, check, forget --prune
//! of the two oldest snapshots, check again. Every step must succeed and peak at most
//! 256 MiB, and no step may peak more than [`GROWTH_LIMIT_MIB`] higher on the larger
//! repository; the warm snapshot must start within 2 s. Both sizes are past the fixed
//! buffers (tree packs decoded two at a time, 512 Ki used ids a batch, 32 MiB of mapped index
//! pages), which fill up to about a million blobs. benches/scale.sh runs the same steps at
//! 50 million blobs.
//!
//! The generator is an example, built by `cargo test` (every target) but not by
//! `cargo test --test scale` alone: then `cargo build --release --example synth-repo` first.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const PW: &str = "scale-test-password";
/// The bound for every step, at 50 million blobs.
const STEP_LIMIT_MIB: u64 = 256;
/// How much more a step may take on 4 times as many blobs. The index held in memory would
/// add 134 MiB (3 million blobs at 46.8 bytes); what does grow is per pack (the listing of
/// `data/`: 12,000 packs more) and mapped index pages not yet given back; 24-37 MiB here.
const GROWTH_LIMIT_MIB: u64 = 64;

/// A finished command: its peak RSS (of it and its children) and standard output.
struct Measured {
    peak_mib: u64,
    stdout: String,
}

/// Runs `cmd` (under `timeout`, so a hang fails) and returns its peak RSS from wait4; fails the
/// test with its standard error if it does not exit 0.
#[allow(clippy::zombie_processes)] // waited for by wait4, which std's Child cannot do
fn measure(what: &str, cmd: &mut Command) -> Measured {
    let out_dir = scratch_dir("ocvault-scale-out-");
    let stdout = out_dir.path().join("stdout");
    let stderr = out_dir.path().join("stderr");
    let child = cmd
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet waited for; both pointers are to live locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed for {what}");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    assert!(
        ok,
        "{what} failed (wait status {status}): {}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    Measured {
        peak_mib: usage.ru_maxrss as u64 / 1024,
        stdout: std::fs::read_to_string(&stdout).unwrap(),
    }
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_ocvault"))
        .parent()
        .unwrap()
        .join("examples")
}

/// `ocvault --repo REPO ARGS...` with only this test's settings, under a 10-minute timeout.
fn ocvault_at(repo: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("timeout");
    c.arg("600").arg(env!("CARGO_BIN_EXE_ocvault"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OCVAULT_") {
            c.env_remove(k);
        }
    }
    c.env("OCVAULT_PASSWORD", PW)
        .env("OCVAULT_CACHE_DIR", cache)
        .arg("--repo")
        .arg(repo)
        .args(args);
    c
}

/// Peak RSS (MiB) of each step on a synthetic repository of `blobs` blobs, and the warm
/// snapshot's start-up seconds.
fn steps_at(blobs: u64, work: &Path, new_tree: &Path) -> (Vec<(&'static str, u64)>, f64) {
    let repo = work.join(format!("synth-{blobs}"));
    let cache = work.join(format!("cache-{blobs}"));
    let real = work.join(format!("real-{blobs}"));
    let synth = examples_dir().join("synth-repo");
    assert!(
        synth.exists(),
        "{} is missing: run `cargo build --release --example synth-repo` (plain `cargo test --release` builds it)",
        synth.display()
    );
    let mut gen = Command::new("timeout");
    gen.arg("600")
        .arg(&synth)
        .arg("--repo")
        .arg(&repo)
        .args(["--blobs", &blobs.to_string(), "--real-file-out"])
        .arg(&real)
        .env("OCVAULT_PASSWORD", PW);
    measure(&format!("synth-repo --blobs {blobs}"), &mut gen);

    let tree = new_tree.to_str().unwrap();
    let mut peaks = Vec::new();
    let first = measure(
        "snapshot",
        &mut ocvault_at(&repo, &cache, &["--json", "-q", "snapshot", tree]),
    );
    peaks.push(("snapshot (first)", first.peak_mib));
    let warm = measure(
        "snapshot --force",
        &mut ocvault_at(
            &repo,
            &cache,
            &["--json", "-q", "snapshot", "--force", tree],
        ),
    );
    peaks.push(("snapshot (warm, --force)", warm.peak_mib));
    let startup = last_json_str(&warm.stdout)["startup_seconds"]
        .as_f64()
        .expect("startup_seconds in snapshot --json");

    let synthetic_snapshots = || -> Vec<serde_json::Value> {
        let args = ["--json", "snapshots", "--tag", "synthetic"];
        let list = measure("snapshots", &mut ocvault_at(&repo, &cache, &args));
        serde_json::from_str(&list.stdout).unwrap()
    };
    let mut snaps = synthetic_snapshots();
    snaps.sort_by_key(|s| s["time"].as_str().unwrap().to_string());
    let id = |s: &serde_json::Value| s["id"].as_str().unwrap().to_string();
    let newest = id(snaps.last().unwrap());
    let target = work.join(format!("restored-{blobs}"));
    let restore = measure(
        "restore",
        &mut ocvault_at(
            &repo,
            &cache,
            &[
                "restore",
                &newest,
                "--target",
                target.to_str().unwrap(),
                "--include",
                "synth/part-0/real.bin",
            ],
        ),
    );
    peaks.push(("restore", restore.peak_mib));
    assert!(
        std::fs::read(target.join("synth/part-0/real.bin")).unwrap()
            == std::fs::read(&real).unwrap(),
        "the restored file differs from the original at {blobs} blobs"
    );
    peaks.push(("check", min_of_two("check", &repo, &cache, &["check"])));
    let (a, b) = (id(&snaps[0]), id(&snaps[1]));
    let prune = measure(
        "forget --prune",
        &mut ocvault_at(&repo, &cache, &["forget", &a, &b, "--prune"]),
    );
    peaks.push(("forget --prune", prune.peak_mib));
    peaks.push((
        "check (after prune)",
        min_of_two("check after prune", &repo, &cache, &["check"]),
    ));
    assert_eq!(
        synthetic_snapshots().len(),
        snaps.len() - 2,
        "forget removed two snapshots"
    );
    std::fs::remove_dir_all(&repo).unwrap();
    (peaks, startup)
}

/// The lower peak of two runs of a command that only reads: a run's peak varies by 10-15 MiB
/// with when mapped index pages are given back.
fn min_of_two(what: &str, repo: &Path, cache: &Path, args: &[&str]) -> u64 {
    (0..2)
        .map(|_| measure(what, &mut ocvault_at(repo, cache, args)).peak_mib)
        .min()
        .unwrap()
}

fn last_json_str(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim().lines().last().expect("JSON output")).unwrap()
}

#[test]
fn memory_and_startup_are_flat_in_repository_size() {
    let work = scratch_dir("ocvault-scale-");
    let new_tree = work.path().join("new-tree");
    std::fs::create_dir_all(&new_tree).unwrap();
    let mut rng = Rng::new(2026);
    for i in 0..50 {
        let mut bytes = vec![0u8; 100_000];
        rng.fill(&mut bytes);
        std::fs::write(new_tree.join(format!("file-{i}.bin")), bytes).unwrap();
    }
    let (small, small_startup) = steps_at(1_000_000, work.path(), &new_tree);
    let (large, large_startup) = steps_at(4_000_000, work.path(), &new_tree);
    for ((step, s), (_, l)) in small.iter().zip(&large) {
        eprintln!("{step}: {s} MiB at 1,000,000 blobs, {l} MiB at 4,000,000");
        assert!(
            *s <= STEP_LIMIT_MIB && *l <= STEP_LIMIT_MIB,
            "{step} peaked at {s} / {l} MiB, over {STEP_LIMIT_MIB} MiB"
        );
        assert!(
            *l <= s + GROWTH_LIMIT_MIB,
            "{step} grew from {s} MiB at 1,000,000 blobs to {l} MiB at 4,000,000"
        );
    }
    eprintln!("warm start-up: {small_startup:.2} s and {large_startup:.2} s");
    assert!(
        large_startup <= 2.0,
        "warm snapshot start-up {large_startup:.2} s at 4,000,000 blobs"
    );
}

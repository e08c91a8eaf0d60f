//! The WAL archive's life cycle beside the snapshots: prune keeps what `wal/` records name,
//! `forget --keep-wal-within` deletes exactly what retention allows (and prune reclaims it),
//! `check` finds gaps, damaged records and missing blocks and alerts on stalled archiving,
//! and `copy` brings WAL across. WAL files are fake (random bytes under PostgreSQL's names,
//! 2 MiB segments so each is two blocks): none of this needs a server.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The segment size of the fake cluster (PostgreSQL allows powers of two from 1 MiB).
const SEG: u64 = 2 << 20;
const TIMEOUT: Duration = Duration::from_secs(120);

/// Name of segment `n` (position from LSN 0) of timeline 1.
fn seg(n: u64) -> String {
    let lsn = n * SEG;
    format!(
        "{:08X}{:08X}{:08X}",
        1,
        lsn >> 32,
        (lsn & 0xffff_ffff) / SEG
    )
}

/// An LSN as PostgreSQL prints it.
fn lsn(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff)
}

fn new_repo() -> TestRepo {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    repo
}

/// The fake `pg_wal` folder of a repository's test.
fn pg_wal(repo: &TestRepo) -> PathBuf {
    let dir = repo.path("pg_wal");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Files under `dir` of the repository (recursively), as paths.
fn files(repo: &TestRepo, dir: &str) -> BTreeSet<PathBuf> {
    fn walk(p: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else {
                out.insert(e.path());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&repo.repo.join(dir), &mut out);
    out
}

/// What one push added to the repository.
struct Pushed {
    record: PathBuf,
    index_files: Vec<PathBuf>,
    packs: Vec<PathBuf>,
}

/// Pushes one file with `wal-push`; returns the files it added.
fn push_file(repo: &TestRepo, path: &Path) -> Pushed {
    let (wal, index, data) = (
        files(repo, "wal"),
        files(repo, "index"),
        files(repo, "data"),
    );
    repo.cmd()
        .arg("wal-push")
        .arg(path)
        .timeout(TIMEOUT)
        .assert()
        .success();
    let added = |before: BTreeSet<PathBuf>, dir| -> Vec<PathBuf> {
        files(repo, dir).difference(&before).cloned().collect()
    };
    let record = added(wal, "wal");
    assert_eq!(record.len(), 1, "one record per pushed file");
    Pushed {
        record: record[0].clone(),
        index_files: added(index, "index"),
        packs: added(data, "data"),
    }
}

/// Writes segment `n` (random bytes, seeded by `n`) and pushes it.
fn push_segment(repo: &TestRepo, n: u64) -> Pushed {
    let path = pg_wal(repo).join(seg(n));
    random_file(&path, SEG as usize, 1000 + n);
    push_file(repo, &path)
}

fn push_text(repo: &TestRepo, name: &str, text: &str) -> Pushed {
    let path = pg_wal(repo).join(name);
    std::fs::write(&path, text).unwrap();
    push_file(repo, &path)
}

/// `wal-fetch NAME` into a fresh file; the exit code and the bytes fetched.
fn fetch(repo: &TestRepo, name: &str) -> (i32, Option<Vec<u8>>) {
    let dest = repo.path(&format!("fetched-{name}"));
    let _ = std::fs::remove_file(&dest);
    let out = repo
        .cmd()
        .args(["wal-fetch", "--prefetch", "0", "--retry-for", "1s", name])
        .arg(&dest)
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), std::fs::read(&dest).ok())
}

/// Asserts `wal-fetch NAME` returns exactly the bytes pushed.
fn assert_fetches_pushed(repo: &TestRepo, name: &str) {
    let (code, bytes) = fetch(repo, name);
    assert_eq!(code, 0, "wal-fetch {name}");
    let pushed = std::fs::read(pg_wal(repo).join(name)).unwrap();
    assert!(bytes.unwrap() == pushed, "{name}: fetched bytes differ");
}

fn pg_time(unix_secs: i64) -> String {
    chrono::DateTime::from_timestamp(unix_secs, 0)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One ustar member (header and body padded to 512 bytes), as pg_basebackup -Ft writes.
fn tar_member(name: &str, body: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000600\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", body.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(body);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// Records a base backup starting in segment `start` and stopping in segment `stop`, which
/// stopped `stopped_ago` before now: pushes its backup history file (as PostgreSQL does when
/// the backup ends), then snapshots a tar whose first member is its backup_label. Returns
/// the snapshot id.
fn base_backup(
    repo: &TestRepo,
    label: &str,
    start: u64,
    stop: u64,
    stopped_ago: Duration,
) -> String {
    let start_lsn = start * SEG + 0x28;
    let stop_lsn = stop * SEG + 0x100;
    let stop_time = now_secs() - stopped_ago.as_secs() as i64;
    let start_time = stop_time - 60;
    let common = format!(
        "START WAL LOCATION: {} (file {})\nCHECKPOINT LOCATION: {}\nBACKUP METHOD: streamed\n\
         BACKUP FROM: primary\nSTART TIME: {}\nLABEL: {label}\nSTART TIMELINE: 1\n",
        lsn(start_lsn),
        seg(start),
        lsn(start_lsn + 0x38),
        pg_time(start_time)
    );
    let history = format!(
        "{common}STOP WAL LOCATION: {} (file {})\nSTOP TIME: {}\nSTOP TIMELINE: 1\n",
        lsn(stop_lsn),
        seg(stop),
        pg_time(stop_time)
    );
    push_text(repo, &format!("{}.00000028.backup", seg(start)), &history);
    let mut tar = tar_member("backup_label", common.as_bytes());
    tar.extend(tar_member("base/1/1234", label.as_bytes()));
    tar.extend([0u8; 1024]);
    let out = repo
        .cmd()
        .args([
            "--json",
            "snapshot",
            "--stdin",
            "--stdin-filename",
            "base.tar",
        ])
        .write_stdin(tar)
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert!(out.status.success(), "snapshot: {out:?}");
    let id = last_json(&out)["snapshot_id"]
        .as_str()
        .expect("snapshot id")
        .to_string();
    // The snapshot is a base backup with its stop filled from the history file.
    let snaps = repo
        .cmd()
        .args(["--json", "snapshots"])
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    let list = last_json(&snaps);
    let snap = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"].as_str() == Some(&id))
        .expect("snapshot listed");
    assert_eq!(snap["postgres"]["stop_lsn"], lsn(stop_lsn), "{snap}");
    id
}

/// `check` (with `args`) as JSON, with its exit code.
fn check(repo: &TestRepo, args: &[&str]) -> (i32, serde_json::Value) {
    let out = repo
        .cmd()
        .args(["--json", "check"])
        .args(args)
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), last_json(&out))
}

fn damaged_objects(report: &serde_json::Value) -> Vec<String> {
    report["damage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{}: {}",
                d["object"].as_str().unwrap(),
                d["problem"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn prune_keeps_wal_blocks_and_reclaims_them_once_forget_deletes_the_records() {
    let repo = new_repo();
    for n in 1..=4 {
        push_segment(&repo, n);
    }
    let before = dir_size(&repo.repo.join("data"));
    assert!(before >= 4 * SEG, "segments stored: {before} bytes");
    // No snapshot names these blocks: only the records keep them.
    let out = repo
        .cmd()
        .args(["--json", "prune"])
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report = last_json(&out);
    // Not even marked (a mark's second phase would put them back, at a cost).
    assert_eq!(report["packs_to_remove"], 0, "{report}");
    assert_eq!(report["unused_blobs"], 0, "{report}");
    assert!(
        dir_size(&repo.repo.join("data")) >= before,
        "prune deleted WAL packs"
    );
    for n in 1..=4 {
        assert_fetches_pushed(&repo, &seg(n));
    }

    // A base backup in segment 3, long stopped: retention lets 1 and 2 go.
    base_backup(&repo, "b", 3, 3, Duration::from_secs(3 * 86_400));
    repo.cmd()
        .args(["forget", "--keep-wal-within", "1d", "--prune"])
        .timeout(TIMEOUT)
        .assert()
        .success();
    assert_eq!(fetch(&repo, &seg(1)).0, 1, "segment 1 is forgotten");
    assert_eq!(fetch(&repo, &seg(2)).0, 1, "segment 2 is forgotten");
    for n in 3..=4 {
        assert_fetches_pushed(&repo, &seg(n));
    }
    let after = dir_size(&repo.repo.join("data"));
    assert!(
        after + 2 * SEG <= before + SEG / 2,
        "prune reclaimed the two forgotten segments: {before} -> {after} bytes"
    );
    assert_check_passes(&repo, &[]);
}

#[test]
fn forget_keep_wal_within_deletes_exactly_what_retention_says() {
    let repo = new_repo();
    for n in 1..=12 {
        push_segment(&repo, n);
    }
    push_text(
        &repo,
        "00000002.history",
        "1\t0/1A00000\tno recovery target specified\n",
    );
    let day = Duration::from_secs(86_400);
    let a = base_backup(&repo, "a", 3, 4, day * 10);
    base_backup(&repo, "b", 7, 8, day * 8);
    base_backup(&repo, "c", 10, 10, day);
    let backup_file = |n: u64| format!("{}.00000028.backup", seg(n));
    let records = files(&repo, "wal").len();
    assert_eq!(records, 12 + 1 + 3);

    // Within 7 days: B (stopped 8 days ago) anchors; A keeps what it needs (3..=4).
    let out = repo
        .cmd()
        .args(["--json", "forget", "--keep-wal-within", "7d", "--dry-run"])
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let expected: Vec<String> = [1, 2, 5, 6].iter().map(|&n| seg(n)).collect();
    let json = last_json(&out);
    assert_eq!(json["wal"]["deleted_files"], serde_json::json!(expected));
    assert_eq!(json["wal"]["oldest_kept"], seg(3));
    assert_eq!(
        files(&repo, "wal").len(),
        records,
        "a dry run deletes nothing"
    );

    repo.cmd()
        .args(["forget", "--keep-wal-within", "7d"])
        .timeout(TIMEOUT)
        .assert()
        .success();
    assert_eq!(files(&repo, "wal").len(), records - 4);
    for n in [1, 2, 5, 6] {
        assert_eq!(fetch(&repo, &seg(n)).0, 1, "{} deleted", seg(n));
    }
    for n in [3, 4, 7, 8, 9, 10, 11, 12] {
        assert_fetches_pushed(&repo, &seg(n));
    }
    // What retention left between A and B is not damage, but check says so.
    let (code, report) = check(&repo, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        report["wal"]["gaps_between_base_backups"][0]["first_missing"],
        seg(5)
    );

    // Forgetting A lets its WAL and its backup history file go; prune reclaims them.
    let before = dir_size(&repo.repo.join("data"));
    let out = repo
        .cmd()
        .args([
            "--json",
            "forget",
            "--keep-last",
            "2",
            "--keep-wal-within",
            "7d",
            "--prune",
        ])
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let json = out
        .stdout
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .find(|v| v.get("wal").is_some())
        .expect("forget's JSON");
    assert_eq!(json["removed"], serde_json::json!([a]));
    assert_eq!(
        json["wal"]["deleted_files"],
        serde_json::json!([seg(3), backup_file(3), seg(4)])
    );
    assert_eq!(fetch(&repo, &seg(3)).0, 1);
    assert_eq!(fetch(&repo, "00000002.history").0, 0, "history files stay");
    assert_eq!(
        fetch(&repo, &backup_file(7)).0,
        0,
        "B's backup history file stays"
    );
    let after = dir_size(&repo.repo.join("data"));
    assert!(
        after + 2 * SEG <= before + SEG / 2,
        "reclaimed: {before} -> {after}"
    );
    assert_check_passes(&repo, &[]);
    // The operations log says what forget deleted.
    let log = repo.cmd().args(["log"]).timeout(TIMEOUT).output().unwrap();
    assert!(
        String::from_utf8_lossy(&log.stdout).contains("3 WAL files deleted"),
        "{}",
        String::from_utf8_lossy(&log.stdout)
    );
}

#[test]
fn check_finds_a_gap_a_damaged_record_and_missing_or_damaged_blocks() {
    let repo = new_repo();
    let pushed: Vec<Pushed> = (1..=6).map(|n| push_segment(&repo, n)).collect();
    base_backup(&repo, "b", 2, 2, Duration::from_secs(60));
    assert_check_passes(&repo, &[]);
    let hold = repo.path("held");

    // A record deleted in the middle: a gap named by its first missing segment.
    std::fs::rename(&pushed[3].record, &hold).unwrap();
    let (code, report) = check(&repo, &[]);
    assert_eq!(code, 4, "{report}");
    assert_eq!(report["wal"]["gaps"][0]["first_missing"], seg(4));
    assert!(
        damaged_objects(&report).iter().any(|d| d.contains(&seg(4))),
        "{report}"
    );
    std::fs::rename(&hold, &pushed[3].record).unwrap();
    assert_check_passes(&repo, &[]);

    // A record that does not open.
    let original = std::fs::read(&pushed[4].record).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(&pushed[4].record, &bad).unwrap();
    let (code, report) = check(&repo, &[]);
    assert_eq!(code, 4, "{report}");
    let record = pushed[4].record.file_name().unwrap().to_str().unwrap();
    assert!(
        damaged_objects(&report).iter().any(|d| d.contains(record)),
        "{report}"
    );
    std::fs::write(&pushed[4].record, &original).unwrap();
    assert_check_passes(&repo, &[]);

    // Blocks in no index: the index file of segment 6's push is gone.
    assert!(!pushed[5].index_files.is_empty());
    for f in &pushed[5].index_files {
        std::fs::rename(f, repo.path("held-index")).unwrap();
        let (code, report) = check(&repo, &[]);
        assert_eq!(code, 4, "{report}");
        assert!(
            damaged_objects(&report)
                .iter()
                .any(|d| d.contains(&seg(6)) && d.contains("not indexed")),
            "{report}"
        );
        std::fs::rename(repo.path("held-index"), f).unwrap();
    }
    assert_check_passes(&repo, &[]);

    // A damaged block, found by --read-data only.
    let pack = &pushed[5].packs[0];
    let original = std::fs::read(pack).unwrap();
    let mut bad = original.clone();
    bad[100] ^= 1;
    std::fs::write(pack, &bad).unwrap();
    let (code, report) = check(&repo, &["--read-data"]);
    assert_eq!(code, 4, "{report}");
    assert!(
        damaged_objects(&report).iter().any(|d| d.contains(&seg(6))),
        "{report}"
    );
    std::fs::write(pack, &original).unwrap();
    assert_check_passes(&repo, &["--read-data"]);
}

#[test]
fn check_max_wal_age_alerts_when_archiving_stalls() {
    let repo = new_repo();
    // Nothing archived at all is too old.
    let (code, report) = check(&repo, &["--max-wal-age", "1h"]);
    assert_eq!(code, 5, "{report}");
    assert_eq!(check(&repo, &[]).0, 0);
    push_segment(&repo, 1);
    let (code, report) = check(&repo, &["--max-wal-age", "1h"]);
    assert_eq!(code, 0, "{report}");
    std::thread::sleep(Duration::from_secs(3));
    let (code, report) = check(&repo, &["--max-wal-age", "1s"]);
    assert_eq!(code, 5, "{report}");
    assert!(report["wal"]["too_old"]["age_seconds"].as_u64().unwrap() >= 2);
    let out = repo
        .cmd()
        .args(["check", "--max-wal-age", "1s"])
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the newest WAL file was archived"));
}

#[test]
fn copy_brings_wal_and_base_backups_across_and_refuses_a_version_1_destination() {
    let src = new_repo();
    for n in 1..=3 {
        push_segment(&src, n);
    }
    push_text(
        &src,
        "00000002.history",
        "1\t0/600000\tno recovery target specified\n",
    );
    base_backup(&src, "b", 1, 2, Duration::from_secs(60));
    let dst = new_repo();
    let copy = |dst_repo: &Path, password: &str| {
        src.cmd()
            .args(["--json", "copy", "--all", "--to"])
            .arg(dst_repo)
            .env("OCVAULT_TO_PASSWORD", password)
            .timeout(TIMEOUT)
            .output()
            .unwrap()
    };
    let out = copy(&dst.repo, &dst.password);
    assert!(out.status.success(), "{out:?}");
    let report = last_json(&out);
    assert_eq!(report["wal"]["copied"], 3 + 1 + 1, "{report}");
    // Read back from the destination, with its own keys.
    std::fs::create_dir_all(pg_wal(&dst)).unwrap();
    for name in [seg(1), seg(2), seg(3), "00000002.history".into()] {
        let (code, bytes) = fetch(&dst, &name);
        assert_eq!(code, 0, "{name}");
        let pushed = std::fs::read(pg_wal(&src).join(&name)).unwrap();
        assert!(
            bytes.unwrap() == pushed,
            "{name}: bytes differ in the destination"
        );
    }
    let snaps = last_json(
        &dst.cmd()
            .args(["--json", "snapshots"])
            .timeout(TIMEOUT)
            .output()
            .unwrap(),
    );
    assert_eq!(snaps[0]["postgres"]["start_wal"], seg(1), "{snaps}");
    assert_check_passes(&dst, &["--read-data"]);
    // Again: nothing new to copy.
    let out = copy(&dst.repo, &dst.password);
    let report = last_json(&out);
    assert_eq!(report["wal"]["copied"], 0);
    assert_eq!(report["wal"]["present"], 5);

    // A version 1 destination is refused before anything is written.
    let v1 = src.path("v1");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/repo-v1"),
        &v1,
    );
    let password = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/password"),
    )
    .unwrap();
    let before = fingerprint(&v1);
    let out = copy(&v1, password.trim_end_matches('\n'));
    assert_one_line_error(&out, 11, "version 1");
    assert!(
        fingerprint(&v1) == before,
        "the version 1 repository changed"
    );
}

/// `pitr` refuses to start a recovery that a gap in the archive would cut short (PostgreSQL
/// would take the missing file as the end of the archive and promote there), writing
/// nothing; with the archive whole, it unpacks the base backup and the recovery settings.
#[test]
fn pitr_refuses_a_gap_on_the_way_and_recovers_from_a_whole_archive() {
    let repo = new_repo();
    let pushed: Vec<Pushed> = (1..=6).map(|n| push_segment(&repo, n)).collect();
    base_backup(&repo, "b", 2, 2, Duration::from_secs(60));
    let hold = repo.path("held");
    std::fs::rename(&pushed[3].record, &hold).unwrap();
    let target = repo.path("recovered");
    let out = repo
        .cmd()
        .args(["pitr", "--latest", "--target"])
        .arg(&target)
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(err.contains(&format!("{} is missing", seg(4))), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| !l.contains("warning:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(!target.exists(), "nothing unpacked");

    std::fs::rename(&hold, &pushed[3].record).unwrap();
    let out = repo
        .cmd()
        .args(["pitr", "--latest", "--target"])
        .arg(&target)
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(target.join("base/1/1234")).unwrap(), b"b");
    assert!(target.join("recovery.signal").exists());
    let conf = std::fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("wal-fetch %f %p'"), "{conf}");
    assert!(!conf.contains("recovery_target_time ="), "{conf}");
}

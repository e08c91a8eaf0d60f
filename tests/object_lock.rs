//! S3 Object Lock (issue 18) against moto in server mode, which implements Object Lock: it
//! refuses DELETE ?versionId= of a locked version, and a plain DELETE adds a delete marker.
//! What the tests do "through the S3 API with the same credentials" goes through
//! `tests/common/s3_admin.py` ([`common::s3_admin::S3Admin`]).
//!
//! Features each test needs (design18.md):
//! * `moto_harness_*`: none (the harness and moto alone; pass today).
//! * `compliance_lock_survives_deletes_and_prune_reports_retained`: `init --lock-mode
//!   compliance --lock-days N` (config, PUT with lock headers for config, keys/, snapshots/,
//!   index/, log/, data/; none on locks/, prune/), the retain-until rule
//!   `ceil_to_day(write + lock_days)`, prune reporting "retained until DATE".
//! * `lock_mode_on_bucket_without_object_lock_fails_in_one_line`: init's check that the
//!   bucket has Object Lock enabled.
//! * `ransomware_with_the_same_credentials_is_undone_by_original_versions`: the above plus
//!   `-o s3.original_versions=true` (reads and listings from each key's oldest version).
//! * `backup_host_without_delete_rights_snapshots_and_checks`: snapshot and check that need
//!   no DeleteObject (backup markers left for a later `unlock`/prune by other credentials, or
//!   a failed marker delete not failing the command); moto's IAM enforcement (passes the
//!   harness part today).

mod common;

use chrono::{DateTime, Duration as Days, NaiveTime, Utc};
use common::s3_admin::{S3Admin, VersionEntry};
use common::servers::{self, Server};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

const PW: &str = "object lock test password";
use common::s3_cli::{self, text, tree};

/// The kinds of object ocvault must lock: everything a restore needs.
const LOCKED_KINDS: [&str; 6] = ["config", "keys", "snapshots", "index", "log", "data"];
/// The kinds that must stay deletable.
const TRANSIENT_KINDS: [&str; 4] = ["locks", "prune", "tmp", "retention"];

/// `repo/data/ab/…` -> "data", `repo/config` -> "config".
fn kind(key: &str) -> &str {
    let rest = key.strip_prefix("repo/").unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

fn run(s: &Server, args: &[&str]) -> Output {
    s3_cli::run(s, PW, args)
}

fn run_ok(s: &Server, args: &[&str]) -> Output {
    s3_cli::run_ok(s, PW, args)
}

fn init_locked(s: &Server, days: &str) {
    s3_cli::init(
        s,
        PW,
        &[],
        &["--lock-mode", "compliance", "--lock-days", days],
    );
}

fn snapshot(s: &Server, src: &Path) -> String {
    s3_cli::snapshot(s, PW, src)
}

/// Three snapshots of a changing tree under `s.dir`; returns (id, copy of the tree as it
/// was) for each, oldest first.
fn three_snapshots(s: &Server) -> Vec<(String, PathBuf)> {
    let src = s.dir.path().join("src");
    tree(&src, 18);
    let mut out = Vec::new();
    for day in 0..3u64 {
        if day > 0 {
            mutate_tree(&src, 0.2, 100 + day);
        }
        let id = snapshot(s, &src);
        let copy = s.dir.path().join(format!("day{day}"));
        copy_tree(&src, &copy.join("src"));
        out.push((id, copy.join("src")));
    }
    out
}

/// Restores `id` (with `extra` options first) and compares it with `expected` byte for byte.
fn restore_equals(s: &Server, extra: &[&str], id: &str, expected: &Path) {
    let target = s.dir.path().join(format!("restore-{id}-{}", extra.len()));
    let _ = std::fs::remove_dir_all(&target);
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["restore", id, "--target", target.to_str().unwrap()]);
    run_ok(s, &args);
    assert_trees_equal(expected, &target.join("src"));
    std::fs::remove_dir_all(&target).unwrap();
}

fn versions_of(list: &[VersionEntry]) -> Vec<(String, String)> {
    list.iter()
        .filter(|v| !v.delete_marker)
        .map(|v| (v.key.clone(), v.version_id.clone()))
        .collect()
}

/// The locked versions of what a restore needs: every kind is present, and each has
/// COMPLIANCE retention until a UTC midnight `ceil_to_day(write + days)` (today + days or
/// one more day, the test runs within minutes).
fn assert_locked(admin: &S3Admin, versions: &[(String, String)], days: i64) {
    let locked: Vec<(String, String)> = versions
        .iter()
        .filter(|(k, _)| LOCKED_KINDS.contains(&kind(k)))
        .cloned()
        .collect();
    for want in ["config", "keys", "snapshots", "index", "data"] {
        assert!(
            locked.iter().any(|(k, _)| kind(k) == want),
            "no {want} object in {versions:?}"
        );
    }
    let today = Utc::now().date_naive();
    for h in admin.head_versions(&locked) {
        assert!(h.ok, "HEAD {h:?}");
        assert_eq!(h.lock_mode.as_deref(), Some("COMPLIANCE"), "{h:?}");
        let until = h.retain_until.as_deref().expect("retain-until date");
        let until = DateTime::parse_from_rfc3339(until)
            .unwrap_or_else(|e| panic!("{until}: {e}"))
            .with_timezone(&Utc);
        assert_eq!(until.time(), NaiveTime::MIN, "not a UTC midnight: {h:?}");
        let day = until.date_naive();
        assert!(
            day >= today + Days::days(days) && day <= today + Days::days(days + 1),
            "retain-until {day} for a {days}-day lock written {today}: {h:?}"
        );
    }
}

/// Transient objects (backup markers, prune marks, temporary files, ledgers) carry no
/// retention in any version; returns how many versions were looked at.
fn assert_transient_unlocked(admin: &S3Admin) -> usize {
    let transient: Vec<(String, String)> = versions_of(&admin.versions("repo/"))
        .into_iter()
        .filter(|(k, _)| TRANSIENT_KINDS.contains(&kind(k)))
        .collect();
    for h in admin.head_versions(&transient) {
        assert!(h.ok, "HEAD {h:?}");
        assert_eq!(h.lock_mode, None, "a transient object is locked: {h:?}");
        assert_eq!(h.retain_until, None, "a transient object is locked: {h:?}");
    }
    transient.len()
}

#[test]
fn moto_harness_refuses_locked_deletes_and_lists_versions() {
    let moto = servers::moto();
    moto.create_lock_bucket("harness-lock");
    let admin = moto.admin("harness-lock");
    let keys: Vec<String> = vec!["repo/data/aa/locked".into(), "repo/locks/marker".into()];
    let put = admin.put_locked(&keys[..1], 1);
    assert!(put.iter().all(|o| o.ok), "{put:?}");
    // A plain object (no retention) beside it, as a backup marker is.
    let put = admin.overwrite(&keys[1..]);
    assert!(put.iter().all(|o| o.ok), "{put:?}");
    let heads = admin.head(&keys);
    assert_eq!(
        heads[0].lock_mode.as_deref(),
        Some("COMPLIANCE"),
        "{heads:?}"
    );
    assert_eq!(heads[1].lock_mode, None, "{heads:?}");
    let listed = admin.list("repo/");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|o| o.storage_class == "STANDARD"));

    // Plain deletes add markers; the versions stay.
    let deleted = admin.delete(&keys);
    assert!(
        deleted.iter().all(|o| o.ok && o.delete_marker),
        "{deleted:?}"
    );
    assert!(admin.list("repo/").is_empty());
    let versions = admin.versions("repo/");
    assert_eq!(versions.iter().filter(|v| v.delete_marker).count(), 2);
    let real = versions_of(&versions);
    assert_eq!(real.len(), 2, "{versions:?}");
    // Deleting the locked version is refused; the unlocked one goes.
    let outcomes = admin.delete_versions(&real);
    for o in &outcomes {
        if o.key == keys[0] {
            assert!(!o.ok, "a locked version was deleted: {o:?}");
            assert_eq!(o.error.as_deref(), Some("AccessDenied"), "{o:?}");
        } else {
            assert!(o.ok, "{o:?}");
        }
    }
    assert_eq!(versions_of(&admin.versions("repo/")).len(), 1);
    // The request log saw those requests.
    let deletes = moto
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("versionId="))
        .count();
    assert_eq!(deletes, 2);
}

#[test]
fn compliance_lock_survives_deletes_and_prune_reports_retained() {
    let moto = servers::moto();
    moto.create_lock_bucket("ocvault-locked");
    let s = moto.repo("ocvault-locked");
    let admin = moto.admin("ocvault-locked");
    init_locked(&s, "1");
    let snaps = three_snapshots(&s);

    let all = admin.versions("repo/");
    let versions = versions_of(&all);
    assert_locked(&admin, &versions, 1);
    // Every snapshot took a backup marker (deleted again); none is locked.
    assert!(
        assert_transient_unlocked(&admin) > 0,
        "no backup marker version under locks/: {all:?}"
    );

    // Permanent deletion of anything a restore needs is refused by the server.
    let needed: Vec<(String, String)> = versions
        .iter()
        .filter(|(k, _)| LOCKED_KINDS.contains(&kind(k)))
        .cloned()
        .collect();
    for o in admin.delete_versions(&needed) {
        assert!(!o.ok, "the server deleted a locked version: {o:?}");
    }
    assert_eq!(versions_of(&admin.versions("repo/")), versions);

    // forget + prune on a locked repository succeed and say what stays until when.
    let out = run_ok(&s, &["forget", "--keep-last", "1", "--prune"]);
    let said = text(&out);
    assert!(said.contains("retained by Object Lock until"), "{said}");
    // A second prune finds the same locked objects and succeeds too.
    let out = run_ok(&s, &["prune"]);
    assert!(
        text(&out).contains("retained by Object Lock until"),
        "{}",
        text(&out)
    );

    let out = run_ok(&s, &["--json", "snapshots"]);
    let listed = last_json(&out);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], snaps[2].0.as_str());
    // The forgotten snapshots' files are gone from the listing, their locked versions stay.
    let after = admin.versions("repo/snapshots/");
    assert_eq!(versions_of(&after).len(), 3, "{after:?}");
    assert_eq!(admin.list("repo/snapshots/").len(), 1);

    run_ok(&s, &["check", "--read-data"]);
    restore_equals(&s, &[], &snaps[2].0, &snaps[2].1);

    // Markers and prune marks: never locked, and nothing of them is left live.
    assert_transient_unlocked(&admin);
    for prefix in ["repo/locks/", "repo/prune/", "repo/tmp/"] {
        let live = admin.list(prefix);
        assert!(live.is_empty(), "{prefix} still holds {live:?}");
    }
}

#[test]
fn lock_mode_on_bucket_without_object_lock_fails_in_one_line() {
    let moto = servers::moto();
    for (bucket, versioned) in [("no-lock-plain", false), ("no-lock-versioned", true)] {
        if versioned {
            moto.create_versioned_bucket(bucket);
        } else {
            moto.create_bucket(bucket);
        }
        let s = moto.repo(bucket);
        let out = run(
            &s,
            &[
                "init",
                "--kdf-memory-kib",
                "1024",
                "--kdf-iterations",
                "1",
                "--lock-mode",
                "compliance",
                "--lock-days",
                "1",
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{bucket}: {}", text(&out));
        assert!(
            matches!(out.status.code(), Some(1) | Some(2)),
            "{bucket}: {}",
            text(&out)
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{bucket}: {err:?}");
        assert!(err.starts_with("ocvault: "), "{err:?}");
        assert!(err.contains("Object Lock"), "{bucket}: {err:?}");
        // No repository was created.
        let left = moto.admin(bucket).list("repo/config");
        assert!(left.is_empty(), "{bucket}: init wrote {left:?}");
    }
}

#[test]
fn ransomware_with_the_same_credentials_is_undone_by_original_versions() {
    let moto = servers::moto();
    moto.create_lock_bucket("ocvault-ransom");
    let s = moto.repo("ocvault-ransom");
    // The attacker holds the backup host's credentials: the same ones.
    let attacker = moto.admin("ocvault-ransom");
    init_locked(&s, "1");
    let snaps = three_snapshots(&s);
    let keys: Vec<String> = attacker.list("repo/").into_iter().map(|o| o.key).collect();
    assert!(keys.iter().any(|k| kind(k) == "data"), "{keys:?}");

    // 1. Delete every key (delete markers on top).
    let deleted = attacker.delete(&keys);
    assert!(deleted.iter().all(|o| o.ok), "{deleted:?}");
    assert!(attacker.list("repo/").is_empty());
    // 2. Delete every version permanently: refused for everything ocvault locked.
    let versions = versions_of(&attacker.versions("repo/"));
    for o in attacker.delete_versions(&versions) {
        if LOCKED_KINDS.contains(&kind(&o.key)) {
            assert!(!o.ok, "the attacker deleted {o:?}");
        }
    }
    // 3. Overwrite every key with junk (new current versions).
    let overwritten = attacker.overwrite(&keys);
    assert!(overwritten.iter().all(|o| o.ok), "{overwritten:?}");

    // Plainly the repository is destroyed: its config is junk, so ocvault finds no
    // repository there (exit 10), not damage inside one (4).
    let out = run(&s, &["check"]);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));

    // Reading each key's oldest version (ocvault's own) brings every snapshot back.
    let original = ["-o", "s3.original_versions=true"];
    let out = run_ok(
        &s,
        &["-o", "s3.original_versions=true", "--json", "snapshots"],
    );
    let listed = last_json(&out);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    for (id, expected) in &snaps {
        restore_equals(&s, &original, id, expected);
    }
    run_ok(
        &s,
        &["-o", "s3.original_versions=true", "check", "--read-data"],
    );
}

#[test]
fn moto_harness_enforces_iam_for_a_backup_host_without_delete_rights() {
    let mut moto = servers::moto();
    let creds = moto.enforce_iam();
    moto.create_versioned_bucket("iam-harness");
    let admin = moto.admin("iam-harness");
    let host = moto.admin_as("iam-harness", &creds.backup_host);
    let keys = vec!["repo/data/aa/pack".to_string()];
    assert!(host.overwrite(&keys).iter().all(|o| o.ok));
    assert_eq!(host.list("repo/").len(), 1);
    let refused = host.delete(&keys);
    assert_eq!(
        refused[0].error.as_deref(),
        Some("AccessDenied"),
        "{refused:?}"
    );
    let v = versions_of(&host.versions("repo/"));
    let refused = host.delete_versions(&v);
    assert_eq!(
        refused[0].error.as_deref(),
        Some("AccessDenied"),
        "{refused:?}"
    );
    assert_eq!(admin.list("repo/").len(), 1);
    // Unknown keys are refused outright once authentication is on.
    let stranger = moto.admin_as(
        "iam-harness",
        &common::s3_admin::S3Credentials::test_default(),
    );
    let out = stranger.try_run("list", &["--prefix", "repo/"], None);
    assert!(!out.status.success(), "moto let an unknown key list");
    // The admin may delete.
    assert!(admin.delete(&keys)[0].ok);

    // ocvault signs its requests as moto checks them: the backup host snapshots, checks
    // and restores a repository the operator created (no Object Lock needed for this).
    let operator = moto.repo("iam-harness");
    run_ok(
        &operator,
        &["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"],
    );
    let host = moto.repo_as("iam-harness", &creds.backup_host);
    let src = host.dir.path().join("src");
    tree(&src, 3);
    let id = snapshot(&host, &src);
    run_ok(&host, &["check", "--read-data"]);
    restore_equals(&host, &[], &id, &src);
    let denied = moto
        .requests()
        .iter()
        .filter(|r| r.status == 403 && r.method != "DELETE")
        .count();
    assert_eq!(denied, 1, "only the stranger's listing is refused");
}

#[test]
fn backup_host_without_delete_rights_snapshots_and_checks() {
    let mut moto = servers::moto();
    let creds = moto.enforce_iam();
    moto.create_lock_bucket("write-only-host");
    let operator = moto.repo("write-only-host");
    init_locked(&operator, "1");
    let host = moto.repo_as("write-only-host", &creds.backup_host);
    let src = host.dir.path().join("src");
    tree(&src, 5);
    let first = snapshot(&host, &src);
    mutate_tree(&src, 0.2, 6);
    let second = snapshot(&host, &src);
    assert_ne!(first, second);
    run_ok(&host, &["check"]);
    restore_equals(&host, &[], &second, &src);
    // The host cannot remove what it wrote.
    let keys: Vec<String> = moto
        .admin("write-only-host")
        .list("repo/snapshots/")
        .into_iter()
        .map(|o| o.key)
        .collect();
    let refused = moto
        .admin_as("write-only-host", &creds.backup_host)
        .delete(&keys);
    assert!(refused.iter().all(|o| !o.ok), "{refused:?}");
}

//! Dual approval (issue 19): `key split --shares 3 --threshold 2`, then restores with key
//! shares instead of the password; too few shares, a wrong share password and shares of
//! another repository are refused with exit 12.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every command here is small; one that takes longer has hung.
const LIMIT: Duration = Duration::from_secs(120);
const WRONG_PASSWORD: i32 = 12;

/// A repository with one snapshot of a small tree, split into 3 shares with threshold 2.
struct Split {
    repo: TestRepo,
    src: PathBuf,
    snapshot: String,
    shares: Vec<PathBuf>,
    share_passwords: Vec<PathBuf>,
}

fn split_repository() -> Split {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    generate_tree(
        &src,
        &TreeSpec {
            small_files: 60,
            big_file_bytes: 300_000,
            seed: 19,
            ..Default::default()
        },
    );
    let snapshot = snapshot_id(&repo, &[], &src);
    let SplitShares {
        files: shares,
        passwords: share_passwords,
    } = SplitShares::two_of_three(repo.cmd(), &repo.path(""));
    for s in &shares {
        let bytes = std::fs::read(s).unwrap();
        assert_eq!(&bytes[..8], b"OCVSHARE", "{}", s.display());
    }
    let log = repo.cmd().arg("log").timeout(LIMIT).output().unwrap();
    assert!(
        String::from_utf8_lossy(&log.stdout).contains("key split"),
        "{log:?}"
    );
    Split {
        repo,
        src,
        snapshot,
        shares,
        share_passwords,
    }
}

/// `ocvault --repo R` with no repository password at all, plus `--share`/password pairs.
fn with_shares(split: &Split, which: &[(usize, &Path)]) -> assert_cmd::Command {
    let mut cmd = ocvault();
    cmd.arg("--repo").arg(&split.repo.repo);
    for (i, pw) in which {
        cmd.arg("--share").arg(&split.shares[*i]);
        cmd.arg("--share-password-file").arg(pw);
    }
    cmd.timeout(LIMIT);
    cmd
}

fn pair(split: &Split, a: usize, b: usize) -> Vec<(usize, &Path)> {
    vec![
        (a, split.share_passwords[a].as_path()),
        (b, split.share_passwords[b].as_path()),
    ]
}

fn restore_with(split: &Split, which: &[(usize, &Path)], target: &Path) -> std::process::Output {
    with_shares(split, which)
        .args(["restore", &split.snapshot, "--target"])
        .arg(target)
        .output()
        .unwrap()
}

/// Restores the snapshot with shares `a` and `b` into a new folder `name` and compares it
/// with the source.
fn assert_pair_restores(split: &Split, a: usize, b: usize, name: &str) {
    let target = split.repo.path(name);
    let out = restore_with(split, &pair(split, a, b), &target);
    assert!(
        out.status.success(),
        "shares {a},{b}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_trees_equal(&split.src, &target.join("src"));
}

#[test]
fn any_two_of_three_shares_restore_byte_for_byte() {
    let split = split_repository();
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        assert_pair_restores(&split, a, b, &format!("restore-{a}{b}"));
    }
    // The order of the shares does not matter.
    assert_pair_restores(&split, 2, 0, "restore-reversed");
    // Other commands take the shares too.
    let out = with_shares(&split, &pair(&split, 1, 2))
        .args(["--json", "snapshots"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&split.snapshot));
    let out = with_shares(&split, &pair(&split, 0, 1))
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn below_threshold_wrong_password_and_foreign_shares_are_refused() {
    let split = split_repository();
    // One share: exit 12, one line, nothing restored.
    let target = split.repo.path("restore-one");
    let out = restore_with(&split, &[(1, split.share_passwords[1].as_path())], &target);
    assert_one_line_error(&out, WRONG_PASSWORD, "1 shares given, 2 needed");
    assert!(!target.exists() || std::fs::read_dir(&target).unwrap().next().is_none());
    // The same share twice is not two shares.
    let out = restore_with(&split, &pair(&split, 1, 1), &target);
    assert_one_line_error(&out, WRONG_PASSWORD, "twice");
    assert!(!target.exists() || std::fs::read_dir(&target).unwrap().next().is_none());
    // A share with another custodian's password: exit 12 naming the file.
    let swapped = vec![
        (0, split.share_passwords[1].as_path()),
        (1, split.share_passwords[1].as_path()),
    ];
    let out = restore_with(&split, &swapped, &target);
    assert_one_line_error(&out, WRONG_PASSWORD, "share-1-of-3.ocvshare");
    assert!(!target.exists() || std::fs::read_dir(&target).unwrap().next().is_none());
    // Shares alone never use the repository password, and a share file is no key file.
    let out = split
        .repo
        .cmd()
        .arg("--password-file")
        .arg(&split.share_passwords[0])
        .env_remove("OCVAULT_PASSWORD")
        .args(["snapshots"])
        .timeout(LIMIT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(WRONG_PASSWORD));

    // Shares of another repository (same custodian passwords) do not open this one.
    let other = split_repository();
    let mut cmd = ocvault();
    cmd.arg("--repo").arg(&split.repo.repo);
    for i in [0, 1] {
        cmd.arg("--share").arg(&other.shares[i]);
        cmd.arg("--share-password-file")
            .arg(&other.share_passwords[i]);
    }
    let out = cmd
        .args(["restore", &split.snapshot, "--target"])
        .arg(&target)
        .timeout(LIMIT)
        .output()
        .unwrap();
    assert_one_line_error(&out, WRONG_PASSWORD, "another repository");
    assert!(!target.exists() || std::fs::read_dir(&target).unwrap().next().is_none());
}

#[test]
fn split_refuses_bad_counts_and_missing_passwords() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let pw = repo.path("pw");
    std::fs::write(&pw, "x\n").unwrap();
    // `key split --shares N --threshold M --out-dir OUT` with these password files.
    let split = |n: &str, m: &str, password_files: usize| {
        let mut cmd = repo.cmd();
        cmd.args(["key", "split", "--shares", n, "--threshold", m, "--out-dir"])
            .arg(repo.path("out"));
        for _ in 0..password_files {
            cmd.arg("--share-password-file").arg(&pw);
        }
        cmd.timeout(LIMIT).output().unwrap()
    };
    for (n, m) in [("3", "1"), ("2", "3"), ("256", "2")] {
        assert_one_line_error(&split(n, m, 1), 2, "--");
    }
    // Two password files for three shares, and none at all without a terminal.
    assert_one_line_error(&split("3", "2", 2), 2, "--share-password-file");
    assert_one_line_error(&split("3", "2", 0), 2, "--share-password-file");
    assert!(!repo.path("out").join("share-1-of-3.ocvshare").exists());
}

/// The full read key removed from day-to-day use: only the shares open the repository.
#[test]
fn restore_with_two_shares_after_the_password_key_is_removed() {
    let split = split_repository();
    let key_id = {
        let out = split
            .repo
            .cmd()
            .args(["--json", "key", "list"])
            .timeout(LIMIT)
            .output()
            .unwrap();
        assert!(out.status.success());
        let keys = last_json(&out);
        assert_eq!(keys.as_array().unwrap().len(), 1);
        keys[0]["id"].as_str().unwrap().to_string()
    };
    // The password cannot remove its own (last) key; two shares can.
    let out = split
        .repo
        .cmd()
        .args(["key", "remove", &key_id])
        .timeout(LIMIT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = with_shares(&split, &pair(&split, 0, 2))
        .args(["key", "remove", &key_id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = split
        .repo
        .cmd()
        .args(["snapshots"])
        .timeout(LIMIT)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(WRONG_PASSWORD),
        "the old password still opens"
    );

    assert_pair_restores(&split, 0, 2, "restore-after-remove");
}

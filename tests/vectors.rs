//! Test vectors: `tests/vectors/repo-v1/` is a tiny repository made once by `make_vectors`
//! and checked in. Every later version of ocvault must still open and restore it.
//! Regenerate only for a new format version, in a new folder:
//! `cargo test --release --test vectors make_vectors -- --ignored`

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn password() -> String {
    std::fs::read_to_string(vectors_dir().join("password"))
        .unwrap()
        .trim_end()
        .to_string()
}

/// The tree the vector repository holds, made the same way every time.
fn expected_tree(root: &Path) {
    let files: &[(&str, u32, i64)] = &[
        ("hello.txt", 0o644, 1_700_000_000),
        ("dir/secret.env", 0o600, 1_700_000_100),
        ("dir/empty", 0o640, 1_700_000_200),
    ];
    std::fs::create_dir_all(root.join("dir/sub")).unwrap();
    for (name, mode, mtime) in files {
        let p = root.join(name);
        let content: Vec<u8> = match *name {
            "hello.txt" => b"hello, ocvault v1\n".to_vec(),
            "dir/secret.env" => b"DATABASE_URL=postgres://u:p@db/app\n".to_vec(),
            _ => Vec::new(),
        };
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        filetime::set_file_mtime(&p, filetime::FileTime::from_unix_time(*mtime, 123_456_789))
            .unwrap();
    }
    // 300 KB of patterned data: several chunks at the vector repository's small chunk size.
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| ((i * 7919) % 251) as u8 ^ (i >> 11) as u8)
        .collect();
    let p = root.join("dir/sub/data.bin");
    std::fs::write(&p, &big).unwrap();
    filetime::set_file_mtime(&p, filetime::FileTime::from_unix_time(1_700_000_300, 0)).unwrap();
    std::os::unix::fs::symlink("../hello.txt", root.join("dir/link")).unwrap();
    filetime::set_symlink_file_times(
        root.join("dir/link"),
        filetime::FileTime::from_unix_time(1_700_000_400, 0),
        filetime::FileTime::from_unix_time(1_700_000_400, 0),
    )
    .unwrap();
    for d in ["dir/sub", "dir", ""] {
        let p = root.join(d);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        filetime::set_file_mtime(&p, filetime::FileTime::from_unix_time(1_700_000_500, 0)).unwrap();
    }
}

#[test]
#[ignore]
fn make_vectors() {
    let out = vectors_dir().join("repo-v1");
    assert!(
        !out.exists(),
        "{} exists: vectors are made once",
        out.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    expected_tree(&src);
    let cmd = || {
        let mut c = ocvault();
        c.arg("--repo")
            .arg(&out)
            .env("OCVAULT_PASSWORD", password());
        c
    };
    cmd()
        .args([
            "init",
            "--kdf-memory-kib",
            "64",
            "--kdf-iterations",
            "1",
            "--chunk-min",
            "4096",
            "--chunk-avg",
            "16384",
            "--chunk-max",
            "65536",
        ])
        .assert()
        .success();
    cmd()
        .args([
            "snapshot",
            "--host",
            "vectors",
            "--time",
            "2026-11-26T00:00:00Z",
            "--tag",
            "v1",
        ])
        .arg(&src)
        .assert()
        .success();
    cmd()
        .args([
            "snapshot",
            "--host",
            "vectors",
            "--time",
            "2026-11-26T01:00:00Z",
            "--stdin",
            "--stdin-filename",
            "db.sql",
        ])
        .write_stdin("COPY t (a) FROM stdin;\n1\n\\.\n")
        .assert()
        .success();
    let _ = std::fs::remove_dir(out.join("tmp"));
}

#[test]
fn vector_repository_still_restores() {
    let tmp = tempfile::tempdir().unwrap();
    // Work on a copy: the checked-in files must never change.
    let repo = tmp.path().join("repo");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(vectors_dir().join("repo-v1"))
        .arg(&repo)
        .status()
        .unwrap();
    assert!(status.success());
    let cmd = || {
        let mut c = ocvault();
        c.arg("--repo")
            .arg(&repo)
            .env("OCVAULT_PASSWORD", password());
        c
    };
    let a = cmd().args(["--json", "snapshots"]).assert().success();
    let list: serde_json::Value = serde_json::from_slice(&a.get_output().stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["time"], "2026-11-26T00:00:00Z");
    assert_eq!(list[0]["tags"][0], "v1");
    let first = list[0]["id"].as_str().unwrap();

    let expected = tmp.path().join("expected");
    expected_tree(&expected);
    let target = tmp.path().join("restored");
    cmd()
        .args(["restore", first, "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_trees_equal(&expected, &target.join("tree"));

    let out = cmd().args(["dump", "latest", "db.sql"]).output().unwrap();
    assert_eq!(out.stdout, b"COPY t (a) FROM stdin;\n1\n\\.\n");
    let out = cmd()
        .env("OCVAULT_PASSWORD", "wrong")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
}

//! Every kind of entry a snapshot can hold (regular, empty, sparse and setuid files, folders,
//! symlinks, hard links, FIFOs, character and block devices, sockets) through `restore`,
//! `restore --verify`, `dump` and `ls`, each under a timeout: a restore that opens a FIFO it
//! has just made waits forever for a writer. Devices and owners need root, as the tests run.

mod common;

use common::*;
use filetime::FileTime;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

/// Long enough for a slow shared machine, short enough that a hang fails the test.
const TIMEOUT: Duration = Duration::from_secs(60);

fn mknod(path: &Path, kind: libc::mode_t, mode: u32, dev: libc::dev_t) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | mode as libc::mode_t, dev) };
    assert_eq!(rc, 0, "mknod {path:?}: {}", std::io::Error::last_os_error());
    // mknod honours the umask: set the bits the test expects back.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn set_times(path: &Path, atime: i64, mtime: i64) {
    filetime::set_symlink_file_times(
        path,
        FileTime::from_unix_time(atime, 111),
        FileTime::from_unix_time(mtime, 222),
    )
    .unwrap();
}

/// One entry of each kind; returns the names of the regular files and their contents.
fn every_kind(src: &Path) -> Vec<(&'static str, Vec<u8>)> {
    std::fs::create_dir_all(src.join("dir/inner")).unwrap();
    let mut data = vec![0u8; 150_000];
    Rng::new(15).fill(&mut data);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("regular.bin", data.clone()),
        ("empty", Vec::new()),
        ("dir/inner/note.txt", b"inside\n".to_vec()),
        ("setuid", b"#!/bin/sh\n".to_vec()),
    ];
    for (name, bytes) in &files {
        std::fs::write(src.join(name), bytes).unwrap();
    }
    std::fs::set_permissions(src.join("setuid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::chown(src.join("setuid"), Some(1234), Some(2345)).unwrap();
    // chown clears the setuid bit; set it again.
    std::fs::set_permissions(src.join("setuid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    // Sparse: 4 MiB with 4 KiB of data in the middle.
    let sparse = std::fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(4 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &data[..4096], 2 << 20).unwrap();
    drop(sparse);
    std::fs::hard_link(src.join("regular.bin"), src.join("dir/hardlink.bin")).unwrap();
    std::os::unix::fs::symlink("../regular.bin", src.join("dir/link")).unwrap();
    std::os::unix::fs::symlink("nowhere", src.join("dangling")).unwrap();
    let fifo = CString::new(src.join("fifo").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    std::fs::set_permissions(src.join("fifo"), std::fs::Permissions::from_mode(0o640)).unwrap();
    mknod(&src.join("null"), libc::S_IFCHR, 0o666, libc::makedev(1, 3));
    mknod(
        &src.join("loop"),
        libc::S_IFBLK,
        0o660,
        libc::makedev(7, 200),
    );
    // Bound and closed: the socket file stays.
    drop(std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap());
    std::fs::set_permissions(src.join("dir"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let mut t = 1_600_000_000;
    for rel in walk(src).into_iter().rev() {
        t += 1000;
        set_times(&src.join(rel), t - 7, t);
    }
    set_times(src, t, t);
    files
        .into_iter()
        .chain([
            ("sparse", {
                let mut v = vec![0u8; 4 << 20];
                v[2 << 20..(2 << 20) + 4096].copy_from_slice(&data[..4096]);
                v
            }),
            ("dir/hardlink.bin", data),
        ])
        .collect()
}

#[test]
fn every_file_type_restores_verifies_dumps_and_lists() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    let files = every_kind(&src);
    // Reading a file or a link may move its atime (relatime): note them before anything reads.
    let times: Vec<_> = walk(&src)
        .into_iter()
        .map(|rel| {
            let m = std::fs::symlink_metadata(src.join(&rel)).unwrap();
            (rel, (m.atime(), m.atime_nsec()), (m.uid(), m.gid()))
        })
        .collect();
    let id = snapshot_id(&repo, &[], &src);

    // Restore: one warning (the socket), nothing else, and no wait on the FIFO.
    let target = repo.path("restored");
    let out = repo
        .cmd()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "restore: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one warning, for the socket: {err}");
    assert!(
        lines[0].starts_with("ocvault: warning: ")
            && lines[0].contains("sock: socket not restored"),
        "{err}"
    );
    let restored = target.join("src");
    assert!(!restored.join("sock").exists());
    for (rel, atime, owner) in &times {
        if rel.as_os_str() == "sock" {
            continue;
        }
        let m = std::fs::symlink_metadata(restored.join(rel)).unwrap();
        assert_eq!(*owner, (m.uid(), m.gid()), "{rel:?} owner");
        assert_eq!(*atime, (m.atime(), m.atime_nsec()), "{rel:?} atime");
    }
    let sock_meta = std::fs::symlink_metadata(src.join("sock")).unwrap();
    std::fs::remove_file(src.join("sock")).unwrap();
    // Types, contents, modes (setuid included), mtimes, link targets, device numbers, links.
    assert_trees_equal(&src, &restored);
    assert_eq!(
        std::fs::symlink_metadata(restored.join("setuid"))
            .unwrap()
            .uid(),
        1234
    );
    assert!(
        allocated_bytes(&restored.join("sparse")) < 1 << 20,
        "sparse file filled in: {} bytes allocated",
        allocated_bytes(&restored.join("sparse"))
    );

    // restore --verify reads back every regular file.
    let target2 = repo.path("verified");
    let out = repo
        .cmd()
        .args(["--json", "restore", &id, "--verify", "--target"])
        .arg(&target2)
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let summary = last_json(&out);
    // Hard links are verified once, through the first name.
    assert_eq!(
        summary["verified_files"],
        files.len() as u64 - 1,
        "{summary}"
    );
    assert_eq!(summary["mismatches"].as_array().unwrap().len(), 0);
    assert_trees_equal(&src, &target2.join("src"));

    // dump: every regular file byte for byte; any other kind is refused with exit code 2.
    for (name, bytes) in &files {
        let out = repo
            .cmd()
            .args(["dump", &id, &format!("src/{name}")])
            .timeout(TIMEOUT)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "dump {name}: {out:?}");
        assert!(out.stdout == *bytes, "dump {name}: bytes differ");
    }
    for name in [
        "fifo", "null", "loop", "sock", "dir", "dir/link", "dangling",
    ] {
        let out = repo
            .cmd()
            .args(["dump", &id, &format!("src/{name}")])
            .timeout(TIMEOUT)
            .output()
            .unwrap();
        assert_one_line_error(&out, 2, "not a regular file");
    }

    // ls: every entry with its kind and mode.
    let out = repo
        .cmd()
        .args(["--json", "ls", &id])
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let listed: std::collections::BTreeMap<String, (String, u64)> =
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["path"].as_str().unwrap().to_string(),
                    (
                        v["type"].as_str().unwrap().to_string(),
                        v["mode"].as_u64().unwrap(),
                    ),
                )
            })
            .collect();
    let kind = |p: &str| listed[&format!("/src/{p}")].clone();
    assert_eq!(kind("regular.bin"), ("file".into(), 0o644));
    assert_eq!(kind("setuid"), ("file".into(), 0o4755));
    assert_eq!(kind("dir"), ("dir".into(), 0o750));
    assert_eq!(kind("dir/link").0, "symlink");
    assert_eq!(kind("fifo"), ("fifo".into(), 0o640));
    assert_eq!(kind("null"), ("chardevice".into(), 0o666));
    assert_eq!(kind("loop"), ("blockdevice".into(), 0o660));
    assert_eq!(
        kind("sock"),
        ("socket".into(), (sock_meta.mode() & 0o7777) as u64)
    );
    // 14 entries below src/, plus src/ itself.
    assert_eq!(listed.len(), 15, "{listed:?}");
    let out = repo
        .cmd()
        .args(["ls", &id, "src/fifo"])
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("p0640 "));
}

/// `--overwrite` onto a previous restore replaces the FIFO and device nodes in place; setting
/// their metadata again must not open them either.
#[test]
fn restore_over_existing_special_files_does_not_hang() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let fifo = CString::new(src.join("fifo").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    mknod(&src.join("null"), libc::S_IFCHR, 0o644, libc::makedev(1, 3));
    std::fs::write(src.join("file"), b"x").unwrap();
    let id = snapshot_id(&repo, &[], &src);
    let target = repo.path("t");
    for extra in [&[][..], &["--overwrite"][..]] {
        let out = repo
            .cmd()
            .args(["restore", &id, "--target"])
            .arg(&target)
            .args(extra)
            .timeout(TIMEOUT)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "restore {extra:?}: {out:?}");
        assert!(out.stderr.is_empty(), "{out:?}");
    }
    assert_trees_equal(&src, &target.join("src"));
}

/// A `--stdin` file's times are the snapshot's time: `--time` when given, else the one instant
/// the snapshot records.
#[test]
fn stdin_file_times_are_the_snapshot_time() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    for time in [Some("2020-01-02T03:04:05Z"), None] {
        let out = repo
            .cmd()
            .args([
                "--json",
                "snapshot",
                "--stdin",
                "--stdin-filename",
                "db.sql",
            ])
            .args(time.map(|t| ["--time", t]).into_iter().flatten())
            .write_stdin("dump\n")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let id = last_json(&out)["snapshot_id"].as_str().unwrap().to_string();
        let out = repo.cmd().args(["--json", "snapshots"]).output().unwrap();
        let snaps = last_json(&out);
        let snap = snaps
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id.as_str())
            .unwrap();
        let out = repo.cmd().args(["--json", "ls", &id]).output().unwrap();
        let node: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(node["path"], "/db.sql");
        assert_eq!(node["mtime"], snap["time"], "{node} against {snap}");
        if let Some(t) = time {
            assert_eq!(snap["time"], t);
        }
        let target = repo.path(&format!("t-{id}"));
        restore_into(&repo, &id, &target);
        let m = std::fs::metadata(target.join("db.sql")).unwrap();
        assert_eq!(m.mtime(), m.atime());
        assert_eq!(m.mtime_nsec(), m.atime_nsec());
        if time.is_some() {
            assert_eq!((m.mtime(), m.mtime_nsec()), (1_577_934_245, 0));
        }
    }
}

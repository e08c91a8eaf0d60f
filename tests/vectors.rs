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
    let tmp = scratch_dir("ocvault-vectors-");
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
    let tmp = scratch_dir("ocvault-vectors-");
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

// ---------------------------------------------------------------------------------------------
// Further vectors: every case a reader can meet, with a manifest of the expected restore.
// Made once by `make_full_vectors` (ignored):
// `cargo test --release --test vectors make_full_vectors -- --ignored --test-threads 1`
// It writes `repo-v1-full/`, `repo-v1-nocompress/` and `manifest.json` (which also describes
// `repo-v1/`). Never regenerate them: a change that breaks them is a format change.
// ---------------------------------------------------------------------------------------------

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

/// The vector repositories the manifest describes.
const VECTOR_REPOS: [&str; 3] = ["repo-v1", "repo-v1-full", "repo-v1-nocompress"];

fn password2() -> String {
    std::fs::read_to_string(vectors_dir().join("password2"))
        .unwrap()
        .trim_end()
        .to_string()
}

fn set_times(path: &Path, atime: (i64, u32), mtime: (i64, u32)) {
    filetime::set_symlink_file_times(
        path,
        filetime::FileTime::from_unix_time(atime.0, atime.1),
        filetime::FileTime::from_unix_time(mtime.0, mtime.1),
    )
    .unwrap();
}

fn mknod(path: &Path, kind: libc::mode_t, mode: u32, dev: libc::dev_t) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mknod(c.as_ptr(), kind | mode, dev) }, 0);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The tree of the first snapshot of `repo-v1-full`: one entry of every kind, hard links,
/// xattrs, a name that is not UTF-8, times before 1970, owners without names, special bits,
/// and enough incompressible data for more than 16 packs at 4 KiB packs.
fn full_tree(root: &Path) {
    let sub = root.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::create_dir_all(root.join("sticky")).unwrap();
    let text: String = (0..600)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog\n"))
        .collect();
    std::fs::write(root.join("text.txt"), &text).unwrap();
    let mut rnd = vec![0u8; 72 * 1024];
    Rng::new(2033).fill(&mut rnd);
    std::fs::write(root.join("random.bin"), &rnd).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    // 64 KiB: 16 KiB of zeros, 1 KiB of data, zeros to the end.
    let sparse = std::fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(64 * 1024).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &rnd[..1024], 16 * 1024).unwrap();
    drop(sparse);
    std::fs::write(root.join("hard-a"), &text.as_bytes()[..3000]).unwrap();
    std::fs::hard_link(root.join("hard-a"), sub.join("hard-b")).unwrap();
    std::fs::write(
        root.join(OsStr::from_bytes(b"caf\xe9.txt")),
        b"latin-1 name\n",
    )
    .unwrap();
    std::fs::write(root.join("old.txt"), b"written before 1970\n").unwrap();
    std::fs::write(root.join("owned"), b"uid 1234, gid 2345, no names\n").unwrap();
    std::os::unix::fs::chown(root.join("owned"), Some(1234), Some(2345)).unwrap();
    std::fs::write(root.join("tool"), b"#!/bin/sh\necho setuid\n").unwrap();
    std::fs::set_permissions(root.join("tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(sub.join("setgid"), b"g\n").unwrap();
    std::fs::set_permissions(sub.join("setgid"), std::fs::Permissions::from_mode(0o2640)).unwrap();
    std::fs::set_permissions(root.join("sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("../text.txt", sub.join("link")).unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"caf\xe9.txt"), root.join("link-latin1"))
        .unwrap();
    let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::fs::set_permissions(root.join("fifo"), std::fs::Permissions::from_mode(0o644)).unwrap();
    mknod(
        &root.join("null"),
        libc::S_IFCHR,
        0o666,
        libc::makedev(1, 3),
    );
    mknod(
        &root.join("loop200"),
        libc::S_IFBLK,
        0o660,
        libc::makedev(7, 200),
    );
    drop(std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap());
    xattr::set(root.join("text.txt"), "user.comment", b"plain text").unwrap();
    xattr::set(root.join("random.bin"), "user.bytes", &[0, 1, 2, 0xff]).unwrap();
    xattr::set(&sub, "user.dir", b"on a folder").unwrap();
    // Times: fixed, every atime and mtime distinct, nanoseconds set; then the negatives.
    let mut t = 1_800_000_000i64;
    for rel in walk(root).into_iter().rev() {
        t -= 3600;
        set_times(&root.join(rel), (t + 60, 987_654_321), (t, 123_456_789));
    }
    // 1938-04-24T22:13:20.000000500Z, atime one nanosecond before the epoch.
    set_times(
        &root.join("old.txt"),
        (-1, 999_999_999),
        (-1_000_000_000, 500),
    );
    set_times(root, (1_800_000_000, 5), (1_800_000_000, 0));
}

/// A running `ocvault snapshot --stdin` that waits for its standard input; returned once its
/// backup marker is in `locks/` and it has had time to load the index.
fn started_stdin_snapshot(repo: &Path, args: &[&str]) -> std::process::Child {
    let locks_before = std::fs::read_dir(repo.join("locks"))
        .map(|d| d.count())
        .unwrap_or(0);
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ocvault"))
        .arg("--repo")
        .arg(repo)
        .env("OCVAULT_PASSWORD", password())
        .arg("snapshot")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(repo.join("locks"))
        .map(|d| d.count())
        .unwrap_or(0)
        <= locks_before
    {
        assert!(std::time::Instant::now() < deadline, "no backup marker");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    child
}

#[test]
#[ignore]
fn make_full_vectors() {
    let dir = vectors_dir();
    let full = dir.join("repo-v1-full");
    let plain = dir.join("repo-v1-nocompress");
    for p in [&full, &plain] {
        assert!(!p.exists(), "{} exists: vectors are made once", p.display());
    }
    let tmp = scratch_dir("ocvault-vectors-");
    let cmd = |repo: &Path| {
        let mut c = ocvault();
        c.arg("--repo")
            .arg(repo)
            .env("OCVAULT_PASSWORD", password());
        c
    };

    // Tiny chunks and 4 KiB packs (below what `init` accepts; readers take any size), so a
    // small tree makes more than 16 packs and so several index files.
    let backend = ocvault::backend::Backend::open(full.to_str().unwrap(), true).unwrap();
    let opts = ocvault::repository::InitOptions {
        chunker: ocvault::format::ChunkerParams {
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
        },
        compression_level: 3,
        pack_target_size: 4096,
        kdf_memory_kib: 64,
        kdf_iterations: 1,
    };
    ocvault::repository::Repository::init(backend, password().as_bytes(), &opts).unwrap();
    // A second key with other Argon2id settings.
    cmd(&full)
        .args([
            "key",
            "add",
            "--kdf-memory-kib",
            "128",
            "--kdf-iterations",
            "2",
        ])
        .arg("--new-password-file")
        .arg(dir.join("password2"))
        .assert()
        .success();

    let src = tmp.path().join("full");
    full_tree(&src);
    let snap = |repo: &Path, time: &str, extra: &[&str], path: Option<&Path>, stdin: &str| {
        let out = cmd(repo)
            .args(["--json", "snapshot", "--host", "vectors", "--time", time])
            .args(extra)
            .args(path)
            .write_stdin(stdin)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        last_json(&out)["snapshot_id"].as_str().unwrap().to_string()
    };
    snap(
        &full,
        "2027-01-01T00:00:00Z",
        &["--tag", "full"],
        Some(&src),
        "",
    );
    snap(
        &full,
        "1969-07-20T20:17:40.5Z",
        &["--stdin", "--stdin-filename", "db.sql"],
        None,
        "COPY t (a) FROM stdin;\n1\n\\.\n",
    );
    // A snapshot to forget, whose packs prune then marks.
    let gone = tmp.path().join("gone");
    std::fs::create_dir_all(&gone).unwrap();
    random_file(&gone.join("unique.bin"), 6000, 99);
    set_times(
        &gone.join("unique.bin"),
        (1_800_000_100, 0),
        (1_800_000_000, 0),
    );
    set_times(&gone, (1_800_000_100, 0), (1_800_000_000, 0));
    let doomed = snap(&full, "2027-01-03T00:00:00Z", &[], Some(&gone), "");

    // A backup that loads the index before the prune and saves its snapshot after it: its
    // copy of `gone` is found only through the prune mark.
    let late = started_stdin_snapshot(
        &full,
        &[
            "--host",
            "vectors",
            "--time",
            "2027-01-04T00:00:00Z",
            "--stdin",
            "--stdin-filename",
            "late.sql",
            gone.to_str().unwrap(),
        ],
    );
    cmd(&full).args(["forget", &doomed]).assert().success();
    let index_before: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(full.join("index"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    cmd(&full)
        .args(["prune", "--max-unused", "0%", "--grace", "100y"])
        .assert()
        .success();
    // As a prune killed before it deleted them: index files its new index supersedes.
    for (p, b) in index_before {
        if !p.exists() {
            std::fs::write(p, b).unwrap();
        }
    }
    let mut late = late;
    {
        use std::io::Write;
        let mut stdin = late.stdin.take().unwrap();
        stdin.write_all(b"late\n").unwrap();
    }
    assert!(late.wait().unwrap().success());
    // A backup killed while running leaves its marker in locks/.
    let mut killed = started_stdin_snapshot(&full, &["--stdin", "--stdin-filename", "killed.sql"]);
    killed.kill().unwrap();
    killed.wait().unwrap();
    let _ = std::fs::remove_dir_all(full.join("tmp"));
    assert_late_snapshot_needs_the_mark(&full);

    // Compression off.
    cmd(&plain)
        .args([
            "init",
            "--compression",
            "0",
            "--kdf-memory-kib",
            "64",
            "--kdf-iterations",
            "1",
        ])
        .args([
            "--chunk-min",
            "256",
            "--chunk-avg",
            "1024",
            "--chunk-max",
            "4096",
        ])
        .assert()
        .success();
    let small = tmp.path().join("plain");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::copy(src.join("text.txt"), small.join("text.txt")).unwrap();
    set_times(
        &small.join("text.txt"),
        (1_700_000_001, 1),
        (1_700_000_000, 2),
    );
    set_times(&small, (1_700_000_003, 3), (1_700_000_002, 4));
    snap(&plain, "2027-02-01T00:00:00Z", &[], Some(&small), "");
    let _ = std::fs::remove_dir_all(plain.join("tmp"));

    write_manifest();
}

/// The `late` snapshot's copy of `gone/unique.bin` is in no live index file, only in a pack
/// the prune mark lists: the case §14 of the spec makes readers load marks for.
fn assert_late_snapshot_needs_the_mark(repo_dir: &Path) {
    let (_copy, repo) = open_copy(repo_dir);
    let indexed = repo.load_index().unwrap();
    let snaps = repo.list_snapshots().unwrap();
    let late = &snaps
        .iter()
        .find(|(_, s)| s.paths.iter().any(|p| p == "stdin:late.sql"))
        .unwrap()
        .1;
    let read = indexed.index();
    let root = indexed.load_tree(&late.tree).unwrap();
    let gone = root.find(b"gone").unwrap();
    let tree = indexed.load_tree(&gone.subtree.unwrap()).unwrap();
    let file = tree.find(b"unique.bin").unwrap();
    assert!(!file.content.is_empty());
    for id in &file.content {
        assert!(!indexed.live_index().contains(id), "blob in the live index");
        assert!(read.contains(id), "blob not in a marked pack");
    }
}

/// Opens a copy of a vector repository with the library (the checked-in files stay as they
/// are).
fn open_copy(repo_dir: &Path) -> (tempfile::TempDir, ocvault::repository::Repository) {
    let tmp = scratch_dir("ocvault-vectors-");
    let copy = tmp.path().join("repo");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(repo_dir)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let backend = ocvault::backend::Backend::open(copy.to_str().unwrap(), false).unwrap();
    let repo = ocvault::repository::Repository::open(backend, password().as_bytes()).unwrap();
    (tmp, repo)
}

/// One manifest entry per node of a snapshot, read from the stored trees, in tree order.
fn manifest_entries(
    repo: &ocvault::repository::IndexedRepository,
    tree: &ocvault::TreeId,
    prefix: &[u8],
    out: &mut Vec<serde_json::Value>,
    links: &mut std::collections::HashMap<(u64, u64), String>,
) {
    use ocvault::format::NodeKind;
    for node in repo.load_tree(tree).unwrap().nodes {
        let mut path = prefix.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&node.name);
        let lossy = String::from_utf8_lossy(&path).into_owned();
        let mut e = serde_json::json!({
            "path": lossy,
            "path_hex": hex(&path),
            "type": format!("{:?}", node.kind).to_lowercase(),
            "mode": format!("{:04o}", node.mode),
            "uid": node.uid, "gid": node.gid, "user": node.user, "group": node.group,
            "mtime_ns": node.mtime_ns, "atime_ns": node.atime_ns, "ctime_ns": node.ctime_ns,
            "size": node.size, "links": node.links,
            "xattrs": node.xattrs.iter().map(|(k, v)| serde_json::json!([String::from_utf8_lossy(k), hex(v)])).collect::<Vec<_>>(),
            "restored": node.kind != NodeKind::Socket,
        });
        let m = e.as_object_mut().unwrap();
        match node.kind {
            NodeKind::File => {
                let mut h = blake3::Hasher::new();
                for id in &node.content {
                    h.update(&repo.read_blob(id).unwrap());
                }
                m.insert("blake3".into(), h.finalize().to_hex().to_string().into());
                m.insert("blobs".into(), node.content.len().into());
                if node.links > 1 && node.inode != 0 {
                    match links.get(&(node.device, node.inode)) {
                        Some(first) => {
                            m.insert("hard_link_to".into(), first.clone().into());
                        }
                        None => {
                            links.insert((node.device, node.inode), lossy.clone());
                        }
                    }
                }
            }
            NodeKind::Symlink => {
                m.insert(
                    "link_target".into(),
                    String::from_utf8_lossy(&node.link_target).into(),
                );
                m.insert("link_target_hex".into(), hex(&node.link_target).into());
            }
            NodeKind::CharDevice | NodeKind::BlockDevice => {
                let rdev = node.rdev as libc::dev_t;
                m.insert("rdev_major".into(), libc::major(rdev).into());
                m.insert("rdev_minor".into(), libc::minor(rdev).into());
            }
            _ => {}
        }
        out.push(e);
        if let Some(sub) = node.subtree {
            manifest_entries(repo, &sub, &path, out, links);
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes `manifest.json`: for each vector repository, what is stored where, its keys, and for
/// each snapshot its fields and every entry a restore makes.
fn write_manifest() {
    let mut repos = serde_json::Map::new();
    for name in VECTOR_REPOS {
        let dir = vectors_dir().join(name);
        let (_tmp, repo) = open_copy(&dir);
        let indexed = repo.load_index().unwrap();
        let mut snapshots = Vec::new();
        for (id, s) in repo.list_snapshots().unwrap() {
            let mut entries = Vec::new();
            manifest_entries(
                &indexed,
                &s.tree,
                b"",
                &mut entries,
                &mut Default::default(),
            );
            snapshots.push(serde_json::json!({
                "id": id.to_hex(),
                "time": ocvault::snapshot::rfc3339(s.time_unix_ns),
                "time_unix_ns": s.time_unix_ns,
                "hostname": s.hostname, "username": s.username,
                "paths": s.paths, "tags": s.tags,
                "parent": s.parent.map(|p| p.to_hex()),
                "incomplete": s.incomplete,
                "entries": entries,
            }));
        }
        let mut files = serde_json::Map::new();
        for folder in [
            "keys",
            "snapshots",
            "index",
            "data",
            "log",
            "locks",
            "prune",
        ] {
            let folder_dir = dir.join(folder);
            if !folder_dir.exists() {
                files.insert(folder.into(), 0.into());
                continue;
            }
            let n = walk(&folder_dir)
                .iter()
                .filter(|p| dir.join(folder).join(p).is_file())
                .count();
            files.insert(folder.into(), n.into());
        }
        let index_files = repo.load_index_files().unwrap();
        let superseded: std::collections::HashSet<_> = index_files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        let live = index_files
            .iter()
            .filter(|(id, _)| !superseded.contains(id));
        files.insert("index_live".into(), live.count().into());
        files.insert("index_superseded".into(), superseded.len().into());
        let mut keys = Vec::new();
        for e in std::fs::read_dir(dir.join("keys")).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            let kf = ocvault::repository::decode_key_file(&bytes).unwrap();
            let opens = [("password", password()), ("password2", password2())]
                .into_iter()
                .find(|(_, pw)| {
                    ocvault::repository::try_key_file(&bytes, pw.as_bytes())
                        .unwrap()
                        .is_some()
                })
                .map(|(f, _)| f)
                .unwrap();
            keys.push(serde_json::json!({
                "memory_kib": kf.kdf.memory_kib, "iterations": kf.kdf.iterations,
                "parallelism": kf.kdf.parallelism, "password_file": opens,
            }));
        }
        keys.sort_by_key(|k| k["memory_kib"].as_u64());
        let c = repo.config();
        repos.insert(
            name.into(),
            serde_json::json!({
                "config": {
                    "chunker": [c.chunker.min_size, c.chunker.avg_size, c.chunker.max_size],
                    "compression_level": c.compression_level,
                    "pack_target_size": c.pack_target_size,
                },
                "files": files,
                "keys": keys,
                "snapshots": snapshots,
            }),
        );
    }
    let manifest = serde_json::json!({
        "about": "Expected content of the test vectors (format-spec/README.md, section 17). \
                  Paths are relative to the restore target; path_hex and link_target_hex are the \
                  exact bytes. Times are ns since the Unix epoch (ctime as stored: a restore cannot \
                  set it). blake3 is the plain BLAKE3 of the file's content. restored=false: \
                  sockets are not re-created.",
        "repositories": repos,
    });
    std::fs::write(
        vectors_dir().join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap() + "\n",
    )
    .unwrap();
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Restores every snapshot of every vector repository and compares the result with
/// `manifest.json` field by field: type, mode, owner, times to the nanosecond, size, content
/// hash, link target, device numbers, xattrs, hard links; nothing more and nothing less.
#[test]
fn vectors_restore_as_the_manifest_says() {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors_dir().join("manifest.json")).unwrap())
            .unwrap();
    let repos = manifest["repositories"].as_object().unwrap();
    assert_eq!(repos.len(), VECTOR_REPOS.len());
    for (name, want) in repos {
        let tmp = scratch_dir("ocvault-vectors-");
        let repo = tmp.path().join("repo");
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(vectors_dir().join(name))
            .arg(&repo)
            .status()
            .unwrap();
        assert!(status.success());
        let cmd = |pw: String| {
            let mut c = ocvault();
            c.arg("--repo")
                .arg(&repo)
                .env("OCVAULT_PASSWORD", pw)
                .timeout(std::time::Duration::from_secs(120));
            c
        };
        // An intact vector is intact to `check`, marked packs and superseded index files
        // included (a snapshot saved during a prune reads its blobs from them).
        let out = cmd(password())
            .args(["check", "--read-data"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: check: {out:?}");
        // Every key opens with its password.
        for key in want["keys"].as_array().unwrap() {
            let pw = match key["password_file"].as_str().unwrap() {
                "password" => password(),
                _ => password2(),
            };
            let out = cmd(pw).args(["--json", "key", "list"]).output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
            let listed = last_json(&out);
            assert_eq!(
                listed.as_array().unwrap().len(),
                want["keys"].as_array().unwrap().len()
            );
            let current = listed
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["current"] == true)
                .unwrap();
            assert_eq!(current["memory_kib"], key["memory_kib"], "{name}");
            assert_eq!(current["iterations"], key["iterations"], "{name}");
        }
        let out = cmd(password()).args(["--json", "log"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        assert_eq!(
            last_json(&out).as_array().unwrap().len() as u64,
            want["files"]["log"].as_u64().unwrap(),
            "{name}: log entries"
        );
        let out = cmd(password())
            .args(["--json", "snapshots"])
            .output()
            .unwrap();
        let listed = last_json(&out);
        let snapshots = want["snapshots"].as_array().unwrap();
        let ids: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        let want_ids: Vec<&str> = snapshots
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, want_ids, "{name}: snapshots, oldest first");
        for (snap, got) in snapshots.iter().zip(listed.as_array().unwrap()) {
            for field in [
                "time",
                "hostname",
                "username",
                "paths",
                "tags",
                "parent",
                "incomplete",
            ] {
                assert_eq!(got[field], snap[field], "{name} {}: {field}", snap["id"]);
            }
            let target = tmp
                .path()
                .join(format!("restore-{}", snap["id"].as_str().unwrap()));
            let out = cmd(password())
                .args([
                    "restore",
                    snap["id"].as_str().unwrap(),
                    "--verify",
                    "--target",
                ])
                .arg(&target)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
            compare_restore(name, snap["entries"].as_array().unwrap(), &target);
            // dump gives the same bytes as the restored file.
            for e in snap["entries"].as_array().unwrap() {
                if e["type"] == "file" && e["path"].as_str().unwrap().ends_with(".sql") {
                    let out = cmd(password())
                        .args([
                            "dump",
                            snap["id"].as_str().unwrap(),
                            e["path"].as_str().unwrap(),
                        ])
                        .output()
                        .unwrap();
                    assert_eq!(out.status.code(), Some(0), "{out:?}");
                    assert_eq!(blake3::hash(&out.stdout).to_hex().as_str(), e["blake3"]);
                }
            }
        }
    }
}

/// Every manifest entry against the restored tree, and nothing restored that it lacks.
fn compare_restore(repo: &str, entries: &[serde_json::Value], target: &Path) {
    let path_of = |e: &serde_json::Value| {
        target.join(OsStr::from_bytes(&unhex(e["path_hex"].as_str().unwrap())))
    };
    // Every stat first: reading contents to hash them moves atimes.
    let stats: Vec<Option<std::fs::Metadata>> = entries
        .iter()
        .map(|e| std::fs::symlink_metadata(path_of(e)).ok())
        .collect();
    let mut errs = Vec::new();
    for (e, m) in entries.iter().zip(&stats) {
        let path = e["path"].as_str().unwrap();
        let mut check = |what: &str, got: serde_json::Value, want: &serde_json::Value| {
            if &got != want {
                errs.push(format!("{repo} {path}: {what} {got}, manifest {want}"));
            }
        };
        let Some(m) = m else {
            check("exists", false.into(), &e["restored"]);
            continue;
        };
        check("exists", true.into(), &e["restored"]);
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "chardevice"
        } else if ft.is_block_device() {
            "blockdevice"
        } else if ft.is_socket() {
            "socket"
        } else {
            "file"
        };
        check("type", kind.into(), &e["type"]);
        if kind != "symlink" {
            check(
                "mode",
                format!("{:04o}", m.mode() & 0o7777).into(),
                &e["mode"],
            );
        }
        check("uid", m.uid().into(), &e["uid"]);
        check("gid", m.gid().into(), &e["gid"]);
        let ns = |s: i64, n: i64| s * 1_000_000_000 + n;
        check(
            "mtime_ns",
            ns(m.mtime(), m.mtime_nsec()).into(),
            &e["mtime_ns"],
        );
        check(
            "atime_ns",
            ns(m.atime(), m.atime_nsec()).into(),
            &e["atime_ns"],
        );
        let p = path_of(e);
        match kind {
            "file" => {
                check("size", m.len().into(), &e["size"]);
                check(
                    "blake3",
                    hash_file(&p).to_hex().as_str().into(),
                    &e["blake3"],
                );
                if let Some(first) = e.get("hard_link_to") {
                    let first = entries.iter().position(|x| &x["path"] == first).unwrap();
                    let same = stats[first].as_ref().map(|f| (f.dev(), f.ino()));
                    check(
                        "hard link",
                        (same == Some((m.dev(), m.ino()))).into(),
                        &true.into(),
                    );
                }
            }
            "symlink" => {
                let t = std::fs::read_link(&p).unwrap();
                check(
                    "link_target_hex",
                    hex(t.as_os_str().as_bytes()).into(),
                    &e["link_target_hex"],
                );
            }
            "chardevice" | "blockdevice" => {
                let rdev = m.rdev() as libc::dev_t;
                check("rdev_major", libc::major(rdev).into(), &e["rdev_major"]);
                check("rdev_minor", libc::minor(rdev).into(), &e["rdev_minor"]);
            }
            _ => {}
        }
        if kind != "symlink" {
            let mut got: Vec<serde_json::Value> = xattr::list(&p)
                .unwrap()
                .filter(|k| k.as_bytes().starts_with(b"user."))
                .map(|k| {
                    let v = xattr::get(&p, &k).unwrap().unwrap_or_default();
                    serde_json::json!([k.to_string_lossy(), hex(&v)])
                })
                .collect();
            got.sort_by_key(|v| v.to_string());
            check("xattrs", got.into(), &e["xattrs"]);
        }
    }
    // Nothing restored beyond the manifest.
    let want: std::collections::BTreeSet<Vec<u8>> = entries
        .iter()
        .filter(|e| e["restored"] == true)
        .map(|e| unhex(e["path_hex"].as_str().unwrap()))
        .collect();
    let got: std::collections::BTreeSet<Vec<u8>> = walk(target)
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    if want != got {
        errs.push(format!("{repo}: restored paths {got:?}, manifest {want:?}"));
    }
    assert!(
        errs.is_empty(),
        "restore differs from the manifest:\n{}",
        errs.join("\n")
    );
}

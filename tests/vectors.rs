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
    // Work on a copy: the checked-in files must never change.
    let (tmp, repo) = vector_copy("repo-v1");
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
const VECTOR_REPOS: [&str; 6] = [
    "repo-v1",
    "repo-v1-full",
    "repo-v1-nocompress",
    "repo-v2-wal",
    "repo-v3-storage",
    "repo-v4-write-only",
];

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
        storage: Default::default(),
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

/// A copy of the vector repository `name` (in a scratch folder that goes with the `TempDir`),
/// for tests that change it.
fn vector_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    copy_repo(&vectors_dir().join(name))
}

fn copy_repo(dir: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = scratch_dir("ocvault-vectors-");
    let repo = tmp.path().join("repo");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(dir)
        .arg(&repo)
        .status()
        .unwrap();
    assert!(status.success());
    (tmp, repo)
}

/// Opens a copy of a vector repository with the library (the checked-in files stay as they
/// are).
fn open_copy(repo_dir: &Path) -> (tempfile::TempDir, ocvault::repository::Repository) {
    let (tmp, copy) = copy_repo(repo_dir);
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
        if vectors_dir().join(name).exists() {
            repos.insert(name.into(), manifest_repository(name));
        }
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

/// One repository's manifest entry. Format version 2 entries also have `format_version`,
/// each snapshot's `postgres` (when it has one), `files.wal` and the `wal` records.
fn manifest_repository(name: &str) -> serde_json::Value {
    let dir = vectors_dir().join(name);
    let (_tmp, repo) = open_copy(&dir);
    let v2 = repo.config().version >= 2;
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
        let mut snapshot = serde_json::json!({
            "id": id.to_hex(),
            "time": ocvault::snapshot::rfc3339(s.time_unix_ns),
            "time_unix_ns": s.time_unix_ns,
            "hostname": s.hostname, "username": s.username,
            "paths": s.paths, "tags": s.tags,
            "parent": s.parent.map(|p| p.to_hex()),
            "incomplete": s.incomplete,
            "entries": entries,
        });
        if let Some(pg) = &s.postgres {
            snapshot["postgres"] = serde_json::to_value(pg).unwrap();
        }
        if repo.config().version >= 4 {
            snapshot["log_heads"] = s.log_heads.iter().map(|h| h.to_hex()).collect();
        }
        snapshots.push(snapshot);
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
        "wal",
    ] {
        if folder == "wal" && !v2 {
            continue;
        }
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
        let mut key = serde_json::json!({
            "memory_kib": kf.kdf.memory_kib, "iterations": kf.kdf.iterations,
            "parallelism": kf.kdf.parallelism, "password_file": opens,
        });
        if kf.version == ocvault::format::KEY_FILE_VERSION_WRITE_ONLY {
            key["write_only"] = true.into();
        }
        keys.push(key);
    }
    keys.sort_by_key(|k| k["memory_kib"].as_u64());
    let c = repo.config();
    let mut entry = serde_json::json!({
        "config": {
            "chunker": [c.chunker.min_size, c.chunker.avg_size, c.chunker.max_size],
            "compression_level": c.compression_level,
            "pack_target_size": c.pack_target_size,
        },
        "files": files,
        "keys": keys,
        "snapshots": snapshots,
    });
    if v2 {
        entry["format_version"] = c.version.into();
        entry["wal"] = manifest_wal(&indexed).into();
    }
    if c.version >= 3 {
        entry["storage"] = manifest_storage(&c.storage);
    }
    if c.version >= 4 {
        entry["log"] = manifest_log(&repo);
    }
    entry
}

/// The manifest's `log` (format version 4): every entry, oldest first, with the heads it
/// names, the key that wrote it and its operation.
fn manifest_log(repo: &ocvault::repository::Repository) -> serde_json::Value {
    let all = ocvault::oplog::list(repo).unwrap();
    assert!(all.damaged.is_empty());
    all.intact
        .iter()
        .map(|(id, e)| {
            serde_json::json!({
                "id": id.to_hex(),
                "time_unix_ns": e.time_unix_ns,
                "operation": e.operation,
                "result": e.result,
                "key_id": e.key_id.to_hex(),
                "parents": e.parents.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
                "snapshots": e.snapshots.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// The manifest's `storage`: `Config.storage` of a format version 3 repository.
fn manifest_storage(p: &ocvault::format::StoragePolicy) -> serde_json::Value {
    serde_json::json!({
        "lock": p.lock.map(|l| serde_json::json!({
            "mode": format!("{:?}", l.mode).to_lowercase(),
            "days": l.days,
        })),
        "data_storage_class": p.data_storage_class,
    })
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
        let (tmp, repo) = vector_copy(name);
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
        // The vector's entries, and the one the `check` above added (reads are logged).
        let entries = last_json(&out)["entries"].as_array().unwrap().clone();
        assert_eq!(
            entries.len() as u64,
            want["files"]["log"].as_u64().unwrap() + 1,
            "{name}: log entries"
        );
        // (Vectors were written before reads were logged: no other `check` entry.)
        let checks = entries.iter().filter(|e| e["operation"] == "check").count();
        assert_eq!(checks, 1, "{name}");
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

// ---------------------------------------------------------------------------------------------
// Format version 2: `repo-v2-wal`, a repository holding a PostgreSQL base backup (a snapshot
// with `postgres`) and WAL files in `wal/`. Made once by `make_v2_vectors` (ignored):
// `cargo test --release --test vectors make_v2_vectors -- --ignored --test-threads 1`
// It writes `repo-v2-wal/` and adds its entry to `manifest.json` (the v1 entries are read
// back and written unchanged). Never regenerate it: a change that breaks it is a format change.
// ---------------------------------------------------------------------------------------------

/// WAL segment size of the fake server: 2 MiB (a size PostgreSQL allows), so a segment is
/// two 1 MiB blocks.
const V2_SEGMENT_SIZE: usize = 2 << 20;

/// The `backup_label` the base backup's tar starts with (PostgreSQL's layout).
const V2_BACKUP_LABEL: &str = "START WAL LOCATION: 0/200028 (file 000000010000000000000001)\n\
CHECKPOINT LOCATION: 0/200060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
START TIME: 2027-03-01 00:00:00 UTC\nLABEL: vectors base backup\nSTART TIMELINE: 1\n";

/// The backup history file PostgreSQL archives when that backup ends.
const V2_BACKUP_HISTORY: &str = "START WAL LOCATION: 0/200028 (file 000000010000000000000001)\n\
STOP WAL LOCATION: 0/400100 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/200060\n\
BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2027-03-01 00:00:00 UTC\n\
LABEL: vectors base backup\nSTART TIMELINE: 1\nSTOP TIME: 2027-03-01 00:00:05 UTC\n\
STOP TIMELINE: 1\n";

/// A segment of the fake server: every 8 KiB page starts with a line naming the segment and
/// the page, the rest is zero; the second MiB is all zero (so that block is one blob, shared
/// by every segment).
fn v2_segment(name: &str) -> Vec<u8> {
    let mut seg = vec![0u8; V2_SEGMENT_SIZE];
    for page in 0..(1 << 20) / 8192 {
        let line = format!("ocvault vector WAL segment {name} page {page:03}\n");
        seg[page * 8192..page * 8192 + line.len()].copy_from_slice(line.as_bytes());
    }
    seg
}

/// The WAL files of `repo-v2-wal`, in the order they are pushed: two segments of timeline 1,
/// the backup history file, the history file of timeline 2, and a segment of timeline 2.
fn v2_wal_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "000000010000000000000001",
            v2_segment("000000010000000000000001"),
        ),
        (
            "000000010000000000000002",
            v2_segment("000000010000000000000002"),
        ),
        (
            "000000010000000000000001.00000028.backup",
            V2_BACKUP_HISTORY.as_bytes().to_vec(),
        ),
        (
            "00000002.history",
            b"1\t0/600000\tno recovery target specified\n".to_vec(),
        ),
        (
            "000000020000000000000003",
            v2_segment("000000020000000000000003"),
        ),
    ]
}

/// One ustar member: header (with its checksum) and content padded to 512 bytes.
fn tar_member(out: &mut Vec<u8>, name: &str, mode: u32, body: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    for (at, len, value) in [
        (100, 8, mode as u64),
        (108, 8, 26),
        (116, 8, 26),
        (124, 12, body.len() as u64),
        (136, 12, 1_803_859_200),
    ] {
        let field = format!("{value:0width$o}\0", width = len - 1);
        h[at..at + len].copy_from_slice(field.as_bytes());
    }
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(body);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// The base backup's tar as `pg_basebackup -Ft -D -` sends it: `backup_label` first.
fn v2_base_tar() -> Vec<u8> {
    let mut tar = Vec::new();
    tar_member(&mut tar, "backup_label", 0o600, V2_BACKUP_LABEL.as_bytes());
    tar_member(&mut tar, "PG_VERSION", 0o600, b"15\n");
    let relation: Vec<u8> = (0..8192u32).map(|i| (i % 7 + i / 1024) as u8).collect();
    tar_member(&mut tar, "base/1/1259", 0o600, &relation);
    tar_member(
        &mut tar,
        "postgresql.auto.conf",
        0o600,
        b"# Do not edit this file manually!\n",
    );
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

#[test]
#[ignore]
fn make_v2_vectors() {
    let out = vectors_dir().join("repo-v2-wal");
    assert!(
        !out.exists(),
        "{} exists: vectors are made once",
        out.display()
    );
    let tmp = scratch_dir("ocvault-vectors-");
    let cmd = || {
        let mut c = ocvault();
        c.arg("--repo")
            .arg(&out)
            .env("OCVAULT_PASSWORD", password())
            .timeout(std::time::Duration::from_secs(120));
        c
    };
    cmd()
        .args(["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"])
        .args([
            "--chunk-min",
            "256",
            "--chunk-avg",
            "1024",
            "--chunk-max",
            "4096",
        ])
        .args(["--pack-size", "65536"])
        .assert()
        .success();
    // A fake pg_wal: the files PostgreSQL would hand to archive_command.
    let pg_wal = tmp.path().join("pg_wal");
    std::fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
    for (name, bytes) in v2_wal_files() {
        std::fs::write(pg_wal.join(name), bytes).unwrap();
    }
    // Under faketime, so that archive times fall where a real server's would: the first
    // segments and the backup history file just after the backup stopped, timeline 2 later.
    let push = |name: &str, at: &str| {
        let status = std::process::Command::new("faketime")
            .arg(at)
            .arg(assert_cmd::cargo::cargo_bin("ocvault"))
            .arg("--repo")
            .arg(&out)
            .arg("wal-push")
            .arg(pg_wal.join(name))
            .env("TZ", "UTC")
            .env("OCVAULT_PASSWORD", password())
            .status()
            .unwrap();
        assert!(status.success(), "wal-push {name}");
    };
    // The first call pushes the files marked ready with it in one batch.
    for name in [
        "000000010000000000000002",
        "000000010000000000000001.00000028.backup",
    ] {
        std::fs::write(pg_wal.join(format!("archive_status/{name}.ready")), "").unwrap();
    }
    push("000000010000000000000001", "2027-03-01 00:00:05");
    // The base backup, after its history file is archived (so its stop is known).
    cmd()
        .args([
            "snapshot",
            "--host",
            "vectors",
            "--time",
            "2027-03-01T00:00:06Z",
        ])
        .args(["--stdin", "--stdin-filename", "base.tar"])
        .write_stdin(v2_base_tar())
        .assert()
        .success();
    // The switch to timeline 2, pushed one call each.
    push("00000002.history", "2027-03-01 00:01:00");
    push("000000020000000000000003", "2027-03-01 00:02:00");
    let _ = std::fs::remove_dir_all(out.join("tmp"));

    // Add this repository's entry to the manifest; the v1 entries stay as they are.
    add_manifest_entry("repo-v2-wal");
}

/// Adds (or replaces) one repository's entry in `manifest.json`, leaving the others as they
/// are.
fn add_manifest_entry(name: &str) {
    let path = vectors_dir().join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["repositories"][name] = manifest_repository(name);
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&manifest).unwrap() + "\n",
    )
    .unwrap();
}

/// The manifest's `wal` list: every record, by name, with its file id and the BLAKE3 of the
/// bytes `wal-fetch` must write.
fn manifest_wal(repo: &ocvault::repository::IndexedRepository) -> Vec<serde_json::Value> {
    let catalog = ocvault::wal::catalog::list(repo.repository()).unwrap();
    assert!(catalog.damaged.is_empty());
    catalog
        .records
        .iter()
        .map(|(id, r)| {
            let mut h = blake3::Hasher::new();
            for blob in &r.content {
                h.update(&repo.read_blob(blob).unwrap());
            }
            assert_eq!(h.finalize().as_bytes(), &r.hash);
            serde_json::json!({
                "name": r.name,
                "id": id.to_hex(),
                "size": r.size,
                "blake3": hex(&r.hash),
                "blobs": r.content.iter().map(|b| b.to_hex()).collect::<Vec<_>>(),
                "hostname": r.hostname,
                "archived_unix_ns": r.archived_unix_ns,
            })
        })
        .collect()
}

/// `init` writes format version 4: in the clear header and in the sealed config, while key
/// files keep their own version 1 (only write-only keys use key file version 2).
#[test]
fn init_writes_format_version_4() {
    let tmp = scratch_dir("ocvault-vectors-");
    let repo = tmp.path().join("repo");
    ocvault()
        .arg("--repo")
        .arg(&repo)
        .env("OCVAULT_PASSWORD", password())
        .args(["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"])
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .success();
    let config = std::fs::read(repo.join("config")).unwrap();
    assert_eq!(&config[..12], b"OCVAULT\0\x04\0\0\0");
    assert_eq!(ocvault::format::FORMAT_VERSION, 4);
    for key in std::fs::read_dir(repo.join("keys")).unwrap() {
        let bytes = std::fs::read(key.unwrap().path()).unwrap();
        assert_eq!(
            ocvault::repository::decode_key_file(&bytes)
                .unwrap()
                .version,
            1
        );
    }
    let (_copy, opened) = open_copy(&repo);
    assert_eq!(opened.config().version, 4);
    assert_eq!(opened.config().storage, Default::default());
}

/// The clear format version of every vector: 1 for the `repo-v1*` ones, which this build
/// reads without changing (it must never rewrite their config), 2 for `repo-v2-wal`, 3 for
/// `repo-v3-storage`, 4 for `repo-v4-write-only`.
#[test]
fn vectors_keep_their_format_version() {
    for name in VECTOR_REPOS {
        let config = std::fs::read(vectors_dir().join(name).join("config")).unwrap();
        let want: u32 = name[6..7].parse().unwrap();
        assert_eq!(config[8..12], want.to_le_bytes(), "{name}");
        let (_copy, repo) = open_copy(&vectors_dir().join(name));
        assert_eq!(repo.config().version, want, "{name}");
    }
}

/// `repo-v2-wal`: its snapshot is a base backup whose `postgres` field holds what the
/// backup_label and the archived backup history file say, the restored tar is the one that
/// was piped in, and `wal-fetch` writes every archived WAL file byte for byte (a name never
/// archived exits 1 and writes nothing).
#[test]
fn v2_vector_holds_a_base_backup_and_its_wal() {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors_dir().join("manifest.json")).unwrap())
            .unwrap();
    let want = &manifest["repositories"]["repo-v2-wal"];
    assert_eq!(want["format_version"], 2);
    let (copy, repo) = open_copy(&vectors_dir().join("repo-v2-wal"));
    let repo_dir = copy.path().join("repo");

    let snaps = repo.list_snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    let (id, snap) = &snaps[0];
    let start_ns = 1_803_859_200 * 1_000_000_000;
    let expected = ocvault::format::PgBaseBackup {
        label: "vectors base backup".into(),
        timeline: 1,
        start_lsn: 0x200028,
        start_wal: "000000010000000000000001".into(),
        start_unix_ns: start_ns,
        stop_lsn: Some(0x400100),
        stop_unix_ns: Some(start_ns + 5_000_000_000),
        stop_timeline: Some(1),
    };
    assert_eq!(snap.postgres.as_ref(), Some(&expected));
    assert_eq!(
        serde_json::to_value(&expected).unwrap(),
        want["snapshots"][0]["postgres"]
    );
    assert_eq!(snap.tags, ["pg-base-backup"]);
    assert_eq!(snap.paths, ["stdin:base.tar"]);

    let cmd = || {
        let mut c = ocvault();
        c.arg("--repo")
            .arg(&repo_dir)
            .env("OCVAULT_PASSWORD", password())
            .timeout(std::time::Duration::from_secs(120));
        c
    };
    let out = cmd()
        .args(["dump", &id.to_hex(), "base.tar"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout == v2_base_tar(), "base.tar differs");

    // Every record is stored under the keyed hash of its name, and fetches byte for byte.
    let files = v2_wal_files();
    let listed = want["wal"].as_array().unwrap();
    assert_eq!(listed.len(), files.len());
    let fetched = copy.path().join("pg_wal");
    std::fs::create_dir_all(&fetched).unwrap();
    for (name, bytes) in &files {
        let entry = listed.iter().find(|e| e["name"] == *name).unwrap();
        let file_id = repo.keys().wal_record_id(name);
        assert_eq!(entry["id"], file_id.to_hex(), "{name}");
        assert!(
            repo_dir.join("wal").join(file_id.to_hex()).is_file(),
            "{name}"
        );
        assert_eq!(
            entry["blake3"],
            blake3::hash(bytes).to_hex().as_str(),
            "{name}"
        );
        assert_eq!(entry["size"], bytes.len(), "{name}");
        assert_eq!(
            entry["blobs"].as_array().unwrap().len(),
            bytes.len().div_ceil(1 << 20),
            "{name}: one blob per MiB"
        );
        let dest = fetched.join(format!("RECOVERYXLOG-{name}"));
        let out = cmd()
            .args(["wal-fetch", name])
            .arg(&dest)
            .args(["--prefetch", "0", "--retry-for", "0s"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        let got = std::fs::read(&dest).unwrap();
        assert!(got == *bytes, "{name}: fetched bytes differ");
    }
    // The zero second MiB of every segment is one blob.
    let zero_blocks: std::collections::HashSet<&serde_json::Value> = listed
        .iter()
        .filter(|e| e["size"] == V2_SEGMENT_SIZE)
        .map(|e| &e["blobs"][1])
        .collect();
    assert_eq!(zero_blocks.len(), 1);

    let dest = fetched.join("RECOVERYXLOG");
    let out = cmd()
        .args(["wal-fetch", "000000010000000000000009"])
        .arg(&dest)
        .args(["--prefetch", "0", "--retry-for", "0s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!dest.exists());
}

/// A format version this build does not know is refused at `config`, before any key work,
/// with exit 11; so is a key file of a version other than 1.
#[test]
fn unknown_versions_are_refused_with_exit_11() {
    let (copy, _) = open_copy(&vectors_dir().join("repo-v2-wal"));
    let repo = copy.path().join("repo");
    let run = || {
        ocvault()
            .arg("--repo")
            .arg(&repo)
            .env("OCVAULT_PASSWORD", password())
            .arg("snapshots")
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .unwrap()
    };
    let config = std::fs::read(repo.join("config")).unwrap();
    let mut v5 = config.clone();
    v5[8] = 5;
    std::fs::write(repo.join("config"), &v5).unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(11), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ocvault: repository format version 5 is not supported (this ocvault reads versions 1 to 4)\n"
    );
    std::fs::write(repo.join("config"), &config).unwrap();
    let key = std::fs::read_dir(repo.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&key).unwrap();
    assert_eq!(bytes[8], 1, "KeyFile.version");
    // Version 2 is a write-only key (format version 4); 3 is unknown.
    bytes[8] = 3;
    std::fs::write(&key, &bytes).unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(11), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ocvault: key file format version 3 is not supported (this ocvault reads key file versions 1 and 2)\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Format version 3: `repo-v3-storage`, a repository whose config holds a storage policy
// (Object Lock in compliance mode for 2555 days, data packs in DEEP_ARCHIVE). On local disk
// neither applies; a reader must decode the v3 config and restore as from any repository.
// Made once by `make_v3_vectors` (ignored):
// `cargo test --release --test vectors make_v3_vectors -- --ignored --test-threads 1`
// It writes `repo-v3-storage/` and adds its entry to `manifest.json` (the others unchanged).
// ---------------------------------------------------------------------------------------------

/// The policy `repo-v3-storage` was made with.
fn v3_policy() -> ocvault::format::StoragePolicy {
    ocvault::format::StoragePolicy {
        lock: Some(ocvault::format::ObjectLock {
            mode: ocvault::format::LockMode::Compliance,
            days: 2555,
        }),
        data_storage_class: Some("DEEP_ARCHIVE".into()),
    }
}

#[test]
#[ignore]
fn make_v3_vectors() {
    let out = vectors_dir().join("repo-v3-storage");
    assert!(
        !out.exists(),
        "{} exists: vectors are made once",
        out.display()
    );
    // The CLI accepts a lock only on S3; the library writes the same config anywhere.
    let backend = ocvault::backend::Backend::open(out.to_str().unwrap(), true).unwrap();
    let opts = ocvault::repository::InitOptions {
        chunker: ocvault::format::ChunkerParams {
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
        },
        compression_level: 3,
        pack_target_size: 65536,
        kdf_memory_kib: 64,
        kdf_iterations: 1,
        storage: v3_policy(),
    };
    ocvault::repository::Repository::init(backend, password().as_bytes(), &opts).unwrap();
    // A fixed path, as the snapshot records it.
    let base = std::path::PathBuf::from("/tmp/ocvault-v3-vector");
    let _ = std::fs::remove_dir_all(&base);
    let src = base.join("etc-app");
    std::fs::create_dir_all(src.join("certs")).unwrap();
    std::fs::write(src.join(".env"), "DATABASE_URL=postgres://app@db/app\n").unwrap();
    std::fs::write(
        src.join("certs/ca.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n",
    )
    .unwrap();
    let big: Vec<u8> = (0..20_000u32)
        .flat_map(|i| (i * 2654435761).to_le_bytes())
        .collect();
    std::fs::write(src.join("ledger.bin"), big).unwrap();
    set_times(&src.join(".env"), (1_800_000_000, 0), (1_800_000_000, 0));
    set_times(
        &src.join("certs/ca.pem"),
        (1_800_000_000, 0),
        (1_800_000_000, 0),
    );
    set_times(
        &src.join("ledger.bin"),
        (1_800_000_000, 0),
        (1_800_000_000, 0),
    );
    set_times(&src.join("certs"), (1_800_000_000, 0), (1_800_000_000, 0));
    set_times(&src, (1_800_000_000, 0), (1_800_000_000, 0));
    ocvault()
        .arg("--repo")
        .arg(&out)
        .env("OCVAULT_PASSWORD", password())
        .current_dir(&base)
        .args([
            "snapshot",
            "--host",
            "vectors",
            "--time",
            "2027-01-15T02:00:00Z",
            "etc-app",
        ])
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .success();
    let _ = std::fs::remove_dir_all(out.join("tmp"));
    let _ = std::fs::remove_dir_all(&base);
    add_manifest_entry("repo-v3-storage");
}

/// `repo-v3-storage`: its config decodes to the policy it was made with (and the manifest
/// says the same), and its snapshot restores byte for byte on local disk, where neither the
/// lock nor the storage class applies.
#[test]
fn v3_vector_holds_its_storage_policy() {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors_dir().join("manifest.json")).unwrap())
            .unwrap();
    let want = &manifest["repositories"]["repo-v3-storage"];
    assert_eq!(want["format_version"], 3);
    assert_eq!(want["storage"], manifest_storage(&v3_policy()));
    let (copy, repo) = open_copy(&vectors_dir().join("repo-v3-storage"));
    assert_eq!(repo.config().version, 3);
    assert_eq!(repo.config().storage, v3_policy());
    let target = scratch_dir("ocvault-vectors-");
    ocvault()
        .arg("--repo")
        .arg(copy.path().join("repo"))
        .env("OCVAULT_PASSWORD", password())
        .args(["restore", "latest", "--target"])
        .arg(target.path())
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .success();
    let ledger: Vec<u8> = (0..20_000u32)
        .flat_map(|i| (i * 2654435761).to_le_bytes())
        .collect();
    let restored = target.path().join("etc-app");
    assert_eq!(std::fs::read(restored.join("ledger.bin")).unwrap(), ledger);
    assert_eq!(
        std::fs::read_to_string(restored.join(".env")).unwrap(),
        "DATABASE_URL=postgres://app@db/app\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Format version 4: `repo-v4-write-only`. A full key (`password`) snapshots one tree; a
// write-only key (`password2`, key file version 2) snapshots another as host "backup-host",
// so its blobs are sealed to the repository's public key (scheme 2, format-spec §3), and the
// operations log is a hash chain (every entry names the heads before it, each snapshot the
// heads at its time). Made once by `make_v4_vectors` (ignored):
// `cargo test --release --test vectors make_v4_vectors -- --ignored --test-threads 1`
// It writes `repo-v4-write-only/` and adds its entry to `manifest.json` (the others unchanged).
// ---------------------------------------------------------------------------------------------

/// The two trees of `repo-v4-write-only`, under `base`: `etc-app` (full key) and `spool`
/// (write-only key), with fixed times.
fn v4_trees(base: &Path) {
    let app = base.join("etc-app");
    std::fs::create_dir_all(app.join("conf.d")).unwrap();
    std::fs::write(app.join("app.toml"), "listen = \"0.0.0.0:8443\"\n").unwrap();
    std::fs::write(app.join("conf.d/limits.toml"), "max_conn = 512\n").unwrap();
    let spool = base.join("spool");
    std::fs::create_dir_all(spool.join("outgoing")).unwrap();
    let invoices: Vec<u8> = (0..30_000u32)
        .flat_map(|i| (i.wrapping_mul(2246822519) ^ 0x5bd1e995).to_le_bytes())
        .collect();
    std::fs::write(spool.join("outgoing/invoices.bin"), invoices).unwrap();
    std::fs::write(spool.join("README"), "spooled by the backup host\n").unwrap();
    for rel in [
        "etc-app/app.toml",
        "etc-app/conf.d/limits.toml",
        "etc-app/conf.d",
        "etc-app",
        "spool/outgoing/invoices.bin",
        "spool/README",
        "spool/outgoing",
        "spool",
    ] {
        set_times(&base.join(rel), (1_810_000_000, 0), (1_810_000_000, 0));
    }
}

#[test]
#[ignore]
fn make_v4_vectors() {
    let out = vectors_dir().join("repo-v4-write-only");
    assert!(
        !out.exists(),
        "{} exists: vectors are made once",
        out.display()
    );
    let backend = ocvault::backend::Backend::open(out.to_str().unwrap(), true).unwrap();
    let opts = ocvault::repository::InitOptions {
        chunker: ocvault::format::ChunkerParams {
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
        },
        compression_level: 3,
        pack_target_size: 65536,
        kdf_memory_kib: 64,
        kdf_iterations: 1,
        storage: Default::default(),
    };
    ocvault::repository::Repository::init(backend, password().as_bytes(), &opts).unwrap();
    let base = std::path::PathBuf::from("/tmp/ocvault-v4-vector");
    let _ = std::fs::remove_dir_all(&base);
    v4_trees(&base);
    let cache = base.join("cache");
    let run = |pw: String, args: &[&str]| {
        ocvault()
            .arg("--repo")
            .arg(&out)
            .env("OCVAULT_PASSWORD", pw)
            .env("OCVAULT_CACHE_DIR", &cache)
            .current_dir(&base)
            .args(args)
            .timeout(std::time::Duration::from_secs(120))
            .assert()
            .success();
    };
    run(
        password(),
        &[
            "snapshot",
            "--host",
            "vectors",
            "--time",
            "2027-06-01T02:00:00Z",
            "etc-app",
        ],
    );
    let pw2 = vectors_dir().join("password2");
    run(
        password(),
        &[
            "key",
            "add",
            "--write-only",
            "--kdf-memory-kib",
            "64",
            "--kdf-iterations",
            "1",
            "--new-password-file",
            pw2.to_str().unwrap(),
        ],
    );
    run(
        password2(),
        &[
            "snapshot",
            "--host",
            "backup-host",
            "--time",
            "2027-06-01T02:15:00Z",
            "spool",
        ],
    );
    let _ = std::fs::remove_dir_all(out.join("tmp"));
    let _ = std::fs::remove_dir_all(&base);
    add_manifest_entry("repo-v4-write-only");
}

/// `repo-v4-write-only`: the write-only key (`password2`) is a version 2 key file that opens
/// the repository but reads no file (restore exits 14) and checks it; the snapshot it took
/// holds only blobs sealed to the public key (scheme 2), which the full key restores byte for
/// byte; the log is the chain the manifest records, and every snapshot names the log heads
/// of its time.
#[test]
fn v4_vector_holds_write_only_blobs_and_a_log_chain() {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors_dir().join("manifest.json")).unwrap())
            .unwrap();
    let want = &manifest["repositories"]["repo-v4-write-only"];
    assert_eq!(want["format_version"], 4);
    let keys = want["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        keys.iter().filter(|k| k["write_only"] == true).count(),
        1,
        "{keys:?}"
    );
    let (copy, repo) = open_copy(&vectors_dir().join("repo-v4-write-only"));
    assert_eq!(repo.config().version, 4);
    let dir = copy.path().join("repo");

    // Blobs by host: the backup host's are all scheme 2, the full key's scheme 1.
    let indexed = repo.load_index().unwrap();
    let snaps = repo.list_snapshots().unwrap();
    assert_eq!(snaps.len(), 2);
    for (_, s) in &snaps {
        let mut schemes = std::collections::BTreeSet::new();
        let mut walk_ids = vec![s.tree.0];
        while let Some(tree_id) = walk_ids.pop() {
            let loc = indexed.index().get(&tree_id).unwrap();
            schemes.insert(first_byte(&dir, &indexed, &tree_id, &loc));
            let tree = indexed.load_tree(&ocvault::TreeId(tree_id)).unwrap();
            for n in &tree.nodes {
                walk_ids.extend(n.subtree.map(|t| t.0));
                for c in &n.content {
                    let loc = indexed.index().get(&c.0).unwrap();
                    schemes.insert(first_byte(&dir, &indexed, &c.0, &loc));
                }
            }
        }
        let want: u8 = if s.hostname == "backup-host" { 2 } else { 1 };
        assert_eq!(
            schemes.into_iter().collect::<Vec<_>>(),
            vec![want],
            "{}",
            s.hostname
        );
    }

    // The log chain: entries and their parents as the manifest says; each entry names the
    // heads of the entries before it, and each snapshot names the heads of its time.
    let log = ocvault::oplog::list(&repo).unwrap();
    assert!(log.damaged.is_empty());
    let listed: Vec<(String, Vec<String>)> = log
        .intact
        .iter()
        .map(|(id, e)| (id.to_hex(), e.parents.iter().map(|p| p.to_hex()).collect()))
        .collect();
    let recorded: Vec<(String, Vec<String>)> = want["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_string(),
                e["parents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(listed, recorded);
    for (i, (_, parents)) in listed.iter().enumerate().skip(1) {
        assert_eq!(parents, &vec![listed[i - 1].0.clone()], "entry {i}");
    }
    // Made with `Repository::init` (which logs nothing): the first snapshot came before any
    // entry; the backup host's after the first snapshot's and the key's entries.
    let heads = |host: &str| -> Vec<String> {
        let (_, s) = snaps.iter().find(|(_, s)| s.hostname == host).unwrap();
        s.log_heads.iter().map(|h| h.to_hex()).collect()
    };
    assert_eq!(heads("vectors"), Vec::<String>::new());
    assert_eq!(heads("backup-host"), vec![listed[1].0.clone()]);
    assert_eq!(log.intact[1].1.operation, "key add --write-only");

    // The write-only key: opens, checks, refuses to read.
    let cmd = |pw: String| {
        let mut c = ocvault();
        c.arg("--repo")
            .arg(&dir)
            .env("OCVAULT_PASSWORD", pw)
            .timeout(std::time::Duration::from_secs(60));
        c
    };
    cmd(password2()).arg("check").assert().code(0);
    let target = scratch_dir("ocvault-vectors-");
    cmd(password2())
        .args(["restore", "latest", "--target"])
        .arg(target.path().join("wo"))
        .assert()
        .code(14);
    let (backup_host, _) = snaps
        .iter()
        .find(|(_, s)| s.hostname == "backup-host")
        .unwrap();
    cmd(password())
        .args(["restore", &backup_host.to_hex(), "--target"])
        .arg(target.path().join("full"))
        .assert()
        .success();
    let invoices: Vec<u8> = (0..30_000u32)
        .flat_map(|i| (i.wrapping_mul(2246822519) ^ 0x5bd1e995).to_le_bytes())
        .collect();
    assert_eq!(
        std::fs::read(target.path().join("full/spool/outgoing/invoices.bin")).unwrap(),
        invoices
    );
}

/// The scheme byte of a stored blob: the first byte at its place in its pack.
fn first_byte(
    dir: &Path,
    indexed: &ocvault::repository::IndexedRepository,
    _id: &ocvault::id::Id,
    loc: &ocvault::index::BlobLocation,
) -> u8 {
    let pack = indexed.index().pack(loc.pack);
    let path = dir.join(ocvault::backend::FileKind::Pack.path(&pack.id));
    let bytes = std::fs::read(path).unwrap();
    bytes[loc.offset as usize]
}

/// Prunes on the full vector, whose mark lists packs the `late` snapshot (saved during the
/// prune that wrote the mark) needs: those go back into the index, the mark's other packs are
/// deleted once it is ready (grace 0; phase 2 reads marks one at a time), the mark is gone,
/// and `late` still restores byte for byte.
#[test]
fn prune_keeps_the_marked_packs_a_late_snapshot_needs_and_deletes_the_rest() {
    let (tmp, repo) = vector_copy("repo-v1-full");
    let cmd = || {
        let mut c = ocvault();
        c.arg("--repo")
            .arg(&repo)
            .env("OCVAULT_PASSWORD", password())
            .timeout(std::time::Duration::from_secs(120));
        c
    };
    let out = cmd().args(["--json", "snapshots"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let late = last_json(&out)
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            (s["paths"].as_array().unwrap().iter()).any(|p| p.as_str() == Some("stdin:late.sql"))
        })
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = tmp.path().join("before");
    cmd()
        .args(["restore", &late, "--target"])
        .arg(&before)
        .assert()
        .success();
    let marks = |dir: &Path| walk(&dir.join("prune")).len();
    assert_eq!(marks(&repo), 1);
    // The vector's stale marker (a killed backup) still counts for the prune that removes
    // it; the next one finds the mark ready. The first puts the needed packs back into the
    // index (phase 1); the second deletes the mark's other packs, passing over those.
    let mut reports = Vec::new();
    for _ in 0..2 {
        let out = cmd()
            .args(["--json", "prune", "--grace", "0s"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        reports.push(last_json(&out));
    }
    assert!(
        reports[0]["recovered_packs"].as_u64().unwrap() >= 1,
        "{reports:?}"
    );
    assert_eq!(reports[0]["marks_pending"], 1, "{reports:?}");
    assert!(
        reports[1]["packs_deleted"].as_u64().unwrap() >= 1,
        "{reports:?}"
    );
    assert_eq!(reports[1]["marks_pending"], 0, "{reports:?}");
    assert_eq!(marks(&repo), 0, "the ready mark was finished");
    let out = cmd().args(["check", "--read-data"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let after = tmp.path().join("after");
    cmd()
        .args(["restore", &late, "--target"])
        .arg(&after)
        .assert()
        .success();
    let files = walk(&before);
    assert!(!files.is_empty());
    for f in files {
        let (a, b) = (before.join(&f), after.join(&f));
        if a.is_file() {
            assert_eq!(
                std::fs::read(&a).unwrap(),
                std::fs::read(&b).unwrap(),
                "{f:?}"
            );
        }
    }
}

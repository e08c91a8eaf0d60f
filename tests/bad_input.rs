//! Bad input: every case ends in one clear line on standard error (source problems: one
//! warning per source), the exit code documented in README "Exit codes" (src/cli/outcome.rs), and a
//! repository that `check` passes with every earlier snapshot still restoring byte for byte.

mod common;

use common::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// A repository (tiny KDF) with one snapshot of a small tree; returns the source and the id.
fn repo_with_snapshot(extra_init: &[&str]) -> (TestRepo, PathBuf, String) {
    let repo = TestRepo::new();
    init_small(&repo, extra_init);
    let src = repo.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    std::fs::write(src.join("sub/b.log"), b"beta").unwrap();
    random_file(&src.join("sub/r.bin"), 200_000, 1);
    let id = snapshot_id(&repo, &[], &src);
    (repo, src, id)
}

/// What every case ends with: nothing stored lost or damaged.
fn assert_intact(repo: &TestRepo, id: &str, src: &Path) {
    assert_check_passes(repo, &["--read-data"]);
    restore_and_compare(repo, id, src, "src");
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `chmod -R` (directories get `dir_mode`, files `file_mode`), never following links.
fn chmod_tree(path: &Path, dir_mode: u32, file_mode: u32) {
    for p in std::iter::once(PathBuf::new()).chain(walk(path)) {
        let p = path.join(p);
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            chmod(&p, dir_mode);
        } else if m.is_file() {
            chmod(&p, file_mode);
        }
    }
}

fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn wrong_password_missing_repository_and_newer_format() {
    let (repo, src, id) = repo_with_snapshot(&[]);
    let before = fingerprint(&repo.repo);

    let out = repo
        .cmd()
        .env("OCVAULT_PASSWORD", "not the password")
        .arg("snapshot")
        .arg(&src)
        .output()
        .unwrap();
    assert_one_line_error(&out, 12, "wrong password");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("not the password"));

    let out = ocvault()
        .env("OCVAULT_PASSWORD", "x")
        .arg("--repo")
        .arg(repo.path("nothing-here"))
        .arg("snapshots")
        .output()
        .unwrap();
    assert_one_line_error(&out, 10, "no ocvault repository");
    assert!(
        !repo.path("nothing-here").exists(),
        "opening must not create a folder"
    );

    // A folder that exists but holds no repository.
    let out = ocvault()
        .env("OCVAULT_PASSWORD", "x")
        .arg("--repo")
        .arg(&src)
        .arg("snapshots")
        .output()
        .unwrap();
    assert_one_line_error(&out, 10, "no ocvault repository");

    let out = ocvault()
        .arg("--repo")
        .arg(&repo.repo)
        .arg("snapshots")
        .output()
        .unwrap();
    assert_one_line_error(&out, 2, "no password");
    assert_eq!(fingerprint(&repo.repo), before);

    // A repository written by a future version is refused before any key is tried.
    let config = repo.repo.join("config");
    let original = std::fs::read(&config).unwrap();
    let mut bytes = original.clone();
    bytes[8..12].copy_from_slice(&5u32.to_le_bytes());
    std::fs::write(&config, &bytes).unwrap();
    let before = fingerprint(&repo.repo);
    let out = repo.cmd().arg("snapshot").arg(&src).output().unwrap();
    assert_one_line_error(&out, 11, "format version 5");
    let out = repo
        .cmd()
        .env("OCVAULT_PASSWORD", "wrong")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_one_line_error(&out, 11, "format version 5");
    let out = repo.cmd().arg("check").output().unwrap();
    assert_one_line_error(&out, 11, "format version 5");
    assert_eq!(fingerprint(&repo.repo), before);

    std::fs::write(&config, &original).unwrap();
    assert_intact(&repo, &id, &src);
}

#[test]
fn missing_source_path_is_refused_before_anything_is_written() {
    let (repo, src, id) = repo_with_snapshot(&[]);
    let before = fingerprint(&repo.repo);
    let out = repo
        .cmd()
        .arg("snapshot")
        .arg(&src)
        .arg(repo.path("missing"))
        .output()
        .unwrap();
    assert_one_line_error(&out, 2, "does not exist");
    assert_eq!(fingerprint(&repo.repo), before);
    assert_intact(&repo, &id, &src);
}

/// A repository folder the user may read but not write: reading commands work, writing ones
/// stop with one line naming the cause (exit 1) and change nothing.
#[test]
fn read_only_repository_refuses_writes_and_still_reads() {
    let (repo, src, id) = repo_with_snapshot(&[]);
    // Owned by nobody, so only the missing write bits stand in the way.
    chown_tree(&repo.repo, NOBODY, NOBODY);
    chmod_tree(&repo.repo, 0o555, 0o444);
    let before = fingerprint(&repo.repo);

    std::fs::write(src.join("new.txt"), b"new").unwrap();
    let out = repo
        .cmd_as_nobody()
        .arg("snapshot")
        .arg(&src)
        .output()
        .unwrap();
    assert_one_line_error(&out, 1, "read-only");
    let out = repo.cmd_as_nobody().args(["forget", &id]).output().unwrap();
    assert_one_line_error(&out, 1, "read-only");
    assert_eq!(fingerprint(&repo.repo), before);

    repo.cmd_as_nobody().arg("snapshots").assert().success();
    repo.cmd_as_nobody().arg("check").assert().code(0);
    let target = repo.path("nobody-restore");
    std::fs::create_dir_all(&target).unwrap();
    chown_tree(&target, NOBODY, NOBODY);
    repo.cmd_as_nobody()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(
        std::fs::read(target.join("src/sub/b.log")).unwrap(),
        b"beta"
    );
    assert_eq!(fingerprint(&repo.repo), before);

    chmod_tree(&repo.repo, 0o755, 0o644);
    std::fs::remove_file(src.join("new.txt")).unwrap();
    assert_intact(&repo, &id, &src);
}

/// The names of the files in a folder (none when it does not exist).
fn files_in(dir: &Path) -> std::collections::BTreeSet<std::ffi::OsString> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name()).collect(),
        Err(_) => Default::default(),
    }
}

/// A [`full_listing`] without `log/`, `locks/` and `tmp/` and what is in them: the folders a
/// logged read writes to (one log entry, through `tmp/`, under a backup marker it removes);
/// and without the repository folder itself, whose mtime creating `tmp/` changes.
fn outside_log(listing: Vec<(PathBuf, u64, u32, i64, i64)>) -> Vec<(PathBuf, u64, u32, i64, i64)> {
    listing
        .into_iter()
        .filter(|(rel, ..)| !rel.as_os_str().is_empty())
        .filter(|(rel, ..)| !["log", "locks", "tmp"].iter().any(|d| rel.starts_with(d)))
        .collect()
}

/// Every file and folder of a repository with its size, mode and mtime: what a command that
/// only reads must leave exactly as it was.
fn full_listing(dir: &Path) -> Vec<(PathBuf, u64, u32, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::iter::once(PathBuf::new())
        .chain(walk(dir))
        .map(|rel| {
            let m = std::fs::symlink_metadata(dir.join(&rel)).unwrap();
            (rel, m.len(), m.mode(), m.mtime(), m.mtime_nsec())
        })
        .collect()
}

/// Commands that only read (`snapshots`, `log`, `restore`, `ls`, `dump`, `check`, `diff`,
/// `find`, `stats`, `key list`) write nothing into the repository but, for `restore`, `ls`,
/// `dump`, `check`, `diff` and `find`, one operations-log entry each (the audit policy); no
/// backup marker is left behind. On a repository the user may not write to they work all
/// the same, warn that the entry could not be written, and change nothing.
#[test]
fn read_only_commands_write_nothing_but_their_log_entry() {
    let (repo, src, first) = repo_with_snapshot(&[]);
    std::fs::write(src.join("a.txt"), b"alpha, changed").unwrap();
    let second = snapshot_id(&repo, &[], &src);
    // What a finished write leaves is an empty tmp/; a repository copied or synced elsewhere
    // has none.
    std::fs::remove_dir(repo.repo.join("tmp")).unwrap();
    let before = full_listing(&repo.repo);
    let target = repo.path("restores");
    std::fs::create_dir_all(&target).unwrap();
    let reads: Vec<Vec<String>> = vec![
        vec!["snapshots".into()],
        vec!["log".into()],
        vec!["ls".into(), second.clone()],
        vec!["dump".into(), second.clone(), "src/a.txt".into()],
        vec!["check".into(), "--read-data".into()],
        vec!["diff".into(), first.clone(), second.clone()],
        vec!["find".into(), "*.log".into()],
        vec!["stats".into()],
        vec!["key".into(), "list".into()],
    ];
    let log_before = files_in(&repo.repo.join("log"));
    let locks_before = files_in(&repo.repo.join("locks"));
    for args in &reads {
        repo.cmd().args(args).assert().success();
    }
    repo.cmd()
        .args(["restore", &second, "--verify", "--target"])
        .arg(target.join("root"))
        .assert()
        .success();
    assert_eq!(
        outside_log(full_listing(&repo.repo)),
        outside_log(before),
        "a read changed the repository"
    );
    let log_after = files_in(&repo.repo.join("log"));
    assert!(log_before.is_subset(&log_after));
    // ls, dump, check, diff, find and restore.
    assert_eq!(log_after.len(), log_before.len() + 6);
    assert_eq!(files_in(&repo.repo.join("locks")), locks_before);
    assert!(files_in(&repo.repo.join("tmp")).is_empty());
    // What a finished write leaves is an empty tmp/ (see above).
    let _ = std::fs::remove_dir(repo.repo.join("tmp"));

    // The same as a user who may not write there: the folder and its files are read-only.
    chown_tree(&repo.repo, NOBODY, NOBODY);
    chmod_tree(&repo.repo, 0o555, 0o444);
    chown_tree(&target, NOBODY, NOBODY);
    let before = full_listing(&repo.repo);
    let logged = ["ls", "dump", "check", "diff", "find"];
    for args in &reads {
        let out = repo.cmd_as_nobody().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        let warned = String::from_utf8_lossy(&out.stderr)
            .contains("warning: cannot write the operations log");
        assert_eq!(
            warned,
            logged.contains(&args[0].as_str()),
            "{args:?}: {out:?}"
        );
    }
    let out = repo
        .cmd_as_nobody()
        .args(["restore", &second, "--verify", "--target"])
        .arg(target.join("nobody"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: cannot write the operations log"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read(target.join("nobody/src/a.txt")).unwrap(),
        b"alpha, changed"
    );
    // A read that fails there shows its own error, one line, not the log's.
    let out = repo
        .cmd_as_nobody()
        .args(["ls", "0123456789abcdef01"])
        .output()
        .unwrap();
    assert_one_line_error(&out, 2, "no snapshot with id");
    assert_eq!(full_listing(&repo.repo), before);
    assert!(!repo.repo.join("tmp").exists());
    chmod_tree(&repo.repo, 0o755, 0o644);
}

/// A tmpfs mounted for one test, unmounted however the test ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs needs root");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Files below `dir` (none if it does not exist).
fn files_below(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    walk(dir)
        .into_iter()
        .filter(|p| dir.join(p).is_file())
        .collect()
}

#[test]
fn full_disk_during_a_snapshot_leaves_the_repository_whole() {
    let repo = TestRepo::new();
    // Declared after `repo`, so it is unmounted before the temp folder is removed.
    let _disk = Tmpfs::mount(&repo.repo, "8m");
    // Small packs, so several are stored before the disk is full.
    init_small(&repo, &["--pack-size", "1048576"]);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    random_file(&src.join("small.bin"), 300_000, 7);
    let id = snapshot_id(&repo, &[], &src);

    let big = repo.path("big");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..3 {
        random_file(&big.join(format!("part{i}")), 8 << 20, 100 + i);
    }
    let out = repo.cmd().arg("snapshot").arg(&big).output().unwrap();
    assert_one_line_error(&out, 1, "no space left");
    assert_eq!(snapshot_ids(&repo), vec![id.clone()]);
    // Only whole files are visible: no temporary file of the failed writes is left behind.
    assert_eq!(files_below(&repo.repo.join("tmp")), Vec::<PathBuf>::new());
    assert_intact(&repo, &id, &src);

    // The next runs continue: prune reclaims the packs of the failed run, a snapshot fits.
    repo.cmd().arg("prune").assert().success();
    random_file(&src.join("more.bin"), 200_000, 8);
    let id2 = snapshot_id(&repo, &[], &src);
    assert_intact(&repo, &id2, &src);
}

/// Run as `nobody`, a file and a folder it may not read: warnings, exit 3, the snapshot saved
/// with everything else and marked incomplete.
#[test]
fn unreadable_source_file_gives_a_warning_and_exit_code_3() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    chown_tree(&repo.repo, NOBODY, NOBODY);
    let src = repo.path("src");
    std::fs::create_dir_all(src.join("closed")).unwrap();
    std::fs::write(src.join("open.txt"), b"readable").unwrap();
    std::fs::write(src.join("secret"), b"root only").unwrap();
    std::fs::write(src.join("closed/inner"), b"unseen").unwrap();
    chmod(&src.join("secret"), 0o600);
    chmod(&src.join("closed"), 0o700);

    let out = repo
        .cmd_as_nobody()
        .args(["--json", "snapshot"])
        .arg(&src)
        .output()
        .unwrap();
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(3), "{lines:?}");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines
        .iter()
        .any(|l| l.starts_with("ocvault: warning: ") && l.contains("src/secret: cannot read")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("ocvault: warning: ") && l.contains("src/closed: cannot list")));
    assert!(lines[2].contains("is incomplete"), "{lines:?}");
    let summary = last_json(&out);
    assert_eq!(summary["incomplete"], true);
    assert_eq!(summary["errors"], 2);
    let id = summary["snapshot_id"].as_str().unwrap().to_string();
    let list = last_json(&repo.cmd().args(["--json", "snapshots"]).output().unwrap());
    assert_eq!(list[0]["incomplete"], true);

    assert_check_passes(&repo, &["--read-data"]);
    let target = repo.path("out");
    restore_into(&repo, &id, &target);
    assert_eq!(
        std::fs::read(target.join("src/open.txt")).unwrap(),
        b"readable"
    );
    assert!(!target.join("src/secret").exists());
    assert!(target.join("src/closed").is_dir());
    assert_eq!(walk(&target.join("src/closed")), Vec::<PathBuf>::new());
}

/// The byte every writer of [`changing_file_is_stored_as_read`] puts at `offset`, so any
/// read sees the same bytes wherever the file's end is at that moment.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (common::splitmix64((i / 4096) as u64) >> (8 * (i % 8))) as u8)
        .collect()
}

/// A file cut short and grown again by another thread while ocvault reads it is stored as
/// read, with a warning; the snapshot is saved (exit 0) and restores to what was read.
#[test]
fn changing_file_is_stored_as_read() {
    const LEN: usize = 48 << 20;
    let (repo, src, first) = repo_with_snapshot(&[]);
    let data = pattern(LEN);
    let moving = src.join("moving.bin");
    std::fs::write(&moving, &data).unwrap();
    let stop = AtomicBool::new(false);
    // Each attempt races the writer; one that never sees the file change is possible but
    // rare, so the test tries a few times and needs one warning.
    let mut warned = None;
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::io::Write;
            while !stop.load(Ordering::Relaxed) {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&moving)
                    .unwrap();
                f.set_len(1 << 20).unwrap();
                let mut f = std::io::BufWriter::new(f);
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(1 << 20)).unwrap();
                for chunk in data[1 << 20..].chunks(1 << 20) {
                    f.write_all(chunk).unwrap();
                }
            }
        });
        for _ in 0..8 {
            let out = repo
                .cmd()
                .args(["--json", "snapshot", "--force"])
                .arg(&src)
                .output()
                .unwrap();
            let lines = stderr_lines(&out);
            assert_eq!(out.status.code(), Some(0), "{lines:?}");
            if !lines.is_empty() {
                assert_eq!(lines.len(), 1, "{lines:?}");
                assert!(
                    lines[0].starts_with("ocvault: warning: ")
                        && lines[0].contains("moving.bin: file changed while being read"),
                    "{lines:?}"
                );
                warned = Some(last_json(&out)["snapshot_id"].as_str().unwrap().to_string());
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let id = warned.expect("no snapshot saw the file change in 8 attempts");
    assert_check_passes(&repo, &["--read-data"]);
    let target = repo.path("out");
    restore_into(&repo, &id, &target);
    let got = std::fs::read(target.join("src/moving.bin")).unwrap();
    assert!(got.len() < LEN, "the read saw the file cut short");
    assert!(got.len() >= 1 << 20);
    assert!(
        got[..] == data[..got.len()],
        "stored bytes are not what was read"
    );
    // The recorded size is the size read.
    let ls = repo.cmd().args(["--json", "ls", &id]).output().unwrap();
    let text = String::from_utf8_lossy(&ls.stdout);
    let entry: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["path"].as_str().unwrap().ends_with("/moving.bin"))
        .unwrap();
    assert_eq!(entry["size"], got.len() as u64);
    std::fs::remove_file(&moving).unwrap();
    assert_intact(&repo, &first, &src);
}

#[test]
fn ambiguous_and_unknown_snapshot_ids_are_refused() {
    let (repo, src, _) = repo_with_snapshot(&[]);
    // 17 snapshots: two of them share a first hex digit.
    for i in 0..16 {
        std::fs::write(src.join("n"), i.to_string()).unwrap();
        snapshot_id(&repo, &[], &src);
    }
    let ids = snapshot_ids(&repo);
    assert_eq!(ids.len(), 17);
    let prefix = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|p| ids.iter().filter(|id| id.starts_with(p.as_str())).count() >= 2)
        .unwrap();
    let unknown = "0123456789abcdef01";
    assert!(!ids.iter().any(|id| id.starts_with(unknown)));
    let before = fingerprint_outside_log(&repo.repo);
    let entries_before = log_entries(&repo).len();
    let target = repo.path("t");
    for (spec, needle) in [
        (prefix.as_str(), "ambiguous"),
        (unknown, "no snapshot with id"),
        ("not-hex", "not a snapshot id"),
    ] {
        for args in [
            vec!["restore", spec, "--target", target.to_str().unwrap()],
            vec!["ls", spec],
            vec!["dump", spec, "src/a.txt"],
            vec!["forget", spec],
            vec!["diff", spec, &ids[0]],
            vec!["snapshot", "--parent", spec, src.to_str().unwrap()],
        ] {
            let out = repo.cmd().args(&args).output().unwrap();
            assert_one_line_error(&out, 2, needle);
            assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
        }
    }
    assert!(!target.exists());
    assert_eq!(fingerprint_outside_log(&repo.repo), before);
    // Each refused read (restore, ls, dump, diff; three specs) is in the log as a failure
    // (reads are logged, attempts too); the refused writes added nothing.
    let entries = log_entries(&repo);
    assert_eq!(entries.len(), entries_before + 12);
    for e in &entries[entries_before..] {
        assert!(
            ["restore", "ls", "dump", "diff"].contains(&e["operation"].as_str().unwrap()),
            "{e:#}"
        );
        assert!(
            e["result"].as_str().unwrap().starts_with("error: "),
            "{e:#}"
        );
    }
    assert_eq!(snapshot_ids(&repo), ids);
    assert_check_passes(&repo, &["--read-data"]);
}

/// [`fingerprint`] of every file but the operations log's.
fn fingerprint_outside_log(repo: &Path) -> Vec<(PathBuf, blake3::Hash)> {
    let log = repo.join("log");
    fingerprint(repo)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&log))
        .collect()
}

/// The operations log's entries, oldest first (`log --json`).
fn log_entries(repo: &TestRepo) -> Vec<serde_json::Value> {
    let out = repo.cmd().args(["--json", "log"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    last_json(&out)["entries"].as_array().unwrap().clone()
}

/// `restore` refuses a folder that holds files (exit 2, nothing touched) unless `--overwrite`,
/// which replaces entries of the same name, leaves others alone, and never writes through a
/// symlink it finds in the target.
#[test]
fn restore_into_a_folder_that_holds_files() {
    let (repo, src, id) = repo_with_snapshot(&[]);
    let target = repo.path("busy");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let before = fingerprint(&target);
    let out = repo
        .cmd()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_one_line_error(&out, 2, "not empty");
    assert_eq!(fingerprint(&target), before);

    // Same names with other contents, and `src/sub` a link to a folder outside the target.
    let outside = repo.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("b.log"), b"outside").unwrap();
    std::fs::create_dir_all(target.join("src")).unwrap();
    std::fs::write(target.join("src/a.txt"), b"old and longer than alpha").unwrap();
    symlink(&outside, target.join("src/sub")).unwrap();
    repo.cmd()
        .args(["restore", &id, "--overwrite", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_trees_equal(&src, &target.join("src"));
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"x");
    assert_eq!(std::fs::read(outside.join("b.log")).unwrap(), b"outside");
    assert_eq!(walk(&outside), vec![PathBuf::from("b.log")]);

    // --include restores a part only, into the same folder.
    repo.cmd()
        .args(["restore", &id, "--overwrite", "--include", "src/sub/**"])
        .arg("--target")
        .arg(repo.path("part"))
        .assert()
        .success();
    assert!(repo.path("part/src/sub/b.log").is_file());
    assert!(!repo.path("part/src/a.txt").exists());
    assert_intact(&repo, &id, &src);
}

/// Symlinks are stored as links and never followed, loops included, even as a source path
/// named on the command line; names that are not UTF-8 come back with the same bytes.
#[test]
fn symlink_loops_and_non_utf8_names_restore_as_they_were() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    symlink("loop_b", src.join("loop_a")).unwrap();
    symlink("loop_a", src.join("loop_b")).unwrap();
    symlink("self", src.join("self")).unwrap();
    symlink("..", src.join("d/up")).unwrap();
    symlink(&src, src.join("d/abs_up")).unwrap();
    let odd = OsStr::from_bytes(b"caf\xe9-\xff\xfe");
    std::fs::write(src.join(odd), b"latin-1 name").unwrap();
    std::fs::create_dir_all(src.join(odd).with_extension("dir")).unwrap();
    std::fs::write(src.join(odd).with_extension("dir").join("in"), b"x").unwrap();
    symlink(odd, src.join("to_odd")).unwrap();
    // Source paths on the command line: a looping link, and a file whose name is not UTF-8.
    let top = repo.path("top");
    std::fs::create_dir_all(&top).unwrap();
    symlink("looptop", top.join("looptop")).unwrap();
    let odd_top = top.join(OsStr::from_bytes(b"top-\xff"));
    std::fs::write(&odd_top, b"odd top").unwrap();

    let out = repo
        .cmd()
        .args(["--json", "snapshot"])
        .arg(&src)
        .arg(top.join("looptop"))
        .arg(&odd_top)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "{:?}", out.stderr);
    let id = last_json(&out)["snapshot_id"].as_str().unwrap().to_string();
    repo.cmd().args(["ls", &id]).assert().success();

    let target = repo.path("out");
    restore_into(&repo, &id, &target);
    assert_trees_equal(&src, &target.join("src"));
    assert_eq!(
        std::fs::read_link(target.join("looptop")).unwrap(),
        Path::new("looptop")
    );
    assert_eq!(
        std::fs::read(target.join(OsStr::from_bytes(b"top-\xff"))).unwrap(),
        b"odd top"
    );
    assert_eq!(
        std::fs::read_link(target.join("src/d/abs_up")).unwrap(),
        src
    );
    assert_check_passes(&repo, &["--read-data"]);
}

/// One damaged file (a truncated snapshot file, or junk under a 64-hex name in `index/`) must
/// not block the rest: `snapshots`, `restore` and `ls` of another snapshot, `forget` and a new
/// `snapshot` skip it with one warning line naming it and exit 0; `check` reports it (exit 4);
/// `prune` refuses with one line (exit 1) and deletes nothing.
/// `in_listing`: whether `snapshots` and `forget` read the damaged file (they read no index
/// file).
fn one_damaged_file_is_skipped(in_listing: bool, damage: impl Fn(&TestRepo, &str) -> String) {
    let (repo, src, good) = repo_with_snapshot(&[]);
    let good_state = repo.path("good-state");
    copy_tree(&src, &good_state);
    std::fs::write(src.join("a.txt"), b"second").unwrap();
    let other = snapshot_id(&repo, &[], &src);
    let damaged = damage(&repo, &other);
    let warned_once = |out: &std::process::Output, what: &str| {
        let lines = stderr_lines(out);
        let warnings: Vec<_> = lines.iter().filter(|l| l.contains(&damaged)).collect();
        if (what == "snapshots" || what == "forget") && !in_listing {
            assert!(lines.is_empty(), "{lines:?}");
            return;
        }
        assert_eq!(
            warnings.len(),
            1,
            "{what}: want one line naming {damaged}, got {lines:?}"
        );
        assert!(warnings[0].starts_with("ocvault: warning: "), "{lines:?}");
    };

    let out = repo.cmd().args(["--json", "snapshots"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    warned_once(&out, "snapshots");
    let listed = last_json(&out);
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == good.as_str()));

    let target = repo.path("restored");
    let out = repo
        .cmd()
        .args(["restore", &good, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    warned_once(&out, "restore");
    assert_trees_equal(&good_state, &target.join("src"));

    let out = repo.cmd().args(["ls", &good]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    warned_once(&out, "ls");

    let out = repo
        .cmd()
        .args(["--json", "snapshot"])
        .arg(&src)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    warned_once(&out, "snapshot");

    let out = repo
        .cmd()
        .args(["forget", "--keep-last", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    warned_once(&out, "forget");

    let out = repo.cmd().args(["--json", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&damaged),
        "check must name {damaged}"
    );

    let before = fingerprint(&repo.repo.join("data"));
    let out = repo
        .cmd()
        .args(["prune", "--max-unused", "0%"])
        .output()
        .unwrap();
    assert_one_line_error(&out, 1, &damaged);
    assert!(String::from_utf8_lossy(&out.stderr).contains("prune stops"));
    assert_eq!(fingerprint(&repo.repo.join("data")), before);
    assert!(repo.repo.join(&damaged).exists());
}

#[test]
fn truncated_snapshot_file_blocks_only_itself() {
    one_damaged_file_is_skipped(true, |repo, other| {
        let path = format!("snapshots/{other}");
        std::fs::write(repo.repo.join(&path), b"").unwrap();
        path
    });
}

#[test]
fn restoring_the_damaged_snapshot_itself_fails_with_exit_code_1() {
    let (repo, _src, id) = repo_with_snapshot(&[]);
    std::fs::write(repo.repo.join(format!("snapshots/{id}")), b"").unwrap();
    let target = repo.path("t");
    for args in [
        vec!["restore", &id[..8], "--target", target.to_str().unwrap()],
        vec!["ls", &id],
    ] {
        let out = repo.cmd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("snapshots/{id}")), "{err}");
        assert!(
            err.lines()
                .filter(|l| !l.starts_with("ocvault: warning:"))
                .count()
                == 1,
            "{err}"
        );
    }
    assert!(!target.exists());
}

#[test]
fn junk_index_file_blocks_nothing() {
    one_damaged_file_is_skipped(false, |repo, _| {
        let name = "ab".repeat(32);
        let path = format!("index/{name}");
        std::fs::write(repo.repo.join(&path), b"not an index file at all").unwrap();
        path
    });
}

/// Snapshot selection is one shared set of options: `--host/--tag/--path` beside ids are
/// refused by every command that selects (forget used to ignore them and forget the ids all
/// the same), `--all` with filters works for every such command (`tag` and `stats` had none),
/// and a value that does not parse is one line naming its option.
#[test]
fn snapshot_selection_and_values_are_checked_alike() {
    let (repo, src, id) = repo_with_snapshot(&[]);
    let before = fingerprint(&repo.repo);
    for args in [
        vec!["forget", &id, "--host", "elsewhere"],
        vec!["tag", &id, "--tag", "x", "--add", "y"],
        vec!["stats", &id, "--path", "/nowhere"],
        vec!["rewrite", &id, "--host", "h", "--exclude", "*.log"],
    ] {
        let out = repo.cmd().args(&args).output().unwrap();
        assert_one_line_error(&out, 2, "give them with --all");
    }
    for args in [
        vec!["tag", "--add", "y"],
        vec!["rewrite", "--exclude", "*.log"],
    ] {
        let out = repo.cmd().args(&args).output().unwrap();
        assert_one_line_error(&out, 2, "needs snapshot ids or --all");
    }
    for (args, option) in [
        (vec!["prune", "--grace", "soon"], "--grace"),
        (vec!["prune", "--max-repack", "2 parsecs"], "--max-repack"),
        (vec!["prune", "--max-unused", "120%"], "--max-unused"),
        (vec!["check", "--max-age", "yesterday"], "--max-age"),
        (
            vec!["check", "--read-data-subset", "0/3"],
            "--read-data-subset",
        ),
        (
            vec!["forget", "--keep-within", "1 fortnight"],
            "--keep-within",
        ),
        (
            vec!["forget", "--keep-last", "1", "--group-by", "colour"],
            "--group-by",
        ),
    ] {
        let out = repo.cmd().args(&args).output().unwrap();
        assert_one_line_error(&out, 2, option);
    }
    assert_eq!(fingerprint(&repo.repo), before);

    // --all with a filter: only the matching snapshots are tagged and measured.
    let host = serde_json::from_str::<serde_json::Value>(
        &String::from_utf8(
            repo.cmd()
                .args(["--json", "snapshots"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap(),
    )
    .unwrap()[0]["hostname"]
        .as_str()
        .unwrap()
        .to_string();
    let out = repo
        .cmd()
        .args([
            "--json",
            "tag",
            "--all",
            "--host",
            "elsewhere",
            "--add",
            "y",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let out = repo
        .cmd()
        .args(["--json", "tag", "--all", "--host", &host, "--add", "y"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let changed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let new_id = changed[0]["new"].as_str().unwrap().to_string();
    let out = repo
        .cmd()
        .args(["--json", "stats", "--all", "--tag", "y"])
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["snapshots"], 1);
    assert_intact(&repo, &new_id, &src);
}

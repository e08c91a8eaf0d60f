//! `ocvault mount` (issue 21): the snapshots as a read-only FUSE file system. Files read
//! through the mount equal the originals byte for byte (each snapshot its own version, read
//! at once from two threads); `latest` and `hosts/<host>/` lead to the right snapshots; a
//! large file streams with the process's peak memory bounded; SIGTERM unmounts and exits
//! 143; a write-only key is refused with 14. Needs root, /dev/fuse and fusermount3: a
//! machine without them fails here, it never skips.

mod common;

use common::*;
use nix::sys::signal::Signal::{SIGINT, SIGTERM};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Every command here is small; one that takes longer has hung.
const LIMIT: Duration = Duration::from_secs(120);
const WRITE_ONLY: i32 = 14;
const USAGE: i32 = 2;
const INTERRUPTED_SIGTERM: i32 = 143;
const INTERRUPTED_SIGINT: i32 = 130;
/// The large file streamed through the mount (1 GiB: a few seconds each way here).
const LARGE_BYTES: u64 = 1 << 30;
/// Peak resident memory allowed to `ocvault mount` while it serves the large file.
const PEAK_RSS_LIMIT_KIB: u64 = 200 << 10;

/// Fails loudly where FUSE cannot run, rather than letting a test pass without mounting.
fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: these tests need FUSE (modprobe fuse)"
    );
    let found = Command::new("sh")
        .args(["-c", "command -v fusermount3"])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "fusermount3 is missing: install fuse3 (.ci/run does)"
    );
}

fn is_mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let dir = dir.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(dir))
}

/// Unmounts on drop whatever the test left mounted (a failed assertion included).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let mut unmount = Command::new("fusermount3");
            unmount.arg("-uz").arg(&self.0);
            let _ = process::output_within(&mut unmount, Duration::from_secs(20));
        }
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// `ocvault mount` running in the background; the guard unmounts on drop first.
struct Mounted {
    dir: PathBuf,
    _unmount: Unmount,
    process: process::Running,
}

fn mount(repo: &TestRepo, dir: &Path) -> Mounted {
    std::fs::create_dir_all(dir).unwrap();
    let process = process::Running::spawn(repo.cmd_std().arg("mount").arg(dir));
    Mounted {
        dir: dir.to_path_buf(),
        _unmount: Unmount(dir.to_path_buf()),
        process,
    }
}

impl Mounted {
    /// Waits until `snapshots/` lists `count` entries; returns their names, sorted.
    fn wait_for_snapshots(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if is_mounted(&self.dir) {
                let mut names: Vec<String> = std::fs::read_dir(self.dir.join("snapshots"))
                    .map(|d| d.map(|e| e.unwrap().file_name().into_string().unwrap()))
                    .into_iter()
                    .flatten()
                    .collect();
                if names.len() == count {
                    names.sort();
                    return names;
                }
            }
            assert!(Instant::now() < deadline, "the mount did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM or SIGINT (sent twice): the process must unmount and exit 143 or 130.
    fn stop_with(self, signal: nix::sys::signal::Signal, code: i32) {
        let Mounted {
            dir,
            _unmount,
            process,
        } = self;
        // Twice, as an impatient user would: the second must not end it before it unmounts.
        for _ in 0..2 {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(process.pid() as i32), signal)
                .unwrap();
        }
        let out = process.wait_within(LIMIT);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !is_mounted(&dir),
            "still mounted after {signal}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn write_random(path: &Path, len: usize, seed: u64) {
    let mut bytes = vec![0u8; len];
    Rng::new(seed).fill(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

/// `cmp` under a time limit: the two files are equal.
fn assert_same(expected: &Path, actual: &Path) {
    let mut cmp = Command::new("cmp");
    cmp.arg(expected).arg(actual);
    process::run_ok(&mut cmp, LIMIT);
}

/// Reads a whole file in a thread; the caller waits for it with a time limit (a hung read
/// fails the test, and the guard's lazy unmount then ends the read).
fn read_in_thread(path: PathBuf) -> mpsc::Receiver<Vec<u8>> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(std::fs::read(&path).unwrap());
    });
    receive
}

#[test]
fn mount_serves_both_snapshots_and_unmounts_on_sigterm() {
    require_fuse();
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    write_random(&src.join("big.bin"), 64 << 20, 1);
    std::fs::write(src.join("a.txt"), "small file\n").unwrap();
    let mode = std::fs::Permissions::from_mode(0o640);
    std::fs::set_permissions(src.join("a.txt"), mode).unwrap();
    write_random(&src.join("sub/b.bin"), 100_000, 2);
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    write_random(&src.join("changing.bin"), 3 << 20, 3);
    let first_version = std::fs::read(src.join("changing.bin")).unwrap();
    snapshot_id(&repo, &["--host", "hostA", "--tag", "daily"], &src);
    write_random(&src.join("changing.bin"), 3 << 20, 4);
    let second_version = std::fs::read(src.join("changing.bin")).unwrap();
    snapshot_id(&repo, &["--host", "hostA"], &src);

    let mounted = mount(&repo, &repo.path("mnt"));
    let names = mounted.wait_for_snapshots(2);
    let dir = mounted.dir.clone();
    let newest = dir.join("snapshots").join(&names[1]).join("src");
    for file in ["big.bin", "a.txt", "sub/b.bin"] {
        assert_same(&src.join(file), &newest.join(file));
    }
    assert_eq!(
        std::fs::read_link(newest.join("link")).unwrap(),
        Path::new("a.txt")
    );
    for file in ["a.txt", "sub/b.bin", "sub"] {
        let (stored, shown) = (
            std::fs::symlink_metadata(src.join(file)).unwrap(),
            std::fs::symlink_metadata(newest.join(file)).unwrap(),
        );
        assert_eq!(shown.mode(), stored.mode(), "{file}: mode");
        assert_eq!(shown.uid(), stored.uid(), "{file}: owner");
        assert_eq!(shown.gid(), stored.gid(), "{file}: group");
        assert_eq!(
            (shown.mtime(), shown.mtime_nsec()),
            (stored.mtime(), stored.mtime_nsec()),
            "{file}: mtime"
        );
        if stored.is_file() {
            assert_eq!(shown.len(), stored.len(), "{file}: size");
        }
    }

    // Both versions at once, each from its own snapshot.
    let readers: Vec<_> = names
        .iter()
        .map(|n| read_in_thread(dir.join("snapshots").join(n).join("src/changing.bin")))
        .collect();
    let read: Vec<Vec<u8>> = readers
        .iter()
        .map(|r| {
            r.recv_timeout(LIMIT)
                .expect("a read through the mount hung")
        })
        .collect();
    assert!(read[0] == first_version, "snapshot 1's version differs");
    assert!(read[1] == second_version, "snapshot 2's version differs");

    let latest = std::fs::read_link(dir.join("latest")).unwrap();
    assert_eq!(latest, Path::new("snapshots").join(&names[1]));
    assert_same(&src.join("a.txt"), &dir.join("latest/src/a.txt"));
    let mut by_host: Vec<String> = std::fs::read_dir(dir.join("hosts/hostA"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    by_host.sort();
    assert_eq!(by_host, names);
    let via_host = dir
        .join("hosts/hostA")
        .join(&names[0])
        .join("src/changing.bin");
    let bytes = read_in_thread(via_host).recv_timeout(LIMIT).unwrap();
    assert!(
        bytes == first_version,
        "hosts/hostA/ leads to another snapshot"
    );
    let tagged: Vec<_> = std::fs::read_dir(dir.join("tags/daily")).unwrap().collect();
    assert_eq!(tagged.len(), 1);

    mounted.stop_with(SIGTERM, INTERRUPTED_SIGTERM);
}

/// Snapshots `LARGE_BYTES` of seeded random bytes from standard input as `large.bin`;
/// returns their BLAKE3 hash.
fn snapshot_large_stdin(repo: &TestRepo) -> blake3::Hash {
    let mut child = repo
        .cmd_std()
        .args(["snapshot", "--stdin", "--stdin-filename", "large.bin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut rng = Rng::new(7);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..LARGE_BYTES / buf.len() as u64 {
        rng.fill(&mut buf);
        hasher.update(&buf);
        stdin.write_all(&buf).unwrap();
    }
    drop(stdin);
    let deadline = Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("snapshot --stdin did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.wait().unwrap().success());
    hasher.finalize()
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn mount_streams_a_large_file_in_bounded_memory() {
    require_fuse();
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let expected = snapshot_large_stdin(&repo);
    let mounted = mount(&repo, &repo.path("mnt"));
    let names = mounted.wait_for_snapshots(1);
    assert_eq!(names.len(), 1);
    let path = mounted.dir.join("latest/large.bin");
    let started = Instant::now();
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let mut file = std::fs::File::open(&path).unwrap();
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n as u64;
        }
        let _ = send.send((total, hasher.finalize()));
    });
    let (total, hash) = receive
        .recv_timeout(Duration::from_secs(300))
        .expect("reading the large file through the mount hung");
    let seconds = started.elapsed().as_secs_f64();
    let peak = peak_rss_kib(mounted.process.pid());
    eprintln!(
        "mount: read {} MiB in {seconds:.1} s ({:.0} MiB/s), peak RSS {} MiB",
        total >> 20,
        (total >> 20) as f64 / seconds,
        peak >> 10
    );
    assert_eq!(total, LARGE_BYTES);
    assert_eq!(
        hash, expected,
        "the large file read through the mount differs"
    );
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak} KiB over {PEAK_RSS_LIMIT_KIB} KiB"
    );
    mounted.stop_with(SIGTERM, INTERRUPTED_SIGTERM);
}

#[test]
fn mount_refuses_a_write_only_key_and_a_missing_folder() {
    require_fuse();
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let pw = repo.path("write-only.pw");
    std::fs::write(&pw, "write only here\n").unwrap();
    let mut add = repo.cmd_std();
    add.args(["key", "add", "--write-only", "--kdf-memory-kib", "1024"])
        .args(["--kdf-iterations", "1", "--new-password-file"])
        .arg(&pw);
    process::run_ok(&mut add, LIMIT);
    let dir = repo.path("mnt");
    std::fs::create_dir_all(&dir).unwrap();
    let _unmount = Unmount(dir.clone());
    let mut cmd = repo.cmd_std();
    cmd.env("OCVAULT_PASSWORD", "write only here")
        .arg("mount")
        .arg(&dir);
    let out = process::output_within(&mut cmd, LIMIT);
    assert_one_line_error(&out, WRITE_ONLY, "write-only");
    assert!(!is_mounted(&dir));

    // Not a folder: a usage error before anything is opened.
    let mut cmd = repo.cmd_std();
    cmd.arg("mount").arg(repo.path("no-such-folder"));
    let out = process::output_within(&mut cmd, LIMIT);
    assert_one_line_error(&out, USAGE, "is not a folder to mount on");
}

/// Two snapshots of one time are told apart by their short ids; SIGINT unmounts, exit 130.
#[test]
fn mount_names_snapshots_of_one_time_apart_and_unmounts_on_ctrl_c() {
    require_fuse();
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let time = ["--time", "2026-01-31T23:00:00Z"];
    std::fs::write(src.join("a.txt"), "first\n").unwrap();
    let first = snapshot_id(&repo, &time, &src);
    std::fs::write(src.join("a.txt"), "second, longer\n").unwrap();
    let second = snapshot_id(&repo, &time, &src);
    let mounted = mount(&repo, &repo.path("mnt"));
    let names = mounted.wait_for_snapshots(2);
    let mut expected: Vec<String> = [(&first, "first\n"), (&second, "second, longer\n")]
        .iter()
        .map(|(id, _)| format!("2026-01-31T23:00:00Z-{}", &id[..8]))
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    for (id, text) in [(&first, "first\n"), (&second, "second, longer\n")] {
        let name = format!("2026-01-31T23:00:00Z-{}", &id[..8]);
        let path = mounted.dir.join("snapshots").join(name).join("src/a.txt");
        let bytes = read_in_thread(path).recv_timeout(LIMIT).unwrap();
        assert_eq!(bytes, text.as_bytes());
    }
    mounted.stop_with(SIGINT, INTERRUPTED_SIGINT);
}

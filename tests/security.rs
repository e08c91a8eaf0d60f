//! What the storage holder sees: no names, paths or content in clear, nothing shared between
//! repositories, and no password in what ocvault prints or stores.

mod common;

use common::*;
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn stored_files(repo: &Path) -> Vec<std::path::PathBuf> {
    walk(repo)
        .into_iter()
        .map(|p| repo.join(p))
        .filter(|p| p.is_file())
        .collect()
}

#[test]
fn no_name_path_or_content_run_is_stored_in_clear() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("secret-project-src");
    std::fs::create_dir_all(&src).unwrap();
    generate_tree(
        &src,
        &TreeSpec {
            small_files: 300,
            big_file_bytes: 1 << 20,
            sparse_file_bytes: 0,
            ..TreeSpec::default()
        },
    );
    std::fs::write(
        src.join("customer-list-confidential.csv"),
        "alice@example.com,4111111111111111\n".repeat(500),
    )
    .unwrap();
    repo.cmd().arg("snapshot").arg(&src).assert().success();
    repo.cmd()
        .args([
            "snapshot",
            "--stdin",
            "--stdin-filename",
            "payroll-2026.sql",
        ])
        .write_stdin("INSERT INTO salaries VALUES ('bob', 123456);\n".repeat(300))
        .assert()
        .success();

    // Every 16-byte run of every source file (runs of one repeated byte say nothing and are
    // skipped), and every name and path.
    let mut runs: HashSet<[u8; 16]> = HashSet::new();
    let mut names: Vec<Vec<u8>> = vec![
        b"payroll-2026.sql".to_vec(),
        src.as_os_str().as_bytes().to_vec(),
    ];
    for rel in walk(&src) {
        let p = src.join(&rel);
        if let Some(n) = rel.file_name() {
            if n.len() >= 6 {
                names.push(n.as_bytes().to_vec());
            }
        }
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_file() {
            let data = std::fs::read(&p).unwrap();
            for w in data.windows(16) {
                if w.iter().any(|&b| b != w[0]) {
                    runs.insert(w.try_into().unwrap());
                }
            }
        }
    }
    for w in "INSERT INTO salaries VALUES ('bob', 123456);\n"
        .repeat(2)
        .as_bytes()
        .windows(16)
    {
        runs.insert(w.try_into().unwrap());
    }
    assert!(runs.len() > 100_000);
    let files = stored_files(&repo.repo);
    assert!(files.len() > 5);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for (i, w) in bytes.windows(16).enumerate() {
            assert!(
                !runs.contains(<&[u8; 16]>::try_from(w).unwrap()),
                "{} holds source content in clear at byte {i}",
                f.display()
            );
        }
        for n in &names {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_slice()),
                "{} holds the name {:?}",
                f.display(),
                String::from_utf8_lossy(n)
            );
        }
        let fname = f.file_name().unwrap().as_bytes();
        assert!(!names
            .iter()
            .any(|n| fname.windows(n.len()).any(|w| w == n.as_slice())));
    }
}

#[test]
fn two_repositories_with_the_same_data_share_no_blob_id_or_pack_name() {
    let tmp = scratch_dir("ocvault-security-");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    generate_tree(
        &src,
        &TreeSpec {
            small_files: 50,
            sparse_file_bytes: 0,
            ..TreeSpec::default()
        },
    );
    let mut ids: Vec<HashSet<ocvault::Id>> = Vec::new();
    let mut names: Vec<HashSet<String>> = Vec::new();
    for _ in 0..2 {
        let repo = TestRepo::new();
        repo.cmd()
            .args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"])
            .assert()
            .success();
        repo.cmd().arg("snapshot").arg(&src).assert().success();
        let lib = ocvault::repository::Repository::open(
            ocvault::backend::Backend::open(repo.repo.to_str().unwrap(), false).unwrap(),
            repo.password.as_bytes(),
        )
        .unwrap();
        ids.push(
            lib.load_index()
                .unwrap()
                .live_index()
                .iter()
                .map(|(id, _)| id)
                .collect(),
        );
        names.push(
            stored_files(&repo.repo)
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect(),
        );
    }
    assert!(!ids[0].is_empty());
    assert!(
        ids[0].is_disjoint(&ids[1]),
        "blob ids must be keyed per repository"
    );
    let shared: Vec<_> = names[0]
        .intersection(&names[1])
        .filter(|n| *n != "config")
        .collect();
    assert!(shared.is_empty(), "shared file names: {shared:?}");
}

#[test]
fn passwords_never_appear_in_output_errors_or_storage() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let mut outputs = Vec::new();
    for args in [
        vec!["snapshot", src.to_str().unwrap()],
        vec!["snapshots"],
        vec!["check"],
        vec!["log"],
        vec!["--json", "log"],
    ] {
        outputs.push(repo.cmd().args(&args).output().unwrap());
    }
    let wrong = "wrong-password-that-must-not-echo";
    outputs.push(
        repo.cmd()
            .env("OCVAULT_PASSWORD", wrong)
            .arg("snapshots")
            .output()
            .unwrap(),
    );
    for o in &outputs {
        for text in [&o.stdout, &o.stderr] {
            let t = String::from_utf8_lossy(text);
            assert!(
                !t.contains(&repo.password) && !t.contains(wrong),
                "password printed: {t}"
            );
        }
    }
    for f in stored_files(&repo.repo) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes
                .windows(repo.password.len())
                .any(|w| w == repo.password.as_bytes()),
            "{} holds the password",
            f.display()
        );
    }
}

/// Median of a few timings, in seconds.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// A wrong password costs a full Argon2id run, like the right one: there is no early exit
/// that would tell a guesser anything from the time an attempt takes. Attempts alternate so
/// that load from other processes hits both sides alike.
#[test]
fn key_file_resists_a_wrong_password_in_constant_time() {
    use ocvault::backend::{Backend, FileKind};
    use ocvault::repository::{try_key_file, InitOptions, Repository};
    let backend = Backend::open("memory:", true).unwrap();
    let opts = InitOptions {
        kdf_memory_kib: 16 * 1024,
        kdf_iterations: 2,
        ..InitOptions::default()
    };
    let repo = Repository::init(backend, b"the right password", &opts).unwrap();
    let (id, _) = repo.backend().list_ids(FileKind::Key).unwrap()[0];
    let key = repo.backend().read(&FileKind::Key.path(&id)).unwrap();
    let time = |pw: &[u8]| {
        let t = std::time::Instant::now();
        let opened = try_key_file(&key, pw).unwrap().is_some();
        (t.elapsed().as_secs_f64(), opened)
    };
    let (mut right, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..9 {
        let (t, ok) = time(b"the right password");
        assert!(ok);
        right.push(t);
        // Wrong passwords near and far from the right one.
        let guess: &[u8] = if i % 2 == 0 {
            b"the right passwore"
        } else {
            b"x"
        };
        let (t, ok) = time(guess);
        assert!(!ok);
        wrong.push(t);
    }
    let (r, w) = (median(right), median(wrong));
    eprintln!("median key open: right {r:.4}s, wrong {w:.4}s");
    assert!(
        w / r > 0.5 && w / r < 2.0,
        "a wrong password takes {w:.4}s, the right one {r:.4}s"
    );
}

/// Passwords come from the environment, a file or a command, never from an argument that
/// `ps` shows: no command-line option takes one.
#[test]
fn no_command_line_option_takes_a_password() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    for args in [
        vec!["--password", "secret", "snapshots"],
        vec!["snapshots", "--password", "secret"],
        vec!["-p", "secret", "snapshots"],
        vec!["key", "add", "--new-password", "secret"],
        vec!["key", "passwd", "--new-password", "secret"],
    ] {
        let out = repo.cmd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?} was accepted");
    }
    // What the process shows to others while it runs holds no password.
    let mut child = repo
        .cmd_std()
        .args(["snapshot", "--stdin", "--stdin-filename", "x"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert!(!cmdline
        .windows(repo.password.len())
        .any(|w| w == repo.password.as_bytes()));
}

/// Storage secrets in `-o` options or in the repository URL are refused with exit code 2 and
/// not echoed (they belong in the environment). Needs no server: the refusal comes before any
/// connection.
#[test]
fn storage_secrets_are_refused_on_the_command_line() {
    let repo = TestRepo::new();
    for o in [
        "s3.secret_access_key=abc",
        "password=abc",
        "session_token=x",
    ] {
        let out = repo.cmd().args(["-o", o, "snapshots"]).assert().code(2);
        let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(!err.contains("abc"), "secret echoed: {err}");
    }
    let out = ocvault()
        .env("OCVAULT_PASSWORD", &repo.password)
        .args(["--repo", "sftp://u:hunter2@127.0.0.1/x", "snapshots"])
        .assert()
        .code(2);
    assert!(!String::from_utf8_lossy(&out.get_output().stderr).contains("hunter2"));
}

/// How a command ended, how long it took and its peak resident memory.
struct Measured {
    code: Option<i32>,
    seconds: f64,
    peak_rss_mib: f64,
    stdout: String,
}

/// Runs `cmd` and measures its wall time and peak RSS (`ru_maxrss` from `wait4`); kills it
/// after `limit` (then `code` is None).
// The child is reaped by `wait4`, which also gives its resource usage.
#[allow(clippy::zombie_processes)]
fn run_measured(mut cmd: std::process::Command, limit: std::time::Duration) -> Measured {
    use std::io::Read;
    let start = std::time::Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // SAFETY: plain syscall on our own child, with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4 failed");
        if !killed && start.elapsed() > limit {
            let _ = child.kill();
            killed = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let code = (!killed && libc::WIFEXITED(status)).then(|| libc::WEXITSTATUS(status));
    Measured {
        code,
        seconds: start.elapsed().as_secs_f64(),
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        stdout: reader.join().unwrap(),
    }
}

/// A junk file in `data/` named like a pack, 1.5 GiB and sparse, whose last 4 bytes claim a
/// header as long as the whole file: `check` refuses the length before reading it (it is
/// longer than any pack header the format allows) and reports the file as damage, with
/// memory bounded (it used to read the claimed header whole: 3 GiB).
#[test]
fn junk_pack_claiming_a_huge_header_costs_check_no_memory() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    repo.cmd().arg("snapshot").arg(&src).assert().success();
    let name = "ee".repeat(32);
    let junk = repo.repo.join(format!("data/ee/{name}"));
    std::fs::create_dir_all(junk.parent().unwrap()).unwrap();
    let size: u64 = 3 << 29; // 1.5 GiB
    let f = std::fs::File::create(&junk).unwrap();
    f.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&((size - 4) as u32).to_le_bytes(), size - 4)
        .unwrap();
    drop(f);
    let mut cmd = repo.cmd_std();
    cmd.args(["--json", "check"]);
    let m = run_measured(cmd, std::time::Duration::from_secs(120));
    eprintln!(
        "check beside a 1.5 GiB junk pack: {:.2}s, peak RSS {:.1} MiB",
        m.seconds, m.peak_rss_mib
    );
    assert_eq!(m.code, Some(4), "{}", m.stdout);
    assert!(m.stdout.contains(&name), "{}", m.stdout);
    assert!(m.peak_rss_mib < 200.0, "peak RSS {:.1} MiB", m.peak_rss_mib);
    assert!(m.seconds < 30.0, "{:.1}s", m.seconds);
}

/// Writes a key file with these Argon2id parameters (its payload opens with no password) into
/// `keys/`, named so that a listing of `keys/` shows it before every other key file; returns
/// its name.
fn add_listed_first_key_file(repo: &TestRepo, memory_kib: u32, iterations: u32) -> String {
    use ocvault::format::{KdfParams, KeyFile, KEY_MAGIC};
    let keys = repo.repo.join("keys");
    let others: Vec<_> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    for attempt in 0u64..1000 {
        let mut salt = [0u8; 32];
        Rng::new(attempt).fill(&mut salt);
        let kf = KeyFile {
            version: 1,
            kdf: KdfParams {
                memory_kib,
                iterations,
                parallelism: 1,
                salt,
            },
            sealed_payload: vec![1; 1 + 24 + 60 + 16],
        };
        let mut bytes = KEY_MAGIC.to_vec();
        bytes.extend_from_slice(&postcard::to_allocvec(&kf).unwrap());
        let name = blake3::hash(&bytes).to_hex().to_string();
        std::fs::write(keys.join(&name), &bytes).unwrap();
        let order: Vec<_> = std::fs::read_dir(&keys)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if order.iter().position(|n| n.to_str() == Some(&name))
            < others
                .iter()
                .map(|o| order.iter().position(|n| n == o))
                .min()
                .unwrap()
        {
            return name;
        }
        std::fs::remove_file(keys.join(&name)).unwrap();
    }
    panic!("no key file name lists first");
}

/// A key file with the most expensive Argon2id parameters readers used to accept (4 GiB, 100
/// passes), listed before the real key, made every command take minutes and 4 GiB. Now it
/// is refused unread (beyond what `init` can write), and `check` names it as damage.
#[test]
fn hostile_key_file_beyond_the_limits_costs_nothing() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let name = add_listed_first_key_file(&repo, 4 * 1024 * 1024, 100);
    let mut cmd = repo.cmd_std();
    cmd.args(["--json", "snapshots"]);
    let m = run_measured(cmd, std::time::Duration::from_secs(60));
    eprintln!(
        "snapshots beside a 4 GiB x 100 key file: {:.2}s, peak RSS {:.1} MiB",
        m.seconds, m.peak_rss_mib
    );
    assert_eq!(m.code, Some(0));
    assert!(m.seconds < 10.0, "{:.1}s", m.seconds);
    assert!(m.peak_rss_mib < 200.0, "peak RSS {:.1} MiB", m.peak_rss_mib);
    let mut cmd = repo.cmd_std();
    cmd.args(["--json", "check"]);
    let m = run_measured(cmd, std::time::Duration::from_secs(60));
    assert_eq!(m.code, Some(4), "{}", m.stdout);
    assert!(m.stdout.contains(&name) && m.stdout.contains("out of range"));
    assert!(m.peak_rss_mib < 200.0, "peak RSS {:.1} MiB", m.peak_rss_mib);
}

/// A key file within the limits but expensive (2 GiB x 4 passes), listed before the real key:
/// the cheapest key file is tried first, so opening with the real password never runs the
/// expensive one (`check` included); a wrong password tries both, bounded by the limits.
#[test]
fn expensive_key_file_never_slows_down_a_cheaper_one() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    // The limits: 2 GiB, memory times passes at most 8 GiB.
    add_listed_first_key_file(&repo, 2 * 1024 * 1024, 4);
    for args in [vec!["snapshots"], vec!["check"]] {
        let mut cmd = repo.cmd_std();
        cmd.args(&args);
        let m = run_measured(cmd, std::time::Duration::from_secs(120));
        eprintln!(
            "{args:?} beside a 2 GiB x 4 key file: {:.2}s, peak RSS {:.1} MiB",
            m.seconds, m.peak_rss_mib
        );
        assert_eq!(m.code, Some(0), "{args:?}: {}", m.stdout);
        assert!(m.seconds < 10.0, "{args:?}: {:.1}s", m.seconds);
        assert!(
            m.peak_rss_mib < 200.0,
            "{args:?}: peak RSS {:.1} MiB",
            m.peak_rss_mib
        );
    }
    // `init` and `key add` refuse parameters beyond the limits.
    let other = TestRepo::new();
    let out = other
        .cmd()
        .args([
            "init",
            "--kdf-memory-kib",
            "4194304",
            "--kdf-iterations",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = other
        .cmd()
        .args([
            "init",
            "--kdf-memory-kib",
            "2097152",
            "--kdf-iterations",
            "100",
        ])
        .output()
        .unwrap();
    assert_one_line_error(&out, 2, "Argon2id parameters too large");
    assert!(!other.repo.join("config").exists());
}

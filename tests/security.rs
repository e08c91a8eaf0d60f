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
    let tmp = tempfile::tempdir().unwrap();
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
        ids.push(lib.load_index().unwrap().iter().map(|(id, _)| id).collect());
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
    let (id, _) = repo.backend.list_ids(FileKind::Key).unwrap()[0];
    let key = repo.backend.read(&FileKind::Key.path(&id)).unwrap();
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

//! What a hostile host or careless operator does to a run: signals, a password command that
//! hangs, an empty password, another tool's repository, an unreadable folder, paths deeper than
//! PATH_MAX, huge sparse files. Each ends in a documented exit code (README "Exit codes") and a
//! repository that `check` passes.

mod common;

use common::*;
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Files directly in `dir` (none if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Waits for a child up to `limit`; kills it and fails the test past that.
fn wait_with_limit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM and SIGINT in the middle of a snapshot of a large stream: the documented exit
/// code, no backup marker and no temporary file left, no snapshot, and `check` passes.
#[test]
fn signals_stop_a_snapshot_and_leave_nothing_behind() {
    for (signal, code) in [
        (nix::sys::signal::Signal::SIGTERM, 143),
        (nix::sys::signal::Signal::SIGINT, 130),
    ] {
        let repo = TestRepo::new();
        init_small(&repo, &[]);
        let mut child = repo
            .cmd_std()
            .args(["snapshot", "--stdin", "--stdin-filename", "big.bin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // An endless stream of fresh data; the write fails once ocvault is gone.
        let writer = std::thread::spawn(move || {
            let mut rng = Rng::new(7);
            let mut buf = vec![0u8; 1 << 20];
            for _ in 0..8192 {
                rng.fill(&mut buf);
                if stdin.write_all(&buf).is_err() {
                    return;
                }
            }
        });
        // Signal once packs are being written: the marker and a pack in tmp/ exist.
        let start = Instant::now();
        while entries(&repo.repo.join("data")).is_empty() {
            assert!(start.elapsed() < Duration::from_secs(60), "no pack written");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(entries(&repo.repo.join("locks")).len(), 1);
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let status = wait_with_limit(&mut child, Duration::from_secs(60));
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        writer.join().unwrap();
        assert_eq!(status.code(), Some(code), "{signal}: {status:?} {stderr}");
        assert!(stderr.contains("interrupted by"), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(entries(&repo.repo.join("locks")).is_empty(), "{signal}");
        assert!(entries(&repo.repo.join("tmp")).is_empty(), "{signal}");
        assert!(entries(&repo.repo.join("snapshots")).is_empty(), "{signal}");
        assert_check_passes(&repo, &["--read-data"]);
    }
}

/// A password command that never finishes is killed with everything it started.
#[test]
fn a_hanging_password_command_times_out() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let pid_file = repo.path("sleeper.pid");
    let started = Instant::now();
    let out = ocvault()
        .arg("--repo")
        .arg(&repo.repo)
        .arg("snapshots")
        .env(
            "OCVAULT_PASSWORD_COMMAND",
            format!("sleep 300 & echo $! > {}; wait", pid_file.display()),
        )
        .env("OCVAULT_PASSWORD_COMMAND_TIMEOUT", "1")
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_one_line_error(&out, 1, "did not finish within 1s");
    // The command's child went with it (gone, or a zombie nobody waits for).
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    assert!(stat.is_empty() || state.starts_with('Z'), "{stat}");

    // A bad limit is a usage error; a command within the limit still works.
    let out = ocvault()
        .arg("--repo")
        .arg(&repo.repo)
        .arg("snapshots")
        .env("OCVAULT_PASSWORD_COMMAND", "echo x")
        .env("OCVAULT_PASSWORD_COMMAND_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert_one_line_error(&out, 2, "OCVAULT_PASSWORD_COMMAND_TIMEOUT");
    ocvault()
        .arg("--repo")
        .arg(&repo.repo)
        .arg("snapshots")
        .env(
            "OCVAULT_PASSWORD_COMMAND",
            format!("echo '{}'", repo.password),
        )
        .env("OCVAULT_PASSWORD_COMMAND_TIMEOUT", "20")
        .assert()
        .success();
}

#[test]
fn init_refuses_an_empty_password() {
    let repo = TestRepo::new();
    let out = ocvault()
        .arg("--repo")
        .arg(&repo.repo)
        .args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"])
        .env("OCVAULT_PASSWORD", "")
        .output()
        .unwrap();
    assert_one_line_error(&out, 2, "password is empty");
    assert!(!repo.repo.exists(), "nothing is created");
}

/// Another tool's repository is named as such (exit 10), never "corrupt"; an unreadable
/// repository folder is one line naming it.
#[test]
fn restic_and_borg_repositories_and_unreadable_folders() {
    let repo = TestRepo::new();
    // restic: encrypted config, JSON key files, the same folder names as ocvault.
    let restic = repo.path("restic");
    for d in ["keys", "data/00", "snapshots", "index", "locks"] {
        std::fs::create_dir_all(restic.join(d)).unwrap();
    }
    random_file(&restic.join("config"), 155, 1);
    std::fs::write(
        restic.join("keys").join("5b7a".repeat(16)),
        br#"{"created":"2024-01-01T00:00:00Z","kdf":"scrypt","N":32768,"r":8,"p":1}"#,
    )
    .unwrap();
    // borg: a README saying so and an INI config.
    let borg = repo.path("borg");
    std::fs::create_dir_all(borg.join("data/0")).unwrap();
    std::fs::write(
        borg.join("README"),
        "This is a Borg Backup repository.\nSee https://borgbackup.readthedocs.io/\n",
    )
    .unwrap();
    std::fs::write(
        borg.join("config"),
        "[repository]\nversion = 1\nsegments_per_dir = 1000\n",
    )
    .unwrap();
    for (dir, tool) in [(&restic, "restic"), (&borg, "Borg")] {
        for cmd in ["snapshots", "check"] {
            let out = ocvault()
                .env("OCVAULT_PASSWORD", "x")
                .arg("--repo")
                .arg(dir)
                .arg(cmd)
                .output()
                .unwrap();
            assert_one_line_error(&out, 10, "is not an ocvault repository");
            assert!(String::from_utf8_lossy(&out.stderr).contains(tool));
        }
    }

    init_small(&repo, &[]);
    std::fs::set_permissions(&repo.repo, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = repo.cmd_as_nobody().arg("snapshots").output().unwrap();
    std::fs::set_permissions(&repo.repo, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_one_line_error(&out, 1, "permission denied on");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("Builder") && !err.contains("context"),
        "{err}"
    );
    assert_check_passes(&repo, &[]);
}

/// Creates `depth` nested folders of 200-byte names below `root`; returns the deepest.
fn deep_tree(root: &Path, depth: usize) -> std::path::PathBuf {
    let mut p = root.to_path_buf();
    for i in 0..depth {
        p.push(format!("{i:02}{}", "d".repeat(198)));
    }
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A snapshot whose deepest folder is too long to name below the restore target: everything
/// else is restored, the folder is named in one warning, the exit code says incomplete.
#[test]
fn restore_goes_on_past_paths_deeper_than_path_max() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("beside.txt"), b"an ordinary file").unwrap();
    // About 3.8 KiB of path below src: within PATH_MAX where it is, not below a long target.
    let deep = deep_tree(&src.join("a"), 18);
    std::fs::write(deep.join("deep.txt"), b"deep").unwrap();
    std::fs::write(src.join("zz-after.txt"), b"listed after the deep folder").unwrap();
    let id = snapshot_id(&repo, &[], &src);

    // Two 250-byte names more: the deepest folders pass 4096 bytes below the target.
    let target = repo.path(&"t".repeat(250)).join("u".repeat(250));
    let out = repo
        .cmd()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let warnings: Vec<&str> = err.lines().collect();
    assert_eq!(warnings.len(), 1, "one warning for the deep folder: {err}");
    assert!(warnings[0].starts_with("ocvault: warning: "), "{err}");
    assert!(warnings[0].contains("not restored"), "{err}");
    assert_eq!(
        std::fs::read(target.join("src/beside.txt")).unwrap(),
        b"an ordinary file"
    );
    assert_eq!(
        std::fs::read(target.join("src/zz-after.txt")).unwrap(),
        b"listed after the deep folder"
    );
    assert!(target.join("src/a").is_dir());
}

/// The data extents of a file (SEEK_DATA/SEEK_HOLE), so two sparse files can be compared
/// without reading their holes.
fn data_extents(path: &Path) -> Vec<(u64, u64)> {
    use nix::unistd::{lseek, Whence};
    let f = std::fs::File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let mut out = Vec::new();
    let mut off = 0i64;
    while (off as u64) < size {
        let Ok(data) = lseek(&f, off, Whence::SeekData) else {
            break;
        };
        let hole = lseek(&f, data, Whence::SeekHole).unwrap();
        out.push((data as u64, hole as u64));
        off = hole;
    }
    out
}

/// A 50 GB file that is all hole but two stretches: snapshot in seconds (reading the zeros
/// took minutes), restore identical and still sparse.
#[test]
fn huge_sparse_file_snapshots_fast_and_restores_identical() {
    let repo = TestRepo::new();
    init_small(&repo, &[]);
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let path = src.join("sparse.img");
    let f = std::fs::File::create(&path).unwrap();
    let size = 50_000_000_000u64;
    f.set_len(size).unwrap();
    let mut a = vec![0u8; 3_000_000];
    Rng::new(1).fill(&mut a);
    f.write_all_at(&a, 7_777_777_777).unwrap();
    f.write_all_at(b"the end", size - 7).unwrap();
    drop(f);
    assert!(
        allocated_bytes(&path) < 64 << 20,
        "the file system keeps holes"
    );

    let started = Instant::now();
    let out = repo
        .cmd()
        .args(["--json", "snapshot"])
        .arg(&src)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{out:?}");
    assert!(took < Duration::from_secs(30), "snapshot took {took:?}");
    let summary = last_json(&out);
    assert_eq!(summary["bytes_total"], size);
    let id = summary["snapshot_id"].as_str().unwrap().to_string();

    let target = repo.path("restore");
    repo.cmd()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
    let restored = target.join("src/sparse.img");
    assert_eq!(std::fs::metadata(&restored).unwrap().len(), size);
    assert!(allocated_bytes(&restored) < 64 << 20, "restored sparse");
    // Outside both files' data extents both read as zeros; inside, compare the bytes.
    let (fa, fb) = (
        std::fs::File::open(&path).unwrap(),
        std::fs::File::open(&restored).unwrap(),
    );
    for (start, end) in data_extents(&path)
        .into_iter()
        .chain(data_extents(&restored))
    {
        let mut x = vec![0u8; (end - start) as usize];
        let mut y = vec![0u8; (end - start) as usize];
        fa.read_exact_at(&mut x, start).unwrap();
        fb.read_exact_at(&mut y, start).unwrap();
        assert!(x == y, "bytes differ in {start}..{end}");
    }
    assert_check_passes(&repo, &["--read-data"]);
}

/// Writes an executable fake of a secrets manager's CLI into `bin`: it prints `secret` (and a
/// newline, as the real ones do) only for exactly `want` as its arguments; otherwise it says
/// what the real one says on standard error and exits 2.
fn fake_secrets_cli(bin: &Path, name: &str, want: &[&str], secret: &str) {
    let script = format!(
        "#!/bin/sh\nif [ \"$*\" = '{}' ] && [ $# -eq {} ]; then printf '%s\\n' '{secret}'; exit 0; fi\n\
         echo \"{name}: no secret at: $*\" >&2\nexit 2\n",
        want.join(" "),
        want.len()
    );
    let path = bin.join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The password from a secrets manager, called as in a runbook: `vault kv get -field=...`
/// (HashiCorp Vault) and `aws secretsmanager get-secret-value ... --output text` (a cloud
/// KMS), fakes of both on PATH. init, snapshot and restore run with it and the restore gives
/// the bytes back; the password is in no argument ocvault gets; a failing command stops the
/// run with one `ocvault:` line and exit code 1, and the secret is never echoed, not even
/// when the command printed it before failing.
#[test]
fn password_from_vault_and_a_cloud_secrets_manager() {
    let repo = TestRepo::new();
    let secret = "vault-held-Pa55word";
    let bin = repo.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let vault_args = ["kv", "get", "-field=password", "secret/ocvault/prod"];
    let aws_args = [
        "secretsmanager",
        "get-secret-value",
        "--secret-id",
        "ocvault/prod",
        "--query",
        "SecretString",
        "--output",
        "text",
    ];
    fake_secrets_cli(&bin, "vault", &vault_args, secret);
    fake_secrets_cli(&bin, "aws", &aws_args, secret);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let with_command = |command: &str| {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("ocvault"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OCVAULT_") {
                c.env_remove(k);
            }
        }
        c.env("PATH", &path)
            .env("OCVAULT_PASSWORD_COMMAND", command)
            .env("OCVAULT_PASSWORD_COMMAND_TIMEOUT", "20")
            .arg("--repo")
            .arg(&repo.repo);
        c
    };
    let vault = "vault kv get -field=password secret/ocvault/prod";
    let aws = "aws secretsmanager get-secret-value --secret-id ocvault/prod \
               --query SecretString --output text";
    let run = |c: std::process::Command| {
        assert!(
            c.get_args().all(|a| !a.to_string_lossy().contains(secret)),
            "the password is in ocvault's argv: {c:?}"
        );
        let out = assert_cmd::Command::from_std(c)
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(secret), "the password is echoed: {all}");
        out
    };
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("payroll.csv"), b"alice,100\nbob,200\n").unwrap();
    let mut init = with_command(vault);
    init.args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"]);
    let out = run(init);
    assert!(out.status.success(), "init: {out:?}");
    let mut snap = with_command(vault);
    snap.arg("snapshot").arg(&src);
    let out = run(snap);
    assert!(out.status.success(), "snapshot: {out:?}");
    let target = repo.path("restored");
    let mut restore = with_command(aws);
    restore.args(["restore", "latest", "--target"]).arg(&target);
    let out = run(restore);
    assert!(out.status.success(), "restore: {out:?}");
    let restored = walk(&target)
        .into_iter()
        .find(|p| p.ends_with("payroll.csv"))
        .expect("payroll.csv restored");
    assert_eq!(
        std::fs::read(target.join(restored)).unwrap(),
        b"alice,100\nbob,200\n"
    );

    // A secret that is not there; a command that prints the secret and then fails.
    for command in [
        "vault kv get -field=password secret/ocvault/staging".to_string(),
        format!("{vault}; exit 3"),
    ] {
        let mut snapshots = with_command(&command);
        snapshots.arg("snapshots");
        let out = run(snapshots);
        assert_eq!(out.status.code(), Some(1), "{command}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("ocvault")).collect();
        assert_eq!(ours.len(), 1, "{command}: {err}");
        assert!(
            ours[0].starts_with("ocvault: OCVAULT_PASSWORD_COMMAND failed"),
            "{command}: {err}"
        );
        assert!(out.stdout.is_empty(), "{command}: {out:?}");
    }
}

/// Key share passwords from a secrets manager: `key split` and a two-share restore take each
/// custodian's password from `--share-password-command` (fake `vault` on PATH, one secret per
/// custodian); the restore gives the bytes back, no password is in ocvault's argv, and a
/// command for the wrong secret stops the restore with one line naming which command failed.
#[test]
fn share_passwords_from_a_secrets_manager() {
    let repo = TestRepo::new();
    let bin = repo.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let secrets = ["alice-Secret-1", "bob-Secret-2", "carol-Secret-3"];
    let fields = ["alice", "bob", "carol"];
    // One fake CLI per custodian (each answers one path), under distinct names.
    for (field, secret) in fields.iter().zip(secrets) {
        let args = [
            "kv",
            "get",
            &format!("-field={field}"),
            "secret/ocvault/shares",
        ];
        fake_secrets_cli(&bin, &format!("vault-{field}"), &args, secret);
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let command =
        |field: &str| format!("vault-{field} kv get -field={field} secret/ocvault/shares");
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ledger.txt"), b"approved twice\n").unwrap();
    repo.init();
    repo.cmd().arg("snapshot").arg(&src).assert().success();
    let shares = repo.path("shares");
    let mut split = repo.cmd();
    split.env("PATH", &path).args([
        "key",
        "split",
        "--shares",
        "3",
        "--threshold",
        "2",
        "--kdf-memory-kib",
        "1024",
        "--kdf-iterations",
        "1",
        "--out-dir",
    ]);
    split.arg(&shares);
    for f in fields {
        split.arg("--share-password-command").arg(command(f));
    }
    let out = split.timeout(Duration::from_secs(120)).output().unwrap();
    assert!(out.status.success(), "split: {out:?}");
    let restore = |second: &str, target: &Path| {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("ocvault"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OCVAULT_") {
                c.env_remove(k);
            }
        }
        c.env("PATH", &path).arg("--repo").arg(&repo.repo);
        c.arg("--share").arg(shares.join("share-1-of-3.ocvshare"));
        c.arg("--share-password-command").arg(command("alice"));
        c.arg("--share").arg(shares.join("share-3-of-3.ocvshare"));
        c.arg("--share-password-command").arg(command(second));
        c.args(["restore", "latest", "--target"]).arg(target);
        assert!(
            c.get_args()
                .all(|a| secrets.iter().all(|s| !a.to_string_lossy().contains(s))),
            "a share password is in ocvault's argv: {c:?}"
        );
        assert_cmd::Command::from_std(c)
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap()
    };
    let target = repo.path("restored");
    let out = restore("carol", &target);
    assert!(out.status.success(), "restore: {out:?}");
    let restored = walk(&target)
        .into_iter()
        .find(|p| p.ends_with("ledger.txt"))
        .expect("ledger.txt restored");
    assert_eq!(
        std::fs::read(target.join(restored)).unwrap(),
        b"approved twice\n"
    );
    // Bob's secret for Carol's share: the share does not open (exit 12, naming the file).
    let out = restore("bob", &repo.path("restored2"));
    assert_eq!(out.status.code(), Some(12), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("share-3-of-3"), "{err}");
    // A secret that is not there: one line naming the second command, exit 1.
    let out = restore("dave", &repo.path("restored3"));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("ocvault")).collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(
        ours[0].starts_with("ocvault: --share-password-command 2 "),
        "{err}"
    );
    assert!(!repo.path("restored3").exists() || walk(&repo.path("restored3")).is_empty());
}

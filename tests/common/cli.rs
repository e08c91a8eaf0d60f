//! Running the `ocvault` binary against a throw-away repository ([`TestRepo`]), and the
//! assertions of the CLI contract (exit codes, one-line errors).

use super::compare::assert_trees_equal;
use super::env::scratch_dir;
use super::json::last_json;
use super::trees::is_root_user;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `ocvault` binary as an assert_cmd Command, with every `OCVAULT_*`
/// variable (notably `OCVAULT_PASSWORD`) removed from its environment.
pub fn ocvault() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("ocvault").expect("ocvault binary not built");
    for k in ocvault_vars() {
        cmd.env_remove(k);
    }
    cmd.env_remove("OCVAULT_PASSWORD");
    // The local cache (remote repositories' metadata, write-only keys' trees) goes under
    // target/, never into the home folder of whoever runs the tests.
    cmd.env(
        "OCVAULT_CACHE_DIR",
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ocvault-cache"),
    );
    cmd
}

/// The `OCVAULT_*` variables of the test's own environment, which no child may inherit.
fn ocvault_vars() -> impl Iterator<Item = std::ffi::OsString> {
    std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| k.as_bytes().starts_with(b"OCVAULT_"))
}

/// A throw-away repository location plus its password.
pub struct TestRepo {
    /// Scratch folder owning everything (deleted on drop, see [`scratch_dir`]).
    pub dir: tempfile::TempDir,
    /// `dir/repo` — not initialised by `new()`.
    pub repo: PathBuf,
    /// Password passed via `OCVAULT_PASSWORD`.
    pub password: String,
}

impl TestRepo {
    /// New temp dir; repo path `dir/repo` (not yet initialised).
    pub fn new() -> Self {
        // OCVAULT_KEEP_TMP=1 keeps the folder (repository and sources) for a post-mortem.
        let dir = scratch_dir("ocvault-test-");
        let repo = dir.path().join("repo");
        TestRepo {
            dir,
            repo,
            password: "correct horse battery staple".to_string(),
        }
    }

    /// `ocvault --repo <repo>` with `OCVAULT_PASSWORD` set; add subcommand args. The local
    /// cache (the log's heads) is kept in the scratch folder, not in the user's home.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut c = ocvault();
        c.arg("--repo")
            .arg(&self.repo)
            .env("OCVAULT_PASSWORD", &self.password)
            .env("OCVAULT_CACHE_DIR", self.cache_dir());
        c
    }

    /// Where [`TestRepo::cmd`] keeps ocvault's local cache (`OCVAULT_CACHE_DIR`).
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// The same as [`TestRepo::cmd`] as a plain `std::process::Command`, for spawning and killing.
    pub fn cmd_std(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("ocvault"));
        for k in ocvault_vars() {
            c.env_remove(k);
        }
        c.arg("--repo")
            .arg(&self.repo)
            .env("OCVAULT_PASSWORD", &self.password)
            .env("OCVAULT_CACHE_DIR", self.cache_dir());
        c
    }

    /// Run `init` and assert success.
    pub fn init(&self) -> &Self {
        self.cmd().arg("init").assert().success();
        self
    }

    /// A fresh path inside the temp dir (not created), e.g. a restore target.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for TestRepo {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------
// Repository helpers shared by the CLI tests
// ---------------------------------------------------------------------------

/// `init` with a tiny Argon2id (tests spend their time on what they test); `extra` adds
/// init options such as `--pack-size`.
pub fn init_small(repo: &TestRepo, extra: &[&str]) {
    repo.cmd()
        .args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"])
        .args(extra)
        .assert()
        .success();
}

/// [`init_small`] with small chunks (4/16/64 KiB) and packs of `pack_size` bytes: many packs
/// and index files from little data.
pub fn init_small_packs(repo: &TestRepo, pack_size: u32) {
    let pack_size = pack_size.to_string();
    init_small(
        repo,
        &[
            "--pack-size",
            &pack_size,
            "--chunk-min",
            "4096",
            "--chunk-avg",
            "16384",
            "--chunk-max",
            "65536",
        ],
    );
}

/// Snapshots `dir` (with more `args`), asserts success, returns the full snapshot id.
pub fn snapshot_id(repo: &TestRepo, args: &[&str], dir: &Path) -> String {
    let out = repo
        .cmd()
        .args(["--json", "snapshot"])
        .args(args)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    last_json(&out)["snapshot_id"].as_str().unwrap().to_string()
}

/// The full ids of every snapshot, oldest first.
pub fn snapshot_ids(repo: &TestRepo) -> Vec<String> {
    let out = repo.cmd().args(["--json", "snapshots"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    last_json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Restores snapshot `id` into a fresh folder and compares its top-level entry `name` with
/// `expected` exactly.
pub fn restore_and_compare(repo: &TestRepo, id: &str, expected: &Path, name: &str) {
    let target = repo.path(&format!("restore-{id}"));
    let _ = fs::remove_dir_all(&target);
    restore_into(repo, id, &target);
    assert_trees_equal(expected, &target.join(name));
    fs::remove_dir_all(&target).unwrap();
}

/// Restores snapshot `id` into `target`, asserting success.
pub fn restore_into(repo: &TestRepo, id: &str, target: &Path) {
    repo.cmd()
        .args(["restore", id, "--target"])
        .arg(target)
        .assert()
        .success();
}

/// A failed command: the documented exit code and exactly one line on standard error.
pub fn assert_one_line_error(out: &std::process::Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "want one line, got: {err:?}"
    );
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(err.starts_with("ocvault: "), "{err:?}");
}

/// `check` (with `args`, e.g. `--read-data`) exits 0: the repository is intact.
pub fn assert_check_passes(repo: &TestRepo, args: &[&str]) {
    let out = repo.cmd().arg("check").args(args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "check {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// User and group id of `nobody`, for running ocvault without root's permission bypass.
pub const NOBODY: u32 = 65534;

impl TestRepo {
    /// [`TestRepo::cmd`] run as `nobody` through `setpriv`. Tests run as root, which reads
    /// and writes past permission bits; only an unprivileged process sees them.
    pub fn cmd_as_nobody(&self) -> assert_cmd::Command {
        assert!(
            is_root_user(),
            "this test changes user with setpriv and must run as root"
        );
        // The temp folder is 0700; nobody must reach the repository and sources inside it.
        fs::set_permissions(self.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        for folder in self.dir.path().ancestors().skip(1) {
            let mode = fs::metadata(folder).unwrap().permissions().mode();
            assert!(
                mode & 0o001 != 0,
                "{} is closed to other users, so nobody cannot reach the test's files: \
                 set OCVAULT_TEST_TMP to a folder others can enter, e.g. /tmp/ocvault-tests",
                folder.display()
            );
        }
        let mut c = assert_cmd::Command::new("setpriv");
        for k in ocvault_vars() {
            c.env_remove(k);
        }
        c.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .arg(assert_cmd::cargo::cargo_bin("ocvault"))
            .arg("--repo")
            .arg(&self.repo)
            .env("OCVAULT_PASSWORD", &self.password);
        c
    }
}

/// Key shares made for a test: `key split --shares 3 --threshold 2` into `work/shares`.
pub struct SplitShares {
    /// `share-<i>-of-3.ocvshare`, i = 1..=3.
    pub files: Vec<std::path::PathBuf>,
    /// Each custodian's password file, in share order.
    pub passwords: Vec<std::path::PathBuf>,
}

impl SplitShares {
    /// Writes three custodian password files under `work` and runs `split` (an `ocvault`
    /// command for the repository, opened with its password) as `key split --shares 3
    /// --threshold 2`; asserts it succeeded.
    pub fn two_of_three(mut split: assert_cmd::Command, work: &Path) -> SplitShares {
        let passwords: Vec<std::path::PathBuf> = (1..=3)
            .map(|i| {
                let f = work.join(format!("custodian-{i}.pw"));
                std::fs::write(&f, format!("custodian {i} secret\n")).unwrap();
                f
            })
            .collect();
        let out_dir = work.join("shares");
        split
            .args([
                "key",
                "split",
                "--shares",
                "3",
                "--threshold",
                "2",
                "--out-dir",
            ])
            .arg(&out_dir);
        for f in &passwords {
            split.arg("--share-password-file").arg(f);
        }
        let out = split
            .timeout(std::time::Duration::from_secs(120))
            .output()
            .unwrap();
        assert!(out.status.success(), "key split: {out:?}");
        SplitShares {
            files: (1..=3)
                .map(|i| out_dir.join(format!("share-{i}-of-3.ocvshare")))
                .collect(),
            passwords,
        }
    }

    /// `--share FILE --share-password-file F` for the shares numbered `which` (1-based).
    pub fn args(&self, which: &[usize]) -> Vec<std::ffi::OsString> {
        which
            .iter()
            .flat_map(|&i| {
                [
                    "--share".into(),
                    self.files[i - 1].clone().into_os_string(),
                    "--share-password-file".into(),
                    self.passwords[i - 1].clone().into_os_string(),
                ]
            })
            .collect()
    }
}

//! Profiles (`--profile NAME`, `--config FILE`): a daily job driven by a profile end to end,
//! the command line winning over it, and profiles with secrets in clear or unknown keys
//! refused (exit 2, one line).

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};

const PW: &str = "profile test password";
const USAGE: i32 = 2;

/// A scratch folder with a password file, two source folders and an XDG config folder.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let s = Setup {
            dir: scratch_dir("ocvault-profiles-"),
        };
        fs::write(s.path("password"), format!("{PW}\n")).unwrap();
        let etc = s.path("src/etc");
        let git = s.path("src/git");
        fs::create_dir_all(etc.join("conf.d")).unwrap();
        random_file(&etc.join("conf.d/app.conf"), 5000, 1);
        random_file(&etc.join("hosts"), 300, 2);
        random_file(&etc.join("scratch.tmp"), 700, 3);
        generate_tree(
            &git,
            &TreeSpec {
                small_files: 40,
                big_file_bytes: 1 << 20,
                seed: 4,
                ..TreeSpec::default()
            },
        );
        fs::create_dir_all(s.path("config/ocvault")).unwrap();
        s
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Writes `config/ocvault/NAME.toml`, private to its owner.
    fn write_profile(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path(&format!("config/ocvault/{name}.toml"));
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// The daily job's profile: this folder's repository, password file, sources and policy.
    fn prod_profile(&self) -> String {
        format!(
            r#"# The daily job of host db1.
[repository]
repo = "{repo}"
password-file = "{pw}"

[snapshot]
sources = ["{etc}", "{git}"]
excludes = ["*.tmp"]
tags = ["daily"]
host = "db1"

[forget]
keep-daily = 2
prune = true
"#,
            repo = self.path("repo").display(),
            pw = self.path("password").display(),
            etc = self.path("src/etc").display(),
            git = self.path("src/git").display(),
        )
    }

    /// `ocvault` with no password or repository in its environment, and this folder as
    /// $XDG_CONFIG_HOME.
    fn cmd(&self) -> assert_cmd::Command {
        let mut c = ocvault();
        c.env("XDG_CONFIG_HOME", self.path("config"));
        c
    }

    /// [`Setup::cmd`] with OCVAULT_PROFILE naming a profile that does not exist.
    fn cmd_with_stray_profile(&self) -> assert_cmd::Command {
        let mut c = self.cmd();
        c.env("OCVAULT_PROFILE", "stray");
        c
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cmd().arg("--json").args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        last_json(&out)
    }
}

fn ids_and_times(list: &serde_json::Value) -> Vec<(String, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["time"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_daily_job_runs_from_a_profile() {
    let s = Setup::new();
    s.write_profile("prod", &s.prod_profile());
    s.cmd()
        .args(["--profile", "prod", "init", "--kdf-memory-kib", "1024"])
        .args(["--kdf-iterations", "1"])
        .assert()
        .success();
    // Five daily runs over four days, with no path on the command line.
    let times = [
        "2026-01-01T03:00:00Z",
        "2026-01-02T03:00:00Z",
        "2026-01-03T03:00:00Z",
        "2026-01-04T03:00:00Z",
        "2026-01-04T20:00:00Z",
    ];
    let mut ids = Vec::new();
    for (i, t) in times.iter().enumerate() {
        random_file(&s.path("src/etc/hosts"), 300, 10 + i as u64);
        let out = s.json(&["--profile", "prod", "snapshot", "--time", t]);
        ids.push(out["snapshot_id"].as_str().unwrap().to_string());
    }
    let list = s.json(&["--profile", "prod", "snapshots"]);
    for snap in list.as_array().unwrap() {
        let paths: Vec<&str> = snap["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        let want = [s.path("src/etc"), s.path("src/git")];
        let want: Vec<String> = want.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(paths, want, "{snap}");
        assert_eq!(snap["tags"], serde_json::json!(["daily"]), "{snap}");
        assert_eq!(snap["hostname"], "db1", "{snap}");
    }
    s.cmd()
        .args(["--profile", "prod", "check", "--read-data"])
        .assert()
        .code(0);

    // keep-daily = 2: the newest of 01-04 and of 01-03 stay; prune = true runs prune.
    let out = s
        .cmd()
        .args(["--profile", "prod", "forget"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("forgot 3 snapshots"), "{text}");
    let left = ids_and_times(&s.json(&["--profile", "prod", "snapshots"]));
    assert_eq!(
        left,
        vec![
            (ids[2].clone(), times[2].to_string()),
            (ids[4].clone(), times[4].to_string()),
        ]
    );
    // Prune ran: the repository is whole, and the latest restores without the excluded file.
    s.cmd()
        .args(["--profile", "prod", "check", "--read-data"])
        .assert()
        .code(0);
    let target = s.path("restored");
    s.cmd()
        .args(["--profile", "prod", "restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_trees_equal(&s.path("src/git"), &target.join("git"));
    assert_eq!(
        hash_file(&target.join("etc/conf.d/app.conf")),
        hash_file(&s.path("src/etc/conf.d/app.conf"))
    );
    assert_eq!(
        hash_file(&target.join("etc/hosts")),
        hash_file(&s.path("src/etc/hosts"))
    );
    assert!(!target.join("etc/scratch.tmp").exists());
}

/// Initialises the profile's repository and takes one snapshot of its sources.
fn one_snapshot(s: &Setup, profile_args: &[&str]) -> String {
    s.cmd()
        .args(profile_args)
        .args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"])
        .assert()
        .success();
    let out = s.json(&[profile_args, &["snapshot"]].concat());
    out["snapshot_id"].as_str().unwrap().to_string()
}

#[test]
fn config_file_and_password_command_work() {
    let s = Setup::new();
    // Not in the XDG folder: --config takes any path.
    let file = s.path("elsewhere.toml");
    let text = s.prod_profile().replace(
        &format!("password-file = \"{}\"", s.path("password").display()),
        &format!(
            "password-command = \"cat {}\"",
            s.path("password").display()
        ),
    );
    assert!(text.contains("password-command"));
    fs::write(&file, text).unwrap();
    let config = file.display().to_string();
    let id = one_snapshot(&s, &["--config", &config]);
    let list = ids_and_times(&s.json(&["--config", &config, "snapshots"]));
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].0, id);
    // The same repository opens with the password on its own: the command gave it.
    let mut c = ocvault();
    c.arg("--repo")
        .arg(s.path("repo"))
        .env("OCVAULT_PASSWORD", PW)
        .args(["snapshots", "--json"])
        .assert()
        .success();
    // --config wins over OCVAULT_PROFILE, here naming a profile that does not exist.
    s.cmd_with_stray_profile()
        .args(["--config", &config, "snapshots"])
        .assert()
        .success();
    let out = s
        .cmd_with_stray_profile()
        .arg("snapshots")
        .output()
        .unwrap();
    assert_one_line_error(&out, USAGE, "stray.toml");
    // Not found: one line, exit 2, naming where it looked.
    let out = s
        .cmd()
        .args(["--profile", "nosuch", "snapshots"])
        .output()
        .unwrap();
    assert_one_line_error(&out, USAGE, "nosuch.toml");
}

#[test]
fn the_command_line_wins_over_the_profile() {
    let s = Setup::new();
    // The profile names a repository that does not exist; --repo names the real one.
    let real = s.path("repo").display().to_string();
    let text = s
        .prod_profile()
        .replace(&real, &s.path("missing-repo").display().to_string());
    s.write_profile("prod", &text);
    s.cmd()
        .args(["--profile", "prod", "--repo", &real])
        .args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"])
        .assert()
        .success();
    // Paths and a tag on the command line replace the profile's sources and tags.
    let git = s.path("src/git").display().to_string();
    let out = s.json(&[
        "--profile",
        "prod",
        "--repo",
        &real,
        "snapshot",
        "--tag",
        "manual",
        &git,
    ]);
    let id = out["snapshot_id"].as_str().unwrap();
    let list = s.json(&["--profile", "prod", "--repo", &real, "snapshots"]);
    let snap = &list.as_array().unwrap()[0];
    assert_eq!(snap["id"], id);
    assert_eq!(snap["paths"], serde_json::json!([git]));
    assert_eq!(snap["tags"], serde_json::json!(["manual"]));
    // The environment wins too (OCVAULT_REPOSITORY).
    s.cmd()
        .env("OCVAULT_REPOSITORY", &real)
        .args(["--profile", "prod", "snapshots"])
        .assert()
        .success();
    // Without either, the profile's (missing) repository is used, and fails.
    let out = s
        .cmd()
        .args(["--profile", "prod", "snapshots"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing-repo"));
    // A keep option on the command line replaces the profile's whole policy.
    let out = s
        .cmd()
        .args(["--profile", "prod", "--repo", &real, "--json", "forget"])
        .args(["--keep-last", "1", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let plan = last_json(&out);
    let reasons = &plan["groups"][0]["keep"][0]["reasons"];
    assert_eq!(reasons, &serde_json::json!(["last 1"]), "{plan}");
}

#[test]
fn secrets_in_clear_and_unknown_keys_are_refused() {
    let s = Setup::new();
    let base = s.prod_profile();
    for (name, text, needle) in [
        (
            "literal",
            base.replace("password-file = ", "password = \"hunter2\"\n# "),
            "repository.password holds a secret in clear",
        ),
        (
            "envsecret",
            format!("{base}\n[env]\nAWS_SECRET_ACCESS_KEY = \"abc\"\n"),
            "env.AWS_SECRET_ACCESS_KEY holds a secret in clear",
        ),
        (
            "unknown",
            base.replace("keep-daily", "keep-dayly"),
            "unknown field `keep-dayly`",
        ),
        (
            "section",
            format!("{base}\n[backup]\nsources = []\n"),
            "unknown field `backup`",
        ),
    ] {
        let file = s.write_profile(name, &text);
        let out = s
            .cmd()
            .args(["--profile", name, "snapshots"])
            .output()
            .unwrap();
        assert_one_line_error(&out, USAGE, needle);
        assert_one_line_error(&out, USAGE, &file.display().to_string());
        // The secret itself is never shown.
        assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
    }
    assert!(!Path::new(&s.path("repo")).exists());
}

#[test]
fn copy_takes_its_destination_from_the_profile() {
    let s = Setup::new();
    let dest_pw = s.path("dest-password");
    fs::write(&dest_pw, "the copy's own password\n").unwrap();
    let text = format!(
        "{}\n[copy]\nto = \"{}\"\nto-password-file = \"{}\"\n",
        s.prod_profile(),
        s.path("dest").display(),
        dest_pw.display()
    );
    s.write_profile("prod", &text);
    let id = one_snapshot(&s, &["--profile", "prod"]);
    let mut init_dest = ocvault();
    init_dest
        .arg("--repo")
        .arg(s.path("dest"))
        .env("OCVAULT_PASSWORD", "the copy's own password")
        .args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"])
        .assert()
        .success();
    let out = s.json(&["--profile", "prod", "copy", "--all"]);
    let copied = out["copied"].as_array().unwrap();
    assert_eq!(copied.len(), 1, "{out}");
    assert_eq!(copied[0][0], id.as_str(), "{out}");
    // The copy restores from the destination with the destination's password.
    let target = s.path("restored");
    let mut restore = ocvault();
    restore
        .arg("--repo")
        .arg(s.path("dest"))
        .env("OCVAULT_PASSWORD", "the copy's own password")
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_trees_equal(&s.path("src/git"), &target.join("git"));
}

#[test]
fn home_config_is_found_and_readable_env_values_warn() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    // Without XDG_CONFIG_HOME the profile is ~/.config/ocvault/NAME.toml.
    let home = s.path("home");
    fs::create_dir_all(home.join(".config/ocvault")).unwrap();
    let file = home.join(".config/ocvault/prod.toml");
    let text = format!("{}\n[env]\nAWS_REGION = \"eu-west-1\"\n", s.prod_profile());
    fs::write(&file, text).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let cmd = || {
        let mut c = ocvault();
        c.env_remove("XDG_CONFIG_HOME").env("HOME", &home);
        c
    };
    let out = cmd()
        .args(["--profile", "prod", "init", "--kdf-memory-kib", "1024"])
        .args(["--kdf-iterations", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: profile") && err.contains("readable by other users"),
        "{err}"
    );
    assert!(s.path("repo/config").exists());
    // Private, it is quiet.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let out = cmd()
        .args(["--profile", "prod", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Commands that touch no repository ignore a missing OCVAULT_PROFILE.
    cmd()
        .env("OCVAULT_PROFILE", "stray")
        .args(["completion", "bash"])
        .assert()
        .success();
}

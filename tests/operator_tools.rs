//! Operator tools: shell completions, man pages, the systemd units and cron line with the
//! daily job script (contrib/), and `--metrics-file`. No servers: `bash`, `man` and
//! `systemd-analyze` only, which .ci/run installs (a missing one fails the test).

mod common;

use common::process::{self, output_within, run_ok};
use common::*;
use prometheus_parse::{Scrape, Value};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

const LIMIT: Duration = Duration::from_secs(120);
const WRONG_PASSWORD: i32 = 12;

/// The path of `program` on PATH, or a panic saying how .ci/run gets it.
fn need(program: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{program} is not installed: `apt-get install {package}` (.ci/run does)")
    })
}

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

fn ocvault_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("ocvault")
}

fn stdout_of(cmd: &mut Command) -> String {
    run_ok(cmd, LIMIT)
}

/// What bash's completion function offers for the words typed so far.
fn bash_completions(script: &Path, words: &[&str]) -> Vec<String> {
    // complete -F calls the function with the command, the word being completed and the one
    // before it.
    let cword = words.len() - 1;
    let program = format!(
        "source {}; COMP_WORDS=({}); COMP_CWORD={cword}; _ocvault ocvault {} {}; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words.join(" "),
        words[cword],
        words[cword - 1]
    );
    let out = stdout_of(Command::new(need("bash", "bash")).args(["-c", &program]));
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn bash_completion_completes_commands_and_options() {
    let dir = scratch_dir("ocvault-completion-");
    let script = dir.path().join("ocvault.bash");
    let text = stdout_of(Command::new(ocvault_bin()).args(["completion", "bash"]));
    fs::write(&script, &text).unwrap();
    assert_eq!(
        bash_completions(&script, &["ocvault", "sn"]),
        ["snapshot", "snapshots"]
    );
    assert_eq!(
        bash_completions(&script, &["ocvault", "snapshot", "--exclude"]),
        ["--exclude", "--exclude-file"]
    );
    assert_eq!(
        bash_completions(&script, &["ocvault", "check", "--read-data-s"]),
        ["--read-data-subset"]
    );
    for shell in ["zsh", "fish"] {
        let text = stdout_of(Command::new(ocvault_bin()).args(["completion", shell]));
        assert!(
            text.contains("snapshot") && text.contains("metrics-file"),
            "{shell}: {text}"
        );
    }
    let out = ocvault().args(["completion", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn man_writes_a_page_per_command_that_renders() {
    let dir = scratch_dir("ocvault-man-");
    let pages = dir.path().join("man1");
    stdout_of(Command::new(ocvault_bin()).arg("man").arg(&pages));
    let commands = [
        "init",
        "snapshot",
        "snapshots",
        "restore",
        "ls",
        "dump",
        "mount",
        "copy",
        "check",
        "forget",
        "prune",
        "repair",
        "rewrite",
        "unlock",
        "key",
        "log",
        "diff",
        "find",
        "stats",
        "tag",
        "thaw",
        "pitr",
        "wal-push",
        "wal-fetch",
        "completion",
        "man",
    ];
    let mut expected: Vec<String> = commands.iter().map(|c| format!("ocvault-{c}.1")).collect();
    expected.push("ocvault.1".into());
    for sub in ["add", "list", "passwd", "remove", "split"] {
        expected.push(format!("ocvault-key-{sub}.1"));
    }
    for sub in ["index", "packs", "snapshots"] {
        expected.push(format!("ocvault-repair-{sub}.1"));
    }
    expected.sort();
    let mut written: Vec<String> = fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, expected);
    let man = need("man", "man-db");
    let page = stdout_of(
        Command::new(&man)
            .env("MANWIDTH", "100")
            .args(["-P", "cat", "-l"])
            .arg(pages.join("ocvault-snapshot.1")),
    );
    assert!(
        page.contains("NAME") && page.contains("ocvault-snapshot"),
        "{page}"
    );
    assert!(
        page.contains("--exclude-file") && page.contains("--metrics-file"),
        "{page}"
    );
    assert!(
        !page.contains("\\f") && !page.contains(".TH"),
        "roff left: {page}"
    );
    let top = stdout_of(
        Command::new(&man)
            .args(["-P", "cat", "-l"])
            .arg(pages.join("ocvault.1")),
    );
    assert!(
        top.contains("ocvault-snapshot(1)") || top.contains("snapshot"),
        "{top}"
    );
}

#[test]
fn systemd_units_verify_and_harden() {
    let analyze = need("systemd-analyze", "systemd");
    let dir = scratch_dir("ocvault-units-");
    // verify requires ExecStart's program to exist: point it at the script in this checkout.
    let daily = contrib("ocvault-daily");
    for unit in ["ocvault-backup.service", "ocvault-backup.timer"] {
        let text = fs::read_to_string(contrib("systemd").join(unit)).unwrap();
        let text = text.replace("/usr/local/bin/ocvault-daily", &daily.to_string_lossy());
        fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = output_within(
        Command::new(analyze)
            .arg("verify")
            .arg(dir.path().join("ocvault-backup.service"))
            .arg(dir.path().join("ocvault-backup.timer")),
        LIMIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    // Unknown or misspelt settings are warnings only: there must be none.
    assert!(err.trim().is_empty(), "systemd-analyze verify warns: {err}");

    let service = fs::read_to_string(contrib("systemd/ocvault-backup.service")).unwrap();
    for line in [
        "User=ocvault",
        "LoadCredential=password:/etc/ocvault/password",
        "Environment=OCVAULT_PASSWORD_FILE=%d/password",
        "StateDirectory=ocvault",
        "CacheDirectory=ocvault",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ExecStart=/usr/local/bin/ocvault-daily",
    ] {
        assert!(service.lines().any(|l| l == line), "service lacks {line}");
    }
    assert!(
        !service.lines().any(|l| l.starts_with("DynamicUser")),
        "the cache must persist"
    );
    let timer = fs::read_to_string(contrib("systemd/ocvault-backup.timer")).unwrap();
    assert!(timer.contains("OnCalendar=daily") && timer.contains("Persistent=true"));

    // The cron line: five time fields, the user, then the script.
    let cron = fs::read_to_string(contrib("cron/ocvault")).unwrap();
    let job: Vec<&str> = cron
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter(|l| {
            !l.split_whitespace()
                .next()
                .unwrap_or_default()
                .contains('=')
        })
        .collect();
    assert_eq!(job.len(), 1, "{cron}");
    let fields: Vec<&str> = job[0].split_whitespace().collect();
    assert_eq!(fields[5], "ocvault", "{}", job[0]);
    assert!(
        job[0].ends_with("/usr/local/bin/ocvault-daily"),
        "{}",
        job[0]
    );

    // The example configuration reads the same in bash (cron sources it) as in systemd.
    let example = contrib("ocvault.env.example");
    let program = format!(
        "set -a; . {}; set +a; printf '%s\\n' \"$OCVAULT_SOURCES\" \"$OCVAULT_METRICS_FILE\"",
        example.display()
    );
    let values = stdout_of(Command::new(need("bash", "bash")).args(["-c", &program]));
    assert_eq!(
        values,
        "/etc /home /var/lib/postgresql/dumps\n/var/lib/prometheus/node-exporter/ocvault.prom\n"
    );
}

/// A repository, a source folder and the daily script's environment.
struct DailyJob {
    repo: TestRepo,
    metrics: PathBuf,
    password_file: PathBuf,
    sources: Vec<PathBuf>,
}

impl DailyJob {
    fn new() -> DailyJob {
        let repo = TestRepo::new();
        init_small(&repo, &[]);
        let password_file = repo.path("password");
        fs::write(&password_file, format!("{}\n", repo.password)).unwrap();
        let sources = vec![repo.path("etc"), repo.path("home")];
        for (i, s) in sources.iter().enumerate() {
            fs::create_dir_all(s).unwrap();
            fs::write(s.join("file"), format!("source {i}\n").repeat(1000)).unwrap();
        }
        let metrics = repo.path("metrics/ocvault.prom");
        fs::create_dir_all(metrics.parent().unwrap()).unwrap();
        DailyJob {
            repo,
            metrics,
            password_file,
            sources,
        }
    }

    /// Runs contrib/ocvault-daily as systemd or cron would (configuration in the
    /// environment), with `policy` for forget.
    fn run(&self, policy: &str) -> std::process::Output {
        let mut cmd = Command::new(need("bash", "bash"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OCVAULT_") {
                cmd.env_remove(k);
            }
        }
        let sources: Vec<String> = self
            .sources
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        cmd.arg(contrib("ocvault-daily"))
            .env("OCVAULT_BIN", ocvault_bin())
            .env("OCVAULT_REPOSITORY", &self.repo.repo)
            .env("OCVAULT_PASSWORD_FILE", &self.password_file)
            .env("OCVAULT_SOURCES", sources.join(" "))
            .env("OCVAULT_METRICS_FILE", &self.metrics)
            .env("OCVAULT_FORGET_POLICY", policy);
        output_within(&mut cmd, LIMIT)
    }

    fn metrics(&self) -> Metrics {
        Metrics::read(&self.metrics)
    }
}

/// The metrics file parsed as Prometheus text: `name{labels}` (labels sorted) to value.
struct Metrics {
    values: HashMap<String, f64>,
    help: HashMap<String, String>,
}

impl Metrics {
    fn read(path: &Path) -> Metrics {
        let text = fs::read_to_string(path).unwrap();
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        let sample_lines = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(
            scrape.samples.len(),
            sample_lines,
            "lines the parser skipped: {text}"
        );
        let mut values = HashMap::new();
        for s in scrape.samples {
            let Value::Gauge(v) = s.value else {
                panic!("{} is not a gauge: {text}", s.metric);
            };
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let key = format!("{}{{{}}}", s.metric, labels.join(","));
            assert!(
                values.insert(key.clone(), v).is_none(),
                "{key} twice: {text}"
            );
        }
        Metrics {
            values,
            help: scrape.docs,
        }
    }

    fn get(&self, key: &str) -> f64 {
        *self
            .values
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.values))
    }
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn assert_exit(out: &std::process::Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn daily_script_snapshots_checks_and_forgets() {
    let job = DailyJob::new();
    let before = now_seconds();
    let out = job.run("--keep-last 1");
    assert_exit(&out, 0);
    assert_eq!(snapshot_ids(&job.repo).len(), 1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("no damage found"), "{stdout}");
    let m = job.metrics();
    for command in ["snapshot", "check", "forget"] {
        assert_eq!(
            m.get(&format!("ocvault_last_exit_code{{command={command}}}")),
            0.0
        );
        let t = m.get(&format!(
            "ocvault_last_success_timestamp_seconds{{command={command}}}"
        ));
        assert!(t >= before && t <= now_seconds(), "{command}: {t}");
    }

    // A second day: the policy keeps one snapshot, so forget removes the first.
    fs::write(job.sources[0].join("new"), "changed on day 2").unwrap();
    let out = job.run("--keep-last 1");
    assert_exit(&out, 0);
    assert_eq!(snapshot_ids(&job.repo).len(), 1);
    let m = job.metrics();
    assert_eq!(m.get("ocvault_forget_snapshots_removed{}"), 1.0);
    assert_eq!(m.get("ocvault_snapshot_files{state=new}"), 1.0);
    assert_eq!(m.get("ocvault_snapshot_files{state=unmodified}"), 2.0);
    // prune ran (forget --prune) and freed the first snapshot's tree pack at least.
    assert!(m.get("ocvault_prune_bytes_reclaimed{}") > 0.0);
    assert_check_passes(&job.repo, &["--read-data"]);

    // A wrong password stops the job at the snapshot with its exit code.
    fs::write(&job.password_file, "wrong\n").unwrap();
    let out = job.run("--keep-last 1");
    assert_exit(&out, WRONG_PASSWORD);
    let after = job.metrics();
    assert_eq!(after.get("ocvault_last_exit_code{command=snapshot}"), 12.0);
    let key = "ocvault_last_success_timestamp_seconds{command=snapshot}";
    assert_eq!(after.get(key), m.get(key));
}

#[test]
fn metrics_file_holds_the_documented_series() {
    let job = DailyJob::new();
    let metrics = job.metrics.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = job
            .repo
            .cmd()
            .args(["--metrics-file", metrics])
            .args(args)
            .timeout(LIMIT)
            .output()
            .unwrap();
        assert_exit(&out, 0);
    };
    let before = now_seconds();
    let src = job.sources[0].to_str().unwrap();
    run(&["snapshot", "--host", "db1", src]);
    run(&["snapshot", "--host", "web1", src]);
    fs::write(job.sources[0].join("grown"), "a new file\n".repeat(100)).unwrap();
    run(&["snapshot", "--host", "web1", src]);
    run(&["check", "--read-data-subset", "1/7"]);
    run(&["forget", "--keep-last", "1"]);
    let after = now_seconds();
    let m = job.metrics();

    for family in [
        "last_success_timestamp_seconds",
        "last_run_timestamp_seconds",
        "last_exit_code",
        "duration_seconds",
        "snapshot_bytes_added",
        "snapshot_files",
        "snapshot_errors",
        "check_damage_found",
        "latest_snapshot_timestamp_seconds",
        "forget_snapshots_removed",
    ] {
        let name = format!("ocvault_{family}");
        assert!(
            m.help.get(&name).is_some_and(|h| !h.is_empty()),
            "no HELP for {name}"
        );
    }
    for command in ["snapshot", "check", "forget"] {
        let label = format!("{{command={command}}}");
        assert_eq!(m.get(&format!("ocvault_last_exit_code{label}")), 0.0);
        let run_at = m.get(&format!("ocvault_last_run_timestamp_seconds{label}"));
        let success = m.get(&format!("ocvault_last_success_timestamp_seconds{label}"));
        assert!(before <= run_at && run_at <= after, "{command}: {run_at}");
        assert_eq!(run_at, success);
        let d = m.get(&format!("ocvault_duration_seconds{label}"));
        assert!(d > 0.0 && d < after - before, "{command}: {d}");
    }
    // The last snapshot (web1, with a parent of the same host and paths): one file added.
    assert_eq!(m.get("ocvault_snapshot_files{state=unmodified}"), 1.0);
    assert_eq!(m.get("ocvault_snapshot_files{state=new}"), 1.0);
    assert_eq!(m.get("ocvault_snapshot_files{state=changed}"), 0.0);
    assert_eq!(m.get("ocvault_snapshot_errors{}"), 0.0);
    assert!(m.get("ocvault_snapshot_bytes_added{}") > 0.0);
    assert_eq!(m.get("ocvault_check_damage_found{}"), 0.0);
    // forget --keep-last 1 keeps one snapshot of each host and paths: web1's older one goes.
    assert_eq!(m.get("ocvault_forget_snapshots_removed{}"), 1.0);
    let src_path = fs::canonicalize(src).unwrap();
    for host in ["db1", "web1"] {
        let key = format!(
            "ocvault_latest_snapshot_timestamp_seconds{{host={host},paths={}}}",
            src_path.display()
        );
        let t = m.get(&key);
        assert!(before - 1.0 <= t && t <= after, "{key}: {t}");
    }
    let latest = m
        .values
        .keys()
        .filter(|k| k.starts_with("ocvault_latest_snapshot_timestamp_seconds"))
        .count();
    assert_eq!(latest, 2, "{:?}", m.values);

    // Replaced atomically, readable by node_exporter, no temporary file left behind.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&job.metrics).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    let mut left: Vec<String> = fs::read_dir(job.metrics.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["ocvault.prom", "ocvault.prom.lock"]);

    // A failed command records its exit code and run time, not a success; the other
    // commands' series stay as they were.
    let out = ocvault()
        .arg("--repo")
        .arg(&job.repo.repo)
        .env("OCVAULT_PASSWORD", "not the password")
        .env("OCVAULT_METRICS_FILE", metrics)
        .args(["check"])
        .timeout(LIMIT)
        .output()
        .unwrap();
    assert_one_line_error(&out, WRONG_PASSWORD, "wrong password");
    let failed = job.metrics();
    assert_eq!(failed.get("ocvault_last_exit_code{command=check}"), 12.0);
    let success = "ocvault_last_success_timestamp_seconds{command=check}";
    assert_eq!(failed.get(success), m.get(success));
    let run_at = failed.get("ocvault_last_run_timestamp_seconds{command=check}");
    assert!(run_at > m.get(success), "{run_at}");
    for (key, value) in &m.values {
        if !key.contains("command=check") {
            assert_eq!(failed.get(key), *value, "{key}");
        }
    }
}

#[test]
fn metrics_record_damage_found_by_check() {
    let job = DailyJob::new();
    let metrics = job.metrics.to_str().unwrap();
    let src = job.sources[0].to_str().unwrap();
    job.repo.cmd().args(["snapshot", src]).assert().success();
    for pack in walk(&job.repo.repo.join("data")) {
        let path = job.repo.repo.join("data").join(pack);
        if path.is_file() {
            fs::remove_file(path).unwrap();
        }
    }
    let out = job
        .repo
        .cmd()
        .args(["--metrics-file", metrics, "check"])
        .timeout(LIMIT)
        .output()
        .unwrap();
    assert_exit(&out, 4);
    let m = job.metrics();
    assert_eq!(m.get("ocvault_last_exit_code{command=check}"), 4.0);
    assert!(m.get("ocvault_check_damage_found{}") >= 1.0);
    assert!(!m
        .values
        .contains_key("ocvault_last_success_timestamp_seconds{command=check}"));
}

/// contrib/ocvault-daily run over a fake ocvault that logs its arguments and exits with the
/// code given for its command: which steps run, and the job's exit code.
fn daily_with_fake_exits(dir: &Path, snapshot: i32, check: i32, forget: i32) -> (i32, String) {
    let fake = dir.join("fake-ocvault");
    let log = dir.join("calls");
    let _ = fs::remove_file(&log);
    fs::write(
        &fake,
        format!(
            "#!/bin/bash\necho \"$*\" >> {log}\nfor a; do case $a in\n\
             snapshot) exit {snapshot};; check) exit {check};; forget) exit {forget};;\n\
             esac; done\nexit 99\n",
            log = log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let out = output_within(
        Command::new(need("bash", "bash"))
            .arg(contrib("ocvault-daily"))
            .env("OCVAULT_BIN", &fake)
            .env("OCVAULT_REPOSITORY", "/nonexistent")
            .env("OCVAULT_SOURCES", "/etc /srv/data")
            .env("OCVAULT_READ_SUBSET", "3/7")
            .env_remove("OCVAULT_FORGET_POLICY")
            .env_remove("OCVAULT_EXCLUDE_FILE"),
        LIMIT,
    );
    let calls = fs::read_to_string(&log).unwrap_or_default();
    (out.status.code().unwrap(), calls)
}

#[test]
fn daily_script_passes_exit_codes_through() {
    let dir = scratch_dir("ocvault-daily-");
    let all = "--quiet snapshot -- /etc /srv/data\n--quiet check --read-data-subset 3/7\n\
               --quiet forget --keep-daily 30 --keep-weekly 12 --keep-monthly 12 \
               --keep-yearly 7 --prune\n";
    assert_eq!(daily_with_fake_exits(dir.path(), 0, 0, 0), (0, all.into()));
    // An incomplete snapshot (3) is saved: check and forget still run, and 3 is the result.
    assert_eq!(daily_with_fake_exits(dir.path(), 3, 0, 0), (3, all.into()));
    // Damage (4) stops the job before forget and prune.
    let (code, calls) = daily_with_fake_exits(dir.path(), 0, 4, 0);
    assert_eq!((code, calls.lines().count()), (4, 2), "{calls}");
    let (code, calls) = daily_with_fake_exits(dir.path(), 12, 0, 0);
    assert_eq!((code, calls.lines().count()), (12, 1), "{calls}");
    assert_eq!(daily_with_fake_exits(dir.path(), 0, 0, 1), (1, all.into()));
    // A failing forget wins over an incomplete snapshot.
    assert_eq!(
        daily_with_fake_exits(dir.path(), 3, 0, 143),
        (143, all.into())
    );
}

#[test]
fn metrics_writers_wait_for_the_lock() {
    let job = DailyJob::new();
    let src = job.sources[0].to_str().unwrap();
    let metrics = job.metrics.to_str().unwrap();
    job.repo
        .cmd()
        .args(["--metrics-file", metrics, "snapshot", src])
        .assert()
        .success();
    let before = fs::read_to_string(&job.metrics).unwrap();
    // Another writer holds the lock: check must wait for it before reading the file, or the
    // snapshot's series could be lost between its read and its rename.
    let lock_file = fs::File::create(format!("{metrics}.lock")).unwrap();
    let held = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let mut cmd = job.repo.cmd_std();
    cmd.args(["--metrics-file", metrics, "check"]);
    let running = process::Running::spawn(&mut cmd);
    std::thread::sleep(Duration::from_secs(3));
    // Still running (not a zombie), and nothing written.
    let stat = fs::read_to_string(format!("/proc/{}/stat", running.pid())).unwrap();
    let state = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .next();
    assert_ne!(state, Some("Z"), "check did not wait for the lock: {stat}");
    assert_eq!(fs::read_to_string(&job.metrics).unwrap(), before);
    drop(held);
    let out = running.wait_within(LIMIT);
    assert_exit(&out, 0);
    let m = job.metrics();
    assert_eq!(m.get("ocvault_last_exit_code{command=snapshot}"), 0.0);
    assert_eq!(m.get("ocvault_last_exit_code{command=check}"), 0.0);
}

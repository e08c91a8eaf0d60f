//! PostgreSQL point-in-time recovery with ocvault as the WAL archive and base-backup store
//! (README "PostgreSQL"): a real server archives through `ocvault wal-push`, base backups go
//! through `snapshot --command pg_basebackup`, and `ocvault pitr` plus `wal-fetch` bring a
//! new server back to a moment or to the newest archived WAL. Also the crash and fault cases:
//! a killed `wal-push`, read faults and unreachable storage under `wal-fetch`, and prefetch.
//! Needs root (PostgreSQL runs as user `postgres`) and Debian's postgresql (with pgbench).

mod common;

use common::postgres::{PgConfig, PgScratch, Postgres};
use common::process::{describe, output_within, Running, COMMAND_LIMIT};
use common::servers::free_port;
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest wait for a server to archive a segment, recover or stop.
const SERVER_LIMIT: Duration = Duration::from_secs(300);

/// The exit code of `wal-fetch` that makes PostgreSQL stop recovery (README "Exit codes").
const WAL_FETCH_FAILED: i32 = 200;

/// Settings of a server whose WAL ocvault archives: `archive_command = 'ocvault wal-push %p'`
/// with the repository and password file in the server's environment.
fn archiving(scratch: &PgScratch, archive_timeout: &str) -> PgConfig {
    PgConfig::new()
        .set("wal_level", "replica")
        .set("archive_mode", "on")
        .set(
            "archive_command",
            format!("{} wal-push %p", scratch.ocvault.display()),
        )
        .set("archive_timeout", archive_timeout)
        .set("max_wal_senders", 4)
        // Keeps archived segments in pg_wal, to compare with what wal-fetch returns.
        .set("wal_keep_size", "1GB")
        .envs(scratch.server_env())
}

/// A base backup through `ocvault snapshot --command pg_basebackup`: returns the snapshot
/// id, after checking it was recorded as a base backup.
fn base_backup(scratch: &PgScratch, pg: &Postgres) -> String {
    // pg_basebackup -X none waits for its WAL to be archived: check archiving works first,
    // so that a broken archive_command fails here with the server's log, not as a timeout.
    let segment = pg.switch_wal();
    pg.wait_archived(&segment, SERVER_LIMIT);
    let command = format!(
        "{} -h 127.0.0.1 -p {} -U postgres -D - -Ft -X none -c fast",
        pg.bin.join("pg_basebackup").display(),
        pg.port
    );
    let out = output_within(
        scratch.ocvault().args([
            "--json",
            "snapshot",
            "--command",
            &command,
            "--stdin-filename",
            "base.tar",
        ]),
        SERVER_LIMIT,
    );
    assert!(
        out.status.success(),
        "base backup failed ({}): {}",
        describe(&out.status),
        String::from_utf8_lossy(&out.stderr)
    );
    let id = last_json(&out)["snapshot_id"].as_str().unwrap().to_string();
    let list = last_json(&output_within(
        scratch.ocvault().args(["--json", "snapshots"]),
        COMMAND_LIMIT,
    ));
    let snap = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap_or_else(|| panic!("snapshot {id} not listed: {list:#}"));
    assert!(
        snap["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "pg-base-backup")),
        "base backup not tagged pg-base-backup: {snap:#}"
    );
    let start_wal = snap["postgres"]["start_wal"].as_str().unwrap_or_default();
    assert_eq!(start_wal.len(), 24, "no start WAL recorded: {snap:#}");
    id
}

/// `ocvault pitr ARGS --target <scratch>/<name>/data` (as `postgres`); returns the data
/// folder, after checking the recovery settings are written.
fn pitr(scratch: &PgScratch, args: &[&str], name: &str) -> PathBuf {
    let data = scratch.postgres_dir(name).join("data");
    let out = output_within(
        scratch
            .ocvault()
            .arg("pitr")
            .args(args)
            .arg("--target")
            .arg(&data),
        SERVER_LIMIT,
    );
    assert!(
        out.status.success(),
        "pitr {args:?} failed ({}): {}",
        describe(&out.status),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.join("recovery.signal").is_file(), "no recovery.signal");
    assert!(data.join("pg_wal").is_dir(), "no pg_wal");
    let auto = fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains("restore_command") && auto.contains("wal-fetch %f %p"),
        "{auto}"
    );
    data
}

/// The value of the last `name = 'value'` line in `postgresql.auto.conf` (the one
/// PostgreSQL uses).
fn recovery_setting(data: &Path, name: &str) -> Option<String> {
    let text = fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    text.lines()
        .rev()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('\'').replace("''", "'"))
}

/// Appends a `restore_command` to the recovered server's settings (the last one counts).
fn override_restore_command(data: &Path, command: &str) {
    let conf = data.join("postgresql.auto.conf");
    let mut text = fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "\nrestore_command = '{}'\n",
        command.replace('\'', "''")
    ));
    fs::write(&conf, text).unwrap();
}

/// A server archiving into a fresh repository, with a pgbench database `app` plus a table
/// `notes`, and a base backup of it.
fn archived_app_server(scratch: &PgScratch) -> Postgres {
    scratch.init_repo();
    let pg = Postgres::init_and_start(scratch.dir.path(), &archiving(scratch, "60s"));
    pg.psql("postgres", "create database app");
    pg.pgbench_init("app", 2);
    pg.psql(
        "app",
        "create table notes (id int primary key, body text);
         insert into notes select i, md5(i::text) from generate_series(1, 2000) i",
    );
    base_backup(scratch, &pg);
    pg
}

/// The classic "someone ran DROP TABLE": transactions, a moment T with every table's
/// checksum, more transactions and `drop table notes`, then `pitr --time T` into a new
/// folder and a server started there (restore_command given `restore_options` too).
/// Asserts every table equals its state at T; returns the recovered server.
fn recover_dropped_table(scratch: &PgScratch, restore_options: &[&str]) -> Postgres {
    let pg = archived_app_server(scratch);
    pg.pgbench_run("app", 2, 300);
    pg.psql(
        "app",
        "insert into notes select i, 'before T' from generate_series(2001, 2100) i",
    );
    // T falls strictly between the last commit before it and the first after it, whole
    // seconds apart: `--time` takes seconds.
    std::thread::sleep(Duration::from_millis(1100));
    let t = pg.now_to_the_second();
    let at_t = pg.checksums("app");
    assert_eq!(
        at_t.keys().collect::<Vec<_>>(),
        [
            "notes",
            "pgbench_accounts",
            "pgbench_branches",
            "pgbench_history",
            "pgbench_tellers"
        ]
    );
    std::thread::sleep(Duration::from_millis(1100));
    pg.psql(
        "app",
        "insert into notes select i, 'after T' from generate_series(2101, 2200) i",
    );
    pg.pgbench_run("app", 2, 300);
    pg.psql("app", "drop table notes");
    let last = pg.switch_wal();
    pg.wait_archived(&last, SERVER_LIMIT);
    let now = pg.checksums("app");
    assert!(!now.contains_key("notes"), "notes must be gone: {now:?}");
    assert_ne!(
        now["pgbench_accounts"], at_t["pgbench_accounts"],
        "the transactions after T must change the tables"
    );
    drop(pg);

    let data = pitr(scratch, &["--time", &t], "restored");
    assert!(recovery_setting(&data, "recovery_target_time").is_some());
    if !restore_options.is_empty() {
        let command = format!(
            "{} -r {} --password-file {} {} wal-fetch %f %p",
            scratch.ocvault.display(),
            scratch.repo.display(),
            scratch.password_file.display(),
            restore_options.join(" ")
        );
        override_restore_command(&data, &command);
    }
    // No ocvault settings in the environment: the restore_command pitr wrote must name the
    // repository and password file itself.
    let mut restored = Postgres::start_on(&data, &PgConfig::new());
    restored.wait_promoted(SERVER_LIMIT);
    let recovered = restored.checksums("app");
    assert_eq!(
        recovered, at_t,
        "tables after pitr --time {t} differ from T"
    );
    restored
}

#[test]
fn point_in_time_recovery_brings_back_a_dropped_table() {
    let scratch = PgScratch::new();
    let restored = recover_dropped_table(&scratch, &[]);
    assert_eq!(
        restored.psql("app", "select count(*) from notes where body = 'before T'"),
        "100"
    );
}

#[test]
fn wal_fetch_through_read_faults_recovers_the_same_data() {
    let scratch = PgScratch::new();
    let restored = recover_dropped_table(&scratch, &["-o", "fault.read=0.3"]);
    // The faults were really injected under the restore_command (ocvault reports them at
    // exit on standard error, which PostgreSQL writes to its log).
    let log = restored.log_text();
    assert!(log.contains("faults injected"), "{log}");
}

/// Seconds since the epoch of a `SystemTime`.
fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Commits ids `from..=to` into `ids`, each in a transaction of its own.
fn commit_ids(pg: &Postgres, from: u64, to: u64) {
    pg.psql(
        "app",
        &format!(
            "do $$ begin for i in {from}..{to} loop \
             insert into ids (id) values (i); commit; end loop; end $$"
        ),
    );
}

#[test]
fn latest_after_sigkill_has_every_archived_commit() {
    let scratch = PgScratch::new();
    scratch.init_repo();
    let mut pg = Postgres::init_and_start(scratch.dir.path(), &archiving(&scratch, "2s"));
    pg.psql("postgres", "create database app");
    pg.psql(
        "app",
        "create table ids (id bigint primary key, at timestamptz not null default clock_timestamp())",
    );
    base_backup(&scratch, &pg);
    // Rounds of commits, each ended by a segment switch that is archived before the next.
    let mut archived_up_to = 0;
    let mut next = 1;
    for _ in 0..4 {
        commit_ids(&pg, next, next + 199);
        next += 200;
        let segment = pg.switch_wal();
        pg.wait_archived(&segment, SERVER_LIMIT);
        archived_up_to = next - 1;
    }
    // More commits that only archive_timeout may get into the archive before the crash.
    for _ in 0..5 {
        commit_ids(&pg, next, next + 49);
        next += 50;
        std::thread::sleep(Duration::from_millis(500));
    }
    let committed = next - 1;
    let (last_archived, _, _) = pg.archiver();
    let killed_at = pg.kill9_postmaster();
    drop(pg);

    let data = pitr(&scratch, &["--latest"], "restored");
    assert_eq!(recovery_setting(&data, "recovery_target_time"), None);
    let mut restored = Postgres::start_on(&data, &PgConfig::new());
    restored.wait_promoted(SERVER_LIMIT);
    let row = restored.psql(
        "app",
        "select count(*) || ' ' || coalesce(max(id), 0) || ' ' || \
         coalesce(extract(epoch from max(at)), 0) from ids",
    );
    let fields: Vec<&str> = row.split(' ').collect();
    let (count, max): (u64, u64) = (fields[0].parse().unwrap(), fields[1].parse().unwrap());
    let newest: f64 = fields[2].parse().unwrap();
    assert_eq!(
        count, max,
        "commits are sequential: the recovered ones are a prefix"
    );
    assert!(
        max >= archived_up_to,
        "ids up to {archived_up_to} were archived before the kill, only {max} recovered"
    );
    assert!(max <= committed);
    eprintln!(
        "RPO: newest recovered commit {:.2} s before the SIGKILL; {max} of {committed} \
         commits recovered ({archived_up_to} archived by explicit switches; last archived \
         WAL file before the kill {last_archived})",
        epoch_secs(killed_at) - newest
    );
}

/// Completed WAL segments of a real server (no archiving): copies in a folder owned by
/// `postgres`, in order. The server is stopped before returning.
fn real_segments(scratch: &PgScratch, count: usize) -> (PathBuf, Vec<String>) {
    let pg = Postgres::init_and_start(
        scratch.dir.path(),
        &PgConfig::new().set("wal_keep_size", "1GB"),
    );
    pg.pgbench_init("postgres", 1);
    let mut names = vec![pg.switch_wal()];
    for i in 1..count {
        pg.psql(
            "postgres",
            &format!("create table t{i} as select generate_series(1, {i} * 1000) n"),
        );
        names.push(pg.switch_wal());
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), count, "{names:?}");
    let dir = scratch.path("walsrc");
    fs::create_dir(&dir).unwrap();
    for n in &names {
        fs::copy(pg.data.join("pg_wal").join(n), dir.join(n)).unwrap();
    }
    common::postgres::chown_postgres(&dir);
    (dir, names)
}

/// Every file under `repo/wal/` (at any depth) with its bytes.
fn wal_folder(repo: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut folders = vec![repo.join("wal")];
    while let Some(folder) = folders.pop() {
        for e in fs::read_dir(&folder).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                folders.push(e.path());
            } else {
                files.insert(e.path(), fs::read(e.path()).unwrap());
            }
        }
    }
    files
}

/// `wal-fetch NAME <dest>/NAME --prefetch 0`; returns the exit code and the fetched bytes.
fn fetch(scratch: &PgScratch, name: &str, dest: &Path) -> (Option<i32>, Option<Vec<u8>>) {
    let file = dest.join(name);
    let out = output_within(
        scratch
            .ocvault()
            .args(["wal-fetch", name])
            .arg(&file)
            .args(["--prefetch", "0"]),
        COMMAND_LIMIT,
    );
    (out.status.code(), fs::read(&file).ok())
}

#[test]
fn wal_push_killed_mid_push_then_retried_leaves_one_copy() {
    let scratch = PgScratch::new();
    scratch.init_repo();
    let delays_ms = [30u64, 100, 250, 500, 900];
    let (src, names) = real_segments(&scratch, delays_ms.len());
    let push = |name: &str, extra: &[&str]| {
        let mut c = scratch.ocvault();
        c.args(extra).arg("wal-push").arg(src.join(name));
        c
    };
    let mut killed = 0;
    for (name, delay) in names.iter().zip(delays_ms) {
        // Slow storage makes the kill land inside the push.
        let mut run = Running::spawn(&mut push(name, &["-o", "fault.latency_ms=100"]));
        std::thread::sleep(Duration::from_millis(delay));
        run.kill_group();
        let out = run.wait_within(COMMAND_LIMIT);
        if out.status.signal() == Some(libc::SIGKILL) {
            killed += 1;
        }
        // PostgreSQL's retry, then once more: both succeed.
        for attempt in ["retry", "second retry"] {
            let out = output_within(&mut push(name, &[]), COMMAND_LIMIT);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{attempt} of {name} after a kill at {delay} ms: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(
        killed >= 3,
        "only {killed} pushes were killed before they ended"
    );
    let archive = wal_folder(&scratch.repo);
    assert_eq!(
        archive.len(),
        names.len(),
        "one record per segment: {:?}",
        archive.keys().collect::<Vec<_>>()
    );
    let dest = scratch.postgres_dir("fetched");
    for name in &names {
        let (code, bytes) = fetch(&scratch, name, &dest);
        assert_eq!(code, Some(0), "wal-fetch {name}");
        assert!(
            bytes == fs::read(src.join(name)).ok(),
            "{name} fetched differs"
        );
    }
    assert_eq!(
        output_within(
            scratch.ocvault().args(["check", "--read-data"]),
            SERVER_LIMIT
        )
        .status
        .code(),
        Some(0)
    );

    // The same name with other content is refused and changes nothing: from another
    // folder, and in place (where the push left its "pushed" note).
    let name = &names[0];
    let mut other = fs::read(src.join(name)).unwrap();
    other[1 << 20] ^= 0xff;
    let elsewhere = scratch.postgres_dir("other");
    for path in [elsewhere.join(name), src.join(name)] {
        fs::write(&path, &other).unwrap();
        common::postgres::chown_postgres(&path);
        let out = output_within(scratch.ocvault().arg("wal-push").arg(&path), COMMAND_LIMIT);
        assert_one_line_error(&out, 1, "already archived with different content");
        assert!(
            wal_folder(&scratch.repo) == archive,
            "a refused push changed wal/"
        );
    }
    let (code, bytes) = fetch(&scratch, name, &scratch.postgres_dir("fetched-again"));
    assert_eq!(code, Some(0));
    assert!(
        bytes.as_deref() != Some(&other[..]),
        "the archive took the other content"
    );
    assert!(bytes.is_some_and(|b| b.len() == other.len()));
}

#[test]
fn wal_fetch_against_unreachable_storage_stops_recovery() {
    let scratch = PgScratch::new();
    scratch.init_repo();
    let pg = Postgres::init_and_start(scratch.dir.path(), &archiving(&scratch, "60s"));
    pg.psql(
        "postgres",
        "create table t as select generate_series(1, 10000) n",
    );
    base_backup(&scratch, &pg);
    pg.psql("postgres", "insert into t select generate_series(1, 1000)");
    let last = pg.switch_wal();
    pg.wait_archived(&last, SERVER_LIMIT);
    drop(pg);
    let dest = scratch.postgres_dir("fetched");

    // Never archived, on a reachable repository: 1, at once, nothing written.
    let never = "0000000100000000000000F0";
    let started = Instant::now();
    let out = output_within(
        scratch
            .ocvault()
            .args(["wal-fetch", never])
            .arg(dest.join(never))
            .args(["--prefetch", "0", "--retry-for", "30s"]),
        COMMAND_LIMIT,
    );
    assert_one_line_error(&out, 1, "not archived");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "no retries for a missing file"
    );
    assert!(!dest.join(never).exists());

    // Unreachable storage (an S3 endpoint on a closed port), a wrong password, no
    // repository: retried for --retry-for, then 200.
    let closed = free_port();
    let unreachable = format!(
        "{} -r s3://bucket/repo -o s3.endpoint=http://127.0.0.1:{closed} -o retry.max=1 \
         --password-file {} wal-fetch --retry-for 3s %f %p",
        scratch.ocvault.display(),
        scratch.password_file.display()
    );
    let wrong_password = scratch.postgres_dir("pw").join("wrong");
    fs::write(&wrong_password, "not the password\n").unwrap();
    common::postgres::chown_postgres(&wrong_password);
    let s3_env = [
        ("AWS_ACCESS_KEY_ID", "ocvaulttestkey"),
        ("AWS_SECRET_ACCESS_KEY", "ocvault-test-secret"),
        ("AWS_REGION", "us-east-1"),
    ];
    let cases: [(&str, Vec<String>); 3] = [
        (
            "unreachable",
            vec![
                "-r".into(),
                "s3://bucket/repo".into(),
                "-o".into(),
                format!("s3.endpoint=http://127.0.0.1:{closed}"),
                "-o".into(),
                "retry.max=1".into(),
                "--password-file".into(),
                scratch.password_file.display().to_string(),
            ],
        ),
        (
            "wrong password",
            vec![
                "-r".into(),
                scratch.repo.display().to_string(),
                "--password-file".into(),
                wrong_password.display().to_string(),
            ],
        ),
        (
            "no repository",
            vec![
                "-r".into(),
                scratch.path("no-such-repo").display().to_string(),
                "--password-file".into(),
                scratch.password_file.display().to_string(),
            ],
        ),
    ];
    for (case, args) in cases {
        let started = Instant::now();
        let out = output_within(
            scratch
                .ocvault_bare()
                .envs(s3_env)
                .args(&args)
                .args(["wal-fetch", &last])
                .arg(dest.join(&last))
                .args(["--prefetch", "0", "--retry-for", "3s"]),
            COMMAND_LIMIT,
        );
        let took = started.elapsed();
        assert_eq!(
            out.status.code(),
            Some(WAL_FETCH_FAILED),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            took >= Duration::from_secs(3),
            "{case}: gave up after {took:?}, before --retry-for 3s"
        );
        assert!(!dest.join(&last).exists(), "{case}: wrote {last}");
    }

    // A recovery whose restore_command cannot reach the storage stops: the server never
    // promotes on an archive it could not read.
    let data = pitr(&scratch, &["--latest"], "restored");
    override_restore_command(&data, &unreachable);
    let mut config = PgConfig::new();
    for (k, v) in s3_env {
        config = config.env(k, v);
    }
    let mut restored = Postgres::start_on(&data, &config);
    let log = restored.wait_recovery_failed(SERVER_LIMIT);
    // PostgreSQL stops on a restore_command status above 125 with this FATAL line, then
    // shuts down ("startup process failure"); an exit 1 would have ended recovery instead.
    assert!(
        log.lines()
            .any(|l| l.contains("FATAL") && l.contains("could not restore file")),
        "{log}"
    );
    assert!(log.contains("startup process failure"), "{log}");
    assert!(
        data.join("recovery.signal").exists(),
        "recovery must not have ended"
    );
}

#[test]
fn wal_fetch_prefetches_ahead() {
    let scratch = PgScratch::new();
    scratch.init_repo();
    let pg = Postgres::init_and_start(scratch.dir.path(), &archiving(&scratch, "60s"));
    let mut names = Vec::new();
    for i in 0..5 {
        pg.psql(
            "postgres",
            &format!("create table t{i} as select generate_series(1, 1000) n"),
        );
        names.push(pg.switch_wal());
    }
    pg.wait_archived(names.last().unwrap(), SERVER_LIMIT);
    let digest = |path: &Path| blake3::hash(&fs::read(path).unwrap());
    let originals: Vec<_> = names
        .iter()
        .map(|n| digest(&pg.data.join("pg_wal").join(n)))
        .collect();
    drop(pg);

    let dest = scratch.postgres_dir("pg_wal");
    let out = output_within(
        scratch
            .ocvault()
            .args(["wal-fetch", &names[0]])
            .arg(dest.join(&names[0]))
            .args(["--prefetch", "4"]),
        COMMAND_LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(digest(&dest.join(&names[0])), originals[0]);
    let spool = dest.join("ocvault").join("prefetch");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !names[1..].iter().all(|n| spool.join(n).exists()) {
        assert!(
            Instant::now() < deadline,
            "prefetch folder after 60 s: {:?}",
            fs::read_dir(&spool).map(|rd| rd.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (n, original) in names[1..].iter().zip(&originals[1..]) {
        assert_eq!(&digest(&spool.join(n)), original, "prefetched {n}");
    }
    // The next fetch takes the prefetched file without opening the repository (moved away).
    let away = scratch.path("repo-away");
    fs::rename(&scratch.repo, &away).unwrap();
    let out = output_within(
        scratch
            .ocvault()
            .args(["wal-fetch", &names[1]])
            .arg(dest.join(&names[1]))
            .args(["--prefetch", "0", "--retry-for", "1s"]),
        COMMAND_LIMIT,
    );
    fs::rename(&away, &scratch.repo).unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(digest(&dest.join(&names[1])), originals[1]);
    assert!(
        !spool.join(&names[1]).exists(),
        "the prefetched file must be moved, not copied"
    );
}

/// A recovery that must follow a timeline switch: a PITR to T promotes a server on timeline 2
/// (archiving into the same repository, so `00000002.history` and its segments are archived),
/// which commits more; then `pitr --latest` from the same base backup on timeline 1 must
/// fetch the history file, switch timelines where timeline 2 branched off, and end with
/// timeline 2's commit, not timeline 1's commit after T. `check` sees an unbroken archive
/// across the switch.
#[test]
fn recovery_follows_a_timeline_switch() {
    let scratch = PgScratch::new();
    let pg = archived_app_server(&scratch);
    pg.psql(
        "app",
        "create table marks (v text); insert into marks values ('tl1 before T')",
    );
    std::thread::sleep(Duration::from_millis(1100));
    let t = pg.now_to_the_second();
    std::thread::sleep(Duration::from_millis(1100));
    pg.psql("app", "insert into marks values ('tl1 after T')");
    let last = pg.switch_wal();
    pg.wait_archived(&last, SERVER_LIMIT);
    drop(pg);

    let data = pitr(&scratch, &["--time", &t], "timeline2");
    let mut tl2 = Postgres::start_on(&data, &archiving(&scratch, "60s"));
    tl2.wait_promoted(SERVER_LIMIT);
    let timeline = tl2.psql(
        "postgres",
        "select timeline_id from pg_control_checkpoint()",
    );
    tl2.psql("app", "insert into marks values ('tl2')");
    let last = tl2.switch_wal();
    assert!(last.starts_with("00000002"), "{last} (timeline {timeline})");
    tl2.wait_archived(&last, SERVER_LIMIT);
    drop(tl2);
    let history = fetch_to_file(&scratch, "00000002.history");
    assert!(
        String::from_utf8_lossy(&history).starts_with("1\t"),
        "timeline 2's history names timeline 1"
    );
    scratch.ocvault_ok(&["check"], SERVER_LIMIT);

    let data = pitr(&scratch, &["--latest"], "latest");
    let mut latest = Postgres::start_on(&data, &PgConfig::new());
    latest.wait_promoted(SERVER_LIMIT);
    assert_eq!(
        latest.psql("app", "select string_agg(v, ',' order by v) from marks"),
        "tl1 before T,tl2"
    );
    let log = latest.log_text();
    assert!(
        log.contains("restored log file \"00000002.history\""),
        "{log}"
    );
}

/// `wal-fetch NAME` into a scratch file, as `postgres`; returns the bytes.
fn fetch_to_file(scratch: &PgScratch, name: &str) -> Vec<u8> {
    let dest = scratch.postgres_dir("fetched").join(name);
    let out = output_within(
        scratch
            .ocvault()
            .args(["wal-fetch", "--prefetch", "0", name])
            .arg(&dest),
        COMMAND_LIMIT,
    );
    assert!(out.status.success(), "wal-fetch {name}: {out:?}");
    fs::read(&dest).unwrap()
}

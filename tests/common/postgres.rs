//! PostgreSQL for the tests: a private server on 127.0.0.1 run as user `postgres`
//! ([`Postgres`]), and a scratch folder it shares with ocvault ([`PgScratch`]): a copy of the
//! ocvault binary the server can execute (for `archive_command`/`restore_command`), a
//! repository and a password file owned by `postgres`, and ocvault commands run as `postgres`
//! so that the files they write stay writable by the server's `wal-push`.
//!
//! PostgreSQL refuses to run as root; the tests run as root and switch with `setpriv` (which
//! execs, so the process the test holds is the postmaster or ocvault itself, and a kill hits
//! it). Every command runs under a time limit ([`super::process`]).

use super::env::scratch_dir;
use super::process::{output_within, run_ok, COMMAND_LIMIT};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The PostgreSQL server binaries (`/usr/lib/postgresql/N/bin`, newest N).
pub fn pg_bin() -> PathBuf {
    let mut bins: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    bins.sort();
    bins.pop().expect(
        "PostgreSQL server binaries not found under /usr/lib/postgresql \
         (install Debian's postgresql; .ci/run does)",
    )
}

/// The `postgres` user: (uid, gid, home).
fn postgres_user() -> (u32, u32, PathBuf) {
    let u = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("no user `postgres` (install Debian's postgresql; .ci/run does)");
    (u.uid.as_raw(), u.gid.as_raw(), u.dir)
}

/// `program` to be run as user `postgres`, with no `OCVAULT_*` variable inherited from the
/// test's environment and a working folder it can enter.
pub fn as_postgres(program: &Path) -> Command {
    let (_, _, home) = postgres_user();
    let mut c = Command::new("setpriv");
    c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(program)
        .env("HOME", home)
        .current_dir("/");
    for (k, _) in std::env::vars_os() {
        if k.as_bytes().starts_with(b"OCVAULT_") {
            c.env_remove(k);
        }
    }
    c
}

/// Gives `path` (recursively) to user `postgres`.
pub fn chown_postgres(path: &Path) {
    run_ok(
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path),
        COMMAND_LIMIT,
    );
}

/// A scratch folder for a PostgreSQL test: see the module comment.
pub struct PgScratch {
    /// Removed when dropped (kept with `OCVAULT_KEEP_TMP`).
    pub dir: tempfile::TempDir,
    /// A copy of the ocvault binary, mode 0755, that user `postgres` can execute.
    pub ocvault: PathBuf,
    /// The repository location (a folder owned by `postgres`; [`PgScratch::init_repo`]).
    pub repo: PathBuf,
    /// The password file (owned by `postgres`, mode 0600).
    pub password_file: PathBuf,
}

impl PgScratch {
    pub fn new() -> PgScratch {
        let dir = scratch_dir("ocvault-pg-");
        // tempfile makes it 0700; the server and ocvault run as postgres must enter it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        for folder in dir.path().ancestors().skip(1) {
            let mode = fs::metadata(folder).unwrap().permissions().mode();
            assert!(
                mode & 0o001 != 0,
                "{} is closed to other users, so postgres cannot reach the test's files: \
                 set OCVAULT_TEST_TMP to a folder others can enter, e.g. /tmp/ocvault-tests",
                folder.display()
            );
        }
        // The cargo target folder may be closed to postgres: the server runs its own copy.
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let ocvault = bin.join("ocvault");
        fs::copy(assert_cmd::cargo::cargo_bin("ocvault"), &ocvault).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&ocvault, fs::Permissions::from_mode(0o755)).unwrap();
        let repo = dir.path().join("repo");
        fs::create_dir(&repo).unwrap();
        let password_file = dir.path().join("password");
        fs::write(&password_file, "pitr test password\n").unwrap();
        fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600)).unwrap();
        chown_postgres(&repo);
        chown_postgres(&password_file);
        PgScratch {
            dir,
            ocvault,
            repo,
            password_file,
        }
    }

    /// A path inside the scratch folder (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A new empty folder `name` owned by `postgres` (targets, copies of WAL).
    pub fn postgres_dir(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        fs::create_dir(&p).unwrap();
        chown_postgres(&p);
        p
    }

    /// `ocvault` (the copy) as user `postgres`, with no repository or password given.
    pub fn ocvault_bare(&self) -> Command {
        as_postgres(&self.ocvault)
    }

    /// `ocvault -r REPO --password-file FILE` as user `postgres`; add the command.
    pub fn ocvault(&self) -> Command {
        let mut c = self.ocvault_bare();
        c.arg("-r")
            .arg(&self.repo)
            .arg("--password-file")
            .arg(&self.password_file);
        c
    }

    /// Runs `ocvault ARGS` (see [`PgScratch::ocvault`]) and asserts success; returns stdout.
    pub fn ocvault_ok(&self, args: &[&str], limit: Duration) -> String {
        run_ok(self.ocvault().args(args), limit)
    }

    /// `init` with a tiny Argon2id (every wal-push and wal-fetch derives the key again).
    pub fn init_repo(&self) {
        self.ocvault_ok(
            &["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"],
            COMMAND_LIMIT,
        );
    }

    /// The environment a server needs for `archive_command = 'ocvault wal-push %p'`.
    pub fn server_env(&self) -> Vec<(String, String)> {
        vec![
            ("OCVAULT_REPOSITORY".into(), self.repo.display().to_string()),
            (
                "OCVAULT_PASSWORD_FILE".into(),
                self.password_file.display().to_string(),
            ),
        ]
    }
}

impl Default for PgScratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Settings (`-c NAME=VALUE`) and environment for a server.
#[derive(Clone, Default)]
pub struct PgConfig {
    pub settings: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
}

impl PgConfig {
    pub fn new() -> PgConfig {
        PgConfig::default()
    }

    /// Adds `-c name=value` to the server's command line (no shell: any value goes).
    pub fn set(mut self, name: &str, value: impl ToString) -> PgConfig {
        self.settings.push((name.into(), value.to_string()));
        self
    }

    /// Adds an environment variable of the server process (and so of its archive_command).
    pub fn env(mut self, name: &str, value: impl ToString) -> PgConfig {
        self.env.push((name.into(), value.to_string()));
        self
    }

    /// `envs` added to the environment.
    pub fn envs(mut self, envs: Vec<(String, String)>) -> PgConfig {
        self.env.extend(envs);
        self
    }
}

/// A private PostgreSQL server on 127.0.0.1 (no Unix socket), run as `postgres`, its
/// standard error in [`Postgres::log`]. Stopped (immediate shutdown) on drop.
pub struct Postgres {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    /// The postmaster (setpriv execs it), until it is reaped.
    child: Option<Child>,
}

impl Postgres {
    /// `initdb` in `root/pg/data` and a server on it with default settings.
    pub fn start(root: &Path) -> Postgres {
        Postgres::init_and_start(root, &PgConfig::new())
    }

    /// `initdb` in `root/pg/data`, then a server on it with `config`, ready for connections.
    pub fn init_and_start(root: &Path, config: &PgConfig) -> Postgres {
        let bin = pg_bin();
        let dir = root.join("pg");
        fs::create_dir_all(&dir).unwrap();
        chown_postgres(&dir);
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.join("data");
        run_ok(
            as_postgres(&bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "-D"])
                .arg(&data),
            COMMAND_LIMIT,
        );
        let mut pg = Postgres::spawn(bin, &data, config);
        pg.wait_ready(Duration::from_secs(60));
        pg
    }

    /// A server on an existing data folder (a restored base backup): owned by `postgres`
    /// and 0700 first. Returns at once: wait with [`Postgres::wait_ready`],
    /// [`Postgres::wait_promoted`] or [`Postgres::wait_recovery_failed`].
    pub fn start_on(data: &Path, config: &PgConfig) -> Postgres {
        chown_postgres(data);
        fs::set_permissions(data, fs::Permissions::from_mode(0o700)).unwrap();
        Postgres::spawn(pg_bin(), data, config)
    }

    fn spawn(bin: PathBuf, data: &Path, config: &PgConfig) -> Postgres {
        let port = super::servers::free_port();
        let log = data.with_extension(format!("{port}.log"));
        let log_file = fs::File::create(&log).unwrap();
        let mut cmd = as_postgres(&bin.join("postgres"));
        cmd.arg("-D").arg(data).args(["-p", &port.to_string()]);
        cmd.args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="]);
        for (k, v) in &config.settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        for (k, v) in &config.env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .expect("start postgres");
        Postgres {
            bin,
            data: data.to_path_buf(),
            port,
            log,
            child: Some(child),
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Whether the postmaster is still running (reaps it once it has exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => match c.try_wait().unwrap() {
                None => true,
                Some(_) => {
                    self.child = None;
                    false
                }
            },
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}; server log {}:\n{}",
            self.log.display(),
            self.log_text()
        )
    }

    /// Waits until the server accepts connections.
    pub fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.try_psql("postgres", "select 1").is_err() {
            if !self.is_running() {
                self.fail("PostgreSQL exited before accepting connections");
            }
            if Instant::now() > deadline {
                self.fail(&format!("PostgreSQL not ready within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until recovery has ended and the server runs read-write (promoted).
    pub fn wait_promoted(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self
                .try_psql("postgres", "select pg_is_in_recovery()")
                .as_deref()
                == Ok("f")
            {
                return;
            }
            if !self.is_running() {
                self.fail("PostgreSQL exited instead of finishing recovery");
            }
            if Instant::now() > deadline {
                self.fail(&format!("PostgreSQL not promoted within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the server has stopped (recovery failed); fails the test if it is ever
    /// seen promoted. Returns the log.
    pub fn wait_recovery_failed(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while self.is_running() {
            if self
                .try_psql("postgres", "select pg_is_in_recovery()")
                .as_deref()
                == Ok("f")
            {
                self.fail("PostgreSQL was promoted, but recovery should have failed");
            }
            if Instant::now() > deadline {
                self.fail(&format!("PostgreSQL still running after {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.log_text()
    }

    /// The postmaster's process id, from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> u32 {
        let text = fs::read_to_string(self.data.join("postmaster.pid")).unwrap();
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    /// SIGKILL to the postmaster, as a crash would. Its children notice and exit by
    /// themselves (PostgreSQL puts each in a process group of its own); any still there
    /// after 10 s are killed too. Returns the moment of the kill.
    pub fn kill9_postmaster(&mut self) -> SystemTime {
        let pid = self.postmaster_pid();
        let mut child = self.child.take().expect("server not running");
        assert_eq!(child.id(), pid, "the child must be the postmaster itself");
        let children = children_of(pid);
        let at = SystemTime::now();
        child.kill().unwrap();
        child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while children.iter().any(|c| alive(*c)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for c in children.into_iter().filter(|c| alive(*c)) {
            // SAFETY: plain kill(2) of a process this server started.
            unsafe { libc::kill(c as i32, libc::SIGKILL) };
        }
        at
    }

    /// Runs `sql` with psql (as client user `postgres`); stdout, trimmed, or the error.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = output_within(
            Command::new(self.bin.join("psql"))
                .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
                .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
                .arg(self.port.to_string())
                .args(["-d", db, "-c", sql])
                .env("PGCONNECT_TIMEOUT", "5"),
            COMMAND_LIMIT,
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// [`Postgres::try_psql`] that must succeed.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql -d {db} -c {sql:?} failed: {e}"))
    }

    /// `select now()` as PostgreSQL prints it.
    pub fn now(&self) -> String {
        self.psql("postgres", "select now()")
    }

    /// The current moment truncated to the second, in UTC, as `ocvault pitr --time` and
    /// `recovery_target_time` take it: `YYYY-MM-DD HH:MM:SS+00`.
    pub fn now_to_the_second(&self) -> String {
        self.psql(
            "postgres",
            "select to_char(date_trunc('second', now() at time zone 'UTC'), \
             'YYYY-MM-DD HH24:MI:SS') || '+00'",
        )
    }

    /// `pg_current_wal_lsn()`, as `X/Y`.
    pub fn current_wal_lsn(&self) -> String {
        self.psql("postgres", "select pg_current_wal_lsn()")
    }

    /// `pg_switch_wal()`: ends the current segment; returns the name of the segment that
    /// holds the switch (the one PostgreSQL archives next).
    pub fn switch_wal(&self) -> String {
        self.psql("postgres", "select pg_walfile_name(pg_switch_wal())")
    }

    /// `pg_stat_archiver`: (last archived WAL file, failed count, last failed WAL file).
    pub fn archiver(&self) -> (String, u64, String) {
        let row = self.psql(
            "postgres",
            "select coalesce(last_archived_wal, '') || '|' || failed_count || '|' || \
             coalesce(last_failed_wal, '') from pg_stat_archiver",
        );
        let mut parts = row.split('|');
        let last = parts.next().unwrap_or_default().to_string();
        let failed = parts.next().unwrap_or("0").parse().unwrap();
        let last_failed = parts.next().unwrap_or_default().to_string();
        (last, failed, last_failed)
    }

    /// Waits until the segment `name` (or a later one: PostgreSQL archives in order) is
    /// archived; fails the test once archive_command has failed 3 times.
    pub fn wait_archived(&self, name: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let (last, failed, last_failed) = self.archiver();
            if last.len() >= 24 && last[..24] >= name[..24] {
                return;
            }
            // PostgreSQL retries a failed archive_command 3 times, then only every 60 s:
            // a broken one shows here at once, with its error in the log.
            if Instant::now() > deadline || failed >= 3 {
                self.fail(&format!(
                    "{name} not archived after {:?}: last archived {last:?}, \
                     {failed} failures of archive_command, last failed {last_failed:?}",
                    limit - deadline.saturating_duration_since(Instant::now())
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `pgbench -i -s SCALE DB`.
    pub fn pgbench_init(&self, db: &str, scale: u32) {
        run_ok(
            Command::new(self.bin.join("pgbench"))
                .args(["-i", "-q", "-s", &scale.to_string()])
                .args(self.conn_args())
                .arg(db),
            Duration::from_secs(600),
        );
    }

    /// `pgbench -n -c CLIENTS -t TRANSACTIONS DB` (TPC-B-like transactions per client).
    pub fn pgbench_run(&self, db: &str, clients: u32, transactions: u32) {
        run_ok(
            Command::new(self.bin.join("pgbench"))
                .args(["-n", "-j", "1", "-c", &clients.to_string()])
                .args(["-t", &transactions.to_string()])
                .args(self.conn_args())
                .arg(db),
            Duration::from_secs(600),
        );
    }

    fn conn_args(&self) -> Vec<String> {
        [
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &self.port.to_string(),
        ]
        .map(String::from)
        .to_vec()
    }

    /// The tables of schema `public` in `db`, sorted.
    pub fn tables(&self, db: &str) -> Vec<String> {
        self.psql(
            db,
            "select tablename from pg_tables where schemaname = 'public' order by 1",
        )
        .lines()
        .map(String::from)
        .collect()
    }

    /// For every table of schema `public` in `db`: its row count and an MD5 of all its
    /// rows in a fixed order.
    pub fn checksums(&self, db: &str) -> BTreeMap<String, String> {
        self.tables(db)
            .into_iter()
            .map(|t| {
                let sum = self.psql(
                    db,
                    &format!(
                        "select count(*) || ' ' || md5(coalesce(string_agg(x::text, ',' \
                         order by x::text), '')) from public.\"{t}\" x"
                    ),
                );
                (t, sum)
            })
            .collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGQUIT: immediate shutdown (the postmaster stops its children itself).
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

//! The command line: global options, password sources, output, and one module a command.
//! Each command's `run` parses its arguments into a library options struct, calls the
//! library (`ocvault::commands` and friends), prints the result and returns an [`Outcome`];
//! [`outcome::exit_code`] is the one place outcomes and errors become exit codes.

mod args;
mod check;
mod completion;
mod copy;
mod diff;
mod dump;
mod find;
mod forget;
mod init;
mod key;
mod log;
mod ls;
mod man;
mod metrics;
mod mount;
mod outcome;
mod password_command;
mod pitr;
mod profile;
mod prune;
mod repair;
mod restore;
mod rewrite;
mod snapshot;
mod snapshots;
mod stats;
mod tag;
mod thaw;
mod unlock;
mod wal_fetch;
mod wal_push;

use clap::{Parser, Subcommand};
use ocvault::backend::{Backend, BackendSettings};
use ocvault::error::{Error, Result};
use ocvault::oplog::CommandLine;
use ocvault::repository::Repository;
pub use outcome::Outcome;
use std::io::IsTerminal;
use std::path::PathBuf;
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(name = "ocvault", version, about = "Deduplicating, encrypted backups to any storage", long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Clone)]
pub struct GlobalOptions {
    /// Read settings from the profile NAME: $XDG_CONFIG_HOME/ocvault/NAME.toml (else
    /// ~/.config/ocvault/NAME.toml), else /etc/ocvault/NAME.toml; the command line and the
    /// environment win over it
    #[arg(long, env = "OCVAULT_PROFILE", global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Read settings from this profile file (as --profile, which it wins over: OCVAULT_PROFILE
    /// may be set for the host's usual job)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Repository: PATH, fs:PATH, s3://BUCKET/PREFIX, sftp://USER@HOST[:PORT]/PATH,
    /// webdav://HOST[:PORT]/PATH, webdavs://..., opendal:SCHEME (with -o), memory:
    #[arg(
        short = 'r',
        long = "repo",
        env = "OCVAULT_REPOSITORY",
        global = true,
        value_name = "URL"
    )]
    pub repo: Option<String>,
    /// Read the password from this file (first line); also OCVAULT_PASSWORD_FILE
    #[arg(
        long,
        env = "OCVAULT_PASSWORD_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// A profile's password-command (the environment's OCVAULT_PASSWORD_COMMAND wins).
    #[arg(skip)]
    pub password_command: Option<String>,
    /// Open the repository with this key share instead of a password, repeatable (M of the
    /// shares `key split` wrote)
    #[arg(long = "share", global = true, value_name = "FILE")]
    pub shares: Vec<PathBuf>,
    /// A share's password from this file (first line), repeatable, in the order of --share
    /// (and of the shares `key split` writes); otherwise a prompt per share on a terminal
    #[arg(long = "share-password-file", global = true, value_name = "FILE")]
    pub share_password_files: Vec<PathBuf>,
    /// A share's password from this shell command's first output line (a secrets manager:
    /// `vault kv get -field=share1 secret/ocvault`), repeatable, in the order of --share;
    /// run like OCVAULT_PASSWORD_COMMAND, under OCVAULT_PASSWORD_COMMAND_TIMEOUT
    #[arg(
        long = "share-password-command",
        global = true,
        value_name = "CMD",
        conflicts_with = "share_password_files"
    )]
    pub share_password_commands: Vec<String>,
    /// Backend option KEY=VALUE, repeatable: s3.endpoint, s3.region, sftp.key, sftp.known_hosts,
    /// retry.max, retry.delay_ms, timeout (seconds), or an OpenDAL key with opendal:SCHEME.
    /// Secrets are refused here: give them in the environment
    #[arg(short = 'o', long = "option", global = true, value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// Storage operations in flight at once
    #[arg(
        long,
        env = "OCVAULT_BACKEND_CONNECTIONS",
        global = true,
        value_name = "N",
        default_value_t = ocvault::backend::DEFAULT_CONNECTIONS
    )]
    pub backend_connections: usize,
    /// Local cache folder for remote repositories' index files, snapshots and tree packs
    /// (and write-only keys' own trees); default $XDG_CACHE_HOME/ocvault or ~/.cache/ocvault
    #[arg(long, env = "OCVAULT_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Keep no index files, snapshots or tree packs of a remote repository on local disk
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Machine-readable JSON output on standard output
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress display
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// After snapshot, check, forget and prune: write Prometheus metrics to this file
    /// (node_exporter's textfile collector), keeping the other commands' series in it
    #[arg(long, env = "OCVAULT_METRICS_FILE", global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a new repository
    Init(init::Args),
    /// Back up files, folders and standard input into a new snapshot
    Snapshot(snapshot::Args),
    /// List snapshots
    Snapshots(snapshots::Args),
    /// Restore a snapshot into a folder
    Restore(restore::Args),
    /// List the files in a snapshot
    Ls(ls::Args),
    /// Write one file of a snapshot to standard output
    Dump(dump::Args),
    /// Browse the snapshots as a read-only file system (FUSE), until Ctrl-C
    Mount(mount::Args),
    /// Copy snapshots to another repository, sending only what it lacks
    Copy(copy::Args),
    /// Verify the repository: structure always, data with --read-data
    Check(check::Args),
    /// Remove snapshots by id or by a keep policy
    Forget(Box<forget::Args>),
    /// Delete data no snapshot uses
    Prune(prune::Args),
    /// After damage `check` found: rebuild the index, cut lost files from snapshots, salvage packs
    Repair(repair::Args),
    /// Write snapshots anew without paths matching globs, forgetting the originals
    Rewrite(rewrite::Args),
    /// Remove stale backup markers left by crashed clients
    Unlock(unlock::Args),
    /// Manage passwords: list, add, remove, passwd
    Key(key::Args),
    /// List the operations that changed the repository
    Log(log::Args),
    /// Show paths added, removed and changed between two snapshots
    Diff(diff::Args),
    /// Find which snapshots hold paths matching a glob
    Find(find::Args),
    /// Sizes, dedup and compression ratios, blob and pack counts
    Stats(stats::Args),
    /// Add or remove snapshot tags
    Tag(tag::Args),
    /// Make a snapshot's packs in S3 archive storage classes readable (restore requests)
    Thaw(thaw::Args),
    /// Point-in-time recovery of PostgreSQL into a new data folder
    Pitr(pitr::Args),
    /// Archive a PostgreSQL WAL file (archive_command = 'ocvault wal-push %p')
    WalPush(wal_push::Args),
    /// Fetch an archived WAL file (restore_command = 'ocvault wal-fetch %f %p')
    WalFetch(wal_fetch::Args),
    /// Print the shell completion script for bash, zsh or fish
    Completion(completion::Args),
    /// Write a man page for every command into a folder
    Man(man::Args),
}

impl Command {
    /// The name of a command that writes `--metrics-file` (its `command` label).
    fn metered_name(&self) -> Option<&'static str> {
        match self {
            Command::Snapshot(_) => Some("snapshot"),
            Command::Check(_) => Some("check"),
            Command::Forget(_) => Some("forget"),
            Command::Prune(_) => Some("prune"),
            _ => None,
        }
    }
}

/// Runs the command line of this process; returns its exit code.
pub fn main() -> i32 {
    let mut metered = None;
    let (result, is_wal_fetch) = match Cli::try_parse() {
        Ok(cli) => {
            let is_wal_fetch = matches!(cli.command, Command::WalFetch(_));
            metered = metrics::Run::start(
                cli.global.metrics_file.as_deref(),
                cli.command.metered_name(),
            );
            (run(cli), is_wal_fetch)
        }
        Err(e) => (outcome::from_clap(e), wal_fetch::invoked()),
    };
    let mut code = outcome::report(&result);
    if code != ocvault::error::exit::OK && is_wal_fetch {
        // PostgreSQL takes any status up to 125 for "not archived" and ends recovery: only
        // a proven absence may say so; anything else (bad arguments too) stops recovery.
        let not_archived = matches!(result, Err(Error::WalNotArchived(_)));
        if !not_archived {
            code = ocvault::error::exit::WAL_FETCH_FAILED;
        }
    }
    if let Some(run) = metered {
        run.finish(code);
    }
    let faults = Backend::injected_faults();
    if faults > 0 {
        eprintln!("ocvault: {faults} faults injected");
        // Shows the tests that faults ran over the local writer production uses.
        let spilled = Backend::spilled_writes();
        eprintln!("ocvault: {spilled} files stored from local temporary files");
    }
    code
}

fn run(cli: Cli) -> Result<Outcome> {
    let cli = profile::apply(cli)?;
    let g = cli.global;
    match cli.command {
        Command::Init(a) => init::run(&g, a),
        Command::Snapshot(a) => snapshot::run(&g, a),
        Command::Snapshots(a) => snapshots::run(&g, a),
        Command::Restore(a) => restore::run(&g, a),
        Command::Ls(a) => ls::run(&g, a),
        Command::Dump(a) => dump::run(&g, a),
        Command::Mount(a) => mount::run(&g, a),
        Command::Check(a) => check::run(&g, a),
        Command::Copy(a) => copy::run(&g, a),
        Command::Forget(a) => forget::run(&g, *a),
        Command::Prune(a) => prune::run(&g, a),
        Command::Repair(a) => repair::run(&g, a),
        Command::Rewrite(a) => rewrite::run(&g, a),
        Command::Unlock(a) => unlock::run(&g, a),
        Command::Key(a) => key::run(&g, a),
        Command::Log(a) => log::run(&g, a),
        Command::Diff(a) => diff::run(&g, a),
        Command::Find(a) => find::run(&g, a),
        Command::Stats(a) => stats::run(&g, a),
        Command::Tag(a) => tag::run(&g, a),
        Command::Thaw(a) => thaw::run(&g, a),
        Command::Pitr(a) => pitr::run(&g, a),
        Command::WalPush(a) => wal_push::run(&g, a),
        Command::WalFetch(a) => wal_fetch::run(&g, a),
        Command::Completion(a) => completion::run(a),
        Command::Man(a) => man::run(a),
    }
}

/// This process's arguments as the operations log records them (secrets masked).
pub fn command_line() -> CommandLine {
    // args_os: `args` panics on an argument that is not UTF-8 (a source path can be one).
    CommandLine::new(std::env::args_os().skip(1))
}

/// Opens --repo, runs a command that only reads it (restore, dump, ls, find, diff), and adds
/// its operations-log entry when it finished, whether it succeeded or failed: `body`
/// returns the outcome and the snapshots it read. A failure to log is a warning after a
/// success, and dropped after a failure.
///
/// These commands read file names or contents, so a write-only key is refused (exit 14),
/// and the refusal is logged like any other failure: `needs` says what the key cannot do.
pub fn logged_read(
    g: &GlobalOptions,
    operation: &str,
    needs: &str,
    body: impl FnOnce(&Repository, &mut Vec<ocvault::SnapshotId>) -> Result<Outcome>,
) -> Result<Outcome> {
    logged_read_on(&g.open()?, operation, needs, body)
}

/// [`logged_read`] on a repository already open (`mount` shares it with its threads).
pub fn logged_read_on(
    repo: &Repository,
    operation: &str,
    needs: &str,
    body: impl FnOnce(&Repository, &mut Vec<ocvault::SnapshotId>) -> Result<Outcome>,
) -> Result<Outcome> {
    let mut snapshots = Vec::new();
    let outcome = repo
        .require_full_key(needs)
        .and_then(|()| body(repo, &mut snapshots));
    let result = match &outcome {
        Ok(Outcome::Success) => Ok("ok"),
        Ok(Outcome::Incomplete) => Ok("incomplete"),
        Ok(Outcome::Damage) => Ok("damaged"),
        Ok(Outcome::TooOld) => Ok("too old"),
        Ok(Outcome::Cold) => Ok("cold"),
        Err(e) => Err(e),
    };
    snapshots.sort();
    snapshots.dedup();
    let failed = result.is_err();
    let warning = ocvault::oplog::record_read(repo, &command_line(), operation, result, snapshots);
    // After a failure its error stays the one line shown (a failure to log it most likely
    // has the same cause), as for the commands that change the repository.
    if !failed {
        warn_all(warning);
    }
    outcome
}

/// Shows the warnings a library call returned, one line each.
pub fn warn_all<S: std::fmt::Display>(warnings: impl IntoIterator<Item = S>) {
    for w in warnings {
        eprintln!("ocvault: warning: {w}");
    }
}

impl GlobalOptions {
    pub fn repo_url(&self) -> Result<&str> {
        self.repo
            .as_deref()
            .ok_or_else(|| Error::usage("no repository given: use --repo or OCVAULT_REPOSITORY"))
    }

    /// The password, from (in order) OCVAULT_PASSWORD, the password file, OCVAULT_PASSWORD_COMMAND,
    /// the profile's password-command, or a prompt when standard input is a terminal.
    pub fn password(&self) -> Result<Zeroizing<Vec<u8>>> {
        if let Ok(p) = std::env::var("OCVAULT_PASSWORD") {
            return Ok(Zeroizing::new(p.into_bytes()));
        }
        if let Some(f) = &self.password_file {
            return read_password_file(f);
        }
        let command = std::env::var("OCVAULT_PASSWORD_COMMAND")
            .ok()
            .or_else(|| self.password_command.clone());
        if let Some(cmd) = command {
            let out = password_command::run(&cmd)?;
            return Ok(first_line(out.to_vec()));
        }
        if std::io::stdin().is_terminal() {
            let p = rpassword::prompt_password("repository password: ")
                .map_err(|e| Error::other(format!("cannot read password: {e}")))?;
            return Ok(Zeroizing::new(p.into_bytes()));
        }
        Err(Error::usage("no password given: set OCVAULT_PASSWORD, OCVAULT_PASSWORD_FILE, --password-file or OCVAULT_PASSWORD_COMMAND"))
    }

    /// The storage behind --repo; `create` allows a new local folder.
    pub fn backend(&self, create: bool) -> Result<Backend> {
        Backend::open_with(
            self.repo_url()?,
            &BackendSettings {
                options: self.options.clone(),
                connections: self.backend_connections,
                cache_root: self.cache_dir.clone(),
                no_cache: self.no_cache,
                env: Default::default(),
            },
            create,
        )
    }

    /// Opens --repo with the password, or with the key shares when --share is given.
    pub fn open(&self) -> Result<Repository> {
        let backend = self.backend(false)?;
        Repository::probe(&backend)?;
        if !self.shares.is_empty() {
            return self.open_with_shares(backend);
        }
        let pw = self.password()?;
        Repository::open(backend, &pw)
    }

    /// Opens the repository for a command a write-only key cannot run (exit 14): `what` says
    /// what it would have had to do ("restore snapshots").
    pub fn open_full(&self, what: &str) -> Result<Repository> {
        let repo = self.open()?;
        repo.require_full_key(what)?;
        Ok(repo)
    }

    fn open_with_shares(&self, backend: Backend) -> Result<Repository> {
        ocvault::shares::open_with_shares(backend, &self.opened_shares()?)
    }

    /// The master key the --share files combine to, verified against the repository, and
    /// the shares as the operations log records them.
    pub fn share_master_key(
        &self,
        backend: &Backend,
    ) -> Result<(
        ocvault::crypto::MasterKey,
        Vec<ocvault::format::ShareApproval>,
    )> {
        let shares = self.opened_shares()?;
        let master = ocvault::shares::master_key_for(backend, &shares)?;
        Ok((master, ocvault::shares::approvals(&shares)))
    }

    fn opened_shares(&self) -> Result<Vec<ocvault::shares::OpenedShare>> {
        let passwords = self.share_passwords(self.shares.len(), "--share")?;
        self.shares
            .iter()
            .zip(&passwords)
            .map(|(path, pw)| ocvault::shares::open_share_file(path, pw))
            .collect()
    }

    /// `count` share passwords: from --share-password-file or --share-password-command
    /// (exactly `count`, in order), else one prompt each on a terminal.
    pub fn share_passwords(&self, count: usize, what: &str) -> Result<Vec<Zeroizing<Vec<u8>>>> {
        if !self.share_password_commands.is_empty() {
            if self.share_password_commands.len() != count {
                return Err(Error::usage(format!(
                    "{} --share-password-command given for {count} shares ({what})",
                    self.share_password_commands.len()
                )));
            }
            return self
                .share_password_commands
                .iter()
                .enumerate()
                .map(|(i, cmd)| {
                    let what = format!("--share-password-command {}", i + 1);
                    password_command::run_named(cmd, &what).map(|out| first_line(out.to_vec()))
                })
                .collect();
        }
        if !self.share_password_files.is_empty() {
            if self.share_password_files.len() != count {
                return Err(Error::usage(format!(
                    "{} --share-password-file given for {count} shares ({what})",
                    self.share_password_files.len()
                )));
            }
            return self
                .share_password_files
                .iter()
                .map(|f| read_password_file(f))
                .collect();
        }
        if !std::io::stdin().is_terminal() {
            return Err(Error::usage(
                "give each share's password with --share-password-file or --share-password-command (no terminal to prompt on)",
            ));
        }
        (1..=count)
            .map(|i| {
                rpassword::prompt_password(format!("password of share {i}: "))
                    .map(|p| Zeroizing::new(p.into_bytes()))
                    .map_err(|e| Error::other(format!("cannot read password: {e}")))
            })
            .collect()
    }

    /// Progress bars only on a terminal, never under cron or with --json.
    pub fn show_progress(&self) -> bool {
        !self.quiet && !self.json && std::io::stderr().is_terminal()
    }
}

pub fn read_password_file(f: &std::path::Path) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
    Ok(first_line(bytes))
}

pub fn first_line(bytes: Vec<u8>) -> Zeroizing<Vec<u8>> {
    let bytes = Zeroizing::new(bytes);
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let mut line = &bytes[..end];
    if line.last() == Some(&b'\r') {
        line = &line[..line.len() - 1];
    }
    Zeroizing::new(line.to_vec())
}

/// With --json, a cold-storage refusal (exit 13) also lists its packs on standard output.
pub fn cold_json(g: &GlobalOptions, e: Error) -> Error {
    if let (true, Error::Cold { snapshot, packs }) = (g.json, &e) {
        print_json(&serde_json::json!({
            "error": e.to_string(),
            "exit_code": ocvault::error::exit::COLD,
            "snapshot_id": snapshot,
            "cold_packs": packs,
            "cold_bytes": packs.iter().map(|p| p.size).sum::<u64>(),
        }));
    }
    e
}

pub fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string(v).expect("JSON"));
}

/// A progress bar that redraws from counters ten times a second; a no-op when hidden.
pub struct Ticker {
    _redraw: Option<ocvault::periodic::Periodic>,
}

impl Ticker {
    pub fn start<F: Fn() -> (u64, String) + Send + 'static>(
        show: bool,
        total: Option<u64>,
        f: F,
    ) -> Ticker {
        if !show {
            return Ticker { _redraw: None };
        }
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t).with_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .unwrap()
                .progress_chars("=> "),
            ),
            None => indicatif::ProgressBar::new_spinner().with_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} {spinner} {bytes} {bytes_per_sec} {msg}",
                )
                .unwrap(),
            ),
        };
        let shown = bar.clone();
        let redraw = ocvault::periodic::Periodic::start_with_finish(
            "progress",
            std::time::Duration::from_millis(100),
            move || {
                let (pos, msg) = f();
                shown.set_position(pos);
                shown.set_message(msg);
            },
            move || bar.finish_and_clear(),
        );
        Ticker {
            _redraw: Some(redraw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks its definitions (duplicate names, conflicts naming unknown arguments) only
    /// in debug builds; the tests run in release.
    #[test]
    fn arguments_are_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn invalid_values_are_one_line_usage_errors() {
        let e = Cli::try_parse_from(["ocvault", "prune", "--grace", "soon"])
            .err()
            .unwrap();
        let result = outcome::from_clap(e);
        let Err(Error::Usage(msg)) = &result else {
            panic!("{:?}", result.map(|_| ()));
        };
        assert!(msg.contains("--grace") && !msg.contains('\n'), "{msg}");
        assert_eq!(outcome::exit_code(&result), ocvault::error::exit::USAGE);
    }
}

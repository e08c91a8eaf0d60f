use super::{GlobalOptions, Outcome};
use ocvault::error::{Error, Result};
use ocvault::wal::fetch::{self, Fetched};
use ocvault::wal::name::is_plain_file_name;
use ocvault::wal::spool::Spool;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The WAL file to fetch (`%f` in restore_command)
    #[arg(value_name = "NAME", required_unless_present = "prefetch_after")]
    name: Option<String>,
    /// Where to write it (`%p`)
    #[arg(value_name = "DEST", required_unless_present = "prefetch_after")]
    dest: Option<PathBuf>,
    /// Segments to keep fetched ahead in pg_wal/ocvault/prefetch while PostgreSQL replays (0: none)
    #[arg(long, value_name = "N", default_value_t = 16)]
    prefetch: usize,
    /// Keep retrying a failing repository this long before stopping recovery (exit 200)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = super::args::duration)]
    retry_for: Duration,
    /// Internal: run as the fetch-ahead process for the segments after NAME, into SPOOL
    #[arg(long, value_name = "NAME", hide = true, requires = "spool")]
    prefetch_after: Option<String>,
    #[arg(long, value_name = "SPOOL", hide = true)]
    spool: Option<PathBuf>,
}

/// How long the fetch-ahead process waits for recovery to take a segment before it exits.
const PREFETCH_IDLE_LIMIT: Duration = Duration::from_secs(30);

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    if let (Some(after), Some(spool)) = (&a.prefetch_after, &a.spool) {
        // One fetch-ahead process at a time; it holds the lock until it exits.
        let Some(_lock) = Spool::at(spool.clone()).try_lock() else {
            return Ok(Outcome::Success);
        };
        let repo = g.open_full("fetch WAL")?;
        let indexed = repo.load_index()?;
        fetch::prefetch(&indexed, after, a.prefetch, spool, PREFETCH_IDLE_LIMIT)?;
        return Ok(Outcome::Success);
    }
    let (Some(name), Some(dest)) = (a.name.clone(), a.dest.clone()) else {
        return Err(Error::usage("wal-fetch needs NAME and DEST"));
    };
    let failed = |why: String| Error::WalFetchFailed {
        name: name.clone(),
        why,
    };
    if !is_plain_file_name(&name) {
        return Err(failed("not a WAL file name".into()));
    }
    let spool = Spool::for_destination(&dest);
    if spool.take(&name, &dest) {
        // Drops the segments recovery has passed; starts a fetch-ahead process if none runs.
        if spool.ahead_of(&name) < a.prefetch {
            start_prefetch(g, &name, &spool, a.prefetch);
        }
        return Ok(Outcome::Success);
    }
    let deadline = Instant::now() + a.retry_for;
    let mut delay = Duration::from_millis(500);
    loop {
        match fetch_once(g, &name, &dest) {
            Ok(Fetched::Written { .. }) => {
                start_prefetch(g, &name, &spool, a.prefetch);
                return Ok(Outcome::Success);
            }
            Ok(Fetched::NotArchived) => return Err(Error::WalNotArchived(name)),
            // Permanent: no retry can change the repository's format or the key's kind.
            Err(
                e @ (Error::NeedsNewerFormat(_)
                | Error::UnsupportedVersion { .. }
                | Error::WriteOnly(_)),
            ) => return Err(failed(e.to_string())),
            Err(e) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(failed(e.to_string()));
                }
                // The last wait ends at the deadline, for one more try there.
                let wait = delay.min(deadline - now);
                eprintln!("ocvault: warning: fetching {name}: {e}; retrying in {wait:?}");
                std::thread::sleep(wait);
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn fetch_once(g: &GlobalOptions, name: &str, dest: &std::path::Path) -> Result<Fetched> {
    let repo = g.open_full("fetch WAL")?;
    let indexed = repo.load_index()?;
    fetch::fetch(&indexed, name, dest)
}

/// Starts a detached `wal-fetch --prefetch-after NAME` unless one is running: it fills the
/// spool with the next segments while PostgreSQL replays this one. The repository and
/// password file reach it in its environment, never in its arguments.
fn start_prefetch(g: &GlobalOptions, name: &str, spool: &Spool, count: usize) {
    use std::os::unix::process::CommandExt;
    if count == 0 || spool.try_lock().is_none() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    for o in &g.options {
        cmd.arg("-o").arg(o);
    }
    cmd.arg("--backend-connections")
        .arg(g.backend_connections.to_string())
        .arg("wal-fetch")
        .arg("--prefetch-after")
        .arg(name)
        .arg("--spool")
        .arg(spool.dir())
        .arg("--prefetch")
        .arg(count.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    if let Some(repo) = &g.repo {
        cmd.env("OCVAULT_REPOSITORY", repo);
    }
    if let Some(f) = &g.password_file {
        cmd.env("OCVAULT_PASSWORD_FILE", f);
    }
    let _ = cmd.spawn();
}

/// Whether the arguments clap refused name `wal-fetch` as the command (parsed leniently, so
/// that bad arguments to it still give wal-fetch's exit status, and a path named `wal-fetch`
/// given to another command does not).
pub fn invoked() -> bool {
    use clap::CommandFactory;
    super::Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(std::env::args_os())
        .is_ok_and(|m| m.subcommand_name() == Some("wal-fetch"))
}

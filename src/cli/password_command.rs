//! `OCVAULT_PASSWORD_COMMAND`: runs it under a time limit, so a command that hangs (a
//! secrets agent that never answers) stops ocvault with one line instead of holding a cron job.

use ocvault::error::{Error, Result};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// How long the password command may run, unless `OCVAULT_PASSWORD_COMMAND_TIMEOUT` says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The limit from `OCVAULT_PASSWORD_COMMAND_TIMEOUT`: seconds, or a duration such as `90s`.
fn timeout() -> Result<Duration> {
    let Ok(v) = std::env::var("OCVAULT_PASSWORD_COMMAND_TIMEOUT") else {
        return Ok(DEFAULT_TIMEOUT);
    };
    let parsed = match v.trim().parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(v.trim()),
    };
    match parsed {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(Error::usage(format!(
            "OCVAULT_PASSWORD_COMMAND_TIMEOUT={v}: not a duration (seconds, or e.g. 90s)"
        ))),
    }
}

/// Runs `cmd` with `sh -c` in a process group of its own and returns its standard output.
/// Past the time limit the whole group is killed (the shell and whatever it started).
pub fn run(cmd: &str) -> Result<Zeroizing<Vec<u8>>> {
    run_named(cmd, "OCVAULT_PASSWORD_COMMAND")
}

/// [`run`], with `what` naming the command in errors (`--share-password-command`).
pub fn run_named(cmd: &str, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let limit = timeout()?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::other(format!("cannot run {what}: {e}")))?;
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    // The pipe is read on its own thread: a command that writes and then hangs, or leaves a
    // child holding the pipe open, must not block past the limit.
    std::thread::spawn(move || {
        let mut out = Zeroizing::new(Vec::new());
        let res = stdout.read_to_end(&mut out).map(|_| out);
        let _ = tx.send(res);
    });
    let deadline = Instant::now() + limit;
    let output = rx.recv_timeout(limit);
    let status = output.is_ok().then(|| wait_until(&mut child, deadline));
    match (output, status) {
        (Ok(Ok(out)), Some(Ok(Some(status)))) => {
            if !status.success() {
                return Err(Error::other(format!("{what} failed ({status})")));
            }
            Ok(out)
        }
        (Ok(Err(e)), _) | (_, Some(Err(e))) => {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            Err(Error::other(format!("cannot read {what}'s output: {e}")))
        }
        _ => {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            Err(Error::other(format!(
                "{what} did not finish within {} and was killed \
                 (OCVAULT_PASSWORD_COMMAND_TIMEOUT sets the limit)",
                humantime::format_duration(limit)
            )))
        }
    }
}

/// The child's exit status if it exits before `deadline`, else None.
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

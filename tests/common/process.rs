//! Child processes under a deadline: every command a test runs that could hang goes through
//! [`output_within`] or [`Running`], which kill the command's whole process group past its
//! time limit and fail the test naming the command and what it printed.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a command gets when the test gives no other limit.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// How long a finished command's output pipes may stay open (held by a detached child, such
/// as wal-fetch's prefetcher) before the output read so far is taken as all of it.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// A command started in a process group of its own with its output captured.
pub struct Running {
    child: Child,
    what: String,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

fn reader(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

impl Running {
    /// Starts `cmd` (standard input closed) in a new process group.
    pub fn spawn(cmd: &mut Command) -> Running {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            reader(child.stdout.take().unwrap(), stdout.clone()),
            reader(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Running {
            child,
            what,
            stdout,
            stderr,
            readers,
            status: None,
        }
    }

    /// The process id of the command (its process group id too).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL to the command's process group (no-op once it has been reaped).
    pub fn kill_group(&mut self) {
        if self.status.is_none() {
            // SAFETY: kill(2) with a negative pid signals the process group, which is ours.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        }
    }

    /// Waits until the command ends; past `limit` kills its group and fails the test.
    pub fn wait_within(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                self.kill_group();
                let _ = self.child.wait();
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "{} did not finish within {limit:?}; killed. stdout: {} stderr: {}",
                    self.what,
                    String::from_utf8_lossy(&self.stdout.lock().unwrap()),
                    String::from_utf8_lossy(&self.stderr.lock().unwrap())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.status = Some(status);
        let pipes_closed = Instant::now() + PIPE_GRACE;
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < pipes_closed {
            std::thread::sleep(Duration::from_millis(10));
        }
        Output {
            status,
            stdout: std::mem::take(&mut *self.stdout.lock().unwrap()),
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill_group();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to its end within `limit` (see [`Running::wait_within`]).
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    Running::spawn(cmd).wait_within(limit)
}

/// [`output_within`] and the command must succeed; returns its standard output.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> String {
    let what = format!("{cmd:?}");
    let out = output_within(cmd, limit);
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        describe(&out.status),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// "exit code N" or "signal N".
pub fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => format!("{status}"),
    }
}

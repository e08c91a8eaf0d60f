//! Work repeated on a timer beside a command (the backup marker's heartbeat, progress bars,
//! `--json` status lines): one thread per task that waits on a channel with a timeout, so
//! stopping it is immediate instead of waiting out a sleep, and nothing polls a stop flag.

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// A task run every `interval` until this handle is dropped; dropping stops it, runs its
/// `finish` step on the task's thread and waits for that to end.
pub struct Periodic {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Periodic {
    /// Runs `tick` every `interval` (first after one interval) on a thread named `name`.
    pub fn start(name: &str, interval: Duration, tick: impl FnMut() + Send + 'static) -> Periodic {
        Self::start_with_finish(name, interval, tick, || {})
    }

    /// Like `start`, and runs `finish` once when stopped (a progress bar clears itself).
    pub fn start_with_finish(
        name: &str,
        interval: Duration,
        mut tick: impl FnMut() + Send + 'static,
        finish: impl FnOnce() + Send + 'static,
    ) -> Periodic {
        let (stop, stopped) = bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                // The sender is never used to send: dropping it disconnects the channel.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    tick();
                }
                finish();
            })
            .expect("spawning a thread");
        Periodic {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn ticks_then_stops_at_once_and_finishes() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let (t, f) = (ticks.clone(), finished.clone());
        let p = Periodic::start_with_finish(
            "test",
            Duration::from_millis(10),
            move || {
                t.fetch_add(1, Ordering::SeqCst);
            },
            move || {
                f.fetch_add(1, Ordering::SeqCst);
            },
        );
        let started = Instant::now();
        while ticks.load(Ordering::SeqCst) < 3 {
            assert!(started.elapsed() < Duration::from_secs(10), "no ticks");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(p);
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        let after = ticks.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(ticks.load(Ordering::SeqCst), after, "ticked after drop");
    }

    #[test]
    fn drop_does_not_wait_for_the_interval() {
        let p = Periodic::start("test", Duration::from_secs(3600), || {});
        let started = Instant::now();
        drop(p);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

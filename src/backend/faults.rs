//! A fault-injecting layer for tests: fails a fraction of operations with transient errors,
//! adds latency, cuts writes short, or reports a full disk. Set with `-o fault.*` options.

use super::location::Options;
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    List,
    Delete,
}

/// What an injected fault does to one attempt.
pub enum Fault {
    /// Fail before anything happens, with this (transient or permanent) error.
    Fail(opendal::Error),
    /// Write the first part of the bytes under the final name, then fail: the worst a
    /// non-atomic store can do when a connection drops.
    Cut,
}

/// Faults injected in this process, reported at exit so tests can see the layer was active.
pub static INJECTED: AtomicU64 = AtomicU64::new(0);

pub struct Faults {
    read: f64,
    write: f64,
    list: f64,
    delete: f64,
    cut: f64,
    latency: Duration,
    no_space: bool,
    rng: Mutex<rand::rngs::StdRng>,
}

impl Faults {
    /// Reads `fault.*` options out of `opts`; `None` when there are none.
    pub fn from_options(opts: &mut Options) -> Result<Option<Faults>> {
        let keys: Vec<String> = opts
            .keys()
            .filter(|k| k.starts_with("fault."))
            .cloned()
            .collect();
        if keys.is_empty() {
            return Ok(None);
        }
        let mut f = Faults {
            read: 0.0,
            write: 0.0,
            list: 0.0,
            delete: 0.0,
            cut: 0.0,
            latency: Duration::ZERO,
            no_space: false,
            rng: Mutex::new(rand::rngs::StdRng::from_entropy()),
        };
        for k in keys {
            let v = opts.remove(&k).unwrap_or_default();
            let frac = || -> Result<f64> {
                let x: f64 = v
                    .trim_end_matches('%')
                    .parse()
                    .map_err(|_| Error::usage(format!("{k}={v}: not a number")))?;
                let x = if v.ends_with('%') { x / 100.0 } else { x };
                if !(0.0..=1.0).contains(&x) {
                    return Err(Error::usage(format!("{k}={v}: must be between 0 and 1")));
                }
                Ok(x)
            };
            match k.as_str() {
                "fault.all" => {
                    let x = frac()?;
                    (f.read, f.write, f.list, f.delete) = (x, x, x, x);
                }
                "fault.read" => f.read = frac()?,
                "fault.write" => f.write = frac()?,
                "fault.list" => f.list = frac()?,
                "fault.delete" => f.delete = frac()?,
                "fault.cut" => f.cut = frac()?,
                "fault.latency_ms" => {
                    f.latency = Duration::from_millis(
                        v.parse()
                            .map_err(|_| Error::usage(format!("{k}={v}: not a number")))?,
                    )
                }
                "fault.no_space" => f.no_space = matches!(v.as_str(), "1" | "true" | "yes"),
                "fault.seed" => {
                    let seed: u64 = v
                        .parse()
                        .map_err(|_| Error::usage(format!("{k}={v}: not a number")))?;
                    f.rng = Mutex::new(rand::rngs::StdRng::seed_from_u64(seed));
                }
                _ => return Err(Error::usage(format!("unknown fault option {k}"))),
            }
        }
        Ok(Some(f))
    }

    /// Decides the fate of one attempt; sleeps the configured latency first.
    pub async fn inject(&self, op: Op) -> Option<Fault> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if op == Op::Write && self.no_space {
            INJECTED.fetch_add(1, Ordering::Relaxed);
            return Some(Fault::Fail(opendal::Error::new(
                opendal::ErrorKind::Unexpected,
                "No space left on device (os error 28, injected)",
            )));
        }
        let p = match op {
            Op::Read => self.read,
            Op::Write => self.write,
            Op::List => self.list,
            Op::Delete => self.delete,
        };
        let (fail, cut) = {
            let mut rng = self.rng.lock().unwrap();
            (rng.gen_bool(p), rng.gen_bool(self.cut))
        };
        if !fail {
            return None;
        }
        INJECTED.fetch_add(1, Ordering::Relaxed);
        if op == Op::Write && cut {
            return Some(Fault::Cut);
        }
        Some(Fault::Fail(
            opendal::Error::new(
                opendal::ErrorKind::Unexpected,
                format!("injected {op:?} fault"),
            )
            .set_temporary(),
        ))
    }
}

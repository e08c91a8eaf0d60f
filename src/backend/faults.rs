//! A fault-injecting layer for tests: fails a fraction of operations with transient errors,
//! adds latency, cuts writes short, or reports a full disk. Set with `-o fault.*` options.
//! It wraps any storage; on a local repository it sits over the local writer that production
//! uses, spilled packs included.

use super::location::Options;
use super::storage::{DynStorage, Meta, ObjectClass, SpillFile, Storage, StorageResult};
use crate::error::{Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// What to inject, from the `fault.*` options.
pub struct FaultPlan {
    read: f64,
    write: f64,
    list: f64,
    delete: f64,
    cut: f64,
    latency: Duration,
    no_space: bool,
    rng: Mutex<rand::rngs::StdRng>,
}

impl FaultPlan {
    /// Reads `fault.*` options out of `opts`; `None` when there are none.
    pub fn from_options(opts: &mut Options) -> Result<Option<FaultPlan>> {
        let keys: Vec<String> = opts
            .keys()
            .filter(|k| k.starts_with("fault."))
            .cloned()
            .collect();
        if keys.is_empty() {
            return Ok(None);
        }
        let mut f = FaultPlan {
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

/// The layer: decides each attempt's fate by its `FaultPlan`, then passes it on.
pub struct Faults {
    inner: DynStorage,
    plan: FaultPlan,
}

impl Faults {
    pub fn wrap(inner: DynStorage, plan: FaultPlan) -> DynStorage {
        Arc::new(Faults { inner, plan })
    }

    /// Fails the attempt if the plan says so.
    async fn check(&self, op: Op) -> StorageResult<()> {
        match self.plan.inject(op).await {
            Some(Fault::Fail(e)) => Err(e),
            // Only writes are cut; elsewhere a cut is a plain failure.
            Some(Fault::Cut) => Err(cut_error()),
            None => Ok(()),
        }
    }

    /// A write's fate: `Ok(true)` when it is cut (the caller stores the first half of the
    /// bytes under the final name, then fails with `cut_error`).
    async fn check_write(&self) -> StorageResult<bool> {
        match self.plan.inject(Op::Write).await {
            None => Ok(false),
            Some(Fault::Fail(e)) => Err(e),
            Some(Fault::Cut) => Ok(true),
        }
    }

    async fn cut(&self, path: &str, bytes: Bytes, class: ObjectClass) -> StorageResult<()> {
        let _ = self
            .inner
            .write(path, bytes.slice(0..bytes.len() / 2), class)
            .await;
        Err(cut_error())
    }
}

fn cut_error() -> opendal::Error {
    opendal::Error::new(opendal::ErrorKind::Unexpected, "injected write cut short").set_temporary()
}

#[async_trait]
impl Storage for Faults {
    async fn read(&self, path: &str, range: Option<Range<u64>>) -> StorageResult<Vec<u8>> {
        self.check(Op::Read).await?;
        self.inner.read(path, range).await
    }

    async fn read_nearby(
        &self,
        path: &str,
        size: u64,
        range: Range<u64>,
    ) -> StorageResult<Vec<u8>> {
        self.check(Op::Read).await?;
        self.inner.read_nearby(path, size, range).await
    }

    async fn write(&self, path: &str, bytes: Bytes, class: ObjectClass) -> StorageResult<()> {
        if self.check_write().await? {
            return self.cut(path, bytes, class).await;
        }
        self.inner.write(path, bytes, class).await
    }

    fn spill_file(&self, name: &str) -> Option<std::io::Result<SpillFile>> {
        self.inner.spill_file(name)
    }

    async fn write_spilled(
        &self,
        path: &str,
        file: Arc<SpillFile>,
        class: ObjectClass,
    ) -> StorageResult<()> {
        if self.check_write().await? {
            let bytes = tokio::fs::read(file.path()).await.unwrap_or_default();
            return self.cut(path, Bytes::from(bytes), class).await;
        }
        self.inner.write_spilled(path, file, class).await
    }

    async fn delete(&self, path: &str) -> StorageResult<()> {
        self.check(Op::Delete).await?;
        self.inner.delete(path).await
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<(String, u64)>> {
        self.check(Op::List).await?;
        self.inner.list(prefix).await
    }

    async fn stat(&self, path: &str) -> StorageResult<Meta> {
        self.check(Op::Read).await?;
        self.inner.stat(path).await
    }
}

//! `init`: the checks on new repository settings, then the repository and its first log
//! entry.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::oplog::CommandLine;
use crate::repository::{InitOptions, Repository};

/// Refuses settings no repository should have, before anything is created.
pub fn check_settings(opts: &InitOptions) -> Result<()> {
    let c = &opts.chunker;
    let valid = (64..=1 << 20).contains(&c.min_size)
        && (256..=1 << 22).contains(&c.avg_size)
        && c.avg_size.is_power_of_two()
        && (1024..=1 << 24).contains(&c.max_size)
        && c.min_size < c.avg_size
        && c.avg_size < c.max_size;
    if !valid {
        return Err(Error::usage(
            "chunk sizes must satisfy 64 <= min < avg < max <= 16 MiB, avg a power of two",
        ));
    }
    Ok(())
}

/// Object Lock and storage classes need S3, and a lock needs a bucket with Object Lock
/// enabled (else every locked write would fail).
fn check_storage(backend: &Backend, opts: &InitOptions) -> Result<()> {
    let Some(lock) = opts.storage.lock else {
        return Ok(());
    };
    if lock.days == 0 {
        return Err(Error::usage("--lock-days must be at least 1"));
    }
    let Some(lifecycle) = backend.lifecycle() else {
        return Err(Error::usage(format!(
            "Object Lock needs an s3:// repository; {} is not one",
            backend.location()
        )));
    };
    let enabled = backend
        .runtime()
        .block_on(lifecycle.object_lock_enabled())
        .map_err(|e| Error::other(format!("cannot read the bucket's Object Lock setting: {e}")))?;
    if !enabled {
        return Err(Error::usage(format!(
            "the bucket of {} does not have Object Lock enabled (it can only be enabled when \
             the bucket is created, with versioning)",
            backend.location()
        )));
    }
    Ok(())
}

/// Data packs written straight into an archive class: every restore then waits for a thaw.
fn archive_class_warning(opts: &InitOptions) -> Option<String> {
    let class = opts.storage.data_storage_class.as_deref()?;
    crate::cold::is_archive_class(class).then(|| {
        format!(
            "data packs go straight to {class}: every restore will need `ocvault thaw` first \
             (hours); a lifecycle rule on the tag ocvault-pack=data keeps recent data readable"
        )
    })
}

/// An empty password protects nothing.
pub fn check_password(password: &[u8]) -> Result<()> {
    if password.is_empty() {
        return Err(Error::usage(
            "the password is empty: an empty password would let anyone read the repository",
        ));
    }
    Ok(())
}

/// Creates the repository; warnings (a failure to log its creation, data packs written
/// straight into an archive class) are the second value.
pub fn init(
    backend: Backend,
    password: &[u8],
    opts: &InitOptions,
    command_line: &CommandLine,
) -> Result<(Repository, Vec<String>)> {
    check_settings(opts)?;
    check_password(password)?;
    let mut opts = opts.clone();
    opts.storage.data_storage_class = backend.s3_settings().data_storage_class.clone();
    check_storage(&backend, &opts)?;
    let repo = Repository::init(backend, password, &opts)?;
    let mut warnings: Vec<String> = archive_class_warning(&opts).into_iter().collect();
    warnings.extend(match repo.write_session() {
        Ok(session) => crate::oplog::record_or_warn(&session, command_line, "init", "ok", vec![]),
        Err(e) => Some(format!("cannot write the operations log: {e}")),
    });
    Ok((repo, warnings))
}

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

/// An empty password protects nothing.
pub fn check_password(password: &[u8]) -> Result<()> {
    if password.is_empty() {
        return Err(Error::usage(
            "the password is empty: an empty password would let anyone read the repository",
        ));
    }
    Ok(())
}

/// Creates the repository; a failure to log its creation is the second value.
pub fn init(
    backend: Backend,
    password: &[u8],
    opts: &InitOptions,
    command_line: &CommandLine,
) -> Result<(Repository, Option<String>)> {
    check_settings(opts)?;
    check_password(password)?;
    let repo = Repository::init(backend, password, opts)?;
    let warning = match repo.write_session() {
        Ok(session) => crate::oplog::record_or_warn(&session, command_line, "init", "ok", vec![]),
        Err(e) => Some(format!("cannot write the operations log: {e}")),
    };
    Ok((repo, warning))
}

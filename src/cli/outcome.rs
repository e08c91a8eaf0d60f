//! How a command ended, and the one mapping from that (or an error) to the exit codes
//! documented in README.md ("Exit codes").

use ocvault::error::{exit, Error, Result};

/// How a command that did not fail ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// `snapshot` saved an incomplete snapshot, or `restore` left paths out.
    Incomplete,
    /// `check` found damage.
    Damage,
    /// `check --max-age`: a newest snapshot is too old (no damage).
    TooOld,
    /// `check --read-data`: data packs in cold storage were not read (no damage).
    Cold,
}

/// The exit code of a command's result: the only place outcomes and errors become codes.
pub fn exit_code(result: &Result<Outcome>) -> i32 {
    match result {
        Ok(Outcome::Success) => exit::OK,
        Ok(Outcome::Incomplete) => exit::INCOMPLETE,
        Ok(Outcome::Damage) => exit::DAMAGE,
        Ok(Outcome::TooOld) => exit::TOO_OLD,
        Ok(Outcome::Cold) => exit::COLD,
        Err(e) => match e {
            Error::NoRepository(_) | Error::NotOcvault { .. } => exit::NO_REPOSITORY,
            Error::WrongPassword | Error::ShareRefused(_) => exit::WRONG_PASSWORD,
            Error::UnsupportedVersion { .. }
            | Error::UnsupportedKeyFileVersion { .. }
            | Error::NeedsNewerFormat(_) => exit::UNSUPPORTED_VERSION,
            Error::Usage(_) => exit::USAGE,
            Error::Cold { .. } | Error::ColdRead(_) => exit::COLD,
            Error::WriteOnly(_) => exit::WRITE_ONLY,
            Error::WalFetchFailed { .. } => exit::WAL_FETCH_FAILED,
            Error::Interrupted("SIGINT") => exit::INTERRUPTED_SIGINT,
            Error::Interrupted(_) => exit::INTERRUPTED_SIGTERM,
            _ => exit::FATAL,
        },
    }
}

/// Prints the error of a failed command as one line and returns the exit code.
pub fn report(result: &Result<Outcome>) -> i32 {
    let Err(e) = result else {
        return exit_code(result);
    };
    // Whatever stopped the command after a signal (a reader cut off, a writer gone) is a
    // consequence of the signal: report that.
    if let Some(signal) = ocvault::interrupt::received() {
        let e = Error::Interrupted(signal);
        eprintln!("ocvault: {e}");
        return exit_code(&Err(e));
    }
    if matches!(e, Error::Usage(m) if m.is_empty()) {
        // A usage error clap has printed already.
        return exit_code(result);
    }
    eprintln!("ocvault: {}", one_line(&e.to_string()));
    if let Error::Cold { packs, .. } = e {
        for p in packs {
            eprintln!("  {p}");
        }
    }
    exit_code(result)
}

/// Turns clap's verdict into a result: help and version are printed and succeed; a value that
/// does not parse (a duration, size or percentage) becomes a one-line usage error naming the
/// option; other argument errors are printed as clap renders them (with usage), and the
/// usage error returned is empty so that [`report`] prints nothing more.
pub fn from_clap(e: clap::Error) -> Result<Outcome> {
    use clap::error::ErrorKind;
    if !e.use_stderr() {
        let _ = e.print();
        return Ok(Outcome::Success);
    }
    if e.kind() == ErrorKind::ValueValidation {
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        return Err(Error::usage(first.trim_start_matches("error: ")));
    }
    let _ = e.print();
    Err(Error::usage(""))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_packs_exit_13() {
        let pack = ocvault::cold::ColdPack {
            path: "data/ab/ab".into(),
            size: 3 << 20,
            storage_class: "GLACIER".into(),
            state: "cold",
        };
        let e = ocvault::cold::cold_error(vec![pack.clone(), pack]).for_snapshot("1234abcd");
        assert_eq!(
            e.to_string(),
            "2 packs (6.0 MiB) of snapshot 1234abcd are in cold storage: run `ocvault thaw 1234abcd` (then retry)"
        );
        assert_eq!(exit_code(&Err(e)), 13);
        assert_eq!(exit_code(&Ok(Outcome::Cold)), 13);
    }
}

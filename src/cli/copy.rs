use super::args::SelectionArgs;
use super::{GlobalOptions, Outcome};
use indicatif::HumanBytes;
use ocvault::backend::location::{StorageEnv, OWN_PREFIX};
use ocvault::backend::{Backend, BackendSettings};
use ocvault::commands::copy::{self, CopyOptions};
use ocvault::error::{Error, Result};
use ocvault::repository::Repository;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to copy; with --all, those the destination holds already are skipped
    #[command(flatten)]
    selection: SelectionArgs,
    /// Destination repository URL (same forms as --repo); its storage credentials, when
    /// they differ from the source's, in OCVAULT_TO_AWS_ACCESS_KEY_ID and friends
    #[arg(long = "to", env = "OCVAULT_TO_REPOSITORY", value_name = "URL")]
    pub(super) to: Option<String>,
    /// Destination password file; also OCVAULT_TO_PASSWORD_FILE, or OCVAULT_TO_PASSWORD
    #[arg(long, env = "OCVAULT_TO_PASSWORD_FILE", value_name = "FILE")]
    pub(super) to_password_file: Option<PathBuf>,
    /// Destination backend option KEY=VALUE (repeatable), as -o is for the source
    #[arg(long = "to-option", value_name = "KEY=VALUE")]
    pub(super) to_options: Vec<String>,
    /// A profile's to-password-command.
    #[arg(skip)]
    pub(super) to_password_command: Option<String>,
    /// A profile's to-env: the destination's non-secret storage variables.
    #[arg(skip)]
    pub(super) to_env: BTreeMap<String, String>,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let opts = CopyOptions {
        selection: a.selection.clone().selection(),
    };
    opts.selection.validate("copy", true)?;
    let to = a.to.clone().ok_or_else(|| {
        Error::usage("no destination: use --to, OCVAULT_TO_REPOSITORY or a profile's [copy] to")
    })?;
    // The destination is opened (its key derived, a fraction of a second of one core) while
    // the source is; it asks for no password on a terminal, so the two never interleave.
    std::thread::scope(|s| {
        let dst = s.spawn(|| open_destination(g, &to, &a));
        // Logged in the source too (a read of it); the destination logs what it gained.
        super::logged_read(
            g,
            "copy",
            "read snapshots to copy them",
            |src, snapshots| {
                ocvault::interrupt::install()?;
                let dst = dst
                    .join()
                    .map_err(|_| Error::other("opening the destination failed"))??;
                let (report, warning) = copy::copy(src, &dst, &opts, &super::command_line())?;
                super::warn_all(warning);
                snapshots.extend(
                    report
                        .copied
                        .iter()
                        .filter_map(|(s, _)| ocvault::SnapshotId::from_hex(s)),
                );
                print(g, &report);
                Ok(Outcome::Success)
            },
        )
    })
}

fn print(g: &GlobalOptions, report: &ocvault::copy::CopyReport) {
    if g.json {
        super::print_json(report);
    } else {
        for (s, d) in &report.copied {
            println!("copied {} -> {}", &s[..8], &d[..8]);
        }
        println!(
            "{} snapshots copied, {} already there; {} blobs read, {} blobs ({}) stored",
            report.copied.len(),
            report.skipped.len(),
            report.blobs_read,
            report.blobs_copied,
            HumanBytes(report.bytes_copied)
        );
        let w = &report.wal;
        if w.copied + w.present > 0 || !w.conflicts.is_empty() {
            println!(
                "{} WAL files copied, {} already there; {} blobs ({}) stored",
                w.copied,
                w.present,
                w.blobs_copied,
                HumanBytes(w.bytes_copied)
            );
        }
        for name in &w.conflicts {
            eprintln!(
                "ocvault: warning: WAL file {name} is in the destination with other content; left as it is"
            );
        }
    }
}

/// The destination repository, with its own options, password sources and, when any is
/// given, storage variables of its own.
fn open_destination(g: &GlobalOptions, url: &str, a: &Args) -> Result<Repository> {
    let backend = Backend::open_with(
        url,
        &BackendSettings {
            options: a.to_options.clone(),
            connections: g.backend_connections,
            cache_root: g.cache_dir.clone(),
            no_cache: g.no_cache,
            env: destination_env(std::env::vars(), &a.to_env),
        },
        false,
    )?;
    // Its storage errors name it: the source's look the same ("permission denied").
    Repository::probe(&backend).map_err(|e| match e {
        Error::Backend(msg) => Error::Backend(format!("destination {url}: {msg}")),
        e => e,
    })?;
    let pw = if let Ok(p) = std::env::var("OCVAULT_TO_PASSWORD") {
        zeroize::Zeroizing::new(p.into_bytes())
    } else if let Some(f) = &a.to_password_file {
        super::read_password_file(f)?
    } else if let Some(cmd) = &a.to_password_command {
        super::first_line(super::password_command::run_named(cmd, "to-password-command")?.to_vec())
    } else {
        return Err(Error::usage(
            "no destination password: use --to-password-file, OCVAULT_TO_PASSWORD_FILE or OCVAULT_TO_PASSWORD",
        ));
    };
    Repository::open(backend, &pw)
}

/// The destination's storage variables: `OCVAULT_TO_AWS_*` from the environment (as
/// `AWS_*`), over the profile's `to-env`. With neither, the destination shares the source's
/// environment (one account); with either, it sees only these, never the source's
/// credentials.
fn destination_env(
    process: impl Iterator<Item = (String, String)>,
    profile: &BTreeMap<String, String>,
) -> StorageEnv {
    let mut own = profile.clone();
    for (k, v) in process {
        if let Some(name) = k.strip_prefix(OWN_PREFIX).filter(|n| n.starts_with("AWS_")) {
            own.insert(name.to_string(), v);
        }
    }
    if own.is_empty() {
        StorageEnv::Process
    } else {
        StorageEnv::Own(own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_variables_are_its_own_only_when_given() {
        let none = destination_env(
            [("AWS_ACCESS_KEY_ID".to_string(), "src".to_string())].into_iter(),
            &BTreeMap::new(),
        );
        assert!(matches!(none, StorageEnv::Process));
        let profile = BTreeMap::from([("AWS_REGION".to_string(), "eu-west-1".to_string())]);
        let own = destination_env(
            [
                ("AWS_ACCESS_KEY_ID".to_string(), "src".to_string()),
                (
                    "OCVAULT_TO_AWS_ACCESS_KEY_ID".to_string(),
                    "dst".to_string(),
                ),
                ("OCVAULT_TO_PASSWORD".to_string(), "not storage".to_string()),
                ("OCVAULT_TO_AWS_REGION".to_string(), "us-east-2".to_string()),
            ]
            .into_iter(),
            &profile,
        );
        let StorageEnv::Own(vars) = own else {
            panic!("{own:?}")
        };
        assert_eq!(vars.len(), 2, "{:?}", vars.keys());
        assert_eq!(vars["AWS_ACCESS_KEY_ID"], "dst");
        // The environment wins over the profile.
        assert_eq!(vars["AWS_REGION"], "us-east-2");
    }
}

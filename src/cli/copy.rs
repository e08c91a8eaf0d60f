use super::args::SelectionArgs;
use super::{GlobalOptions, Outcome};
use indicatif::HumanBytes;
use ocvault::backend::{Backend, BackendSettings};
use ocvault::commands::copy::{self, CopyOptions};
use ocvault::error::{Error, Result};
use ocvault::repository::Repository;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to copy; with --all, those the destination holds already are skipped
    #[command(flatten)]
    selection: SelectionArgs,
    /// Destination repository URL (same forms as --repo)
    #[arg(long = "to", env = "OCVAULT_TO_REPOSITORY", value_name = "URL")]
    to: String,
    /// Destination password file; also OCVAULT_TO_PASSWORD_FILE, or OCVAULT_TO_PASSWORD
    #[arg(long, env = "OCVAULT_TO_PASSWORD_FILE", value_name = "FILE")]
    to_password_file: Option<PathBuf>,
    /// Destination backend option KEY=VALUE (repeatable), as -o is for the source
    #[arg(long = "to-option", value_name = "KEY=VALUE")]
    to_options: Vec<String>,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let opts = CopyOptions {
        selection: a.selection.selection(),
    };
    opts.selection.validate("copy", true)?;
    // Logged in the source too (a read of it); the destination logs what it gained.
    super::logged_read(
        g,
        "copy",
        "read snapshots to copy them",
        |src, snapshots| {
            ocvault::interrupt::install()?;
            let dst = open_destination(g, &a.to, &a.to_options, a.to_password_file.as_deref())?;
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

/// The destination repository, with its own options and password sources.
fn open_destination(
    g: &GlobalOptions,
    url: &str,
    options: &[String],
    password_file: Option<&std::path::Path>,
) -> Result<Repository> {
    let backend = Backend::open_with(
        url,
        &BackendSettings {
            options: options.to_vec(),
            connections: g.backend_connections,
            cache_root: g.cache_dir.clone(),
            no_cache: g.no_cache,
        },
        false,
    )?;
    Repository::probe(&backend)?;
    let pw = match (std::env::var("OCVAULT_TO_PASSWORD"), password_file) {
        (Ok(p), _) => zeroize::Zeroizing::new(p.into_bytes()),
        (Err(_), Some(f)) => super::read_password_file(f)?,
        (Err(_), None) => {
            return Err(Error::usage(
                "no destination password: use --to-password-file, OCVAULT_TO_PASSWORD_FILE or OCVAULT_TO_PASSWORD",
            ))
        }
    };
    Repository::open(backend, &pw)
}

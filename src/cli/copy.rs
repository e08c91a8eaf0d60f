use super::GlobalOptions;
use crate::backend::{Backend, BackendSettings};
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::snapshot::SnapshotFilter;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to copy (ids, unique prefixes or `latest`); see also --all
    ids: Vec<String>,
    /// Copy every snapshot (those the destination holds already are skipped)
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// With --all: only snapshots of this host (repeatable)
    #[arg(long = "host", requires = "all")]
    hosts: Vec<String>,
    /// With --all: only snapshots with this tag (repeatable: all must match)
    #[arg(long = "tag", requires = "all")]
    tags: Vec<String>,
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

pub fn run(g: &GlobalOptions, a: Args) -> Result<i32> {
    if a.ids.is_empty() && !a.all {
        return Err(Error::usage("copy needs snapshot ids or --all"));
    }
    let src = g.open()?;
    crate::interrupt::install()?;
    let dst_backend = Backend::open_with(
        &a.to,
        &BackendSettings {
            options: a.to_options.clone(),
            connections: g.backend_connections,
        },
        false,
    )?;
    Repository::probe(&dst_backend)?;
    let pw = match (std::env::var("OCVAULT_TO_PASSWORD"), &a.to_password_file) {
        (Ok(p), _) => zeroize::Zeroizing::new(p.into_bytes()),
        (Err(_), Some(f)) => super::read_password_file(f)?,
        (Err(_), None) => {
            return Err(Error::usage(
                "no destination password: use --to-password-file, OCVAULT_TO_PASSWORD_FILE or OCVAULT_TO_PASSWORD",
            ))
        }
    };
    let dst = Repository::open(dst_backend, &pw)?;
    let snaps = src.list_snapshots()?;
    let selected: Vec<_> = if a.all {
        let filter = SnapshotFilter {
            hosts: a.hosts,
            tags: a.tags,
            paths: vec![],
        };
        snaps
            .iter()
            .filter(|(_, s)| filter.matches(s))
            .cloned()
            .collect()
    } else {
        a.ids
            .iter()
            .map(|spec| crate::snapshot::resolve(&snaps, spec).cloned())
            .collect::<Result<_>>()?
    };
    let src = src.load_index()?;
    let mut dst = dst.load_index()?;
    let session = dst.write_session()?;
    let report = match crate::copy::copy(&src, &session, &selected) {
        Ok(r) => r,
        Err(e) => {
            crate::oplog::record(&session, "copy", "failed", vec![]);
            return Err(e);
        }
    };
    let new_ids = report
        .copied
        .iter()
        .filter_map(|(_, d)| crate::id::SnapshotId::from_hex(d))
        .collect();
    crate::oplog::record(&session, "copy", "ok", new_ids);
    if g.json {
        super::print_json(&report);
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
            super::human_bytes(report.bytes_copied)
        );
    }
    Ok(0)
}

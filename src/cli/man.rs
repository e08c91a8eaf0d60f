//! `ocvault man DIR`: one man page per command (`ocvault.1`, `ocvault-snapshot.1`,
//! `ocvault-key-add.1`, ...), generated from the clap definition.

use super::Outcome;
use clap::CommandFactory;
use ocvault::error::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Folder to write the pages into (created if missing)
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

pub fn run(a: Args) -> Result<Outcome> {
    std::fs::create_dir_all(&a.dir).map_err(|e| Error::io(&a.dir, e))?;
    let mut cmd = super::Cli::command();
    // Propagates global options into every subcommand, so each page lists them.
    cmd.build();
    let written = write_pages(&a.dir, &cmd, "ocvault")?;
    println!("wrote {written} man pages to {}", a.dir.display());
    Ok(Outcome::Success)
}

/// Writes `name.1` for `cmd` and, recursively, `name-SUB.1` for its subcommands; returns how
/// many pages were written.
fn write_pages(dir: &Path, cmd: &clap::Command, name: &str) -> Result<usize> {
    let page = cmd.clone().name(name.to_string());
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut text)
        .map_err(|e| Error::other(format!("cannot render the man page of {name}: {e}")))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    let mut written = 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        written += write_pages(dir, sub, &format!("{name}-{}", sub.get_name()))?;
    }
    Ok(written)
}

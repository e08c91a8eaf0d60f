use super::{GlobalOptions, Outcome};
use ocvault::commands::key::{self, KeyInfo, NewKey};
use ocvault::error::{Error, Result};
use ocvault::repository::InitOptions;
use zeroize::Zeroizing;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// List the key files (one per password)
    List,
    /// Add a password: a new key file for the same master key
    Add(NewPassword),
    /// Remove a key file (not the one in use, not the last)
    Remove {
        /// Key id or unique prefix
        id: String,
    },
    /// Change the password in use: add a key with the new password, remove the current one
    Passwd(NewPassword),
    /// Split the master key into N share files, any M of which open the repository
    /// (passwords from --share-password-file, one per share in order, or prompts)
    Split(SplitArgs),
}

#[derive(clap::Args)]
struct SplitArgs {
    /// Number of share files (N, at most 255)
    #[arg(long = "shares", value_name = "N")]
    count: u32,
    /// Shares needed to open the repository (M, 2..=N)
    #[arg(long, value_name = "M")]
    threshold: u32,
    /// Folder for the share files share-<i>-of-<N>.ocvshare (existing files are not overwritten)
    #[arg(long, value_name = "DIR")]
    out_dir: std::path::PathBuf,
    /// Argon2id memory in KiB for each share file; default: that of the key in use
    #[arg(long)]
    kdf_memory_kib: Option<u32>,
    /// Argon2id iterations for each share file; default: those of the key in use
    #[arg(long)]
    kdf_iterations: Option<u32>,
}

#[derive(clap::Args)]
struct NewPassword {
    /// Read the new password from this file (first line); otherwise prompt on a terminal
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<std::path::PathBuf>,
    /// Argon2id memory in KiB for the new key file
    #[arg(long, default_value_t = InitOptions::default().kdf_memory_kib)]
    kdf_memory_kib: u32,
    /// Argon2id iterations for the new key file
    #[arg(long, default_value_t = InitOptions::default().kdf_iterations)]
    kdf_iterations: u32,
    /// A write-only key, for backup hosts: it can run snapshot, wal-push and check (without
    /// --read-data) but never read file contents, file names or trees back
    #[arg(long)]
    write_only: bool,
}

impl NewPassword {
    /// The new password, from the file or a terminal prompt.
    fn read(&self) -> Result<Zeroizing<Vec<u8>>> {
        if let Some(f) = &self.new_password_file {
            return super::read_password_file(f);
        }
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            let a = Zeroizing::new(
                rpassword::prompt_password("new password: ")
                    .map_err(|e| Error::other(e.to_string()))?,
            );
            let b = Zeroizing::new(
                rpassword::prompt_password("new password again: ")
                    .map_err(|e| Error::other(e.to_string()))?,
            );
            if *a != *b {
                return Err(Error::usage("the two passwords differ"));
            }
            return Ok(Zeroizing::new(a.as_bytes().to_vec()));
        }
        Err(Error::usage(
            "give the new password with --new-password-file (no terminal to prompt on)",
        ))
    }

    fn new_key<'a>(&self, password: &'a [u8]) -> NewKey<'a> {
        NewKey {
            password,
            kdf_memory_kib: self.kdf_memory_kib,
            kdf_iterations: self.kdf_iterations,
            write_only: self.write_only,
        }
    }
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    if let Action::Split(s) = a.action {
        return split(g, s);
    }
    let repo = g.open()?;
    let log = super::command_line();
    let change = match a.action {
        Action::List => {
            print_list(g.json, &key::list(&repo)?);
            return Ok(Outcome::Success);
        }
        Action::Add(np) => key::add(&repo, &np.new_key(&np.read()?), &log)?,
        Action::Remove { id } => key::remove(&repo, &id, &log)?,
        Action::Passwd(np) => key::passwd(&repo, &np.new_key(&np.read()?), &log)?,
        Action::Split(_) => unreachable!("handled above"),
    };
    super::warn_all(&change.warnings);
    match (change.added, change.removed) {
        (Some(new), Some(old)) => println!(
            "password changed: key {} replaces {}",
            new.short(),
            old.short()
        ),
        (Some(new), None) => println!(
            "added {}key {}",
            if change.write_only { "write-only " } else { "" },
            new.short()
        ),
        (None, Some(old)) => println!("removed key {}", old.short()),
        (None, None) => {}
    }
    Ok(Outcome::Success)
}

fn print_list(json: bool, keys: &[KeyInfo]) {
    if json {
        let v: Vec<_> = keys
            .iter()
            .map(|k| {
                serde_json::json!({"id": k.id.to_hex(), "current": k.current, "kdf": "argon2id", "memory_kib": k.memory_kib, "iterations": k.iterations, "parallelism": k.parallelism, "write_only": k.write_only})
            })
            .collect();
        super::print_json(&v);
        return;
    }
    for k in keys {
        println!(
            "{} {}  argon2id m={} KiB t={} p={}{}",
            if k.current { "*" } else { " " },
            k.id.short(),
            k.memory_kib,
            k.iterations,
            k.parallelism,
            if k.write_only { "  write-only" } else { "" }
        );
    }
}

/// `key split`: the counts are checked before any password is asked for.
fn split(g: &GlobalOptions, a: SplitArgs) -> Result<Outcome> {
    let (threshold, count) = ocvault::shares::check_split_counts(a.threshold, a.count)?;
    if !g.shares.is_empty() {
        return Err(Error::usage(
            "key split opens the repository with a password, not with shares",
        ));
    }
    let repo = g.open_full("split the key into shares")?;
    let passwords = g.share_passwords(count as usize, "key split --shares")?;
    let in_use = key::list(&repo)?.into_iter().find(|k| k.current);
    let defaults = InitOptions::default();
    let (paths, warnings) = key::split(
        &repo,
        &ocvault::shares::SplitOptions {
            threshold,
            count,
            passwords: &passwords,
            kdf_memory_kib: a
                .kdf_memory_kib
                .or(in_use.as_ref().map(|k| k.memory_kib))
                .unwrap_or(defaults.kdf_memory_kib),
            kdf_iterations: a
                .kdf_iterations
                .or(in_use.as_ref().map(|k| k.iterations))
                .unwrap_or(defaults.kdf_iterations),
            out_dir: &a.out_dir,
        },
        &super::command_line(),
    )?;
    super::warn_all(&warnings);
    if g.json {
        super::print_json(&serde_json::json!({"threshold": threshold, "shares": paths}));
    } else {
        for p in &paths {
            println!("wrote {}", p.display());
        }
        println!("any {threshold} of these {count} shares open the repository");
    }
    Ok(Outcome::Success)
}

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
        }
    }
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
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
    };
    super::warn_all(&change.warnings);
    match (change.added, change.removed) {
        (Some(new), Some(old)) => println!(
            "password changed: key {} replaces {}",
            new.short(),
            old.short()
        ),
        (Some(new), None) => println!("added key {}", new.short()),
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
                serde_json::json!({"id": k.id.to_hex(), "current": k.current, "kdf": "argon2id", "memory_kib": k.memory_kib, "iterations": k.iterations, "parallelism": k.parallelism})
            })
            .collect();
        super::print_json(&v);
        return;
    }
    for k in keys {
        println!(
            "{} {}  argon2id m={} KiB t={} p={}",
            if k.current { "*" } else { " " },
            k.id.short(),
            k.memory_kib,
            k.iterations,
            k.parallelism
        );
    }
}

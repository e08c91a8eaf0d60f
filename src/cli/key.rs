use super::GlobalOptions;
use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::repository::{self, InitOptions};
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
    /// Wraps the repository's master key under the new password in a new key file.
    fn write_key(&self, session: &crate::session::WriteSession) -> Result<crate::Id> {
        let pw = self.read()?;
        session.add_key(&pw, self.kdf_memory_kib, self.kdf_iterations)
    }

    fn read(&self) -> Result<Zeroizing<Vec<u8>>> {
        if let Some(f) = &self.new_password_file {
            let p = super::read_password_file(f)?;
            if p.is_empty() {
                return Err(Error::usage("the new password is empty"));
            }
            return Ok(p);
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
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let keys = repo.backend().list_ids(FileKind::Key)?;
    match a.action {
        Action::List => {
            let mut rows = Vec::new();
            for (id, _) in &keys {
                let bytes = repo.backend().read(&FileKind::Key.path(id))?;
                let kf = repository::decode_key_file(&bytes)?;
                rows.push((id, kf, *id == repo.key_id()));
            }
            if g.json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(id, kf, cur)| {
                        serde_json::json!({"id": id.to_hex(), "current": cur, "kdf": "argon2id", "memory_kib": kf.kdf.memory_kib, "iterations": kf.kdf.iterations, "parallelism": kf.kdf.parallelism})
                    })
                    .collect();
                super::print_json(&v);
            } else {
                for (id, kf, cur) in rows {
                    println!(
                        "{} {}  argon2id m={} KiB t={} p={}",
                        if cur { "*" } else { " " },
                        id.short(),
                        kf.kdf.memory_kib,
                        kf.kdf.iterations,
                        kf.kdf.parallelism
                    );
                }
            }
        }
        Action::Add(np) => {
            let session = repo.write_session()?;
            let id = np.write_key(&session)?;
            crate::oplog::record(&session, "key add", "ok", vec![]);
            println!("added key {}", id.short());
        }
        Action::Remove { id } => {
            let want = id.to_ascii_lowercase();
            let matches: Vec<_> = keys
                .iter()
                .filter(|(k, _)| k.to_hex().starts_with(&want))
                .collect();
            let (kid, _) = match matches.len() {
                1 => matches[0],
                0 => return Err(Error::usage(format!("no key with id {id}"))),
                _ => return Err(Error::usage(format!("key id prefix {id} is ambiguous"))),
            };
            if keys.len() == 1 {
                return Err(Error::usage(
                    "refusing to remove the last key: the repository could never be opened again",
                ));
            }
            if *kid == repo.key_id() {
                return Err(Error::usage("refusing to remove the key in use; open the repository with another password to remove it"));
            }
            let session = repo.write_session()?;
            session.delete_key(kid)?;
            crate::oplog::record(&session, "key remove", "ok", vec![]);
            println!("removed key {}", kid.short());
        }
        Action::Passwd(np) => {
            let session = repo.write_session()?;
            let id = np.write_key(&session)?;
            session.delete_key(&repo.key_id())?;
            crate::oplog::record(&session, "key passwd", "ok", vec![]);
            println!(
                "password changed: key {} replaces {}",
                id.short(),
                repo.key_id().short()
            );
        }
    }
    Ok(0)
}

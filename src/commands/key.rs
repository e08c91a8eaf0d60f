//! `key`: the key files (one per password) and the rules that keep the repository openable:
//! never remove the last key, nor the one in use.

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::oplog::CommandLine;
use crate::repository::{self, Repository};
use crate::session::WriteSession;

/// One key file, as `key list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: Id,
    /// The key that opened the repository.
    pub current: bool,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// A write-only key (key file version 2): can back up, cannot read back.
    pub write_only: bool,
}

/// A new password and the Argon2id cost of its key file.
pub struct NewKey<'a> {
    pub password: &'a [u8],
    pub kdf_memory_kib: u32,
    pub kdf_iterations: u32,
    /// A write-only key: it can store snapshots but never read file contents or names.
    pub write_only: bool,
}

/// What a key change did.
#[derive(Clone, Debug, Default)]
pub struct KeyChange {
    pub added: Option<Id>,
    pub removed: Option<Id>,
    /// The added key is write-only.
    pub write_only: bool,
    pub warnings: Vec<String>,
}

pub fn list(repo: &Repository) -> Result<Vec<KeyInfo>> {
    let mut out = Vec::new();
    for (id, _) in repo.backend().list_ids(FileKind::Key)? {
        let kf = repository::decode_key_file(&repo.backend().read(&FileKind::Key.path(&id))?)?;
        out.push(KeyInfo {
            id,
            current: id == repo.key_id(),
            memory_kib: kf.kdf.memory_kib,
            iterations: kf.kdf.iterations,
            parallelism: kf.kdf.parallelism,
            write_only: kf.version == crate::format::KEY_FILE_VERSION_WRITE_ONLY,
        });
    }
    Ok(out)
}

/// Adds a key file for the same master key under a new password.
pub fn add(repo: &Repository, new: &NewKey, command_line: &CommandLine) -> Result<KeyChange> {
    let (session, id) = write(repo, new)?;
    Ok(KeyChange {
        added: Some(id),
        removed: None,
        write_only: new.write_only,
        warnings: log(
            &session,
            command_line,
            if new.write_only {
                "key add --write-only"
            } else {
                "key add"
            },
        ),
    })
}

/// Removes the key whose id starts with `prefix`: not the last key, not the one in use.
pub fn remove(repo: &Repository, prefix: &str, command_line: &CommandLine) -> Result<KeyChange> {
    repo.require_full_key("manage keys")?;
    let keys = repo.backend().list_ids(FileKind::Key)?;
    let want = prefix.to_ascii_lowercase();
    let matches: Vec<Id> = keys
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| k.to_hex().starts_with(&want))
        .collect();
    let id = match matches[..] {
        [id] => id,
        [] => return Err(Error::usage(format!("no key with id {prefix}"))),
        _ => return Err(Error::usage(format!("key id prefix {prefix} is ambiguous"))),
    };
    // Opened with key shares, the last key file may go: the shares just opened the
    // repository and keep doing so (the full key removed from day-to-day use).
    if keys.len() == 1 && !opened_with_shares(repo) {
        return Err(Error::usage(
            "refusing to remove the last key: the repository could never be opened again",
        ));
    }
    if id == repo.key_id() {
        return Err(Error::usage("refusing to remove the key in use; open the repository with another password to remove it"));
    }
    let session = repo.write_session()?;
    session.delete_key(&id)?;
    Ok(KeyChange {
        added: None,
        removed: Some(id),
        write_only: false,
        warnings: log(&session, command_line, "key remove"),
    })
}

/// Replaces the key in use by one under a new password (added first, so a failure in between
/// leaves both).
pub fn passwd(repo: &Repository, new: &NewKey, command_line: &CommandLine) -> Result<KeyChange> {
    if opened_with_shares(repo) {
        return Err(Error::usage(
            "key passwd replaces the password in use, and key shares opened the repository: use key add",
        ));
    }
    if new.write_only {
        return Err(Error::usage(
            "key passwd keeps the kind of the key in use; add a write-only key with key add --write-only",
        ));
    }
    let (session, id) = write(repo, new)?;
    session.delete_key(&repo.key_id())?;
    Ok(KeyChange {
        added: Some(id),
        removed: Some(repo.key_id()),
        write_only: false,
        warnings: log(&session, command_line, "key passwd"),
    })
}

/// Adds the key file in a write session, which the caller goes on with.
fn write<'r>(repo: &'r Repository, new: &NewKey) -> Result<(WriteSession<'r>, Id)> {
    if new.password.is_empty() {
        return Err(Error::usage("the new password is empty"));
    }
    repo.require_full_key("manage keys")?;
    if new.write_only && repo.config().version < 4 {
        return Err(Error::NeedsNewerFormat(format!(
            "write-only keys need repository format version 4; this repository is version {} \
             (make a new one with `ocvault init` and `copy` into it)",
            repo.config().version
        )));
    }
    let session = repo.write_session()?;
    let id = session.add_key(
        new.write_only,
        new.password,
        new.kdf_memory_kib,
        new.kdf_iterations,
    )?;
    Ok((session, id))
}

fn log(session: &WriteSession, command_line: &CommandLine, operation: &str) -> Vec<String> {
    crate::oplog::record_or_warn(session, command_line, operation, "ok", vec![])
        .into_iter()
        .collect()
}

/// Whether key shares opened the repository (no key file did).
fn opened_with_shares(repo: &Repository) -> bool {
    repo.key_id() == Id::default()
}

/// `key split`: writes the share files (outside the repository) and logs the split.
pub fn split(
    repo: &Repository,
    opts: &crate::shares::SplitOptions,
    command_line: &CommandLine,
) -> Result<(Vec<std::path::PathBuf>, Vec<String>)> {
    let paths = crate::shares::split(repo, opts)?;
    let session = repo.write_session()?;
    let result = format!("ok: {} of {} shares", opts.threshold, opts.count);
    let warnings =
        crate::oplog::record_or_warn(&session, command_line, "key split", &result, vec![])
            .into_iter()
            .collect();
    Ok((paths, warnings))
}

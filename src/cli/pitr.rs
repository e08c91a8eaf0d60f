use super::{GlobalOptions, Outcome};
use ocvault::commands::pitr::{self, PitrOptions, PitrTarget};
use ocvault::error::{Error, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Recover to this moment, with its zone: '2026-12-02 03:30:00+00'
    #[arg(
        long,
        value_name = "TIME",
        required_unless_present = "latest",
        conflicts_with = "latest"
    )]
    time: Option<String>,
    /// Recover to the end of the archived WAL
    #[arg(long)]
    latest: bool,
    /// The new data folder (absent or empty)
    #[arg(long, value_name = "DIR")]
    target: PathBuf,
    /// Recover from this base backup snapshot instead of the newest one before the target
    #[arg(long, value_name = "ID")]
    base: Option<String>,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let target = match &a.time {
        Some(t) => PitrTarget::Time(pitr::parse_target_time(t)?, t.clone()),
        None => PitrTarget::Latest,
    };
    let restore_command = restore_command(g)?;
    let opts = PitrOptions {
        target: target.clone(),
        base: a.base,
    };
    let repo = g.open_full("restore a database")?;
    let indexed = repo.load_index()?;
    let plan = pitr::plan(&indexed, &opts)?;
    let bytes = pitr::unpack_base(&indexed, &plan, &a.target)?;
    pitr::write_recovery_settings(&a.target, &restore_command, &target, &plan.base_id)?;
    if g.json {
        super::print_json(&serde_json::json!({
            "base": plan.base_id.to_hex(),
            "target": a.target,
            "bytes": bytes,
            "newest_wal": plan.newest_wal.as_ref().map(|(n, _)| n),
        }));
    } else {
        println!(
            "restored base backup {} ({}) into {}",
            plan.base_id.short(),
            pitr::describe(&plan.base),
            a.target.display()
        );
        if let Some((name, _)) = &plan.newest_wal {
            println!("newest archived WAL: {name}");
        }
        println!(
            "start the server as the database owner to replay the WAL and promote:\n  pg_ctl -D {} start",
            a.target.display()
        );
    }
    Ok(Outcome::Success)
}

/// `restore_command` for the recovered server: this executable, this repository, the password
/// file (a path, never the password); each word quoted for the shell PostgreSQL runs it with.
fn restore_command(g: &GlobalOptions) -> Result<String> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::other(format!("cannot find this executable: {e}")))?;
    let url = g.repo_url()?;
    if ocvault::oplog::redact(url) != url {
        return Err(Error::usage(
            "the repository URL holds a password, which would end up in postgresql.auto.conf: give it to the server in its environment instead",
        ));
    }
    let mut words = vec![
        exe.to_string_lossy().into_owned(),
        "-r".into(),
        url.to_string(),
    ];
    match &g.password_file {
        Some(f) => {
            let abs = std::path::absolute(f).map_err(|e| Error::io(f, e))?;
            words.extend(["--password-file".into(), abs.to_string_lossy().into_owned()]);
        }
        None => eprintln!(
            "ocvault: warning: no --password-file given: the server needs OCVAULT_PASSWORD_FILE or OCVAULT_PASSWORD_COMMAND in its environment to run restore_command"
        ),
    }
    for o in &g.options {
        words.extend(["-o".into(), o.clone()]);
    }
    words.push("-q".into());
    words.push("wal-fetch".into());
    let mut cmd = shell_words::join(&words);
    cmd.push_str(" %f %p");
    Ok(cmd)
}

use super::{GlobalOptions, Outcome};
use ocvault::error::{Error, Result};
use ocvault::wal::name::is_plain_file_name;
use ocvault::wal::push::{self, Pushed, WalFile};
use ocvault::wal::spool::PushedMarks;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The WAL file to archive (`%p` in archive_command)
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// Archive up to this many files per call: PATH and the oldest others PostgreSQL has
    /// marked ready (archive_status/*.ready), so a busy server pays the start-up once
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    batch: u32,
}

pub fn run(g: &GlobalOptions, a: Args) -> Result<Outcome> {
    let name = a
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| is_plain_file_name(n))
        .ok_or_else(|| Error::usage(format!("{}: not a WAL file name", a.path.display())))?
        .to_string();
    let pg_wal = a
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let marks = PushedMarks::new(&pg_wal, g.repo_url()?);
    if marks.pushed_unchanged(&name, &a.path) {
        // Pushed in an earlier call's batch: PostgreSQL only needs to hear it is safe.
        return Ok(Outcome::Success);
    }
    let mut files = vec![WalFile {
        name: name.clone(),
        path: a.path.clone(),
    }];
    files.extend(ready_files(&pg_wal, &name, a.batch as usize - 1, &marks));

    let repo = g.open()?;
    let mut indexed = repo.load_index()?;
    let session = indexed.write_session()?;
    let report = push::push(&session, &files);
    let command_line = super::command_line();
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            ocvault::oplog::record_failure(&session, &command_line, "wal-push", &e);
            return Err(e);
        }
    };
    let mut outcome = Ok(Outcome::Success);
    let mut archived = 0;
    for ((file_name, result), file) in report.results.into_iter().zip(&files) {
        match result {
            Ok((pushed, hash)) => {
                archived += 1;
                if pushed == Pushed::Stored && !g.quiet && !g.json {
                    eprintln!("ocvault: archived {file_name}");
                }
                marks.record(&file_name, &file.path, &hash);
            }
            Err(e) if file_name == name => outcome = Err(e),
            Err(e) => super::warn_all([e]),
        }
    }
    let result = match &outcome {
        Ok(_) => format!("ok: {archived} files, {} bytes added", report.bytes_added),
        Err(e) => format!("error: {e}"),
    };
    if let Some(w) =
        ocvault::oplog::record_or_warn(&session, &command_line, "wal-push", &result, Vec::new())
    {
        super::warn_all([w]);
    }
    drop(session);
    marks.forget_removed(&pg_wal);
    if g.json {
        super::print_json(&serde_json::json!({
            "name": name,
            "files": archived,
            "bytes_added": report.bytes_added,
            "blobs_added": report.blobs_added,
        }));
    }
    outcome
}

/// Up to `limit` other files PostgreSQL has marked ready, oldest first (WAL names sort in
/// WAL order within a timeline), leaving out those already pushed.
fn ready_files(pg_wal: &Path, own: &str, limit: usize, marks: &PushedMarks) -> Vec<WalFile> {
    let Ok(rd) = std::fs::read_dir(pg_wal.join("archive_status")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let n = n.strip_suffix(".ready")?.to_string();
            (n != own && is_plain_file_name(&n)).then_some(n)
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| WalFile {
            path: pg_wal.join(&n),
            name: n,
        })
        .filter(|f| f.path.is_file() && !marks.has(&f.name))
        .take(limit)
        .collect()
}

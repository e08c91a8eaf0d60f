//! `--metrics-file PATH`: after `snapshot`, `check`, `forget` and `prune`, the Prometheus
//! text format for node_exporter's textfile collector. Each command owns its series (those
//! labelled with its name, and its own families); a run replaces them and keeps every other
//! series in the file, so one file holds the state of the whole daily job. The file is
//! replaced atomically (a temporary file in the same folder, renamed), under a lock so that
//! two commands ending at once do not lose each other's series.

use ocvault::checker::{CheckReport, NewestSnapshot};
use ocvault::commands::forget::ForgetResult;
use ocvault::error::{Error, Result};
use ocvault::prune::PruneReport;
use ocvault::repository::Repository;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

/// Whose samples a family holds, which decides what a run replaces.
#[derive(Clone, Copy, PartialEq)]
enum Owner {
    /// Labelled `command="..."`: a run replaces its own command's sample only.
    EachCommand,
    /// One command's (or the repository's) state: a run that records it replaces it whole.
    Whole,
}

struct Family {
    name: &'static str,
    help: &'static str,
    owner: Owner,
}

const fn family(name: &'static str, help: &'static str, owner: Owner) -> Family {
    Family { name, help, owner }
}

/// Every series ocvault writes (all gauges), in the order they are written.
const FAMILIES: &[Family] = &[
    family(
        "ocvault_last_success_timestamp_seconds",
        "When the command last exited 0 (Unix time).",
        Owner::EachCommand,
    ),
    family(
        "ocvault_last_run_timestamp_seconds",
        "When the command last ended, whatever its exit code (Unix time).",
        Owner::EachCommand,
    ),
    family(
        "ocvault_last_exit_code",
        "Exit code of the command's last run (README, Exit codes).",
        Owner::EachCommand,
    ),
    family(
        "ocvault_duration_seconds",
        "How long the command's last run took.",
        Owner::EachCommand,
    ),
    family(
        "ocvault_snapshot_bytes_added",
        "Bytes the last snapshot added to the repository (new packs).",
        Owner::Whole,
    ),
    family(
        "ocvault_snapshot_files",
        "Files of the last snapshot, by whether they were new, changed or unmodified.",
        Owner::Whole,
    ),
    family(
        "ocvault_snapshot_errors",
        "Sources the last snapshot could not read.",
        Owner::Whole,
    ),
    family(
        "ocvault_check_damage_found",
        "Problems the last check found (0: no damage).",
        Owner::Whole,
    ),
    family(
        "ocvault_latest_snapshot_timestamp_seconds",
        "Time of the newest snapshot of each host and paths (Unix time).",
        Owner::Whole,
    ),
    family(
        "ocvault_forget_snapshots_removed",
        "Snapshots the last forget removed.",
        Owner::Whole,
    ),
    family(
        "ocvault_prune_bytes_reclaimed",
        "Bytes of packs the last prune deleted.",
        Owner::Whole,
    ),
];

/// Samples recorded during this run: family name to (rendered labels, value). `None` when no
/// metrics file is written, so commands skip the work of gathering them.
static RECORDED: Mutex<Option<Recorded>> = Mutex::new(None);

/// Family name to its samples: (rendered labels, value).
type Recorded = BTreeMap<&'static str, Vec<(String, f64)>>;

/// A metered command's run, from its start to [`Run::finish`].
pub struct Run {
    path: PathBuf,
    command: &'static str,
    started: Instant,
}

impl Run {
    /// Starts recording when a metrics file is given and the command writes metrics
    /// (`command` is its name then).
    pub fn start(path: Option<&Path>, command: Option<&'static str>) -> Option<Run> {
        let (path, command) = (path?, command?);
        *RECORDED.lock().unwrap_or_else(|e| e.into_inner()) = Some(BTreeMap::new());
        Some(Run {
            path: path.to_path_buf(),
            command,
            started: Instant::now(),
        })
    }

    /// Records the run's exit code and times and writes the file. A file that cannot be
    /// written is a warning: the backup's own exit code stands (the stale file then fires
    /// the age alert).
    pub fn finish(self, exit_code: i32) {
        let now = unix_seconds(SystemTime::now());
        let label = labels(&[("command", self.command)]);
        record("ocvault_last_run_timestamp_seconds", label.clone(), now);
        record("ocvault_last_exit_code", label.clone(), exit_code.into());
        let duration = self.started.elapsed().as_secs_f64();
        record("ocvault_duration_seconds", label.clone(), duration);
        if exit_code == ocvault::error::exit::OK {
            record("ocvault_last_success_timestamp_seconds", label, now);
        }
        let recorded = RECORDED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        if let Err(e) = write(&self.path, self.command, &recorded) {
            eprintln!("ocvault: warning: metrics not written: {e}");
        }
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Whether this run records metrics.
fn enabled() -> bool {
    RECORDED.lock().unwrap_or_else(|e| e.into_inner()).is_some()
}

fn record(family: &'static str, labels: String, value: f64) {
    if let Some(m) = RECORDED.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        m.entry(family).or_default().push((labels, value));
    }
}

/// `{name="value",...}` with values escaped as the text format requires; empty without labels.
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// After `snapshot`: what it added, its files and errors, and the newest snapshots.
pub fn snapshot_done(repo: &Repository, out: &ocvault::archiver::SnapshotOutcome) {
    if !enabled() {
        return;
    }
    let s = &out.snapshot.summary;
    record(
        "ocvault_snapshot_bytes_added",
        String::new(),
        s.bytes_added as f64,
    );
    for (state, n) in [
        ("new", s.files_new),
        ("changed", s.files_changed),
        ("unmodified", s.files_unmodified),
    ] {
        record(
            "ocvault_snapshot_files",
            labels(&[("state", state)]),
            n as f64,
        );
    }
    record("ocvault_snapshot_errors", String::new(), s.errors as f64);
    latest_from(repo);
}

/// After `check`: the damage count and the newest snapshots it saw.
pub fn check_done(report: &CheckReport) {
    if !enabled() {
        return;
    }
    let damage = report.damage.len() as f64;
    record("ocvault_check_damage_found", String::new(), damage);
    latest(&report.newest);
}

/// After `forget` (not a dry run): how many snapshots went, and the newest left.
pub fn forget_done(repo: &Repository, result: &ForgetResult) {
    if !enabled() {
        return;
    }
    let removed = result.removed.len() as f64;
    record("ocvault_forget_snapshots_removed", String::new(), removed);
    latest_from(repo);
}

/// After `prune` (or `forget --prune`), not a dry run: the bytes it freed.
pub fn prune_done(report: &PruneReport) {
    if enabled() && !report.dry_run {
        let freed = report.bytes_deleted as f64;
        record("ocvault_prune_bytes_reclaimed", String::new(), freed);
    }
}

/// The newest snapshots from the repository's list. A key that cannot list them (write-only)
/// leaves the series as the last full-key command wrote them.
fn latest_from(repo: &Repository) {
    if let Ok(snaps) = repo.list_snapshots() {
        latest(&ocvault::checker::newest_per_group(&snaps));
    }
}

fn latest(newest: &[NewestSnapshot]) {
    // Recorded even when empty, so that a repository whose snapshots were all forgotten drops
    // the old series.
    let mut m = RECORDED.lock().unwrap_or_else(|e| e.into_inner());
    let Some(m) = m.as_mut() else { return };
    let samples = m
        .entry("ocvault_latest_snapshot_timestamp_seconds")
        .or_default();
    for n in newest {
        let paths = n.paths.join(",");
        let l = labels(&[("host", &n.hostname), ("paths", &paths)]);
        samples.push((l, n.time_unix_ns as f64 / 1e9));
    }
}

/// Merges this run's samples into the file at `path` and replaces it atomically.
fn write(
    path: &Path,
    command: &str,
    recorded: &BTreeMap<&'static str, Vec<(String, f64)>>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let _lock = lock(path)?;
    let old = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    let text = merge(&old, command, recorded);
    let mut tmp = tempfile::Builder::new()
        .prefix(".ocvault-metrics")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.write_all(text.as_bytes())
        .map_err(|e| Error::io(tmp.path(), e))?;
    // node_exporter runs as another user: the file must be readable by it (a temporary file
    // is created 0600).
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// An exclusive lock on `PATH.lock` (the textfile collector reads only `*.prom`), held until
/// dropped.
fn lock(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io(&lock_path, e.into()))
}

/// The file's new text: the old samples this run does not replace, then this run's, family
/// by family. Lines of families this version does not know are kept at the end as they were.
fn merge(
    old: &str,
    command: &str,
    recorded: &BTreeMap<&'static str, Vec<(String, f64)>>,
) -> String {
    let own_label = labels(&[("command", command)]);
    let mut kept: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut unknown = String::new();
    for line in old.lines() {
        let known = |name: &str| FAMILIES.iter().find(|f| f.name == name);
        if let Some(comment) = line.strip_prefix('#') {
            // HELP and TYPE of known families are written anew; other comments are dropped.
            let mut words = comment.split_whitespace();
            let (keyword, name) = (words.next(), words.next().unwrap_or_default());
            let doc = matches!(keyword, Some("HELP" | "TYPE")) && !name.is_empty();
            if doc && known(name).is_none() {
                unknown.push_str(line);
                unknown.push('\n');
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let (name, rest) = line.split_at(name_end);
        if !is_sample(name, rest) {
            // node_exporter rejects a whole file over one bad line: drop it.
            continue;
        }
        let Some(f) = known(name) else {
            unknown.push_str(line);
            unknown.push('\n');
            continue;
        };
        let replaced = recorded.contains_key(f.name)
            && match f.owner {
                Owner::Whole => true,
                Owner::EachCommand => rest.starts_with(&own_label),
            };
        if !replaced {
            kept.entry(f.name).or_default().push(line.to_string());
        }
    }
    let mut out = String::new();
    for f in FAMILIES {
        let mut lines = kept.remove(f.name).unwrap_or_default();
        for (l, v) in recorded.get(f.name).into_iter().flatten() {
            lines.push(format!("{}{l} {v}", f.name));
        }
        if lines.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "# HELP {} {}\n# TYPE {} gauge\n",
            f.name, f.help, f.name
        ));
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out.push_str(&unknown);
    out
}

/// Whether `name` and `rest` (`{labels} value`, or ` value`) look like a sample line: a valid
/// metric name, braces around any labels, and a number. Not a full parser: enough to keep a
/// damaged file from staying damaged.
fn is_sample(name: &str, rest: &str) -> bool {
    let valid_name = name.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    let Some((labels, value)) = rest.trim_end().rsplit_once(' ') else {
        return false;
    };
    let labels = labels.trim();
    let labels_ok = labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}'));
    !name.is_empty() && valid_name && labels_ok && value.parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("host", "a\"b\\c\nd"), ("paths", "/x")]),
            r#"{host="a\"b\\c\nd",paths="/x"}"#
        );
    }

    #[test]
    fn a_run_replaces_its_own_series_and_keeps_the_others() {
        let mut first = BTreeMap::new();
        first.insert(
            "ocvault_last_exit_code",
            vec![(labels(&[("command", "snapshot")]), 0.0)],
        );
        first.insert("ocvault_snapshot_errors", vec![(String::new(), 2.0)]);
        let text = merge("", "snapshot", &first);
        let mut second = BTreeMap::new();
        second.insert(
            "ocvault_last_exit_code",
            vec![(labels(&[("command", "check")]), 4.0)],
        );
        let text = merge(&format!("{text}other_metric 7\n"), "check", &second);
        assert!(
            text.contains("ocvault_last_exit_code{command=\"snapshot\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("ocvault_last_exit_code{command=\"check\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("ocvault_snapshot_errors 2\n"), "{text}");
        assert!(text.ends_with("other_metric 7\n"), "{text}");
        let mut third = BTreeMap::new();
        third.insert(
            "ocvault_last_exit_code",
            vec![(labels(&[("command", "snapshot")]), 12.0)],
        );
        let text = merge(&text, "snapshot", &third);
        assert_eq!(text.matches("command=\"snapshot\"").count(), 1, "{text}");
        assert!(
            text.contains("ocvault_last_exit_code{command=\"snapshot\"} 12\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE ocvault_last_exit_code gauge").count(),
            1
        );
    }

    #[test]
    fn a_damaged_file_is_merged_without_panicking() {
        let mut recorded = BTreeMap::new();
        recorded.insert("ocvault_snapshot_errors", vec![(String::new(), 0.0)]);
        for old in [
            "\u{0}{{{ #\n#\n# HELP\n{}",
            "ocvault_last_exit_code{",
            "é{ 1\n#é",
        ] {
            let text = merge(old, "snapshot", &recorded);
            assert_eq!(
                text,
                "# HELP ocvault_snapshot_errors Sources the last snapshot could not read.\n\
                 # TYPE ocvault_snapshot_errors gauge\nocvault_snapshot_errors 0\n"
            );
        }
    }
}

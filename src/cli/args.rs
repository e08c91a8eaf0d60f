//! Arguments shared by several commands, and the parsers of values that are not plain
//! numbers or strings. Invalid values are one-line usage errors (exit code 2).

use ocvault::checker::ReadData;
use ocvault::commands::select::{Selection, SnapshotFilter};
use std::time::Duration;

/// `--host/--tag/--path`: which snapshots a listing or `--all` considers.
#[derive(clap::Args, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable)
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Only snapshots with this tag (repeatable: all must match)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Only snapshots that include this path (repeatable: all must match)
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<String>,
}

impl FilterArgs {
    pub fn filter(self) -> SnapshotFilter {
        SnapshotFilter {
            hosts: self.hosts,
            tags: self.tags,
            paths: self.paths,
        }
    }
}

/// `ID... | --all [--host H] [--tag T] [--path P]`.
#[derive(clap::Args, Clone, Default)]
pub struct SelectionArgs {
    /// Snapshot ids (any unique prefix) or `latest`
    #[arg(value_name = "ID")]
    ids: Vec<String>,
    /// Every snapshot (that --host, --tag and --path let through)
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

impl SelectionArgs {
    /// Whether snapshot ids were given.
    pub fn has_ids(&self) -> bool {
        !self.ids.is_empty()
    }

    pub fn selection(self) -> Selection {
        Selection {
            ids: self.ids,
            all: self.all,
            filter: self.filter.filter(),
        }
    }
}

/// A duration such as `90s`, `25h`, `2d12h` or `1y`.
pub fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// A size in bytes: a number, optionally with a unit (`500M`, `2GiB`, `100 kB`). Every unit
/// is a power of 1024, as in restic and in earlier ocvault (`2G` is 2 GiB): a scheduled job
/// written with `--max-repack 2G` must not come to mean less. `bytesize` parses; it reads
/// `KB`/`MB`/... as powers of 1000, so those are spelled as `KiB`/`MiB`/... first.
pub fn size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let unit = unit.trim();
    let binary = match unit.to_ascii_lowercase().as_str() {
        "k" | "kb" => "KiB",
        "m" | "mb" => "MiB",
        "g" | "gb" => "GiB",
        "t" | "tb" => "TiB",
        _ => unit,
    };
    format!("{num} {binary}")
        .trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| "want a size such as 500M or 2GiB".to_string())
}

/// A percentage from 0% to 100% (the `%` may be left out).
pub fn percent(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| "want a percentage such as 5%".to_string())?;
    if !(0.0..=100.0).contains(&p) {
        return Err("must be between 0% and 100%".into());
    }
    Ok(p)
}

/// `--read-data-subset`: N/M (the N-th of M groups), P% (random) or a size.
pub fn read_data_subset(s: &str) -> Result<ReadData, String> {
    let bad = || "want N/M, P% or a size like 500M".to_string();
    if let Some((n, m)) = s.split_once('/') {
        let n: u64 = n.trim().parse().map_err(|_| bad())?;
        let m: u64 = m.trim().parse().map_err(|_| bad())?;
        if m == 0 || n == 0 || n > m {
            return Err(bad());
        }
        return Ok(ReadData::Group(n, m));
    }
    if let Some(p) = s.strip_suffix('%') {
        let p: f64 = p.trim().parse().map_err(|_| bad())?;
        if !(p > 0.0 && p <= 100.0) {
            return Err(bad());
        }
        return Ok(ReadData::Percent(p));
    }
    size(s).map(ReadData::Bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_documented() {
        assert_eq!(size("500M"), Ok(500 << 20));
        assert_eq!(size("2G"), Ok(2 << 30));
        assert_eq!(size("3gb"), Ok(3 << 30));
        assert_eq!(size("2GiB"), Ok(2 << 30));
        assert_eq!(size(" 100K "), Ok(100 << 10));
        assert_eq!(size("1.5 KiB"), Ok(1536));
        assert_eq!(size("12"), Ok(12));
        assert!(size("12 parsecs").is_err());
        assert_eq!(percent("5%"), Ok(5.0));
        assert_eq!(percent("0"), Ok(0.0));
        assert!(percent("101%").is_err());
        assert!(matches!(read_data_subset("2/7"), Ok(ReadData::Group(2, 7))));
        assert!(read_data_subset("8/7").is_err());
        assert!(matches!(read_data_subset("10%"), Ok(ReadData::Percent(p)) if p == 10.0));
        assert!(matches!(
            read_data_subset("2G"),
            Ok(ReadData::Bytes(0x8000_0000))
        ));
        assert!(read_data_subset("0%").is_err());
        assert_eq!(duration("2d12h").unwrap(), Duration::from_secs(60 * 3600));
    }
}

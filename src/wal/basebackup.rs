//! PostgreSQL base backups taken with `pg_basebackup -Ft -D -` through `snapshot --command`:
//! the tar stream's first member is `backup_label` (PostgreSQL sends it first), which says
//! where the backup starts in the WAL; the backup history file PostgreSQL archives when the
//! backup ends (`<segment>.<offset>.backup`) says where it stops. Both are recorded in the
//! snapshot (`Snapshot::postgres`) so `pitr` knows which base backup serves which moment.

use crate::format::PgBaseBackup;
use crate::repository::Repository;
use crate::wal::catalog;
use crate::wal::name::{Lsn, Segment, WalName};
use std::io::Read;
use std::sync::{Arc, Mutex};

/// Bytes of the stream kept to look for `backup_label` (a tar header and a small file).
const SNIFF_BYTES: usize = 64 * 1024;
const TAR_BLOCK: usize = 512;

/// Passes a stream through unchanged, keeping its first bytes for [`SniffedLabel::label`].
pub struct LabelSniffer<R> {
    inner: R,
    kept: Arc<Mutex<Vec<u8>>>,
}

/// The start of the stream a [`LabelSniffer`] saw.
#[derive(Clone, Default)]
pub struct SniffedLabel(Arc<Mutex<Vec<u8>>>);

impl<R: Read> LabelSniffer<R> {
    pub fn new(inner: R) -> (LabelSniffer<R>, SniffedLabel) {
        let kept = Arc::new(Mutex::new(Vec::new()));
        (
            LabelSniffer {
                inner,
                kept: kept.clone(),
            },
            SniffedLabel(kept),
        )
    }
}

impl<R: Read> Read for LabelSniffer<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < SNIFF_BYTES {
            let take = n.min(SNIFF_BYTES - kept.len());
            kept.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
}

impl SniffedLabel {
    /// The `backup_label` text when the stream was a tar whose first member is one.
    pub fn label(&self) -> Option<String> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        first_tar_member(&kept, "backup_label")
    }
}

/// The content of the first member of a tar stream when it is named `name` (ustar header:
/// name at 0..100, octal size at 124..136, "ustar" magic at 257).
fn first_tar_member(bytes: &[u8], name: &str) -> Option<String> {
    let header = bytes.get(..TAR_BLOCK)?;
    if !header[257..262].eq(b"ustar") {
        return None;
    }
    let end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
    if &header[..end] != name.as_bytes() {
        return None;
    }
    let size_field = std::str::from_utf8(&header[124..136]).ok()?;
    let size =
        usize::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok()?;
    let body = bytes.get(TAR_BLOCK..TAR_BLOCK.checked_add(size)?)?;
    String::from_utf8(body.to_vec()).ok()
}

/// `KEY: value` lines of a backup_label or backup history file.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .map(str::trim)
}

/// `0/2000028 (file 000000010000000000000002)` -> (LSN, file name).
fn location(value: &str) -> Option<(Lsn, String)> {
    let (lsn, rest) = value.split_once(' ')?;
    let file = rest.strip_prefix("(file ")?.strip_suffix(')')?;
    Some((lsn.parse().ok()?, file.to_string()))
}

/// PostgreSQL's `%Y-%m-%d %H:%M:%S %Z` in UTC (or GMT, or a numeric offset); `None` for a
/// zone abbreviation, which cannot be resolved reliably.
pub fn parse_pg_time(value: &str) -> Option<i64> {
    let (stamp, zone) = value.rsplit_once(' ')?;
    let naive = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S").ok()?;
    let offset_secs = match zone {
        "UTC" | "GMT" | "Z" => 0,
        z => {
            let (sign, digits) = match z.as_bytes().first()? {
                b'+' => (1, &z[1..]),
                b'-' => (-1, &z[1..]),
                _ => return None,
            };
            let (h, m) = digits.split_once(':').unwrap_or((digits, "0"));
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    let utc = naive.and_utc().timestamp() - offset_secs;
    utc.checked_mul(1_000_000_000)
}

/// The start of a base backup, from its `backup_label`.
pub fn parse_backup_label(text: &str) -> Option<PgBaseBackup> {
    let (start_lsn, start_wal) = location(field(text, "START WAL LOCATION")?)?;
    Some(PgBaseBackup {
        label: field(text, "LABEL").unwrap_or_default().to_string(),
        timeline: field(text, "START TIMELINE")?.parse().ok()?,
        start_lsn: start_lsn.0,
        start_wal,
        start_unix_ns: field(text, "START TIME")
            .and_then(parse_pg_time)
            .unwrap_or(0),
        stop_lsn: None,
        stop_unix_ns: None,
        stop_timeline: None,
    })
}

/// Fills in where the backup stopped from the backup history file in the WAL archive, named
/// `<start segment>.<offset of the start in it>.backup`. The segment size is not in the
/// label: each power of two PostgreSQL allows (1 MiB to 1 GiB) that agrees with the start
/// segment's name is tried. The stop time is the file's STOP TIME, or when that cannot be
/// read, the time it was archived (a little later than the stop, so never too early).
/// Returns whether the history file was found.
pub fn fill_stop(repo: &Repository, pg: &mut PgBaseBackup) -> crate::error::Result<bool> {
    let Some(WalName::Segment(start)) = WalName::parse(&pg.start_wal) else {
        return Ok(false);
    };
    for shift in 20..=30 {
        let seg_size = 1u64 << shift;
        if Segment::containing(start.timeline, Lsn(pg.start_lsn), seg_size) != start {
            continue;
        }
        let offset = pg.start_lsn - start.start_lsn(seg_size).0;
        let name = format!("{}.{:08X}.backup", start.file_name(), offset);
        let Some(rec) = catalog::load(repo, &name)? else {
            continue;
        };
        // Archived while the backup ran: newer than any index loaded before it.
        let indexed = repo.load_index()?;
        let text = catalog::read_text(&rec, |id| indexed.read_blob(id))?;
        let Some((stop, _)) = field(&text, "STOP WAL LOCATION").and_then(location) else {
            continue;
        };
        pg.stop_lsn = Some(stop.0);
        pg.stop_timeline = field(&text, "STOP TIMELINE").and_then(|t| t.parse().ok());
        pg.stop_unix_ns = Some(
            field(&text, "STOP TIME")
                .and_then(parse_pg_time)
                .unwrap_or(rec.archived_unix_ns),
        );
        if pg.start_unix_ns == 0 {
            pg.start_unix_ns = field(&text, "START TIME")
                .and_then(parse_pg_time)
                .unwrap_or(0);
        }
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
START TIME: 2026-12-02 03:50:01 UTC\nLABEL: nightly\nSTART TIMELINE: 1\n";

    fn tar_with(name: &str, body: &str) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let size = format!("{:011o}\0", body.len());
        h[124..136].copy_from_slice(size.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        let mut out = h;
        out.extend_from_slice(body.as_bytes());
        out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
        out
    }

    #[test]
    fn a_base_backup_tar_is_recognised_by_its_first_member() {
        let tar = tar_with("backup_label", LABEL);
        let (mut r, sniffed) = LabelSniffer::new(&tar[..]);
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        let pg = parse_backup_label(&sniffed.label().unwrap()).unwrap();
        assert_eq!(pg.start_lsn, 0x2000028);
        assert_eq!(pg.start_wal, "000000010000000000000002");
        assert_eq!(pg.timeline, 1);
        assert_eq!(pg.label, "nightly");
        assert_eq!(pg.start_unix_ns, 1_796_183_401 * 1_000_000_000);
        assert!(first_tar_member(&tar_with("base/1/123", "x"), "backup_label").is_none());
        assert!(first_tar_member(b"plain text, not a tar", "backup_label").is_none());
    }

    #[test]
    fn times_in_utc_or_with_an_offset_parse_and_zone_names_do_not() {
        assert_eq!(parse_pg_time("1970-01-01 01:00:00 +01"), Some(0));
        assert_eq!(
            parse_pg_time("1970-01-01 00:00:10 GMT"),
            Some(10_000_000_000)
        );
        assert_eq!(parse_pg_time("1970-01-01 00:00:10 CET"), None);
    }
}

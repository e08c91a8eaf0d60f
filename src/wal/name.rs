//! PostgreSQL's WAL file names and log sequence numbers. Everything that reasons about WAL
//! order (fetch-ahead, continuity, retention) goes through these, never through string slicing.

use std::fmt;

/// A log sequence number: a byte position in the WAL, written by PostgreSQL as `X/Y` (hex).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl std::str::FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Lsn, String> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("not an LSN: {s}"))?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| format!("not an LSN: {s}"))?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| format!("not an LSN: {s}"))?;
        Ok(Lsn(((hi as u64) << 32) | lo as u64))
    }
}

/// One WAL segment of a timeline: `log` and `seg` as in its file name (`TTTTTTTTLLLLLLLLSSSSSSSS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    pub timeline: u32,
    pub log: u32,
    pub seg: u32,
}

impl Segment {
    /// The segment holding `lsn` on `timeline`, for segments of `seg_size` bytes.
    pub fn containing(timeline: u32, lsn: Lsn, seg_size: u64) -> Segment {
        Segment {
            timeline,
            log: (lsn.0 >> 32) as u32,
            seg: ((lsn.0 & 0xffff_ffff) / seg_size) as u32,
        }
    }

    /// Where the segment starts in the WAL.
    pub fn start_lsn(&self, seg_size: u64) -> Lsn {
        Lsn(((self.log as u64) << 32) + self.seg as u64 * seg_size)
    }

    /// The segment after this one on the same timeline.
    pub fn next(&self, seg_size: u64) -> Segment {
        let per_log = (1u64 << 32) / seg_size;
        if self.seg as u64 + 1 >= per_log {
            Segment {
                log: self.log + 1,
                seg: 0,
                ..*self
            }
        } else {
            Segment {
                seg: self.seg + 1,
                ..*self
            }
        }
    }

    /// Position in the WAL regardless of timeline, in segments.
    pub fn number(&self, seg_size: u64) -> u64 {
        self.start_lsn(seg_size).0 / seg_size
    }

    pub fn file_name(&self) -> String {
        format!("{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }
}

/// What a file PostgreSQL archives is, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalName {
    Segment(Segment),
    /// `TTTTTTTT.history`: how a timeline branched off its parent.
    History {
        timeline: u32,
    },
    /// `<segment>.<offset>.backup`: a base backup's start and stop, written when it ends.
    BackupHistory {
        segment: Segment,
        offset: u32,
    },
    /// `<segment>.partial`: the last, incomplete segment of a timeline a standby left.
    Partial(Segment),
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

fn segment(s: &str) -> Option<Segment> {
    if s.len() != 24 {
        return None;
    }
    Some(Segment {
        timeline: hex8(s.get(0..8)?)?,
        log: hex8(s.get(8..16)?)?,
        seg: hex8(s.get(16..24)?)?,
    })
}

impl WalName {
    /// Parses a name PostgreSQL archives; `None` for anything else.
    pub fn parse(name: &str) -> Option<WalName> {
        if let Some(seg) = segment(name) {
            return Some(WalName::Segment(seg));
        }
        if let Some(tli) = name.strip_suffix(".history") {
            return Some(WalName::History {
                timeline: hex8(tli)?,
            });
        }
        if let Some(seg) = name.strip_suffix(".partial") {
            return Some(WalName::Partial(segment(seg)?));
        }
        let rest = name.strip_suffix(".backup")?;
        let (seg, offset) = rest.split_once('.')?;
        Some(WalName::BackupHistory {
            segment: segment(seg)?,
            offset: hex8(offset)?,
        })
    }

    pub fn timeline(&self) -> u32 {
        match self {
            WalName::Segment(s) | WalName::Partial(s) => s.timeline,
            WalName::BackupHistory { segment, .. } => segment.timeline,
            WalName::History { timeline } => *timeline,
        }
    }
}

/// A name is safe to archive and fetch: a plain file name PostgreSQL could give.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB16: u64 = 16 << 20;

    #[test]
    fn names_parse_and_print() {
        let s = match WalName::parse("000000010000000A000000FF") {
            Some(WalName::Segment(s)) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!((s.timeline, s.log, s.seg), (1, 10, 255));
        assert_eq!(s.next(MIB16).file_name(), "000000010000000B00000000");
        assert_eq!(s.start_lsn(MIB16).to_string(), "A/FF000000");
        assert_eq!(
            WalName::parse("00000002.history"),
            Some(WalName::History { timeline: 2 })
        );
        assert!(matches!(
            WalName::parse("000000010000000000000002.00000028.backup"),
            Some(WalName::BackupHistory { offset: 0x28, .. })
        ));
        assert!(matches!(
            WalName::parse("000000010000000000000002.partial"),
            Some(WalName::Partial(_))
        ));
        for bad in [
            "",
            "0000000100000000000000",
            "00000001000000000000000G",
            "x.history",
            "../x",
        ] {
            assert!(WalName::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn lsns_round_trip_and_locate_segments() {
        let lsn: Lsn = "0/2000028".parse().unwrap();
        assert_eq!(lsn.0, 0x2000028);
        assert_eq!(lsn.to_string(), "0/2000028");
        let seg = Segment::containing(1, lsn, MIB16);
        assert_eq!(seg.file_name(), "000000010000000000000002");
        // 1 GiB segments: four per 4 GiB of WAL.
        let big = Segment::containing(1, "1/C0000000".parse().unwrap(), 1 << 30);
        assert_eq!(big.file_name(), "000000010000000100000003");
        assert_eq!(big.next(1 << 30).file_name(), "000000010000000200000000");
        assert!("12".parse::<Lsn>().is_err());
    }
}

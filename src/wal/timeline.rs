//! Which WAL the archive must hold, as pure functions of the archived names, the timelines'
//! history files and the base backups: continuity (`check`, `pitr`) and retention (`forget
//! --keep-wal-within`).
//!
//! A timeline's history file (`TTTTTTTT.history`) lists every ancestor timeline with the LSN
//! at which the next one branched off it. Recovery along a timeline reads each ancestor's
//! segments up to (not including) the segment holding its switch point, and the child's from
//! that segment on: PostgreSQL copies the switch segment onto the new timeline.

use crate::format::PgBaseBackup;
use crate::wal::name::{Lsn, Segment, WalName};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

/// PostgreSQL's default segment size, used when the archive holds no segment to measure.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// One run of missing segments on a timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub timeline: u32,
    /// The first file missing (a segment, or a timeline's history file).
    pub first_missing: String,
    /// How many files the run misses.
    pub missing: u64,
}

/// The ancestors of a timeline as its history file lists them: (parent timeline, the LSN at
/// which the next timeline branched off it), oldest first. Lines that are not entries
/// (comments, blank lines, damage) are skipped.
pub fn parse_history(text: &str) -> Vec<(u32, Lsn)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let tli = fields.next()?.parse().ok()?;
            let lsn = fields.next()?.parse().ok()?;
            Some((tli, lsn))
        })
        .collect()
}

/// The size of the archive's segments: the size most segment files have (all have the same
/// size in one cluster); [`DEFAULT_SEGMENT_SIZE`] when there are none or none is a valid
/// PostgreSQL segment size.
pub fn segment_size<'a>(files: impl IntoIterator<Item = (&'a str, u64)>) -> u64 {
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for (name, size) in files {
        if matches!(WalName::parse(name), Some(WalName::Segment(_))) {
            *counts.entry(size).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .filter(|(size, _)| size.is_power_of_two() && (1 << 20..=1 << 30).contains(size))
        .max_by_key(|(size, n)| (*n, *size))
        .map(|(size, _)| size)
        .unwrap_or(DEFAULT_SEGMENT_SIZE)
}

/// The segment with position `number` (in segments from LSN 0) on `timeline`.
fn segment_at(timeline: u32, number: u64, seg_size: u64) -> Segment {
    Segment::containing(timeline, Lsn(number * seg_size), seg_size)
}

fn history_name(timeline: u32) -> String {
    format!("{timeline:08X}.history")
}

/// The way to the end of `timeline`: (timeline, LSN where the next one branched off it) for
/// each ancestor, then the timeline itself with no end.
fn path_to(timeline: u32, histories: &HashMap<u32, Vec<(u32, Lsn)>>) -> Vec<(u32, Option<Lsn>)> {
    let mut path: Vec<(u32, Option<Lsn>)> = histories
        .get(&timeline)
        .map(|h| h.iter().map(|&(t, lsn)| (t, Some(lsn))).collect())
        .unwrap_or_default();
    path.push((timeline, None));
    path
}

/// Gaps in the archive on the way from `base_backups` to the newest WAL: for each timeline
/// with archived segments, every segment from the oldest base backup on its way (its own
/// timeline or an ancestor, started before that ancestor's switch point) to its newest
/// archived segment; and for each base backup, every segment from its start to its stop.
/// `histories` holds the parsed history file of each timeline whose history is archived. A
/// timeline above 1 whose history file is missing while one of the base backups is on an
/// earlier timeline is a gap naming the history file. (`pitr` passes the one base backup it
/// restores.)
pub fn gaps(
    names: &[&str],
    histories: &HashMap<u32, Vec<(u32, Lsn)>>,
    base_backups: &[PgBaseBackup],
    seg_size: u64,
) -> Vec<Gap> {
    let archive = Archive::of(names, seg_size);
    let (mut out, required) = archive.required(histories, base_backups, base_backups);
    out.extend(archive.missing_runs(&required));
    out
}

/// What `check` reports of the archive, split the way retention leaves it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveGaps {
    /// Damage: a base backup cannot become consistent (a gap between its start and stop),
    /// or recovery from the newest base backup cannot reach the newest archived WAL.
    pub broken: Vec<Gap>,
    /// Gaps between older base backups and the newest one, outside what each needs to
    /// become consistent: `forget --keep-wal-within` leaves them, so they are not damage,
    /// but point-in-time recovery cannot reach the moments they held.
    pub between_base_backups: Vec<Gap>,
}

/// [`gaps`] for `check`: every base backup must be able to become consistent, and the newest
/// one must reach the newest archived WAL; what lies between older base backups and the
/// newest one is reported apart (see [`ArchiveGaps`]).
pub fn archive_gaps(
    names: &[&str],
    histories: &HashMap<u32, Vec<(u32, Lsn)>>,
    base_backups: &[PgBaseBackup],
    seg_size: u64,
) -> ArchiveGaps {
    let archive = Archive::of(names, seg_size);
    let newest: Vec<PgBaseBackup> = base_backups
        .iter()
        .max_by_key(|b| (b.start_unix_ns, b.start_lsn))
        .cloned()
        .into_iter()
        .collect();
    let (mut broken, must) = archive.required(histories, base_backups, &newest);
    let (_, all) = archive.required(histories, base_backups, base_backups);
    broken.extend(archive.missing_runs(&must));
    let rest: BTreeSet<(u32, u64)> = all.difference(&must).copied().collect();
    ArchiveGaps {
        broken,
        between_base_backups: archive.missing_runs(&rest),
    }
}

/// The archived segments by timeline and position.
struct Archive {
    seg_size: u64,
    present: HashSet<(u32, u64)>,
    /// The newest segment of each timeline.
    newest: HashMap<u32, u64>,
}

impl Archive {
    fn of(names: &[&str], seg_size: u64) -> Archive {
        let mut present: HashSet<(u32, u64)> = HashSet::new();
        let mut newest: HashMap<u32, u64> = HashMap::new();
        for name in names {
            if let Some(WalName::Segment(s)) = WalName::parse(name) {
                let n = s.number(seg_size);
                present.insert((s.timeline, n));
                let e = newest.entry(s.timeline).or_insert(n);
                *e = (*e).max(n);
            }
        }
        Archive {
            seg_size,
            present,
            newest,
        }
    }

    /// The segments needed: each of `consistent` from start to stop, and the way from the
    /// oldest of `chain_from` to the end of each timeline; with the missing history files.
    fn required(
        &self,
        histories: &HashMap<u32, Vec<(u32, Lsn)>>,
        consistent: &[PgBaseBackup],
        chain_from: &[PgBaseBackup],
    ) -> (Vec<Gap>, BTreeSet<(u32, u64)>) {
        let seg_size = self.seg_size;
        let mut required: BTreeSet<(u32, u64)> = BTreeSet::new();
        for bb in consistent {
            let start = bb.start_lsn;
            // A backup that stopped on another timeline (a standby promoted meanwhile) is
            // followed there by that timeline's way; here only its own timeline counts.
            let stop = match bb.stop_lsn {
                Some(stop) if bb.stop_timeline.is_none_or(|t| t == bb.timeline) => stop.max(start),
                _ => start,
            };
            required.extend((start / seg_size..=stop / seg_size).map(|n| (bb.timeline, n)));
        }
        let mut missing_histories = Vec::new();
        let mut timelines: Vec<u32> = self.newest.keys().copied().collect();
        timelines.sort();
        for timeline in timelines {
            if timeline > 1
                && !histories.contains_key(&timeline)
                && chain_from.iter().any(|b| b.timeline < timeline)
            {
                missing_histories.push(Gap {
                    timeline,
                    first_missing: history_name(timeline),
                    missing: 1,
                });
            }
            required_on_path(
                &path_to(timeline, histories),
                chain_from,
                self.newest[&timeline],
                seg_size,
                &mut required,
            );
        }
        (missing_histories, required)
    }

    /// The runs of `required` segments not archived, one gap each, in order.
    fn missing_runs(&self, required: &BTreeSet<(u32, u64)>) -> Vec<Gap> {
        let mut out: Vec<Gap> = Vec::new();
        let mut last: Option<(u32, u64)> = None;
        for &(timeline, n) in required {
            if self.present.contains(&(timeline, n)) {
                continue;
            }
            match (out.last_mut(), last) {
                (Some(gap), Some((t, prev))) if t == timeline && prev + 1 == n => gap.missing += 1,
                _ => out.push(Gap {
                    timeline,
                    first_missing: segment_at(timeline, n, self.seg_size).file_name(),
                    missing: 1,
                }),
            }
            last = Some((timeline, n));
        }
        out
    }
}

/// Adds the segments a timeline's recovery reads, from the oldest base backup on `path` to
/// segment number `end` of the path's last timeline.
fn required_on_path(
    path: &[(u32, Option<Lsn>)],
    base_backups: &[PgBaseBackup],
    end: u64,
    seg_size: u64,
    required: &mut BTreeSet<(u32, u64)>,
) {
    // The oldest base backup that lies on the path: on one of its timelines, before the
    // point where the path leaves that timeline.
    let first = base_backups
        .iter()
        .filter_map(|bb| {
            let piece = path.iter().position(|&(t, until)| {
                t == bb.timeline && until.is_none_or(|u| bb.start_lsn < u.0)
            })?;
            Some((bb.start_lsn, piece))
        })
        .min();
    let Some((start_lsn, first_piece)) = first else {
        return;
    };
    let mut from = start_lsn / seg_size;
    for &(timeline, until) in &path[first_piece..] {
        // Up to, not including, the segment holding the switch point (the child has it).
        let to = match until {
            Some(u) => u.0 / seg_size,
            None => end + 1,
        };
        required.extend((from..to).map(|n| (timeline, n)));
        // The next timeline starts with its copy of the switch segment.
        if let Some(u) = until {
            from = u.0 / seg_size;
        }
    }
}

/// The archived files `forget --keep-wal-within WINDOW` deletes, given the base backups of the
/// snapshots kept. Kept: every segment from the start of the newest kept base backup that
/// stopped at or before `now - window` (or of the oldest kept base backup when none did)
/// onward, on any timeline; every segment from start to stop of every kept base backup (what
/// it needs to become consistent; from its start onward when its stop is unknown); every
/// history file; every name this does not understand. With no base backup, nothing goes.
/// Backup history files (`.backup`) and `.partial` files go with their segment.
pub fn to_delete(
    names: &[&str],
    seg_size: u64,
    kept: &[PgBaseBackup],
    now_ns: i64,
    window: Duration,
) -> Vec<String> {
    let Some(keep_from) = keep_from(kept, seg_size, now_ns, window) else {
        return Vec::new();
    };
    // Segment ranges [start, stop] each base backup needs, by position.
    let needed: Vec<(u64, u64)> = kept
        .iter()
        .filter_map(|bb| {
            let start = bb.start_lsn / seg_size;
            Some((start, bb.stop_lsn?.max(bb.start_lsn) / seg_size))
        })
        .collect();
    names
        .iter()
        .filter(|name| {
            let segment = match WalName::parse(name) {
                Some(WalName::Segment(s)) | Some(WalName::Partial(s)) => s,
                Some(WalName::BackupHistory { segment, .. }) => segment,
                Some(WalName::History { .. }) | None => return false,
            };
            let n = segment.number(seg_size);
            n < keep_from && !needed.iter().any(|&(a, b)| (a..=b).contains(&n))
        })
        .map(|n| n.to_string())
        .collect()
}

/// The position of the first segment retention keeps everything from, or `None` when there
/// is no base backup (then nothing is deleted).
fn keep_from(kept: &[PgBaseBackup], seg_size: u64, now_ns: i64, window: Duration) -> Option<u64> {
    let cutoff = now_ns.saturating_sub(window.as_nanos().min(i64::MAX as u128) as i64);
    let anchor = kept
        .iter()
        .filter(|bb| bb.stop_unix_ns.is_some_and(|t| t <= cutoff))
        .max_by_key(|bb| (bb.stop_unix_ns, bb.start_lsn))
        .or_else(|| kept.iter().min_by_key(|bb| bb.start_lsn))?;
    // A base backup whose stop is unknown needs everything from its start on.
    let unstopped = kept
        .iter()
        .filter(|bb| bb.stop_lsn.is_none())
        .map(|bb| bb.start_lsn)
        .min();
    let from = unstopped.map_or(anchor.start_lsn, |u| u.min(anchor.start_lsn));
    Some(from / seg_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;
    const S: i64 = 1_000_000_000;
    const DAY: i64 = 86_400 * S;

    fn seg(timeline: u32, n: u64) -> String {
        segment_at(timeline, n, SEG).file_name()
    }

    fn bb(
        timeline: u32,
        start_seg: u64,
        stop_seg: Option<u64>,
        stop_day: Option<i64>,
    ) -> PgBaseBackup {
        PgBaseBackup {
            label: String::new(),
            timeline,
            start_lsn: start_seg * SEG + 0x28,
            start_wal: seg(timeline, start_seg),
            start_unix_ns: 0,
            stop_lsn: stop_seg.map(|s| s * SEG + 0x100),
            stop_unix_ns: stop_day.map(|d| d * DAY),
            stop_timeline: stop_seg.map(|_| timeline),
        }
    }

    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[test]
    fn an_unbroken_archive_has_no_gap_and_a_missing_run_is_named_by_its_first_file() {
        let mut names: Vec<String> = (2..=10).map(|n| seg(1, n)).collect();
        let base = [bb(1, 3, Some(4), Some(1))];
        let none = HashMap::new();
        assert!(gaps(&refs(&names), &none, &base, SEG).is_empty());
        // Segments before the base backup do not matter.
        names.retain(|n| *n != seg(1, 2));
        assert!(gaps(&refs(&names), &none, &base, SEG).is_empty());
        names.retain(|n| *n != seg(1, 6) && *n != seg(1, 7) && *n != seg(1, 9));
        let found = gaps(&refs(&names), &none, &base, SEG);
        assert_eq!(
            found,
            vec![
                Gap {
                    timeline: 1,
                    first_missing: seg(1, 6),
                    missing: 2
                },
                Gap {
                    timeline: 1,
                    first_missing: seg(1, 9),
                    missing: 1
                },
            ]
        );
        assert_eq!(found[0].first_missing, "000000010000000000000006");
        // A base backup whose own start is not archived.
        let found = gaps(&refs(&names), &none, &[bb(1, 1, Some(2), None)], SEG);
        assert_eq!(found[0].first_missing, seg(1, 1));
        // No base backup: nothing is required.
        assert!(gaps(&refs(&names), &none, &[], SEG).is_empty());
    }

    #[test]
    fn a_timeline_switch_is_followed_through_the_history_file() {
        // Timeline 2 branched off timeline 1 in segment 5 (at 0/5000100): recovery reads
        // 1:3..=4, then 2:5 onward. 1:5 and later are an abandoned branch.
        let switch = Lsn(5 * SEG + 0x100);
        let history = parse_history(&format!("1\t{switch}\tno recovery target specified\n"));
        assert_eq!(history, vec![(1, switch)]);
        let histories = HashMap::from([(2, history)]);
        let mut names: Vec<String> = (3..=4).map(|n| seg(1, n)).collect();
        names.extend((5..=8).map(|n| seg(2, n)));
        names.push("00000002.history".into());
        let base = [bb(1, 3, Some(3), Some(1))];
        assert!(gaps(&refs(&names), &histories, &base, SEG).is_empty());
        // The parent's segment before the switch is needed.
        let without: Vec<String> = names.iter().filter(|n| **n != seg(1, 4)).cloned().collect();
        assert_eq!(
            gaps(&refs(&without), &histories, &base, SEG)[0].first_missing,
            seg(1, 4)
        );
        // The child's copy of the switch segment is needed.
        let without: Vec<String> = names.iter().filter(|n| **n != seg(2, 5)).cloned().collect();
        assert_eq!(
            gaps(&refs(&without), &histories, &base, SEG)[0].first_missing,
            seg(2, 5)
        );
        // Without the history file, timeline 2 cannot be reached from the base backup.
        let found = gaps(&refs(&names), &HashMap::new(), &base, SEG);
        assert_eq!(found[0].first_missing, "00000002.history");
    }

    #[test]
    fn what_retention_leaves_between_base_backups_is_not_damage_and_a_later_gap_is() {
        // Retention kept A's 3..=4 and everything from B's start (7) on; 5..=6 are gone.
        let mut names: Vec<String> = [3, 4, 7, 8, 9, 10].iter().map(|&n| seg(1, n)).collect();
        let base = [bb(1, 3, Some(4), Some(1)), bb(1, 7, Some(8), Some(2))];
        let none = HashMap::new();
        let found = archive_gaps(&refs(&names), &none, &base, SEG);
        assert!(found.broken.is_empty(), "{found:?}");
        assert_eq!(found.between_base_backups[0].first_missing, seg(1, 5));
        assert_eq!(found.between_base_backups[0].missing, 2);
        // The strict form (one base backup, as pitr asks) sees the gap.
        assert_eq!(
            gaps(&refs(&names), &none, &base[..1], SEG)[0].first_missing,
            seg(1, 5)
        );
        // A gap after the newest base backup, or inside an older one's start..stop, is damage.
        names.retain(|n| *n != seg(1, 9) && *n != seg(1, 4));
        let found = archive_gaps(&refs(&names), &none, &base, SEG);
        let broken: Vec<&str> = found
            .broken
            .iter()
            .map(|g| g.first_missing.as_str())
            .collect();
        assert_eq!(broken, [seg(1, 4), seg(1, 9)]);
    }

    #[test]
    fn retention_keeps_the_window_and_what_base_backups_need() {
        let names: Vec<String> = (1..=40)
            .map(|n| seg(1, n))
            .chain(["00000001.history".to_string(), "junk".into()])
            .chain([format!("{}.00000028.backup", seg(1, 10))])
            .collect();
        // Base backups: A (segs 10..=11, stopped day 1), B (20..=21, day 5), C (30..=31, day 9).
        let kept = [
            bb(1, 10, Some(11), Some(1)),
            bb(1, 20, Some(21), Some(5)),
            bb(1, 30, Some(31), Some(9)),
        ];
        let window = Duration::from_secs(7 * 86_400);
        // now = day 13: cutoff day 6; newest stopped by then is B: keep 20 onward, and A's 10..=11.
        let deleted = to_delete(&refs(&names), SEG, &kept, 13 * DAY, window);
        let expect: Vec<String> = (1..=9).chain(12..=19).map(|n| seg(1, n)).collect();
        assert_eq!(deleted, expect);
        // now = day 3: cutoff before every stop: the oldest kept base backup anchors.
        let deleted = to_delete(&refs(&names), SEG, &kept, 3 * DAY, window);
        assert_eq!(deleted, (1..=9).map(|n| seg(1, n)).collect::<Vec<_>>());
        // A base backup whose stop is unknown keeps everything from its start.
        let mut open = kept.to_vec();
        open[2] = bb(1, 15, None, None);
        let deleted = to_delete(&refs(&names), SEG, &open, 13 * DAY, window);
        assert_eq!(
            deleted,
            (1..=9)
                .chain(12..=14)
                .map(|n| seg(1, n))
                .collect::<Vec<_>>()
        );
        // No base backup kept: nothing is deleted.
        assert!(to_delete(&refs(&names), SEG, &[], 13 * DAY, window).is_empty());
    }

    #[test]
    fn the_segment_size_is_what_most_segments_measure() {
        let a = seg(1, 1);
        let b = seg(1, 2);
        assert_eq!(
            segment_size([(a.as_str(), 1 << 24), (b.as_str(), 1 << 24)]),
            1 << 24
        );
        assert_eq!(
            segment_size([(a.as_str(), 1 << 26), ("00000002.history", 41)]),
            1 << 26
        );
        assert_eq!(segment_size([(a.as_str(), 12345)]), DEFAULT_SEGMENT_SIZE);
        assert_eq!(segment_size([]), DEFAULT_SEGMENT_SIZE);
    }
}

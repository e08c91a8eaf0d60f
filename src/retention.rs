//! Retention policies for `forget`, with restic's documented semantics: snapshots are taken
//! newest first; each `--keep-X N` keeps the newest snapshot of each of the last N periods
//! (hours, days, ISO weeks, months, years) that have snapshots. Times are in UTC.

use crate::format::Snapshot;
use crate::id::SnapshotId;
use chrono::{DateTime, Datelike, Timelike, Utc};
use std::time::Duration;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    pub within: Option<Duration>,
    pub within_hourly: Option<Duration>,
    pub within_daily: Option<Duration>,
    pub within_weekly: Option<Duration>,
    pub within_monthly: Option<Duration>,
    pub within_yearly: Option<Duration>,
    pub tags: Vec<String>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Period {
    Last,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    fn bucket(self, t: DateTime<Utc>, i: usize) -> i64 {
        match self {
            Period::Last => i as i64,
            Period::Hour => (t.year() as i64 * 10_000 + t.ordinal() as i64) * 100 + t.hour() as i64,
            Period::Day => t.year() as i64 * 10_000 + t.ordinal() as i64,
            Period::Week => {
                let w = t.iso_week();
                w.year() as i64 * 100 + w.week() as i64
            }
            Period::Month => t.year() as i64 * 100 + t.month() as i64,
            Period::Year => t.year() as i64,
        }
    }

    fn rule(self, n: u32) -> Rule {
        match self {
            Period::Last => Rule::Last(n),
            Period::Hour => Rule::Hourly(n),
            Period::Day => Rule::Daily(n),
            Period::Week => Rule::Weekly(n),
            Period::Month => Rule::Monthly(n),
            Period::Year => Rule::Yearly(n),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Period::Last => "last",
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }
}

/// One snapshot's verdict and the rules that kept it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub id: SnapshotId,
    pub keep: bool,
    pub reasons: Vec<String>,
    /// The rules behind `reasons`, in the same order.
    pub rules: Vec<Rule>,
}

/// A rule of a policy that keeps a snapshot (what `Decision::reasons` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Tag,
    Last(u32),
    Hourly(u32),
    Daily(u32),
    Weekly(u32),
    Monthly(u32),
    Yearly(u32),
    /// `--keep-within` and `--keep-within-{hourly,...}`: while this close to the newest.
    Within(Duration),
}

impl Rule {
    /// How long after its time this rule can keep a snapshot, at most (a month counted as
    /// 31 days, a year as 366); `None` where no time bounds it (`--keep-last`, `--keep-tag`).
    pub fn keeps_for(self) -> Option<Duration> {
        const DAY: u64 = 86_400;
        let days = |n: u32, per: u64| Some(Duration::from_secs(n as u64 * per * DAY));
        match self {
            Rule::Tag | Rule::Last(_) => None,
            Rule::Hourly(n) => Some(Duration::from_secs(n as u64 * 3600)),
            Rule::Daily(n) => days(n, 1),
            Rule::Weekly(n) => days(n, 7),
            Rule::Monthly(n) => days(n, 31),
            Rule::Yearly(n) => days(n, 366),
            Rule::Within(d) => Some(d),
        }
    }

    /// Whether this rule keeps a snapshot taken at `time_ns` for good by `now_ns`: a period
    /// rule keeps the newest snapshot of its period, and until that period is over a newer
    /// snapshot can take its place (so today's snapshot, the newest of its year, is not yet
    /// the yearly one).
    pub fn settled(self, time_ns: i64, now_ns: i64) -> bool {
        let period = match self {
            Rule::Hourly(_) => Period::Hour,
            Rule::Daily(_) => Period::Day,
            Rule::Weekly(_) => Period::Week,
            Rule::Monthly(_) => Period::Month,
            Rule::Yearly(_) => Period::Year,
            Rule::Tag | Rule::Last(_) | Rule::Within(_) => return true,
        };
        let (t, now) = (
            DateTime::from_timestamp_nanos(time_ns),
            DateTime::from_timestamp_nanos(now_ns),
        );
        period.bucket(t, 0) != period.bucket(now, 0)
    }
}

/// Applies `policy` to one group of snapshots (any order); returns decisions newest first.
pub fn apply(group: &[(SnapshotId, Snapshot)], policy: &Policy) -> Vec<Decision> {
    let mut snaps: Vec<&(SnapshotId, Snapshot)> = group.iter().collect();
    snaps.sort_by(|a, b| b.1.time_unix_ns.cmp(&a.1.time_unix_ns).then(b.0.cmp(&a.0)));
    let Some(latest) = snaps.first().map(|s| s.1.time_unix_ns) else {
        return Vec::new();
    };

    struct Counter {
        period: Period,
        n: u32,
        left: u32,
        last: Option<i64>,
        label: String,
    }
    let mut counters: Vec<Counter> = [
        (Period::Last, policy.last),
        (Period::Hour, policy.hourly),
        (Period::Day, policy.daily),
        (Period::Week, policy.weekly),
        (Period::Month, policy.monthly),
        (Period::Year, policy.yearly),
    ]
    .into_iter()
    .filter_map(|(p, n)| {
        n.filter(|n| *n > 0).map(|n| Counter {
            period: p,
            n,
            left: n,
            last: None,
            label: format!("{} {n}", p.name()),
        })
    })
    .collect();
    let mut within: Vec<(Period, Duration, Option<i64>, String)> = [
        (Period::Hour, policy.within_hourly),
        (Period::Day, policy.within_daily),
        (Period::Week, policy.within_weekly),
        (Period::Month, policy.within_monthly),
        (Period::Year, policy.within_yearly),
    ]
    .into_iter()
    .filter_map(|(p, d)| {
        d.map(|d| {
            (
                p,
                d,
                None,
                format!("within-{} {}", p.name(), humantime::format_duration(d)),
            )
        })
    })
    .collect();

    let mut out = Vec::with_capacity(snaps.len());
    for (i, (id, s)) in snaps.iter().enumerate() {
        let t = DateTime::from_timestamp_nanos(s.time_unix_ns);
        let age = Duration::from_nanos((latest - s.time_unix_ns).max(0) as u64);
        let mut reasons = Vec::new();
        let mut rules = Vec::new();
        if policy.tags.iter().any(|tag| s.tags.contains(tag)) {
            reasons.push(format!("tag {}", policy.tags.join(",")));
            rules.push(Rule::Tag);
        }
        if let Some(d) = policy.within {
            if age <= d {
                reasons.push(format!("within {}", humantime::format_duration(d)));
                rules.push(Rule::Within(d));
            }
        }
        for c in counters.iter_mut() {
            if c.left == 0 {
                continue;
            }
            let b = c.period.bucket(t, i);
            if c.last != Some(b) {
                c.last = Some(b);
                c.left -= 1;
                reasons.push(c.label.clone());
                rules.push(c.period.rule(c.n));
            }
        }
        for (p, d, last, label) in within.iter_mut() {
            if age > *d {
                continue;
            }
            let b = p.bucket(t, i);
            if *last != Some(b) {
                *last = Some(b);
                reasons.push(label.clone());
                rules.push(Rule::Within(*d));
            }
        }
        out.push(Decision {
            id: *id,
            keep: !reasons.is_empty(),
            reasons,
            rules,
        });
    }
    out
}

/// Which fields form a group (`--group-by host,paths,tags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                _ => return None,
            }
        }
        Some(g)
    }

    pub fn key(&self, s: &Snapshot) -> String {
        let mut parts = Vec::new();
        if self.host {
            parts.push(format!("host {}", s.hostname));
        }
        if self.paths {
            let mut p = s.paths.clone();
            p.sort();
            parts.push(format!("paths {}", p.join(" ")));
        }
        if self.tags {
            let mut t = s.tags.clone();
            t.sort();
            parts.push(format!("tags {}", t.join(",")));
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SnapshotSummary;
    use crate::id::Id;

    fn snap(rfc: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            time_unix_ns: crate::snapshot::parse_time(rfc).unwrap(),
            hostname: "h".into(),
            username: "u".into(),
            paths: vec!["/p".into()],
            tags: tags.iter().map(|s| s.to_string()).collect(),
            tree: Default::default(),
            parent: None,
            excludes: vec![],
            incomplete: false,
            summary: SnapshotSummary::default(),
            program_version: String::new(),
            postgres: None,
            log_heads: Vec::new(),
        }
    }

    /// Three years of daily snapshots at 02:00 plus hourly ones on the last day.
    fn history() -> Vec<(SnapshotId, Snapshot)> {
        let start = chrono::NaiveDate::from_ymd_opt(2023, 1, 1).unwrap();
        let mut v = Vec::new();
        for d in 0..=1096 {
            let day = start + chrono::Duration::days(d);
            v.push(snap(&format!("{day}T02:00:00Z"), &[]));
        }
        let last = start + chrono::Duration::days(1096);
        for h in 3..24 {
            v.push(snap(&format!("{last}T{h:02}:00:00Z"), &[]));
        }
        v.into_iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    SnapshotId(Id(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes())),
                    s,
                )
            })
            .collect()
    }

    fn kept_times(h: &[(SnapshotId, Snapshot)], p: &Policy) -> Vec<String> {
        let by_id: std::collections::HashMap<SnapshotId, &Snapshot> =
            h.iter().map(|(i, s)| (*i, s)).collect();
        apply(h, p)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| crate::snapshot::rfc3339(by_id[&d.id].time_unix_ns))
            .collect()
    }

    #[test]
    fn policies_keep_the_hand_computed_sets() {
        let h = history();
        // The last day is 2026-01-01 (2023-01-01 + 1096 days); hourly snapshots 03:00..23:00.
        let cases: Vec<(Policy, Vec<&str>)> = vec![
            (
                Policy {
                    last: Some(3),
                    ..Default::default()
                },
                vec![
                    "2026-01-01T23:00:00Z",
                    "2026-01-01T22:00:00Z",
                    "2026-01-01T21:00:00Z",
                ],
            ),
            (
                Policy {
                    daily: Some(3),
                    ..Default::default()
                },
                vec![
                    "2026-01-01T23:00:00Z",
                    "2025-12-31T02:00:00Z",
                    "2025-12-30T02:00:00Z",
                ],
            ),
            (
                Policy {
                    hourly: Some(2),
                    ..Default::default()
                },
                vec!["2026-01-01T23:00:00Z", "2026-01-01T22:00:00Z"],
            ),
            // ISO weeks: 2026-01-01 is a Thursday of week 2026-W01 (Mon 2025-12-29); the newest
            // of the week before is Sunday 2025-12-28.
            (
                Policy {
                    weekly: Some(2),
                    ..Default::default()
                },
                vec!["2026-01-01T23:00:00Z", "2025-12-28T02:00:00Z"],
            ),
            (
                Policy {
                    monthly: Some(3),
                    ..Default::default()
                },
                vec![
                    "2026-01-01T23:00:00Z",
                    "2025-12-31T02:00:00Z",
                    "2025-11-30T02:00:00Z",
                ],
            ),
            (
                Policy {
                    yearly: Some(10),
                    ..Default::default()
                },
                vec![
                    "2026-01-01T23:00:00Z",
                    "2025-12-31T02:00:00Z",
                    "2024-12-31T02:00:00Z",
                    "2023-12-31T02:00:00Z",
                ],
            ),
            (
                Policy {
                    within: Some(Duration::from_secs(2 * 3600)),
                    ..Default::default()
                },
                vec![
                    "2026-01-01T23:00:00Z",
                    "2026-01-01T22:00:00Z",
                    "2026-01-01T21:00:00Z",
                ],
            ),
            (
                Policy {
                    within_daily: Some(Duration::from_secs(2 * 86400)),
                    ..Default::default()
                },
                vec!["2026-01-01T23:00:00Z", "2025-12-31T02:00:00Z"],
            ),
        ];
        for (p, want) in cases {
            assert_eq!(kept_times(&h, &p), want, "policy {p:?}");
        }
    }

    #[test]
    fn runbook_policy_30_12_12_7() {
        let h = history();
        let p = Policy {
            daily: Some(30),
            weekly: Some(12),
            monthly: Some(12),
            yearly: Some(7),
            ..Default::default()
        };
        let kept = kept_times(&h, &p);
        // 30 daily: 2026-01-01 (newest, 23:00) and 2025-12-03 .. 2025-12-31.
        let mut want: Vec<String> = vec!["2026-01-01T23:00:00Z".into()];
        for d in (3..=31).rev() {
            want.push(format!("2025-12-{d:02}T02:00:00Z"));
        }
        // 12 weekly: the newest of each ISO week: 2026-W01 (already kept), then Sundays
        // 2025-12-28 back to 2025-10-19 (11 more); those after 12-03 are already kept.
        for d in [
            "2025-11-30",
            "2025-11-23",
            "2025-11-16",
            "2025-11-09",
            "2025-11-02",
            "2025-10-26",
            "2025-10-19",
        ] {
            want.push(format!("{d}T02:00:00Z"));
        }
        // 12 monthly: Jan 2026 (kept), Dec 2025 (kept: 12-31), Nov 30 (kept), then month ends
        // of Oct 2025 back to Feb 2025.
        for m in [
            "2025-10-31",
            "2025-09-30",
            "2025-08-31",
            "2025-07-31",
            "2025-06-30",
            "2025-05-31",
            "2025-04-30",
            "2025-03-31",
            "2025-02-28",
        ] {
            want.push(format!("{m}T02:00:00Z"));
        }
        // 7 yearly: 2026, 2025 (12-31, kept), 2024-12-31, 2023-12-31; only 4 years exist.
        want.push("2024-12-31T02:00:00Z".into());
        want.push("2023-12-31T02:00:00Z".into());
        want.sort();
        want.reverse();
        assert_eq!(kept, want);
        assert_eq!(kept.len(), 30 + 7 + 9 + 2);
    }

    #[test]
    fn keep_tag_and_groups() {
        let h = vec![
            (
                SnapshotId(Id([1; 32])),
                snap("2026-01-01T00:00:00Z", &["keep"]),
            ),
            (SnapshotId(Id([2; 32])), snap("2026-01-02T00:00:00Z", &[])),
            (SnapshotId(Id([3; 32])), snap("2026-01-03T00:00:00Z", &[])),
        ];
        let d = apply(
            &h,
            &Policy {
                last: Some(1),
                tags: vec!["keep".into()],
                ..Default::default()
            },
        );
        let kept: Vec<SnapshotId> = d.iter().filter(|d| d.keep).map(|d| d.id).collect();
        assert_eq!(kept, vec![SnapshotId(Id([3; 32])), SnapshotId(Id([1; 32]))]);
        assert_eq!(
            GroupBy::parse("host,tags"),
            Some(GroupBy {
                host: true,
                paths: false,
                tags: true
            })
        );
        assert_eq!(GroupBy::parse("nope"), None);
    }
}

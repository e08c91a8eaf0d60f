//! pg_dump-like SQL text with controlled day-to-day changes ([`sql_dump`]).

use super::rng::{mix, Rng, DOMAINS, FIRST_NAMES, LAST_NAMES, WORDS};
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Number of tables in [`sql_dump`] output.
pub const SQL_TABLES: u32 = 50;
/// Tables whose rows in one contiguous region change on day 2.
pub const SQL_UPDATED_TABLES: [u32; 3] = [3, 17, 31];
/// Tables that get ~1% extra rows appended on day 2.
pub const SQL_APPENDED_TABLES: [u32; 5] = [5, 12, 24, 40, 45];

/// Per-table plan of a [`sql_dump`] (identical for every `day`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlTablePlan {
    /// Table index (table name is `public.t{index}`).
    pub index: u32,
    /// Row count on day 1 (ids `1..=rows`).
    pub rows: u64,
    /// Day 2: row indices (0-based) whose amount/note change.
    pub updated: std::ops::Range<u64>,
    /// Day 2: number of rows appended (ids `rows+1..=rows+appended`).
    pub appended: u64,
}

/// Row layout of [`sql_dump`] for `(target_bytes, seed)`; table sizes vary
/// (weights 1..8) and sum to ~target_bytes.
pub fn sql_plan(target_bytes: u64, seed: u64) -> Vec<SqlTablePlan> {
    // Measure the average row length on a sample.
    let vocab = SqlVocab::new();
    let mut row = RowBuf::new();
    let sample = 4000u64;
    let mut total = 0u64;
    for id in 0..sample {
        row.n = 0;
        sql_row(&mut row, &vocab, seed, 999, id, false);
        total += row.n as u64;
    }
    let avg = (total / sample).max(1);
    let weights: Vec<u64> = (0..SQL_TABLES)
        .map(|t| 1 + mix(seed, t as u64 + 77) % 8)
        .collect();
    let wsum: u64 = weights.iter().sum();
    let budget = target_bytes.saturating_sub(30_000); // header + DDL
    (0..SQL_TABLES)
        .map(|t| {
            let rows = ((budget as u128 * weights[t as usize] as u128 / wsum as u128 / avg as u128)
                as u64)
                .max(10);
            let updated = if SQL_UPDATED_TABLES.contains(&t) {
                let n = (rows / 50).max(1);
                let start = rows * 2 / 5 + mix(seed, t as u64 + 1000) % (rows / 5 + 1);
                start..(start + n).min(rows)
            } else {
                0..0
            };
            let appended = if SQL_APPENDED_TABLES.contains(&t) {
                (rows / 100).max(1)
            } else {
                0
            };
            SqlTablePlan {
                index: t,
                rows,
                updated,
                appended,
            }
        })
        .collect()
}

/// Days-since-epoch -> (year, month, day) (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u64, u64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i64 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A word padded to 16 bytes (so copies are one fixed-size move) + length.
#[derive(Clone, Copy)]
struct Word([u8; 16], u8);

impl Word {
    fn new(s: &str, lower: bool) -> Self {
        assert!(s.len() <= 16, "vocabulary word too long: {s}");
        let mut b = [0u8; 16];
        b[..s.len()].copy_from_slice(s.as_bytes());
        if lower {
            b.make_ascii_lowercase();
        }
        Word(b, s.len() as u8)
    }
}

struct SqlVocab {
    words: Vec<Word>,
    first: Vec<Word>,
    last: Vec<Word>,
    first_lc: Vec<Word>,
    last_lc: Vec<Word>,
    domains: Vec<Word>,
}

impl SqlVocab {
    fn new() -> Self {
        let w = |l: &[&str], lc| l.iter().map(|s| Word::new(s, lc)).collect::<Vec<_>>();
        SqlVocab {
            words: w(WORDS, false),
            first: w(FIRST_NAMES, false),
            last: w(LAST_NAMES, false),
            first_lc: w(FIRST_NAMES, true),
            last_lc: w(LAST_NAMES, true),
            domains: w(DOMAINS, false),
        }
    }
}

/// Fixed-size buffer for one COPY row (rows are < 512 bytes).
struct RowBuf {
    b: [u8; 1024],
    n: usize,
}

impl RowBuf {
    fn new() -> Self {
        RowBuf { b: [0; 1024], n: 0 }
    }
}

/// Local write cursor over a RowBuf (keeps the position in a register).
struct Cur<'a> {
    b: &'a mut [u8; 1024],
    n: usize,
}

impl Cur<'_> {
    #[inline(always)]
    fn byte(&mut self, c: u8) {
        self.b[self.n] = c;
        self.n += 1;
    }
    #[inline(always)]
    fn word(&mut self, w: &Word) {
        self.b[self.n..self.n + 16].copy_from_slice(&w.0);
        self.n += w.1 as usize;
    }
    #[inline(always)]
    fn lit<const N: usize>(&mut self, s: &[u8; N]) {
        self.b[self.n..self.n + N].copy_from_slice(s);
        self.n += N;
    }
    #[inline(always)]
    fn num(&mut self, mut v: u64) {
        let len = if v == 0 { 1 } else { v.ilog10() as usize + 1 };
        let mut i = self.n + len;
        self.n = i;
        loop {
            i -= 1;
            self.b[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
    }
    #[inline(always)]
    fn two(&mut self, v: u64) {
        self.b[self.n] = b'0' + (v / 10 % 10) as u8;
        self.b[self.n + 1] = b'0' + (v % 10) as u8;
        self.n += 2;
    }
}

/// Append one COPY row for `(seed, table, row)` to `out`; `updated` gives
/// the day-2 variant (different amount and note, everything else identical).
#[inline]
fn sql_row(buf: &mut RowBuf, v: &SqlVocab, seed: u64, table: u32, row: u64, updated: bool) {
    let mut c = Cur {
        b: &mut buf.b,
        n: buf.n,
    };
    let out = &mut c;
    let key = mix(mix(seed, table as u64), row);
    let mut rng = Rng::new(key);
    // id
    out.num(row + 1);
    out.byte(b'\t');
    // name
    let fi = rng.below(v.first.len() as u64) as usize;
    let li = rng.below(v.last.len() as u64) as usize;
    out.word(&v.first[fi]);
    out.byte(b' ');
    out.word(&v.last[li]);
    out.byte(b'\t');
    // email
    out.word(&v.first_lc[fi]);
    out.byte(b'.');
    out.word(&v.last_lc[li]);
    out.num(rng.below(1000));
    out.byte(b'@');
    out.word(&v.domains[rng.below(v.domains.len() as u64) as usize]);
    out.byte(b'\t');
    // created_at (mostly increasing with the row id); printed after amount
    let ts = 1_600_000_000 + table as u64 * 86_400 + row * 17 + rng.below(17);
    let mut amount_note_rng = if updated {
        Rng::new(mix(key, 0xDA72))
    } else {
        rng
    };
    let r = &mut amount_note_rng;
    // amount
    let digits = 2 + r.below(6) as u32;
    let cents = r.below(10u64.pow(digits));
    out.num(cents / 100);
    out.byte(b'.');
    out.two(cents % 100);
    out.byte(b'\t');
    let tod = ts % 86_400;
    let (y, mo, d) = civil_from_days((ts / 86_400) as i64);
    out.num(y as u64);
    out.byte(b'-');
    out.two(mo);
    out.byte(b'-');
    out.two(d);
    out.byte(b' ');
    out.two(tod / 3600);
    out.byte(b':');
    out.two(tod / 60 % 60);
    out.byte(b':');
    out.two(tod % 60);
    out.lit(b"+00\t");
    // note
    if r.below(10) == 0 {
        out.lit(b"\\N");
    } else {
        if updated {
            out.lit(b"updated: ");
        }
        let n = 2 + r.below(13);
        for i in 0..n {
            if i > 0 {
                out.byte(b' ');
            }
            out.word(&v.words[r.below(v.words.len() as u64) as usize]);
        }
    }
    out.byte(b'\n');
    buf.n = c.n;
}

const SQL_HEADER: &str = "--
-- PostgreSQL database dump
--

-- Dumped from database version 16.3
-- Dumped by pg_dump version 16.3

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

";

/// Write a pg_dump-like plain SQL dump of ~`target_bytes` to `path`: header,
/// 50 `CREATE TABLE public.tN`, then one `COPY ... FROM stdin;` block per
/// table (tab-separated rows, `\.` terminator), then primary keys.
/// Rows depend only on (seed, table, row). `day >= 2` changes, relative to
/// day 1, only: amount/note of a contiguous ~2% row region (middle of the
/// table) in tables 3, 17, 31, and ~1% extra rows appended to tables 5, 12,
/// 24, 40, 45 (see [`sql_plan`]). Compresses roughly 3x.
pub fn sql_dump(path: &Path, target_bytes: u64, seed: u64, day: u32) {
    /// Output pieces in file order; row ranges are generated by workers.
    enum Piece {
        Text(Vec<u8>),
        Rows,
    }
    const ROWS_PER_ITEM: u64 = 32 * 1024; // ~4 MB of text
    let plan = sql_plan(target_bytes, seed);
    let vocab = SqlVocab::new();
    let day2 = day >= 2;

    let mut pieces: Vec<Piece> = Vec::new();
    // (table, rows start..end, updated range)
    let mut items: Vec<(u32, std::ops::Range<u64>, std::ops::Range<u64>)> = Vec::new();
    let mut text: Vec<u8> = SQL_HEADER.as_bytes().to_vec();
    for t in &plan {
        let n = t.index;
        write!(
            text,
            "--\n-- Name: t{n}; Type: TABLE; Schema: public; Owner: app\n--\n\n\
             CREATE TABLE public.t{n} (\n    id bigint NOT NULL,\n    name text NOT NULL,\n    \
             email text,\n    amount numeric(12,2),\n    created_at timestamp with time zone NOT NULL,\n    \
             note text\n);\n\n\nALTER TABLE public.t{n} OWNER TO app;\n\n"
        )
        .unwrap();
    }
    for t in &plan {
        let n = t.index;
        write!(
            text,
            "--\n-- Data for Name: t{n}; Type: TABLE DATA; Schema: public; Owner: app\n--\n\n\
             COPY public.t{n} (id, name, email, amount, created_at, note) FROM stdin;\n"
        )
        .unwrap();
        pieces.push(Piece::Text(std::mem::take(&mut text)));
        let rows = t.rows + if day2 { t.appended } else { 0 };
        let updated = if day2 { t.updated.clone() } else { 0..0 };
        let mut start = 0;
        while start < rows {
            let end = (start + ROWS_PER_ITEM).min(rows);
            items.push((n, start..end, updated.clone()));
            pieces.push(Piece::Rows);
            start = end;
        }
        text.extend_from_slice(b"\\.\n\n\n");
    }
    for t in &plan {
        let n = t.index;
        write!(
            text,
            "--\n-- Name: t{n} t{n}_pkey; Type: CONSTRAINT; Schema: public; Owner: app\n--\n\n\
             ALTER TABLE ONLY public.t{n}\n    ADD CONSTRAINT t{n}_pkey PRIMARY KEY (id);\n\n\n"
        )
        .unwrap();
    }
    text.extend_from_slice(b"--\n-- PostgreSQL database dump complete\n--\n\n");
    pieces.push(Piece::Text(text));

    // Workers generate items k, k+W, k+2W, ... ; this thread writes in order.
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
    std::thread::scope(|s| {
        let mut rxs = Vec::new();
        for w in 0..workers {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
            rxs.push(rx);
            let (items, vocab) = (&items, &vocab);
            s.spawn(move || {
                let mut row = RowBuf::new();
                for (table, rows, updated) in items.iter().skip(w).step_by(workers) {
                    let mut buf = Vec::with_capacity(ROWS_PER_ITEM as usize * 160);
                    for r in rows.clone() {
                        row.n = 0;
                        sql_row(&mut row, vocab, seed, *table, r, updated.contains(&r));
                        buf.extend_from_slice(&row.b[..row.n]);
                    }
                    if tx.send(buf).is_err() {
                        return;
                    }
                }
            });
        }
        let mut k = 0;
        for piece in &pieces {
            let data = match piece {
                Piece::Text(t) => std::borrow::Cow::Borrowed(t),
                Piece::Rows => {
                    k += 1;
                    std::borrow::Cow::Owned(rxs[(k - 1) % workers].recv().expect("sql worker died"))
                }
            };
            f.write_all(&data)
                .unwrap_or_else(|e| panic!("write {path:?}: {e}"));
        }
    });
}

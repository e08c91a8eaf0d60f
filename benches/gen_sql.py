#!/usr/bin/env python3
"""Generate a deterministic, pg_dump-like SQL text file for backup benchmarks.

Usage: gen_sql.py [--size-mb 800] [--seed 42] [OUTPUT]   (default output: stdout)

Produces a header, CREATE TABLE statements and COPY ... FROM stdin blocks with
tab-separated rows of random-looking values (ids, timestamps, amounts, emails,
hex tokens, short text).  With the default mix the output compresses roughly
3x with zstd -3 / gzip, similar to real application dumps.
"""
import argparse
import random
import sys

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima "
         "mike november oscar papa quebec romeo sierra tango uniform victor whiskey "
         "xray yankee zulu order payment refund shipped pending invoice customer "
         "account balance transfer review update note urgent delayed priority").split()
STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled", "refunded")
DOMAINS = ("example.com", "mail.test", "corp.example", "shop.invalid", "users.test")
CITIES = ("Berlin", "Paris", "Lisboa", "Oslo", "Dublin", "Praha", "Wien", "Roma")

TABLES = [
    ("public.customers", "id integer, email text, city text, created_at timestamp with time zone, token text"),
    ("public.orders", "id bigint, customer_id integer, status text, amount numeric(12,2), created_at timestamp with time zone, note text"),
    ("public.events", "id bigint, order_id bigint, kind text, payload jsonb, at timestamp with time zone"),
]


class Clock:
    """Slowly advancing timestamps (as in a real table ordered by id)."""

    def __init__(self, r):
        self.r = r
        self.t = 0.0  # seconds since 2018-01-01 (calendar simplified to 12 x 28 days)

    def __call__(self):
        self.t += self.r.random() * 4.0
        t = int(self.t)
        d, s = divmod(t, 86400)
        y, doy = 2018 + d // 336, d % 336
        return "%04d-%02d-%02d %02d:%02d:%02d.%06d+00" % (
            y, doy // 28 % 12 + 1, doy % 28 + 1, s // 3600, s // 60 % 60, s % 60,
            int((self.t - t) * 1e6))


def rows(r, table, start):
    i = start
    w = WORDS
    ts = Clock(r)
    rb = r.getrandbits
    if table == "public.customers":
        while True:
            i += 1
            yield "%d\t%s.%s%d@%s\t%s\t%s\t%016x\n" % (
                i, r.choice(w), r.choice(w), (rb(22) % 9999 + 1), r.choice(DOMAINS),
                r.choice(CITIES), ts(), rb(64))
    elif table == "public.orders":
        while True:
            i += 1
            note = " ".join(r.choice(w) for _ in range(rb(11) % 7)) or "\\N"
            yield "%d\t%d\t%s\t%d.%02d\t%s\t%s\n" % (
                i, (rb(29) % 2000000 + 1), r.choice(STATUSES), (rb(25) % 99999 + 1),
                rb(15) % 100, ts(), note)
    else:
        while True:
            i += 1
            yield ('%d\t%d\t%s\t{"ip": "10.%d.%d.%d", "ua": "%s/%d.%d", "ref": "%08x"}\t%s\n' % (
                i, (rb(34) % 50000000 + 1), r.choice(STATUSES), rb(16) % 256,
                rb(16) % 256, rb(16) % 256, r.choice(w), (rb(15) % 120 + 1),
                rb(12) % 10, rb(32), ts()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=800.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("output", nargs="?", default="-")
    a = ap.parse_args()
    r = random.Random(a.seed)
    target = int(a.size_mb * 1024 * 1024)
    out = sys.stdout if a.output == "-" else open(a.output, "w", encoding="ascii", newline="\n")
    written = 0

    def emit(s):
        nonlocal written
        out.write(s)
        written += len(s)

    emit("--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n"
         "SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n\n")
    for name, cols in TABLES:
        emit("CREATE TABLE %s (%s);\n" % (name, cols))
    emit("\n")
    per_table = target // len(TABLES)
    for n, (name, cols) in enumerate(TABLES):
        colnames = ", ".join(c.split()[0] for c in cols.split(", "))
        emit("--\n-- Data for Name: %s; Type: TABLE DATA\n--\n\nCOPY %s (%s) FROM stdin;\n"
             % (name.split(".")[1], name, colnames))
        stop = per_table * (n + 1) if n < len(TABLES) - 1 else target
        buf = []
        blen = 0
        for row in rows(r, name, 0):
            buf.append(row)
            blen += len(row)
            if blen >= 1 << 20 or written + blen >= stop:
                emit("".join(buf))
                buf, blen = [], 0
                if written >= stop:
                    break
        emit("\\.\n\n")
    emit("--\n-- PostgreSQL database dump complete\n--\n")
    if out is not sys.stdout:
        out.close()


if __name__ == "__main__":
    main()

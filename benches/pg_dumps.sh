#!/usr/bin/env bash
# Make two plain pg_dumps of a pgbench-shaped database, before and after a run of
# updates, for the stdin-snapshot steps of benches/compare.sh.
#
# Usage: benches/pg_dumps.sh OUTDIR      (writes OUTDIR/dump1.sql and OUTDIR/dump2.sql)
#   PG_SCALE=80       pgbench scale: 100,000 accounts per unit (80: ~800 MB dump)
#   PG_UPDATES=2000   pgbench (tpcb-like) transactions between the two dumps; each
#                     updates one random account, teller and branch and adds a history
#                     row (2000 of 8 M accounts: 0.025% of the rows, scattered)
#
# Starts its own PostgreSQL (Debian's postgresql package; installed with apt-get
# if missing) on 127.0.0.1 at a free port, in a scratch dir it removes afterwards.
# pgbench's own filler column is blank, which compresses ~30x; here every account
# row holds random-looking values (a hex token, words, a number, an address) so
# the dump compresses about 3x with zstd -3, like real application data.
# Rows are generated in the server from aid alone: the same scale gives the same
# first dump.  The updates are pgbench's random choices (not seeded).
set -euo pipefail

OUT=${1:?usage: benches/pg_dumps.sh OUTDIR}
PG_SCALE=${PG_SCALE:-80}
PG_UPDATES=${PG_UPDATES:-2000}
[[ $PG_SCALE =~ ^[1-9][0-9]*$ && $PG_UPDATES =~ ^[0-9]+$ ]] || { echo "pg_dumps.sh: PG_SCALE and PG_UPDATES must be integers" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] pg: $*" >&2; }

shopt -s nullglob
bins=(/usr/lib/postgresql/*/bin/initdb)
if ((${#bins[@]} == 0)); then
    log "installing postgresql"
    apt-get install -y postgresql >/dev/null || { apt-get update >/dev/null && apt-get install -y postgresql >/dev/null; }
    bins=(/usr/lib/postgresql/*/bin/initdb)
fi
shopt -u nullglob
((${#bins[@]} > 0)) || { echo "pg_dumps.sh: no PostgreSQL server under /usr/lib/postgresql" >&2; exit 1; }
BIN=$(dirname "${bins[-1]}")

mkdir -p "$OUT"
PGDIR=$(mktemp -d "${TMPDIR:-/tmp}/ocvault-pg.XXXXXX")
chmod 755 "$PGDIR"
as_pg() { if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi; }
((EUID != 0)) || chown postgres: "$PGDIR"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
stop() {
    as_pg "$BIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf -- "$PGDIR"
}
trap stop EXIT

as_pg "$BIN/initdb" -A trust -U postgres -D "$PGDIR/data" >/dev/null
as_pg "$BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
    -o "-p $PORT -k $PGDIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_wal_size=4GB" start >/dev/null
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
psql_q() { "$BIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

log "generating scale $PG_SCALE ($((PG_SCALE * 100000)) accounts)"
# pgbench creates the tables and fills branches and tellers; accounts are filled here.
"$BIN/pgbench" -q -i -s "$PG_SCALE" -I dt >/dev/null 2>&1
psql_q <<SQL
INSERT INTO pgbench_branches (bid, bbalance) SELECT b, 0 FROM generate_series(1, $PG_SCALE) b;
INSERT INTO pgbench_tellers (tid, bid, tbalance) SELECT t, (t - 1) / 10 + 1, 0 FROM generate_series(1, $PG_SCALE * 10) t;
INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
SELECT aid, (aid - 1) / 100000 + 1, hashint4(aid + 7) % 50000,
       substr(md5(aid::text || 'x'), 1, 26) || ' '
       || (array['alpha','bravo','charlie','delta','echo','foxtrot','golf','hotel',
                 'india','juliet','kilo','lima','mike','november','oscar','papa'])[1 + (hashint4(aid) & 15)] || ' '
       || (array['pending','paid','shipped','delivered','cancelled','refunded','open','closed'])[1 + ((hashint4(aid) >> 4) & 7)] || ' '
       || lpad(((hashint4(aid) >> 8) & 65535)::text, 5, '0') || '@'
       || (array['example.com','mail.test','corp.example','shop.invalid'])[1 + ((hashint4(aid) >> 24) & 3)]
FROM generate_series(1, $PG_SCALE * 100000) aid;
SQL
"$BIN/pgbench" -q -i -s "$PG_SCALE" -I vp >/dev/null 2>&1
"$BIN/pg_dump" -f "$OUT/dump1.sql"
log "dump1: $(du -h "$OUT/dump1.sql" | cut -f1); running $PG_UPDATES transactions"
((PG_UPDATES == 0)) || "$BIN/pgbench" -n -c 2 -j 2 -t $(((PG_UPDATES + 1) / 2)) >/dev/null 2>&1
"$BIN/pg_dump" -f "$OUT/dump2.sql"
log "dump2: $(du -h "$OUT/dump2.sql" | cut -f1); zstd -3 ratio of dump1: $(zstd -3 -T0 -c "$OUT/dump1.sql" | wc -c | awk -v s="$(stat -c %s "$OUT/dump1.sql")" '{printf "%.2f", s / $1}')"

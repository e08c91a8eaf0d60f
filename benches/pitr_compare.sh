#!/usr/bin/env bash
# PostgreSQL WAL archiving and point-in-time recovery: ocvault side by side with pgBackRest,
# in the same run, on the same WAL (issue 17, "Side by side with pgBackRest").
#
# What it does, in order:
#  1. initdb (as user postgres) in the scratch folder, pgbench -i with archiving off, then a
#     restart with archive_mode = on and an archive_command that pushes to every tool's
#     repository; a full base backup by each tool (pgbackrest backup --type=full; ocvault
#     snapshot --command 'pg_basebackup -D - -Ft -X none' --stdin-filename base.tar), timed.
#  2. archive_command = '' (archiving paused: PostgreSQL keeps the segments `.ready` in
#     pg_wal), pgbench until SEGMENTS segments are ready, a checksum of every table and the
#     moment T (pgbench stopped around it), a little more pgbench, pg_switch_wal, stop.
#  3. Per-call cost: each tool pushes one segment alone (the only `.ready` file) into a
#     separate repository, RUNS times after one untimed call; the median is reported.
#  4. The same WAL into each tool's main repository: the archive_command run once per
#     segment in name order, from the data folder, as PostgreSQL's archiver does
#     (sh -c with %p = pg_wal/NAME, then NAME.ready renamed to NAME.done); the whole loop
#     is timed. The `.ready` state (and ocvault's pg_wal/ocvault markers, pgBackRest's spool)
#     is reset between tools.
#  5. Point-in-time recovery from each repository to T (TARGET=time) or to the end of the
#     archive (TARGET=latest): the tool's restore command, then the server started on a free
#     port; timed until pg_is_in_recovery() is false. The restored tables' checksum must
#     equal the one recorded at T (or at the end).
#  6. Repository sizes (du -sb), then a table: medians where several runs, ratios o/p =
#     ocvault / pgBackRest (below 1: ocvault faster or smaller).
#
# Usage: benches/pitr_compare.sh         (run as root: PostgreSQL runs as user postgres;
#                                         cargo build --release first)
# Settings (environment):
#   OCVAULT_BIN=target/release/ocvault   copied into the scratch folder (user postgres runs it)
#   BENCH_TMP=${TMPDIR:-/tmp}/ocvault-pitr-bench   scratch folder, emptied at the start
#   TOOLS="ocvault pgbackrest"   tools to run (either alone works: TOOLS=pgbackrest)
#   SEGMENTS=200     WAL segments (16 MiB) of pgbench traffic to archive
#   PG_SCALE=20      pgbench scale of the database (100,000 accounts per unit, ~15 MiB each)
#   PG_CLIENTS=2     pgbench clients
#   PG_RANGE_ROWS=1000  the WAL traffic: pgbench's tpcb-like transactions mixed half and
#                    half with transactions updating a random range of this many accounts
#                    (most of the WAL, about 10x faster to make than tpcb-like alone on 2
#                    busy cores; its WAL compresses like tpcb-like's: ~1/4 with lz4);
#                    0: tpcb-like alone
#   RUNS=3           single-segment pushes per tool (median)
#   RESTORE_RUNS=1   restores per tool (median)
#   TARGET=time      time: recover to T (a few segments before the end); latest: to the end
#   OCVAULT_BATCH=64 wal-push --batch (the default)
#   PGBR_ASYNC=y PGBR_PROCESS_MAX=3 PGBR_COMPRESS=lz4 PGBR_CIPHER=none
#                    pgBackRest's archive-async, process-max, compress-type and
#                    repo1-cipher-type (aes-256-cbc: encrypted like ocvault). The defaults
#                    were its fastest here, 2 busy cores, 204 segments: async 23 s vs sync
#                    32 s; process-max 3 median 20 s, 2: 24 s, 4: 21 s; compress-type none
#                    19-20 s vs lz4 20-24 s (within the noise) for a 4.1x larger
#                    repository, so lz4; a larger archive-get-queue-max did not change
#                    the recovery time (replay bound)
#   WARM=1           read the WAL (or the repository) before each timed step, so both tools
#                    start from a warm page cache
#   KEEP=0           1 keeps the scratch folder (it is also kept when the script fails)
# Disk: about 4 GB for 200 segments (the WAL, two repositories, the restored clusters).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OCVAULT_BIN=${OCVAULT_BIN:-$ROOT/target/release/ocvault}
S=${BENCH_TMP:-${TMPDIR:-/tmp}/ocvault-pitr-bench}
read -r -a TOOLS <<<"${TOOLS:-ocvault pgbackrest}"
SEGMENTS=${SEGMENTS:-200}
PG_SCALE=${PG_SCALE:-20}
PG_CLIENTS=${PG_CLIENTS:-2}
PG_RANGE_ROWS=${PG_RANGE_ROWS:-1000}
RUNS=${RUNS:-3}
RESTORE_RUNS=${RESTORE_RUNS:-1}
TARGET=${TARGET:-time}
OCVAULT_BATCH=${OCVAULT_BATCH:-64}
PGBR_ASYNC=${PGBR_ASYNC:-y}
PGBR_PROCESS_MAX=${PGBR_PROCESS_MAX:-3}
PGBR_COMPRESS=${PGBR_COMPRESS:-lz4}
PGBR_CIPHER=${PGBR_CIPHER:-none}
WARM=${WARM:-1}
KEEP=${KEEP:-0}
TAIL_SEGMENTS=8 # WAL written after T: recovery to T must stop before the end

die() { echo "pitr_compare.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

for v in SEGMENTS PG_SCALE PG_CLIENTS RUNS RESTORE_RUNS OCVAULT_BATCH PGBR_PROCESS_MAX; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
[[ $PG_RANGE_ROWS =~ ^[0-9]+$ ]] || die "PG_RANGE_ROWS must be a non-negative integer"
((SEGMENTS > TAIL_SEGMENTS + 2)) || die "SEGMENTS must be above $((TAIL_SEGMENTS + 2))"
[[ $TARGET == time || $TARGET == latest ]] || die "TARGET must be time or latest"
[[ $PGBR_ASYNC == y || $PGBR_ASYNC == n ]] || die "PGBR_ASYNC must be y or n"
HAVE_OCV=0 HAVE_PGBR=0
for t in "${TOOLS[@]}"; do
    case $t in
    ocvault) HAVE_OCV=1 ;;
    pgbackrest) HAVE_PGBR=1 ;;
    *) die "unknown tool $t (ocvault, pgbackrest)" ;;
    esac
done
if ((HAVE_OCV)); then
    [[ -x $OCVAULT_BIN ]] || die "ocvault binary not found at $OCVAULT_BIN (cargo build --release, or OCVAULT_BIN=...)"
fi
if ((HAVE_PGBR)) && ! command -v pgbackrest >/dev/null; then
    log "installing pgbackrest"
    apt-get install -y pgbackrest >/dev/null || { apt-get update >/dev/null && apt-get install -y pgbackrest >/dev/null; }
    command -v pgbackrest >/dev/null || die "pgbackrest not found (apt-get install -y pgbackrest)"
fi
shopt -s nullglob
bins=(/usr/lib/postgresql/*/bin/initdb)
if ((${#bins[@]} == 0)); then
    log "installing postgresql"
    apt-get install -y postgresql >/dev/null || { apt-get update >/dev/null && apt-get install -y postgresql >/dev/null; }
    bins=(/usr/lib/postgresql/*/bin/initdb)
fi
shopt -u nullglob
((${#bins[@]} > 0)) || die "no PostgreSQL server under /usr/lib/postgresql"
PGBIN=$(dirname "${bins[-1]}")
command -v python3 >/dev/null || die "python3 not found"

# PostgreSQL refuses to run as root: as root, the servers and every tool run as user
# postgres (as PostgreSQL's archiver would run them); otherwise as the current user.
if ((EUID == 0)); then
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

# --- scratch folder ------------------------------------------------------------------
# Servers a previous, interrupted run left in the scratch folder are stopped first.
stop_servers_under() {
    local pid
    for pid in "$1"/*/postmaster.pid "$1"/*/*/postmaster.pid; do
        [[ -f $pid ]] || continue
        as_pg "$PGBIN/pg_ctl" -D "$(dirname "$pid")" -m immediate -w stop >/dev/null 2>&1 || true
    done
}
case $S in /* ) ;; *) S=$PWD/$S ;; esac
[[ $S != / && $S != "$HOME" ]] || die "refusing BENCH_TMP=$S"
if [[ -d $S ]]; then
    shopt -s nullglob
    stop_servers_under "$S"
    shopt -u nullglob
    rm -rf -- "$S"
fi
mkdir -p "$S"/{bin,logs}
FAILED=1
cleanup() {
    local rc=$?
    shopt -s nullglob
    stop_servers_under "$S"
    shopt -u nullglob
    if [[ $KEEP == 1 || $FAILED == 1 ]]; then
        log "scratch folder kept: $S"
    else
        rm -rf -- "$S"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

RES=$S/results.tsv # metric tool run value
: >"$RES"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RES"; }

if ((HAVE_OCV)); then
    cp "$OCVAULT_BIN" "$S/bin/ocvault"
    OCV=$S/bin/ocvault
    printf 'bench-password\n' >"$S/ocvault.pw"
    chmod 600 "$S/ocvault.pw"
fi

# timer.py OUT CMD...: runs CMD and writes "wall user sys maxrss_kib" to OUT. It is a child
# subreaper: workers a tool detaches (pgBackRest's async archive-push process) are reparented
# to it and waited for, so their CPU time and peak RSS are counted too; wall is until CMD
# itself exits (what PostgreSQL waits for). Exits with CMD's status.
cat >"$S/bin/timer.py" <<'PY'
import ctypes, os, resource, subprocess, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.monotonic()
rc = subprocess.call(cmd)
wall = time.monotonic() - t0
deadline = time.monotonic() + 300
while time.monotonic() < deadline:  # reap detached descendants
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if pid == 0:
        time.sleep(0.01)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out, "w") as f:
    f.write(f"{wall:.3f} {ru.ru_utime:.3f} {ru.ru_stime:.3f} {ru.ru_maxrss}\n")
sys.exit(rc)
PY

# archiver.sh DATADIR TIMES TEMPLATE: what PostgreSQL's archiver does, for every `.ready`
# file at the start: history files first, then by name; TEMPLATE's %p = pg_wal/NAME and
# %f = NAME, run with sh -c from DATADIR; on success NAME.ready becomes NAME.done. Each
# call's start and end (EPOCHREALTIME) go to TIMES. Stops at the first failing call.
cat >"$S/bin/archiver.sh" <<'SH'
#!/usr/bin/env bash
set -u
cd "$1" || exit 1
times=$2 tmpl=$3
: >"$times"
st=pg_wal/archive_status
names=$( (cd "$st" && ls) | sed -n 's/\.ready$//p' | awk '{ print (/\.history$/ ? 0 : 1) "\t" $0 }' | LC_ALL=C sort | cut -f2)
for f in $names; do
    cmd=${tmpl//%p/pg_wal/$f}
    cmd=${cmd//%f/$f}
    t0=$EPOCHREALTIME
    if ! sh -c "$cmd"; then
        echo "archiver.sh: archive command failed for $f: $cmd" >&2
        exit 1
    fi
    t1=$EPOCHREALTIME
    mv "$st/$f.ready" "$st/$f.done"
    echo "$f $t0 $t1" >>"$times"
done
SH
chmod 755 "$S/bin/archiver.sh"

# User postgres must reach everything here (the parent folders too).
chmod 755 "$S"
((EUID != 0)) || chown -R postgres: "$S"
as_pg test -x "$S/bin/archiver.sh" || die "user postgres cannot reach $S: set BENCH_TMP to a folder it can open"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
psql_at() { # psql_at PORT SQL: one value
    "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$S/sock" -p "$1" -U postgres -d postgres -c "$2"
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR) print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
warm() {
    [[ $WARM == 1 ]] || return 0
    local p
    for p in "$@"; do [[ -e $p ]] && find "$p" -type f -exec cat {} + >/dev/null 2>&1; done
    return 0
}
du_b() { du -sb "$1" | cut -f1; }

# --- pgBackRest configuration --------------------------------------------------------
PGDATA=$S/pg/data
PORT=$(free_port)
mkdir -p "$S/sock" "$S/pg"
PGBR=$S/pgbackrest
# pgbr_conf NAME REPO: a configuration file with its own repository and spool
pgbr_conf() {
    local f=$PGBR/$1.conf
    mkdir -p "$2" "$PGBR/$1-spool" "$PGBR/lock" "$PGBR/log"
    cat >"$f" <<EOF
[global]
repo1-path=$2
repo1-retention-full=99
spool-path=$PGBR/$1-spool
lock-path=$PGBR/lock
log-path=$PGBR/log
log-level-console=warn
log-level-file=off
archive-async=$PGBR_ASYNC
process-max=$PGBR_PROCESS_MAX
compress-type=$PGBR_COMPRESS
start-fast=y
EOF
    if [[ $PGBR_CIPHER != none ]]; then
        printf 'repo1-cipher-type=%s\nrepo1-cipher-pass=bench-cipher-pass\n' "$PGBR_CIPHER" >>"$f"
    fi
    cat >>"$f" <<EOF

[bench]
pg1-path=$PGDATA
pg1-port=$PORT
pg1-socket-path=$S/sock
pg1-user=postgres
EOF
    chmod 600 "$f"
    echo "$f"
}
REPO_O=$S/ocvault/repo REPO_O1=$S/ocvault/single-repo
if ((HAVE_PGBR)); then
    PGBR_CONF=$(pgbr_conf main "$PGBR/repo")
    PGBR_CONF1=$(pgbr_conf single "$PGBR/single-repo")
fi
((EUID != 0)) || chown -R postgres: "$S"

# archive_cmd TOOL [single]: the archive_command of TOOL (into its main or single-call repository)
archive_cmd() {
    case $1 in
    ocvault)
        local repo=$REPO_O
        [[ -z ${2:-} ]] || repo=$REPO_O1
        echo "$OCV -q -r $repo --password-file $S/ocvault.pw wal-push --batch $OCVAULT_BATCH %p" ;;
    pgbackrest)
        if [[ -n ${2:-} ]]; then
            echo "pgbackrest --config=$PGBR_CONF1 --stanza=bench --pg1-path=$S/single/data archive-push %p"
        else
            echo "pgbackrest --config=$PGBR_CONF --stanza=bench archive-push %p"
        fi ;;
    esac
}

# --- 1. cluster, repositories, base backups -------------------------------------------
pg_start() { # pg_start DATADIR PORT LOG [-c ...]: start without waiting
    local d=$1 p=$2 l=$3
    shift 3
    as_pg "$PGBIN/pg_ctl" -D "$d" -l "$l" -o "-p $p -k $S/sock -c listen_addresses='' $*" start >/dev/null
}
pg_stop() { as_pg "$PGBIN/pg_ctl" -D "$1" -m fast -w stop >/dev/null; }
wait_ready() { # wait_ready PORT SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        psql_at "$1" 'SELECT 1' >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
export PGHOST=$S/sock PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
# Speed up WAL generation on a shared machine; neither setting changes what the WAL holds.
GEN_OPTS="-c fsync=off -c synchronous_commit=off -c wal_level=replica"

log "initdb; pgbench -i -s $PG_SCALE (archiving off)"
as_pg "$PGBIN/initdb" -A trust -U postgres -D "$PGDATA" >"$S/logs/initdb.log"
pg_start "$PGDATA" "$PORT" "$S/pg/log" "$GEN_OPTS -c archive_mode=off"
wait_ready "$PORT" 60 || die "PostgreSQL did not start (see $S/pg/log)"
as_pg "$PGBIN/pgbench" -q -i -s "$PG_SCALE" >"$S/logs/pgbench-init.log" 2>&1
psql_at "$PORT" 'CHECKPOINT' >/dev/null
pg_stop "$PGDATA"

combined=""
for t in "${TOOLS[@]}"; do combined+="${combined:+ && }$(archive_cmd "$t")"; done
pg_start "$PGDATA" "$PORT" "$S/pg/log" "$GEN_OPTS -c archive_mode=on"
wait_ready "$PORT" 60 || die "PostgreSQL did not restart (see $S/pg/log)"
psql_at "$PORT" "ALTER SYSTEM SET archive_command = '${combined//\'/\'\'}'" >/dev/null
psql_at "$PORT" 'SELECT pg_reload_conf()' >/dev/null
DB_BYTES=$(psql_at "$PORT" "SELECT pg_database_size('postgres')")
log "database: $((DB_BYTES / 1048576)) MiB"

if ((HAVE_OCV)); then
    as_pg "$OCV" -q -r "$REPO_O" --password-file "$S/ocvault.pw" init >"$S/logs/ocvault-init.log" 2>&1 || die "ocvault init failed (see $S/logs/ocvault-init.log)"
    as_pg "$OCV" -q -r "$REPO_O1" --password-file "$S/ocvault.pw" init >>"$S/logs/ocvault-init.log" 2>&1 || die "ocvault init failed (see $S/logs/ocvault-init.log)"
fi
if ((HAVE_PGBR)); then
    as_pg pgbackrest --config="$PGBR_CONF" --stanza=bench stanza-create >"$S/logs/pgbr-stanza.log" 2>&1 || die "pgbackrest stanza-create failed (see $S/logs/pgbr-stanza.log)"
    as_pg pgbackrest --config="$PGBR_CONF1" --stanza=bench stanza-create >>"$S/logs/pgbr-stanza.log" 2>&1 || die "pgbackrest stanza-create failed (see $S/logs/pgbr-stanza.log)"
fi

# timed STEP TOOL RUN CMD...: CMD as user postgres under timer.py; records wall, cpu, rss
timed() {
    local step=$1 tool=$2 run=$3 tf=$S/time.out rc=0
    shift 3
    python3 "$S/bin/timer.py" "$tf" "$@" >>"$S/logs/$step.$tool.out" 2>>"$S/logs/$step.$tool.err" || rc=$?
    ((rc == 0)) || { tail -n 20 "$S/logs/$step.$tool.err" >&2; die "$step $tool failed ($rc): $*"; }
    local wall user sys rss
    read -r wall user sys rss <"$tf"
    record "$step.wall" "$tool" "$run" "$wall"
    record "$step.cpu" "$tool" "$run" "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.3f", u + s }')"
    record "$step.rss" "$tool" "$run" "$rss"
    log "$(printf '%-12s %-10s run %s: wall %ss, CPU %ss+%ss, peak RSS %s MiB' "$step" "$tool" "$run" "$wall" "$user" "$sys" "$((rss / 1024))")"
}
pgpre() { if ((EUID == 0)); then echo runuser -u postgres --; fi; }
read -r -a AS_PG <<<"$(pgpre)"

for t in "${TOOLS[@]}"; do
    sync
    case $t in
    pgbackrest) timed basebackup pgbackrest 1 "${AS_PG[@]}" pgbackrest --config="$PGBR_CONF" --stanza=bench backup --type=full ;;
    ocvault) timed basebackup ocvault 1 "${AS_PG[@]}" "$OCV" -q -r "$REPO_O" --password-file "$S/ocvault.pw" snapshot \
        --command "$PGBIN/pg_basebackup -h $S/sock -p $PORT -U postgres -D - -Ft -X none -c fast" --stdin-filename base.tar ;;
    esac
done
# Every segment of the base-backup phase archived before archiving is paused.
for ((i = 0; ; i++)); do
    n=$(find "$PGDATA/pg_wal/archive_status" -name '*.ready' | wc -l)
    ((n == 0)) && break
    ((i < 600)) || die "archiving of the base-backup phase did not finish (see $S/pg/log)"
    sleep 0.2
done
psql_at "$PORT" "SELECT last_archived_wal, failed_count FROM pg_stat_archiver" >"$S/logs/archiver-after-base.txt"
psql_at "$PORT" "ALTER SYSTEM SET archive_command = ''" >/dev/null
psql_at "$PORT" 'SELECT pg_reload_conf()' >/dev/null
for t in "${TOOLS[@]}"; do
    case $t in
    ocvault) record repo.base ocvault 1 "$(du_b "$REPO_O")" ;;
    pgbackrest) record repo.base pgbackrest 1 "$(du_b "$PGBR/repo")" ;;
    esac
done

# --- 2. WAL to archive ---------------------------------------------------------------
ready_count() { find "$PGDATA/pg_wal/archive_status" -name '*.ready' | wc -l; }
WORKLOAD=(-b tpcb-like)
if ((PG_RANGE_ROWS > 0)); then
    printf '%s\n' "\\set a random(1, 100000 * :scale - $((PG_RANGE_ROWS - 1)))" \
        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN :a AND :a + $((PG_RANGE_ROWS - 1));" >"$S/range.sql"
    chmod 644 "$S/range.sql"
    WORKLOAD=(-b tpcb-like@1 -f "$S/range.sql@1")
fi
pgbench_until() { # pgbench_until N: pgbench in 2-second rounds until N segments are ready
    while (($(ready_count) < $1)); do
        as_pg "$PGBIN/pgbench" -n -c "$PG_CLIENTS" -j "$PG_CLIENTS" -T 2 "${WORKLOAD[@]}" >>"$S/logs/pgbench.log" 2>&1
    done
}
CHECKSUM_SQL="SELECT string_agg(t || ':' || n || ':' || h, ' ' ORDER BY t) FROM (
  SELECT 'accounts' t, count(*) n, coalesce(sum(hashtext(x::text)::bigint), 0) h FROM pgbench_accounts x
  UNION ALL SELECT 'branches', count(*), coalesce(sum(hashtext(x::text)::bigint), 0) FROM pgbench_branches x
  UNION ALL SELECT 'tellers', count(*), coalesce(sum(hashtext(x::text)::bigint), 0) FROM pgbench_tellers x
  UNION ALL SELECT 'history', count(*), coalesce(sum(hashtext(x::text)::bigint), 0) FROM pgbench_history x) s"
log "pgbench until $SEGMENTS segments are ready (archiving paused)"
t_gen=$EPOCHREALTIME
pgbench_until $((SEGMENTS - TAIL_SEGMENTS))
# T: pgbench stopped a second before and after, so the tables at T are the ones checksummed.
CK_T=$(psql_at "$PORT" "$CHECKSUM_SQL")
sleep 1.2
T=$(date -u '+%Y-%m-%d %H:%M:%S+00')
sleep 1.5
# At least one round after T, even when the first loop overshot: recovery to T needs a commit
# after T in the archive, or PostgreSQL ends it with "recovery ended before ... target".
as_pg "$PGBIN/pgbench" -n -c "$PG_CLIENTS" -j "$PG_CLIENTS" -T 2 "${WORKLOAD[@]}" >>"$S/logs/pgbench.log" 2>&1
pgbench_until "$SEGMENTS"
CK_END=$(psql_at "$PORT" "$CHECKSUM_SQL")
psql_at "$PORT" 'SELECT pg_switch_wal()' >/dev/null
sleep 0.5 # the switched segment's .ready
pg_stop "$PGDATA"
gen_s=$(awk -v a="$t_gen" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
mapfile -t WAL < <(find "$PGDATA/pg_wal/archive_status" -name '*.ready' -printf '%f\n' | sed 's/\.ready$//' | LC_ALL=C sort)
NSEG=${#WAL[@]}
WAL_BYTES=0
for f in "${WAL[@]}"; do WAL_BYTES=$((WAL_BYTES + $(stat -c %s "$PGDATA/pg_wal/$f"))); done
log "WAL: $NSEG files ready ($((WAL_BYTES / 1048576)) MiB, ${WAL[0]} .. ${WAL[-1]}) in ${gen_s}s; T = $T"
echo "$CK_T" >"$S/logs/checksum-T.txt"
echo "$CK_END" >"$S/logs/checksum-end.txt"
sync

# --- 3. per-call cost: one segment alone --------------------------------------------
# A data folder holding the first RUNS+1 of these segments (hard links), and pg_control
# (pgBackRest checks it); one `.ready` at a time.
SD=$S/single/data
mkdir -p "$SD/pg_wal/archive_status" "$SD/global"
cp "$PGDATA/global/pg_control" "$SD/global/"
for ((r = 0; r <= RUNS; r++)); do ln "$PGDATA/pg_wal/${WAL[r]}" "$SD/pg_wal/${WAL[r]}"; done
chmod 700 "$SD"
((EUID != 0)) || chown -R postgres: "$S/single"
for ((r = 0; r <= RUNS; r++)); do
    for t in "${TOOLS[@]}"; do
        touch "$SD/pg_wal/archive_status/${WAL[r]}.ready"
        ((EUID != 0)) || chown postgres: "$SD/pg_wal/archive_status/${WAL[r]}.ready"
        warm "$SD/pg_wal/${WAL[r]}"
        python3 "$S/bin/timer.py" "$S/time.out" "${AS_PG[@]}" "$S/bin/archiver.sh" "$SD" "$S/single/times" "$(archive_cmd "$t" single)" \
            >>"$S/logs/single.$t.out" 2>>"$S/logs/single.$t.err" || { tail -n 20 "$S/logs/single.$t.err" >&2; die "single-segment push by $t failed"; }
        # The archiver moved it to .done: the next tool gets it as .ready again.
        rm -f "$SD/pg_wal/archive_status/${WAL[r]}.done"
        read -r _ t0 t1 <"$S/single/times"
        read -r _ user sys rss <"$S/time.out"
        call=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
        if ((r == 0)); then
            log "single      $t: untimed first call ${call}s"
            continue
        fi
        record single.wall "$t" "$r" "$call"
        record single.cpu "$t" "$r" "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.3f", u + s }')"
        record single.rss "$t" "$r" "$rss"
        log "$(printf 'single       %-10s run %s: call %ss, CPU %ss+%ss, peak RSS %s MiB' "$t" "$r" "$call" "$user" "$sys" "$((rss / 1024))")"
    done
done

# --- 4. the same WAL into each main repository -------------------------------------
reset_ready() {
    local f
    for f in "${WAL[@]}"; do
        [[ -e $PGDATA/pg_wal/archive_status/$f.done ]] && mv "$PGDATA/pg_wal/archive_status/$f.done" "$PGDATA/pg_wal/archive_status/$f.ready"
    done
    rm -rf "$PGDATA/pg_wal/ocvault"
    [[ -z ${PGBR:-} ]] || rm -rf "$PGBR/main-spool/archive"
    [[ $(ready_count) == "$NSEG" ]] || die "reset of the .ready state failed"
}
for t in "${TOOLS[@]}"; do
    reset_ready
    sync
    warm "$PGDATA/pg_wal"
    log "archiving $NSEG files with $t"
    timed archive "$t" 1 "${AS_PG[@]}" "$S/bin/archiver.sh" "$PGDATA" "$S/logs/archive.$t.times" "$(archive_cmd "$t")"
    (($(find "$PGDATA/pg_wal/archive_status" -name '*.done' | wc -l) >= NSEG)) || die "$t: not every segment was archived"
    # the per-call times of the loop: median and slowest call
    awk '{ print $3 - $2 }' "$S/logs/archive.$t.times" >"$S/logs/archive.$t.calls"
    record archive.call_median "$t" 1 "$(median <"$S/logs/archive.$t.calls")"
    record archive.call_max "$t" 1 "$(sort -g "$S/logs/archive.$t.calls" | tail -n1)"
    case $t in
    ocvault) record repo.wal ocvault 1 "$(du_b "$REPO_O")" ;;
    pgbackrest)
        record repo.wal pgbackrest 1 "$(du_b "$PGBR/repo")"
        # every segment is in the archive
        max=$(as_pg pgbackrest --config="$PGBR_CONF" --stanza=bench info --output=json |
            python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["archive"][0]["max"])')
        [[ $max == "${WAL[-1]}" ]] || die "pgbackrest: archive ends at $max, not ${WAL[-1]}"
        ;;
    esac
done
if ((HAVE_OCV)); then
    # not timed: the archive passes ocvault's own check (WAL continuity)
    as_pg "$OCV" -q -r "$REPO_O" --password-file "$S/ocvault.pw" check >"$S/logs/ocvault-check.log" 2>&1 ||
        { cat "$S/logs/ocvault-check.log" >&2; die "ocvault check failed after archiving"; }
fi

# --- 5. point-in-time recovery ------------------------------------------------------
WANT=$CK_T
[[ $TARGET == time ]] || WANT=$CK_END
VERIFY_FAIL=0
for ((r = 1; r <= RESTORE_RUNS; r++)); do
    for t in "${TOOLS[@]}"; do
        R=$S/restore/$t-$r
        mkdir -p "$R"
        chmod 700 "$R"
        ((EUID != 0)) || chown -R postgres: "$S/restore"
        case $t in
        ocvault)
            warm "$REPO_O"
            cmd=("$OCV" -q -r "$REPO_O" --password-file "$S/ocvault.pw" pitr --target "$R")
            if [[ $TARGET == time ]]; then cmd+=(--time "$T"); else cmd+=(--latest); fi ;;
        pgbackrest)
            warm "$PGBR/repo"
            rm -rf "$PGBR/main-spool/archive"
            cmd=(pgbackrest --config="$PGBR_CONF" --stanza=bench --pg1-path="$R" restore)
            if [[ $TARGET == time ]]; then cmd+=(--type=time "--target=$T" --target-action=promote); else cmd+=(--type=default); fi ;;
        esac
        sync
        log "restore by $t into $R (target: ${TARGET/time/$T})"
        t0=$EPOCHREALTIME
        timed restore "$t" "$r" "${AS_PG[@]}" "${cmd[@]}"
        t1=$EPOCHREALTIME
        # archive_mode off: the restored server must not archive its new timeline into
        # the repositories (the base backup's postgresql.auto.conf names them).
        rport=$(free_port)
        pg_start "$R" "$rport" "$S/restore/$t-$r.log" "-c archive_mode=off"
        promoted=0
        for ((i = 0; i < 36000; i++)); do # up to an hour
            v=$(psql_at "$rport" 'SELECT pg_is_in_recovery()' 2>/dev/null) || v=
            [[ $v == f ]] && { promoted=1; break; }
            # the server stopped (recovery failed); the pid file appears shortly after the start
            if ((i > 50)) && [[ ! -f $R/postmaster.pid ]]; then break; fi
            sleep 0.1
        done
        t2=$EPOCHREALTIME
        if ((promoted == 0)); then
            tail -n 30 "$S/restore/$t-$r.log" >&2
            die "$t: the restored server was not promoted (see $S/restore/$t-$r.log)"
        fi
        record recovery.wall "$t" "$r" "$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.3f", b - a }')"
        record pitr.wall "$t" "$r" "$(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.3f", b - a }')"
        log "$t: promoted $(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.1f", b - a }')s after the restore began"
        got=$(psql_at "$rport" "$CHECKSUM_SQL")
        if [[ $got == "$WANT" ]]; then
            log "verify: $t restore holds the tables as at ${TARGET/time/T}"
            record verify "$t" "$r" ok
        else
            log "VERIFY FAILED: $t restore: $got, expected $WANT"
            record verify "$t" "$r" FAILED
            VERIFY_FAIL=1
        fi
        pg_stop "$R"
    done
done

# --- 6. report ------------------------------------------------------------------------
for t in "${TOOLS[@]}"; do
    case $t in
    ocvault) record repo.final ocvault 1 "$(du_b "$REPO_O")" ;;
    pgbackrest) record repo.final pgbackrest 1 "$(du_b "$PGBR/repo")" ;;
    esac
done
val() { awk -F'\t' -v m="$1" -v t="$2" '$1 == m && $2 == t { print $4 }' "$RES" | median; }
version_of() {
    case $1 in
    ocvault) "$OCV" --version ;;
    pgbackrest) pgbackrest version ;;
    esac
}
versions=()
for t in "${TOOLS[@]}"; do versions+=("$(version_of "$t")"); done
o=ocvault p=pgbackrest
row() { # row LABEL METRIC SCALE FORMAT: medians, scaled, and the ratio o/p
    local a b
    a=$( ((HAVE_OCV)) && val "$2" "$o" || true)
    b=$( ((HAVE_PGBR)) && val "$2" "$p" || true)
    awk -v l="$1" -v a="$a" -v b="$b" -v k="$3" -v f="$4" 'BEGIN {
        fa = (a == "") ? "-" : sprintf(f, a * k); fb = (b == "") ? "-" : sprintf(f, b * k)
        r = (a != "" && b != "" && b > 0) ? sprintf("%.2fx", a / b) : ""
        printf "%-44s %12s %12s %8s\n", l, fa, fb, r }'
}
echo
echo "$(IFS=,; echo "${versions[*]}" | sed 's/,/; /g'); $("$PGBIN/postgres" --version); $(nproc) cores; load before the report $(cut -d' ' -f1-3 /proc/loadavg)"
if ((HAVE_PGBR)); then echo "pgBackRest: archive-async=$PGBR_ASYNC process-max=$PGBR_PROCESS_MAX compress-type=$PGBR_COMPRESS repo1-cipher-type=$PGBR_CIPHER; ocvault: wal-push --batch $OCVAULT_BATCH"; fi
echo "WAL: $NSEG files, $((WAL_BYTES / 1048576)) MiB of pgbench (scale $PG_SCALE, $PG_CLIENTS clients); database $((DB_BYTES / 1048576)) MiB; recovery target: ${TARGET/time/$T}"
echo
printf '%-44s %12s %12s %8s\n' "" ocvault pgbackrest "o/p"
row "archive 1 segment alone, s (median of $RUNS)" single.wall 1 '%.3f'
row "  CPU s (incl. detached workers)" single.cpu 1 '%.3f'
row "  peak RSS MiB" single.rss 0.0009765625 '%.1f'
row "archive $NSEG files, archiver loop, s" archive.wall 1 '%.2f'
row "  per file, ms" archive.wall "$(awk -v n="$NSEG" 'BEGIN { print 1000 / n }')" '%.1f'
row "  median call, ms" archive.call_median 1000 '%.1f'
row "  slowest call, ms" archive.call_max 1000 '%.1f'
row "  CPU s (incl. detached workers)" archive.cpu 1 '%.2f'
row "  peak RSS MiB" archive.rss 0.0009765625 '%.1f'
row "base backup, s" basebackup.wall 1 '%.2f'
row "  CPU s" basebackup.cpu 1 '%.2f'
row "PITR: restore command, s (median of $RESTORE_RUNS)" restore.wall 1 '%.2f'
row "  restore command peak RSS MiB" restore.rss 0.0009765625 '%.1f'
row "  server start to promoted, s" recovery.wall 1 '%.2f'
row "  restore + recovery, s" pitr.wall 1 '%.2f'
row "repository after base backup, MiB" repo.base 0.00000095367431640625 '%.1f'
row "repository at the end, MiB" repo.final 0.00000095367431640625 '%.1f'
for t in "${TOOLS[@]}"; do
    echo "  $t: WAL stored $(awk -v a="$(val repo.wal "$t")" -v b="$(val repo.base "$t")" -v w="$WAL_BYTES" 'BEGIN { printf "%.1f MiB (%.1f%% of the WAL)", (a - b) / 1048576, 100 * (a - b) / w }'); restores verified: $(awk -F'\t' -v t="$t" '$1 == "verify" && $2 == t { printf "%s%s", sep, $4; sep = " " }' "$RES")"
done
echo
echo "CPU = user + sys of every process the step started (detached workers too), not the"
echo "PostgreSQL server's; the recovery's restore_command processes are not counted."
echo "o/p = ocvault / pgbackrest (below 1: ocvault faster or smaller)."
echo "On a machine shared with other work the figures are only indicative: check the load."
((VERIFY_FAIL == 0)) || die "a restored cluster did not hold the expected tables"
FAILED=0

#!/usr/bin/env bash
# Compare ocvault with restic, rustic and borg on the same data: wall time, CPU
# time, peak RSS and repository size for snapshot, unchanged re-snapshot,
# restore, check, check --read-data and a churned re-snapshot of a source tree,
# then stdin snapshots of two pg_dumps of a pgbench-shaped database (before and
# after a run of updates) and the dump back to stdout; with PRUNE=1,
# forget --prune on a history of many small snapshots.
#
# Usage: benches/compare.sh            (all settings through the environment)
# Disk: each run keeps its copy of the source and every tool's restore until the end
# (about 25 GB for the kernel tree, 3 runs, 4 tools), see the note at the runs.
#   TOOLS="ocvault restic rustic borg"  tools to run (ocvault first: ratios are
#                    ocvault / each other tool).  borg is installed with apt-get
#                    (borgbackup) and rustic with `cargo install rustic-rs
#                    --locked` (about 40 minutes on 2 cores) when missing.
#   DATA=dir         tree to back up (default: the kernel source from the
#                    linux-source package, extracted into the scratch dir;
#                    the package is installed with apt-get if missing)
#   PG=1             make the two dumps with benches/pg_dumps.sh (a PostgreSQL it
#                    starts on 127.0.0.1; PG_SCALE=80 gives ~800 MB, PG_UPDATES=2000
#                    transactions between them); 0 skips the dump steps
#   DUMP=file DUMP2=file  use these dumps instead (DUMP2 optional)
#   RUNS=3           repetitions; medians are reported
#   OCVAULT=path     ocvault binary (default: target/release/ocvault)
#   OCVAULT_BASE=path  a second ocvault binary, run as the tool `base` (e.g. the
#                    build before a change: TOOLS="ocvault base" compares the two
#                    in one run; its o/x ratios are after / before)
#   RESTIC=restic RUSTIC=rustic BORG=borg   the other tools' binaries
#   VERIFY=1         on the first run, check restores/dumps equal the source
#   WARM=1           before each measured command, read its source, input and
#                    repository (and the tools' caches) once: every tool starts
#                    from a warm page cache; 0 measures whatever the cache holds
#   KEEP=0           1 keeps the scratch dir (results and logs) afterwards
#   RESULTS=file     also copy the raw per-run results (TSV) here
#   CHURN_PCT=1      churned re-snapshot: % of files edited (a line appended)
#   CHURN_ADD=43     ... files added
#   CHURN_DEL=40     ... files removed
#   PRUNE=0          1 adds the prune scenario (once, after the runs): PRUNE_SNAPS
#                    snapshots of PRUNE_FILES files of PRUNE_KIB KiB each, with
#                    PRUNE_PCT % of the files rewritten between snapshots, then
#                    `forget --keep-last PRUNE_KEEP --prune` is measured
#   PRUNE_SNAPS=200 PRUNE_FILES=200 PRUNE_KIB=100 PRUNE_PCT=5 PRUNE_KEEP=100
#
# Steps per run: snapshot (initial), resnapshot (unchanged), restore, check
# (structure), check-data (check --read-data), churn (re-snapshot after editing
# CHURN_PCT % of the files, adding CHURN_ADD and removing CHURN_DEL), then with
# dumps: stdin (the first dump from standard input into a fresh repository),
# stdin2 (the second dump into the same repository; the report shows the bytes
# it added) and dump (the latest dump back to standard output).  Each run first
# copies DATA (cp -a) into the scratch dir and backs up that copy, so the churn
# can edit it in place: every tool then finds its parent snapshot by path (borg:
# its files cache) and compares the files' metadata as usual.
# The churn is seeded by the run number: the same files in every measurement.
#
# Each run uses fresh repositories in a scratch dir under ${TMPDIR:-/tmp}.
# Within a run the tools alternate step by step (the order rotates between
# runs), and `sync` runs between steps, outside the measurement.
# The page cache is left warm: every tool reads the same cached source.
# Settings: each tool's defaults, except borg's compression (zstd,3; its
# default is lz4) and encryption (repokey-blake2), as in the issue's anchors.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
read -r -a TOOLS <<<"${TOOLS:-ocvault restic rustic borg}"
RUNS=${RUNS:-3}
OCVAULT=${OCVAULT:-$ROOT/target/release/ocvault}
OCVAULT_BASE=${OCVAULT_BASE:-}
RESTIC=${RESTIC:-restic}
RUSTIC=${RUSTIC:-rustic}
BORG=${BORG:-borg}
VERIFY=${VERIFY:-1}
KEEP=${KEEP:-0}
PG=${PG:-1}
WARM=${WARM:-1}
DUMP=${DUMP:-}
DUMP2=${DUMP2:-}
DATA=${DATA:-}
CHURN_PCT=${CHURN_PCT:-1}
CHURN_ADD=${CHURN_ADD:-43}
CHURN_DEL=${CHURN_DEL:-40}
PRUNE=${PRUNE:-0}
PRUNE_SNAPS=${PRUNE_SNAPS:-200}
PRUNE_FILES=${PRUNE_FILES:-200}
PRUNE_KIB=${PRUNE_KIB:-100}
PRUNE_PCT=${PRUNE_PCT:-5}
PRUNE_KEEP=${PRUNE_KEEP:-100}
TIME=/usr/bin/time
export OCVAULT_PASSWORD=${OCVAULT_PASSWORD:-bench-password}
export RESTIC_PASSWORD=${RESTIC_PASSWORD:-bench-password}
export RUSTIC_PASSWORD=${RUSTIC_PASSWORD:-bench-password}
export BORG_PASSPHRASE=${BORG_PASSPHRASE:-bench-password}
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_CHECK_I_KNOW_WHAT_I_AM_DOING=YES

die() { echo "compare.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ ${TOOLS[0]:-} == ocvault ]] || die "TOOLS must start with ocvault"
for t in "${TOOLS[@]}"; do
    case $t in
    ocvault) [[ -x $OCVAULT ]] || die "ocvault binary not found at $OCVAULT (cargo build --release?)" ;;
    base) [[ -n $OCVAULT_BASE && -x $OCVAULT_BASE ]] || die "tool base needs OCVAULT_BASE=path to an ocvault binary" ;;
    restic) command -v "$RESTIC" >/dev/null || die "restic not found (apt-get install -y restic)" ;;
    borg)
        if ! command -v "$BORG" >/dev/null; then
            log "installing borgbackup"
            apt-get install -y borgbackup >/dev/null || { apt-get update >/dev/null && apt-get install -y borgbackup >/dev/null; }
        fi
        command -v "$BORG" >/dev/null || die "borg not found (apt-get install -y borgbackup)" ;;
    rustic)
        if ! command -v "$RUSTIC" >/dev/null; then
            log "installing rustic-rs with cargo (this takes a while)"
            cargo install rustic-rs --locked >/dev/null 2>&1 || die "cargo install rustic-rs --locked failed"
            RUSTIC=$(command -v rustic || echo "${CARGO_HOME:-$HOME/.cargo}/bin/rustic")
        fi
        command -v "$RUSTIC" >/dev/null || die "rustic not found (cargo install rustic-rs --locked)" ;;
    *) die "unknown tool $t (ocvault, base, restic, rustic, borg)" ;;
    esac
done
[[ -x $TIME ]] || die "$TIME not found (apt-get install -y time)"
[[ -z $DUMP || -f $DUMP ]] || die "DUMP=$DUMP is not a file"
[[ -z $DUMP2 || -f $DUMP2 ]] || die "DUMP2=$DUMP2 is not a file"
for v in CHURN_PCT CHURN_ADD CHURN_DEL PRUNE_SNAPS PRUNE_FILES PRUNE_KIB PRUNE_PCT PRUNE_KEEP; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer"
done

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/ocvault-bench.XXXXXX")
cleanup() {
    local rc=$?
    if [[ $KEEP == 1 ]]; then
        log "scratch dir kept: $SCRATCH"
    else
        rm -rf -- "$SCRATCH"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Both ocvault builds run from fresh copies made now: how recently an executable was written
# changes its peak RSS by about 2 MiB on this kernel (a freshly written file's page cache is
# mapped in larger pieces), which would otherwise show as a difference between builds.
mkdir -p "$SCRATCH/bin"
cp "$OCVAULT" "$SCRATCH/bin/ocvault" && OCVAULT=$SCRATCH/bin/ocvault
if [[ -n $OCVAULT_BASE ]]; then cp "$OCVAULT_BASE" "$SCRATCH/bin/ocvault-base" && OCVAULT_BASE=$SCRATCH/bin/ocvault-base; fi
export RESTIC_CACHE_DIR=$SCRATCH/restic-cache
export RUSTIC_CACHE_DIR=$SCRATCH/rustic-cache
export BORG_BASE_DIR=$SCRATCH/borg-base
RES=$SCRATCH/results.tsv   # run step tool rc wall user sys rss_kib repo_bytes
: >"$RES"

# --- data -------------------------------------------------------------------
if [[ -z $DATA ]]; then
    shopt -s nullglob
    tarballs=(/usr/src/linux-source-*.tar.*)
    if ((${#tarballs[@]} == 0)); then
        log "installing linux-source"
        apt-get install -y linux-source >/dev/null || { apt-get update >/dev/null && apt-get install -y linux-source >/dev/null; }
        tarballs=(/usr/src/linux-source-*.tar.*)
    fi
    shopt -u nullglob
    ((${#tarballs[@]} > 0)) || die "no /usr/src/linux-source-*.tar.* after installing linux-source"
    log "extracting ${tarballs[-1]}"
    mkdir -p "$SCRATCH/data"
    tar -xf "${tarballs[-1]}" -C "$SCRATCH/data"
    DATA=$(find "$SCRATCH/data" -mindepth 1 -maxdepth 1 -type d | head -n1)
fi
[[ -d $DATA ]] || die "DATA=$DATA is not a directory"
DATA=$(cd "$DATA" && pwd -P)
SRC=   # the per-run copy that is backed up: $SCRATCH/src-RUN/NAME
log "data: $DATA ($(du -sh "$DATA" | cut -f1), $(find "$DATA" -type f | wc -l) files)"
if [[ -z $DUMP && $PG == 1 ]]; then
    export PG_UPDATES=${PG_UPDATES:-2000}
    "$ROOT/benches/pg_dumps.sh" "$SCRATCH/pg"
    DUMP=$SCRATCH/pg/dump1.sql DUMP2=$SCRATCH/pg/dump2.sql
fi
abspath() { echo "$(cd "$(dirname "$1")" && pwd -P)/$(basename "$1")"; }
[[ -z $DUMP ]] || { DUMP=$(abspath "$DUMP"); log "dump: $DUMP ($(du -h "$DUMP" | cut -f1))"; }
[[ -z $DUMP2 ]] || { DUMP2=$(abspath "$DUMP2"); log "dump2: $DUMP2 ($(du -h "$DUMP2" | cut -f1))"; }

# --- tool adapters ------------------------------------------------------------
# cmd_<action> TOOL REPO [...] sets the array CMD to the command line.
# borg names each archive by its creation time; borg_last REPO prints the latest.
# The ocvault binary behind tool $1 (`base` is the second build).
ocv_bin() { if [[ $1 == base ]]; then echo "$OCVAULT_BASE"; else echo "$OCVAULT"; fi; }
BORG_NAME='{now:%Y-%m-%dT%H:%M:%S.%f}'
borg_last() { "$BORG" list --last 1 --format '{archive}' "$1"; }
tool_init() {
    case $1 in
    ocvault | base) "$(ocv_bin "$1")" --quiet --repo "$2" init >/dev/null ;;
    restic) "$RESTIC" --quiet -r "$2" init >/dev/null ;;
    rustic) "$RUSTIC" --no-progress --log-level warn -r "$2" init >/dev/null 2>&1 ;;
    borg) "$BORG" init -e repokey-blake2 "$2" >/dev/null 2>&1 ;;
    esac
}
cmd_snapshot() { # snapshot TOOL REPO [PATH]
    local path=${3:-$SRC}
    case $1 in
    ocvault | base) CMD=("$(ocv_bin "$1")" --quiet --repo "$2" snapshot "$path") ;;
    restic) CMD=("$RESTIC" --quiet -r "$2" backup "$path") ;;
    rustic) CMD=("$RUSTIC" --no-progress --log-level warn -r "$2" backup "$path") ;;
    borg) CMD=("$BORG" create --compression zstd,3 "$2::$BORG_NAME" "$path") ;;
    esac
}
cmd_check() { # check TOOL REPO [--read-data]
    case $1 in
    ocvault | base) CMD=("$(ocv_bin "$1")" --quiet --repo "$2" check ${3:+"$3"}) ;;
    restic) CMD=("$RESTIC" --quiet -r "$2" check ${3:+"$3"}) ;;
    rustic) CMD=("$RUSTIC" --no-progress --log-level warn -r "$2" check ${3:+"$3"}) ;;
    borg) CMD=("$BORG" check ${3:+--verify-data} "$2") ;;
    esac
}
cmd_snapshot_at() { # snapshot_at TOOL REPO PATH EPOCH: snapshot with a recorded time
    case $1 in
    ocvault | base) CMD=("$(ocv_bin "$1")" --quiet --repo "$2" snapshot --time "$(date -u -d "@$4" +%Y-%m-%dT%H:%M:%SZ)" "$3") ;;
    restic) CMD=("$RESTIC" --quiet -r "$2" backup --time "$(date -d "@$4" '+%Y-%m-%d %H:%M:%S')" "$3") ;;
    rustic) CMD=("$RUSTIC" --no-progress --log-level warn -r "$2" backup --time "$(date -d "@$4" '+%Y-%m-%d %H:%M:%S')" "$3") ;;
    borg) CMD=("$BORG" create --compression zstd,3 --timestamp "$(date -u -d "@$4" +%Y-%m-%dT%H:%M:%S)" "$2::s$4" "$3") ;;
    esac
}
cmd_forget_prune() { # forget_prune TOOL REPO KEEP
    case $1 in
    ocvault | base) CMD=("$(ocv_bin "$1")" --quiet --repo "$2" forget --keep-last "$3" --prune --max-unused 5%) ;;
    restic) CMD=("$RESTIC" --quiet -r "$2" forget --keep-last "$3" --prune) ;;
    rustic) CMD=("$RUSTIC" --no-progress --log-level warn -r "$2" forget --keep-last "$3" --prune) ;;
    # borg frees space in a separate step: prune, then compact
    borg) CMD=(sh -c '"$0" prune --keep-last "$2" "$1" && "$0" compact "$1"' "$BORG" "$2" "$3") ;;
    esac
}
cmd_restore() { # restore TOOL REPO TARGET
    case $1 in
    ocvault | base) CMD=("$(ocv_bin "$1")" --quiet --repo "$2" restore latest --target "$3") ;;
    restic) CMD=("$RESTIC" --quiet -r "$2" restore latest --target "$3") ;;
    rustic) CMD=("$RUSTIC" --no-progress --log-level warn -r "$2" restore latest "$3") ;;
    borg) CMD=(env -C "$3" "$BORG" extract "$2::$(borg_last "$2")") ;;
    esac
}
cmd_stdin() {
    case $1 in
    ocvault | base) CMD=("$(ocv_bin "$1")" --quiet --repo "$2" snapshot --stdin --stdin-filename db.sql) ;;
    restic) CMD=("$RESTIC" --quiet -r "$2" backup --stdin --stdin-filename db.sql) ;;
    # --force: without it rustic 0.11.4 takes the stdin file from the parent snapshot
    # unread (the second dump added 0 bytes and dumped back as the first)
    rustic) CMD=("$RUSTIC" --no-progress --log-level warn -r "$2" backup --force --stdin-filename db.sql -) ;;
    borg) CMD=("$BORG" create --compression zstd,3 --stdin-name db.sql "$2::$BORG_NAME" -) ;;
    esac
}
cmd_dump() {
    case $1 in
    ocvault | base) CMD=("$(ocv_bin "$1")" --quiet --repo "$2" dump latest db.sql) ;;
    restic) CMD=("$RESTIC" --quiet -r "$2" dump latest /db.sql) ;;
    rustic) CMD=("$RUSTIC" --no-progress --log-level warn -r "$2" dump latest:db.sql) ;;
    borg) CMD=("$BORG" extract --stdout "$2::$(borg_last "$2")" db.sql) ;;
    esac
}
# Where a restore of $DATA ends up inside the target.
restored_root() {
    case $1 in
    ocvault | base) echo "$2/$(basename "$SRC")" ;;
    restic | rustic) echo "$2$SRC" ;;
    borg) echo "$2/${SRC#/}" ;;
    esac
}

# warm PATH...: read every file once, so each tool starts from a warm page cache whatever ran
# before it (a kernel may evict file pages left unused for a while: this machine runs DAMON's
# pageout scheme on pages idle for about a minute).
warm() {
    [[ $WARM == 1 ]] || return 0
    local p
    for p in "$@"; do
        [[ -e $p ]] && find "$p" -type f -exec cat {} + >/dev/null 2>&1
    done
    return 0
}

# measure RUN STEP TOOL REPO STDIN STDOUT CMD...: run CMD under /usr/bin/time
# and append a result line; a failing command is recorded with its exit code.
measure() {
    local run=$1 step=$2 tool=$3 repo=$4 in=$5 out=$6
    shift 6
    local tf=$SCRATCH/time.out errf=$SCRATCH/logs/$run.$step.$tool.err rc=0
    case $step in
    snapshot | resnapshot | churn) warm "$SRC" ;;
    esac
    [[ $in == /dev/null ]] || warm "$in"
    warm "$repo" "$RESTIC_CACHE_DIR" "$RUSTIC_CACHE_DIR" "$BORG_BASE_DIR"
    sync
    $TIME -f '%e %U %S %M' -o "$tf" "$@" <"$in" >"$out" 2>"$errf" || rc=$?
    local t
    t=$(tail -n1 "$tf")
    if ((rc != 0)); then
        log "FAILED ($rc): $step $tool: $*"
        sed 's/^/    /' "$errf" | tail -n 20 >&2
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$step" "$tool" "$rc" "${t// /$'\t'}" \
        "$(du -sb "$repo" | cut -f1)" >>"$RES"
    log "run $run  $(printf '%-11s %-8s' "$step" "$tool") wall ${t%% *}s  (time: $t)"
}

# shuffled DIR SEED: the regular files under DIR (relative paths), in an order
# fixed by SEED.
shuffled() {
    (cd "$1" && find . -type f -printf '%P\n') | LC_ALL=C sort |
        awk -v seed="$2" 'BEGIN { srand(seed) } { printf "%.9f\t%s\n", rand(), $0 }' |
        LC_ALL=C sort -k1,1 | cut -f2-
}
# churn_tree DIR SEED: append a line to CHURN_PCT % of the files, add CHURN_ADD
# files (8 KiB of base64 text each, beside randomly chosen files) and remove
# CHURN_DEL others.  The three sets are disjoint.
churn_tree() {
    local dir=$1 seed=$2 list n nedit i f
    list=$SCRATCH/churn.list
    shuffled "$dir" "$seed" >"$list"
    n=$(wc -l <"$list")
    nedit=$(((n * CHURN_PCT + 50) / 100))
    ((nedit + CHURN_ADD + CHURN_DEL <= n)) || die "tree too small to churn"
    # (awk, not head/tail: with pipefail a SIGPIPE'd tail would end the script)
    awk -v a=1 -v b="$nedit" 'NR >= a && NR <= b' "$list" | while IFS= read -r f; do
        printf '/* ocvault-bench churn %s */\n' "$seed" >>"$dir/$f"
    done
    i=0
    awk -v a=$((nedit + 1)) -v b=$((nedit + CHURN_ADD)) 'NR >= a && NR <= b' "$list" | while IFS= read -r f; do
        i=$((i + 1))
        head -c 6144 /dev/urandom | base64 >"$dir/$(dirname "$f")/ocvault-bench-new-$seed-$i.txt"
    done
    awk -v a=$((nedit + CHURN_ADD + 1)) -v b=$((nedit + CHURN_ADD + CHURN_DEL)) 'NR >= a && NR <= b' "$list" | while IFS= read -r f; do
        rm -f -- "$dir/$f"
    done
    log "churn: edited $nedit of $n files, added $CHURN_ADD, removed $CHURN_DEL"
}

list_meta() { find . \( -type d -printf '%y %m %p\n' \) -o \( -type f -printf '%y %m %s %T@ %p\n' \) -o -printf '%y %m %p -> %l\n'; }
verify_tree() { # verify_tree TOOL DIR
    local root
    root=$(restored_root "$1" "$2")
    # The copy SRC was backed up; compare with DATA itself (cp -a kept contents,
    # modes and mtimes, so the two are equal before the churn).
    if diff -r --no-dereference -q "$DATA" "$root" >"$SCRATCH/logs/diff.$1" 2>&1; then
        # Also compare types, modes, file sizes and mtimes, symlink targets (a directory's
        # st_size depends on the file system's history, so it is left out).
        if diff <(cd "$DATA" && list_meta | sort) <(cd "$root" && list_meta | sort) >>"$SCRATCH/logs/diff.$1"; then
            log "verify: $1 restore equals the source (contents, types, modes, sizes, mtimes, symlinks)"
        else
            log "VERIFY FAILED: $1 restore differs in metadata:"; head -n 20 "$SCRATCH/logs/diff.$1" >&2
        fi
    else
        log "VERIFY FAILED: $1 restore differs from the source:"; head -n 20 "$SCRATCH/logs/diff.$1" >&2
    fi
}

# stdin_step STEP FILE: each tool snapshots FILE from standard input into its stdin repository.
stdin_step() {
    for t in "${tools[@]}"; do
        cmd_stdin "$t" "$SCRATCH/stdin-$t"
        measure "$run" "$1" "$t" "$SCRATCH/stdin-$t" "$2" /dev/null "${CMD[@]}"
    done
}

# --- runs -------------------------------------------------------------------
mkdir -p "$SCRATCH/logs"
for ((run = 1; run <= RUNS; run++)); do
    # rotate the order by run, so no tool always goes first
    n=${#TOOLS[@]}
    tools=()
    for ((i = 0; i < n; i++)); do tools+=("${TOOLS[(i + run - 1) % n]}"); done
    # Nothing made in a run is deleted before the end: on ext4, creating many files within
    # about a minute of deleting many others costs seconds of system time (the inode
    # allocator skips recently deleted inodes one by one), whichever tool comes next.
    SRC=$SCRATCH/src-$run/$(basename "$DATA")
    mkdir -p "$SCRATCH/src-$run"
    log "run $run: copying $DATA to $SRC"
    cp -a "$DATA" "$SRC"
    for t in "${tools[@]}"; do
        rm -rf "$SCRATCH/repo-$t" "$SCRATCH/stdin-$t"
        tool_init "$t" "$SCRATCH/repo-$t"
        [[ -z $DUMP ]] || tool_init "$t" "$SCRATCH/stdin-$t"
    done
    for t in "${tools[@]}"; do
        cmd_snapshot "$t" "$SCRATCH/repo-$t"
        measure "$run" snapshot "$t" "$SCRATCH/repo-$t" /dev/null /dev/null "${CMD[@]}"
    done
    for t in "${tools[@]}"; do
        cmd_snapshot "$t" "$SCRATCH/repo-$t"
        measure "$run" resnapshot "$t" "$SCRATCH/repo-$t" /dev/null /dev/null "${CMD[@]}"
    done
    for t in "${tools[@]}"; do
        tgt=$SCRATCH/restore-$run-$t
        mkdir -p "$tgt"
        cmd_restore "$t" "$SCRATCH/repo-$t" "$tgt"
        measure "$run" restore "$t" "$SCRATCH/repo-$t" /dev/null /dev/null "${CMD[@]}"
        if ((run == 1)) && [[ $VERIFY == 1 ]]; then verify_tree "$t" "$tgt"; fi
    done
    for t in "${tools[@]}"; do
        cmd_check "$t" "$SCRATCH/repo-$t"
        measure "$run" check "$t" "$SCRATCH/repo-$t" /dev/null /dev/null "${CMD[@]}"
    done
    for t in "${tools[@]}"; do
        cmd_check "$t" "$SCRATCH/repo-$t" --read-data
        measure "$run" check-data "$t" "$SCRATCH/repo-$t" /dev/null /dev/null "${CMD[@]}"
    done
    churn_tree "$SRC" "$run"
    for t in "${tools[@]}"; do
        cmd_snapshot "$t" "$SCRATCH/repo-$t"
        measure "$run" churn "$t" "$SCRATCH/repo-$t" /dev/null /dev/null "${CMD[@]}"
    done
    if [[ -n $DUMP ]]; then
        stdin_step stdin "$DUMP"
        last=$DUMP
        if [[ -n $DUMP2 ]]; then
            stdin_step stdin2 "$DUMP2"
            last=$DUMP2
        fi
        for t in "${tools[@]}"; do
            cmd_dump "$t" "$SCRATCH/stdin-$t"
            measure "$run" dump "$t" "$SCRATCH/stdin-$t" /dev/null /dev/null "${CMD[@]}"
            if ((run == 1)) && [[ $VERIFY == 1 ]]; then
                if "${CMD[@]}" 2>/dev/null | cmp -s - "$last"; then
                    log "verify: $t dump equals $last"
                else
                    log "VERIFY FAILED: $t dump differs from $last"
                fi
            fi
        done
    fi
    rm -rf "$SCRATCH"/repo-* "$SCRATCH"/stdin-* "$RESTIC_CACHE_DIR" "$RUSTIC_CACHE_DIR" "$BORG_BASE_DIR"
done

# --- prune scenario -------------------------------------------------------------
# One history per tool, built from the same sequence of trees (the tools
# alternate per snapshot, with recorded times one hour apart), then one
# measured `forget --keep-last PRUNE_KEEP --prune` each.
if [[ $PRUNE == 1 ]]; then
    PT=$SCRATCH/prune-src/tree
    rm -rf "$SCRATCH/prune-src"
    mkdir -p "$PT"
    for ((i = 1; i <= PRUNE_FILES; i++)); do
        head -c $((PRUNE_KIB * 1024)) /dev/urandom >"$PT/f$i.bin"
    done
    tools=("${TOOLS[@]}")
    for t in "${tools[@]}"; do
        rm -rf "$SCRATCH/prune-$t"
        tool_init "$t" "$SCRATCH/prune-$t"
    done
    nrew=$(((PRUNE_FILES * PRUNE_PCT + 50) / 100))
    t0=$(date -d '2024-01-01 00:00:00 UTC' +%s)
    log "prune: building $PRUNE_SNAPS snapshots of $PRUNE_FILES x $PRUNE_KIB KiB, $nrew files rewritten between snapshots"
    for ((s = 1; s <= PRUNE_SNAPS; s++)); do
        if ((s > 1)); then
            for f in $(shuf -i 1-"$PRUNE_FILES" -n "$nrew" --random-source=<(yes "$s")); do
                head -c $((PRUNE_KIB * 1024)) /dev/urandom >"$PT/f$f.bin"
            done
        fi
        for t in "${tools[@]}"; do
            cmd_snapshot_at "$t" "$SCRATCH/prune-$t" "$PT" $((t0 + 3600 * s))
            "${CMD[@]}" >/dev/null 2>>"$SCRATCH/logs/prune-build.$t.err" || die "prune: snapshot $s of $t failed (see logs)"
        done
        ((s % 50)) || log "prune: $s snapshots"
    done
    for t in "${tools[@]}"; do
        log "prune: $t repo before: $(du -sb "$SCRATCH/prune-$t" | awk '{printf "%.1f MiB", $1 / 1048576}')"
    done
    for t in "${tools[@]}"; do
        cmd_forget_prune "$t" "$SCRATCH/prune-$t" "$PRUNE_KEEP"
        measure 1 prune "$t" "$SCRATCH/prune-$t" /dev/null /dev/null "${CMD[@]}"
    done
    # Not measured: the pruned repositories must still check (with data).
    for t in "${tools[@]}"; do
        cmd_check "$t" "$SCRATCH/prune-$t" --read-data
        if "${CMD[@]}" >"$SCRATCH/logs/prune-check.$t.out" 2>&1; then
            log "verify: $t repository checks (--read-data) after prune"
        else
            log "VERIFY FAILED: $t check --read-data after prune:"; tail -n 20 "$SCRATCH/logs/prune-check.$t.out" >&2
        fi
    done
    rm -rf "$SCRATCH"/prune-*
fi

[[ -z ${RESULTS:-} ]] || cp "$RES" "$RESULTS"

# --- report -------------------------------------------------------------------
# Median of each metric per (step, tool) over successful runs.
AWK_MEDIAN='
function median(list,   a, n, i, t, j) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j+1] = a[j]; a[j+1] = t }
    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}'
version_of() {
    case $1 in
    ocvault) "$OCVAULT" --version | awk '{print "ocvault", $2}' ;;
    base) "$OCVAULT_BASE" --version | awk '{print "base: ocvault", $2}' ;;
    restic) "$RESTIC" version | awk '{print $1, $2}' ;;
    rustic) "$RUSTIC" --version | awk '{print $1, $2}' ;;
    borg) "$BORG" --version ;;
    esac
}
versions=()
for t in "${TOOLS[@]}"; do versions+=("$(version_of "$t")"); done
echo
echo "$(IFS=,; echo "${versions[*]}" | sed 's/,/, /g'); RUNS=$RUNS; $(nproc) cores"
echo "data: $DATA (a copy per run)${DUMP:+; dump: $DUMP}${DUMP2:+; dump2: $DUMP2}"
echo "churn: ${CHURN_PCT}% of files edited, +$CHURN_ADD -$CHURN_DEL files"
[[ $PRUNE != 1 ]] || echo "prune: $PRUNE_SNAPS snapshots of $PRUNE_FILES x $PRUNE_KIB KiB files, $PRUNE_PCT% rewritten between snapshots; forget --keep-last $PRUNE_KEEP --prune (run once)"
echo
awk -F'\t' "$AWK_MEDIAN"'
function ratio(o, x) { return (x > 0) ? sprintf("%.2fx", o / x) : "" }
{
    k = $2 SUBSEP $3
    if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
    if ($4 != 0) { fail[k]++; next }
    wall[k] = wall[k] " " $5; cpu[k] = cpu[k] " " ($6 + $7)
    rss[k] = rss[k] " " $8; repo[k] = repo[k] " " $9
}
END {
    fmt = "%-11s %-8s %9s %9s %6s %9s %9s %8s %8s %8s %8s\n"
    printf fmt, "step", "tool", "wall s", "CPU s", "CPU/w", "RSS MiB", "repo MiB", "wall o/x", "CPU o/x", "RSS o/x", "repo o/x"
    for (i = 1; i <= nk; i++) {
        k = order[i]; split(k, p, SUBSEP)
        if (wall[k] == "") { printf fmt, p[1], p[2], "FAIL", "", "", "", "", "", "", "", ""; continue }
        w = median(wall[k]); c = median(cpu[k]); r = median(rss[k]) / 1024; s = median(repo[k]) / 1048576
        W[k] = w; C[k] = c; R[k] = r; S[k] = s
        ro = co = rr = so = ""
        o = p[1] SUBSEP "ocvault"
        if (p[2] != "ocvault" && (o in W)) {
            ro = ratio(W[o], w); co = ratio(C[o], c); rr = ratio(R[o], r); so = ratio(S[o], s)
        }
        printf fmt, p[1], p[2], sprintf("%.2f", w), sprintf("%.2f", c), sprintf("%.2f", w > 0 ? c / w : 0),
            sprintf("%.1f", r), sprintf("%.1f", s), ro, co, rr, so
        if (k in fail) printf "  (%d failed run(s) of %s %s left out)\n", fail[k], p[1], p[2]
    }
}' < <(
    # steps in run order, tools in TOOLS order within a step
    awk -F'\t' -v tools="${TOOLS[*]}" '
        BEGIN { n = split("snapshot resnapshot restore check check-data churn stdin stdin2 dump prune", st, " "); for (i = 1; i <= n; i++) rank[st[i]] = i
                m = split(tools, tl, " "); for (i = 1; i <= m; i++) trank[tl[i]] = i }
        { s = ($2 in rank) ? rank[$2] : 99
          print s "\t" trank[$3] "\t" NR "\t" $0 }' "$RES" | sort -t$'\t' -k1,1n -k2,2n -k3,3n | cut -f4-)
echo
echo "CPU s = user + sys; CPU/w = CPU s / wall s (2.0 = both cores busy); repo MiB = du -sb after the step;"
echo "o/x = ocvault / the row's tool (below 1 means ocvault is faster or smaller)."
if [[ -n $DUMP2 ]]; then
    # bytes the second dump added: repository size after stdin2 minus after stdin, per run
    echo
    echo "Second dump (${PG_UPDATES:+$PG_UPDATES pgbench transactions after the first; }$(du -h "$DUMP2" | cut -f1)): MiB added to the repository, median"
    awk -F'\t' -v tools="${TOOLS[*]}" "$AWK_MEDIAN"'
    $4 == 0 && $2 == "stdin" { before[$1 SUBSEP $3] = $9 }
    $4 == 0 && $2 == "stdin2" && (($1 SUBSEP $3) in before) { added[$3] = added[$3] " " ($9 - before[$1 SUBSEP $3]) }
    END {
        m = split(tools, tl, " ")
        for (i = 1; i <= m; i++) if (tl[i] in added) A[tl[i]] = median(added[tl[i]]) / 1048576
        for (i = 1; i <= m; i++) if (tl[i] in A)
            printf "  %-8s %9.1f MiB%s\n", tl[i], A[tl[i]], (tl[i] != "ocvault" && ("ocvault" in A) && A[tl[i]] > 0) ? sprintf("   o/x %.2fx", A["ocvault"] / A[tl[i]]) : ""
    }' "$RES"
fi

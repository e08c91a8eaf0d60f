#!/usr/bin/env bash
# Scale measurement (issue 20): for each SIZE (data blobs), builds a synthetic repository with
# the synth-repo example (benches/synth_repo.rs), then measures peak RSS and wall time of
#   snapshot   a small new tree (NEW_FILES files, NEW_BYTES in all) into it, twice: the
#              second (--force: every file read again) is the warm-cache start-up figure
#   restore    the one real file (synth/part-0/real.bin), compared byte for byte with cmp
#   check      the whole repository
#   forget     --prune of the 2 oldest snapshots
#   check      again
# and prints a Markdown table (also written to OUT). Exits non-zero if any step fails or the
# restored file differs (the remaining steps still run, so the table is whole).
#
# Usage: benches/scale.sh SIZE...        e.g. benches/scale.sh 500000 5000000 50000000
#   DATA=${TMPDIR:-/tmp}/ocvault-scale   where repositories go (repository SIZE: $DATA/synth-SIZE)
#   OUT=$DATA/scale-results.md   the table
#   REUSE=0        1 reuses $DATA/synth-SIZE if it is there (as a previous run left it:
#                  already pruned once) instead of building it anew
#   CLEAN=0        1 deletes each repository after its measurement
#   NEW_FILES=200 NEW_BYTES=20000000   the small new tree
#   STEP_AS_LIMIT=    e.g. 12G: each step under `prlimit --as` (on a shared machine, a step
#                  that would take most of its memory fails instead: a FAILED row)
#   OCVAULT=target/release/ocvault  SYNTH=target/release/examples/synth-repo
# The password comes from OCVAULT_PASSWORD (a fixed throw-away one if unset), never argv.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-${TMPDIR:-/tmp}/ocvault-scale}
OUT=${OUT:-$DATA/scale-results.md}
REUSE=${REUSE:-0}
CLEAN=${CLEAN:-0}
STEP_AS_LIMIT=${STEP_AS_LIMIT:-}
NEW_FILES=${NEW_FILES:-200}
NEW_BYTES=${NEW_BYTES:-20000000}
OCVAULT=${OCVAULT:-target/release/ocvault}
SYNTH=${SYNTH:-target/release/examples/synth-repo}
export OCVAULT_PASSWORD=${OCVAULT_PASSWORD:-scale-bench-password}
[ $# -gt 0 ] || { echo "usage: $0 SIZE..." >&2; exit 2; }

if [ ! -x /usr/bin/time ]; then
    apt-get install -y time >/dev/null
fi
export CARGO_PROFILE_RELEASE_INCREMENTAL=true
cargo build --release --bin ocvault --example synth-repo >&2
mkdir -p "$DATA"

# The small new tree: NEW_FILES files of random bytes.
NEW="$DATA/new-tree"
if [ "$(find "$NEW" -type f 2>/dev/null | wc -l)" != "$NEW_FILES" ]; then
    rm -rf "$NEW"
    mkdir -p "$NEW"
    per=$((NEW_BYTES / NEW_FILES))
    for i in $(seq 1 "$NEW_FILES"); do
        head -c "$per" /dev/urandom >"$NEW/file-$i.bin"
    done
fi

ROWS=()
STATUS=0
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 |"); echo "| $1 | $2 | $3 | $4 | $5 |" >&2; }

# measure SIZE STEP NOTE CMD...: runs CMD under /usr/bin/time (stdout to $WORK/out), adds a
# row; a failed step is a FAILED row, the next steps still run, and the script exits 1.
measure() {
    local size=$1 step=$2 note=$3
    shift 3
    local t="$WORK/time"
    local limit=()
    if [ -n "$STEP_AS_LIMIT" ] && [ "$step" != generate ]; then
        # prlimit takes bytes (it misreads suffixes such as G).
        limit=(prlimit "--as=$(numfmt --from=iec "$STEP_AS_LIMIT")" --)
    fi
    if ! /usr/bin/time -f '%M %e' -o "$t" "${limit[@]}" "$@" >"$WORK/out" 2>"$WORK/err"; then
        echo "scale.sh: $step at $size failed:" >&2
        cat "$WORK/err" >&2
        STATUS=1
        note="FAILED: $(cat "$WORK/err" "$t" | { grep -v '^[0-9. ]*$' || true; } | tail -1 | tr '|' '/')"
    fi
    read -r kib secs < <({ grep -v '^Command' "$t" || true; } | tail -1; echo)
    if [ "$note" = json-startup ] && [ -s "$WORK/out" ]; then
        note="start-up $(python3 -c 'import json,sys
s=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["startup_seconds"]
print("-" if s is None else "%.2f s" % s)' "$WORK/out")"
    fi
    row "$size" "$step" "$((kib / 1024))" "$secs" "$note"
}

for size in "$@"; do
    R="$DATA/synth-$size"
    WORK="$DATA/work-$size"
    rm -rf "$WORK"
    mkdir -p "$WORK"
    row "$size" "load (uptime)" "" "" "$(uptime | sed 's/.*load average: //')"
    if [ "$REUSE" = 1 ] && [ -f "$R/config" ]; then
        row "$size" "generate" "" "" "reused"
    else
        rm -rf "$R"
        measure "$size" generate "" "$SYNTH" --repo "$R" --blobs "$size" \
            --real-file-out "$DATA/synth-$size.real"
        [ "$STATUS" = 0 ] || exit 1
        cp "$WORK/out" "$DATA/synth-$size.json"
        row "$size" "disk use" "" "" "$(du -sh "$R" | cut -f1)"
    fi
    measure "$size" "snapshot (first)" json-startup \
        "$OCVAULT" --repo "$R" --json -q snapshot "$NEW"
    measure "$size" "snapshot (warm, --force)" json-startup \
        "$OCVAULT" --repo "$R" --json -q snapshot --force "$NEW"
    # The newest synthetic snapshot holds synth/part-0/real.bin.
    "$OCVAULT" --repo "$R" --json snapshots --tag synthetic >"$WORK/snaps.json"
    read -r newest oldest2 < <(python3 -c 'import json,sys
s=sorted(json.load(open(sys.argv[1])), key=lambda x: x["time"])
print(s[-1]["id"], " ".join(x["id"] for x in s[:2]))' "$WORK/snaps.json")
    measure "$size" restore "synth/part-0/real.bin" \
        "$OCVAULT" --repo "$R" restore "$newest" --target "$WORK/restored" \
        --include synth/part-0/real.bin
    if ! cmp "$WORK/restored/synth/part-0/real.bin" "$DATA/synth-$size.real"; then
        echo "scale.sh: the restored file differs at $size" >&2
        row "$size" "restore compared" "" "" "DIFFERS"
        STATUS=1
    fi
    rm -rf "$WORK/restored"
    measure "$size" check "" "$OCVAULT" --repo "$R" check
    # shellcheck disable=SC2086 # two ids
    measure "$size" "forget --prune (2 oldest)" "" \
        "$OCVAULT" --repo "$R" forget $oldest2 --prune
    measure "$size" "check (after prune)" "" "$OCVAULT" --repo "$R" check
    if [ "$CLEAN" = 1 ]; then
        rm -rf "$R" "$DATA/synth-$size.real"
    fi
    rm -rf "$WORK"
done

{
    echo "| blobs | step | peak RSS MiB | seconds | note |"
    echo "|------:|------|-------------:|--------:|------|"
    printf '%s\n' "${ROWS[@]}"
} | tee "$OUT"
exit "$STATUS"

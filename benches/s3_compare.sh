#!/usr/bin/env bash
# Snapshot, unchanged re-snapshot and restore over S3 on loopback: ocvault's s3:// backend next to restic's
# s3: backend, against the same s3s-fs server, in one run, alternating tools.
#
# Usage: DATA=dir RUNS=3 benches/s3_compare.sh
#   DATA     tree to back up (required; e.g. an extracted linux-source tree)
#   RUNS     repetitions (default 3); medians are printed
#   OCVAULT  ocvault binary (default target/release/ocvault); RESTIC restic binary
# Needs s3s-fs (cargo install s3s-fs@0.14.1 --features binary --locked) and restic.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-3}
OCVAULT=${OCVAULT:-$ROOT/target/release/ocvault}
RESTIC=${RESTIC:-restic}
: "${DATA:?set DATA to the tree to back up}"
export PATH="$HOME/.cargo/bin:$PATH"
command -v s3s-fs >/dev/null || { echo "s3s-fs not installed" >&2; exit 1; }
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/ocvault-s3bench.XXXXXX")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$SCRATCH/s3"
export AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=bench-secret-0123456789 AWS_REGION=us-east-1
s3s-fs --host 127.0.0.1 --port "$PORT" --access-key "$AWS_ACCESS_KEY_ID" \
    --secret-key "$AWS_SECRET_ACCESS_KEY" "$SCRATCH/s3" >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$SCRATCH"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
export OCVAULT_PASSWORD=bench RESTIC_PASSWORD=bench
# Each tool's local cache starts empty and is kept between its commands, as on a backup host.
export OCVAULT_CACHE_DIR="$SCRATCH/ocvault-cache" RESTIC_CACHE_DIR="$SCRATCH/restic-cache"
BYTES=$(du -sb "$DATA" | cut -f1)

# measure NAME CMD... : appends "NAME wall_s" to results
measure() {
    local name=$1; shift
    local t0 t1
    sync
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>"$SCRATCH/err" || { cat "$SCRATCH/err" >&2; exit 1; }
    t1=$(date +%s.%N)
    echo "$name $(echo "$t1 - $t0" | bc)" >>"$SCRATCH/results"
}

for run in $(seq "$RUNS"); do
    mkdir -p "$SCRATCH/s3/bench$run"
    O=(-r "s3://bench$run/ocvault" -o "s3.endpoint=http://127.0.0.1:$PORT")
    R=(-r "s3:http://127.0.0.1:$PORT/bench$run/restic")
    "$OCVAULT" "${O[@]}" init >/dev/null
    "$RESTIC" "${R[@]}" init >/dev/null
    for tool in ocvault restic; do
        if [[ $tool == ocvault ]]; then
            measure "ocvault-snapshot" "$OCVAULT" -q "${O[@]}" snapshot "$DATA"
        else
            measure "restic-snapshot" "$RESTIC" -q "${R[@]}" backup "$DATA"
        fi
    done
    # The same tree again, unchanged: what a nightly job mostly does. ocvault's count of index
    # files downloaded comes from its --json report (its local cache is warm from the first).
    for tool in restic ocvault; do
        if [[ $tool == ocvault ]]; then
            measure "ocvault-resnapshot" "$OCVAULT" -q "${O[@]}" snapshot "$DATA"
            "$OCVAULT" -q "${O[@]}" snapshot --json "$DATA" | python3 -c \
                'import json,sys; d=json.load(sys.stdin)["storage_downloads"]; print("ocvault third snapshot: index downloads", d["index_downloads"], "snapshot downloads", d["snapshot_downloads"], "cache hits", d["cache_hits"])' >&2
        else
            measure "restic-resnapshot" "$RESTIC" -q "${R[@]}" backup "$DATA"
        fi
    done
    for tool in restic ocvault; do
        rm -rf "$SCRATCH/restore"
        if [[ $tool == ocvault ]]; then
            measure "ocvault-restore" "$OCVAULT" -q "${O[@]}" restore latest --target "$SCRATCH/restore"
        else
            measure "restic-restore" "$RESTIC" -q "${R[@]}" restore latest --target "$SCRATCH/restore"
        fi
    done
    rm -rf "$SCRATCH/restore" "$SCRATCH/s3/bench$run"
    echo "run $run done" >&2
done

median() { grep "^$1 " "$SCRATCH/results" | cut -d' ' -f2 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf "%-9s | %-22s | %-22s | %s\n" step "ocvault s (MB/s)" "restic s (MB/s)" "ratio"
for step in snapshot resnapshot restore; do
    o=$(median "ocvault-$step"); r=$(median "restic-$step")
    printf "%-9s | %6.2f (%6.0f MB/s)     | %6.2f (%6.0f MB/s)     | %.2f\n" "$step" "$o" \
        "$(echo "$BYTES / $o / 1000000" | bc -l)" "$r" "$(echo "$BYTES / $r / 1000000" | bc -l)" \
        "$(echo "$o / $r" | bc -l)"
done

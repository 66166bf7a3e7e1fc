#!/bin/bash
# Same-run A/B of two server binaries (BENCHMARKS.md "Issue 13, second pass"): for each of RUNS
# rounds, starts A then B (each on its own copy of a data directory, fresh process), runs the
# fan-out scenario against it and the baseline server with server CPU per delivery, then the
# idle-connection scenario; prints one line per measurement.
# Usage: scripts/fanout-ab.sh A_BIN B_BIN [RUNS] [OUT_DIR]
# Needs: the release fechatter-load, a running baseline server on 127.0.0.1:19091
#   (fechatter-load baseline-server --addr 127.0.0.1:19091).
set -eu
A=${1:?binary A}; B=${2:?binary B}; RUNS=${3:-3}; OUT=${4:-/tmp/fanout-ab}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
L=${FECHATTER_LOAD:-$ROOT/target/release/fechatter-load}
mkdir -p "$OUT"; cd "$OUT"
ulimit -n 20000
serve() { # NAME BIN -> starts the server on 127.0.0.1:18081, prints its pid
  local data="$OUT/data-$1"
  while [ -f "$data/pg/postmaster.pid" ]; do sleep 0.5; done
  FECHATTER_DATA=$data FECHATTER_ADDR=127.0.0.1:18081 FECHATTER_RATE_LIMIT_PER_HOUR=100000000 \
  FECHATTER_IP_RATE_LIMIT_PER_HOUR=100000000 FECHATTER_SEARCH_RATE_PER_MIN=10000000 \
  FECHATTER_AUTH_RATE_PER_MIN=10000000 FECHATTER_MAX_WS_PER_USER=1000 "$2" serve > "srv-$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 150); do curl -sf 127.0.0.1:18081/api/health >/dev/null && break; sleep 0.2; done
  echo $pid
}
. "$ROOT/scripts/lib/time-wait.sh"
BPID=$(pgrep -f "baseline-server" | head -1)
for r in $(seq "$RUNS"); do
  for side in A B; do
    bin=$A; [ $side = B ] && bin=$B
    drain_time_wait
    pid=$(serve $side "$bin")
    "$L" fanout --server http://127.0.0.1:18081 --members 10000 --conns-per-user 100 --messages 20 \
      --baseline-url http://127.0.0.1:19091 --server-pid "$pid" --baseline-pid "$BPID" \
      --reuse "fanout-setup-$side.json" --json "fanout-$side-$r.json" --quiet > "fanout-$side-$r.txt" 2>&1 || true
    drain_time_wait
    "$L" connect --server http://127.0.0.1:18081 --conns 10000 --conns-per-user 100 --hold-secs 5 \
      --server-pid "$pid" --reuse "connect-setup-$side.json" --json "connect-$side-$r.json" --quiet \
      > "connect-$side-$r.txt" 2>&1 || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "$side run $r: $(grep -E 'deliveries |CPU per|/ baseline' "fanout-$side-$r.txt" | tr -s ' ' | paste -sd' ')"
    echo "$side run $r: $(grep -E 'opened|RSS/conn' "connect-$side-$r.txt" | tr -s ' ' | paste -sd' ')"
  done
done

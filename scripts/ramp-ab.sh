#!/bin/bash
# Same-run A/B of the persisted-send knee (BENCHMARKS.md "The knee"): ROUNDS rounds, each one
# `fechatter-load ramp` against a fresh process of binary A, then of binary B (alternating, so
# both see the same machine). Each binary keeps its own data directory across rounds (the ramp's
# --reuse file stays valid); the first round creates the users and rooms.
#
# Usage: scripts/ramp-ab.sh A_BIN B_BIN [ROUNDS]   (prints knee/peak per run and the medians)
# Env: LOAD_BIN (target/release/fechatter-load), OUT (/tmp/ramp-ab), PORT (18095).
set -eu
A=${1:?binary A}
B=${2:?binary B}
ROUNDS=${3:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOAD_BIN=${LOAD_BIN:-$ROOT/target/release/fechatter-load}
OUT=${OUT:-/tmp/ramp-ab}
PORT=${PORT:-18095}
mkdir -p "$OUT"
cd "$OUT"
ulimit -n 20000

run() { # NAME BIN ROUND
  local name=$1 bin=$2 round=$3
  FECHATTER_DATA=$OUT/data-$name FECHATTER_ADDR=127.0.0.1:$PORT RUST_LOG=warn \
  FECHATTER_RATE_LIMIT_PER_HOUR=100000000 FECHATTER_IP_RATE_LIMIT_PER_HOUR=100000000 \
  FECHATTER_AUTH_RATE_PER_MIN=10000000 FECHATTER_MAX_WS_PER_USER=1000 \
    "$bin" serve >"$name-$round.server.log" 2>&1 &
  local spid=$!
  for _ in $(seq 1 120); do
    curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    sleep 0.5
  done
  echo "$name $round: start $(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg)"
  "$LOAD_BIN" ramp --server "http://127.0.0.1:$PORT" --users 500 --rooms 50 --duration-secs 8 \
    --drain-secs 15 --start-rate 250 --factor 1.6 --max-rate 12000 --p99-ms 250 \
    --reuse "setup-$name.json" --setup-concurrency 16 --quiet --json "ramp-$name-$round.json" || true
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
}

for r in $(seq 1 "$ROUNDS"); do
  run a "$A" "$r"
  run b "$B" "$r"
done
for name in a b; do
  for r in $(seq 1 "$ROUNDS"); do
    jq -r --arg n "$name $r" '"\($n): knee \(.knee_acked_per_sec) peak \(.peak_acked_per_sec) acked msg/s"' \
      "ramp-$name-$r.json"
  done
  jq -s -r --arg n "$name" '[.[].knee_acked_per_sec] as $k | [.[].peak_acked_per_sec] as $p |
    "\($n) median: knee \($k | sort | .[length/2|floor]) peak \($p | sort | .[length/2|floor])"' \
    ramp-"$name"-*.json
done

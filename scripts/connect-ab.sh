#!/bin/bash
# Connect rate and memory per idle connection, same-run A/B of two server binaries
# (BENCHMARKS.md "Broker baseline (issue 13, third session)", connect section): each of RUNS
# rounds starts A then B fresh (each on its own data directory), opens CONNS authenticated
# connections (PER_USER per user: presence on, CONNS/PER_USER users going online), holds
# them 5 s, and reports connects/s, server RSS per connection and the CPU per connect of the
# server, PostgreSQL and the load tool. PERF=1 also records the server with perf while the
# connections open (perf-SIDE-RUN.data).
# Usage: scripts/connect-ab.sh A_BIN B_BIN [RUNS] [OUT_DIR] [CONNS] [PER_USER]
# Extra environment for both servers: SERVER_ENV="FECHATTER_X=1 ..."; for B only: B_ENV.
set -eu
A=${1:?binary A}; B=${2:?binary B}; RUNS=${3:-2}; OUT=${4:-/tmp/connect-ab}
CONNS=${5:-10000}; PER_USER=${6:-10}
PORT=${FECHATTER_PORT:-18181}  # its own port (others may serve on 18081)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
L=${FECHATTER_LOAD:-$ROOT/target/release/fechatter-load}
mkdir -p "$OUT"; cd "$OUT"
ulimit -n 20000
serve() { # SIDE BIN EXTRA_ENV -> starts the server on 127.0.0.1:$PORT, prints its pid
  local data="$OUT/data-$1"
  while [ -f "$data/pg/postmaster.pid" ]; do sleep 0.5; done
  env FECHATTER_DATA="$data" FECHATTER_ADDR=127.0.0.1:$PORT FECHATTER_RATE_LIMIT_PER_HOUR=100000000 \
    FECHATTER_IP_RATE_LIMIT_PER_HOUR=100000000 FECHATTER_SEARCH_RATE_PER_MIN=10000000 \
    FECHATTER_AUTH_RATE_PER_MIN=10000000 FECHATTER_MAX_WS_PER_USER=1000 ${SERVER_ENV:-} $3 \
    "$2" serve > "srv-$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 150); do curl -sf 127.0.0.1:$PORT/api/health >/dev/null && break; sleep 0.2; done
  echo $pid
}
. "$ROOT/scripts/lib/time-wait.sh"  # drain_time_wait: every run starts with free ports
# Set-up pass (users registered, reused by every round), so the rounds measure connects only.
for side in A B; do
  bin=$A; [ $side = B ] && bin=$B
  pid=$(serve $side "$bin" "")
  "$L" connect --server http://127.0.0.1:$PORT --conns "$CONNS" --conns-per-user "$PER_USER" \
    --hold-secs 0 --reuse "connect-setup-$side.json" --quiet > "setup-$side.txt" 2>&1 || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
for r in $(seq "$RUNS"); do
  for side in A B; do
    bin=$A; extra=""; [ $side = B ] && { bin=$B; extra=${B_ENV:-}; }
    drain_time_wait
    pid=$(serve $side "$bin" "$extra")
    dbpid=$(head -1 "$OUT/data-$side/pg/postmaster.pid" 2>/dev/null || echo "")
    load="load average $(cut -d' ' -f1-3 /proc/loadavg)"
    perf_pid=""
    if [ "${PERF:-0}" = 1 ]; then
      perf record -F 999 -g -p "$pid" -o "perf-$side-$r.data" -- sleep "${PERF_SECS:-6}" \
        > /dev/null 2>&1 &
      perf_pid=$!
    fi
    "$L" connect --server http://127.0.0.1:$PORT --conns "$CONNS" --conns-per-user "$PER_USER" \
      --hold-secs 5 --server-pid "$pid" ${dbpid:+--db-pid "$dbpid"} \
      --reuse "connect-setup-$side.json" --json "connect-$side-$r.json" --quiet \
      > "connect-$side-$r.txt" 2>&1 || true
    [ -n "$perf_pid" ] && wait "$perf_pid" || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "$side run $r ($load): $(grep -E 'opened|RSS/conn|CPU per' "connect-$side-$r.txt" | tr -s ' ' | paste -sd' ')"
  done
done

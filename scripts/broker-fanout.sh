#!/bin/bash
# Fan-out, Fechatter vs the actix-ws baseline vs the NATS server's WebSocket listener, in the
# same invocation (BENCHMARKS.md "Broker baseline (issue 13, third session)"). Each of RUNS
# rounds starts all three fresh (Fechatter on its own copy of a data directory), runs
# `fechatter-load fanout` against them with CPU per delivery for each, and stops them.
# Usage: scripts/broker-fanout.sh [RUNS] [OUT_DIR] [MEMBERS] [CONNS_PER_USER]
# Needs: release binaries (cargo build --release --bins); nats-server (installed if missing).
set -eu
RUNS=${1:-3}; OUT=${2:-/tmp/broker-fanout}; MEMBERS=${3:-10000}; PER_USER=${4:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FECHATTER_BIN:-$ROOT/target/release/fechatter}
L=${FECHATTER_LOAD:-$ROOT/target/release/fechatter-load}
mkdir -p "$OUT"; cd "$OUT"
ulimit -n 20000
# Ports of this script's own servers (another baseline-server may hold 19091).
PORT=${FECHATTER_PORT:-18181}; BPORT=${BASELINE_PORT:-19191}
export NATS_WS_PORT=${NATS_WS_PORT:-14223}
serve() { # -> starts Fechatter on 127.0.0.1:$PORT, prints its pid
  local data="$OUT/data"
  while [ -f "$data/pg/postmaster.pid" ]; do sleep 0.5; done
  FECHATTER_DATA=$data FECHATTER_ADDR=127.0.0.1:$PORT FECHATTER_RATE_LIMIT_PER_HOUR=100000000 \
  FECHATTER_IP_RATE_LIMIT_PER_HOUR=100000000 FECHATTER_SEARCH_RATE_PER_MIN=10000000 \
  FECHATTER_AUTH_RATE_PER_MIN=10000000 FECHATTER_MAX_WS_PER_USER=1000 "$BIN" serve > srv.log 2>&1 &
  local pid=$!
  for _ in $(seq 150); do curl -sf 127.0.0.1:$PORT/api/health >/dev/null && break; sleep 0.2; done
  kill -0 $pid 2>/dev/null || { echo "fechatter did not start (srv.log)" >&2; exit 1; }
  echo $pid
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
. "$ROOT/scripts/lib/time-wait.sh"
for r in $(seq "$RUNS"); do
  drain_time_wait
  pid=$(serve)
  "$L" baseline-server --addr 127.0.0.1:$BPORT > baseline.log 2>&1 &
  bpid=$!
  npid=$("$ROOT/scripts/broker-baseline.sh" start "$OUT/nats")
  for _ in $(seq 50); do curl -sf 127.0.0.1:$BPORT/api/health >/dev/null && break; sleep 0.1; done
  kill -0 $bpid 2>/dev/null || { cat baseline.log >&2; exit 1; }
  echo "round $r: load average $(cut -d' ' -f1-3 /proc/loadavg)"
  "$L" fanout --server http://127.0.0.1:$PORT --members "$MEMBERS" --conns-per-user "$PER_USER" \
    --messages 20 --baseline-url http://127.0.0.1:$BPORT --nats-ws-url ws://127.0.0.1:$NATS_WS_PORT \
    --server-pid "$pid" --baseline-pid "$bpid" --nats-pid "$npid" \
    --reuse fanout-setup.json --json "fanout-$r.json" --quiet > "fanout-$r.txt" 2>&1 || true
  stop "$pid"; stop "$bpid"; "$ROOT/scripts/broker-baseline.sh" stop "$OUT/nats"
  grep -E 'fanout:|baseline \(|broker:|deliveries |CPU per|lost|/ baseline|/ NATS' "fanout-$r.txt" | tr -s ' '
done

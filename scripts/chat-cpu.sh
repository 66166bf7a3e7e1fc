#!/bin/bash
# One `fechatter-load chat` run against a fresh server process (BENCHMARKS.md "Chat at 10×"),
# with the CPU time of the server, its embedded PostgreSQL (postmaster and backends) and the
# load tool sampled every second, so the busiest stretch (the send phase) can be read off.
#
# Usage: scripts/chat-cpu.sh NAME [fechatter-load chat options...]
#   e.g. scripts/chat-cpu.sh 10x-1 --users 10000 --rooms 1000 --rate 5000 --duration-secs 60 \
#          --drain-secs 30 --reuse chat-10000-setup.json --setup-concurrency 16
# Writes OUT/NAME.json (the tool's summary), OUT/NAME.cpu (t in s, then server, postgres, tool:
# CPU clock ticks since they started, one line a second), OUT/NAME.server.log, and prints the one-minute
# load average before and after plus the cores each process used over the 20 s in which the
# server's CPU rose most (the send phase at its busiest).
#
# Env: SERVER_BIN (default target/release/fechatter), LOAD_BIN (target/release/fechatter-load),
# DATA (/tmp/chat10-bench/data: one data directory for every run, so --reuse files stay
# valid), PORT (18090), OUT (/tmp/chat10-bench).
set -eu
NAME=${1:?run name}
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SERVER_BIN=${SERVER_BIN:-$ROOT/target/release/fechatter}
LOAD_BIN=${LOAD_BIN:-$ROOT/target/release/fechatter-load}
OUT=${OUT:-/tmp/chat10-bench}
DATA=${DATA:-$OUT/data}
PORT=${PORT:-18090}
mkdir -p "$OUT" "$DATA"
cd "$OUT"
ulimit -n 20000

ticks() { # utime+stime+cutime+cstime of a pid, clock ticks (0 when gone)
  awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
pg_ticks() { # the postmaster and its children (the backends)
  local sum=0 t
  t=$(ticks "$1"); sum=$((sum + t))
  for c in $(pgrep -P "$1"); do t=$(ticks "$c"); sum=$((sum + t)); done
  echo "$sum"
}

FECHATTER_DATA=$DATA FECHATTER_ADDR=127.0.0.1:$PORT RUST_LOG=warn \
FECHATTER_RATE_LIMIT_PER_HOUR=100000000 FECHATTER_IP_RATE_LIMIT_PER_HOUR=100000000 \
FECHATTER_SEARCH_RATE_PER_MIN=10000000 FECHATTER_AUTH_RATE_PER_MIN=10000000 \
FECHATTER_MAX_WS_PER_USER=1000 "$SERVER_BIN" serve >"$NAME.server.log" 2>&1 &
SPID=$!
trap 'kill "$SPID" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.5
done
PGPID=$(head -n1 "$DATA/pg/postmaster.pid" 2>/dev/null || echo 0)
echo "$NAME: server $SPID, postgres $PGPID, start $(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg)"

"$LOAD_BIN" chat --server "http://127.0.0.1:$PORT" --quiet --json "$NAME.json" "$@" &
LPID=$!
T0=$(date +%s)
: >"$NAME.cpu"
while kill -0 "$LPID" 2>/dev/null; do
  echo "$(($(date +%s) - T0)) $(ticks "$SPID") $(pg_ticks "$PGPID") $(ticks "$LPID")" >>"$NAME.cpu"
  sleep 1
done
RC=0
wait "$LPID" || RC=$?
echo "$NAME: end $(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg), exit $RC"
kill "$SPID" 2>/dev/null || true
wait "$SPID" 2>/dev/null || true
trap - EXIT
# Cores used per process over the 20 s stretch in which the server's CPU rose most (the send
# phase at its busiest), from the samples (clock ticks: 100 a second).
awk -v hz="$(getconf CLK_TCK)" '
  { t[NR] = $1; s[NR] = $2; p[NR] = $3; l[NR] = $4 }
  END {
    best = 0; bi = 0
    for (i = 1; i <= NR; i++) for (j = i; j <= NR && t[j] - t[i] <= 20; j++) {
      if (t[j] - t[i] >= 18 && s[j] - s[i] > best) { best = s[j] - s[i]; bi = i; bj = j }
    }
    if (bi == 0) { print "cpu: too few samples"; exit }
    d = (t[bj] - t[bi]) * hz
    printf "cpu over t=%d..%d s (cores): server %.2f, postgres %.2f, load tool %.2f\n",
      t[bi], t[bj], (s[bj] - s[bi]) / d, (p[bj] - p[bi]) / d, (l[bj] - l[bi]) / d
  }' "$NAME.cpu"
jq -c '{acked_per_sec: .acknowledged_per_sec, sent, acknowledged, errors: .send_errors,
  lost, duplicated, out_of_order, drain_secs, latency, ack_latency, connection_wait,
  connections, connection_failures, dropped}' "$NAME.json" || true
exit "$RC"

#!/bin/bash
# CPU per persisted message (BENCHMARKS.md "Database connections on their own thread"): one
# `fechatter-load chat` (500 users, 50 rooms, RATE msg/s, 20 s, 3 s warm-up) against a fresh
# process of BIN on its own data directory (OUT/data-NAME, kept so --reuse stays valid), with the
# server's and PostgreSQL's CPU sampled over 12 s of the send phase. Alternate two binaries for
# an A/B: `for r in 1 2 3; do scripts/write-cpu-ab.sh a OLD 1000; scripts/write-cpu-ab.sh b NEW 1000; done`
# Usage: scripts/write-cpu-ab.sh NAME BIN RATE   Env: LOAD_BIN, OUT (/tmp/ramp-ab), PORT (18095)
set -u
name=$1; bin=$2; rate=$3; PORT=${PORT:-18095}; OUT=${OUT:-/tmp/ramp-ab}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOAD_BIN=${LOAD_BIN:-$ROOT/target/release/fechatter-load}
mkdir -p "$OUT"; cd "$OUT"; ulimit -n 20000
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_ticks() { local sum=0 t; t=$(ticks "$1"); sum=$((sum + t)); for c in $(pgrep -P "$1"); do t=$(ticks "$c"); sum=$((sum + t)); done; echo "$sum"; }
FECHATTER_DATA=$OUT/data-$name FECHATTER_ADDR=127.0.0.1:$PORT RUST_LOG=warn \
FECHATTER_RATE_LIMIT_PER_HOUR=100000000 FECHATTER_IP_RATE_LIMIT_PER_HOUR=100000000 \
FECHATTER_AUTH_RATE_PER_MIN=10000000 FECHATTER_MAX_WS_PER_USER=1000 \
  "$bin" serve >"$name-c.server.log" 2>&1 &
spid=$!
for _ in $(seq 1 120); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break; sleep 0.5; done
pgpid=$(head -n1 "$OUT/data-$name/pg/postmaster.pid")
"$LOAD_BIN" chat --server http://127.0.0.1:$PORT --users 500 --rooms 50 --rate $rate --duration-secs 20 --drain-secs 10 --warmup-secs 3 --reuse setup-$name.json --quiet --json c-$name.json >/dev/null 2>&1 &
lpid=$!
sleep 9  # connect wave + warmup
s0=$(ticks $spid); p0=$(pg_ticks $pgpid); t0=$(date +%s.%N)
sleep 12
s1=$(ticks $spid); p1=$(pg_ticks $pgpid); t1=$(date +%s.%N)
wait $lpid
acked=$(jq .acknowledged_per_sec c-$name.json)
echo "$name load $(cut -d' ' -f1 /proc/loadavg) acked/s $acked p99 $(jq .latency.p99_ms c-$name.json) server_cores $(echo "($s1-$s0)/100/($t1-$t0)" | bc -l | cut -c1-5) pg_cores $(echo "($p1-$p0)/100/($t1-$t0)" | bc -l | cut -c1-5) server_us_per_msg $(echo "($s1-$s0)*10000/($t1-$t0)/$acked" | bc -l | cut -c1-6)"
kill $spid; wait $spid

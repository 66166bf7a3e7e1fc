#!/bin/sh
# Runs the load scenarios of BENCHMARKS.md ("Load: …" sections) three times each against a
# server already started with raised limits and the baseline server on 127.0.0.1:9090 (both as
# in BENCHMARKS.md), then prints the medians. The connect table of BENCHMARKS.md restarts the
# server before each connect run (fresh memory); this script does not.
# Usage: scripts/load-bench.sh SERVER_PID [OUT_DIR]   (needs the release build and jq)
# NATS_WS_URL=ws://127.0.0.1:14223 adds the broker baseline to the fan-out runs
# (scripts/broker-baseline.sh start runs one).
set -eu
SPID=${1:?server pid (for RSS per connection)}
OUT=${2:-/tmp/load-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
L=${FECHATTER_LOAD:-$ROOT/target/release/fechatter-load}
mkdir -p "$OUT"
cd "$OUT"
. "$ROOT/scripts/lib/time-wait.sh"
for i in 1 2 3; do
  drain_time_wait
  "$L" fanout --members 10000 --conns-per-user 100 --messages 20 \
    --baseline-url http://127.0.0.1:9090 ${NATS_WS_URL:+--nats-ws-url "$NATS_WS_URL"} \
    --reuse fanout-setup.json --json "fanout-$i.json" --quiet
done
for i in 1 2 3; do
  drain_time_wait
  "$L" connect --conns 19000 --conns-per-user 100 --hold-secs 10 --source-ips 8 --server-pid "$SPID" \
    --reuse connect-setup.json --json "connect-$i.json" --quiet
done
for i in 1 2 3; do
  drain_time_wait
  "$L" chat --users 1000 --rooms 100 --rate 500 --duration-secs 60 --drain-secs 30 \
    --reuse chat-setup.json --setup-concurrency 16 --json "chat-$i.json" --quiet || true
done
for i in 1 2 3; do
  "$L" http --users 50 --rooms 5 --concurrency 32 --duration-secs 20 \
    --reuse http-setup.json --json "http-$i.json" --quiet
done
# The persisted-send knee (BENCHMARKS.md "Issue 13"): chat at rising rates until saturation.
for i in 1 2 3; do
  "$L" ramp --users 500 --rooms 50 --duration-secs 8 --drain-secs 15 --start-rate 250 \
    --factor 1.6 --max-rate 12000 --p99-ms 250 --reuse ramp-setup.json --json "ramp-$i.json" --quiet || true
done
for i in 1 2 3; do jq -r '"ramp \(input_filename): knee \(.knee_acked_per_sec) peak \(.peak_acked_per_sec) acked msg/s"' "ramp-$i.json"; done
"$ROOT/scripts/load-medians.sh" "$OUT"

#!/usr/bin/env bash
# Profiles the release server during one denial-of-service probe: starts it as run.sh does,
# runs scripts/dos/dos.py with the one attack, and once the attack has started records
# `perf record -F 999 -g` and `perf stat` of the server for PERF_SECS (10) seconds; prints the
# probe's rows, the hottest symbols and the CPU the server and the attacker used.
#   scripts/dos/profile.sh <attack>   (or --proxied <attack>; needs perf, cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${DOS_BIN:-${CARGO_TARGET_DIR:-target}/release/fechatter}"
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
PERF_SECS="${PERF_SECS:-10}"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
DATA="$(mktemp -d /tmp/fechatter-dos-prof.XXXXXX)"
OUT="${PROFILE_OUT:-$DATA/out}"
mkdir -p "$OUT"
PROXIED=()
if [ "${1:-}" = "--proxied" ]; then
  PROXIED=(--proxied)
  shift
  export FECHATTER_TRUSTED_PROXIES="127.0.0.0/8"
fi
ATTACK="$1"
FECHATTER_DATA="$DATA" FECHATTER_ADDR="127.0.0.1:$PORT" RUST_LOG=info "$BIN" serve >"$DATA/server.log" 2>&1 &
PID=$!
DOS=""
cleanup() {
  [ -n "$DOS" ] && kill "$DOS" 2>/dev/null || true
  kill "$PID" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${PROFILE_OUT:-}" ] || rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$PORT/api/health" >/dev/null 2>&1 && break
  kill -0 "$PID" 2>/dev/null || { cat "$DATA/server.log" >&2; exit 1; }
  sleep 0.5
done
DOS_WARMUP_SECS=0 DOS_SETTLE_SECS="${DOS_SETTLE_SECS:-5}" python3 scripts/dos/dos.py --server "http://127.0.0.1:$PORT" \
  --pid "$PID" --log "$DATA/server.log" "${PROXIED[@]}" "$ATTACK" >"$OUT/rows.jsonl" &
DOS=$!
# The attack starts right after the first (baseline) row.
until [ -s "$OUT/rows.jsonl" ]; do sleep 0.2; kill -0 "$DOS" 2>/dev/null || exit 1; done
sleep 2
perf stat -p "$PID" -- sleep "$PERF_SECS" 2>"$OUT/perf-stat.txt" &
STAT=$!
perf record -F 999 -g -o "$OUT/perf.data" -p "$PID" -- sleep "$PERF_SECS" 2>/dev/null
wait "$STAT"
wait "$DOS"
DOS=""
cat "$OUT/rows.jsonl"
echo "--- by thread"
perf report -i "$OUT/perf.data" --no-children --sort comm -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -12
echo "--- by symbol"
perf report -i "$OUT/perf.data" --no-children --sort sym -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -50
grep -E 'task-clock|context-switches|cpu-migrations|seconds time' "$OUT/perf-stat.txt"

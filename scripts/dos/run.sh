#!/usr/bin/env bash
# Runs every denial-of-service probe (scripts/dos/dos.py) against the release server with its
# default limits, on loopback, with a throwaway embedded PostgreSQL; prints one JSON line per
# attack (honest send p50/p99 and failures, server RSS MB and fds before/peak/after).
#   scripts/dos/run.sh [attack ...]        (needs: cargo build --release)
#   scripts/dos/run.sh --proxied [attack ...]   the server trusts 127.0.0.0/8 as its reverse
#       proxy (FECHATTER_TRUSTED_PROXIES) and every client sends X-Forwarded-For; runs the
#       proxied-* attacks (by default both)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${DOS_BIN:-${CARGO_TARGET_DIR:-target}/release/fechatter}"
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
PORT="${DOS_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
DATA="$(mktemp -d /tmp/fechatter-dos.XXXXXX)"
LOG="$DATA/server.log"
PROXIED=()
if [ "${1:-}" = "--proxied" ]; then
  PROXIED=(--proxied)
  shift
  export FECHATTER_TRUSTED_PROXIES="127.0.0.0/8"
fi
FECHATTER_DATA="$DATA" FECHATTER_ADDR="127.0.0.1:$PORT" RUST_LOG=info "$BIN" serve >"$LOG" 2>&1 &
PID=$!
# DOS_LOG_OUT=<file>: keep the server's log there.
cleanup() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  [ -z "${DOS_LOG_OUT:-}" ] || cp "$LOG" "$DOS_LOG_OUT"
  rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$PORT/api/health" >/dev/null 2>&1 && break
  kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.5
done
kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
python3 scripts/dos/dos.py --server "http://127.0.0.1:$PORT" --pid "$PID" --log "$LOG" "${PROXIED[@]}" "$@"

#!/bin/bash
# The broker baseline of `fechatter-load fanout --nats-ws-url` (BENCHMARKS.md "Broker baseline"):
# installs the NATS server (Debian's nats-server) if missing, writes a loopback-only config with
# a WebSocket listener (no TLS, no compression) and limits raised for 10,000+ connections,
# and starts or stops it.
# Usage: scripts/broker-baseline.sh start [DIR]   -> prints the server's pid; WS on 127.0.0.1:$NATS_WS_PORT
#        scripts/broker-baseline.sh stop [DIR]
#        scripts/broker-baseline.sh install
# Knobs: NATS_WS_PORT (14223), NATS_PORT (14222, the plain client port, loopback too),
#        NATS_MONITOR_PORT (18222, /varz on loopback).
set -eu
CMD=${1:?start, stop or install}; DIR=${2:-/tmp/fechatter-nats}
WS_PORT=${NATS_WS_PORT:-14223}; PORT=${NATS_PORT:-14222}; MON=${NATS_MONITOR_PORT:-18222}

install() {
  if ! command -v nats-server >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
  fi
}

case $CMD in
install) install ;;
start)
  install
  mkdir -p "$DIR"
  if [ -f "$DIR/nats.pid" ] && kill -0 "$(cat "$DIR/nats.pid")" 2>/dev/null; then
    echo "already running: pid $(cat "$DIR/nats.pid")" >&2; exit 1
  fi
  cat > "$DIR/nats.conf" <<EOF
# Written by scripts/broker-baseline.sh: loopback only, no auth, no JetStream.
listen: 127.0.0.1:$PORT
http: 127.0.0.1:$MON
max_connections: 100000
max_payload: 1MB
# Outbound bytes a client may have pending before it is cut off as a slow consumer (default).
max_pending: 64MB
write_deadline: "10s"
websocket {
  listen: "127.0.0.1:$WS_PORT"
  no_tls: true
  compression: false
}
EOF
  # One descriptor per connection: raise the soft limit as far as the hard one allows.
  ulimit -n "$(ulimit -Hn)"
  nats-server -c "$DIR/nats.conf" -P "$DIR/nats.pid" > "$DIR/nats.log" 2>&1 &
  pid=$!
  for _ in $(seq 50); do
    curl -sf "127.0.0.1:$MON/healthz" >/dev/null && break
    kill -0 $pid 2>/dev/null || { cat "$DIR/nats.log" >&2; exit 1; }
    sleep 0.1
  done
  echo $pid
  ;;
stop)
  if [ -f "$DIR/nats.pid" ]; then
    pid=$(cat "$DIR/nats.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$DIR/nats.pid"
  fi
  ;;
*) echo "unknown command $CMD" >&2; exit 2 ;;
esac

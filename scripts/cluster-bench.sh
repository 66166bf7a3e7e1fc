#!/usr/bin/env bash
# The cluster figures of BENCHMARKS.md ("Cluster"), with the release binaries. Each phase starts
# its own local cluster (`fechatter-load cluster-up`: one PostgreSQL, one redis-server, N nodes
# on 127.0.0.1:18101…) in $DIR (kept, so the set-ups made by `setup` stay valid) and stops it.
#
#   scripts/cluster-bench.sh setup     # the chat phase's 500 users (Argon2: under a minute)
#   scripts/cluster-bench.sh connect   # 100,000 idle connections: 8 nodes × 12,500, 8 load processes
#   scripts/cluster-bench.sh chat      # chat on 1 node vs 3 nodes, alternating, 3 runs each
#   scripts/cluster-bench.sh fanout    # fan-out to 10,000 members on 1 node vs 3 nodes, 3 runs each
#
# Environment: DIR (default /tmp/fechatter-cluster-bench), RUNS (3), CONNS (100000), NODES (8),
# MEMBERS (10000), HOLD (60 s, connect), BIN (target/release).
# JSON summaries go to $DIR/out/. Traffic stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DIR:-/tmp/fechatter-cluster-bench}
RUNS=${RUNS:-3}
CONNS=${CONNS:-100000}
NODES=${NODES:-8}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
L="$BIN/fechatter-load"
OUT="$DIR/out"
mkdir -p "$DIR" "$OUT"
U1=http://127.0.0.1:18101
U3=http://127.0.0.1:18101,http://127.0.0.1:18102,http://127.0.0.1:18103
CHAT="--users 500 --rooms 50 --rate 250 --drain-secs 20"
FANOUT="--members ${MEMBERS:-10000} --conns-per-user 100 --messages 20"

CLUSTER_PID=""
up() { # up N: starts an N-node cluster, waits until it is up, sets PIDS
    "$L" cluster-up --nodes "$1" --work-dir "$DIR/cluster" --hold-secs 3600 \
        --env FECHATTER_MAX_WS_PER_USER=2000 --env FECHATTER_DB_POOL_SIZE=16 \
        >"$DIR/cluster-up.log" 2>&1 &
    CLUSTER_PID=$!
    for _ in $(seq 120); do
        grep -q '^cluster up' "$DIR/cluster-up.log" && break
        kill -0 "$CLUSTER_PID" 2>/dev/null || { cat "$DIR/cluster-up.log"; exit 2; }
        sleep 1
    done
    PIDS=$(sed -n 's/^PIDS=//p' "$DIR/cluster-up.log")
    echo "cluster of $1 up: pids $PIDS"
}
down() {
    [ -n "$CLUSTER_PID" ] && kill -TERM "$CLUSTER_PID" && wait "$CLUSTER_PID" || true
    CLUSTER_PID=""
}
trap down EXIT

per_node=$(( CONNS / NODES ))
case "${1:-}" in
setup)
    # The chat set-up (500 registrations); connect and fanout make their small ones as they go.
    up 3
    "$L" chat --url "$U1" $CHAT --duration-secs 0 --reuse "$DIR/chat-setup.json" \
        --setup-concurrency 16 --quiet >/dev/null
    ;;
connect)
    up "$NODES"
    IFS=, read -r -a pid <<<"$PIDS"
    procs=()
    for k in $(seq 0 $((NODES - 1))); do
        "$L" connect --url "http://127.0.0.1:$((18101 + k))" --conns "$per_node" \
            --conns-per-user 1000 --hold-secs "${HOLD:-60}" --server-pid "${pid[$k]}" --source-ips 16 \
            --connect-concurrency 32 --reuse "$DIR/connect-setup-$k.json" --quiet \
            --json "$OUT/connect-$k.json" >"$OUT/connect-$k.log" 2>&1 &
        procs+=($!)
    done
    for p in "${procs[@]}"; do wait "$p" || true; done
    "$L" merge "$OUT"/connect-?.json --json "$OUT/connect-merged.json"
    ;;
chat)
    up 3
    for r in $(seq 1 "$RUNS"); do
        for n in 1 3; do
            url=$U1; [ "$n" = 3 ] && url=$U3
            "$L" chat --url "$url" $CHAT --duration-secs 30 --reuse "$DIR/chat-setup.json" --quiet \
                --json "$OUT/chat-${n}node-$r.json" | sed -n '1,9p'
        done
    done
    ;;
fanout)
    up 3
    for r in $(seq 1 "$RUNS"); do
        for n in 1 3; do
            url=$U1; [ "$n" = 3 ] && url=$U3
            "$L" fanout --url "$url" $FANOUT --reuse "$DIR/fanout-setup.json" --quiet \
                --json "$OUT/fanout-${n}node-$r.json" | grep -E 'deliveries|lost|verdict'
        done
    done
    ;;
*)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac

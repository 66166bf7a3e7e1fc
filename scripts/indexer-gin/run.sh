#!/usr/bin/env bash
# The indexer's batch statement on a big message_search (RELIABILITY.md, "The search indexer
# always makes progress"). Starts a throwaway cluster in $ROOT (default /tmp/indexer-gin) with
# the settings `fechatter serve` uses (fsync on, shared_buffers 128MB), loads gen.sql (~6 min on
# 2 cores), then:
#   run.sh ab "4096 1024 4096 1024"   50 batches of 500 rows per work_mem value (kB), in order:
#                                     median / p90 / max batch ms and rows/s of each segment
#   run.sh livelock 4MB 64kB          fills the trigram pending list, inserts 500-row batches
#                                     under a $TMO (30ms) statement timeout until one is cancelled
#                                     (the merge), then retries 1-row batches under it with each
#                                     work_mem: cancelled or ok, and the pending lists' rows
# Env: ROOT, PORT (5499), KEEP=1 (leave the cluster running; a later run reuses it).
set -euo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)
ROOT=${ROOT:-/tmp/indexer-gin}
PORT=${PORT:-5499}
TMO=${TMO:-30ms}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
BIN=$(dirname "$(command -v initdb)")
P() { psql -qX -v ON_ERROR_STOP=1 "host=$ROOT/run port=$PORT user=postgres dbname=big" "$@"; }
if [ ! -f "$ROOT/pg/PG_VERSION" ]; then
    mkdir -p "$ROOT/pg" "$ROOT/run"; chmod 0755 "$ROOT"
    [ "$(id -u)" = 0 ] && chown postgres: "$ROOT/pg" "$ROOT/run"
    chmod 0700 "$ROOT/pg"
    (cd / && as_pg "$BIN/initdb" -D "$ROOT/pg" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null)
    FRESH=1
fi
if ! as_pg "$BIN/pg_ctl" status -D "$ROOT/pg" >/dev/null 2>&1; then
    (cd / && as_pg "$BIN/pg_ctl" start -D "$ROOT/pg" -l "$ROOT/pg/postgres.log" -w \
        -o "-p $PORT -k $ROOT/run -c listen_addresses='' -c max_connections=300 -c shared_buffers=128MB" >/dev/null)
fi
[ "${KEEP:-0}" = 1 ] || trap '(cd / && as_pg "$BIN/pg_ctl" stop -D "$ROOT/pg" -m fast >/dev/null)' EXIT
if [ "${FRESH:-0}" = 1 ]; then
    psql -qX "host=$ROOT/run port=$PORT user=postgres dbname=postgres" -c "CREATE DATABASE big"
    for f in $(ls ../../migrations/V*.sql | sort -V); do P -f "$f" >/dev/null; done
    P -c "CREATE EXTENSION pgstattuple" \
      -c "INSERT INTO users (email, email_normalized, username, password_hash)
          SELECT 'u'||i||'@b.invalid', 'u'||i||'@b.invalid', 'user'||i, 'x' FROM generate_series(1,100) i" \
      -c "INSERT INTO workspaces (name, owner_id) VALUES ('bench', 1)" \
      -c "INSERT INTO chats (workspace_id, name, kind, created_by)
          SELECT 1, 'room-'||i, 'channel', 1 FROM generate_series(1,1000) i" \
      -c "DROP INDEX message_search_tsv_idx" -c "DROP INDEX message_search_trgm_idx"
    P -f gen.sql
fi
OFF=$(P -Atc "SELECT coalesce(max(seq), 0) FROM messages")
batch() { P -At -v wm="'$1'" -f batch.sql 2>&1 | awk '/Execution Time/ {print $3}'; }
stats() { sort -n | awk '{a[NR]=$1; s+=$1} END {printf "median %.1f  p90 %.1f  max %.1f ms, %.0f rows/s\n", a[int((NR+1)/2)], a[int(NR*0.9)], a[NR], NR*500/(s/1000)}'; }
case "${1:-}" in
ab)
    set -- $2
    P -c "SELECT gin_clean_pending_list('message_search_trgm_idx'), gin_clean_pending_list('message_search_tsv_idx')" \
      -c "DELETE FROM search_outbox" -v off="$OFF" -v n=$(( $# * 25000 )) -f backlog.sql -c CHECKPOINT >/dev/null
    for wm in "$@"; do
        printf 'work_mem %6s kB: ' "$wm"
        for _ in $(seq 50); do batch "${wm}kB"; done | stats
        echo "  load $(cut -d' ' -f1 /proc/loadavg)"
    done ;;
livelock)
    shift
    P -c "SELECT gin_clean_pending_list('message_search_trgm_idx'), gin_clean_pending_list('message_search_tsv_idx')" \
      -c "DELETE FROM search_outbox" -v off="$OFF" -v n=20000 -f backlog.sql >/dev/null
    try() {
        out=$(P -v ON_ERROR_STOP=0 -v lim="$1" -v tmo="'$2'" -v wm="'$3'" -f try.sql 2>&1 || true)
        st=ok; echo "$out" | grep -q "statement timeout" && st=cancelled
        echo "batch $1, timeout $2, work_mem $3: $st; pending rows trgm/tsv $(echo "$out" | awk -F'|' '/pending/ {gsub(/ /, ""); print $2 "/" $3}')"
    }
    for _ in $(seq 7); do try 500 10s 4MB >/dev/null; done
    for _ in $(seq 20); do r=$(try 500 "$TMO" 4MB); echo "$r"; case "$r" in *cancelled*) break ;; esac; done
    for wm in "$@"; do for _ in $(seq 6); do try 1 "$TMO" "$wm"; done; done ;;
*) echo "usage: run.sh ab \"4096 1024 ...\" | run.sh livelock WORK_MEM..." >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The PostgreSQL ceiling for persisted messages, and the server's figure measured in the same run.
#
# 1. pgbench runs scripts/pgbench-insert.sql (one 50-row INSERT into messages per transaction,
#    the row shape the chat rooms write) at several client counts; rows/s = tps × 50.
# 2. Then `cargo bench --bench group_commit` runs against the same cluster (the room's group
#    commit, batches of 1/10/50/100, 1 and 8 rooms, and one autocommit INSERT per message).
# 3. It prints both, and the ratio of the room's batch-50 figure to the ceiling.
#
# Usage: scripts/pgbench-insert.sh
#   DATABASE_URL=postgres://…   use that (migrated, fechatter) database instead of a throwaway
#                               cluster; the group_commit bench then needs BENCH_DATABASE_URL
#   CLIENTS="1 2 8 16"  DURATION=10 (s per pgbench run)  RUNS=3 (medians of RUNS runs)
#   GROUP_COMMIT=0      skip step 2
#   SQL=scripts/pgbench-insert-outbox.sql   the INSERT plus each row's search outbox row (what a
#                       send writes since V7); default scripts/pgbench-insert.sql
#   FSYNC=off           throwaway settings (fsync, synchronous_commit, full_page_writes off)
# The throwaway cluster runs with fsync on by default, as `fechatter serve` runs its own.
set -euo pipefail

cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-"1 2 8 16"}
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
GROUP_COMMIT=${GROUP_COMMIT:-1}
FSYNC=${FSYNC:-on}
ROWS=50
SQL=${SQL:-scripts/pgbench-insert.sql}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

bin_dir() {
    local d
    d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
    if [ -x "$d/pgbench" ] && [ -x "$d/pg_ctl" ]; then
        echo "$d"
    else
        ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1
    fi
}
BIN=$(bin_dir)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

ROOT=""
cleanup() {
    if [ -n "$ROOT" ]; then
        as_pg "$BIN/pg_ctl" stop -D "$ROOT/pg" -m fast >/dev/null 2>&1 || true
        rm -rf "$ROOT"
    fi
}
trap cleanup EXIT

if [ -n "${DATABASE_URL:-}" ]; then
    CEILING_DB=$DATABASE_URL
    GC_DB=${BENCH_DATABASE_URL:-}
    [ -z "$GC_DB" ] && [ "$GROUP_COMMIT" = 1 ] && {
        echo "with DATABASE_URL, also set BENCH_DATABASE_URL (an empty or fechatter database) or GROUP_COMMIT=0" >&2
        exit 2
    }
else
    ROOT=$(mktemp -d /tmp/fechatter-pgbench-XXXXXX)
    chmod 0755 "$ROOT"
    mkdir -p "$ROOT/pg" "$ROOT/run"
    [ "$(id -u)" = 0 ] && chown postgres: "$ROOT/pg" "$ROOT/run"
    chmod 0700 "$ROOT/pg"
    as_pg "$BIN/initdb" -D "$ROOT/pg" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    OPTS="-p 5432 -k $ROOT/run -c listen_addresses='' -c max_connections=300 -c shared_buffers=128MB"
    [ "$FSYNC" = off ] && OPTS="$OPTS -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    (cd / && as_pg "$BIN/pg_ctl" start -D "$ROOT/pg" -l "$ROOT/pg/postgres.log" -w -o "$OPTS" >/dev/null)
    HOST="host=$ROOT/run port=5432 user=postgres"
    "$BIN/psql" -qX "$HOST dbname=postgres" -c "CREATE DATABASE ceiling" -c "CREATE DATABASE group_commit"
    CEILING_DB="$HOST dbname=ceiling"
    GC_DB="$HOST dbname=group_commit"
    # The migrations, in version order, as plain SQL (what refinery applies at start-up).
    for f in $(ls migrations/V*.sql | sort -V); do
        "$BIN/psql" -qX -v ON_ERROR_STOP=1 "$CEILING_DB" -f "$f" >/dev/null
    done
fi

psql_q() { "$BIN/psql" -qAtX -v ON_ERROR_STOP=1 "$CEILING_DB" -c "$1"; }
SENDER=$(psql_q "INSERT INTO users (email, email_normalized, username, password_hash)
                 VALUES ('pgb-$$@bench.invalid', 'pgb-$$@bench.invalid', 'pgbench', 'x') RETURNING id" | head -1)
WS=$(psql_q "INSERT INTO workspaces (name, owner_id) VALUES ('pgbench', $SENDER) RETURNING id" | head -1)
BASE=""
for i in 0 1 2 3 4 5 6 7; do
    id=$(psql_q "INSERT INTO chats (workspace_id, name, kind, created_by)
                 VALUES ($WS, 'pgbench-$$-$i', 'channel', $SENDER) RETURNING id" | head -1)
    [ -z "$BASE" ] && BASE=$id
    [ "$id" = $((BASE + i)) ] || { echo "chat ids are not consecutive" >&2; exit 1; }
done
psql_q "CREATE SEQUENCE IF NOT EXISTS pgbench_msg_seq" >/dev/null

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $("$BIN/postgres" --version)"
echo "PostgreSQL: fsync=$(psql_q 'SHOW fsync') synchronous_commit=$(psql_q 'SHOW synchronous_commit')"
echo
echo "pgbench: $SQL, one ${ROWS}-row INSERT per transaction, ${DURATION}s per run, median of $RUNS runs"
printf '%8s  %12s  %s\n' clients "rows/s" "runs (rows/s)"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A CEILING
for c in $CLIENTS; do
    j=$((c < 2 ? c : 2))
    results=()
    for _ in $(seq "$RUNS"); do
        tps=$("$BIN/pgbench" -n -c "$c" -j "$j" -T "$DURATION" -D base="$BASE" -D sender="$SENDER" \
            -f "$SQL" "$CEILING_DB" 2>/dev/null |
            awk '/^tps = / {print $3; exit}')
        results+=("$(awk -v t="$tps" -v r="$ROWS" 'BEGIN {printf "%.0f", t * r}')")
    done
    CEILING[$c]=$(printf '%s\n' "${results[@]}" | median)
    printf '%8s  %12s  %s\n' "$c" "${CEILING[$c]}" "${results[*]}"
done
best=$(printf '%s\n' "${CEILING[@]}" | sort -n | tail -1)

[ "$GROUP_COMMIT" = 1 ] || exit 0
echo
echo "cargo bench --bench group_commit (same cluster), $RUNS runs"
declare -A GC
for r in $(seq "$RUNS"); do
    BENCH_DATABASE_URL="$GC_DB" cargo bench --bench group_commit >"/tmp/group_commit-run$r.log" 2>&1 ||
        { tail -20 "/tmp/group_commit-run$r.log"; exit 1; }
    while read -r id rate; do GC[$id]="${GC[$id]:-} $rate"; done < <(scripts/criterion-summary.py group_commit)
done
printf '%-36s  %12s  %s\n' case "msgs/s" "runs (msgs/s)"
declare -A GCM
for id in $(printf '%s\n' "${!GC[@]}" | sort -V); do
    GCM[$id]=$(printf '%s\n' ${GC[$id]} | median)
    printf '%-36s  %12s  %s\n' "$id" "${GCM[$id]}" "${GC[$id]# }"
done
echo
for rooms in 1 8; do
    id="group_commit/room_commit/${rooms}rooms/50"
    c=$rooms
    [ -n "${CEILING[$c]:-}" ] || continue
    awk -v s="${GCM[$id]:-0}" -v p="${CEILING[$c]}" -v b="$best" -v r="$rooms" 'BEGIN {
        printf "batch 50, %d room(s): %.0f msgs/s = %.0f%% of pgbench at %d client(s) (%.0f rows/s), %.0f%% of the best ceiling (%.0f)\n",
            r, s, 100 * s / p, r, p, 100 * s / b, b }'
done

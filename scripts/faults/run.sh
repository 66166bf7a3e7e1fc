#!/usr/bin/env bash
# The fault suite (issue 16): builds the release binaries and runs `fechatter-load fault`.
# Each scenario starts its own throwaway PostgreSQL (synchronous_commit=on, fsync on) under
# /tmp and the release server as a subprocess; nothing needs to be running, and the shared
# test cluster is never touched.
#
#   scripts/faults/run.sh                 # every scenario, full size (about 20 minutes)
#   scripts/faults/run.sh --quick         # the small version CI runs (about 2 minutes)
#   scripts/faults/run.sh kill9 --cycles 50
#   scripts/faults/run.sh cluster-kill9         # 3 nodes + redis-server, one kill -9 per cycle
#   scripts/faults/run.sh soak --soak-secs 120 --json /tmp/soak.json
#   scripts/faults/run.sh meili --meili-bin ../shared/meilisearch/meilisearch
#
# `meili` (part of `all`) starts the real Meilisearch binary too: `--meili-bin` or
# FECHATTER_MEILI_BIN, else ../shared/meilisearch/meilisearch of the source tree, else
# `meilisearch` on PATH; `all` skips it, saying so, where there is none (`--skip meili`).
#
# Exit code: 0 when every scenario was clean, 1 on any loss or broken bound, 2 on errors.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked --bins
exec target/release/fechatter-load fault "$@"

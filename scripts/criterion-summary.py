#!/usr/bin/env python3
"""Prints `<benchmark id> <elements per second>` for every benchmark of a criterion group, from
the last run's estimates (median time per iteration) under $CARGO_TARGET_DIR/criterion.

Usage: scripts/criterion-summary.py GROUP [--time]   (--time: median µs per iteration instead)
"""
import glob
import json
import os
import sys

group = sys.argv[1]
target = os.environ.get("CARGO_TARGET_DIR", "target")
for bench in sorted(glob.glob(f"{target}/criterion/{glob.escape(group)}/**/new/benchmark.json", recursive=True)):
    new = os.path.dirname(bench)
    with open(bench) as f:
        meta = json.load(f)
    with open(os.path.join(new, "estimates.json")) as f:
        median_ns = json.load(f)["median"]["point_estimate"]
    if "--time" in sys.argv[2:]:
        print(meta["full_id"], f"{median_ns / 1000:.2f}")
        continue
    thr = meta.get("throughput") or {}
    n = thr.get("Elements") or thr.get("Bytes") or 1
    print(meta["full_id"], f"{n / (median_ns / 1e9):.0f}")

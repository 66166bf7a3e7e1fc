#!/usr/bin/env python3
"""Turns scripts/dos/run.sh output (one JSON row per line) into the markdown table of
RELIABILITY.md's dos section: each attack with the ratio of its honest p99 (and p50) to the
baseline row right before it, and how many of its honest sends took over 3× that baseline's p99
(rows that carry their latencies, `lat_ms`). Also against the pooled baseline: the p99 of every
baseline row's sends together (a 15 s baseline row still carries a few tail stalls of the
machine — database fsyncs behind other work on the disk — that the pooled one averages out);
printed first.   scripts/dos/table.py < rows.jsonl"""

import json
import sys

COUNTERS_SKIP = {"server_log_bytes", "server_cpu_s", "load1", "attacker_cpu_s",
                 "server_side_honest", "new_connections_during"}


def main():
    rows = []
    for line in sys.stdin:
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line))
    pooled = sorted(x for r in rows if r["attack"].startswith("baseline") for x in r.get("lat_ms", []))
    pooled_p99 = pooled[min(len(pooled) - 1, int(round(0.99 * (len(pooled) - 1))))] if pooled else None
    if pooled_p99:
        print(f"Pooled baseline: {len(pooled)} sends, p50 {pooled[len(pooled) // 2]} ms, p99 {pooled_p99} ms\n")
    print("| Attack | Sends / failed | p50 ms | p95 ms | p99 ms | max ms | p99 / baseline |"
          " p99 / pooled baseline | Sends > 3× base p99 | Server >25/>50/>100 ms |"
          " RSS MB before / peak / after | fds | New conns during / after | CPU s server / attacker |"
          " load1 | Attack counters |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = None
    for r in rows:
        if r["attack"] == "warmup":
            continue
        st = r["attack_stats"]
        is_base = r["attack"].startswith("baseline")
        ratio = "—"
        if not is_base and base and base["p99_ms"]:
            ratio = f"{r['p99_ms'] / base['p99_ms']:.1f}× (p50 {r['p50_ms'] / base['p50_ms']:.1f}×)"
        vs_pooled = "—"
        if not is_base and pooled_p99:
            vs_pooled = f"{r['p99_ms'] / pooled_p99:.1f}×"
        over3 = "—"
        if not is_base and base and base["p99_ms"] and "lat_ms" in r:
            over3 = str(sum(1 for x in r["lat_ms"] if x > 3 * base["p99_ms"]))
        sv = st.get("server_side_honest", {})
        srv = f"{sv.get('over_25ms', '?')} / {sv.get('over_50ms', '?')} / {sv.get('over_100ms', '?')}"
        rss = " / ".join(str(x) for x in r["rss_mb"])
        if r.get("rss_settle_mb_every_5s"):
            rss += " (" + ", ".join(str(x) for x in r["rss_settle_mb_every_5s"]) + ")"
        fds = " / ".join(str(x) for x in r["fds"])
        nc = st.get("new_connections_during", {})
        conns = f"{nc.get('ok', '?')} of {nc.get('ok', 0) + nc.get('failed', 0)} / {r['health_after']}"
        cpu = f"{st.get('server_cpu_s', '?')} / {st.get('attacker_cpu_s', '—')}"
        counters = ", ".join(f"{k} {v}" for k, v in st.items() if k not in COUNTERS_SKIP and v)
        print(f"| {r['attack']} | {r['sends']} / {r['failed']} | {r['p50_ms']} | {r.get('p95_ms', '—')} |"
              f" {r['p99_ms']} | {r.get('max_ms', '—')} | {ratio} | {vs_pooled} | {over3} |"
              f" {srv} | {rss} | {fds} | {conns} | {cpu} | {st.get('load1', '?')} | {counters or '—'} |")
        if is_base:
            base = r


if __name__ == "__main__":
    main()

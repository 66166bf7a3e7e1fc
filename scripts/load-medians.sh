#!/bin/sh
# Prints the median over runs of the figures BENCHMARKS.md reports, from the JSON summaries
# written by scripts/load-bench.sh. Usage: scripts/load-medians.sh [DIR]
set -eu
cd "${1:-/tmp/load-bench}"
median() { # median FILE-GLOB JQ-PATH
  jq -s "[.[] | $2] | sort | .[(length / 2 | floor)]" $1
}
echo "fanout deliveries/s       $(median 'fanout-[0-9].json' .fechatter.deliveries_per_sec)"
echo "baseline deliveries/s     $(median 'fanout-[0-9].json' .baseline.deliveries_per_sec)"
echo "ratio                     $(median 'fanout-[0-9].json' .ratio)"
echo "NATS deliveries/s         $(median 'fanout-[0-9].json' .broker.deliveries_per_sec)"
echo "ratio to NATS             $(median 'fanout-[0-9].json' .broker_ratio)"
echo "fanout to-last median ms  $(median 'fanout-[0-9].json' .fechatter.time_to_last_member_median_ms)"
echo "baseline to-last med ms   $(median 'fanout-[0-9].json' .baseline.time_to_last_member_median_ms)"
echo "fanout lost/dup/ooo       $(jq -s '[.[] | .fechatter.lost + .fechatter.duplicated + .fechatter.out_of_order] | add' fanout-[0-9].json)"
echo "connect opened            $(median 'connect-[0-9].json' .opened)"
echo "connect held              $(median 'connect-[0-9].json' .held)"
echo "connects/s                $(median 'connect-[0-9].json' .connects_per_sec)"
echo "server KiB/conn           $(median 'connect-[0-9].json' .server_rss_per_conn_kib)"
echo "client KiB/conn           $(median 'connect-[0-9].json' .client_rss_per_conn_kib)"
echo "chat acked/s              $(median 'chat-[0-9].json' .acknowledged_per_sec)"
echo "chat deliveries/s         $(median 'chat-[0-9].json' .deliveries_per_sec)"
echo "chat p50/p90/p99/p999/max $(for p in p50_ms p90_ms p99_ms p999_ms max_ms; do printf '%s ' "$(median 'chat-[0-9].json' .latency.$p)"; done)"
echo "chat ack p50/p99          $(median 'chat-[0-9].json' .ack_latency.p50_ms) $(median 'chat-[0-9].json' .ack_latency.p99_ms)"
echo "chat lost/dup/ooo (sum)   $(jq -s '[.[] | .lost + .duplicated + .out_of_order] | add' chat-[0-9].json)"
echo "http requests/s           $(median 'http-[0-9].json' .requests_per_sec)"
echo "http errors (sum)         $(jq -s '[.[] | .errors] | add' http-[0-9].json)"
for r in login list_chats send list_messages search; do
  echo "http $r /s p50 p99       $(median 'http-[0-9].json' .routes.$r.per_sec) $(median 'http-[0-9].json' .routes.$r.latency.p50_ms) $(median 'http-[0-9].json' .routes.$r.latency.p99_ms)"
done

# Sourced by the load scripts. A run of the load tool opens 10,000–30,000 loopback
# connections, which stay in TIME_WAIT for 60 s after they close; the next run's connects then
# find most of the 28,232 ephemeral ports taken, and connect(2) scans for a free one: seen as
# 748 connects/s instead of ~2,300/s, with the tool's CPU per connect 8× higher, always in the
# fifth run of a connect A/B. `drain_time_wait` waits (at most 90 s) until fewer than
# TIME_WAIT_MAX (2,000) sockets are left, so that every run starts from the same state.
drain_time_wait() {
  local i
  for i in $(seq 90); do
    [ "$(ss -tan state time-wait | wc -l)" -lt "${TIME_WAIT_MAX:-2000}" ] && return 0
    sleep 1
  done
  echo "still $(ss -tan state time-wait | wc -l) sockets in TIME_WAIT after 90 s" >&2
}

#!/usr/bin/env python3
"""Denial-of-service probes against a running Fechatter server (loopback only, bounded).

For each attack: an honest client sends messages alongside (DOS_HONEST_RATE sends/s, 30 by
default, round robin over DOS_HONEST_USERS users, 32 by default) and its latency p50/p95/p99 and
failures are reported against a baseline from the same run, with the
server's RSS and open descriptors before, during (max) and after. Usage:

    scripts/dos/dos.py --server http://127.0.0.1:18080 --pid <server pid> [attack ...]

Attacks: ws-bigframe metrics-methods slow-body failed-logins spread-logins sse-churn bad-lines
conn-cap slow-body-20 (default: all of these), made-up-methods (only by name: metrics-methods
without its scrapers), and proxied-slow-body proxied-failed-logins (only
with --proxied: the server trusts 127.0.0.0/8 as its proxy and every client, honest or not, is
told apart by X-Forwarded-For). Prefer scripts/dos/run.sh, which starts the release server with
default limits.

Each attack is preceded by its own baseline row (the honest client alone, same run). The attack
runs in its own process at nice DOS_ATTACKER_NICE (19 by default): the attacker shares this
machine's cores with the server and the honest client, and would not on a real network, so it
gets only the CPU they leave; its own CPU seconds are reported (DOS_ATTACKER_NICE=0: the old,
unfair run).

The honest rate sets how many samples a row's p99 rests on: 30/s for 15 s is 450 sends (the p99
is about the 5th slowest). The first two passes sent 5/s over 8 users (75 sends: the p99 was the
second-slowest send, and same-hour baselines ranged 6.5-54 ms); DOS_HONEST_RATE=5
DOS_HONEST_USERS=8 reproduces them. The users share the load because each has its own
FECHATTER_RATE_LIMIT_PER_HOUR (1000) bucket: a whole run at 30/s is ~270 sends per user.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import random
import resource
import socket
import statistics
import string
import sys
import threading
import time
import urllib.parse

ATTACK_SECS = int(os.environ.get("DOS_ATTACK_SECS", "15"))
SETTLE_SECS = int(os.environ.get("DOS_SETTLE_SECS", "15"))
ATTACKER_NICE = int(os.environ.get("DOS_ATTACKER_NICE", "19"))
HONEST_RATE = float(os.environ.get("DOS_HONEST_RATE", "30"))
HONEST_USERS = int(os.environ.get("DOS_HONEST_USERS", "32"))
# An honest-only row before the first baseline (0: none, as before the third pass).
WARMUP_SECS = int(os.environ.get("DOS_WARMUP_SECS", "20"))
# Behind the proxy (--proxied): every request names its client in X-Forwarded-For.
PROXIED = {"on": False}


def rnd(n=8):
    return "".join(random.choice(string.ascii_lowercase) for _ in range(n))


class Api:
    def __init__(self, host, port, source="127.0.0.1", forwarded=None):
        self.host, self.port, self.source = host, port, source
        self.forwarded = forwarded
        self.conn = None

    def call(self, method, path, body=None, token=None, headers=None, timeout=10):
        h = {"Content-Type": "application/json"}
        if token:
            h["Authorization"] = f"Bearer {token}"
        if self.forwarded:
            h["X-Forwarded-For"] = self.forwarded
        h.update(headers or {})
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(
                        self.host, self.port, timeout=timeout, source_address=(self.source, 0))
                self.conn.request(method, path, body=data, headers=h)
                r = self.conn.getresponse()
                raw = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                try:
                    return r.status, json.loads(raw) if raw else None
                except ValueError:
                    return r.status, raw
            except (OSError, http.client.HTTPException):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt == 1:
                    return 0, None
        return 0, None


def proc_figures(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) * 1024
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, fds
    except (OSError, StopIteration) as e:
        print(f"proc figures {pid}: {e!r}", file=sys.stderr)
        return 0, 0


class Honest:
    """Sends HONEST_RATE messages a second (one at a time, the next due 1/rate after the last
    started; round robin over its users) and records latencies."""

    def __init__(self, api_factory, users, chat):
        self.api_factory, self.users, self.chat = api_factory, users, chat

    def run(self, secs):
        api = self.api_factory()
        lat, fail, statuses = [], 0, {}
        self.slowest = []  # (ms, seconds into the row)
        period = 1.0 / HONEST_RATE
        start = time.time()
        end = start + secs
        i = 0
        while time.time() < end:
            u = self.users[i % len(self.users)]
            i += 1
            t = time.perf_counter()
            s, _ = api.call("POST", "/api/messages", {"chat_id": self.chat, "content": f"honest {i}"}, u)
            dt = (time.perf_counter() - t) * 1000
            statuses[s] = statuses.get(s, 0) + 1
            if s == 201 or s == 200:
                lat.append(dt)
                self.slowest = sorted(self.slowest + [(round(dt, 1), round(time.time() - start, 1))],
                                      reverse=True)[:5]
            else:
                fail += 1
            time.sleep(max(0.0, period - dt / 1000))
        return lat, fail, statuses


HONEST_ROUTE = 'route="/api/messages"'


def server_buckets(ctx):
    """The server's own latency histogram of the honest route (POST /api/messages), cumulative
    counts per bucket bound (seconds), from /metrics."""
    s, body = Api(ctx.host, ctx.port).call("GET", "/metrics")
    out = {}
    if s != 200 or not isinstance(body, (bytes, bytearray)):
        return out
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("fechatter_http_request_duration_seconds_bucket{") and HONEST_ROUTE in line \
                and 'method="POST"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[le] = float(line.rsplit(" ", 1)[1])
    return out


def server_slow(before, after):
    """How many honest sends took the server over 25/50/100 ms (its own measure, from request
    parsed to response ready: no socket, scheduling or client time)."""
    def over(bound):
        total = after.get("+Inf", 0) - before.get("+Inf", 0)
        within = after.get(bound, 0) - before.get(bound, 0)
        return int(total - within)
    return {"over_25ms": over("0.025"), "over_50ms": over("0.05"), "over_100ms": over("0.1")}


def cpu_secs(pid):
    """User + system CPU seconds the process has used."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


# ---------------------------------------------------------------------------------- attacks

def source(i):
    return f"127.0.{1 + i // 250}.{2 + i % 250}"


def ws_bigframe(ctx, stop):
    """20 concurrent connections each announcing a 128 MiB frame before auth and streaming it."""
    stats = {"connections": 0, "bytes_sent": 0, "closed_early": 0}

    def one(i):
        chunk = b"x" * 65536
        while not stop.is_set():
            try:
                s = socket.create_connection((ctx.host, ctx.port), timeout=5, source_address=(source(i), 0))
                s.sendall((f"GET /ws HTTP/1.1\r\nHost: {ctx.host}\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
                s.recv(4096)
                stats["connections"] += 1
                s.sendall(bytes([0x81, 0x80 | 127]) + (128 << 20).to_bytes(8, "big") + b"\1\2\3\4")
                sent = 0
                while sent < (128 << 20) and not stop.is_set():
                    s.sendall(chunk)
                    sent += len(chunk)
                    stats["bytes_sent"] += len(chunk)
            except OSError:
                stats["closed_early"] += 1
            finally:
                try:
                    s.close()
                except Exception:
                    pass
            time.sleep(0.05)

    return [threading.Thread(target=one, args=(i,), daemon=True) for i in range(20)], stats


def metrics_methods(ctx, stop, scrapers=4):
    """20,000 requests with made-up methods, and four scrapers of /metrics."""
    stats = {"requests": 0, "scrapes": 0, "metrics_bytes": 0}

    def junk(i):
        api = Api(ctx.host, ctx.port, source(i))
        n = 0
        while not stop.is_set() and n < 5000:
            api.call(f"X{rnd(6).upper()}", f"/api/{rnd()}")
            n += 1
            stats["requests"] += 1

    def scraper(i):
        api = Api(ctx.host, ctx.port, source(10 + i))
        while not stop.is_set():
            s, body = api.call("GET", "/metrics")
            stats["scrapes"] += 1
            if isinstance(body, (bytes, bytearray)):
                stats["metrics_bytes"] = len(body)

    return ([threading.Thread(target=junk, args=(i,), daemon=True) for i in range(4)]
            + [threading.Thread(target=scraper, args=(i,), daemon=True) for i in range(scrapers)]), stats


def stall(ctx, stop, addresses, per_address, forwarded=None, request=None):
    """Connections whose requests never finish: `per_address` (a number, or one per entry) from
    each entry of `addresses` (one thread per entry; behind the proxy each entry's requests name
    `forwarded(i)`), reopened as the server closes them; counts what the server answered."""
    stats = {"opened": 0, "closed_by_server": 0, "refused": 0, "max_open": 0,
             "answered_408": 0, "answered_429": 0, "answered_503": 0}
    lock = threading.Lock()
    open_now = [0] * len(addresses)
    head = request or (
        "POST /api/auth/login HTTP/1.1\r\nHost: {host}\r\n{xff}"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"email\":")

    def one(i):
        socks = []
        xff = f"X-Forwarded-For: {forwarded(i)}\r\n" if forwarded else ""
        raw = head.format(host=ctx.host, xff=xff).encode()
        cap = per_address[i] if isinstance(per_address, list) else per_address
        while not stop.is_set():
            while len(socks) < cap and not stop.is_set():
                try:
                    s = socket.create_connection((ctx.host, ctx.port), timeout=5,
                                                 source_address=(addresses[i], 0))
                    s.sendall(raw)
                    s.setblocking(False)
                    socks.append(s)
                    with lock:
                        stats["opened"] += 1
                except OSError:
                    with lock:
                        stats["refused"] += 1
                    time.sleep(0.01)
            alive = []
            for s in socks:
                try:
                    d = s.recv(4096)
                    if d == b"" or d:
                        with lock:
                            stats["closed_by_server"] += 1
                            key = "answered_" + d[9:12].decode(errors="replace")
                            if key in stats:
                                stats[key] += 1
                        s.close()
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    continue
                alive.append(s)
            socks = alive
            with lock:
                open_now[i] = len(socks)
                stats["max_open"] = max(stats["max_open"], sum(open_now))
            time.sleep(0.1)
        for s in socks:
            s.close()

    return [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(addresses))], stats


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def slow_body(ctx, stop):
    """Up to 4,000 connections (over 8 addresses) whose login bodies never finish; reopened."""
    return stall(ctx, stop, [source(i) for i in range(8)], 500)


def slow_body_20(ctx, stop):
    """20 addresses (127.0.0.x) × 500 stalled login bodies: 10,000, past the server-wide cap
    of pending bodies (4,096), each reopened as it is closed."""
    raise_fd_limit()
    return stall(ctx, stop, [f"127.0.0.{10 + i}" for i in range(20)], 500)


def conn_cap(ctx, stop):
    """One address holding 6,000 connections (past the 4,096 per-address cap) with request
    headers that never finish (slowloris), each reopened at once when the server closes it."""
    raise_fd_limit()
    return stall(ctx, stop, ["127.0.0.9"] * 12, 500,
                 request="GET /api/health HTTP/1.1\r\nHost: {host}\r\n{xff}X-Slow: 1\r\n")


def proxied_slow_body(ctx, stop):
    """Behind the proxy: one forwarded client with 5,000 stalled login bodies (past its 1,024
    pending bodies and the 4,096 in all) and 4 more with 250 each, all on the proxy's address,
    which is exempt from the per-address connection cap: only the forwarded caps hold them."""
    raise_fd_limit()
    fwd = ["198.51.100.1"] * 10 + [f"198.51.100.{2 + i}" for i in range(4)]
    return stall(ctx, stop, ["127.0.0.1"] * 14, [500] * 10 + [250] * 4, forwarded=lambda i: fwd[i])


def failed_logins(ctx, stop, spread_account=None, proxied=False):
    """64 concurrent wrong-password logins from 40 addresses (unknown emails, or one account);
    proxied: all through the proxy's address, the 40 told apart by X-Forwarded-For."""
    stats = {"attempts": 0, "401": 0, "429": 0, "other": 0}
    lock = threading.Lock()

    def one(i):
        if proxied:
            api = Api(ctx.host, ctx.port, "127.0.0.1", forwarded=f"203.0.113.{10 + i % 40}")
        else:
            api = Api(ctx.host, ctx.port, source(i % 40))
        while not stop.is_set():
            email = spread_account or f"{rnd()}@attack.example"
            s, _ = api.call("POST", "/api/auth/login", {"email": email, "password": "wrong-" + rnd()})
            with lock:
                stats["attempts"] += 1
                k = str(s) if s in (401, 429) else "other"
                stats[k] += 1
            if s == 429:
                time.sleep(0.05)

    return [threading.Thread(target=one, args=(i,), daemon=True) for i in range(64)], stats


def sse_churn(ctx, stop):
    """500 open/close cycles of an SSE stream by one user with 8 streams already open."""
    stats = {"cycles": 0, "ok": 0, "refused": 0}
    token = ctx.churn_token
    held = []
    for _ in range(8):
        s = socket.create_connection((ctx.host, ctx.port))
        s.sendall(f"GET /api/events?access_token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        held.append(s)

    def one():
        while not stop.is_set() and stats["cycles"] < 500:
            for _ in range(2):
                s = socket.create_connection((ctx.host, ctx.port), timeout=5)
                s.sendall(f"GET /api/events?access_token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                head = s.recv(4096)
                stats["cycles"] += 1
                if head.startswith(b"HTTP/1.1 200"):
                    stats["ok"] += 1
                else:
                    stats["refused"] += 1
                s.close()
            time.sleep(0.01)
        for s in held:
            s.close()

    return [threading.Thread(target=one, daemon=True)], stats


def bad_lines(ctx, stop):
    """5,000 malformed request lines; the server's log growth is reported."""
    stats = {"sent": 0}

    def one(i):
        n = 0
        while not stop.is_set() and n < 1250:
            try:
                s = socket.create_connection((ctx.host, ctx.port), timeout=5, source_address=(source(i), 0))
                s.sendall(b"\x16\x03\x01 NOT HTTP AT ALL\r\n\r\n")
                s.recv(1024)
                s.close()
            except OSError:
                pass
            n += 1
            stats["sent"] += 1

    return [threading.Thread(target=one, args=(i,), daemon=True) for i in range(4)], stats


ATTACKS = {
    "ws-bigframe": ws_bigframe,
    "metrics-methods": metrics_methods,
    "slow-body": slow_body,
    "failed-logins": failed_logins,
    "spread-logins": lambda ctx, stop: failed_logins(ctx, stop, spread_account=ctx.owner_email),
    "sse-churn": sse_churn,
    "bad-lines": bad_lines,
    "conn-cap": conn_cap,
    "slow-body-20": slow_body_20,
}
# Only by name (not in the default list): the made-up methods alone, without the scrapers that
# are most of metrics-methods' requests, so the server CPU they cost can be compared.
EXTRA_ATTACKS = {
    "made-up-methods": lambda ctx, stop: metrics_methods(ctx, stop, scrapers=0),
}
# Only with --proxied (the server started with FECHATTER_TRUSTED_PROXIES=127.0.0.0/8).
PROXIED_ATTACKS = {
    "proxied-slow-body": proxied_slow_body,
    "proxied-failed-logins": lambda ctx, stop: failed_logins(ctx, stop, proxied=True),
}


class Ctx:
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="http://127.0.0.1:18080")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--log", default="")
    ap.add_argument("--proxied", action="store_true",
                    help="the server trusts 127.0.0.0/8 as a proxy: clients send X-Forwarded-For")
    ap.add_argument("attacks", nargs="*")
    a = ap.parse_args()
    PROXIED["on"] = a.proxied
    u = urllib.parse.urlparse(a.server)
    if not u.hostname.startswith("127."):
        sys.exit("loopback only")
    ctx = Ctx()
    ctx.host, ctx.port = u.hostname, u.port
    ctx.log_size = lambda: os.path.getsize(a.log) if a.log and os.path.exists(a.log) else 0
    # The honest client's own address (behind the proxy: the one the proxy forwards).
    honest_fwd = "192.0.2.10" if a.proxied else None
    api = Api(ctx.host, ctx.port, forwarded=honest_fwd)
    tokens, emails = [], []
    for i in range(HONEST_USERS + 1):
        email = f"honest{i}-{rnd()}@example.com"
        s, body = api.call("POST", "/api/auth/register",
                           {"email": email, "username": f"honest{i}{rnd(4)}", "password": "correct horse battery"})
        assert s == 201, (s, body)
        tokens.append(body["token"])
        emails.append(email)
    ctx.owner_email = emails[0]
    ctx.churn_token = tokens.pop()
    s, ws = api.call("POST", "/api/workspaces", {"name": "dos-" + rnd()}, tokens[0])
    assert s == 201, (s, ws)
    wid = ws["id"]
    s, chat = api.call("POST", "/api/chats", {"workspace_id": wid, "name": "dos" + rnd(4),
                                             "type": "channel", "is_private": False}, tokens[0])
    assert s == 201, (s, chat)
    chat_id = chat["id"]
    for t, e in zip(tokens[1:], emails[1:HONEST_USERS]):
        s, inv = api.call("POST", f"/api/workspaces/{wid}/invites",
                          {"email": e, "role": "member", "expires_in_days": 7}, tokens[0])
        assert s == 201, (s, inv)
        s, _ = api.call("POST", f"/api/invites/{inv['invite_code']}/accept", {}, t)
        assert s == 200, s
        s, _ = api.call("POST", f"/api/chats/{chat_id}/join", {}, t)
        assert s == 200, s
    honest = Honest(lambda: Api(ctx.host, ctx.port, forwarded=honest_fwd), tokens, chat_id)

    mp = multiprocessing.get_context("fork")

    def run_attack(attack, secs, queue):
        # In its own process, so the attack's threads do not share the honest client's GIL; at
        # a low priority, so it takes only the CPU the server and the honest client leave.
        if ATTACKER_NICE:
            os.nice(ATTACKER_NICE)
        stop = threading.Event()
        threads, stats = attack(ctx, stop)
        for t in threads:
            t.start()
        time.sleep(secs)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        stats = dict(stats)
        stats["attacker_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
        queue.put(stats)

    def measure(name, attack, secs=ATTACK_SECS):
        buckets_before = server_buckets(ctx)
        before = proc_figures(a.pid)
        cpu_before = cpu_secs(a.pid)
        log_before = ctx.log_size()
        peak = list(before)
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                rss, fds = proc_figures(a.pid)
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], fds)
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        fresh = {"ok": 0, "failed": 0}

        def new_connections():
            # Once a second a new connection (the honest client's address) asks for health.
            while not sampling.is_set():
                st, _ = Api(ctx.host, ctx.port, forwarded=honest_fwd).call("GET", "/api/health", timeout=5)
                fresh["ok" if st == 200 else "failed"] += 1
                sampling.wait(1.0)

        prober = threading.Thread(target=new_connections, daemon=True)
        prober.start()
        queue = mp.Queue()
        proc = None
        if attack:
            proc = mp.Process(target=run_attack, args=(attack, ATTACK_SECS, queue), daemon=True)
            proc.start()
        lat, fail, statuses = honest.run(secs)
        stats = {}
        if proc:
            try:
                stats = queue.get(timeout=30)
            except Exception:
                stats = {"error": "attack process did not report"}
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        sampling.set()
        prober.join(timeout=6)
        stats["new_connections_during"] = dict(fresh)
        time.sleep(1.1)  # past the 1 s reuse of a rendered scrape
        stats["server_side_honest"] = server_slow(buckets_before, server_buckets(ctx))
        stats["server_log_bytes"] = ctx.log_size() - log_before
        stats["server_cpu_s"] = round(cpu_secs(a.pid) - cpu_before, 1)
        stats["load1"] = round(os.getloadavg()[0], 1)
        during = list(peak)
        settle = []
        for _ in range(SETTLE_SECS // 5 if attack else 0):
            time.sleep(5)
            settle.append(round(proc_figures(a.pid)[0] / 2**20))
        time.sleep(SETTLE_SECS % 5 if attack else 0)
        after = proc_figures(a.pid)
        # A new connection works after the attack.
        s, _ = Api(ctx.host, ctx.port).call("GET", "/api/health")
        row = {
            "attack": name, "sends": len(lat) + fail, "failed": fail,
            "p50_ms": round(pct(lat, 50), 1), "p95_ms": round(pct(lat, 95), 1),
            "p99_ms": round(pct(lat, 99), 1), "max_ms": round(max(lat), 1) if lat else None,
            "honest_rate": HONEST_RATE,
            "rss_mb": [round(before[0] / 2**20), round(during[0] / 2**20), round(after[0] / 2**20)],
            "fds": [before[1], during[1], after[1]], "health_after": s, "attack_stats": stats,
            "statuses": statuses, "rss_settle_mb_every_5s": settle,
            "slowest_ms_at_s": honest.slowest, "lat_ms": [round(x, 1) for x in lat],
        }
        print(json.dumps(row), flush=True)
        return row

    known = dict(ATTACKS, **PROXIED_ATTACKS, **EXTRA_ATTACKS)
    names = a.attacks or list(PROXIED_ATTACKS if a.proxied else ATTACKS)
    for name in names:
        if name not in known:
            sys.exit(f"unknown attack {name}; known: {' '.join(known)}")
        if name.startswith("proxied-") != a.proxied:
            sys.exit(f"{name}: proxied attacks need --proxied and the others need it off")
    if WARMUP_SECS:
        # The server's first seconds (a fresh database's first checkpoint, cold caches) stalled
        # the first rows of earlier runs; this row is printed but is no baseline.
        measure("warmup", None, WARMUP_SECS)
    for name in names:
        # A same-run baseline right before each attack.
        measure("baseline", None)
        measure(name, known[name])
    measure("baseline-after", None)


if __name__ == "__main__":
    main()

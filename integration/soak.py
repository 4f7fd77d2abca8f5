#!/usr/bin/env python3
"""A bounded soak of `egress-proxy serve`: steady load and reloads, fds and RSS sampled over time.

Everything stays on loopback. The script starts, in one asyncio process:

- a TCP echo origin and a keep-alive HTTP/1.1 origin on 127.0.0.1, a UDP echo on 127.0.0.1,
  and the fake DNS server of the e2e suite (`web.test` and `udp.test` answer 127.0.0.1);
- `egress-proxy serve` with HTTP, SOCKS5 (with UDP) and admin listeners on 127.0.0.1:0, a
  policy that allows exactly those destinations (`127.0.0.1` as an exact IP rule, the two
  names through the fake DNS with `allow_local_binding`), `[limits] max_connections` raised
  above the load, and an `[admin] token_file`.

Then, for the whole run (default 10 minutes):

- `--tunnels` (1,000) CONNECT tunnels to the echo origin (opened as `integration/rss.py` does,
  4 KiB echoed through each), held open and echoing a small payload every `--echo-every`
  seconds or so; each one closes after a random lifetime (0.5 to 1.5 times a sixth of the
  run, kept within 10 to 120 s) and is reopened at once, so about as many stay open while
  tunnels keep churning;
- keep-alive forward-proxy GETs to `http://web.test:PORT/` at `--http-rate` per second over a
  few connections, each reconnecting after 100 requests;
- SOCKS5 UDP ASSOCIATE datagrams to the UDP echo (by IPv4 address and by name, alternately)
  at `--udp-rate` per second over a few associations, each re-associating every 200 datagrams;
- a reload every `--reload-every` seconds, alternating SIGHUP and `POST /reload` (bearer
  token), each after rewriting the config to the other of two equivalent versions; every
  reload must show up as one more `egress_reloads_total{result="ok"}` in `/metrics`.

Every loop stops at the deadline and every wait has a timeout, so the script ends by itself.
Every `--interval` seconds it records the proxy's open fds (`/proc/PID/fd`) and VmRSS
(`/proc/PID/status`), and prints a table and a one-line summary at the end.

Pass/fail (exit 1 on any failure, 0 otherwise). The samples taken once every tunnel has been
opened once (the ramp-up) are split into thirds: the first third is warm-up, and the median of
the last third is compared with the median of the middle third.

- fds: the number of open tunnels is held steady, so the proxy's fds must be flat: the last
  third's median may exceed the middle third's by at most 3 % + 8. After the load stops and
  every client socket is closed, the fds must fall back to at most the idle count + 16.
- RSS: the last third's median may exceed the middle third's by at most 5 % + 1 MiB (the
  allocator keeps freed memory, so RSS is not expected to fall back after the load). The
  summary also gives the least-squares slope over the last two thirds (KiB/min), for a reader
  to tell a warm-up that flattens from a steady climb.
- The proxy must stay up and exit 0 on SIGTERM; every reload must succeed (HTTP 200 and the
  metric, no `reload{result=error}`, no ERROR line in its log); client errors (refused or
  failed tunnels, wrong echoes, failed GETs, lost datagrams) may be at most 0.1 % of all
  operations (at least 5 are tolerated). A datagram whose echo was in flight while a reload
  swapped the policy is still an error but counted apart (`udp-lost-at-reload`): the relay
  empties an association's destination cache on a new policy generation and drops replies
  from destinations not re-decided since, so every reload loses the echoes in flight.

    python3 integration/soak.py [--minutes M | --seconds S] [--bin PATH] [--tunnels 1000]

Needs Python >= 3.9, about 2 fds per tunnel in this process (client and origin sockets) and 6
in the proxy (two sockets and, for splice(2), two pipes): the script raises RLIMIT_NOFILE
(inherited by the proxy) and stops with a clear line if the hard limit is too low.
"""

import argparse
import asyncio
import collections
import json
import os
import random
import re
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The helpers below are imported from the other scripts; leave no __pycache__ in the tree.
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "e2e"))

from e2e import FakeDns, kill_everything, spawn  # noqa: E402
from rss import echo, open_tunnel, status_kib  # noqa: E402

#: Every single network operation (connect, handshake, echo, request, datagram) gives up after this.
IO_TIMEOUT = 5.0
#: How long a datagram waits for its echo before it counts as lost.
UDP_TIMEOUT = 2.0
#: How long startup, a reload's metric and the proxy's exit may take.
DEADLINE = 15.0
#: Requests per forward-proxy connection, datagrams per association, before a fresh one.
REQUESTS_PER_CONNECTION = 100
DATAGRAMS_PER_ASSOCIATION = 200
HTTP_CLIENTS = 4
UDP_CLIENTS = 4

FDS_RATIO, FDS_SLACK = 1.03, 8
RSS_RATIO, RSS_SLACK_KIB = 1.05, 1024
FDS_AFTER_SLACK = 16
ERROR_RATE, ERRORS_TOLERATED = 0.001, 5
#: A tunnel in the proxy: client and origin sockets, and a pipe each way for splice(2).
PROXY_FDS_PER_CONNECTION = 6

WEB_BODY = b"soak origin\n"

#: Two equivalent policies (the same rules in another order, another comment); every reload
#: switches to the other one, so each reload really re-reads and recompiles the file.
POLICY = """\
# egress-proxy soak policy, version {version}
enabled = true
allow_local_binding = true
enable_socks5 = true
enable_socks5_udp = true

[domains]
{domains}

[dns]
servers = ["{dns}"]
timeout_ms = 2000

[limits]
max_connections = {max_connections}
max_udp_associations = {max_udp}

[admin]
token_file = "{token_file}"
"""
RULES = [
    '"127.0.0.1" = "allow"',
    '"web.test" = "allow"',
    '"udp.test" = "allow"',
    '"denied.test" = "deny"',
]


def policy_text(version, dns, max_connections, token_file):
    rules = RULES if version % 2 == 0 else list(reversed(RULES))
    return POLICY.format(
        version=version,
        domains="\n".join(rules),
        dns=f"{dns[0]}:{dns[1]}",
        max_connections=max_connections,
        max_udp=4 * UDP_CLIENTS,
        token_file=token_file,
    )


def write_atomically(path, text):
    """A reload never reads a half-written file: write beside it, then rename over it."""
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise KeyError("Max open files")


class Stats:
    def __init__(self):
        self.tunnels_open = 0
        self.tunnels_opened = 0
        self.echoes = 0
        self.requests = 0
        self.datagrams = 0
        self.reloads = {"SIGHUP": 0, "POST": 0}
        self.errors = collections.Counter()
        self.first_errors = []

    def error(self, kind, detail):
        self.errors[kind] += 1
        if len(self.first_errors) < 10:
            self.first_errors.append(f"{kind}: {detail!r}")

    @property
    def operations(self):
        return self.tunnels_opened + self.echoes + self.requests + self.datagrams


class Proxy:
    """`serve` in its own process group; stderr is read by a thread (startup lines, ERRORs)."""

    def __init__(self, bin_path, config, tmp):
        self.proc = spawn(
            [bin_path, "serve", "--config", config, "--http-listen", "127.0.0.1:0",
             "--socks-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
            env={**os.environ, "RUST_LOG": "info", "XDG_RUNTIME_DIR": tmp},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.pid = self.proc.pid
        self.tail = collections.deque(maxlen=50)
        self.error_lines = []
        self.addrs = {}
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.tail.append(line)
            if " ERROR " in line:
                self.error_lines.append(line)
            for key, what in (("http", "http proxy listening"), ("socks", "socks5 proxy listening"),
                              ("admin", "admin API listening")):
                if what in line:
                    addr = re.search(r"addr=(\S+)", line).group(1)
                    host, port = addr.rsplit(":", 1)
                    self.addrs[key] = (host, int(port))
            if "admin" in self.addrs:
                self.ready.set()
        self.ready.set()

    def wait_ready(self):
        if not self.ready.wait(DEADLINE) or "admin" not in self.addrs:
            raise RuntimeError("serve did not start:\n" + "\n".join(self.tail))
        # The startup lines come before the signal handlers: a SIGHUP must not kill it.
        deadline = time.monotonic() + DEADLINE
        while not self._catches_sighup():
            if time.monotonic() > deadline:
                raise RuntimeError("serve never installed its SIGHUP handler")
            time.sleep(0.01)

    def _catches_sighup(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)) != 0
        return False

    def alive(self):
        return self.proc.poll() is None


class Soak:
    def __init__(self, args, proxy, stats, web_port, echo_port, udp_port, token, config, dns):
        self.args, self.proxy, self.stats = args, proxy, stats
        self.web_port, self.echo_port, self.udp_port = web_port, echo_port, udp_port
        self.token, self.config, self.dns = token, config, dns
        self.start = time.monotonic()
        self.end = self.start + args.seconds
        self.ramp = min(10.0, args.seconds / 10)
        self.version = 0
        #: (asked, confirmed) monotonic times of the last reloads: the policy swapped in between.
        self.reload_windows = collections.deque(maxlen=4)
        self.samples = []
        self.failures = []
        self.writers = set()
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def left(self):
        return self.end - time.monotonic()

    async def nap(self, seconds):
        """Sleeps `seconds`, or until the deadline if sooner; False once the deadline passed."""
        await asyncio.sleep(max(0.0, min(seconds, self.left())))
        return self.left() > 0

    # ------------------------------------------------------------------ CONNECT tunnels

    async def tunnel(self, index):
        if not await self.nap(self.ramp * index / self.args.tunnels):
            return
        mean_life = min(120.0, max(10.0, self.args.seconds / 6))
        proxy_port = self.proxy.addrs["http"][1]
        while self.left() > 0:
            try:
                reader, writer = await asyncio.wait_for(
                    open_tunnel(proxy_port, self.echo_port), IO_TIMEOUT
                )
            except (OSError, RuntimeError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                self.stats.error("tunnel-open", e)
                await self.nap(1.0)
                continue
            self.stats.tunnels_opened += 1
            self.stats.tunnels_open += 1
            self.writers.add(writer)
            dies = time.monotonic() + random.uniform(0.5, 1.5) * mean_life
            sent = 0
            try:
                while time.monotonic() < dies:
                    pause = random.uniform(0.5, 1.5) * self.args.echo_every
                    if not await self.nap(min(pause, max(0.0, dies - time.monotonic()))):
                        break
                    sent += 1
                    payload = f"tunnel {index} echo {sent}\n".encode()
                    writer.write(payload)
                    back = await asyncio.wait_for(reader.readexactly(len(payload)), IO_TIMEOUT)
                    if back != payload:
                        self.stats.error("tunnel-echo", back)
                        break
                    self.stats.echoes += 1
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                self.stats.error("tunnel-echo", e)
            finally:
                self.stats.tunnels_open -= 1
                self.writers.discard(writer)
                writer.close()

    # ------------------------------------------------------------------ forward GETs

    async def forward(self, index):
        proxy = self.proxy.addrs["http"]
        authority = f"web.test:{self.web_port}"
        pause = HTTP_CLIENTS / self.args.http_rate
        while self.left() > 0:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(*proxy), IO_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as e:
                self.stats.error("http-connect", e)
                await self.nap(1.0)
                continue
            self.writers.add(writer)
            due = time.monotonic()
            try:
                for n in range(REQUESTS_PER_CONNECTION):
                    due += pause
                    if not await self.nap(due - time.monotonic()):
                        break
                    writer.write(
                        f"GET http://{authority}/{index}/{n} HTTP/1.1\r\nHost: {authority}\r\n"
                        f"User-Agent: soak\r\n\r\n".encode()
                    )
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
                    status = head.split(b" ", 2)[1]
                    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                    body = await asyncio.wait_for(
                        reader.readexactly(int(length.group(1)) if length else 0), IO_TIMEOUT
                    )
                    if status != b"200" or body != WEB_BODY:
                        self.stats.error("http-get", head + body)
                        break
                    self.stats.requests += 1
                    if re.search(rb"(?im)^connection:\s*close", head):
                        break
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError) as e:
                self.stats.error("http-get", e)
            finally:
                self.writers.discard(writer)
                writer.close()

    # ------------------------------------------------------------------ SOCKS5 UDP

    async def udp(self, index):
        pause = UDP_CLIENTS / self.args.udp_rate
        loop = asyncio.get_running_loop()
        while self.left() > 0:
            replies = asyncio.Queue()
            transport, _ = await loop.create_datagram_endpoint(
                lambda: Collect(replies), local_addr=("127.0.0.1", 0)
            )
            writer = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.proxy.addrs["socks"]), IO_TIMEOUT
                )
                self.writers.add(writer)
                relay = await asyncio.wait_for(
                    associate(reader, writer, transport.get_extra_info("sockname")[1]), IO_TIMEOUT
                )
            except (OSError, RuntimeError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                self.stats.error("udp-associate", e)
                transport.close()
                if writer is not None:
                    self.writers.discard(writer)
                    writer.close()
                await self.nap(1.0)
                continue
            due = time.monotonic()
            try:
                for n in range(DATAGRAMS_PER_ASSOCIATION):
                    due += pause
                    if not await self.nap(due - time.monotonic()):
                        break
                    if n % 2:
                        header = b"\x00\x00\x00\x03" + bytes([len(b"udp.test")]) + b"udp.test"
                    else:
                        header = b"\x00\x00\x00\x01" + socket.inet_aton("127.0.0.1")
                    payload = f"datagram {index} {n}".encode()
                    transport.sendto(header + struct.pack("!H", self.udp_port) + payload, relay)
                    sent = time.monotonic()
                    if await self.udp_reply(replies, payload):
                        self.stats.datagrams += 1
                    elif self.during_reload(sent):
                        self.stats.error("udp-lost-at-reload", payload)
                    else:
                        self.stats.error("udp-lost", payload)
            finally:
                transport.close()
                self.writers.discard(writer)
                writer.close()

    def during_reload(self, sent):
        """Whether a policy swap may have fallen between sending at `sent` and the echo."""
        return any(asked - 0.05 <= sent <= confirmed for asked, confirmed in self.reload_windows)

    async def udp_reply(self, replies, payload):
        """Waits for the echo of `payload`; late echoes of earlier (lost) datagrams are skipped."""
        deadline = time.monotonic() + UDP_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(replies.get(), left)
            except asyncio.TimeoutError:
                return False
            if udp_payload(data) == payload:
                return True
        return False

    # ------------------------------------------------------------------ reloads

    def admin(self, method, path, token=None):
        host, port = self.proxy.addrs["admin"]
        request = urllib.request.Request(f"http://{host}:{port}{path}", method=method)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with self.opener.open(request, timeout=IO_TIMEOUT) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    async def reload_counts(self):
        _, text = await asyncio.to_thread(self.admin, "GET", "/metrics")
        counts = {}
        for result in ("ok", "error"):
            found = re.search(rf'^egress_reloads_total{{result="{result}"}} (\d+)', text, re.M)
            counts[result] = int(found.group(1)) if found else 0
        return counts

    async def reloads(self):
        done = 0
        while await self.nap(self.args.reload_every) and self.left() > 1:
            self.version += 1
            write_atomically(self.config, self.policy(self.version))
            how = "SIGHUP" if done % 2 == 0 else "POST"
            window = [time.monotonic(), float("inf")]
            self.reload_windows.append(window)
            if how == "SIGHUP":
                os.kill(self.proxy.pid, signal.SIGHUP)
            else:
                status, body = await asyncio.to_thread(self.admin, "POST", "/reload", self.token)
                if status != 200 or json.loads(body).get("reloaded") is not True:
                    self.failures.append(f"POST /reload answered {status} {body}")
                    return
            done += 1
            deadline = time.monotonic() + DEADLINE
            while (counts := await self.reload_counts())["ok"] < done and counts["error"] == 0:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            window[1] = time.monotonic()
            if counts["error"] or counts["ok"] != done:
                self.failures.append(f"reload {done} ({how}): egress_reloads_total {counts}")
                return
            self.stats.reloads[how] += 1

    def policy(self, version):
        return policy_text(version, self.dns, self.args.max_connections, self.args.token_file)

    # ------------------------------------------------------------------ sampling

    def sample(self):
        self.samples.append({
            "t": time.monotonic() - self.start,
            "fds": open_fds(self.proxy.pid),
            "rss": status_kib(self.proxy.pid, "VmRSS"),
            "tunnels": self.stats.tunnels_open,
            "requests": self.stats.requests,
            "datagrams": self.stats.datagrams,
            "reloads": sum(self.stats.reloads.values()),
        })

    async def sampler(self):
        while self.left() > 0:
            if not self.proxy.alive():
                # Nothing left to measure: every loop stops at once.
                self.end = time.monotonic()
                return
            self.sample()
            await self.nap(self.args.interval)

    async def run(self):
        tasks = [self.sampler(), self.reloads()]
        tasks += [self.tunnel(i) for i in range(self.args.tunnels)]
        tasks += [self.forward(i) for i in range(HTTP_CLIENTS)]
        tasks += [self.udp(i) for i in range(UDP_CLIENTS)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self.failures.append(f"a load task crashed: {result!r}")
        for writer in list(self.writers):
            writer.close()


class Collect(asyncio.DatagramProtocol):
    def __init__(self, queue):
        self.queue = queue

    def datagram_received(self, data, addr):
        self.queue.put_nowait(data)


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def associate(reader, writer, udp_port):
    """SOCKS5 greeting and UDP ASSOCIATE naming our datagram port; returns the relay address."""
    writer.write(b"\x05\x01\x00")
    if await reader.readexactly(2) != b"\x05\x00":
        raise RuntimeError("SOCKS5 method selection refused")
    writer.write(b"\x05\x03\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", udp_port))
    reply = await reader.readexactly(4)
    if reply[:2] != b"\x05\x00" or reply[3] != 1:
        raise RuntimeError(f"UDP ASSOCIATE refused: {reply!r}")
    bound = await reader.readexactly(6)
    return socket.inet_ntoa(bound[:4]), struct.unpack("!H", bound[4:])[0]


def udp_payload(datagram):
    """The payload after a SOCKS5 UDP header (IPv4, domain or IPv6 address)."""
    atyp = datagram[3]
    if atyp == 1:
        return datagram[10:]
    if atyp == 3:
        return datagram[5 + datagram[4] + 2 :]
    return datagram[22:]


async def web(reader, writer):
    """A keep-alive HTTP/1.1 origin: every request head gets `200` with WEB_BODY."""
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(WEB_BODY), WEB_BODY)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


# ------------------------------------------------------------------ verdict and report


def median(rows, key):
    return statistics.median(row[key] for row in rows)


def slope_per_minute(rows, key):
    """Least-squares slope of `key` over the samples' time, per minute (reported, not judged)."""
    ts = [row["t"] / 60 for row in rows]
    ys = [row[key] for row in rows]
    mt, my = statistics.mean(ts), statistics.mean(ys)
    spread = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / spread if spread else 0.0


def judge(soak, idle, after, exit_code):
    """The failures of the criterion in the module docstring; sets the medians it compared."""
    failures = list(soak.failures)
    stats = soak.stats
    steady = [s for s in soak.samples if s["t"] >= soak.ramp + soak.args.interval]
    verdict = {}
    if len(steady) < 6:
        failures.append(f"only {len(steady)} samples after the ramp-up; run longer or sample more often")
    else:
        third = len(steady) // 3
        middle, last = steady[third : 2 * third], steady[len(steady) - third :]
        for key, ratio, slack, unit in (("fds", FDS_RATIO, FDS_SLACK, ""),
                                         ("rss", RSS_RATIO, RSS_SLACK_KIB, " KiB")):
            m, l = median(middle, key), median(last, key)
            verdict[key] = (m, l, slope_per_minute(steady[third:], key))
            if l > m * ratio + slack:
                failures.append(f"{key} keep growing: median {m:.0f}{unit} in the middle third, "
                                f"{l:.0f}{unit} in the last (allowed {m * ratio + slack:.0f})")
    if after["fds"] > idle["fds"] + FDS_AFTER_SLACK:
        failures.append(f"{after['fds']} fds open after the load stopped, {idle['fds']} when idle")
    allowed = max(ERRORS_TOLERATED, ERROR_RATE * stats.operations)
    total = sum(stats.errors.values())
    if total > allowed:
        failures.append(f"{total} client errors > {allowed:.0f} allowed: {dict(stats.errors)}; "
                        f"first: {stats.first_errors}")
    if soak.proxy.error_lines:
        failures.append(f"ERROR lines in the proxy's log: {soak.proxy.error_lines[:5]}")
    if exit_code != 0:
        failures.append(f"the proxy exited {exit_code} on SIGTERM")
    return failures, verdict


def report(soak, idle, after, peak, failures, verdict):
    stats = soak.stats
    print("| t (s) | fds | RSS (MiB) | tunnels open | requests | datagrams | reloads |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    final = {"tunnels": stats.tunnels_open, "requests": stats.requests,
             "datagrams": stats.datagrams, "reloads": sum(stats.reloads.values())}
    rows = [dict(idle, label="idle")] + soak.samples + [dict(after, label="after", **final)]
    for row in rows:
        t = row.get("label") or f"{row['t']:.0f}"
        print(f"| {t} | {row['fds']} | {row['rss'] / 1024:.1f} | {row.get('tunnels', 0)} | "
              f"{row.get('requests', 0)} | {row.get('datagrams', 0)} | {row.get('reloads', 0)} |")
    print()
    if stats.first_errors:
        print(f"client errors: {dict(stats.errors)}; first: {stats.first_errors}")
    for failure in failures:
        print(f"FAIL: {failure}")
    fds = rss = "n/a"
    if verdict:
        fds = f"{verdict['fds'][0]:.0f} -> {verdict['fds'][1]:.0f} ({verdict['fds'][2]:+.1f}/min)"
        rss = (f"{verdict['rss'][0] / 1024:.1f} -> {verdict['rss'][1] / 1024:.1f} MiB "
               f"({verdict['rss'][2]:+.0f} KiB/min)")
    print(
        f"soak {'FAIL' if failures else 'PASS'}: {soak.args.seconds:.0f} s, "
        f"{soak.args.tunnels} tunnels ({stats.tunnels_opened} opened, {stats.echoes} echoes), "
        f"{stats.requests} GETs, {stats.datagrams} datagrams, "
        f"{stats.reloads['SIGHUP']}+{stats.reloads['POST']} reloads (SIGHUP+POST), "
        f"{sum(stats.errors.values())} errors; "
        f"fds idle {idle['fds']}, middle -> last third {fds}, after {after['fds']}; "
        f"RSS idle {idle['rss'] / 1024:.1f}, middle -> last third {rss}, peak {peak / 1024:.1f} MiB"
    )


async def settle(pid, idle_fds):
    """Waits (bounded) for the proxy to close the connections of the finished load."""
    deadline = time.monotonic() + DEADLINE
    while open_fds(pid) > idle_fds + FDS_AFTER_SLACK and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    return {"fds": open_fds(pid), "rss": status_kib(pid, "VmRSS")}


async def soak(args):
    loop = asyncio.get_running_loop()
    # SIGINT, SIGTERM (a `timeout`) or SIGHUP stop the load early; the proxy (in its own
    # session) is still stopped, the temp dir removed, the samples so far reported, exit 1.
    run, interrupted = None, []

    def interrupt(signum):
        interrupted.append(signum)
        if run is not None:
            run.failures.append(f"interrupted by signal {signum}")
            run.end = time.monotonic()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, interrupt, signum)
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=4096)
    web_server = await asyncio.start_server(web, "127.0.0.1", 0, backlog=256)
    udp_echo, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    dns = FakeDns(["web.test", "udp.test", "denied.test"])
    dns.start()
    with tempfile.TemporaryDirectory(prefix="egress-soak-") as tmp:
        args.token_file = os.path.join(tmp, "admin-token")
        token = os.urandom(16).hex()
        with open(os.open(args.token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(token + "\n")
        config = os.path.join(tmp, "policy.toml")
        write_atomically(config, policy_text(0, dns.addr, args.max_connections, args.token_file))
        proxy = Proxy(args.bin, config, tmp)
        try:
            await asyncio.to_thread(proxy.wait_ready)
            if interrupted:
                raise RuntimeError(f"interrupted by signal {interrupted[0]}")
            limit = nofile_limit(proxy.pid)
            if limit < PROXY_FDS_PER_CONNECTION * args.max_connections + 64:
                raise RuntimeError(f"the proxy may open only {limit} files, "
                                   f"{PROXY_FDS_PER_CONNECTION * args.max_connections + 64} needed")
            await asyncio.sleep(0.5)
            idle = {"fds": open_fds(proxy.pid), "rss": status_kib(proxy.pid, "VmRSS")}
            run = Soak(args, proxy, Stats(), web_server.sockets[0].getsockname()[1],
                       echo_server.sockets[0].getsockname()[1], udp_echo.get_extra_info("sockname")[1],
                       token, config, dns.addr)
            # The load stops at its deadline; this bound only catches a bug in the script.
            await asyncio.wait_for(run.run(), args.seconds + 4 * DEADLINE)
            if not proxy.alive():
                raise RuntimeError(f"the proxy died (exit {proxy.proc.returncode}):\n"
                                   + "\n".join(proxy.tail))
            after = await settle(proxy.pid, idle["fds"])
            # VmHWM is updated lazily: never report a peak below a sample.
            peak = max([status_kib(proxy.pid, "VmHWM")] + [s["rss"] for s in run.samples])
            proxy.proc.send_signal(signal.SIGTERM)
            try:
                exit_code = await asyncio.to_thread(proxy.proc.wait, DEADLINE)
            except subprocess.TimeoutExpired:
                exit_code = None
        finally:
            kill_everything()
    echo_server.close()
    web_server.close()
    udp_echo.close()
    failures, verdict = judge(run, idle, after, exit_code)
    report(run, idle, after, peak, failures, verdict)
    if failures:
        print("proxy log tail:\n" + "\n".join(proxy.tail))
    return 1 if failures else 0


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    if hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return
        except (ValueError, OSError):
            sys.exit(f"soak: RLIMIT_NOFILE hard limit {hard} < {want} needed (ulimit -Hn, or run as root)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="run length (default 10)")
    length.add_argument("--seconds", type=float, help="run length in seconds")
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "egress-proxy"))
    parser.add_argument("--tunnels", type=int, default=1000, help="CONNECT tunnels held open")
    parser.add_argument("--echo-every", type=float, default=5.0,
                        help="mean seconds between two echoes in one tunnel")
    parser.add_argument("--http-rate", type=float, default=200.0, help="forward GETs per second")
    parser.add_argument("--udp-rate", type=float, default=100.0, help="SOCKS5 datagrams per second")
    parser.add_argument("--reload-every", type=float, default=3.0, help="seconds between reloads")
    parser.add_argument("--interval", type=float,
                        help="seconds between samples (default: the run length / 40, 1 to 15)")
    args = parser.parse_args()
    args.seconds = args.seconds if args.seconds is not None else 60 * (args.minutes or 10)
    if args.interval is None:
        args.interval = min(15.0, max(1.0, args.seconds / 40))
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"soak: no executable at {args.bin} (cargo build --release, or --bin PATH)")
    # Room for every tunnel, both sides of the other loads, and the reopen overlap.
    args.max_connections = args.tunnels + 2 * (HTTP_CLIENTS + UDP_CLIENTS) + 256
    # Here: a client and an origin socket per tunnel; the proxy inherits the limit.
    raise_nofile(max(2 * args.tunnels, PROXY_FDS_PER_CONNECTION * args.max_connections) + 1024)
    try:
        return asyncio.run(soak(args))
    except RuntimeError as e:
        print(f"soak FAIL: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())

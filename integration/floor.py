#!/usr/bin/env python3
"""The floor under issue 16's targets: a relay that does no proxy work at all.

Rows (b) (forward keep-alive GET 1 KiB, wrk, 32 connections), (c)/(d") (a new connection per
GET 1 KiB, proxybench's own 8-worker Python client) and (e) (one 64-byte UDP datagram in
flight) are the ones whose targets move with the VM's state. This script measures, in
interleaved rounds on the same origins as ../shared/bench/proxybench.py:

  direct   the client to the origin
  socat    the client to a socat byte relay in front of the origin: the same extra hop, with
           no parsing, no policy, no SOCKS5 header (`TCP-LISTEN,fork`; `UDP4-LISTEN`, one peer)
  epoll    the same through integration/floor-relay.c, built here with cc: one thread, one
           epoll set, one read and one write per readiness, nothing else
  bare     on rows (c)/(d"), `setup` and `turns`: floor-relay.c's `proxy` mode, the same relay
           answering HTTP CONNECT and SOCKS5 CONNECT with nothing but each protocol's bytes
           (read the request, dial, answer; the method choice on accept): a tunnel row with
           no proxy work in it, the hop plus what the client pays for the protocol's exchange
  hyper    on row (b) only: examples/floor_forward.rs, built here with cargo, a forward proxy
           that is hyper's server and client and nothing else (no policy, no header work):
           what any hyper-based proxy pays per request
  ours     `egress-proxy serve` with the bench policy (forward proxy; SOCKS5 UDP ASSOCIATE);
           on the new-connection row `connect` (HTTP CONNECT) and `socks` (SOCKS5 CONNECT)
  NAME     each `--also NAME=BINARY`: another `serve` build measured like ours, in the same
           rounds (an interleaved A/B: `--also before=/tmp/egress-proxy-main`)

and prints each one's rate as a ratio to direct in the same round, and its CPU per operation
(all processes of its group), split into user and system time. On the new-connection row it
also prints the setup p50 and the client's own CPU per connection: that client runs in this
process, on one core, so what a CONNECT or SOCKS5 exchange costs it caps the row however
cheap the proxy is. A proxy cannot reach a ratio the byte relay does not: the extra hop's
system calls and wake-ups are what remains once the proxy's own work is gone.

Row `setup` (not in the default rows) times the phases of a tunnel's setup through `serve`
and each `--also` build, one connection at a time with blocking sockets: the TCP connect,
CONNECT to its 200, and SOCKS5's two round trips (greeting to method choice, request to
reply). SOCKS5 needs one round trip more than CONNECT by protocol; this shows what that trip
costs and whether the step that dials the origin is as fast as CONNECT's.

Row `turns` (not in the default rows) splits the setup latency of row (c)/(d") itself, under
proxybench's own load (8 workers), into who holds the ball. `perf record -a` traces the
kernel's `sock:inet_sock_set_state` and `tcp:tcp_probe` events (the latter fires on the
socket that receives a segment) on the proxy's port, and each connection is cut into:

  client   from the client's connection being established to its whole request (CONNECT,
           or SOCKS5's greeting and request) having reached the proxy's socket: the client's
           own event-loop turns, and for SOCKS5 also the wait for the method choice when the
           proxy sent it only after the greeting
  proxy    from there to the proxy's whole answer (the 200, or the method choice and reply)
           having reached the client's socket: the proxy's work, including its dial of the
           origin, and nothing of the client's

with the share of SOCKS5 connections whose method choice was already in the client's buffer
when it sent its greeting (`serve` sends it on accept). `--codex BINARY` adds Codex's proxy
(../shared/bench/examples/codex-proxy.sh, as integration/bench.sh starts it) to every row but
`udp`; the script then runs itself in a network namespace with only loopback.

    python3 integration/floor.py [--bin target/release/egress-proxy] [--dur 4] [--rounds 3]
        [--rows fwd,new,udp,setup,turns] [--also NAME=BINARY ...] [--codex BINARY]

Needs nginx, wrk, socat, cargo and a C compiler (row `turns`: perf, as root). Loopback only:
everything listens on 127.0.0.1.
"""
import argparse, collections, os, re, socket, statistics, struct, subprocess, sys, tempfile, time

import bench_serve
from bench_serve import HERE, pb

LO = pb.LO


def relay(tool, kind, target, tmp):
    """A byte relay (`socat`, or `epoll`: floor-relay.c) to `target`, in its own process
    group -> (port, process)."""
    port = pb.free_port()
    if tool == "epoll":
        argv = [os.path.join(tmp, "floor-relay"), kind, str(port), str(target)]
    elif kind == "tcp":
        argv = ["socat", f"TCP-LISTEN:{port},bind={LO},reuseaddr,fork,nodelay",
                f"TCP:{LO}:{target},nodelay"]
    else:
        argv = ["socat", f"UDP4-LISTEN:{port},bind={LO}", f"UDP4:{LO}:{target}"]
    proc = pb.spawn(f"{tool}-{kind}", argv, tmp)
    if kind == "tcp" and not pb.wait_port(port, proc):
        sys.exit(f"{tool} did not listen; see {tmp}/{tool}-{kind}.log")
    time.sleep(0.2)
    return port, proc


def group_times(pgid):
    """(user, system) CPU seconds of a process group, reaped children included."""
    user = system = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            if int(f[2]) == pgid:
                user += int(f[11]) + int(f[13])
                system += int(f[12]) + int(f[14])
        except (OSError, IndexError, ValueError):
            continue
    return user / pb.HZ, system / pb.HZ


def measure(row, who, dur, ports, relays, proxies, tmp):
    """One load -> (rate, (user, system) CPU seconds per operation or None, p99 in ms or µs,
    extra text). `who` is direct, a relay, or a proxy's name (on the new-connection row with
    `-connect` or `-socks`)."""
    origin = ports["udp_echo_port"] if row == "udp" else ports["origin_port"]
    if who == "direct":
        proc, mode, pport, target = None, "direct", None, origin
    elif who in relays:
        # One peer per UDP relay: a fresh one for each round's client socket.
        port, proc = relay(who, "udp", origin, tmp) if row == "udp" else relays[who]
        mode, pport, target = "direct", None, port
    else:
        name, _, mode = who.rpartition("-") if row == "new" else (who, "", row)
        proxy = proxies[name]
        pport = proxy.socks if mode in ("udp", "socks") else proxy.http
        proc, target = proxy.proc, origin
    pre = group_times(proc.pid) if proc else None
    extra = ""
    if row == "fwd":
        r = pb.wrk_fwd(mode, pport, target, dur, 32, tmp)
        rate, p99 = r["rps"], r["p99_ms"]
    elif row == "udp":
        r = pb.udp_pingpong(mode, pport, target, dur, 10**7)
        rate, p99 = r["rtps"], r["p99_us"]
    else:
        c0 = time.process_time()
        r = pb.new_conn_rate(mode, pport, target, dur, 8, 10**7)
        client = (time.process_time() - c0) / r["ops"]
        rate, p99 = r["cps"], r["p99_ms"]
        extra = f", setup p50 {r['p50_ms']:.3f} ms, client {client * 1e6:.0f} us CPU/conn"
    cpu = None
    if proc:
        cpu = tuple((b - a) / r["ops"] for a, b in zip(pre, group_times(proc.pid)))
    if row == "udp" and who in relays:
        pb.stop(proc)
    return rate, cpu, p99, extra


SETUP_PHASES = {"tcp": "TCP connect", "connect": "CONNECT to 200",
                "greeting": "SOCKS5 greeting to method", "request": "SOCKS5 request to reply"}


def setup_phases(proxy, origin, dur):
    """Tunnel setups one at a time for `dur` seconds, HTTP CONNECT and SOCKS5 CONNECT in
    turn, with blocking sockets (no event loop between the client and the proxy) -> {phase:
    sorted seconds}: the TCP connect to the proxy, CONNECT until its 200, and SOCKS5's two
    round trips, greeting to method choice and request to reply."""
    times = {phase: [] for phase in SETUP_PHASES}
    clock, end = time.perf_counter, time.perf_counter() + dur

    def read(s, done):
        got = b""
        while not done(got):
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError(f"proxy closed the setup after {got!r}")
            got += chunk

    connect = setup_request("connect", origin)
    request = socks_request(origin)
    while clock() < end:
        for mode in ("connect", "socks"):
            t0 = clock()
            with socket.create_connection((LO, proxy.http if mode == "connect" else proxy.socks)) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                t1 = clock()
                times["tcp"].append(t1 - t0)
                if mode == "connect":
                    s.sendall(connect)
                    read(s, lambda got: b"\r\n\r\n" in got)
                    times["connect"].append(clock() - t1)
                else:
                    s.sendall(SOCKS_GREETING)
                    read(s, lambda got: len(got) >= 2)
                    t2 = clock()
                    times["greeting"].append(t2 - t1)
                    s.sendall(request)
                    read(s, lambda got: len(got) >= 10)
                    times["request"].append(clock() - t2)
    return {phase: sorted(v) for phase, v in times.items()}


def setup_row(names, proxies, ports, rounds, dur):
    """The `setup` row: each phase's p50 per round and proxy, and their medians."""
    print("\n(c)/(d\") tunnel setup phases, one connection at a time [p50 us (p10-p90)]")
    p50s = {(name, phase): [] for name in names for phase in SETUP_PHASES}
    for n in range(rounds):
        cells = []
        for name in names[n % len(names):] + names[:n % len(names)]:
            times = setup_phases(proxies[name], ports["origin_port"], dur)
            parts = []
            for phase, label in SETUP_PHASES.items():
                v = times[phase]
                p50s[(name, phase)].append(statistics.median(v))
                parts.append(f"{label} {statistics.median(v) * 1e6:.1f} "
                             f"({v[len(v) // 10] * 1e6:.0f}-{v[len(v) * 9 // 10] * 1e6:.0f})")
            cells.append(f"{name}: " + ", ".join(parts) + f" [{len(times['tcp'])} setups]")
        print(f"  round {n + 1}: " + "; ".join(cells))
        sys.stdout.flush()
    for name in names:
        print(f"  median p50, {name}: " + ", ".join(
            f"{label} {statistics.median(p50s[(name, phase)]) * 1e6:.1f} us"
            for phase, label in SETUP_PHASES.items()))


def setup_request(mode, origin):
    """The bytes proxybench's client sends before its tunnel is up (`a_open`)."""
    if mode == "connect":
        return b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (LO.encode(), origin,
                                                                     LO.encode(), origin)
    return SOCKS_GREETING + socks_request(origin)


SOCKS_GREETING = b"\x05\x01\x00"  # version 5, one method: no authentication


def socks_request(origin):
    """SOCKS5 CONNECT to 127.0.0.1:origin."""
    return b"\x05\x01\x00\x01" + socket.inet_aton(LO) + struct.pack("!H", origin)


TRACE_LINE = re.compile(r"^\s*([\d.]+):\s+(sock:inet_sock_set_state|tcp:tcp_probe):\s+(.*)$")


def traced_setups(mode, port, origin, dur, tmp):
    """Row (c)/(d")'s load on `port` under `perf record -a` -> (proxybench's result, one dict
    per traced connection: `client` and `proxy` seconds, and `method_first`, whether the
    proxy's first bytes reached the client before the client's reached the proxy)."""
    data = os.path.join(tmp, f"turns-{port}.data")
    only = f"sport == {port} || dport == {port}"
    events = ["-a", "-e", "sock:inet_sock_set_state", "--filter", only,
              "-e", "tcp:tcp_probe", "--filter", only]
    with bench_serve.perf_record(events, data, tmp):
        r = pb.new_conn_rate(mode, port, origin, dur, 8, 10**7)
    text = subprocess.run(["perf", "script", "-i", data, "-F", "time,event,trace"],
                          capture_output=True, text=True, check=True).stdout
    os.remove(data)
    # Per connection of the client's (keyed by its port, which loopback may reuse: a new
    # ESTABLISHED starts a new connection): (time, "in" = bytes reached the proxy's socket,
    # "out" = reached the client's, bytes).
    conns, current = [], {}
    for line in text.splitlines():
        m = TRACE_LINE.match(line)
        if not m:
            continue
        t, event = float(m.group(1)), m.group(2)
        f = dict(kv.split("=", 1) for kv in m.group(3).split() if "=" in kv)
        if event == "sock:inet_sock_set_state":
            if (f["oldstate"], f["newstate"]) == ("TCP_SYN_SENT", "TCP_ESTABLISHED") \
                    and int(f["dport"]) == port:
                current[int(f["sport"])] = conn = [(t, "est", 0)]
                conns.append(conn)
        elif int(f["data_len"]):
            # tcp_probe fires on the socket that received the segment; src is that socket.
            here = int(f["src"].rsplit(":", 1)[1])
            there = int(f["dest"].rsplit(":", 1)[1])
            kind, client = ("in", there) if here == port else ("out", here)
            if client in current:
                current[client].append((t, kind, int(f["data_len"])))
    need = len(setup_request(mode, origin))
    return r, [turn for c in conns if (turn := setup_turns(c, need))]


def setup_turns(events, need):
    """One connection's events -> {client, proxy, method_first} seconds/bool, or None if the
    capture cut it off."""
    est, got, asked = events[0][0], 0, None
    for t, kind, n in events:
        got += n if kind == "in" else 0
        if got >= need:
            asked = t
            break
    if asked is None:
        return None
    # The answer is complete at the last segment to the client before the client's next bytes
    # (its GET).
    answered = None
    for t, kind, _ in events:
        if t <= asked:
            continue
        if kind == "out":
            answered = t
        elif answered is not None:
            first = {k: next(t for t, kind, _ in events if kind == k) for k in ("in", "out")}
            return {"client": asked - est, "proxy": answered - asked,
                    "method_first": first["out"] <= first["in"]}
    return None


def turns_row(names, proxies, ports, rounds, dur, tmp):
    """The `turns` row: each setup's client and proxy parts, p50 per round, and medians."""
    print("\n(c)/(d\") setup under the row's own load, by who holds the ball [p50 us]")
    origin = ports["origin_port"]
    order = [f"{n}-{how}" for n in names for how in ("connect", "socks")]
    got = {w: collections.defaultdict(list) for w in order}
    for n in range(rounds):
        cells = []
        for w in order[n % len(order):] + order[:n % len(order)]:
            name, _, mode = w.rpartition("-")
            port = proxies[name].http if mode == "connect" else proxies[name].socks
            r, turns = traced_setups(mode, port, origin, dur, tmp)
            if not turns:
                sys.exit(f"turns: no setup traced on {w}: did proxybench's client change what it "
                         "sends (setup_request)?")
            cell = {"setup": r["p50_ms"] * 1e3,
                    "client": statistics.median(x["client"] for x in turns) * 1e6,
                    "proxy": statistics.median(x["proxy"] for x in turns) * 1e6}
            text = (f"{w} {r['cps']:,.0f} conn/s, setup p50 {cell['setup']:.0f}: client "
                    f"{cell['client']:.0f} + proxy {cell['proxy']:.0f}")
            if mode == "socks":
                cell["first"] = 100 * sum(x["method_first"] for x in turns) / len(turns)
                text += f", method first {cell['first']:.0f} %"
            for k, v in cell.items():
                got[w][k].append(v)
            cells.append(text + f" [{len(turns)} of {r['ops']}]")
        print(f"  round {n + 1}: " + "; ".join(cells))
        sys.stdout.flush()
    for w in order:
        med = {k: statistics.median(v) for k, v in got[w].items()}
        print(f"  median, {w}: setup p50 {med['setup']:.0f}, client {med['client']:.0f}, "
              f"proxy {med['proxy']:.0f}" + (f", method first {med['first']:.0f} %"
                                             if "first" in med else ""))


def codex_proxy(binary, tmp):
    """Codex's proxy, started as integration/bench.sh starts it -> a proxybench Proxy."""
    home = os.path.join(tmp, "codex")
    os.makedirs(home)
    proxy = pb.Proxy("codex")
    proxy.port_file = os.path.join(home, "ports")
    script = os.path.join(os.path.dirname(pb.__file__), "examples", "codex-proxy.sh")
    proxy.proc = pb.spawn("codex", ["env", f"CODEX_BIN={binary}", "sh", script,
                                    proxy.port_file], tmp)
    if err := pb.wait_port_file(proxy):
        sys.exit(f"codex: {err}; see {tmp}/codex.log")
    return proxy


def bare_proxy(tmp):
    """floor-relay.c's `proxy` mode, started: HTTP CONNECT and SOCKS5 CONNECT with nothing
    but each protocol's bytes, as a `pb.Proxy`."""
    proxy = pb.Proxy("bare", http=pb.free_port(), socks=pb.free_port())
    proxy.proc = pb.spawn("bare", [os.path.join(tmp, "floor-relay"), "proxy", str(proxy.http),
                                   str(proxy.socks)], tmp)
    if not (pb.wait_port(proxy.http, proxy.proc) and pb.wait_port(proxy.socks, proxy.proc)):
        sys.exit(f"floor-relay proxy did not listen; see {tmp}/bare.log")
    return proxy


def hyper_floor(tmp):
    """examples/floor_forward.rs, built and started -> (port, process)."""
    subprocess.run(["cargo", "build", "--quiet", "--release", "--example", "floor_forward"],
                   cwd=bench_serve.REPO, check=True)
    port = pb.free_port()
    binary = os.path.join(bench_serve.REPO, "target", "release", "examples", "floor_forward")
    proc = pb.spawn("hyper", [binary, str(port)], tmp)
    if not pb.wait_port(port, proc):
        sys.exit(f"floor_forward did not listen; see {tmp}/hyper.log")
    return port, proc


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=bench_serve.DEFAULT_BIN)
    ap.add_argument("--dur", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", default="fwd,new,udp")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=BINARY",
                    help="another serve binary to measure in the same rounds")
    ap.add_argument("--codex", metavar="BINARY",
                    help="also Codex's proxy: the codex binary integration/bench.sh installs "
                         "(~/.cache/egress-proxy-bench/codex-VERSION/node_modules/@openai/"
                         "codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex)")
    cfg = ap.parse_args()
    if cfg.codex and [name for _, name in socket.if_nameindex()] != ["lo"]:
        # As in integration/bench.sh: nothing Codex's proxy is asked for can leave the box.
        os.execvp("unshare", ["unshare", "--net", "--fork", "sh", "-c",
                              'ip link set lo up && exec "$@"', "sh", sys.executable, *sys.argv])
    others = []
    for spec in cfg.also:
        name, sep, binary = spec.partition("=")
        if not sep or not name.isidentifier() or name in ("ours", "direct", "socat", "epoll",
                                                          "hyper", "codex", "bare"):
            ap.error(f"--also {spec!r}: want NAME=BINARY, NAME a new word")
        others.append((name, binary))
    names = ["ours"] + [name for name, _ in others] + (["codex"] if cfg.codex else [])
    rows = cfg.rows.split(",")
    tmp = tempfile.mkdtemp(prefix="egress-floor-")
    os.chmod(tmp, 0o755)
    try:
        ports, proxies = bench_serve.start_all([("ours", cfg.bin)] + others, tmp)
        if cfg.codex:
            proxies["codex"] = codex_proxy(os.path.abspath(cfg.codex), tmp)
        subprocess.run(["cc", "-O2", "-o", os.path.join(tmp, "floor-relay"),
                        os.path.join(HERE, "floor-relay.c")], check=True)
        relays = {tool: relay(tool, "tcp", ports["origin_port"], tmp) for tool in ("socat", "epoll")}
        tunnels = names
        if {"new", "setup", "turns"} & set(rows):
            proxies["bare"] = bare_proxy(tmp)
            tunnels = names + ["bare"]
        if "fwd" in rows:
            port, proc = hyper_floor(tmp)
            proxies["hyper"] = pb.Proxy("hyper", http=port, socks=None)
            proxies["hyper"].proc = proc
        for row in rows:
            if row == "setup":
                setup_row(tunnels, proxies, ports, cfg.rounds, cfg.dur)
                continue
            if row == "turns":
                turns_row(tunnels, proxies, ports, cfg.rounds, cfg.dur, tmp)
                continue
            order = ["direct", "socat", "epoll"]
            if row == "new":
                order += [f"{n}-{how}" for n in tunnels for how in ("connect", "socks")]
            else:
                # Codex's proxy has no SOCKS5 UDP relay.
                order += (["hyper"] if row == "fwd" else []) + [
                    n for n in names if row == "fwd" or n != "codex"]
            title = {"fwd": "(b) forward keep-alive GET 1 KiB, wrk -c32 [req/s]",
                     "new": "(c)/(d\") new connection + GET 1 KiB + close, 8 workers [conn/s]",
                     "udp": "(e) UDP 64 B ping-pong, one in flight [round trips/s]"}[row]
            unit = "us" if row == "udp" else "ms"
            print(f"\n{title}")
            ratios = {w: [] for w in order[1:]}
            cpus = {w: [] for w in order[1:]}
            for n in range(cfg.rounds):
                # Rotate the order so no one always runs first after an idle gap.
                turn = order[n % len(order):] + order[:n % len(order)]
                got = {w: measure(row, w, cfg.dur, ports, relays, proxies, tmp) for w in turn}
                base = got["direct"][0]
                cells = []
                for w in order:
                    rate, cpu, p99, extra = got[w]
                    cell = f"{w} {rate:,.0f} (p99 {p99:.3g} {unit}"
                    if w != "direct":
                        ratios[w].append(rate / base)
                        cpus[w].append(cpu)
                        cell += (f", {rate / base:.2f} of direct, {sum(cpu) * 1e6:.1f} us CPU/op"
                                 f" = {cpu[0] * 1e6:.1f} user + {cpu[1] * 1e6:.1f} sys")
                    cells.append(cell + extra + ")")
                print(f"  round {n + 1}: " + "; ".join(cells))
                sys.stdout.flush()
            print("  median ratio to direct: " + ", ".join(
                f"{w} {statistics.median(v):.2f}" for w, v in ratios.items()))
            print("  median CPU/op, user + sys: " + ", ".join(
                f"{w} {statistics.median(c[0] for c in v) * 1e6:.1f} + "
                f"{statistics.median(c[1] for c in v) * 1e6:.1f} us" for w, v in cpus.items()))
    finally:
        pb.cleanup()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()

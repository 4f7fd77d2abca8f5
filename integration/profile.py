#!/usr/bin/env python3
"""Where egress-proxy's CPU goes, row by row of integration/bench.sh.

Starts the same origins as ../shared/bench/proxybench.py (nginx, TCP sink, UDP echo) and
`egress-proxy serve` with the bench policy, then runs each of proxybench's loads once against
the proxy alone while `perf record -g` is attached to it, and prints per row the proxy's CPU
per operation and its top symbols by self time, grouped into kernel and user space.

    python3 integration/profile.py [--bin target/release/egress-proxy] [--dur 4] [--top 8]
        [--rows fwd,ab,...] [--keep DIR] [--hyper]

`--hyper` also profiles examples/floor_forward.rs (hyper's server and client and nothing else,
built here with cargo; see floor.py) under row (b)'s load right after ours, and prints the
user-space self time per request of both, symbol by symbol, with the difference: what we add
to what any hyper-based forward proxy pays. Inlining differs between the two binaries, so
single rows of hyper's own code move between symbols; the totals and our own symbols compare.

Rows: dl ul fwd ab new sdl sul snew udp (proxybench's a, a', b, b', c, d, d', d", e). Needs
perf, nginx, curl, wrk and ab; run it on a quiet machine (the figures are shares of the
proxy's own samples, so they move less with noise than throughput does). Loopback only: the
origins and the proxy listen on 127.0.0.1.
"""
import argparse, os, re, subprocess, sys, tempfile

import bench_serve
import floor
from bench_serve import pb

ROWS = {
    # row: (proxybench test, mode, label)
    "dl": ("dl", "connect", "(a) CONNECT download"),
    "ul": ("ul", "connect", "(a') CONNECT upload"),
    "fwd": ("fwd", "fwd", "(b) forward keep-alive"),
    "ab": ("ab", "fwd", "(b') forward new conn"),
    "new": ("new", "connect", "(c) CONNECT new conn"),
    "sdl": ("dl", "socks", "(d) SOCKS5 download"),
    "sul": ("ul", "socks", "(d') SOCKS5 upload"),
    "snew": ("new", "socks", "(d\") SOCKS5 new conn"),
    "udp": ("udp", "udp", "(e) SOCKS5 UDP echo"),
}


FREQ = 999  # perf record's sampling rate (Hz)


class Cfg:
    def __init__(self, dur):
        self.dur, self.conns, self.conc = dur, 32, 8
        self.dl_repeats, self.max_ops = 3, 60000


def self_time(data):
    """perf.data -> [(samples, dso, "k" for kernel or "." for user space, symbol)] by self
    time, most first."""
    out = subprocess.run(
        ["perf", "report", "-i", data, "-n", "-g", "none", "--no-children", "--stdio",
         "--sort", "dso,symbol", "-q"],
        capture_output=True, text=True, timeout=300).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\S+)\s+\[(.)\]\s+(.+?)(?:\s+-\s+-)?\s*$", line)
        if m:
            rows.append((int(m.group(1)), m.group(2), m.group(3), m.group(4)))
    return rows


def top_symbols(rows, top):
    """`self_time` rows -> ([(percent, dso, kind, symbol)] of the first `top`, the kernel's
    percentage of all samples)."""
    total = sum(n for n, _, _, _ in rows) or 1
    kernel = sum(n for n, _, kind, _ in rows if kind == "k")
    return [(n * 100 / total, dso, kind, s) for n, dso, kind, s in rows[:top]], kernel * 100 / total


def self_samples(rows):
    """`self_time` rows -> ({symbol: user-space samples}, kernel samples)."""
    user, kernel = {}, 0
    for n, _, kind, symbol in rows:
        if kind == "k":
            kernel += n
        else:
            # One name for a libc function in a static and a dynamic build (__GI___writev,
            # __writev; __malloc, malloc).
            symbol = re.sub(r"^(__GI_)?_*", "", symbol)
            user[symbol] = user.get(symbol, 0) + n
    return user, kernel


def compare(ours, hyper, top):
    """Prints self time per request (ns), ours against the hyper floor. `ours` and `hyper` are
    (samples by symbol, kernel samples, requests)."""
    ns = 1e9 / FREQ
    per = [({s: n * ns / req for s, n in user.items()}, kernel * ns / req)
           for user, kernel, req in (ours, hyper)]
    (o, ok), (h, hk) = per
    print(f"\n  user space per request: ours {sum(o.values()):.0f} ns, hyper "
          f"{sum(h.values()):.0f} ns; kernel: ours {ok:.0f} ns, hyper {hk:.0f} ns")
    diff = sorted(set(o) | set(h), key=lambda s: o.get(s, 0) - h.get(s, 0), reverse=True)
    shown = diff[:top] + [s for s in diff[-top:] if s not in diff[:top]]
    print(f"  {'ours':>6} {'hyper':>6} {'diff':>6}  symbol (ns per request, self time)")
    for s in shown:
        a, b = o.get(s, 0), h.get(s, 0)
        print(f"  {a:6.0f} {b:6.0f} {a - b:+6.0f}  {s[:90]}")


def peak_rss(pid):
    """VmHWM of the proxy so far, as /proc prints it."""
    with open(f"/proc/{pid}/status") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("VmHWM")), "?")


def profile_one(test, mode, proxy, bench, ports, tmp, data):
    """One proxybench load against `proxy`, under `perf record -g` into `data` unless it is
    None -> proxybench's result."""
    if not data:
        return pb.run_one(test, mode, proxy, bench, ports, tmp)
    with bench_serve.perf_record(["-g", "-F", str(FREQ), "-p", str(proxy.proc.pid)], data, tmp):
        return pb.run_one(test, mode, proxy, bench, ports, tmp)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=bench_serve.DEFAULT_BIN)
    ap.add_argument("--dur", type=int, default=4)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--keep", help="keep perf.data files in this directory")
    ap.add_argument("--no-perf", action="store_true",
                    help="only the CPU per operation and the proxy's peak RSS after each row")
    ap.add_argument("--hyper", action="store_true",
                    help="on row fwd, also profile examples/floor_forward.rs and compare")
    cfg = ap.parse_args()
    if cfg.hyper and (cfg.no_perf or "fwd" not in cfg.rows.split(",")):
        ap.error("--hyper compares profiles of row fwd: give it with fwd and without --no-perf")
    tmp = tempfile.mkdtemp(prefix="egress-profile-")
    os.chmod(tmp, 0o755)
    keep = cfg.keep or tmp
    os.makedirs(keep, exist_ok=True)
    try:
        ports, proxy = bench_serve.start(cfg.bin, tmp)
        floor_proxy = None
        if cfg.hyper:
            port, proc = floor.hyper_floor(tmp)
            floor_proxy = pb.Proxy("hyper", http=port)
            floor_proxy.proc = proc
        bench = Cfg(cfg.dur)
        for row in cfg.rows.split(","):
            test, mode, label = ROWS[row]
            data = os.path.join(keep, f"{row}.perf.data")
            result = profile_one(test, mode, proxy, bench, ports, tmp, None if cfg.no_perf else data)
            samples = [] if cfg.no_perf else self_time(data)
            rows, kernel = top_symbols(samples, cfg.top)
            cost = (f"{result['cpu_s_10k'] * 100:.1f} us CPU/op" if "cpu_s_10k" in result
                    else f"{result['cpu_s_GiB']:.3f} CPU s/GiB")
            metric = {k: round(v, 3) for k, v in result.items()
                      if k in ("MBps", "rps", "cps", "rtps", "p50_ms", "p99_ms", "p50_us")}
            peak = peak_rss(proxy.proc.pid)
            print(f"\n{label}: {cost}, kernel {kernel:.0f}% of samples, peak RSS {peak}  {metric}")
            for percent, dso, _, symbol in rows:
                print(f"  {percent:5.1f}%  {symbol[:70]:<70} {dso}")
            if floor_proxy and row == "fwd":
                hdata = os.path.join(keep, "fwd-hyper.perf.data")
                hres = profile_one(test, mode, floor_proxy, bench, ports, tmp, hdata)
                print(f"  hyper floor: {hres['cpu_s_10k'] * 100:.1f} us CPU/op  "
                      f"{{'rps': {hres['rps']:.0f}, 'p99_ms': {hres['p99_ms']}}}")
                compare((*self_samples(samples), result["ops"]),
                        (*self_samples(self_time(hdata)), hres["ops"]), cfg.top)
            sys.stdout.flush()
    finally:
        pb.cleanup()
        if not cfg.keep:
            subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()

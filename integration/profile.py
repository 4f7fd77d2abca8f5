#!/usr/bin/env python3
"""Where egress-proxy's CPU goes, row by row of integration/bench.sh.

Starts the same origins as ../shared/bench/proxybench.py (nginx, TCP sink, UDP echo) and
`egress-proxy serve` with the bench policy, then runs each of proxybench's loads once against
the proxy alone while `perf record -g` is attached to it, and prints per row the proxy's CPU
per operation and its top symbols by self time, grouped into kernel and user space.

    python3 integration/profile.py [--bin target/release/egress-proxy] [--dur 4] [--top 8]
        [--rows fwd,ab,...] [--keep DIR]

Rows: dl ul fwd ab new sdl sul snew udp (proxybench's a, a', b, b', c, d, d', d", e). Needs
perf, nginx, curl, wrk and ab; run it on a quiet machine (the figures are shares of the
proxy's own samples, so they move less with noise than throughput does). Loopback only: the
origins and the proxy listen on 127.0.0.1.
"""
import argparse, os, re, signal, subprocess, sys, tempfile, time

import bench_serve
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


class Cfg:
    def __init__(self, dur):
        self.dur, self.conns, self.conc = dur, 32, 8
        self.dl_repeats, self.max_ops = 3, 60000


def top_symbols(data, top):
    """perf report's self-time table -> [(percent, dso, symbol)]."""
    out = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "--stdio", "--sort", "dso,symbol",
         "--percent-limit", "0.5", "-q"],
        capture_output=True, text=True, timeout=300).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.+)", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()))
    kernel = sum(p for p, _, k, _ in rows if k == "k")
    return rows[:top], kernel


def peak_rss(pid):
    """VmHWM of the proxy so far, as /proc prints it."""
    with open(f"/proc/{pid}/status") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("VmHWM")), "?")


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
    cfg = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="egress-profile-")
    os.chmod(tmp, 0o755)
    keep = cfg.keep or tmp
    os.makedirs(keep, exist_ok=True)
    try:
        ports, proxy = bench_serve.start(cfg.bin, tmp)
        bench = Cfg(cfg.dur)
        for row in cfg.rows.split(","):
            test, mode, label = ROWS[row]
            data = os.path.join(keep, f"{row}.perf.data")
            if not cfg.no_perf:
                perf = subprocess.Popen(
                    ["perf", "record", "-g", "-F", "999", "-o", data, "-p", str(proxy.proc.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            result = pb.run_one(test, mode, proxy, bench, ports, tmp)
            rows, kernel = [], 0.0
            if not cfg.no_perf:
                perf.send_signal(signal.SIGINT)
                perf.wait(timeout=60)
                rows, kernel = top_symbols(data, cfg.top)
            cost = (f"{result['cpu_s_10k'] * 100:.1f} us CPU/op" if "cpu_s_10k" in result
                    else f"{result['cpu_s_GiB']:.3f} CPU s/GiB")
            metric = {k: round(v, 3) for k, v in result.items()
                      if k in ("MBps", "rps", "cps", "rtps", "p50_ms", "p99_ms", "p50_us")}
            peak = peak_rss(proxy.proc.pid)
            print(f"\n{label}: {cost}, kernel {kernel:.0f}% of samples, peak RSS {peak}  {metric}")
            for percent, dso, _, symbol in rows:
                print(f"  {percent:5.1f}%  {symbol[:70]:<70} {dso}")
            sys.stdout.flush()
    finally:
        pb.cleanup()
        if not cfg.keep:
            subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()

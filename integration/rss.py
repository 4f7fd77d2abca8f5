#!/usr/bin/env python3
"""Resident memory of `egress-proxy serve`: idle, with N open CONNECT tunnels, and after they close.

Loopback only: an echo origin on 127.0.0.1, the proxy on an ephemeral port with a policy that
allows exactly that address, N clients that each open a CONNECT tunnel and echo 4 KiB through
it (so both directions' buffers are in use), then hold it open while the proxy's VmRSS is read
from /proc.

    python3 integration/rss.py [--bin target/release/egress-proxy] [--tunnels 1000]

Prints a small Markdown table (the README's memory figures come from it).
"""

import argparse
import asyncio
import os
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAYLOAD = b"x" * 4096

POLICY = """\
enabled = true
allow_local_binding = true
allowed_domains = ["127.0.0.1"]

[limits]
max_connections = {max_connections}
"""


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


async def echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def open_tunnel(proxy_port, origin_port):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    target = f"127.0.0.1:{origin_port}"
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"CONNECT refused: {head!r}")
    writer.write(PAYLOAD)
    await reader.readexactly(len(PAYLOAD))
    return reader, writer


async def measure(args):
    server = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=4096)
    origin_port = server.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="egress-rss-") as tmp:
        config = os.path.join(tmp, "policy.toml")
        with open(config, "w") as f:
            f.write(POLICY.format(max_connections=args.tunnels + 64))
        proxy = subprocess.Popen(
            [args.bin, "serve", "--config", config, "--http-listen", "127.0.0.1:0"],
            stderr=subprocess.PIPE,
            env={**os.environ, "XDG_RUNTIME_DIR": tmp, "RUST_LOG": "warn,egress_proxy=info"},
            text=True,
        )
        # Read stderr to the end on a thread: `serve` logs every allowed decision at INFO for
        # its first seconds, and a full pipe would block the proxy's writes.
        listening = queue.Queue()

        def drain():
            for line in proxy.stderr:
                if "http proxy listening" in line:
                    listening.put(int(line.rsplit(":", 1)[1].split()[0].strip()))
            listening.put(None)

        threading.Thread(target=drain, daemon=True).start()
        try:
            proxy_port = listening.get(timeout=15)
            if proxy_port is None:
                raise RuntimeError("the proxy did not start")
            time.sleep(0.5)
            idle = status_kib(proxy.pid, "VmRSS")

            tunnels = []
            for start in range(0, args.tunnels, 100):
                batch = range(start, min(start + 100, args.tunnels))
                tunnels += await asyncio.gather(
                    *(open_tunnel(proxy_port, origin_port) for _ in batch)
                )
            await asyncio.sleep(0.5)
            loaded = status_kib(proxy.pid, "VmRSS")
            peak = status_kib(proxy.pid, "VmHWM")

            for _, writer in tunnels:
                writer.close()
            await asyncio.gather(*(w.wait_closed() for _, w in tunnels), return_exceptions=True)
            await asyncio.sleep(1.0)
            after = status_kib(proxy.pid, "VmRSS")
        finally:
            proxy.terminate()
            proxy.wait(timeout=15)
    server.close()
    n = args.tunnels
    print(f"| state | RSS (MiB) |")
    print(f"|---|---|")
    print(f"| idle | {idle / 1024:.1f} |")
    print(f"| {n} open CONNECT tunnels (4 KiB echoed through each) | {loaded / 1024:.1f} |")
    print(f"| peak (VmHWM) | {peak / 1024:.1f} |")
    print(f"| after the {n} tunnels closed | {after / 1024:.1f} |")
    print(f"\nper open tunnel: {(loaded - idle) / n:.1f} KiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "egress-proxy"))
    parser.add_argument("--tunnels", type=int, default=1000)
    args = parser.parse_args()
    # Each tunnel is two sockets here (client and origin) and two in the proxy.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * args.tunnels + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    asyncio.run(measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Real package clients through `egress-proxy run` on the network this machine has.

Not part of CI: it reaches the public package registries. It names no registry host itself:
every host and range it uses is learned at run time from the proxy's own live blocked line
(`egress-proxy: blocked CONNECT host:port — reason (hint)`) that the client's first, failing
run printed. For each client (cargo with a fresh CARGO_HOME and one small dependency,
`pip download --no-deps`, `npm view`, and curl of the host pip was blocked from):

1. `run --config policy/dev-box.toml -- CLIENT`: whatever is blocked is reported live. On a
   network whose resolver answers from a special-purpose range, the reason is
   `dns-non-public:<class>` and the hint names the range to declare.
2. `run --config policy/dev-box.toml [--public-range R] -- CLIENT` works with no other flag.
3. The same with `--deny HOST` (the host step 1 named) fails, and the live line says
   `deny-rule` while the client still runs.

    python3 integration/real_network.py [--bin target/release/egress-proxy] [-k cargo]
        [--upstream http://127.0.0.1:3129] [--isolate] [--inspect]

With `--upstream URL` the proxy's own HTTPS_PROXY and HTTP_PROXY name that upstream proxy, so
every step also shows the chaining: what is allowed goes through it, by name. With
`--isolate` every client runs under `run --isolate`, so only the proxy leads out. With
`--inspect` the policy is also `mode = "limited"` with `mitm = true`: every HTTPS request is
intercepted and checked, and the clients trust the proxy's CA through `run`'s variables.

Prints one line per step and `N passed, N failed`; exit status 1 on any failure.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICY = os.path.join(ROOT, "policy", "dev-box.toml")
TIMEOUT = 240

#: `egress-proxy: blocked CONNECT host:443 — reason (hint)`; the hint is optional.
BLOCKED = re.compile(
    r"^egress-proxy: blocked (?P<proto>\S+) (?P<host>\S+?):(?P<port>\d+) \S+ "
    r"(?P<reason>[a-z:-]+)(?: \((?P<hint>.*)\))?$",
    re.M,
)
RANGE = re.compile(r"--public-range (\S+)")


def clients(work):
    """Each client: a name, and a function giving its command, directory and environment for
    one run, with fresh caches (a fresh CARGO_HOME, download directory and npm cache) so no
    run is served from what an earlier one fetched."""
    project = os.path.join(work, "crate")
    os.makedirs(os.path.join(project, "src"))
    with open(os.path.join(project, "Cargo.toml"), "w") as f:
        f.write('[package]\nname = "probe"\nversion = "0.1.0"\nedition = "2021"\n\n')
        f.write('[dependencies]\nitoa = "1"\n')
    with open(os.path.join(project, "src", "main.rs"), "w") as f:
        f.write("fn main() {}\n")

    def fresh(name):
        return tempfile.mkdtemp(prefix=name + "-", dir=work)

    def cargo():
        lock = os.path.join(project, "Cargo.lock")
        if os.path.exists(lock):
            os.remove(lock)
        return ["cargo", "fetch"], project, {"CARGO_HOME": fresh("cargo-home")}

    def pip():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
               "-d", fresh("wheels"), "six==1.16.0"]
        return cmd, work, {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}

    def npm():
        cmd = ["npm", "view", "is-number@7.0.0", "version", "--cache", fresh("npm-cache"),
               "--prefer-online"]
        return cmd, work, {}

    return [("cargo fetch", "cargo", cargo), ("pip download", "pip", pip), ("npm view", "npm", npm)]


class Run:
    def __init__(self, args):
        self.bin = args.bin
        self.upstream = args.upstream
        self.isolate = ["--isolate"] if args.isolate else []
        self.inspect = []
        self.data_home = None
        if args.inspect:
            self.data_home = tempfile.mkdtemp(prefix="egress-real-ca-")
            limited = os.path.join(self.data_home, "inspect.toml")
            with open(limited, "w") as f:
                f.write('mode = "limited"\nmitm = true\n')
            self.inspect = ["--config", limited]
        self.passed = 0
        self.failed = 0

    def expect(self, label, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok    {label}")
        else:
            self.failed += 1
            print(f"FAIL  {label}\n{detail}")

    def run(self, flags, client):
        cmd, cwd, env = client() if callable(client) else client
        full = [self.bin, "run", "--config", POLICY, *self.inspect, *self.isolate, *flags, "--", *cmd]
        environment = {**os.environ, **env}
        if self.data_home:
            environment["XDG_DATA_HOME"] = self.data_home
        if self.upstream:
            environment.update(HTTPS_PROXY=self.upstream, HTTP_PROXY=self.upstream)
        start = time.monotonic()
        result = subprocess.run(
            full, cwd=cwd, env=environment, capture_output=True, text=True, timeout=TIMEOUT
        )
        result.seconds = time.monotonic() - start
        return result

    def client(self, name, client, curl_hosts):
        first = self.run([], client)
        lines = list(BLOCKED.finditer(first.stderr))
        declare = []
        if first.returncode == 0:
            self.expect(f"{name}: works under dev-box.toml alone", True)
        else:
            self.expect(
                f"{name}: blocked with a live line", bool(lines), first.stderr[-2000:]
            )
            if not lines:
                return
            ranges = sorted({m for l in lines for m in RANGE.findall(l.group("hint") or "")})
            declare = [flag for r in ranges for flag in ("--public-range", r)]
            print(f"      learned: {[(l['host'], l['reason']) for l in lines]} ranges {ranges}")
        second = self.run(declare, client)
        self.expect(
            f"{name}: works with {' '.join(declare) or 'no flag'} ({second.seconds:.1f} s)",
            second.returncode == 0,
            second.stderr[-2000:],
        )
        host = lines[0]["host"] if lines else None
        if host is None:
            return
        if name.startswith("pip"):
            curl_hosts.append((host, lines[0]["port"], declare))
        third = self.run([*declare, "--deny", host], client)
        denied = [l for l in BLOCKED.finditer(third.stderr) if l["host"] == host]
        self.expect(
            f"{name}: --deny of the host it needed fails with a live deny-rule line",
            third.returncode != 0 and any(l["reason"] == "deny-rule" for l in denied),
            third.stderr[-2000:],
        )

    def curl(self, host, port, declare, work):
        url = f"https://{host}:{port}/"
        cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", url]
        result = self.run(declare, (cmd, work, {}))
        self.expect(
            f"curl: an HTTPS answer from the host pip used ({result.stdout.strip()})",
            result.returncode == 0 and result.stdout.strip().isdigit(),
            result.stderr[-2000:],
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "egress-proxy"))
    parser.add_argument("-k", dest="only", help="run only the clients whose name contains this")
    parser.add_argument("--upstream", help="an upstream proxy URL the proxy chains through")
    parser.add_argument("--isolate", action="store_true", help="run every client under --isolate")
    parser.add_argument("--inspect", action="store_true", help="limited mode with HTTPS inspection")
    args = parser.parse_args()
    run = Run(args)
    work = tempfile.mkdtemp(prefix="egress-real-")
    try:
        curl_hosts = []
        for name, tool, client in clients(work):
            if args.only and args.only not in name:
                continue
            if tool != "pip" and shutil.which(tool) is None:
                print(f"skip  {name}: {tool} is not installed")
                continue
            run.client(name, client, curl_hosts)
        for host, port, declare in curl_hosts:
            run.curl(host, port, declare, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if run.data_home:
            shutil.rmtree(run.data_home, ignore_errors=True)
    print(f"{run.passed} passed, {run.failed} failed")
    sys.exit(1 if run.failed else 0)


if __name__ == "__main__":
    main()

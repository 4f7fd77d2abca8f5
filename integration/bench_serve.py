"""`egress-proxy serve` with the benchmark's policy, beside ../shared/bench/proxybench.py's
origins: the setup of the scripts that measure our proxy alone (profile.py, floor.py)."""
import contextlib
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(os.path.dirname(REPO), "shared", "bench"))
import proxybench as pb  # noqa: E402

DEFAULT_BIN = os.path.join(REPO, "target", "release", "egress-proxy")


def start(binary, tmp):
    """Starts the origins and `serve` in `tmp` -> (origin ports, proxybench Proxy with .proc).
    Returns once `serve`'s first 10 s are over: it logs every allowed decision in them, and
    what is measured is a long run."""
    ports, proxies = start_all([("ours", binary)], tmp)
    return ports, proxies["ours"]


def start_all(binaries, tmp):
    """`start` for several `serve` builds ((name, binary) pairs) side by side on the same
    origins, for an interleaved comparison -> (origin ports, {name: Proxy})."""
    ports = pb.start_origins(tmp)
    proxies = {name: serve(name, binary, ports, tmp) for name, binary in binaries}
    time.sleep(10.5)
    return ports, proxies


def serve(name, binary, ports, tmp):
    """One `serve` with the bench policy on `ports`' origins -> a proxybench Proxy with .proc."""
    vals = dict(ports, http_port=pb.free_port(), socks_port=pb.free_port(), tmpdir=tmp)
    template = open(os.path.join(HERE, "bench-policy.toml.tmpl")).read()
    # A directory of its own, as proxybench gives each proxy: `serve` watches the config's
    # directory, and the logs written next to it would wake the watcher.
    home = os.path.join(tmp, name)
    os.makedirs(home)
    config = pb.write(home, f"{name}.toml", pb.fill(template, vals))
    proxy = pb.Proxy(name, http=vals["http_port"], socks=vals["socks_port"])
    proxy.proc = pb.spawn(name, ["env", f"XDG_RUNTIME_DIR={tmp}", os.path.abspath(binary),
                                 "serve", "--config", config], tmp)
    for port in (proxy.http, proxy.socks):
        if not pb.wait_port(port, proxy.proc):
            sys.exit(f"{name} did not listen; see {tmp}/{name}.log")
    return proxy


@contextlib.contextmanager
def perf_record(args, data, tmp):
    """`perf record -o data ARGS` around the with-block; exits with perf's own words if it
    failed (perf missing, not root, kernel.perf_event_paranoid too high)."""
    log = os.path.join(tmp, "perf-record.log")
    with open(log, "wb") as err:
        perf = subprocess.Popen(["perf", "record", "-q", "-o", data, *args],
                                stdout=subprocess.DEVNULL, stderr=err)
    time.sleep(1)  # its events enabled well before the load starts
    try:
        yield
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=60)
    # perf record ends on SIGINT by raising it again once its data is written.
    if perf.returncode not in (0, -signal.SIGINT):
        sys.exit("perf record failed (needs root or kernel.perf_event_paranoid -1): "
                 + open(log).read().strip()[-300:])

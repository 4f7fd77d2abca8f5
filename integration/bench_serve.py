"""`egress-proxy serve` with the benchmark's policy, beside ../shared/bench/proxybench.py's
origins: the setup of the scripts that measure our proxy alone (profile.py, floor.py)."""
import os
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
    ports = pb.start_origins(tmp)
    vals = dict(ports, http_port=pb.free_port(), socks_port=pb.free_port(), tmpdir=tmp)
    template = open(os.path.join(HERE, "bench-policy.toml.tmpl")).read()
    # A directory of its own, as proxybench gives each proxy: `serve` watches the config's
    # directory, and the logs written next to it would wake the watcher.
    home = os.path.join(tmp, "ours")
    os.makedirs(home)
    config = pb.write(home, "ours.toml", pb.fill(template, vals))
    proxy = pb.Proxy("ours", http=vals["http_port"], socks=vals["socks_port"])
    proxy.proc = pb.spawn("ours", ["env", f"XDG_RUNTIME_DIR={tmp}", os.path.abspath(binary),
                                   "serve", "--config", config], tmp)
    for port in (proxy.http, proxy.socks):
        if not pb.wait_port(port, proxy.proc):
            sys.exit(f"the proxy did not listen; see {tmp}/ours.log")
    time.sleep(10.5)
    return ports, proxy

"""The squid-as-upstream case of e2e.py: `egress-proxy run` with HTTPS_PROXY and http_proxy in
its own environment pointing at a squid on loopback. Skipped (and said so) where squid is not
installed. squid learns the origins' names from its own hosts_file, so it resolves them to
127.0.0.1 and nothing leaves the machine.
"""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

SQUID_CONF = """\
http_port 127.0.0.1:{port}
pid_filename {dir}/squid.pid
access_log stdio:{dir}/access.log
cache_log {dir}/cache.log
coredump_dir {dir}
hosts_file {dir}/hosts
dns_nameservers 127.0.0.1
cache deny all
cache_mem 8 MB
shutdown_lifetime 0 seconds
http_access allow localhost
http_access deny all
"""


def start(names, spawn, stop):
    """squid on a free loopback port: (process, port, its directory)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    # Its own directory, writable by the unprivileged user squid switches to as root.
    directory = tempfile.mkdtemp(prefix="egress-e2e-squid-")
    os.chmod(directory, 0o777)
    with open(os.path.join(directory, "hosts"), "w") as f:
        f.write("127.0.0.1 " + " ".join(names) + "\n")
    conf = os.path.join(directory, "squid.conf")
    with open(conf, "w") as f:
        f.write(SQUID_CONF.format(port=port, dir=directory))
    proc = spawn(["squid", "-N", "-f", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port, directory
        except OSError:
            time.sleep(0.1)
    stop(proc)
    log = read(os.path.join(directory, "cache.log"))
    shutil.rmtree(directory, ignore_errors=True)
    raise RuntimeError("squid did not start listening\n" + log[-2000:])


def read(path):
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


def case(suite, names, spawn, stop):
    if shutil.which("squid") is None:
        suite.skip("squid-upstream", "squid is not installed (apt-get install squid)")
        return
    proc, port, directory = start(names, spawn, stop)
    try:
        upstream = f"http://127.0.0.1:{port}"
        chained = {"HTTPS_PROXY": upstream, "http_proxy": upstream}
        curl = ["curl", "-sS", "-i", "--fail-with-body", "--max-time", "10", "--cacert", suite.cert]
        web, tls = suite.web_port, suite.tls_port
        result = suite.run(*curl, suite.url("web.test", web), extra_env=chained)
        suite.allowed("squid upstream: curl http://web.test", result, "hello from the e2e origin")
        result = suite.run(*curl, suite.url("secure.test", tls, scheme="https"), extra_env=chained)
        suite.allowed("squid upstream: curl https://secure.test", result, "hello from the e2e origin")
        result = suite.run(*curl, suite.url("denied.test", web), extra_env=chained)
        suite.blocked("squid upstream: curl http://denied.test", result, "denied.test", web, "deny-rule")
        # squid writes its access log line when a transaction ends.
        log_path = os.path.join(directory, "access.log")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "CONNECT" not in read(log_path):
            time.sleep(0.1)
        log = read(log_path)
        suite.expect(
            "squid upstream: squid forwarded GET http://web.test",
            re.search(rf"GET http://web\.test:{web}/hello", log) is not None,
            log,
        )
        suite.expect(
            "squid upstream: squid was asked CONNECT secure.test by name",
            re.search(rf"CONNECT secure\.test:{tls}", log) is not None,
            log,
        )
        suite.expect("squid upstream: denied.test never reached squid", "denied.test" not in log, log)
    finally:
        stop(proc)
        shutil.rmtree(directory, ignore_errors=True)

#!/usr/bin/env python3
"""End-to-end suite: real tools through `egress-proxy run` and `egress-proxy serve`.

Everything stays on loopback. A fake DNS server on 127.0.0.1 answers A 127.0.0.1 for the
`.test` names below (NXDOMAIN for anything else), and every origin listens on 127.0.0.1:

    web.test     plain HTTP              secure.test  HTTPS (self-signed cert, made at start;
                                         the https-inspection case's own, CA-signed one)
    git.test     git smart HTTP (`git http-backend` CGI over a bare repo made at start)
    pypi.test    a PEP 503 "simple" index serving a wheel built at start
    grpc.test    a cleartext HTTP/2 gRPC-style echo origin (Node)
    denied.test  resolves and reaches the same origins, but the policy denies it
    unlisted.test / late.test  resolve, but no rule allows them (until `serve` reloads)

Every tool case asserts both outcomes: the allowed name works through the proxy, and the
denied (or unlisted) name fails with the proxy's reason visible, in the tool's own output
(`x-proxy-reason: deny-rule`) and/or in `run`'s stderr summary (`denied.test:PORT  deny-rule`).
None of these names resolves through the system resolver, so a tool that bypassed the proxy
could not reach an origin at all.

    python3 integration/e2e/e2e.py --bin target/release/egress-proxy [--fast] [--keep] [-k NAME]

The last line is always `N passed, N failed`; the exit status is 1 on any failure. Use
`integration/e2e/run.sh`, which installs the tools and builds the binary first.
"""

import argparse
import base64
import hashlib
import http.server
import io
import json
import os
import queue
import re
import shutil
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import zipfile

import squid_upstream

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLIENTS = os.path.join(HERE, "clients")

#: No single command of the suite needs more than a fraction of this.
COMMAND_TIMEOUT = 30
#: The names the fake DNS server answers (with 127.0.0.1); anything else is NXDOMAIN.
NAMES = (
    "web.test",
    "secure.test",
    "git.test",
    "pypi.test",
    "grpc.test",
    "denied.test",
    "unlisted.test",
    "late.test",
)

POLICY = """\
# The e2e policy: the origins' names are allowed, denied.test is denied (deny wins), every
# other name is not allowed. The names answer 127.0.0.1, so local binding must be allowed.
enabled = true
mode = "full"
allow_local_binding = true
enable_socks5 = true

[domains]
"web.test" = "allow"
"secure.test" = "allow"
"git.test" = "allow"
"pypi.test" = "allow"
"grpc.test" = "allow"
"denied.test" = "deny"

[dns]
timeout_ms = 2000

[limits]
connect_timeout_ms = 3000
header_timeout_ms = 5000
"""

# ---------------------------------------------------------------------------------------------
# Processes: every one in its own process group, killed as a group on exit.
# ---------------------------------------------------------------------------------------------

_GROUPS = set()
_GROUPS_LOCK = threading.Lock()


def _kill_group(pid, sig=signal.SIGKILL):
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_everything():
    with _GROUPS_LOCK:
        groups = list(_GROUPS)
        _GROUPS.clear()
    for pid in groups:
        _kill_group(pid)


def spawn(cmd, env=None, cwd=None, stdin=subprocess.DEVNULL, **kwargs):
    """Popen in a new session (so its process group is its pid), remembered for clean-up."""
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdin=stdin,
        start_new_session=True,
        **kwargs,
    )
    with _GROUPS_LOCK:
        _GROUPS.add(proc.pid)
    return proc


def forget(proc):
    """The process has exited; kill any stragglers left in its group and forget it."""
    _kill_group(proc.pid)
    with _GROUPS_LOCK:
        _GROUPS.discard(proc.pid)


class Result:
    def __init__(self, cmd, code, out, err, seconds, timed_out):
        self.cmd, self.code, self.out, self.err = cmd, code, out, err
        self.seconds, self.timed_out = seconds, timed_out

    @property
    def text(self):
        return self.out + self.err

    def describe(self, limit=2500):
        def tail(s):
            return s if len(s) <= limit else "…" + s[-limit:]

        shown = " ".join(self.cmd)
        status = "timed out" if self.timed_out else f"exit {self.code}"
        return (
            f"$ {shown}\n[{status} after {self.seconds:.2f}s]\n"
            f"--- stdout\n{tail(self.out)}\n--- stderr\n{tail(self.err)}"
        )


def execute(cmd, env=None, cwd=None, timeout=COMMAND_TIMEOUT):
    """Runs cmd to completion (or kills its whole process group at the deadline)."""
    started = time.monotonic()
    proc = spawn(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        out, err = proc.communicate()
    finally:
        forget(proc)
    return Result(
        [str(c) for c in cmd],
        proc.returncode,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        time.monotonic() - started,
        timed_out,
    )


# ---------------------------------------------------------------------------------------------
# Fake DNS: A 127.0.0.1 for NAMES, an empty NOERROR for their other types, NXDOMAIN otherwise.
# ---------------------------------------------------------------------------------------------


class FakeDns(threading.Thread):
    def __init__(self, names, port=0):
        super().__init__(daemon=True)
        self.names = {n.lower() for n in names}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.addr = self.sock.getsockname()
        self.queries = []

    def run(self):
        while True:
            try:
                packet, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                reply = self.answer(packet)
            except Exception:  # a malformed query gets no answer
                continue
            if reply:
                self.sock.sendto(reply, peer)

    def answer(self, packet):
        ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
        if qdcount != 1:
            return None
        labels, i = [], 12
        while packet[i]:
            length = packet[i]
            labels.append(packet[i + 1 : i + 1 + length].decode("ascii", "replace"))
            i += 1 + length
        qtype, _qclass = struct.unpack("!HH", packet[i + 1 : i + 5])
        question = packet[12 : i + 5]
        name = ".".join(labels).lower().rstrip(".")
        self.queries.append((name, qtype))
        rd = flags & 0x0100
        if name not in self.names:
            header = struct.pack("!HHHHHH", ident, 0x8000 | 0x0400 | rd | 0x0080 | 3, 1, 0, 0, 0)
            return header + question
        answers = b""
        count = 0
        if qtype == 1:  # A
            answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton("127.0.0.1")
            count = 1
        header = struct.pack("!HHHHHH", ident, 0x8000 | 0x0400 | rd | 0x0080, 1, count, 0, 0)
        return header + question + answers


# ---------------------------------------------------------------------------------------------
# Origins
# ---------------------------------------------------------------------------------------------


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 15  # per connection: a stalled client never pins a thread for long
    server_version = "e2e-origin"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, content_type="text/plain; charset=utf-8", headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


def web_handler(seen):
    """`/hello` answers a marker naming the Host it was asked for; every request is recorded."""

    class Web(QuietHandler):
        def do_GET(self):
            seen.append((self.command, self.path, self.headers.get("Host", "")))
            if self.path.split("?")[0] == "/hello":
                self.reply(200, f"hello from the e2e origin, Host={self.headers.get('Host')}\n")
            elif self.path.split("?")[0] == "/-/ping":
                # What `npm ping` asks a registry.
                self.reply(200, "{}\n", content_type="application/json")
            else:
                self.reply(404, "not found\n")

        do_HEAD = do_GET

    return Web


def git_handler(project_root):
    """Smart HTTP: every request is handed to `git http-backend` as a CGI."""

    class Git(QuietHandler):
        def do_GET(self):
            self.cgi()

        def do_POST(self):
            self.cgi()

        def cgi(self):
            path, _, query = self.path.partition("?")
            body = self.read_body() if self.command == "POST" else b""
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": project_root,
                "GIT_HTTP_EXPORT_ALL": "1",
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": os.devnull,
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "REMOTE_ADDR": self.client_address[0],
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
            }
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            if self.headers.get("Git-Protocol"):
                env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            try:
                done = subprocess.run(
                    ["git", "http-backend"],
                    input=body,
                    env=env,
                    capture_output=True,
                    timeout=COMMAND_TIMEOUT,
                )
            except subprocess.TimeoutExpired:
                self.reply(504, "git http-backend timed out\n")
                return
            raw = done.stdout
            # CGI headers end at the first blank line (CRLF or bare LF).
            ends = [(i, n) for i, n in ((raw.find(b"\r\n\r\n"), 4), (raw.find(b"\n\n"), 2)) if i >= 0]
            split, sep = min(ends) if ends else (-1, 0)
            if split < 0:
                self.reply(500, b"bad CGI output: " + done.stderr)
                return
            status, headers, content_type = 200, [], "application/octet-stream"
            for line in raw[:split].decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                name, value = name.strip(), value.strip()
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name.lower() == "content-type":
                    content_type = value
                elif name:
                    headers.append((name, value))
            self.reply(status, raw[split + sep :], content_type, headers)

    return Git


def pypi_handler(files):
    """A PEP 503 index: /simple/, /simple/<project>/ and /files/<name> (with a sha256 fragment)."""

    class Index(QuietHandler):
        def do_GET(self):
            path = self.path.split("?")[0]
            if path == "/simple/":
                links = "".join(f'<a href="/simple/{p}/">{p}</a>\n' for p in sorted(files))
                self.reply(200, f"<!DOCTYPE html><html><body>\n{links}</body></html>\n", "text/html")
            elif path.startswith("/simple/") and path.rstrip("/").rsplit("/", 1)[-1] in files:
                project = path.rstrip("/").rsplit("/", 1)[-1]
                links = "".join(
                    f'<a href="/files/{name}#sha256={hashlib.sha256(data).hexdigest()}">{name}</a>\n'
                    for name, data in files[project].items()
                )
                self.reply(200, f"<!DOCTYPE html><html><body>\n{links}</body></html>\n", "text/html")
            elif path.startswith("/files/"):
                name = path[len("/files/") :]
                for dists in files.values():
                    if name in dists:
                        self.reply(200, dists[name], "application/octet-stream")
                        return
                self.reply(404, "no such file\n")
            else:
                self.reply(404, "not found\n")

        do_HEAD = do_GET

    return Index


def start_server(handler, tls_context=None):
    server = Server(("127.0.0.1", 0), handler)
    if tls_context is not None:
        # The handshake happens on the handler's thread, so a stalled client never blocks accept.
        server.socket = tls_context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def make_wheel(directory, project, version, marker):
    """A pure-Python wheel with a valid RECORD, built with zipfile alone."""
    module = project.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    members = {
        f"{module}/__init__.py": f'MARKER = "{marker}"\n'.encode(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n"
            "Summary: egress-proxy e2e test package\n"
        ).encode(),
        f"{dist_info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: egress-proxy-e2e\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ).encode(),
    }
    record = []
    for name, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    members[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    name = f"{module}-{version}-py3-none-any.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for member, data in members.items():
            wheel.writestr(member, data)
    return name, buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------------------------


class Suite:
    def __init__(self, args):
        self.args = args
        self.bin = os.path.abspath(args.bin)
        self.tmp = tempfile.mkdtemp(prefix="egress-e2e-")
        self.passed = 0
        self.failed = 0
        self.skipped = []
        self.failures = []
        self.cases = []

    # -- reporting --------------------------------------------------------------------------

    def expect(self, label, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"  ok    {label}", flush=True)
        else:
            self.failed += 1
            self.failures.append(label)
            print(f"  FAIL  {label}", flush=True)
            if detail:
                for line in str(detail).rstrip().splitlines():
                    print(f"        | {line}", flush=True)
        return ok

    def skip(self, label, why):
        self.skipped.append(label)
        print(f"  skip  {label}: {why}", flush=True)

    # -- set-up ----------------------------------------------------------------------------

    def setup(self):
        self.dns = FakeDns(NAMES)
        self.dns.start()
        self.dns_flag = f"{self.dns.addr[0]}:{self.dns.addr[1]}"
        self.policy = self.write("policy.toml", POLICY)

        self.web_seen = []
        _, self.web_port = start_server(web_handler(self.web_seen))

        self.cert, key = self.make_cert()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.tls_seen = []
        _, self.tls_port = start_server(web_handler(self.tls_seen), context)

        self.git_marker = f"e2e-git-{os.getpid()}-{int(time.time())}"
        _, self.git_port = start_server(git_handler(self.make_repo()))

        self.pkg_marker = f"e2e-pip-{os.getpid()}"
        wheel_name, wheel = make_wheel(self.tmp, "e2e-demo", "1.0", self.pkg_marker)
        self.wheel_name = wheel_name
        _, self.pypi_port = start_server(pypi_handler({"e2e-demo": {wheel_name: wheel}}))

        self.env = self.base_env()

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def make_cert(self):
        cert = os.path.join(self.tmp, "secure.test.crt")
        key = os.path.join(self.tmp, "secure.test.key")
        done = execute(
            [
                "openssl", "req", "-x509", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", key, "-out", cert, "-days", "2",
                "-subj", "/CN=secure.test",
                "-addext", "subjectAltName=DNS:secure.test",
            ]
        )
        if done.code != 0:
            raise RuntimeError("cannot make the self-signed certificate\n" + done.describe())
        return cert, key

    def git_env(self):
        env = dict(os.environ)
        env.update(
            GIT_CONFIG_NOSYSTEM="1",
            GIT_CONFIG_GLOBAL=os.devnull,
            GIT_TERMINAL_PROMPT="0",
            GIT_AUTHOR_NAME="e2e",
            GIT_AUTHOR_EMAIL="e2e@example.invalid",
            GIT_COMMITTER_NAME="e2e",
            GIT_COMMITTER_EMAIL="e2e@example.invalid",
        )
        return env

    def make_repo(self):
        root = os.path.join(self.tmp, "git-root")
        work = os.path.join(self.tmp, "git-work")
        os.makedirs(root)
        os.makedirs(work)
        env = self.git_env()
        steps = [
            (["git", "init", "-q", "--bare", "-b", "main", os.path.join(root, "repo.git")], None),
            (["git", "init", "-q", "-b", "main", work], None),
            (["git", "add", "MARKER"], work),
            (["git", "commit", "-q", "-m", "e2e"], work),
            (["git", "push", "-q", os.path.join(root, "repo.git"), "main"], work),
        ]
        for index, (cmd, cwd) in enumerate(steps):
            if index == 2:
                with open(os.path.join(work, "MARKER"), "w") as f:
                    f.write(self.git_marker + "\n")
            done = execute(cmd, env=env, cwd=cwd)
            if done.code != 0:
                raise RuntimeError("cannot make the git repository\n" + done.describe())
        return root

    def base_env(self):
        """The harness's environment without any proxy variable (run sets its own)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.lower().endswith("_proxy") and k not in ("RUST_LOG", "NODE_OPTIONS")
        }
        env.update(
            PIP_CONFIG_FILE=os.devnull,
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            PIP_NO_CACHE_DIR="1",
            PIP_NO_INPUT="1",
            PYTHONDONTWRITEBYTECODE="1",
            GIT_CONFIG_NOSYSTEM="1",
            GIT_CONFIG_GLOBAL=os.devnull,
            GIT_TERMINAL_PROMPT="0",
        )
        return env

    # -- helpers ---------------------------------------------------------------------------

    def run(self, *cmd, policy=None, extra_env=None, flags=(), timeout=COMMAND_TIMEOUT):
        """`egress-proxy run --dns-server … --config POLICY FLAGS… -- CMD…`"""
        env = dict(self.env)
        env.update(extra_env or {})
        argv = [
            self.bin, "run", "--dns-server", self.dns_flag, "--config", policy or self.policy,
            *flags, "--", *cmd,
        ]
        return execute(argv, env=env, timeout=timeout)

    @staticmethod
    def summary_names(result, host, port, reason):
        """run's stderr summary has the row `host:port  reason` (then the rule, if one decided)."""
        pattern = rf"^\s+{re.escape(host)}:{port}\s+{re.escape(reason)}(\s+rule .*)?\s*$"
        return re.search(pattern, result.err, re.M) is not None

    def blocked(self, label, result, host, port, reason, header=True):
        """A blocked outcome: the tool failed, and the reason is shown where it can be."""
        self.expect(f"{label}: fails", result.code != 0 and not result.timed_out, result.describe())
        self.expect(
            f"{label}: run's summary says `{host}:{port}  {reason}`",
            self.summary_names(result, host, port, reason),
            result.describe(),
        )
        if header:
            self.expect(
                f"{label}: the tool shows x-proxy-reason: {reason}",
                re.search(rf"x-proxy-reason[:=]\s*{re.escape(reason)}\b", result.text, re.I)
                is not None,
                result.describe(),
            )

    def allowed(self, label, result, marker):
        self.expect(
            f"{label}: succeeds",
            result.code == 0 and marker in result.out,
            result.describe(),
        )
        self.expect(
            f"{label}: nothing blocked",
            "egress-proxy: blocked" not in result.err,
            result.describe(),
        )

    def url(self, host, port, path="/hello", scheme="http"):
        return f"{scheme}://{host}:{port}{path}"

    # -- cases -----------------------------------------------------------------------------

    def case_curl_http(self):
        """curl, plain HTTP through the forward proxy ($http_proxy)."""
        curl = ["curl", "-sS", "-i", "--fail-with-body", "--max-time", "10"]
        seen_before = len(self.web_seen)
        result = self.run(*curl, self.url("web.test", self.web_port))
        self.allowed("curl http://web.test", result, "hello from the e2e origin")
        requests = self.web_seen[seen_before:]
        self.expect(
            "curl http://web.test: the origin got origin-form GET /hello with Host web.test",
            ("GET", "/hello", f"web.test:{self.web_port}") in requests,
            f"origin saw {requests}",
        )
        result = self.run(*curl, self.url("denied.test", self.web_port))
        self.blocked("curl http://denied.test", result, "denied.test", self.web_port, "deny-rule")
        self.expect(
            "curl http://denied.test: 403 Forbidden",
            re.search(r"^HTTP/1\.1 403", result.out, re.M) is not None,
            result.describe(),
        )
        result = self.run(*curl, self.url("unlisted.test", self.web_port))
        self.blocked(
            "curl http://unlisted.test", result, "unlisted.test", self.web_port, "not-allowed"
        )

    def case_curl_connect(self):
        """curl, HTTPS through a CONNECT tunnel ($https_proxy) to the self-signed origin."""
        curl = ["curl", "-sS", "-v", "--fail-with-body", "--max-time", "10", "--cacert", self.cert]
        result = self.run(*curl, self.url("secure.test", self.tls_port, scheme="https"))
        self.allowed("curl https://secure.test (CONNECT)", result, "hello from the e2e origin")
        self.expect(
            "curl https://secure.test: went through a CONNECT tunnel",
            re.search(rf"CONNECT secure\.test:{self.tls_port}", result.err) is not None,
            result.describe(),
        )
        result = self.run(*curl, self.url("denied.test", self.tls_port, scheme="https"))
        self.blocked(
            "curl https://denied.test (CONNECT)", result, "denied.test", self.tls_port, "deny-rule"
        )

    def make_ca_and_leaf(self, name):
        """A CA and a certificate it signed for `name`: rustls (the proxy's upstream side)
        refuses a self-signed certificate with CA:TRUE as the server's own, so the inspected
        origin gets a real chain."""
        ca, ca_key = (os.path.join(self.tmp, f"inspect-ca.{x}") for x in ("crt", "key"))
        stem = os.path.join(self.tmp, f"inspected-{name}")
        leaf, key, csr = (f"{stem}.{x}" for x in ("crt", "key", "csr"))
        ext = self.write(
            f"inspected-{name}.ext", f"subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n"
        )
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for cmd in (
            ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
             "-subj", "/CN=egress-proxy e2e origin CA"],
            ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={name}"],
            ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
             "-CAcreateserial", "-out", leaf, "-days", "2", "-extfile", ext],
        ):
            done = execute(cmd)
            if done.code != 0:
                raise RuntimeError("cannot make the inspected origin's chain\n" + done.describe())
        return ca, leaf, key

    def case_https_inspection(self):
        """curl through run with limited + mitm: HTTPS read through, write refused inside TLS."""
        ca, leaf, key = self.make_ca_and_leaf("secure.test")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(leaf, key)
        seen = []
        _, port = start_server(web_handler(seen), context)
        policy = self.write(
            "mitm.toml",
            POLICY.replace('mode = "full"', 'mode = "limited"')
            + f'\n[mitm]\nupstream_ca = "{ca}"\n',
        )
        # The generated CA goes to the scratch directory; curl trusts it through run's
        # CURL_CA_BUNDLE alone (no --cacert).
        data = {"XDG_DATA_HOME": os.path.join(self.tmp, "mitm-data")}
        curl = ["curl", "-sS", "-i", "-v", "--max-time", "10"]
        url = self.url("secure.test", port, scheme="https")
        result = self.run(*curl, url, policy=policy, extra_env=data)
        self.allowed("curl https://secure.test (intercepted)", result, "hello from the e2e origin")
        self.expect(
            "curl https://secure.test: the certificate is the local CA's",
            re.search(r"issuer: CN\s*=\s*egress-proxy local CA", result.err) is not None,
            result.describe(),
        )
        result = self.run(*curl, "-X", "POST", "-d", "x=1", url, policy=policy, extra_env=data)
        self.expect(
            "curl -X POST https://secure.test: 403 inside TLS, x-proxy-reason: method-not-allowed",
            re.search(r"^HTTP/\S+ 403", result.out, re.M) is not None
            and re.search(r"x-proxy-reason:\s*method-not-allowed", result.out, re.I) is not None,
            result.describe(),
        )
        self.expect(
            "https://secure.test: the origin saw the GET only",
            [(m, p) for m, p, _ in seen] == [("GET", "/hello")],
            f"origin saw {seen}",
        )

    def case_curl_socks5(self):
        """curl --socks5-hostname with the address from $ALL_PROXY (socks5h://…)."""
        script = (
            'case "$ALL_PROXY" in socks5h://*) ;; *) echo "ALL_PROXY=$ALL_PROXY" >&2; exit 90;; esac; '
            'exec curl -sS --fail-with-body --max-time 10 --noproxy "" '
            '--socks5-hostname "${ALL_PROXY#socks5h://}" "$@"'
        )
        result = self.run("sh", "-c", script, "curl", self.url("web.test", self.web_port))
        self.allowed("curl --socks5-hostname web.test", result, "hello from the e2e origin")
        result = self.run(
            "sh", "-c", script, "curl", "--cacert", self.cert,
            self.url("secure.test", self.tls_port, scheme="https"),
        )
        self.allowed("curl --socks5-hostname https://secure.test", result, "hello from the e2e origin")
        result = self.run("sh", "-c", script, "curl", self.url("denied.test", self.web_port))
        self.blocked(
            "curl --socks5-hostname denied.test", result, "denied.test", self.web_port,
            "deny-rule", header=False,
        )
        self.expect(
            "curl --socks5-hostname denied.test: curl reports the SOCKS5 refusal",
            "SOCKS5" in result.err,
            result.describe(),
        )

    def case_session_auth(self):
        """The proxy URLs carry egress:<token>@; a client that sends no credentials gets 407 / SOCKS5 0xFF, and works with --no-session-auth."""
        result = self.run("sh", "-c", 'echo "$HTTP_PROXY $ALL_PROXY $RSYNC_PROXY"')
        urls = re.fullmatch(
            r"http://egress:([0-9a-f]{32})@127\.0\.0\.1:\d+ socks5h://egress:([0-9a-f]{32})@127\.0\.0\.1:\d+ "
            r"egress:([0-9a-f]{32})@127\.0\.0\.1:\d+\n",
            result.out,
        )
        self.expect(
            "HTTP_PROXY, ALL_PROXY and RSYNC_PROXY carry the same egress:<token>@",
            urls is not None and len(set(urls.groups())) == 1,
            result.describe(),
        )
        node = shutil.which("node") or shutil.which("nodejs")
        if node:
            client = os.path.join(CLIENTS, "node_client.js")
            ignoring = {"E2E_IGNORE_PROXY_CREDENTIALS": "1"}
            seen_before = len(self.web_seen)
            result = self.run(node, client, "http", self.url("web.test", self.web_port), extra_env=ignoring)
            self.expect(
                "a client without the credentials: 407 with x-proxy-reason: proxy-auth-required",
                result.code != 0
                and "status=407" in result.out
                and "x-proxy-reason=proxy-auth-required" in result.out,
                result.describe(),
            )
            self.expect(
                "a client without the credentials: never reaches the origin",
                len(self.web_seen) == seen_before,
                f"origin saw {self.web_seen[seen_before:]}",
            )
            self.expect(
                "a client without the credentials: run's stderr names --no-session-auth",
                "--no-session-auth" in result.err,
                result.describe(),
            )
            result = self.run(
                node, client, "http", self.url("web.test", self.web_port),
                extra_env=ignoring, flags=["--no-session-auth"],
            )
            self.allowed("the same client with --no-session-auth", result, "hello from the e2e origin")
        else:
            self.expect("node is installed", False, "neither `node` nor `nodejs` is on PATH")
        strip = 'S=${ALL_PROXY#socks5h://}; S=${S#*@}; '
        socks = strip + 'exec curl -sS --max-time 10 --noproxy "" --socks5-hostname "$S" "$@"'
        result = self.run("sh", "-c", socks, "curl", self.url("web.test", self.web_port))
        self.expect(
            "curl --socks5-hostname without the credentials: no acceptable method (0xFF)",
            # curl's exit 97 (proxy handshake) and the proxy's own line: curl's message and the
            # proxy's log share one stderr, and one can land in the middle of the other.
            result.code == 97 and "offers no acceptable authentication method" in result.err,
            result.describe(),
        )
        result = self.run(
            "sh", "-c", socks, "curl", self.url("web.test", self.web_port), flags=["--no-session-auth"]
        )
        self.allowed("curl --socks5-hostname with --no-session-auth", result, "hello from the e2e origin")
        wrong = 'P=${HTTP_PROXY##*@}; exec curl -sS -i --max-time 10 -x "http://egress:0000@$P" "$@"'
        result = self.run("sh", "-c", wrong, "curl", self.url("web.test", self.web_port))
        self.expect(
            "curl with a wrong token: 407",
            re.search(r"^HTTP/1\.1 407", result.out, re.M) is not None,
            result.describe(),
        )

    def case_npm(self):
        """npm ping against the local origin through $npm_config_proxy with the credentials."""
        npm = shutil.which("npm")
        if not npm:
            self.skip("npm", "npm is not on PATH")
            return
        home = os.path.join(self.tmp, "npm-home")
        os.makedirs(home, exist_ok=True)
        env = {"HOME": home, "npm_config_cache": os.path.join(home, "cache"), "npm_config_update_notifier": "false"}
        seen_before = len(self.web_seen)
        result = self.run(npm, "ping", "--registry", f"http://web.test:{self.web_port}/", extra_env=env, timeout=60)
        self.expect(
            "npm ping http://web.test: succeeds through the proxy",
            result.code == 0 and any(p.startswith("/-/ping") for _, p, _ in self.web_seen[seen_before:]),
            result.describe(),
        )
        self.expect("npm ping web.test: nothing blocked", "egress-proxy: blocked" not in result.err, result.describe())
        result = self.run(npm, "ping", "--registry", f"http://denied.test:{self.web_port}/", extra_env=env, timeout=60)
        self.blocked("npm ping http://denied.test", result, "denied.test", self.web_port, "deny-rule", header=False)

    def case_git(self):
        """git clone over smart HTTP from `git http-backend` (git honours $http_proxy)."""
        dest = os.path.join(self.tmp, "clone-ok")
        result = self.run(
            "git", "clone", "-q", f"http://git.test:{self.git_port}/repo.git", dest
        )
        marker = ""
        try:
            with open(os.path.join(dest, "MARKER")) as f:
                marker = f.read().strip()
        except OSError:
            pass
        self.expect(
            "git clone http://git.test/repo.git: succeeds with the commit's content",
            result.code == 0 and marker == self.git_marker,
            result.describe() + f"\nMARKER={marker!r}",
        )
        self.expect("git clone http://git.test: nothing blocked", "egress-proxy: blocked" not in result.err, result.describe())
        dest = os.path.join(self.tmp, "clone-denied")
        result = self.run(
            "git", "-c", "http.lowSpeedTime=10", "clone", "-q",
            f"http://denied.test:{self.git_port}/repo.git", dest,
        )
        self.blocked(
            "git clone http://denied.test/repo.git", result, "denied.test", self.git_port,
            "deny-rule", header=False,
        )
        self.expect(
            "git clone http://denied.test: git reports the 403",
            "error: 403" in result.err and not os.path.exists(os.path.join(dest, "MARKER")),
            result.describe(),
        )

    def pip(self, index_host, dest):
        return self.run(
            sys.executable, "-m", "pip", "download", "--no-deps", "--retries", "0",
            "--timeout", "10", "--index-url", f"http://{index_host}:{self.pypi_port}/simple/",
            "--trusted-host", index_host, "-d", dest, "e2e-demo",
            timeout=60,
        )

    def case_pip(self):
        """pip download from the local simple index (pip honours $http_proxy)."""
        probe = execute([sys.executable, "-m", "pip", "--version"])
        if probe.code != 0:
            self.expect("pip is installed", False, probe.describe())
            return
        dest = os.path.join(self.tmp, "pip-ok")
        result = self.pip("pypi.test", dest)
        wheel = os.path.join(dest, self.wheel_name)
        content = ""
        if os.path.exists(wheel):
            with zipfile.ZipFile(wheel) as z:
                content = z.read("e2e_demo/__init__.py").decode()
        self.expect(
            "pip download e2e-demo from http://pypi.test/simple/: the wheel arrives intact",
            result.code == 0 and self.pkg_marker in content,
            result.describe(),
        )
        self.expect("pip download from pypi.test: nothing blocked", "egress-proxy: blocked" not in result.err, result.describe())
        dest = os.path.join(self.tmp, "pip-denied")
        result = self.pip("denied.test", dest)
        self.blocked(
            "pip download from http://denied.test/simple/", result, "denied.test", self.pypi_port,
            "deny-rule", header=False,
        )
        self.expect(
            "pip download from denied.test: nothing downloaded",
            not os.path.exists(os.path.join(dest, self.wheel_name)),
            result.describe(),
        )

    def python_client(self, lib):
        client = os.path.join(CLIENTS, "py_client.py")
        ok = self.url("web.test", self.web_port)
        result = self.run(sys.executable, client, lib, ok)
        self.allowed(f"python {lib} http://web.test", result, "hello from the e2e origin")
        result = self.run(sys.executable, client, lib, self.url("secure.test", self.tls_port, scheme="https"), self.cert)
        self.allowed(f"python {lib} https://secure.test (CONNECT)", result, "hello from the e2e origin")
        result = self.run(sys.executable, client, lib, self.url("denied.test", self.web_port))
        self.blocked(f"python {lib} http://denied.test", result, "denied.test", self.web_port, "deny-rule")
        result = self.run(
            sys.executable, client, lib, self.url("denied.test", self.tls_port, scheme="https"), self.cert
        )
        self.blocked(
            f"python {lib} https://denied.test (CONNECT)", result, "denied.test", self.tls_port,
            "deny-rule", header=False,
        )
        self.expect(
            f"python {lib} https://denied.test: the library reports the refused tunnel (403)",
            "failed: 403" in result.out,
            result.describe(),
        )

    def case_python_urllib(self):
        """Python urllib.request with only the proxy variables."""
        self.python_client("urllib")

    def case_python_requests(self):
        """Python requests with only the proxy variables (skipped if not importable)."""
        probe = execute([sys.executable, "-c", "import requests"])
        if probe.code != 0:
            self.skip("python requests", "`requests` is not importable by " + sys.executable)
            return
        self.python_client("requests")

    def node(self):
        node = shutil.which("node") or shutil.which("nodejs")
        if not node:
            self.expect("node is installed", False, "neither `node` nor `nodejs` is on PATH")
        return node

    def case_node(self):
        """Node http.request through $http_proxy, and https through CONNECT via $https_proxy."""
        node = self.node()
        if not node:
            return
        client = os.path.join(CLIENTS, "node_client.js")
        result = self.run(node, client, "http", self.url("web.test", self.web_port))
        self.allowed("node http via $http_proxy to web.test", result, "hello from the e2e origin")
        result = self.run(node, client, "https", self.url("secure.test", self.tls_port, scheme="https"), self.cert)
        self.allowed("node https via CONNECT to secure.test", result, "hello from the e2e origin")
        result = self.run(node, client, "http", self.url("denied.test", self.web_port))
        self.blocked("node http via $http_proxy to denied.test", result, "denied.test", self.web_port, "deny-rule")
        result = self.run(node, client, "https", self.url("denied.test", self.tls_port, scheme="https"), self.cert)
        self.blocked("node https via CONNECT to denied.test", result, "denied.test", self.tls_port, "deny-rule")

    def case_node_env_proxy(self):
        """Node's own fetch() with NODE_USE_ENV_PROXY=1 (only where the runtime supports it)."""
        node = self.node()
        if not node:
            return
        version = execute([node, "-p", "process.versions.node"]).out.strip()
        try:
            major, minor = (int(x) for x in version.split(".")[:2])
        except ValueError:
            major, minor = 0, 0
        # NODE_USE_ENV_PROXY arrived in Node 24 (and was backported to 22.21); older runtimes
        # ignore it and fetch() would try the system resolver, so it is not run there at all.
        if not (major >= 24 or (major == 22 and minor >= 21)):
            self.skip(
                "node fetch() with NODE_USE_ENV_PROXY=1",
                f"node v{version} does not implement NODE_USE_ENV_PROXY (needs >= 24 or 22.21); "
                "`run` sets it for runtimes that do",
            )
            return
        client = os.path.join(CLIENTS, "node_client.js")
        result = self.run(node, client, "fetch", self.url("web.test", self.web_port))
        self.allowed("node fetch() http://web.test (NODE_USE_ENV_PROXY)", result, "hello from the e2e origin")
        result = self.run(
            node, client, "fetch", self.url("secure.test", self.tls_port, scheme="https"),
            extra_env={"NODE_EXTRA_CA_CERTS": self.cert},
        )
        self.allowed("node fetch() https://secure.test (NODE_USE_ENV_PROXY)", result, "hello from the e2e origin")
        result = self.run(node, client, "fetch", self.url("denied.test", self.web_port))
        self.blocked("node fetch() http://denied.test (NODE_USE_ENV_PROXY)", result, "denied.test", self.web_port, "deny-rule")

    def case_grpc(self):
        """A gRPC-style HTTP/2 call tunnelled through $GRPC_PROXY (CONNECT), as grpc-core does."""
        node = self.node()
        if not node:
            return
        origin = spawn(
            [node, os.path.join(CLIENTS, "h2_origin.js")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
        )
        try:
            port = self.read_port(origin)
            if not self.expect("the HTTP/2 gRPC-style origin starts", port is not None):
                return
            client = os.path.join(CLIENTS, "node_client.js")
            result = self.run(node, client, "grpc", f"grpc.test:{port}")
            self.allowed("gRPC-style call to grpc.test via $GRPC_PROXY", result, "echo: ping through egress-proxy")
            http_proxy = re.search(r"^HTTP_PROXY=(\S+)$", result.out, re.M)
            self.expect(
                "GRPC_PROXY and grpc_proxy are set to the proxy's HTTP URL",
                http_proxy is not None
                and re.match(r"^http://egress:[0-9a-f]{32}@127\.0\.0\.1:\d+$", http_proxy.group(1))
                and f"GRPC_PROXY={http_proxy.group(1)}\n" in result.out
                and f"grpc_proxy={http_proxy.group(1)}\n" in result.out,
                result.describe(),
            )
            self.expect("gRPC-style call: grpc-status 0", "grpc-status=0" in result.out, result.describe())
            result = self.run(node, client, "grpc", f"denied.test:{port}")
            self.blocked("gRPC-style call to denied.test via $GRPC_PROXY", result, "denied.test", port, "deny-rule")
        finally:
            try:
                origin.stdin.close()
                origin.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            forget(origin)

    @staticmethod
    def read_port(proc, timeout=10):
        lines = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            return None
        return int(line) if line.strip().isdigit() else None

    def case_squid_upstream(self):
        """squid as the upstream (HTTPS_PROXY/http_proxy in run's own environment): CONNECT and forward go through it, the policy still decides first."""
        squid_upstream.case(self, NAMES, spawn, lambda proc: (_kill_group(proc.pid), forget(proc)))

    def case_check(self):
        """`egress-proxy check` explains both verdicts (the 'why was X blocked?' tool)."""
        check = [self.bin, "check", "--dns-server", self.dns_flag, "--config", self.policy]
        result = execute(check + [f"web.test:{self.web_port}"], env=self.env)
        self.expect(
            "check web.test: ALLOW, resolved to 127.0.0.1 (loopback)",
            result.code == 0 and result.out.startswith("ALLOW") and "127.0.0.1" in result.out,
            result.describe(),
        )
        result = execute(check + [f"denied.test:{self.web_port}"], env=self.env)
        self.expect(
            "check denied.test: BLOCK, deny-rule, names the rule and file:line",
            result.code == 1
            and "deny-rule" in result.out
            and re.search(r"deny denied\.test \(.*policy\.toml:\d+:\d+\)", result.out) is not None,
            result.describe(),
        )

    # -- serve -----------------------------------------------------------------------------

    def case_serve(self):
        """`egress-proxy serve` as a gateway: -x, SOCKS5, admin, SIGHUP reload, SIGTERM exit 0."""
        policy = self.write("serve-policy.toml", POLICY)
        xdg = os.path.join(self.tmp, "xdg")
        os.makedirs(xdg, mode=0o700, exist_ok=True)
        env = dict(self.env, XDG_RUNTIME_DIR=xdg, RUST_LOG="info")
        proc = spawn(
            [
                self.bin, "serve", "--config", policy, "--dns-server", self.dns_flag,
                "--http-listen", "127.0.0.1:0", "--socks-listen", "127.0.0.1:0",
                "--admin-listen", "127.0.0.1:0",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        log = LogTail(proc.stderr)
        try:
            self.serve_steps(proc, log, policy)
        finally:
            if proc.poll() is None:
                _kill_group(proc.pid)
                proc.wait()
            forget(proc)

    def serve_steps(self, proc, log, policy):
        http_line = log.wait_for(r"http proxy listening addr=(127\.0\.0\.1:\d+)")
        socks_line = log.wait_for(r"socks5 proxy listening addr=(127\.0\.0\.1:\d+)")
        admin_line = log.wait_for(r"admin API listening.*addr=(127\.0\.0\.1:\d+)")
        if not self.expect(
            "serve: logs its HTTP, SOCKS5 and admin listeners",
            http_line and socks_line and admin_line,
            log.text(),
        ):
            return
        http_addr, socks_addr, admin_addr = http_line[1], socks_line[1], admin_line[1]
        curl = ["curl", "-sS", "-i", "--max-time", "10", "--noproxy", ""]

        def via_x(host, port=self.web_port):
            return execute(curl + ["-x", f"http://{http_addr}", self.url(host, port)], env=self.env)

        result = via_x("web.test")
        self.expect(
            "serve: curl -x … http://web.test succeeds",
            result.code == 0 and re.match(r"HTTP/1\.1 200", result.out) and "hello from the e2e origin" in result.out,
            result.describe(),
        )
        result = via_x("denied.test")
        self.expect(
            "serve: curl -x … http://denied.test is 403 with x-proxy-reason: deny-rule",
            re.match(r"HTTP/1\.1 403", result.out) is not None
            and re.search(r"^x-proxy-reason: deny-rule\r?$", result.out, re.M | re.I) is not None,
            result.describe(),
        )
        result = execute(
            curl + ["-x", f"http://{http_addr}", "--cacert", self.cert, self.url("secure.test", self.tls_port, scheme="https")],
            env=self.env,
        )
        self.expect(
            "serve: curl -x … https://secure.test (CONNECT) succeeds",
            result.code == 0 and "hello from the e2e origin" in result.out,
            result.describe(),
        )
        result = execute(
            curl + ["--socks5-hostname", socks_addr, self.url("web.test", self.web_port)], env=self.env
        )
        self.expect(
            "serve: curl --socks5-hostname … web.test succeeds",
            result.code == 0 and "hello from the e2e origin" in result.out,
            result.describe(),
        )
        result = execute(
            curl + ["--socks5-hostname", socks_addr, self.url("denied.test", self.web_port)], env=self.env
        )
        self.expect(
            "serve: curl --socks5-hostname … denied.test is refused",
            result.code != 0 and "SOCKS5" in result.err,
            result.describe(),
        )
        self.expect(
            "serve: the log has a decision line with deny-rule for denied.test",
            log.wait_for(r"denied\.test.*deny-rule|deny-rule.*denied\.test", timeout=2) is not None,
            log.text(),
        )
        blocked = admin_get(admin_addr, "/blocked")
        self.expect(
            "serve: admin GET /blocked lists denied.test with deny-rule",
            blocked is not None
            and any(
                b.get("host") == "denied.test" and b.get("reason") == "deny-rule"
                for b in blocked.get("blocked", [])
            ),
            f"/blocked -> {blocked}",
        )

        # Reload: web.test becomes denied, late.test allowed.
        with open(policy) as f:
            text = f.read()
        edited = text.replace('"web.test" = "allow"', '"web.test" = "deny"\n"late.test" = "allow"')
        with open(policy, "w") as f:
            f.write(edited)
        mark = log.mark()
        os.kill(proc.pid, signal.SIGHUP)
        self.expect(
            "serve: SIGHUP after editing the policy logs `policy reloaded`",
            log.wait_for(r"policy reloaded", since=mark) is not None,
            log.text(),
        )
        result = via_x("web.test")
        self.expect(
            "serve: after the reload, web.test is 403 deny-rule",
            re.match(r"HTTP/1\.1 403", result.out) is not None
            and re.search(r"^x-proxy-reason: deny-rule\r?$", result.out, re.M | re.I) is not None,
            result.describe(),
        )
        result = via_x("late.test")
        self.expect(
            "serve: after the reload, late.test (newly allowed) succeeds",
            result.code == 0 and re.match(r"HTTP/1\.1 200", result.out) is not None,
            result.describe(),
        )

        # A broken edit: the reload fails and the running policy stays.
        with open(policy, "w") as f:
            f.write(edited + "\nthis is not toml = = =\n")
        mark = log.mark()
        os.kill(proc.pid, signal.SIGHUP)
        self.expect(
            "serve: SIGHUP with a broken policy logs `reload failed`",
            log.wait_for(r"reload failed", since=mark) is not None,
            log.text(),
        )
        result = via_x("late.test")
        self.expect(
            "serve: after the failed reload, the previous policy still applies (late.test allowed)",
            result.code == 0 and re.match(r"HTTP/1\.1 200", result.out) is not None,
            result.describe(),
        )
        result = via_x("web.test")
        self.expect(
            "serve: after the failed reload, web.test is still denied (never fails open)",
            re.match(r"HTTP/1\.1 403", result.out) is not None,
            result.describe(),
        )

        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            code = None
        self.expect(
            f"serve: SIGTERM exits 0 (took {time.monotonic() - started:.2f}s)",
            code == 0,
            f"exit status {code}\n{log.text()}",
        )

    # -- driver ----------------------------------------------------------------------------

    CASES = [
        # (name, fast?, method)
        ("curl-http", True, "case_curl_http"),
        ("curl-connect", True, "case_curl_connect"),
        ("curl-socks5", True, "case_curl_socks5"),
        ("https-inspection", True, "case_https_inspection"),
        ("python-urllib", True, "case_python_urllib"),
        ("git", True, "case_git"),
        ("session-auth", True, "case_session_auth"),
        ("npm", False, "case_npm"),
        ("python-requests", False, "case_python_requests"),
        ("pip", False, "case_pip"),
        ("node", False, "case_node"),
        ("node-env-proxy", False, "case_node_env_proxy"),
        ("grpc", False, "case_grpc"),
        ("squid-upstream", False, "case_squid_upstream"),
        ("check", False, "case_check"),
        ("serve", False, "case_serve"),
    ]

    def main(self):
        started = time.monotonic()
        try:
            self.setup()
        except Exception:
            self.expect("set-up (DNS, origins, certificate, git repo, wheel)", False, traceback.format_exc())
            return
        print(
            f"egress-proxy e2e: {self.bin}\n"
            f"  fake DNS {self.dns_flag}; origins web {self.web_port}, secure {self.tls_port}, "
            f"git {self.git_port}, pypi {self.pypi_port}; scratch {self.tmp}",
            flush=True,
        )
        ran = 0
        for name, fast, method in self.CASES:
            if self.args.fast and not fast:
                continue
            if self.args.k and not any(k in name for k in self.args.k):
                continue
            ran += 1
            doc = getattr(self, method).__doc__.strip()
            print(f"[{name}] {doc}", flush=True)
            case_started = time.monotonic()
            try:
                getattr(self, method)()
            except Exception:
                self.expect(f"{name}: the case ran to completion", False, traceback.format_exc())
            print(f"  ({time.monotonic() - case_started:.2f}s)", flush=True)
        self.expect("at least one case ran (check -k)", ran > 0)
        print(f"total {time.monotonic() - started:.1f}s", flush=True)

    def cleanup(self):
        kill_everything()
        if self.args.keep:
            print(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


class LogTail:
    """Collects a process's stderr lines on a thread; lets a caller wait for a pattern."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for raw in iter(stream.readline, b""):
            with self.cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.lines)

    def wait_for(self, pattern, since=0, timeout=10):
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        checked = since
        with self.cond:
            while True:
                for line in self.lines[checked:]:
                    found = regex.search(line)
                    if found:
                        return found
                checked = max(checked, len(self.lines))
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def text(self):
        with self.cond:
            return "\n".join(self.lines[-40:])


def admin_get(addr, path):
    """GET on the admin API, directly (never through a proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{addr}{path}", timeout=5) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "egress-proxy"))
    parser.add_argument("--fast", action="store_true", help="curl HTTP/CONNECT/SOCKS5, HTTPS inspection, urllib, git")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("-k", action="append", help="run only cases whose name contains K")
    args = parser.parse_args()

    suite = Suite(args)

    def on_signal(signum, _frame):
        suite.cleanup()
        print(f"interrupted by signal {signum}")
        print(f"{suite.passed} passed, {suite.failed + 1} failed")
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        if not os.access(suite.bin, os.X_OK):
            suite.expect(f"{suite.bin} exists and is executable", False)
        else:
            suite.main()
    finally:
        suite.cleanup()
    if suite.failures:
        print("failed:")
        for label in suite.failures:
            print(f"  - {label}")
    if suite.skipped:
        print("skipped: " + "; ".join(suite.skipped))
    print(f"{suite.passed} passed, {suite.failed} failed")
    return 1 if suite.failed else 0


if __name__ == "__main__":
    sys.exit(main())

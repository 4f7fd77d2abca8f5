//! `egress-proxy run --isolate` through the built binary, as root and as an unprivileged user:
//! the command's own network namespace, where the proxy is the only way out.
//!
//! The origins (HTTP, UDP echo) and the fake DNS server listen on the host's 127.0.0.1; the
//! command, inside its namespace, must reach them through the proxy and only through it.
//! Nothing can leave the machine: the command's namespace has only `lo`, and the proxy is
//! allowed loopback names only. A namespace that cannot be created fails the test with the
//! reason, never skips it. Every run has a deadline.

#[path = "support/cli.rs"]
mod cli;
mod support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use cli::Files;
use nix::sys::signal::{kill, Signal};
use support::bin::{without_proxy_env, BIN};
use support::fake_dns::{Answer, FakeDns};
use support::origin::{HttpOrigin, UdpEcho};
use support::run::{require_curl, Output, Running};
use support::unix_origin::UnixHttpOrigin;

/// Who runs `egress-proxy`.
#[derive(Clone, Copy, Debug)]
enum User {
    /// Whoever runs the tests.
    Current,
    /// `nobody` (65534) through setpriv when the tests run as root; else the current user,
    /// who is unprivileged already.
    Unprivileged,
}

/// A raw TCP connection, past every proxy variable.
const PY_CONNECT: &str = r#"
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    print("raw-connect=connected")
except OSError as e:
    print("raw-connect=" + type(e).__name__)
"#;

/// A UDP datagram straight to `127.0.0.1:PORT` and to a documentation address.
const PY_UDP_DIRECT: &str = r#"
import socket, sys
for key, addr in (("udp-direct", ("127.0.0.1", int(sys.argv[1]))), ("udp-out", ("192.0.2.1", 9))):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    try:
        s.sendto(b"direct", addr)
        s.recvfrom(100)
        print(key + "=answered")
    except OSError as e:
        print(key + "=" + type(e).__name__)
"#;

/// SOCKS5 UDP ASSOCIATE through `ALL_PROXY`, one datagram to NAME:PORT and its echo.
const PY_UDP_SOCKS: &str = r#"
import os, socket, struct, sys, urllib.parse
url = urllib.parse.urlsplit(os.environ["ALL_PROXY"])
c = socket.create_connection((url.hostname, url.port), timeout=5)
if url.username:
    c.sendall(b"\x05\x01\x02")
    assert c.recv(2) == b"\x05\x02"
    user, password = url.username.encode(), url.password.encode()
    c.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
    assert c.recv(2) == b"\x01\x00"
else:
    c.sendall(b"\x05\x01\x00")
    method = c.recv(2)
    if method != b"\x05\x00":
        print("method=" + method.hex())
        sys.exit()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 0))
u.settimeout(5)
c.sendall(b"\x05\x03\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", u.getsockname()[1]))
r = c.recv(10)
assert r[1] == 0, r
relay = (socket.inet_ntoa(r[4:8]), struct.unpack(">H", r[8:10])[0])
name = sys.argv[1].encode()
u.sendto(b"\x00\x00\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", int(sys.argv[2])) + b"ping", relay)
data, _ = u.recvfrom(1000)
print("udp-socks=" + data[-4:].decode())
"#;

/// A server of the command's own on 127.0.0.1, reached by name and address with the proxy
/// variables set (NO_PROXY sends both around the proxy).
const PY_OWN_SERVER: &str = r#"
import http.server, threading, urllib.request
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"own")
    def log_message(self, *args):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), Ok)
threading.Thread(target=srv.serve_forever, daemon=True).start()
for host in ("127.0.0.1", "localhost"):
    body = urllib.request.urlopen("http://%s:%d/" % (host, srv.server_port), timeout=5).read()
    print("own-%s=%s" % (host, body.decode()))
"#;

/// `socket()` of the families the namespace does not contain, and a socket pair.
const PY_UNIX: &str = r#"
import socket
for key, family in (("unix", socket.AF_UNIX), ("vsock", 40)):
    try:
        socket.socket(family, socket.SOCK_STREAM)
        print(key + "=allowed")
    except OSError as e:
        print("%s=%s:%d" % (key, type(e).__name__, e.errno))
a, b = socket.socketpair()
a.send(b"x")
print("socketpair=" + b.recv(1).decode())
"#;

/// A lookup of the command's own, timed.
const PY_DNS: &str = r#"
import socket, time
start = time.monotonic()
try:
    socket.getaddrinfo("lookup.test", 80)
    print("dns=resolved")
except socket.gaierror:
    print("dns=failed")
print("dns-fast=%s" % (time.monotonic() - start < 1.0))
"#;

/// A fake DNS answering 127.0.0.1 for both names, an HTTP origin and a UDP echo on the host's
/// loopback, and a policy that allows both names there; `--deny denied.test` then decides.
struct World {
    dns: FakeDns,
    origin: HttpOrigin,
    echo: UdpEcho,
    _files: Files,
    config: String,
}

impl World {
    fn new(policy: &str) -> World {
        require_curl();
        let dns = FakeDns::start([
            ("allowed.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
            ("denied.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
        ]);
        let files = Files::new();
        // Readable by the unprivileged user too.
        std::fs::set_permissions(files.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = files.write(
            "p.toml",
            &format!(
                "allow_local_binding = true\nallowed_domains = ['allowed.test', 'denied.test']\n{policy}"
            ),
        );
        World {
            dns,
            origin: HttpOrigin::start(),
            echo: UdpEcho::start(),
            _files: files,
            config,
        }
    }

    /// `run --config … --dns-server … --deny denied.test EXTRA -- sh -c SCRIPT` as `user`,
    /// with the scripts above in the environment as `$PY_*` and the ports as `$ORIGIN` and
    /// `$ECHO`; not started yet.
    fn command(&self, user: User, extra: &[&str], script: &str) -> Command {
        let dns = self.dns.addr.to_string();
        let mut cmd = match user {
            User::Unprivileged if nix::unistd::geteuid().is_root() => {
                let mut cmd = Command::new("setpriv");
                cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
                cmd
            }
            _ => Command::new(BIN),
        };
        without_proxy_env(&mut cmd);
        cmd.args(["run", "--config", &self.config, "--dns-server", &dns])
            .args(["--deny", "denied.test"])
            .args(extra)
            .args(["--", "sh", "-c", script])
            .env_remove("RUST_LOG")
            .env("ORIGIN", self.origin.addr.port().to_string())
            .env("ECHO", self.echo.addr.port().to_string())
            .env("PY_CONNECT", PY_CONNECT)
            .env("PY_UDP_DIRECT", PY_UDP_DIRECT)
            .env("PY_UDP_SOCKS", PY_UDP_SOCKS)
            .env("PY_OWN_SERVER", PY_OWN_SERVER)
            .env("PY_UNIX", PY_UNIX)
            .env("PY_DNS", PY_DNS)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        cmd
    }

    /// Runs `script` under `run --isolate EXTRA`; the run itself must succeed.
    fn isolated(
        &self,
        user: User,
        extra: &[&str],
        script: &str,
    ) -> (BTreeMap<String, String>, Output) {
        let mut args = vec!["--isolate"];
        args.extend_from_slice(extra);
        let out = Running::start(self.command(user, &args, script)).finish();
        assert_eq!(out.code, 0, "{user:?}: {out:?}");
        (keys(&out.stdout), out)
    }
}

/// `key=value` lines of stdout.
fn keys(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(keys: &'a BTreeMap<String, String>, key: &str, out: &Output) -> &'a str {
    keys.get(key)
        .unwrap_or_else(|| panic!("no `{key}=` in the output: {out:?}"))
}

/// Direct connections (curl told to ignore the proxy, a raw socket, UDP) reach nothing of the
/// host's, while curl through the proxy variables reaches an allowed name and gets the
/// reason for a denied one, reported on stderr as without `--isolate`.
fn only_the_proxy_leads_out(user: User) {
    let world = World::new("");
    let script = r#"
        curl -sS -m 5 --noproxy '*' -o /dev/null "http://127.0.0.1:$ORIGIN/direct" 2>/dev/null
        echo "curl-direct=$?"
        python3 -c "$PY_CONNECT" "$ORIGIN"
        python3 -c "$PY_UDP_DIRECT" "$ECHO"
        echo "allowed=$(curl -sS -m 5 "http://allowed.test:$ORIGIN/through")"
        echo "denied=$(curl -sS -m 5 -o /dev/null -w '%{http_code} %header{x-proxy-reason}' "http://denied.test:$ORIGIN/")"
        echo "no-creds=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' -x "http://${HTTP_PROXY##*@}" "http://allowed.test:$ORIGIN/stripped")"
        echo "id=$(id -u)"
    "#;
    let (keys, out) = world.isolated(user, &[], script);
    let key = |k| get(&keys, k, &out);
    assert_eq!(key("curl-direct"), "7", "{out:?}");
    assert_eq!(key("raw-connect"), "ConnectionRefusedError", "{out:?}");
    // Nothing answers on the namespace's own 127.0.0.1, and the host's echo counts nothing.
    assert_eq!(key("udp-direct"), "TimeoutError", "{out:?}");
    assert_eq!(key("udp-out"), "OSError", "{out:?}");
    assert_eq!(key("allowed"), "origin saw GET /through body=0", "{out:?}");
    assert_eq!(key("denied"), "403 deny-rule", "{out:?}");
    // The session token holds inside too: the URL without it is refused before the policy.
    assert_eq!(key("no-creds"), "407", "{out:?}");
    assert_eq!(
        world.echo.datagrams(),
        0,
        "a direct datagram reached the host"
    );
    let requests = world.origin.requests();
    assert_eq!(
        requests.len(),
        1,
        "only the proxied request arrives: {requests:?}"
    );
    assert!(requests[0].starts_with("GET /through "), "{requests:?}");
    if matches!(user, User::Unprivileged) {
        assert_ne!(key("id"), "0", "{out:?}");
    }
    assert!(
        out.stderr
            .contains("egress-proxy: blocked HTTP denied.test:"),
        "no live line: {out:?}"
    );
    assert!(
        out.stderr.contains("egress-proxy: blocked 1 destination:"),
        "no summary: {out:?}"
    );
}

#[test]
fn only_the_proxy_leads_out_as_root_or_the_current_user() {
    only_the_proxy_leads_out(User::Current);
}

#[test]
fn only_the_proxy_leads_out_unprivileged() {
    only_the_proxy_leads_out(User::Unprivileged);
}

fn socks5_connect_and_udp_associate_work_from_inside(user: User) {
    let world = World::new("");
    let script = r#"
        echo "connect=$(curl -sS -m 5 -x "$ALL_PROXY" "http://allowed.test:$ORIGIN/socks")"
        echo "denied=$(curl -sS -m 5 -x "$ALL_PROXY" "http://denied.test:$ORIGIN/" 2>&1 >/dev/null)"
        python3 -c "$PY_UDP_SOCKS" allowed.test "$ECHO"
        ALL_PROXY="socks5://${ALL_PROXY##*@}" python3 -c "$PY_UDP_SOCKS" allowed.test "$ECHO"
    "#;
    let (keys, out) = world.isolated(user, &[], script);
    assert_eq!(get(&keys, "connect", &out), "origin saw GET /socks body=0");
    // curl names the reply code: 2, not allowed by the ruleset.
    assert_eq!(
        get(&keys, "denied", &out),
        "curl: (97) Can't complete SOCKS5 connection to denied.test. (2)"
    );
    assert_eq!(get(&keys, "udp-socks", &out), "ping", "{out:?}");
    // Without the session's credentials no method is acceptable.
    assert_eq!(get(&keys, "method", &out), "05ff", "{out:?}");
    assert_eq!(world.echo.datagrams(), 1);
}

#[test]
fn socks5_connect_and_udp_associate_work_from_inside_as_root_or_the_current_user() {
    socks5_connect_and_udp_associate_work_from_inside(User::Current);
}

#[test]
fn socks5_connect_and_udp_associate_work_from_inside_unprivileged() {
    socks5_connect_and_udp_associate_work_from_inside(User::Unprivileged);
}

#[test]
fn the_commands_own_loopback_is_its_own_and_bypasses_the_proxy() {
    let world = World::new("");
    let script = r#"
        python3 -c "$PY_OWN_SERVER"
        echo "no_proxy=$NO_PROXY"
    "#;
    for user in [User::Current, User::Unprivileged] {
        let (keys, out) = world.isolated(user, &[], script);
        assert_eq!(get(&keys, "own-127.0.0.1", &out), "own");
        assert_eq!(get(&keys, "own-localhost", &out), "own");
        assert_eq!(get(&keys, "no_proxy", &out), "localhost,127.0.0.1,::1");
        let (keys, out) =
            world.isolated(user, &["--no-proxy", "a.test"], "echo no_proxy=$NO_PROXY");
        assert_eq!(get(&keys, "no_proxy", &out), "a.test", "--no-proxy wins");
    }
}

#[test]
fn unix_and_vsock_sockets_are_refused_unless_unix_sockets_are_allowed() {
    for user in [User::Current, User::Unprivileged] {
        let world = World::new("");
        let (keys, out) = world.isolated(user, &[], r#"python3 -c "$PY_UNIX""#);
        assert_eq!(get(&keys, "unix", &out), "PermissionError:1", "{out:?}");
        assert_eq!(get(&keys, "vsock", &out), "PermissionError:1", "{out:?}");
        assert_eq!(get(&keys, "socketpair", &out), "x", "{out:?}");

        let world = World::new("dangerously_allow_all_unix_sockets = true\n");
        let (keys, out) = world.isolated(user, &[], r#"python3 -c "$PY_UNIX""#);
        assert_eq!(get(&keys, "unix", &out), "allowed", "{out:?}");
        assert_eq!(get(&keys, "vsock", &out), "PermissionError:1", "{out:?}");
    }
}

#[test]
fn a_lookup_inside_is_refused_at_once_and_the_first_name_is_reported_once() {
    let world = World::new("");
    let script = r#"
        python3 -c "$PY_DNS"
        getent hosts second.test >/dev/null
        echo "getent=$?"
    "#;
    for user in [User::Current, User::Unprivileged] {
        let (keys, out) = world.isolated(user, &[], script);
        assert_eq!(get(&keys, "dns", &out), "failed", "{out:?}");
        assert_eq!(get(&keys, "dns-fast", &out), "True", "{out:?}");
        assert_eq!(get(&keys, "getent", &out), "2", "{out:?}");
        let reported: Vec<_> = out
            .stderr
            .lines()
            .filter(|l| l.contains("refused a DNS query"))
            .collect();
        assert_eq!(reported.len(), 1, "{out:?}");
        assert!(reported[0].contains(" lookup.test "), "{reported:?}");
        let (_, quiet) = world.isolated(user, &["--quiet"], script);
        assert!(!quiet.stderr.contains("DNS"), "{quiet:?}");
    }
}

#[test]
fn exit_codes_signals_and_missing_commands_pass_through() {
    let world = World::new("");
    for user in [User::Current, User::Unprivileged] {
        let run =
            |script: &str| Running::start(world.command(user, &["--isolate"], script)).finish();
        assert_eq!(run("exit 7").code, 7);
        assert_eq!(run("kill -TERM $$").code, 128 + Signal::SIGTERM as i32);

        let cmd = world.command(
            user,
            &["--isolate"],
            "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done",
        );
        let running = Running::start(cmd);
        assert_eq!(running.next_line(), "ready\n", "the command did not start");
        kill(running.pid(), Signal::SIGTERM).unwrap();
        assert_eq!(
            running.finish().code,
            42,
            "SIGTERM reached the command through both stages"
        );
    }
    let mut cmd = Command::new(BIN);
    without_proxy_env(&mut cmd);
    let out = cmd
        .args([
            "run",
            "--isolate",
            "--allow",
            "x.test",
            "--",
            "/nonexistent/cmd",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("command not found"), "{stderr}");
}

/// How many mounts are on /tmp in the mount namespace `mountinfo` describes.
fn tmp_mounts(mountinfo: &str) -> usize {
    mountinfo
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some("/tmp"))
        .count()
}

#[test]
fn the_run_table_isolates_too_and_the_namespace_ends_with_the_command() {
    let world = World::new("[run]\nisolate = true\n");
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let resolv = std::fs::read("/etc/resolv.conf").ok();
    let script = r#"
        echo "ns=$(readlink /proc/self/ns/net)"
        echo "resolv=$(cat /etc/resolv.conf 2>/dev/null | tr '\n' ' ')"
        echo "tmp-mounts=$(awk '$5 == "/tmp"' /proc/self/mountinfo | wc -l)"
    "#;
    let out = Running::start(world.command(User::Current, &[], script)).finish();
    assert_eq!(out.code, 0, "{out:?}");
    let mut keys = keys(&out.stdout);
    let inside = keys
        .remove("ns")
        .expect("the command printed its namespace");
    assert_ne!(
        inside,
        own.to_str().unwrap(),
        "`[run] isolate = true` did not isolate"
    );
    if resolv.is_some() {
        assert_eq!(keys["resolv"], "nameserver 127.0.0.1 ", "{out:?}");
    }
    assert_eq!(
        std::fs::read("/etc/resolv.conf").ok(),
        resolv,
        "the host's file changed"
    );
    // The scratch tmpfs that held the namespace's resolv.conf is gone before the command runs.
    let host_tmp = tmp_mounts(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
    assert_eq!(keys["tmp-mounts"], host_tmp.to_string(), "{out:?}");
    // No process is left in that namespace once `run` has returned.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(ns) = std::fs::read_link(entry.path().join("ns/net")) {
            assert_ne!(
                ns.to_str(),
                Some(inside.as_str()),
                "{:?} is still in it",
                entry.path()
            );
        }
    }
}

#[test]
fn without_namespaces_the_command_never_runs() {
    // A user namespace whose own limit of nested user namespaces is 0: ours cannot be made.
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && exec {BIN} run --isolate --allow x.test -- echo ran"
    );
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "the command ran");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "error: cannot isolate the command: cannot create a user and network namespace: "
        ),
        "{stderr}"
    );
}

#[test]
fn an_allowed_unix_socket_is_reached_through_the_proxy_and_only_so() {
    let sockets = Files::new();
    let origin = UnixHttpOrigin::start(&sockets.dir().join("d.sock"));
    let path = origin.path.display().to_string();
    let world = World::new(&format!("unix_sockets = {{ '{path}' = 'allow' }}\n"));
    let script = format!(
        r#"
        echo "proxied=$(curl -sS -m 5 -x "$HTTP_PROXY" -H 'x-unix-socket: {path}' http://unix.test/via)"
        curl -sS -m 5 --unix-socket '{path}' http://unix.test/direct 2>/dev/null
        echo "direct=$?"
    "#
    );
    let (keys, out) = world.isolated(User::Current, &[], &script);
    assert_eq!(
        get(&keys, "proxied", &out),
        "unix origin saw GET /via body=0"
    );
    // curl cannot create the socket: "Couldn't connect to server".
    assert_eq!(get(&keys, "direct", &out), "7", "{out:?}");
    let requests = origin.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
}

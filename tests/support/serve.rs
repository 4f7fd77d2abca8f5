//! A `serve` process of the built binary for the tests in `tests/serve/`: started in its own
//! process group with the listeners on 127.0.0.1:0, its stderr read line by line, signalled, and
//! talked to over raw HTTP/1.1 and SOCKS5 on std sockets. Included with `#[path]` by
//! `tests/serve/main.rs`, so it is not part of `support` itself.
//!
//! Every wait has a deadline, and a failing test kills the whole group (SIGKILL) when it unwinds,
//! so a hang is a failure, never a stall. The listeners' addresses come from the startup log
//! lines (`http proxy listening addr=…`).

// Every test binary that includes this file uses only some of its helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;
use tokio::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::bin::BIN;
use crate::support::fake_dns::{Answer, FakeDns};
use crate::support::reply::Reply;

/// Startup, a log line after a signal, a prompt exit: none needs more than a fraction of this.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Every socket read and write gives up after this.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// `serve`'s drain deadline (`GRACE` in `src/cli/serve.rs`).
pub const GRACE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// A `serve` process
// ---------------------------------------------------------------------------------------------

/// `egress-proxy serve ARGS` in its own process group, with the info log on stderr and the
/// generated admin token under `runtime_dir`.
pub fn command(args: &[&str], runtime_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    crate::support::bin::without_proxy_env(&mut cmd);
    cmd.arg("serve")
        .args(args)
        .env("RUST_LOG", "info")
        .env("XDG_RUNTIME_DIR", runtime_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd
}

/// The listeners on 127.0.0.1:0, so parallel tests never collide.
pub const EPHEMERAL: &[&str] = &[
    "--http-listen",
    "127.0.0.1:0",
    "--socks-listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
];

/// A running `serve`. Dropping it kills its process group.
pub struct Serve {
    pub child: Child,
    /// stderr, line by line, from a reader thread.
    pub lines: mpsc::Receiver<String>,
    /// Every stderr line received so far.
    pub seen: Vec<String>,
    pub http: SocketAddr,
    pub socks: Option<SocketAddr>,
    pub admin: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// How a start attempt ended before the listeners were up.
#[derive(Debug)]
pub struct Failed {
    pub code: Option<i32>,
    pub stderr: String,
}

impl Serve {
    /// Starts `serve` with the listeners on ephemeral ports.
    pub fn start(config: &Path, extra: &[&str], runtime_dir: &Path) -> Serve {
        let mut args = vec!["--config", config.to_str().unwrap()];
        args.extend_from_slice(EPHEMERAL);
        args.extend_from_slice(extra);
        Serve::spawn(command(&args, runtime_dir)).unwrap_or_else(|f| panic!("serve failed: {f:?}"))
    }

    /// Spawns `cmd` and waits for the admin startup line, the last of the startup lines.
    pub fn spawn(cmd: Command) -> Result<Serve, Failed> {
        Serve::spawn_with(cmd, true)
    }

    /// [`Serve::spawn`]; `handlers` also waits until the signal handlers are installed.
    pub fn spawn_with(mut cmd: Command, handlers: bool) -> Result<Serve, Failed> {
        let mut child = cmd.spawn().expect("spawn egress-proxy serve");
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut serve = Serve {
            child,
            lines,
            seen: Vec::new(),
            http: "0.0.0.0:0".parse().unwrap(),
            socks: None,
            admin: "0.0.0.0:0".parse().unwrap(),
        };
        if serve
            .try_wait_for_line(|l| l.contains("admin API listening"), DEADLINE)
            .is_none()
        {
            // Exited (or hung): collect what it said.
            let status = serve.wait_exit(DEADLINE);
            serve.drain_lines();
            return Err(Failed {
                code: status.and_then(|s| s.code()),
                stderr: serve.seen.join("\n"),
            });
        }
        // The startup lines come before `serve` installs its signal handlers (see
        // `signals_right_after_the_startup_lines_are_handled`): wait for the handlers, so a
        // signal sent by a test is never met by the default action.
        if handlers {
            wait_for_handlers(
                serve.pid(),
                &[Signal::SIGHUP, Signal::SIGINT, Signal::SIGTERM],
            );
        }
        serve.http = serve
            .startup_addr("http proxy listening")
            .expect("http startup line");
        serve.socks = serve.startup_addr("socks5 proxy listening");
        serve.admin = serve
            .startup_addr("admin API listening")
            .expect("admin startup line");
        Ok(serve)
    }

    /// The `addr=` of the one startup line containing `what`, `None` without one.
    pub fn startup_addr(&self, what: &str) -> Option<SocketAddr> {
        let lines: Vec<&String> = self.seen.iter().filter(|l| l.contains(what)).collect();
        assert!(lines.len() <= 1, "more than one `{what}` line: {lines:#?}");
        let line = lines.first()?;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line:?}"));
        Some(addr.parse().unwrap_or_else(|e| panic!("{e}: {line:?}")))
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap_or_else(|e| panic!("kill -{signal}: {e}"));
    }

    /// Reads stderr until a line satisfies `matches` (returned) or `within` passes (`None`).
    pub fn try_wait_for_line(
        &mut self,
        matches: impl Fn(&str) -> bool,
        within: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// [`Serve::try_wait_for_line`], failing the test on timeout.
    pub fn wait_for_line(&mut self, what: &str) -> String {
        self.try_wait_for_line(|l| l.contains(what), DEADLINE)
            .unwrap_or_else(|| {
                panic!(
                    "no stderr line containing {what:?} within {DEADLINE:?}; so far:\n{}",
                    self.seen.join("\n")
                )
            })
    }

    /// Moves whatever stderr has already arrived into `seen`.
    pub fn drain_lines(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    pub fn stderr(&mut self) -> String {
        self.drain_lines();
        self.seen.join("\n")
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for serve")
    }

    /// Waits up to `within` for the exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit, failing the test (and killing the group) past `within`.
    pub fn expect_exit(&mut self, within: Duration) -> ExitStatus {
        match self.wait_exit(within) {
            Some(status) => status,
            None => panic!(
                "serve did not exit within {within:?}; stderr:\n{}",
                self.stderr()
            ),
        }
    }
}

/// Whether `pid` has its own handler for each of `signals` (the `SigCgt` mask of
/// `/proc/PID/status`).
pub fn catches(pid: Pid, signals: &[Signal]) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let Some(mask) = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
    else {
        return false;
    };
    signals
        .iter()
        .all(|&s| mask & (1u64 << (s as i32 - 1)) != 0)
}

/// Polls until `pid` catches every one of `signals`, failing the test after `DEADLINE`.
pub fn wait_for_handlers(pid: Pid, signals: &[Signal]) {
    let deadline = Instant::now() + DEADLINE;
    while !catches(pid, signals) {
        assert!(
            Instant::now() < deadline,
            "serve (pid {pid}) never installed handlers for {signals:?}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `serve ARGS` that must fail at startup; returns its exit code and stderr.
pub fn start_failure(args: &[&str], runtime_dir: &Path) -> (i32, String) {
    match Serve::spawn(command(args, runtime_dir)) {
        Ok(mut serve) => panic!("serve {args:?} started:\n{}", serve.stderr()),
        Err(Failed { code, stderr }) => {
            let code = code.unwrap_or_else(|| panic!("no exit code; stderr: {stderr}"));
            (code, stderr)
        }
    }
}

/// A port that was free a moment ago (bound on 127.0.0.1:0 and released). Whoever uses it
/// must retry on `cannot listen`, since another process may take it in between.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

// ---------------------------------------------------------------------------------------------
// Policy files
// ---------------------------------------------------------------------------------------------

/// A native policy file: `enabled`, `allow_local_binding` (names of the fake DNS server resolve
/// to 127.0.0.1), `[domains]` and `[dns] servers` pointing at `dns`.
pub fn policy_text(dns: &FakeDns, extra: &str, domains: &str) -> String {
    format!(
        "enabled = true\nallow_local_binding = true\n{extra}\n[domains]\n{domains}\n\n\
         [dns]\nservers = [\"{}\"]\ntimeout_ms = 1000\n",
        dns.addr
    )
}

pub fn fake_dns() -> FakeDns {
    FakeDns::start(vec![
        ("allowed.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
        ("other.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
        ("denied.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
    ])
}

/// A temporary directory with the runtime dir for the generated admin token.
pub struct Dir {
    pub dir: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        Dir { dir }
    }

    pub fn runtime(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 and SOCKS5 over std sockets, every operation with a timeout
// ---------------------------------------------------------------------------------------------

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Reads one response head byte by byte (nothing after it is consumed, so a CONNECT tunnel's
/// first bytes stay in the socket), then `Content-Length` body bytes unless `head_only`.
pub fn read_reply(stream: &mut TcpStream, head_only: bool) -> Reply {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "no complete response head ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let mut reply = Reply::from_head(&String::from_utf8(head).unwrap());
    if !head_only {
        let mut body = vec![0; reply.content_length().unwrap_or(0)];
        stream.read_exact(&mut body).expect("response body");
        reply.body = String::from_utf8_lossy(&body).into_owned();
    }
    reply
}

/// A plain-HTTP GET through the proxy at `proxy` on a new connection.
pub fn proxy_get(proxy: SocketAddr, authority: &str) -> Reply {
    let mut stream = connect(proxy);
    let request = format!(
        "GET http://{authority}/path HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    read_reply(&mut stream, false)
}

/// An admin GET.
pub fn admin_get(admin: SocketAddr, path: &str) -> Reply {
    let mut stream = connect(admin);
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    read_reply(&mut stream, false)
}

/// A CONNECT tunnel through the HTTP proxy, after its `200`.
pub fn connect_tunnel(proxy: SocketAddr, authority: &str) -> TcpStream {
    let mut stream = connect(proxy);
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let reply = read_reply(&mut stream, true);
    assert_eq!(reply.status, 200, "CONNECT {authority}: {reply:?}");
    stream
}

/// A SOCKS5 CONNECT tunnel (no authentication, IPv4 target), after its success reply.
pub fn socks_tunnel(proxy: SocketAddr, target: SocketAddr) -> TcpStream {
    let SocketAddr::V4(target) = target else {
        panic!("IPv4 targets only: {target}");
    };
    let mut stream = connect(proxy);
    stream.write_all(&[5, 1, 0]).unwrap();
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).unwrap();
    assert_eq!(choice, [5, 0], "method selection");
    let mut request = vec![5, 1, 0, 1];
    request.extend_from_slice(&target.ip().octets());
    request.extend_from_slice(&target.port().to_be_bytes());
    stream.write_all(&request).unwrap();
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(
        reply[..2],
        [5, 0],
        "SOCKS5 reply to CONNECT {target}: {reply:?}"
    );
    stream
}

/// Sends `payload` into an echo tunnel and expects it back.
pub fn echo(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(payload).expect("write into the tunnel");
    let mut back = vec![0; payload.len()];
    stream.read_exact(&mut back).expect("read from the tunnel");
    assert_eq!(back, payload);
}

/// Whether a new TCP connection to `addr` is refused.
pub fn refused(addr: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Ok(_) => false,
        Err(e) => e.kind() == ErrorKind::ConnectionRefused,
    }
}

/// Polls until new connections to `addr` are refused, failing the test after `DEADLINE`.
pub fn wait_refused(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !refused(addr) {
        assert!(
            Instant::now() < deadline,
            "{what} at {addr} still accepts connections"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the child's process group when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(-(self.0.id() as i32)), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// A policy that allows the IP literal 127.0.0.1 (an exact IP allow grants the local exception).
pub fn loopback_policy(dir: &Dir, dns: &FakeDns, domains: &str) -> PathBuf {
    dir.write(
        "policy.toml",
        &format!(
            "enabled = true\n[domains]\n\"127.0.0.1\" = \"allow\"\n{domains}\n\n\
             [dns]\nservers = [\"{}\"]\ntimeout_ms = 1000\n",
            dns.addr
        ),
    )
}

/// A policy for the tunnel re-decision test: the fake DNS names, the literal 127.0.0.1, and
/// `allow_local_binding` as given (the names resolve to 127.0.0.1, so it decides them).
pub fn tunnel_policy(dns: &FakeDns, allow_local_binding: bool, domains: &str) -> String {
    format!(
        "enabled = true\nallow_local_binding = {allow_local_binding}\n[domains]\n\
         \"127.0.0.1\" = \"allow\"\n{domains}\n\n\
         [dns]\nservers = [\"{}\"]\ntimeout_ms = 1000\n",
        dns.addr
    )
}

/// Waits for the proxy to close `tunnel`: EOF (or a reset) well within the read timeout.
pub fn expect_closed(tunnel: &mut TcpStream, what: &str) {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    match tunnel.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: {n} unexpected bytes"),
        Err(e) => assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{what} is still open after {:?}",
            start.elapsed()
        ),
    }
    assert!(
        start.elapsed() < IO_TIMEOUT,
        "{what}: {:?}",
        start.elapsed()
    );
}

/// An admin POST with the token `serve` generated under `runtime_dir`.
pub fn admin_post(admin: SocketAddr, runtime_dir: &Path, path: &str, body: &str) -> Reply {
    let token = std::fs::read_to_string(runtime_dir.join("egress-proxy/admin-token")).unwrap();
    let mut stream = connect(admin);
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        token.trim(),
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    read_reply(&mut stream, false)
}

impl Serve {
    /// SIGTERM, and the exit status 0 of a drain with nothing open.
    pub fn stop(&mut self) {
        self.signal(Signal::SIGTERM);
        assert_eq!(
            self.expect_exit(DEADLINE).code(),
            Some(0),
            "{}",
            self.stderr()
        );
    }
}

/// [`policy_text`] that allows `allowed.test` and nothing else.
pub fn allowed_only(dns: &FakeDns) -> String {
    policy_text(dns, "", "\"allowed.test\" = \"allow\"")
}

/// `--config CONFIG` and the [`EPHEMERAL`] listeners.
pub fn ephemeral_args(config: &Path) -> Vec<&str> {
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(EPHEMERAL);
    args
}

/// Polls the audit log at `path` until its lines satisfy `done` or [`DEADLINE`] passes; its
/// text and lines. Close lines are written as relays end, after the client saw EOF.
pub fn audit_when(path: &Path, done: impl Fn(&[Value]) -> bool) -> (String, Vec<Value>) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
            .collect();
        if done(&lines) || Instant::now() >= deadline {
            return (text, lines);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

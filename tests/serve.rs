//! `egress-proxy serve` through the built binary (SPEC sections 3 and 7, issue 6): startup lines
//! and startup errors, hot reload on SIGHUP, graceful shutdown on SIGTERM/SIGINT with the drain
//! deadline, and the `--audit-log` file.
//!
//! Everything stays on loopback: listeners on 127.0.0.1, names answered by a fake DNS server
//! with 127.0.0.1, origins on 127.0.0.1. Each `serve` runs in its own process group; every wait
//! has a deadline, and a failing test kills the whole group (SIGKILL) when it unwinds, so a hang
//! is a failure, never a stall. The listeners' addresses come from the startup log lines
//! (`http proxy listening addr=…`), so every listener can be asked for on 127.0.0.1:0.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use support::fake_dns::{Answer, FakeDns};
use support::origin::{HttpOrigin, TcpEcho};
use support::prometheus::sample;
use support::reply::Reply;

const BIN: &str = env!("CARGO_BIN_EXE_egress-proxy");

/// Startup, a log line after a signal, a prompt exit: none needs more than a fraction of this.
const DEADLINE: Duration = Duration::from_secs(10);
/// Every socket read and write gives up after this.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// `serve`'s drain deadline (`GRACE` in `src/cli/serve.rs`).
const GRACE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// A `serve` process
// ---------------------------------------------------------------------------------------------

/// `egress-proxy serve ARGS` in its own process group, with the info log on stderr and the
/// generated admin token under `runtime_dir`.
fn command(args: &[&str], runtime_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
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
const EPHEMERAL: &[&str] = &[
    "--http-listen",
    "127.0.0.1:0",
    "--socks-listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
];

/// A running `serve`. Dropping it kills its process group.
struct Serve {
    child: Child,
    /// stderr, line by line, from a reader thread.
    lines: mpsc::Receiver<String>,
    /// Every stderr line received so far.
    seen: Vec<String>,
    http: SocketAddr,
    socks: Option<SocketAddr>,
    admin: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// How a start attempt ended before the listeners were up.
#[derive(Debug)]
struct Failed {
    code: Option<i32>,
    stderr: String,
}

impl Serve {
    /// Starts `serve` with the listeners on ephemeral ports.
    fn start(config: &Path, extra: &[&str], runtime_dir: &Path) -> Serve {
        let mut args = vec!["--config", config.to_str().unwrap()];
        args.extend_from_slice(EPHEMERAL);
        args.extend_from_slice(extra);
        Serve::spawn(command(&args, runtime_dir)).unwrap_or_else(|f| panic!("serve failed: {f:?}"))
    }

    /// Spawns `cmd` and waits for the admin startup line, the last of the startup lines.
    fn spawn(cmd: Command) -> Result<Serve, Failed> {
        Serve::spawn_with(cmd, true)
    }

    /// [`Serve::spawn`]; `handlers` also waits until the signal handlers are installed.
    fn spawn_with(mut cmd: Command, handlers: bool) -> Result<Serve, Failed> {
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
    fn startup_addr(&self, what: &str) -> Option<SocketAddr> {
        let lines: Vec<&String> = self.seen.iter().filter(|l| l.contains(what)).collect();
        assert!(lines.len() <= 1, "more than one `{what}` line: {lines:#?}");
        let line = lines.first()?;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line:?}"));
        Some(addr.parse().unwrap_or_else(|e| panic!("{e}: {line:?}")))
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap_or_else(|e| panic!("kill -{signal}: {e}"));
    }

    /// Reads stderr until a line satisfies `matches` (returned) or `within` passes (`None`).
    fn try_wait_for_line(
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
    fn wait_for_line(&mut self, what: &str) -> String {
        self.try_wait_for_line(|l| l.contains(what), DEADLINE)
            .unwrap_or_else(|| {
                panic!(
                    "no stderr line containing {what:?} within {DEADLINE:?}; so far:\n{}",
                    self.seen.join("\n")
                )
            })
    }

    /// Moves whatever stderr has already arrived into `seen`.
    fn drain_lines(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    fn stderr(&mut self) -> String {
        self.drain_lines();
        self.seen.join("\n")
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for serve")
    }

    /// Waits up to `within` for the exit.
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
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
    fn expect_exit(&mut self, within: Duration) -> ExitStatus {
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
fn catches(pid: Pid, signals: &[Signal]) -> bool {
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
fn wait_for_handlers(pid: Pid, signals: &[Signal]) {
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
fn start_failure(args: &[&str], runtime_dir: &Path) -> (i32, String) {
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
fn free_port() -> u16 {
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
fn policy_text(dns: &FakeDns, extra: &str, domains: &str) -> String {
    format!(
        "enabled = true\nallow_local_binding = true\n{extra}\n[domains]\n{domains}\n\n\
         [dns]\nservers = [\"{}\"]\ntimeout_ms = 1000\n",
        dns.addr
    )
}

fn fake_dns() -> FakeDns {
    FakeDns::start(vec![
        ("allowed.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
        ("other.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
        ("denied.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
    ])
}

/// A temporary directory with the runtime dir for the generated admin token.
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        Dir { dir }
    }

    fn runtime(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 and SOCKS5 over std sockets, every operation with a timeout
// ---------------------------------------------------------------------------------------------

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Reads one response head byte by byte (nothing after it is consumed, so a CONNECT tunnel's
/// first bytes stay in the socket), then `Content-Length` body bytes unless `head_only`.
fn read_reply(stream: &mut TcpStream, head_only: bool) -> Reply {
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
fn proxy_get(proxy: SocketAddr, authority: &str) -> Reply {
    let mut stream = connect(proxy);
    let request = format!(
        "GET http://{authority}/path HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    read_reply(&mut stream, false)
}

/// An admin GET.
fn admin_get(admin: SocketAddr, path: &str) -> Reply {
    let mut stream = connect(admin);
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    read_reply(&mut stream, false)
}

/// A CONNECT tunnel through the HTTP proxy, after its `200`.
fn connect_tunnel(proxy: SocketAddr, authority: &str) -> TcpStream {
    let mut stream = connect(proxy);
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let reply = read_reply(&mut stream, true);
    assert_eq!(reply.status, 200, "CONNECT {authority}: {reply:?}");
    stream
}

/// A SOCKS5 CONNECT tunnel (no authentication, IPv4 target), after its success reply.
fn socks_tunnel(proxy: SocketAddr, target: SocketAddr) -> TcpStream {
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
fn echo(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(payload).expect("write into the tunnel");
    let mut back = vec![0; payload.len()];
    stream.read_exact(&mut back).expect("read from the tunnel");
    assert_eq!(back, payload);
}

/// Whether a new TCP connection to `addr` is refused.
fn refused(addr: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Ok(_) => false,
        Err(e) => e.kind() == ErrorKind::ConnectionRefused,
    }
}

/// Polls until new connections to `addr` are refused, failing the test after `DEADLINE`.
fn wait_refused(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !refused(addr) {
        assert!(
            Instant::now() < deadline,
            "{what} at {addr} still accepts connections"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Startup
// ---------------------------------------------------------------------------------------------

#[test]
fn startup_logs_one_line_per_listener_and_sigint_stops_it() {
    let dir = Dir::new();
    let dns = fake_dns();
    let config = dir.write(
        "p.toml",
        &policy_text(&dns, "", "\"allowed.test\" = \"allow\""),
    );
    let mut serve = Serve::start(&config, &[], &dir.runtime());

    let socks = serve.socks.expect("socks5 startup line");
    let addrs = [serve.http, socks, serve.admin];
    for addr in addrs {
        assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST, "{addr}");
        assert_ne!(addr.port(), 0, "the log names the bound port, not :0");
    }
    assert!(
        addrs[0] != addrs[1] && addrs[1] != addrs[2] && addrs[0] != addrs[2],
        "{addrs:?}"
    );
    let stderr = serve.stderr();
    let startup: Vec<&str> = stderr.lines().filter(|l| l.contains("listening")).collect();
    assert_eq!(startup.len(), 3, "one line per listener:\n{stderr}");
    assert!(
        startup[1].contains("udp=\"with UDP\""),
        "the SOCKS5 line says whether UDP is on: {}",
        startup[1]
    );
    assert!(
        stderr.lines().all(|l| l.contains(" INFO ")),
        "nothing but info lines at startup:\n{stderr}"
    );
    // Each listener is the one its line names.
    assert_eq!(admin_get(serve.admin, "/health").status, 200);
    let denied = proxy_get(serve.http, "denied.test");
    assert_eq!(denied.status, 403);
    assert_eq!(denied.header("x-proxy-reason"), Some("not-allowed"));
    let mut s = connect(socks);
    s.write_all(&[5, 1, 0]).unwrap();
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).unwrap();
    assert_eq!(choice, [5, 0]);
    drop(s);

    serve.signal(Signal::SIGINT);
    let status = serve.expect_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", serve.stderr());
    let stderr = serve.stderr();
    assert!(
        stderr.contains("shutting down: no longer accepting connections"),
        "{stderr}"
    );
    assert!(!stderr.contains("deadline reached"), "{stderr}");
}

/// Once the startup lines are out, a supervisor may signal at once: SIGHUP must reload and
/// SIGTERM must drain, never meet the default action (which kills the process).
#[test]
fn signals_right_after_the_startup_lines_are_handled() {
    let dir = Dir::new();
    let dns = fake_dns();
    let config = dir.write(
        "p.toml",
        &policy_text(&dns, "", "\"allowed.test\" = \"allow\""),
    );
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(EPHEMERAL);
    for attempt in 1..=25 {
        for signal in [Signal::SIGHUP, Signal::SIGTERM] {
            let mut serve = Serve::spawn_with(command(&args, &dir.runtime()), false)
                .unwrap_or_else(|f| panic!("{f:?}"));
            serve.signal(signal);
            let status = if signal == Signal::SIGHUP {
                let reloaded = serve.try_wait_for_line(|l| l.contains("policy reloaded"), DEADLINE);
                let status = serve.try_wait();
                assert!(
                    reloaded.is_some() && status.is_none(),
                    "attempt {attempt}: SIGHUP right after startup: {status:?}\n{}",
                    serve.stderr()
                );
                serve.signal(Signal::SIGTERM);
                serve.expect_exit(DEADLINE)
            } else {
                serve.expect_exit(DEADLINE)
            };
            assert_eq!(
                status.code(),
                Some(0),
                "attempt {attempt}: {signal} right after startup: {status:?}\n{}",
                serve.stderr()
            );
        }
    }
}

#[test]
fn json_log_format_startup_lines() {
    let dir = Dir::new();
    let dns = fake_dns();
    let config = dir.write(
        "p.toml",
        &policy_text(&dns, "", "\"allowed.test\" = \"allow\""),
    );
    let mut args = vec!["--config", config.to_str().unwrap(), "--log-format", "json"];
    args.extend_from_slice(EPHEMERAL);
    let mut child = KillOnDrop(command(&args, &dir.runtime()).spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut messages = Vec::new();
    let (send, recv) = mpsc::channel();
    thread::spawn(move || {
        for _ in 0..3 {
            match lines.next() {
                Some(Ok(line)) => {
                    let _ = send.send(line);
                }
                _ => return,
            }
        }
    });
    for _ in 0..3 {
        let line = recv
            .recv_timeout(DEADLINE)
            .expect("three JSON startup lines");
        let value: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        assert_eq!(value["level"], "INFO", "{line}");
        let addr: SocketAddr = value["fields"]["addr"].as_str().unwrap().parse().unwrap();
        assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(addr.port(), 0);
        messages.push(value["fields"]["message"].as_str().unwrap().to_string());
    }
    assert_eq!(messages[0], "http proxy listening");
    assert_eq!(messages[1], "socks5 proxy listening");
    assert!(
        messages[2].starts_with("admin API listening"),
        "{messages:?}"
    );
}

/// Kills the child's process group when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(-(self.0.id() as i32)), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

#[test]
fn socks5_disabled_means_no_socks5_listener_line() {
    let dir = Dir::new();
    let dns = fake_dns();
    let config = dir.write(
        "p.toml",
        &policy_text(
            &dns,
            "enable_socks5 = false",
            "\"allowed.test\" = \"allow\"",
        ),
    );
    let mut serve = Serve::start(&config, &[], &dir.runtime());
    let stderr = serve.stderr();
    assert_eq!(serve.socks, None, "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.contains("listening")).count(),
        2,
        "{stderr}"
    );
    serve.signal(Signal::SIGTERM);
    assert_eq!(serve.expect_exit(DEADLINE).code(), Some(0));
}

/// Without listen flags the listeners come from the file (`proxy_url`, `socks_url`,
/// `admin_url`); the requirements' `http_port`/`socks_port` win over both the file and the
/// `--http-listen` flag.
#[test]
fn listeners_come_from_the_config_and_requirements_ports_win() {
    let dir = Dir::new();
    let dns = fake_dns();
    for _ in 0..5 {
        let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < ports.len() {
            continue;
        }
        let listeners = format!(
            "proxy_url = \"http://127.0.0.1:{}\"\nsocks_url = \"socks5://127.0.0.1:{}\"\n\
             admin_url = \"http://127.0.0.1:{}\"",
            ports[0], ports[1], ports[2]
        );
        let config = dir.write(
            "p.toml",
            &policy_text(&dns, &listeners, "\"allowed.test\" = \"allow\""),
        );
        let config = config.to_str().unwrap();

        // The file alone.
        let serve = Serve::spawn(command(&["--config", config], &dir.runtime()));
        let mut serve = match serve {
            Ok(serve) => serve,
            Err(f) if f.code == Some(1) && f.stderr.contains("cannot listen") => continue,
            Err(f) => panic!("{f:?}"),
        };
        let want = |p: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
        assert_eq!(serve.http, want(ports[0]));
        assert_eq!(serve.socks, Some(want(ports[1])));
        assert_eq!(serve.admin, want(ports[2]));
        serve.signal(Signal::SIGTERM);
        assert_eq!(serve.expect_exit(DEADLINE).code(), Some(0));
        drop(serve);

        // Requirements ports beat the file and the flag.
        let requirements = dir.write(
            "requirements.toml",
            &format!(
                "[experimental_network]\nhttp_port = {}\nsocks_port = {}\n",
                ports[3], ports[4]
            ),
        );
        let args = [
            "--config",
            config,
            "--requirements",
            requirements.to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:0",
        ];
        let mut serve = match Serve::spawn(command(&args, &dir.runtime())) {
            Ok(serve) => serve,
            Err(f) if f.code == Some(1) && f.stderr.contains("cannot listen") => continue,
            Err(f) => panic!("{f:?}"),
        };
        assert_eq!(serve.http, want(ports[3]));
        assert_eq!(serve.socks, Some(want(ports[4])));
        assert_eq!(serve.admin, want(ports[2]));
        serve.signal(Signal::SIGTERM);
        assert_eq!(serve.expect_exit(DEADLINE).code(), Some(0));
        return;
    }
    panic!("no free ports after 5 attempts");
}

#[test]
fn disabled_policy_exits_2_with_one_line() {
    let dir = Dir::new();
    let dns = fake_dns();
    let native = dir.write(
        "native.toml",
        &policy_text(&dns, "", "\"allowed.test\" = \"allow\"")
            .replace("enabled = true", "enabled = false"),
    );
    // A Codex config.toml without `enabled` is disabled by default.
    let codex = dir.write(
        "config.toml",
        "[features.network_proxy]\nallowed_domains = [\"allowed.test\"]\n",
    );
    for file in [native, codex] {
        let mut args = vec!["--config", file.to_str().unwrap()];
        args.extend_from_slice(EPHEMERAL);
        let (code, stderr) = start_failure(&args, &dir.runtime());
        assert_eq!(code, 2, "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains("not enabled"), "{stderr}");
        assert!(stderr.contains("refusing to start"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Limits a listener could not be built with are config errors at their line: before, a huge
/// `max_connections` panicked in `serve` and a huge `max_udp_associations` killed the SOCKS5
/// task after its startup line, so the proxy looked healthy while refusing every client.
#[test]
fn out_of_range_limits_exit_2_with_the_line_not_a_panic() {
    let dir = Dir::new();
    let dns = fake_dns();
    for (key, value, col) in [
        ("max_connections", "18446744073709551615", 19),
        ("max_udp_associations", "2305843009213693952", 24),
        ("header_timeout_ms", "18446744073709551615", 21),
        ("idle_timeout_ms", "18446744073709551615", 19),
    ] {
        let text = format!(
            "{}\n[limits]\n{key} = {value}\n",
            policy_text(
                &dns,
                "enable_socks5_udp = true",
                "\"allowed.test\" = \"allow\""
            )
        );
        let file = dir.write("limits.toml", &text);
        let line = text.lines().position(|l| l.starts_with(key)).unwrap() + 1;
        let mut args = vec!["--config", file.to_str().unwrap()];
        args.extend_from_slice(EPHEMERAL);
        let (code, stderr) = start_failure(&args, &dir.runtime());
        assert!(!stderr.contains("panicked"), "{key}: {stderr}");
        assert_eq!(code, 2, "{key}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!(
                "error: {}:{line}:{col}: `[limits] {key}` must be 1-{}",
                file.display(),
                if key.ends_with("_ms") {
                    "604800000"
                } else {
                    "1000000"
                }
            )
        );
    }
}

/// `serve` warns at start when `[admin] token_file` can be read by the group or others.
#[test]
fn a_token_file_others_can_read_is_a_startup_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    let dns = fake_dns();
    let token = dir.write("token", "s3cret-token\n");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
    let extra = format!("[admin]\ntoken_file = {:?}\n", token.display().to_string());
    let text = format!(
        "{}{extra}",
        policy_text(&dns, "", "\"allowed.test\" = \"allow\"")
    );
    let policy = dir.write("policy.toml", &text);
    let mut serve = Serve::start(&policy, &[], &dir.runtime());
    let stderr = serve.stderr();
    let warning = stderr
        .lines()
        .find(|l| l.contains("readable by group or others"))
        .unwrap_or_else(|| panic!("no token file warning:\n{stderr}"));
    assert!(warning.contains(" WARN "), "{warning}");
    assert!(warning.contains("(mode 0640)"), "{warning}");
    assert!(
        !stderr.contains("s3cret-token"),
        "the token was logged:\n{stderr}"
    );
    serve.signal(Signal::SIGTERM);
    assert_eq!(serve.expect_exit(DEADLINE).code(), Some(0));
}

#[test]
fn non_loopback_listeners_need_the_dangerous_key_and_exit_2() {
    let dir = Dir::new();
    let dns = fake_dns();
    let plain = dir.write(
        "p.toml",
        &policy_text(&dns, "", "\"allowed.test\" = \"allow\""),
    );
    let plain = plain.to_str().unwrap();
    let port = free_port();
    let any = format!("0.0.0.0:{port}");
    let loopback = format!("127.0.0.1:{}", free_port());
    let cases = [
        (
            "--http-listen",
            "proxy_url",
            "dangerously_allow_non_loopback_proxy",
        ),
        (
            "--socks-listen",
            "socks_url",
            "dangerously_allow_non_loopback_proxy",
        ),
        (
            "--admin-listen",
            "admin_url",
            "dangerously_allow_non_loopback_admin",
        ),
    ];
    for (flag, key, dangerous) in cases {
        // The other listeners stay on loopback (ephemeral) so only `flag` is at fault.
        let mut args = vec!["--config", plain];
        for other in ["--http-listen", "--socks-listen", "--admin-listen"] {
            if other != flag {
                args.extend([other, "127.0.0.1:0"]);
            }
        }
        args.extend([flag, any.as_str()]);
        let (code, stderr) = start_failure(&args, &dir.runtime());
        assert_eq!(code, 2, "{flag}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{flag}: {stderr}");
        assert_eq!(
            stderr,
            format!(
                "error: {flag}: `{key}` listens on non-loopback address {any}; \
                 set `{dangerous} = true` to allow it"
            )
        );
    }

    // The same from a file: the error names the file, line and column.
    let from_file = dir.write(
        "nl.toml",
        &policy_text(
            &dns,
            &format!("proxy_url = \"http://{any}\""),
            "\"allowed.test\" = \"allow\"",
        ),
    );
    let args = [
        "--config",
        from_file.to_str().unwrap(),
        "--socks-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let (code, stderr) = start_failure(&args, &dir.runtime());
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let at = format!("error: {}:3:13: ", from_file.display());
    assert!(stderr.starts_with(&at), "{stderr}");
    assert!(
        stderr.contains("dangerously_allow_non_loopback_proxy"),
        "{stderr}"
    );

    // With a Unix socket allowed, even the dangerous key does not open a non-loopback listener.
    let unix = dir.write(
        "unix.toml",
        &policy_text(
            &dns,
            "dangerously_allow_non_loopback_proxy = true\n\
             [unix_sockets]\n\"/tmp/egress-proxy-test.sock\" = \"allow\"",
            "\"allowed.test\" = \"allow\"",
        ),
    );
    let args = [
        "--config",
        unix.to_str().unwrap(),
        "--http-listen",
        any.as_str(),
        "--socks-listen",
        loopback.as_str(),
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let (code, stderr) = start_failure(&args, &dir.runtime());
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("listeners stay on loopback while Unix sockets are allowed"),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_exits_1_with_cannot_listen() {
    let dir = Dir::new();
    let dns = fake_dns();
    let config = dir.write(
        "p.toml",
        &policy_text(&dns, "", "\"allowed.test\" = \"allow\""),
    );
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    for (flag, key) in [
        ("--http-listen", "proxy_url"),
        ("--socks-listen", "socks_url"),
        ("--admin-listen", "admin_url"),
    ] {
        let mut args = vec!["--config", config.to_str().unwrap()];
        for other in ["--http-listen", "--socks-listen", "--admin-listen"] {
            let addr = if other == flag {
                taken.as_str()
            } else {
                "127.0.0.1:0"
            };
            args.extend([other, addr]);
        }
        let (code, stderr) = start_failure(&args, &dir.runtime());
        assert_eq!(code, 1, "{flag}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| !l.contains(" INFO ")).collect();
        assert_eq!(errors.len(), 1, "{flag}: {stderr}");
        assert!(
            errors[0].starts_with(&format!("error: cannot listen on {taken} ({key}): ")),
            "{flag}: {stderr}"
        );
        assert!(
            errors[0].contains("Address already in use"),
            "{flag}: {stderr}"
        );
    }
    drop(held);
}

// ---------------------------------------------------------------------------------------------
// SIGHUP reload
// ---------------------------------------------------------------------------------------------

#[test]
fn sighup_reload_tightens_the_policy_and_a_broken_file_keeps_it() {
    let dir = Dir::new();
    let dns = fake_dns();
    let origin = HttpOrigin::start();
    let at = |host: &str| format!("{host}:{}", origin.addr.port());
    let policy = dir.write(
        "policy.toml",
        &policy_text(
            &dns,
            "",
            "\"allowed.test\" = \"allow\"\n\"other.test\" = \"allow\"\n\"denied.test\" = \"deny\"",
        ),
    );
    let mut serve = Serve::start(&policy, &[], &dir.runtime());

    let ok = proxy_get(serve.http, &at("allowed.test"));
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.body.starts_with("origin saw GET"), "{ok:?}");
    assert_eq!(origin.request_count(), 1);

    // Tighten: allowed.test is now denied by a rule; other.test stays allowed.
    std::fs::write(
        &policy,
        policy_text(
            &dns,
            "",
            "\"allowed.test\" = \"deny\"\n\"other.test\" = \"allow\"",
        ),
    )
    .unwrap();
    serve.signal(Signal::SIGHUP);
    // The reload runs on the server's own task: wait until the new policy decides.
    let deadline = Instant::now() + DEADLINE;
    let denied = loop {
        let reply = proxy_get(serve.http, &at("allowed.test"));
        if reply.status != 200 || Instant::now() >= deadline {
            break reply;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(denied.status, 403, "{denied:?}\n{}", serve.stderr());
    assert_eq!(denied.header("x-proxy-reason"), Some("deny-rule"));
    assert_eq!(denied.header("x-proxy-error"), Some("blocked-by-denylist"));
    assert!(denied.body.contains("allowed.test"), "{denied:?}");
    serve.wait_for_line("policy reloaded");
    let before = origin.request_count();
    assert_eq!(proxy_get(serve.http, &at("other.test")).status, 200);
    assert_eq!(
        origin.request_count(),
        before + 1,
        "only other.test arrived"
    );

    // Broken: an unknown key. Had it been applied, allowed.test would pass and other.test
    // would be denied.
    let broken = format!(
        "enabled = true\nbogus_key = 1\n{}",
        policy_text(
            &dns,
            "",
            "\"allowed.test\" = \"allow\"\n\"other.test\" = \"deny\""
        )
        .trim_start_matches("enabled = true\n")
    );
    std::fs::write(&policy, broken).unwrap();
    serve.signal(Signal::SIGHUP);
    let failed = serve.wait_for_line("reload failed; keeping the running policy");
    assert!(failed.contains(" ERROR "), "{failed}");
    let location = format!("{}:2:1: ", policy.display());
    assert!(
        failed.contains(&location),
        "the error names {location:?}: {failed}"
    );
    assert!(failed.contains("bogus_key"), "{failed}");
    let still = proxy_get(serve.http, &at("allowed.test"));
    assert_eq!(still.status, 403);
    assert_eq!(still.header("x-proxy-reason"), Some("deny-rule"));
    assert_eq!(proxy_get(serve.http, &at("other.test")).status, 200);

    // A file that switches the policy off is refused like a broken one (start-up refuses it).
    std::fs::write(
        &policy,
        policy_text(
            &dns,
            "",
            "\"allowed.test\" = \"allow\"\n\"other.test\" = \"deny\"",
        )
        .replace("enabled = true", "enabled = false"),
    )
    .unwrap();
    serve.signal(Signal::SIGHUP);
    let failed = serve.wait_for_line("reload failed; keeping the running policy");
    assert!(failed.contains("not enabled"), "{failed}");
    let still = proxy_get(serve.http, &at("allowed.test"));
    assert_eq!(still.header("x-proxy-reason"), Some("deny-rule"));
    assert_eq!(proxy_get(serve.http, &at("other.test")).status, 200);

    // A syntax error and a missing file are refused the same way.
    std::fs::write(&policy, "[domains\n").unwrap();
    serve.signal(Signal::SIGHUP);
    let failed = serve.wait_for_line("reload failed; keeping the running policy");
    assert!(
        failed.contains(&format!("{}:1:", policy.display())),
        "{failed}"
    );
    std::fs::remove_file(&policy).unwrap();
    serve.signal(Signal::SIGHUP);
    let failed = serve.wait_for_line("reload failed; keeping the running policy");
    assert!(failed.contains(&policy.display().to_string()), "{failed}");
    let still = proxy_get(serve.http, &at("allowed.test"));
    assert_eq!(still.status, 403);
    assert_eq!(still.header("x-proxy-reason"), Some("deny-rule"));
    assert_eq!(proxy_get(serve.http, &at("other.test")).status, 200);
    assert!(
        serve.try_wait().is_none(),
        "a bad reload must not stop serve"
    );

    // The reload counters of this process: one ok, four errors.
    let metrics = admin_get(serve.admin, "/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(
        sample(&metrics.body, "egress_reloads_total", &[("result", "ok")]),
        Some(1.0),
        "{}",
        metrics.body
    );
    assert_eq!(
        sample(
            &metrics.body,
            "egress_reloads_total",
            &[("result", "error")]
        ),
        Some(4.0),
        "{}",
        metrics.body
    );

    // A good file again is picked up again.
    std::fs::write(
        &policy,
        policy_text(&dns, "", "\"allowed.test\" = \"allow\""),
    )
    .unwrap();
    serve.signal(Signal::SIGHUP);
    serve.wait_for_line("policy reloaded");
    assert_eq!(proxy_get(serve.http, &at("allowed.test")).status, 200);
    let other = proxy_get(serve.http, &at("other.test"));
    assert_eq!(other.status, 403);
    assert_eq!(other.header("x-proxy-reason"), Some("not-allowed"));

    serve.signal(Signal::SIGTERM);
    assert_eq!(serve.expect_exit(DEADLINE).code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// SIGTERM drain
// ---------------------------------------------------------------------------------------------

/// A policy that allows the IP literal 127.0.0.1 (an exact IP allow grants the local exception).
fn loopback_policy(dir: &Dir, dns: &FakeDns, domains: &str) -> PathBuf {
    dir.write(
        "policy.toml",
        &format!(
            "enabled = true\n[domains]\n\"127.0.0.1\" = \"allow\"\n{domains}\n\n\
             [dns]\nservers = [\"{}\"]\ntimeout_ms = 1000\n",
            dns.addr
        ),
    )
}

#[test]
fn sigterm_stops_accepting_and_drains_open_tunnels() {
    let dir = Dir::new();
    let dns = fake_dns();
    let echo_server = TcpEcho::start();
    let origin = HttpOrigin::start();
    let config = loopback_policy(&dir, &dns, "");
    let mut serve = Serve::start(&config, &[], &dir.runtime());
    let socks = serve.socks.unwrap();

    let mut http_tunnel = connect_tunnel(serve.http, &echo_server.addr.to_string());
    echo(&mut http_tunnel, b"before, over CONNECT");
    let mut socks_tunnel = socks_tunnel(socks, echo_server.addr);
    echo(&mut socks_tunnel, b"before, over SOCKS5");
    // An idle keep-alive forward-proxy connection must not hold up the shutdown.
    let mut keep_alive = connect(serve.http);
    let authority = origin.addr.to_string();
    keep_alive
        .write_all(
            format!("GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    assert_eq!(read_reply(&mut keep_alive, false).status, 200);

    let sent = Instant::now();
    serve.signal(Signal::SIGTERM);
    serve.wait_for_line("shutting down: no longer accepting connections");
    wait_refused(serve.http, "the HTTP proxy");
    wait_refused(socks, "the SOCKS5 proxy");
    wait_refused(serve.admin, "the admin API");

    // The idle keep-alive connection is closed by the proxy.
    let mut rest = Vec::new();
    match keep_alive.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest)),
        Err(e) => assert_ne!(
            e.kind(),
            ErrorKind::WouldBlock,
            "the idle connection stayed open"
        ),
    }

    // The tunnels still work, and the process waits for them.
    echo(&mut http_tunnel, b"during the drain, over CONNECT");
    echo(&mut socks_tunnel, b"during the drain, over SOCKS5");
    assert!(serve.try_wait().is_none(), "exited with tunnels open");
    drop(http_tunnel);
    echo(&mut socks_tunnel, b"one tunnel left");
    thread::sleep(Duration::from_millis(200));
    assert!(
        serve.try_wait().is_none(),
        "exited with the SOCKS5 tunnel open:\n{}",
        serve.stderr()
    );
    drop(socks_tunnel);

    // The last tunnel closed: out well before the grace period.
    let status = serve.expect_exit(GRACE / 2);
    assert_eq!(status.code(), Some(0), "{}", serve.stderr());
    assert!(sent.elapsed() < GRACE / 2, "{:?}", sent.elapsed());
    let stderr = serve.stderr();
    assert!(!stderr.contains("deadline reached"), "{stderr}");
    assert_eq!(echo_server.connections(), 2);
}

#[test]
fn sigterm_gives_up_on_a_tunnel_that_stays_open_after_the_grace() {
    let dir = Dir::new();
    let dns = fake_dns();
    let echo_server = TcpEcho::start();
    let config = loopback_policy(&dir, &dns, "");
    let mut serve = Serve::start(&config, &[], &dir.runtime());

    let mut tunnel = connect_tunnel(serve.http, &echo_server.addr.to_string());
    echo(&mut tunnel, b"before");
    let sent = Instant::now();
    serve.signal(Signal::SIGTERM);
    serve.wait_for_line("shutting down: no longer accepting connections");
    wait_refused(serve.http, "the HTTP proxy");

    // Not out in the first second; the tunnel still echoes.
    thread::sleep(Duration::from_secs(1).saturating_sub(sent.elapsed()));
    assert!(serve.try_wait().is_none(), "exited within a second");
    echo(&mut tunnel, b"one second into the drain");

    // Out on its own after the grace, with a warning, and exit status 0.
    let margin = Duration::from_secs(5);
    let status = serve.expect_exit(GRACE + margin - sent.elapsed().min(GRACE));
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "{}", serve.stderr());
    assert!(
        took >= GRACE - Duration::from_millis(500),
        "exited after {took:?}, before the {GRACE:?} grace"
    );
    assert!(took <= GRACE + margin, "{took:?}");
    let warning = serve.wait_for_line("shutdown deadline reached");
    assert!(warning.contains("open=1"), "{warning}");

    // The tunnel was closed with the process.
    tunnel.write_all(b"x").ok();
    let mut buf = [0u8; 16];
    match tunnel.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "the tunnel still answers"),
        Err(e) => assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "the tunnel is still open"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Open tunnels after a reload
// ---------------------------------------------------------------------------------------------

/// A policy for the tunnel re-decision test: the fake DNS names, the literal 127.0.0.1, and
/// `allow_local_binding` as given (the names resolve to 127.0.0.1, so it decides them).
fn tunnel_policy(dns: &FakeDns, allow_local_binding: bool, domains: &str) -> String {
    format!(
        "enabled = true\nallow_local_binding = {allow_local_binding}\n[domains]\n\
         \"127.0.0.1\" = \"allow\"\n{domains}\n\n\
         [dns]\nservers = [\"{}\"]\ntimeout_ms = 1000\n",
        dns.addr
    )
}

/// Waits for the proxy to close `tunnel`: EOF (or a reset) well within the read timeout.
fn expect_closed(tunnel: &mut TcpStream, what: &str) {
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
fn admin_post(admin: SocketAddr, runtime_dir: &Path, path: &str, body: &str) -> Reply {
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

/// Issue 11 item 15: a reload, or `POST /mode`, re-decides every open CONNECT and SOCKS5
/// tunnel (the name and the address it was pinned to) and closes the ones the new policy
/// denies, each with an audit close line saying why; the others live on.
#[test]
fn reload_and_mode_switch_close_the_open_tunnels_they_deny() {
    let dir = Dir::new();
    let dns = fake_dns();
    let echo_server = TcpEcho::start();
    let port = echo_server.addr.port();
    let domains = "\"allowed.test\" = \"allow\"\n\"other.test\" = \"allow\"";
    let config = dir.write("policy.toml", &tunnel_policy(&dns, true, domains));
    let audit = dir.path("audit.jsonl");
    let mut serve = Serve::start(
        &config,
        &["--audit-log", audit.to_str().unwrap()],
        &dir.runtime(),
    );

    // Denied by a rule after the reload.
    let mut by_rule = connect_tunnel(serve.http, &format!("allowed.test:{port}"));
    echo(&mut by_rule, b"allowed.test");
    // Still allowed by name, but pinned to 127.0.0.1, which the new policy no longer opens.
    let mut by_address = connect_tunnel(serve.http, &format!("other.test:{port}"));
    echo(&mut by_address, b"other.test");
    // An exact IP allow: survives the reload, not the switch to limited mode.
    let mut survivor = socks_tunnel(serve.socks.unwrap(), echo_server.addr);
    echo(&mut survivor, b"127.0.0.1");

    let tightened = "\"allowed.test\" = \"deny\"\n\"other.test\" = \"allow\"";
    std::fs::write(&config, tunnel_policy(&dns, false, tightened)).unwrap();
    serve.signal(Signal::SIGHUP);
    serve.wait_for_line("policy reloaded");
    expect_closed(&mut by_rule, "the tunnel to allowed.test");
    expect_closed(&mut by_address, "the tunnel to other.test");
    echo(&mut survivor, b"still allowed after the reload");

    let reply = admin_post(
        serve.admin,
        &dir.runtime(),
        "/mode",
        r#"{"mode": "limited"}"#,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    expect_closed(&mut survivor, "the SOCKS5 tunnel in limited mode");

    let metrics = admin_get(serve.admin, "/metrics").body;
    let revoked = |protocol: &str, reason: &str| {
        sample(
            &metrics,
            "egress_tunnels_revoked_total",
            &[("protocol", protocol), ("reason", reason)],
        )
    };
    assert_eq!(revoked("connect", "deny-rule"), Some(1.0), "{metrics}");
    assert_eq!(revoked("connect", "dns-non-public:loopback"), Some(1.0));
    assert_eq!(revoked("socks-tcp", "method-not-allowed"), Some(1.0));

    // The close lines are written as the relays end: poll for all three.
    let deadline = Instant::now() + DEADLINE;
    let closes = loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let closes: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["event"] == "close")
            .collect();
        if closes.len() >= 3 || Instant::now() >= deadline {
            break closes;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let close = |host: &str, protocol: &str| -> &Value {
        closes
            .iter()
            .find(|v| v["host"] == host && v["protocol"] == protocol)
            .unwrap_or_else(|| panic!("no close line for {host}: {closes:#?}"))
    };
    let line = close("allowed.test", "connect");
    assert_eq!(line["closed_by"], "policy-reload", "{line}");
    assert_eq!(line["reason"], "deny-rule", "{line}");
    assert_eq!(line["rule"], "allowed.test", "{line}");
    assert_eq!(line["bytes_up"], 12, "{line}");
    let line = close("other.test", "connect");
    assert_eq!(line["closed_by"], "policy-reload", "{line}");
    assert_eq!(line["reason"], "dns-non-public:loopback", "{line}");
    let line = close("127.0.0.1", "socks-tcp");
    assert_eq!(line["closed_by"], "policy-reload", "{line}");
    assert_eq!(line["reason"], "method-not-allowed", "{line}");
    assert_eq!(line["port"], port, "{line}");

    serve.signal(Signal::SIGTERM);
    assert_eq!(serve.expect_exit(DEADLINE).code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// Audit log
// ---------------------------------------------------------------------------------------------

/// An origin for one connection: reads exactly `up` bytes, answers `down` bytes, then waits for
/// the client's EOF and closes, so the tunnel's byte counts differ each way.
fn sized_origin(up: usize, down: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let mut got = vec![0; up];
        if stream.read_exact(&mut got).is_err() {
            return;
        }
        if stream.write_all(&vec![b'd'; down]).is_err() {
            return;
        }
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    });
    addr
}

#[test]
fn audit_log_file_has_decisions_and_the_tunnel_close() {
    const UP: usize = 1000;
    const DOWN: usize = 300;
    let dir = Dir::new();
    let dns = fake_dns();
    let config = loopback_policy(&dir, &dns, "\"denied.test\" = \"deny\"");
    let audit = dir.path("audit.jsonl");
    let mut serve = Serve::start(
        &config,
        &["--audit-log", audit.to_str().unwrap()],
        &dir.runtime(),
    );
    let target = sized_origin(UP, DOWN);

    let mut tunnel = connect_tunnel(serve.http, &target.to_string());
    tunnel.write_all(&[b'u'; UP]).unwrap();
    let mut down = vec![0; DOWN];
    tunnel.read_exact(&mut down).unwrap();
    tunnel.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    tunnel.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(tunnel);

    // A denied request carrying a query string and a secret header value.
    let mut stream = connect(serve.http);
    stream
        .write_all(
            b"GET http://denied.test:8080/x?token=s3cr3t-query HTTP/1.1\r\n\
              Host: denied.test:8080\r\nAuthorization: Bearer s3cr3t-header\r\n\
              Connection: close\r\n\r\n",
        )
        .unwrap();
    let denied = read_reply(&mut stream, false);
    assert_eq!(denied.status, 403);
    assert_eq!(denied.header("x-proxy-reason"), Some("deny-rule"));

    // The close line is written when the relay ends, after the client saw EOF: poll for it.
    let deadline = Instant::now() + DEADLINE;
    let text = loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let lines = text.lines().count();
        if lines >= 3 || Instant::now() >= deadline {
            break text;
        }
        thread::sleep(Duration::from_millis(20));
    };
    serve.signal(Signal::SIGTERM);
    assert_eq!(serve.expect_exit(DEADLINE).code(), Some(0));
    let after_exit = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(text, after_exit, "nothing more was written");

    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    let events =
        |kind: &str| -> Vec<&Value> { lines.iter().filter(|v| v["event"] == kind).collect() };
    let decisions = events("decision");
    let closes = events("close");
    assert_eq!(decisions.len(), 2, "{text}");
    assert_eq!(closes.len(), 1, "{text}");
    assert_eq!(lines.len(), 3, "{text}");

    let allowed = decisions[0];
    assert_eq!(allowed["protocol"], "connect", "{text}");
    assert_eq!(allowed["verdict"], "allow");
    assert_eq!(allowed["reason"], "allowed");
    assert_eq!(allowed["rule"], "127.0.0.1");
    assert_eq!(allowed["host"], "127.0.0.1");
    assert_eq!(allowed["port"], target.port());
    assert_eq!(allowed["ip"], "127.0.0.1");
    assert_eq!(allowed["class"], "loopback");
    assert!(allowed["time"].is_string(), "{allowed}");
    let client: SocketAddr = allowed["client"].as_str().unwrap().parse().unwrap();
    assert_eq!(client.ip(), Ipv4Addr::LOCALHOST);

    let blocked = decisions[1];
    assert_eq!(blocked["protocol"], "http", "{text}");
    assert_eq!(blocked["verdict"], "block");
    assert_eq!(blocked["reason"], "deny-rule");
    assert_eq!(blocked["rule"], "denied.test");
    assert_eq!(blocked["host"], "denied.test");
    assert_eq!(blocked["port"], 8080);
    assert_ne!(blocked["id"], allowed["id"]);

    let close = closes[0];
    assert_eq!(close["id"], allowed["id"], "{text}");
    assert_eq!(close["protocol"], "connect");
    assert_eq!(close["host"], "127.0.0.1");
    assert_eq!(close["port"], target.port());
    assert_eq!(close["client"], allowed["client"]);
    assert_eq!(close["bytes_up"], UP as u64, "{close}");
    assert_eq!(close["bytes_down"], DOWN as u64, "{close}");
    assert!(close["duration_ms"].is_u64(), "{close}");
    assert_eq!(close["idle_timeout"], false);

    // Never query strings or header values, in the audit log or the text log; and the audit
    // lines go to the file, not to stderr.
    let stderr = serve.stderr();
    for secret in ["s3cr3t", "token="] {
        assert!(!text.contains(secret), "{secret} in the audit log: {text}");
        assert!(!stderr.contains(secret), "{secret} in the log: {stderr}");
    }
    assert!(!stderr.contains("\"event\""), "{stderr}");
}

/// With wildcard listeners the host's own interface addresses reach the proxy too: each of them
/// on a listener port is a self-connection, also for an address added before a reload. Runs in
/// a loopback-only namespace whose `lo` carries the extra addresses a LAN interface would.
#[test]
fn wildcard_listeners_refuse_the_hosts_own_addresses() {
    let dir = Dir::new();
    let config = dir.write(
        "wildcard.toml",
        "proxy_url = 'http://0.0.0.0:3128'\n\
         socks_url = 'socks5://[::]:1080'\n\
         admin_url = 'http://127.0.0.1:8080'\n\
         dangerously_allow_non_loopback_proxy = true\n\
         allowed_domains = ['10.254.0.1', '10.254.0.2', 'fd54::1']\n",
    );
    let script = r#"
ip addr add 10.254.0.1/32 dev lo
ip -6 addr add fd54::1/128 dev lo nodad
"$BIN" serve --config "$CONFIG" 2>"$DIR/serve.log" &
pid=$!
connect() {
  python3 - "$@" <<'PY'
import socket, sys, time
host, port = sys.argv[1], sys.argv[2]
for _ in range(100):
    try:
        s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
        break
    except OSError:
        time.sleep(0.05)
s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(4096)
    if not chunk:
        break
    head += chunk
lines = head.decode().split("\r\n")
reason = [l.split(":", 1)[1].strip() for l in lines if l.lower().startswith("x-proxy-reason:")]
print(f"{host}:{port} {lines[0].split(' ')[1]} {reason[0] if reason else '-'}")
PY
}
connect 10.254.0.1 3128
connect '[fd54::1]' 1080
connect 10.254.0.1 1080
connect 10.254.0.1 9
ip addr add 10.254.0.2/32 dev lo
kill -HUP $pid
for _ in $(seq 100); do grep -q 'policy reloaded' "$DIR/serve.log" && break; sleep 0.05; done
connect 10.254.0.2 3128
kill $pid
"#;
    let (code, out, err) = support::netns::run(
        script,
        &[
            ("BIN", BIN),
            ("CONFIG", config.to_str().unwrap()),
            ("DIR", dir.path("").to_str().unwrap()),
        ],
        60,
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "10.254.0.1:3128 403 self-connection",
            "[fd54::1]:1080 403 self-connection",
            "10.254.0.1:1080 403 self-connection",
            "10.254.0.1:9 502 -",
            "10.254.0.2:3128 403 self-connection",
        ],
        "stderr:\n{err}"
    );
}

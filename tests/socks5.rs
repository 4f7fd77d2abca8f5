//! The SOCKS5 listener through its real accept loop on 127.0.0.1, with a fake DNS server and
//! origins on loopback only. Denied destinations resolve (in the fake DNS) to loopback origins
//! that count what reaches them, so a policy bug shows up as a count, never as traffic
//! leaving the machine.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use egress_proxy::config::Limits;
use egress_proxy::policy::Mode;
use support::fake_dns::{Answer, FakeDns};
use support::harness::{self, AuditLog};
use support::origin::{HttpOrigin, TcpEcho, UdpEcho};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::time::{timeout, Instant};

/// The longest any single step may take before the test fails.
const STEP: Duration = Duration::from_secs(5);

const NOT_ALLOWED: u8 = 0x02;
const GENERAL_FAILURE: u8 = 0x01;
const HOST_UNREACHABLE: u8 = 0x04;

// ------------------------------------------------------------------------------------ harness

struct Setup {
    allow: Vec<String>,
    deny: Vec<String>,
    allow_local_binding: bool,
    mode: Mode,
    limits: Limits,
    udp: bool,
}

impl Default for Setup {
    /// Names answered by the fake DNS: `allowed.test`, `denied.test` (allowed and denied: deny
    /// wins), `unlisted.test` (no rule), `gone.test` (allowed, NXDOMAIN) and `udp.test`; all
    /// the others answer 127.0.0.1.
    fn default() -> Self {
        Setup {
            allow: strings(&["allowed.test", "denied.test", "gone.test", "udp.test"]),
            deny: strings(&["denied.test"]),
            allow_local_binding: true,
            mode: Mode::Full,
            limits: Limits {
                connect_timeout: Duration::from_secs(2),
                header_timeout: Duration::from_secs(3),
                ..Limits::default()
            },
            udp: true,
        }
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The harness proxy, seen from its SOCKS5 listener.
struct Proxy {
    /// The SOCKS5 listener.
    addr: SocketAddr,
    audit: AuditLog,
    proxy: harness::Proxy,
    _dns: FakeDns,
}

impl Proxy {
    /// (host, reason) of every denial recorded for `protocol`, oldest first.
    fn denials(&self, protocol: &str) -> Vec<(String, &'static str)> {
        self.proxy.denials(protocol)
    }
}

/// The setup's rules as policy-file keys, so a test can rewrite them and reload.
fn rules_toml(allow: &[String], deny: &[String]) -> String {
    format!("allowed_domains = {allow:?}\ndenied_domains = {deny:?}")
}

async fn start(setup: Setup) -> Proxy {
    let localhost = Answer::A(vec![Ipv4Addr::LOCALHOST]);
    let dns = FakeDns::start(vec![
        ("allowed.test", localhost.clone()),
        ("denied.test", localhost.clone()),
        ("unlisted.test", localhost.clone()),
        ("udp.test", localhost.clone()),
        ("gone.test", Answer::NxDomain),
    ]);
    let limits = setup.limits.clone();
    let proxy = harness::Proxy::builder()
        .toml(&rules_toml(&setup.allow, &setup.deny))
        .allow_local_binding(setup.allow_local_binding)
        .mode(setup.mode)
        .udp(setup.udp)
        .limits(|l| *l = limits)
        .dns(&dns)
        .start()
        .await;
    Proxy {
        addr: proxy.socks_addr(),
        audit: proxy.audit.clone(),
        proxy,
        _dns: dns,
    }
}

async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match timeout(STEP, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out: {what}"),
    }
}

// ------------------------------------------------------------------------------------- curl

struct Curl {
    exit: Option<i32>,
    body: String,
    stderr: String,
}

impl Curl {
    /// The SOCKS5 reply code curl reports: "Can't complete SOCKS5 connection to NAME. (CODE)".
    fn reply_code(&self) -> Option<u8> {
        let (_, tail) = self
            .stderr
            .split_once("Can't complete SOCKS5 connection to ")?;
        let (_, code) = tail.split_once(". (")?;
        code.split_once(')')?.0.parse().ok()
    }

    /// curl failed with CURLE_PROXY (97) because the proxy answered `code`.
    #[track_caller]
    fn assert_refused(&self, code: u8) {
        assert_eq!(self.exit, Some(97), "{}", self.stderr);
        assert_eq!(self.reply_code(), Some(code), "{}", self.stderr);
        assert!(self.body.is_empty(), "{}", self.body);
    }
}

/// Runs curl through the proxy. curl must be installed: a missing curl fails the test.
async fn curl(proxy_flag: &str, proxy: &Proxy, extra: &[&str], url: &str) -> Curl {
    let mut cmd = tokio::process::Command::new("curl");
    // No proxy settings from the environment may override the flag or bypass the proxy.
    for var in [
        "ALL_PROXY",
        "all_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(["-q", "-sS", "--max-time", "10"])
        .arg(proxy_flag)
        .arg(proxy.addr.to_string())
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = within("curl", cmd.output())
        .await
        .expect("curl must be installed to run these tests");
    Curl {
        exit: out.status.code(),
        body: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn curl_socks5_hostname_reaches_an_allowed_name() {
    let origin = HttpOrigin::start();
    let proxy = start(Setup::default()).await;
    let url = format!("http://allowed.test:{}/hello", origin.addr.port());
    let out = curl("--socks5-hostname", &proxy, &[], &url).await;
    assert_eq!(out.exit, Some(0), "{}", out.stderr);
    assert_eq!(out.body, "origin saw GET /hello body=0");
    assert_eq!(origin.request_count(), 1);
}

#[tokio::test]
async fn curl_socks5_resolving_locally_needs_the_address_allowed() {
    let origin = HttpOrigin::start();
    let port = origin.addr.port();
    let url = format!("http://allowed.test:{port}/local");
    // curl resolves the name itself and sends 127.0.0.1: the name rule does not cover it.
    let resolve = format!("allowed.test:{port}:127.0.0.1");
    let proxy = start(Setup::default()).await;
    let out = curl("--socks5", &proxy, &["--resolve", &resolve], &url).await;
    out.assert_refused(NOT_ALLOWED);
    assert_eq!(origin.request_count(), 0);

    let setup = Setup {
        allow: strings(&[&format!("127.0.0.1:{port}")]),
        ..Setup::default()
    };
    let proxy = start(setup).await;
    let out = curl("--socks5", &proxy, &["--resolve", &resolve], &url).await;
    assert_eq!(out.exit, Some(0), "{}", out.stderr);
    assert_eq!(out.body, "origin saw GET /local body=0");
    assert_eq!(origin.request_count(), 1);
}

#[tokio::test]
async fn curl_to_denied_and_unlisted_names_never_reaches_the_origin() {
    let origin = HttpOrigin::start();
    let proxy = start(Setup::default()).await;
    for name in ["denied.test", "unlisted.test"] {
        let url = format!("http://{name}:{}/", origin.addr.port());
        let out = curl("--socks5-hostname", &proxy, &[], &url).await;
        out.assert_refused(NOT_ALLOWED);
    }
    assert_eq!(origin.request_count(), 0);
    assert_eq!(
        proxy.denials("socks-tcp"),
        [
            ("denied.test".to_string(), "deny-rule"),
            ("unlisted.test".to_string(), "not-allowed")
        ]
    );
}

#[tokio::test]
async fn curl_to_an_allowed_name_resolving_to_loopback_is_blocked_without_local_binding() {
    let origin = HttpOrigin::start();
    let proxy = start(Setup {
        allow_local_binding: false,
        ..Setup::default()
    })
    .await;
    let url = format!("http://allowed.test:{}/", origin.addr.port());
    let out = curl("--socks5-hostname", &proxy, &[], &url).await;
    out.assert_refused(NOT_ALLOWED);
    assert_eq!(origin.request_count(), 0);
    assert_eq!(
        proxy.denials("socks-tcp"),
        [("allowed.test".to_string(), "dns-non-public:loopback")]
    );
}

#[tokio::test]
async fn curl_to_a_name_that_does_not_resolve_gets_host_unreachable() {
    let origin = HttpOrigin::start();
    let proxy = start(Setup::default()).await;
    let url = format!("http://gone.test:{}/", origin.addr.port());
    let out = curl("--socks5-hostname", &proxy, &[], &url).await;
    out.assert_refused(HOST_UNREACHABLE);
    assert_eq!(origin.request_count(), 0);
    assert_eq!(
        proxy.denials("socks-tcp"),
        [("gone.test".to_string(), "dns-failed")]
    );
}

#[tokio::test]
async fn limited_mode_blocks_socks() {
    let origin = HttpOrigin::start();
    let proxy = start(Setup {
        mode: Mode::Limited,
        ..Setup::default()
    })
    .await;
    let url = format!("http://allowed.test:{}/", origin.addr.port());
    let out = curl("--socks5-hostname", &proxy, &[], &url).await;
    out.assert_refused(NOT_ALLOWED);
    assert_eq!(origin.request_count(), 0);
    assert_eq!(
        proxy.denials("socks-tcp"),
        [("allowed.test".to_string(), "method-not-allowed")]
    );
}

// ------------------------------------------------------------------------- raw byte clients

/// A destination as a client writes it.
#[derive(Clone, Copy)]
enum Dest<'a> {
    V4([u8; 4]),
    V6(Ipv6Addr),
    Name(&'a [u8]),
}

/// ATYP, address, port.
fn encode(dest: Dest<'_>, port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    match dest {
        Dest::V4(ip) => {
            out.push(1);
            out.extend_from_slice(&ip);
        }
        Dest::V6(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        Dest::Name(name) => {
            out.push(3);
            out.push(u8::try_from(name.len()).unwrap());
            out.extend_from_slice(name);
        }
    }
    out.extend_from_slice(&port.to_be_bytes());
    out
}

fn request(cmd: u8, dest: Dest<'_>, port: u16) -> Vec<u8> {
    [&[5, cmd, 0][..], &encode(dest, port)].concat()
}

fn datagram(frag: u8, dest: Dest<'_>, port: u16, payload: &[u8]) -> Vec<u8> {
    [&[0, 0, frag][..], &encode(dest, port), payload].concat()
}

/// Connects and completes the no-auth greeting.
async fn greet(proxy: &Proxy) -> TcpStream {
    let mut stream = within("connect", TcpStream::connect(proxy.addr))
        .await
        .unwrap();
    stream.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    within("method", stream.read_exact(&mut method))
        .await
        .unwrap();
    assert_eq!(method, [5, 0]);
    stream
}

/// Reads a reply: its code and bound address.
async fn read_reply(stream: &mut TcpStream) -> (u8, SocketAddr) {
    let mut head = [0u8; 4];
    within("reply", stream.read_exact(&mut head)).await.unwrap();
    assert_eq!((head[0], head[2]), (5, 0), "reply header {head:?}");
    let ip = match head[3] {
        1 => {
            let mut ip = [0u8; 4];
            stream.read_exact(&mut ip).await.unwrap();
            IpAddr::from(ip)
        }
        4 => {
            let mut ip = [0u8; 16];
            stream.read_exact(&mut ip).await.unwrap();
            IpAddr::from(ip)
        }
        other => panic!("reply address type {other}"),
    };
    let mut port = [0u8; 2];
    stream.read_exact(&mut port).await.unwrap();
    (head[1], SocketAddr::new(ip, u16::from_be_bytes(port)))
}

/// Sends a request on a fresh connection and returns the reply code and the stream.
async fn ask(proxy: &Proxy, cmd: u8, dest: Dest<'_>, port: u16) -> (u8, TcpStream) {
    let mut stream = greet(proxy).await;
    stream.write_all(&request(cmd, dest, port)).await.unwrap();
    let (code, _) = read_reply(&mut stream).await;
    (code, stream)
}

/// Everything the proxy sends until it closes (a reset counts as closed).
async fn rest(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = within("close", stream.read_to_end(&mut got)).await;
    got
}

/// An echo round trip through a tunnel.
async fn echo_through(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(payload).await.unwrap();
    let mut got = vec![0u8; payload.len()];
    within("echo", stream.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, payload);
}

/// The listener still tunnels a good client.
async fn still_serves(proxy: &Proxy, echo: &TcpEcho) {
    let (code, mut stream) = ask(proxy, 1, Dest::Name(b"allowed.test"), echo.addr.port()).await;
    assert_eq!(code, 0);
    echo_through(&mut stream, b"still here").await;
}

#[tokio::test]
async fn junk_greetings_are_closed_and_the_listener_carries_on() {
    let echo = TcpEcho::start();
    let proxy = start(Setup::default()).await;
    let cases: [(&[u8], &[u8]); 5] = [
        // SOCKS4 CONNECT: not ours, closed without a word.
        (&[4, 1, 0, 80, 127, 0, 0, 1, 0], b""),
        (b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n", b""),
        (b"CONNECT allowed.test:80 HTTP/1.1\r\n\r\n", b""),
        // Only username/password offered: no acceptable method.
        (&[5, 1, 2], &[5, 0xff]),
        (&[5, 0], &[5, 0xff]),
    ];
    for (junk, want) in cases {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(junk).await.unwrap();
        assert_eq!(rest(&mut stream).await, want, "{junk:?}");
        still_serves(&proxy, &echo).await;
    }
    assert_eq!(echo.connections(), cases.len());
}

#[tokio::test]
async fn truncated_requests_are_closed_without_a_reply() {
    let echo = TcpEcho::start();
    let proxy = start(Setup::default()).await;
    let full = request(1, Dest::Name(b"allowed.test"), echo.addr.port());
    for cut in [1, 4, 6, full.len() - 1] {
        let mut stream = greet(&proxy).await;
        stream.write_all(&full[..cut]).await.unwrap();
        stream.shutdown().await.unwrap();
        assert_eq!(rest(&mut stream).await, b"", "cut at {cut}");
    }
    // And a greeting cut short.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(&[5, 3, 0]).await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(rest(&mut stream).await, b"");
    assert_eq!(echo.connections(), 0);
    still_serves(&proxy, &echo).await;
}

#[tokio::test]
async fn unsupported_commands_get_0x07() {
    let echo = TcpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    for cmd in [2, 0, 4, 0xff] {
        let mut stream = greet(&proxy).await;
        stream
            .write_all(&request(cmd, Dest::V4([127, 0, 0, 1]), port))
            .await
            .unwrap();
        // The whole reply, byte for byte, then the close.
        assert_eq!(
            rest(&mut stream).await,
            [5, 7, 0, 1, 0, 0, 0, 0, 0, 0],
            "command {cmd}"
        );
    }
    // UDP ASSOCIATE is a command only when enabled.
    let proxy = start(Setup {
        udp: false,
        ..Setup::default()
    })
    .await;
    let (code, _) = ask(&proxy, 3, Dest::V4([127, 0, 0, 1]), 0).await;
    assert_eq!(code, 7);
    assert_eq!(echo.connections(), 0);
    still_serves(&proxy, &echo).await;
}

#[tokio::test]
async fn unknown_address_types_get_0x08() {
    let echo = TcpEcho::start();
    let proxy = start(Setup::default()).await;
    for atyp in [0, 2, 5, 0xff] {
        let mut stream = greet(&proxy).await;
        stream
            .write_all(&[5, 1, 0, atyp, 127, 0, 0, 1, 0, 80])
            .await
            .unwrap();
        assert_eq!(
            rest(&mut stream).await,
            [5, 8, 0, 1, 0, 0, 0, 0, 0, 0],
            "atyp {atyp}"
        );
    }
    still_serves(&proxy, &echo).await;
}

#[tokio::test]
async fn invalid_names_are_denied_as_invalid_host() {
    let echo = TcpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let names: [&[u8]; 6] = [
        b"",
        b"bad host.test",
        b"allowed.test\x00",
        b"\xff\xfe.test",
        b"allowed.test:80",
        b"a..test",
    ];
    for name in names {
        let (code, _) = ask(&proxy, 1, Dest::Name(name), port).await;
        assert_eq!(code, NOT_ALLOWED, "{name:?}");
    }
    // Port 0 is no destination.
    let (code, _) = ask(&proxy, 1, Dest::Name(b"allowed.test"), 0).await;
    assert_eq!(code, NOT_ALLOWED);
    assert_eq!(echo.connections(), 0);
    let denials = proxy.denials("socks-tcp");
    assert_eq!(denials.len(), names.len() + 1);
    assert!(denials.iter().all(|(_, reason)| *reason == "invalid-host"));
    still_serves(&proxy, &echo).await;
}

#[tokio::test]
async fn names_are_canonicalised_before_the_policy_sees_them() {
    let echo = TcpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    for name in [&b"ALLOWED.Test"[..], b"allowed.test."] {
        let (code, mut stream) = ask(&proxy, 1, Dest::Name(name), port).await;
        assert_eq!(code, 0, "{name:?}");
        echo_through(&mut stream, b"canonical").await;
    }
    // An IP literal written as a name is judged as the address (no IP rule here).
    for name in [&b"127.0.0.1"[..], b"127.1", b"0x7f000001", b"::1", b"[::1]"] {
        let (code, _) = ask(&proxy, 1, Dest::Name(name), port).await;
        assert_eq!(code, NOT_ALLOWED, "{name:?}");
    }
    assert_eq!(echo.connections(), 2);
}

/// A TCP echo server on [::1] (the shared origins are IPv4 only).
async fn echo_v6() -> SocketAddr {
    let listener = TcpListener::bind("[::1]:0").await.expect("IPv6 loopback");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn ip_literal_targets() {
    let echo = TcpEcho::start();
    let port = echo.addr.port();
    let v6 = echo_v6().await;

    // No IP rule: loopback literals are not allowed, and nothing is dialled.
    let proxy = start(Setup::default()).await;
    let (code, _) = ask(&proxy, 1, Dest::V4([127, 0, 0, 1]), port).await;
    assert_eq!(code, NOT_ALLOWED);
    let (code, _) = ask(&proxy, 1, Dest::V6(Ipv6Addr::LOCALHOST), v6.port()).await;
    assert_eq!(code, NOT_ALLOWED);
    assert_eq!(echo.connections(), 0);

    // Exact IP rules open them, even without allow_local_binding.
    let proxy = start(Setup {
        allow: strings(&["127.0.0.1", "::1"]),
        allow_local_binding: false,
        ..Setup::default()
    })
    .await;
    let mut stream = greet(&proxy).await;
    stream
        .write_all(&request(1, Dest::V4([127, 0, 0, 1]), port))
        .await
        .unwrap();
    let (code, bound) = read_reply(&mut stream).await;
    assert_eq!(code, 0);
    assert_eq!(
        bound.ip(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "the upstream socket's address"
    );
    assert_ne!(bound.port(), 0);
    echo_through(&mut stream, b"v4").await;

    let (code, mut stream) = ask(&proxy, 1, Dest::V6(Ipv6Addr::LOCALHOST), v6.port()).await;
    assert_eq!(code, 0);
    echo_through(&mut stream, b"v6").await;

    // An IPv4-mapped IPv6 address is judged (and dialled) as the IPv4 address.
    let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped();
    let (code, mut stream) = ask(&proxy, 1, Dest::V6(mapped), port).await;
    assert_eq!(code, 0);
    echo_through(&mut stream, b"mapped").await;
    // 127.0.0.2 is loopback too, but not the allowed address.
    let (code, _) = ask(&proxy, 1, Dest::V4([127, 0, 0, 2]), port).await;
    assert_eq!(code, NOT_ALLOWED);
    assert_eq!(echo.connections(), 2);
}

#[tokio::test]
async fn the_proxy_itself_is_never_a_destination() {
    let proxy = start(Setup {
        allow: strings(&["127.0.0.1"]),
        ..Setup::default()
    })
    .await;
    let (code, _) = ask(&proxy, 1, Dest::V4([127, 0, 0, 1]), proxy.addr.port()).await;
    assert_eq!(code, NOT_ALLOWED);
    assert_eq!(
        proxy.denials("socks-tcp"),
        [("127.0.0.1".to_string(), "self-connection")]
    );
}

#[tokio::test]
async fn early_data_sent_with_the_request_is_forwarded() {
    let echo = TcpEcho::start();
    let proxy = start(Setup::default()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let pipelined = [
        &[5, 1, 0][..],
        &request(1, Dest::Name(b"allowed.test"), echo.addr.port()),
        b"early bytes",
    ]
    .concat();
    stream.write_all(&pipelined).await.unwrap();
    let mut method = [0u8; 2];
    within("method", stream.read_exact(&mut method))
        .await
        .unwrap();
    assert_eq!(method, [5, 0]);
    let (code, _) = read_reply(&mut stream).await;
    assert_eq!(code, 0);
    let mut got = [0u8; 11];
    within("early echo", stream.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"early bytes");
    echo_through(&mut stream, b"and more").await;
}

#[tokio::test]
async fn dial_failures_get_their_reply_codes() {
    let proxy = start(Setup {
        allow: strings(&["127.0.0.1"]),
        limits: Limits {
            connect_timeout: Duration::from_millis(300),
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    // A port that was just free: refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, _) = ask(&proxy, 1, Dest::V4([127, 0, 0, 1]), closed.port()).await;
    assert_eq!(code, 0x05);

    // A listener whose accept queue is full drops further SYNs: the connect times out.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(1).unwrap();
    let port = full.local_addr().unwrap().port();
    let mut fillers = Vec::new();
    loop {
        let connect = TcpStream::connect(("127.0.0.1", port));
        match timeout(Duration::from_millis(200), connect).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(err)) => panic!("filling the accept queue: {err}"),
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "the accept queue never filled up");
    }
    let (code, _) = ask(&proxy, 1, Dest::V4([127, 0, 0, 1]), port).await;
    assert_eq!(code, 0x06);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_closed() {
    let echo = TcpEcho::start();
    let header_timeout = Duration::from_millis(300);
    let proxy = start(Setup {
        limits: Limits {
            header_timeout,
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    // Half a greeting; then a greeting and half a request.
    for (sent, want) in [(&[5u8][..], &[][..]), (&[5, 1, 0, 5, 1], &[5, 0])] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        assert_eq!(rest(&mut stream).await, want);
        assert!(started.elapsed() >= header_timeout - Duration::from_millis(50));
    }
    still_serves(&proxy, &echo).await;
}

#[tokio::test]
async fn over_max_connections_the_client_gets_a_general_failure() {
    let echo = TcpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup {
        limits: Limits {
            max_connections: 1,
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    let (code, mut first) = ask(&proxy, 1, Dest::Name(b"allowed.test"), port).await;
    assert_eq!(code, 0);
    echo_through(&mut first, b"holding the only slot").await;
    let (code, _) = ask(&proxy, 1, Dest::Name(b"allowed.test"), port).await;
    assert_eq!(code, GENERAL_FAILURE);
    assert_eq!(echo.connections(), 1);
    drop(first);
    // The slot is released when the tunnel's task ends.
    let deadline = Instant::now() + STEP;
    loop {
        let (code, _) = ask(&proxy, 1, Dest::Name(b"allowed.test"), port).await;
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------- UDP

/// An association: its control connection, the client socket and the relay address.
struct Association {
    control: TcpStream,
    socket: UdpSocket,
    relay: SocketAddr,
}

/// Opens an association; the request names the client socket's port when `name_port`.
async fn associate(proxy: &Proxy, name_port: bool) -> Association {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = if name_port {
        socket.local_addr().unwrap().port()
    } else {
        0
    };
    let mut control = greet(proxy).await;
    control
        .write_all(&request(3, Dest::V4([0, 0, 0, 0]), port))
        .await
        .unwrap();
    let (code, relay) = read_reply(&mut control).await;
    assert_eq!(code, 0, "UDP ASSOCIATE refused");
    assert_eq!(relay.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    Association {
        control,
        socket,
        relay,
    }
}

impl Association {
    async fn send(&self, datagram: &[u8]) {
        self.socket.send_to(datagram, self.relay).await.unwrap();
    }

    async fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 65536];
        let (n, from) = within("UDP reply", self.socket.recv_from(&mut buf))
            .await
            .unwrap();
        assert_eq!(from, self.relay);
        buf.truncate(n);
        buf
    }

    /// Sends to `dest` and expects the echo under a header naming `dest` as written.
    async fn round_trip(&self, dest: Dest<'_>, port: u16, payload: &[u8]) {
        self.send(&datagram(0, dest, port, payload)).await;
        assert_eq!(self.recv().await, datagram(0, dest, port, payload));
    }
}

#[tokio::test]
async fn udp_echo_to_an_allowed_address() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup {
        allow: strings(&["127.0.0.1"]),
        ..Setup::default()
    })
    .await;
    let a = associate(&proxy, true).await;
    a.round_trip(Dest::V4([127, 0, 0, 1]), port, b"ping").await;
    a.round_trip(Dest::V4([127, 0, 0, 1]), port, &[7u8; 8000])
        .await;
    // Written as IPv4-mapped IPv6, the reply names it the same way.
    let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped();
    a.round_trip(Dest::V6(mapped), port, b"mapped").await;
    assert_eq!(echo.datagrams(), 3);
}

#[tokio::test]
async fn a_closed_association_writes_one_audit_line_with_its_counts() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let a = associate(&proxy, true).await;
    a.round_trip(Dest::Name(b"udp.test"), port, b"12345").await;
    a.round_trip(Dest::Name(b"udp.test"), port, &[1u8; 100])
        .await;
    a.send(&datagram(0, Dest::Name(b"denied.test"), port, b"nope"))
        .await;
    a.send(&datagram(1, Dest::Name(b"udp.test"), port, b"fragment"))
        .await;
    // The relay handles datagrams in order: once this echo is back, the two above were seen.
    a.round_trip(Dest::Name(b"udp.test"), port, b"last").await;
    let relay = a.relay;
    drop(a);
    let closes = within("the association's close line", async {
        loop {
            let closes = proxy.audit.events("close");
            if !closes.is_empty() {
                return closes;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(closes.len(), 1, "{closes:?}");
    let close = &closes[0];
    assert_eq!(close["protocol"], "socks-udp");
    assert_eq!(close["relay"], relay.to_string());
    assert_eq!(close["datagrams_up"], 3);
    assert_eq!(close["datagrams_down"], 3);
    assert_eq!(close["datagrams_denied"], 1);
    assert_eq!(close["datagrams_dropped"], 1);
    assert_eq!(close["bytes_up"], 109);
    assert_eq!(close["bytes_down"], 109);
    assert_eq!(close["idle_timeout"], false);
    assert!(close["duration_ms"].is_u64(), "{close}");
}

#[tokio::test]
async fn udp_echo_to_an_allowed_name() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let a = associate(&proxy, false).await;
    for i in 0..20u8 {
        a.round_trip(Dest::Name(b"udp.test"), port, &[i; 64]).await;
    }
    // Another spelling of the same name is its own cache entry, and its replies say so.
    a.round_trip(Dest::Name(b"UDP.test."), port, b"spelling")
        .await;
    assert_eq!(echo.datagrams(), 21);
}

#[tokio::test]
async fn udp_through_an_independent_client_implementation() {
    use fast_socks5::client::Socks5Datagram;
    use fast_socks5::util::target_addr::TargetAddr;

    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let control = TcpStream::connect(proxy.addr).await.unwrap();
    let client = within(
        "fast-socks5 associate",
        Socks5Datagram::bind(control, "127.0.0.1:0"),
    )
    .await
    .expect("associate");
    client.send_to(b"hello", ("udp.test", port)).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = within("fast-socks5 recv", client.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from, TargetAddr::Domain("udp.test".to_string(), port));
}

#[tokio::test]
async fn udp_to_denied_destinations_never_arrives() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let a = associate(&proxy, true).await;
    for _ in 0..3 {
        for dest in [
            Dest::Name(b"denied.test"),
            Dest::Name(b"unlisted.test"),
            Dest::Name(b"gone.test"),
            Dest::Name(b"bad name"),
            Dest::V4([127, 0, 0, 1]),
        ] {
            a.send(&datagram(0, dest, port, b"must not arrive")).await;
        }
    }
    // Datagrams are handled in order: once this one is echoed the others were dropped.
    a.round_trip(Dest::Name(b"udp.test"), port, b"allowed")
        .await;
    assert_eq!(echo.datagrams(), 1);
    // Each destination was decided, and reported, once.
    assert_eq!(
        proxy.denials("socks-udp"),
        [
            ("denied.test".to_string(), "deny-rule"),
            ("unlisted.test".to_string(), "not-allowed"),
            ("gone.test".to_string(), "dns-failed"),
            (format!("bad name:{port}"), "invalid-host"),
            ("127.0.0.1".to_string(), "not-allowed"),
        ]
    );
    let decisions = proxy.audit.events("decision");
    assert_eq!(decisions.len(), 6);
    assert!(decisions.iter().all(|d| d["protocol"] == "socks-udp"));
    let allowed: Vec<_> = decisions
        .iter()
        .filter(|d| d["verdict"] == "allow")
        .collect();
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0]["host"], "udp.test");
}

#[tokio::test]
async fn udp_from_a_foreign_source_port_is_ignored() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let foreign = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let payload = datagram(0, Dest::Name(b"udp.test"), port, b"foreign");

    // The request named the client's port: nothing else is accepted, even first.
    let a = associate(&proxy, true).await;
    foreign.send_to(&payload, a.relay).await.unwrap();
    a.round_trip(Dest::Name(b"udp.test"), port, b"one").await;
    foreign.send_to(&payload, a.relay).await.unwrap();
    a.round_trip(Dest::Name(b"udp.test"), port, b"two").await;
    assert_eq!(echo.datagrams(), 2);

    // The request named no port: the first datagram fixes it.
    let b = associate(&proxy, false).await;
    b.round_trip(Dest::Name(b"udp.test"), port, b"three").await;
    foreign.send_to(&payload, b.relay).await.unwrap();
    b.round_trip(Dest::Name(b"udp.test"), port, b"four").await;
    assert_eq!(echo.datagrams(), 4);
    let mut buf = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(200), foreign.recv_from(&mut buf))
            .await
            .is_err(),
        "the foreign socket got a reply"
    );
}

/// Sends one datagram to the relay at argv[1] (hex in argv[2]) from a UDP socket created
/// after `setuid(65534)`, waits a second for an answer, and prints whether one came.
const SEND_AS_NOBODY: &str = r#"
import os, socket, sys
os.setuid(65534)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(1.0)
host, port = sys.argv[1].rsplit(":", 1)
s.sendto(bytes.fromhex(sys.argv[2]), (host, int(port)))
try:
    s.recvfrom(65536)
    print("answered")
except socket.timeout:
    print("ignored")
"#;

/// Issue 11 item 16: with no client port in the ASSOCIATE request, another local user's
/// socket cannot take the association over by sending first; the client (same uid as its
/// control connection) still gets its datagrams relayed.
#[tokio::test]
async fn udp_first_datagram_from_another_users_socket_does_not_take_over() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!("skipped: creating a socket of another uid needs root");
        return;
    }
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let a = associate(&proxy, false).await;
    let intruder = datagram(0, Dest::Name(b"udp.test"), port, b"intruder");
    let hex: String = intruder.iter().map(|b| format!("{b:02x}")).collect();
    let run = tokio::process::Command::new("python3")
        .args(["-c", SEND_AS_NOBODY, &a.relay.to_string(), &hex])
        .stdin(Stdio::null())
        .output();
    let out = within("the other user's datagram", run).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ignored");
    assert_eq!(echo.datagrams(), 0, "the other user's datagram was relayed");

    a.round_trip(Dest::Name(b"udp.test"), port, b"the client")
        .await;
    assert_eq!(echo.datagrams(), 1);
}

#[tokio::test]
async fn udp_fragments_and_malformed_headers_are_dropped() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let a = associate(&proxy, true).await;
    for frag in [1, 2, 0x81] {
        a.send(&datagram(frag, Dest::Name(b"udp.test"), port, b"fragment"))
            .await;
    }
    a.send(&[0, 0, 0, 9, 1, 2, 3]).await;
    a.send(&[0, 0, 0, 3, 200, b'x']).await;
    a.send(&[0, 0]).await;
    a.round_trip(Dest::Name(b"udp.test"), port, b"whole").await;
    assert_eq!(echo.datagrams(), 1);
}

/// Waits until the relay socket is gone: its port can be bound again.
async fn relay_released(relay: SocketAddr) {
    let deadline = Instant::now() + STEP;
    while UdpSocket::bind(relay).await.is_err() {
        assert!(Instant::now() < deadline, "relay socket {relay} still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn udp_association_ends_with_its_control_connection() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let a = associate(&proxy, true).await;
    a.round_trip(Dest::Name(b"udp.test"), port, b"alive").await;
    let Association {
        control,
        socket,
        relay,
    } = a;
    drop(control);
    relay_released(relay).await;
    let late = datagram(0, Dest::Name(b"udp.test"), port, b"late");
    let _ = socket.send_to(&late, relay).await;
    let mut buf = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(200), socket.recv_from(&mut buf))
            .await
            .map_or(true, |r| r.is_err())
    );
    assert_eq!(echo.datagrams(), 1);
}

#[tokio::test]
async fn udp_association_ends_when_idle() {
    let proxy = start(Setup {
        limits: Limits {
            idle_timeout: Duration::from_millis(300),
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    let mut a = associate(&proxy, true).await;
    assert_eq!(rest(&mut a.control).await, b"", "control connection closed");
    relay_released(a.relay).await;
}

#[tokio::test]
async fn udp_associations_are_limited() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup {
        limits: Limits {
            max_udp_associations: 1,
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    let a = associate(&proxy, true).await;
    let (code, _) = ask(&proxy, 3, Dest::V4([0, 0, 0, 0]), 0).await;
    assert_eq!(code, GENERAL_FAILURE);
    a.round_trip(Dest::Name(b"udp.test"), port, b"first still works")
        .await;
    drop(a);
    let deadline = Instant::now() + STEP;
    loop {
        let (code, _) = ask(&proxy, 3, Dest::V4([0, 0, 0, 0]), 0).await;
        if code == 0 {
            break;
        }
        assert_eq!(code, GENERAL_FAILURE);
        assert!(
            Instant::now() < deadline,
            "the association slot was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn udp_decisions_are_rechecked_after_a_reload() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let a = associate(&proxy, true).await;
    a.round_trip(Dest::Name(b"udp.test"), port, b"before").await;

    let mut proxy = proxy;
    let mut reload = |allow: &[&str]| {
        let deny = Setup::default().deny;
        proxy.proxy.rewrite(&rules_toml(&strings(allow), &deny));
    };
    reload(&["allowed.test"]);
    a.send(&datagram(0, Dest::Name(b"udp.test"), port, b"after"))
        .await;
    // Still allowed: proves the denied one above was handled before this one.
    a.round_trip(Dest::Name(b"allowed.test"), port, b"other")
        .await;
    assert_eq!(echo.datagrams(), 2);

    reload(&["udp.test"]);
    a.round_trip(Dest::Name(b"udp.test"), port, b"again").await;
    assert_eq!(echo.datagrams(), 3);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_waits_for_tunnels_and_associations() {
    let echo = TcpEcho::start();
    let proxy = start(Setup::default()).await;
    let (code, mut tunnel) = ask(&proxy, 1, Dest::Name(b"allowed.test"), echo.addr.port()).await;
    assert_eq!(code, 0);
    echo_through(&mut tunnel, b"twelve bytes").await;
    let association = associate(&proxy, true).await;

    let Proxy {
        addr,
        audit,
        proxy: server,
        _dns,
    } = proxy;
    let shutdown = tokio::spawn(server.shutdown(STEP));
    let deadline = Instant::now() + STEP;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown did not wait for the tunnel"
    );
    echo_through(&mut tunnel, b"still open").await;

    drop(tunnel);
    drop(association);
    assert_eq!(within("shutdown", shutdown).await.unwrap(), 0);
    let closes = audit.events("close");

    assert_eq!(closes.len(), 2, "{closes:?}");
    assert_eq!(
        closes
            .iter()
            .filter(|c| c["protocol"] == "socks-udp")
            .count(),
        1,
        "{closes:?}"
    );
    let closes: Vec<_> = closes
        .into_iter()
        .filter(|c| c["protocol"] == "socks-tcp")
        .collect();
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert_eq!(closes[0]["host"], "allowed.test");
    assert_eq!(closes[0]["port"], echo.addr.port());
    assert_eq!(closes[0]["bytes_up"], 22);
    assert_eq!(closes[0]["bytes_down"], 22);
}

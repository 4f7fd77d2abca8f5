//! The SOCKS5 listener's TCP side through its real accept loop on 127.0.0.1: curl and raw
//! bytes against a fake DNS server and loopback origins only. Denied destinations resolve to
//! loopback origins that count what reaches them, so a policy bug shows up as a count, never
//! as traffic leaving the machine.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::support::curl::{self, Via};
use crate::support::origin::{HttpOrigin, TcpEcho};
use crate::support::socks::{
    ask, echo_through, greet, read_reply, request, rest, within, Dest, GENERAL_FAILURE,
    HOST_UNREACHABLE, NOT_ALLOWED, STEP,
};
use crate::support::socks_world::{start, still_serves, strings, Setup};
use egress_proxy::config::Limits;
use egress_proxy::policy::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{timeout, Instant};

#[tokio::test]
async fn curl_socks5_hostname_reaches_an_allowed_name() {
    let origin = HttpOrigin::start();
    let proxy = start(Setup::default()).await;
    let url = format!("http://allowed.test:{}/hello", origin.addr.port());
    let out = curl::run_async(Via::Socks5Hostname(proxy.addr), &[&url]).await;
    out.assert_stdout("origin saw GET /hello body=0");
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
    let out = curl::run_async(Via::Socks5(proxy.addr), &["--resolve", &resolve, &url]).await;
    out.assert_socks_refused(NOT_ALLOWED);
    assert_eq!(origin.request_count(), 0);

    let setup = Setup {
        allow: strings(&[&format!("127.0.0.1:{port}")]),
        ..Setup::default()
    };
    let proxy = start(setup).await;
    let out = curl::run_async(Via::Socks5(proxy.addr), &["--resolve", &resolve, &url]).await;
    out.assert_stdout("origin saw GET /local body=0");
    assert_eq!(origin.request_count(), 1);
}

#[tokio::test]
async fn curl_to_denied_and_unlisted_names_never_reaches_the_origin() {
    let origin = HttpOrigin::start();
    let proxy = start(Setup::default()).await;
    for name in ["denied.test", "unlisted.test"] {
        let url = format!("http://{name}:{}/", origin.addr.port());
        let out = curl::run_async(Via::Socks5Hostname(proxy.addr), &[&url]).await;
        out.assert_socks_refused(NOT_ALLOWED);
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

/// curl through a proxy started with `setup` to `name` on the origin's port is refused with
/// `code`, never reaches the origin, and is recorded as one denial for `reason`.
async fn assert_curl_refused(setup: Setup, name: &str, code: u8, reason: &'static str) {
    let origin = HttpOrigin::start();
    let proxy = start(setup).await;
    let url = format!("http://{name}:{}/", origin.addr.port());
    let out = curl::run_async(Via::Socks5Hostname(proxy.addr), &[&url]).await;
    out.assert_socks_refused(code);
    assert_eq!(origin.request_count(), 0);
    assert_eq!(proxy.denials("socks-tcp"), [(name.to_string(), reason)]);
}

#[tokio::test]
async fn curl_to_an_allowed_name_resolving_to_loopback_is_blocked_without_local_binding() {
    let setup = Setup {
        allow_local_binding: false,
        ..Setup::default()
    };
    assert_curl_refused(
        setup,
        "allowed.test",
        NOT_ALLOWED,
        "dns-non-public:loopback",
    )
    .await;
}

#[tokio::test]
async fn curl_to_a_name_that_does_not_resolve_gets_host_unreachable() {
    assert_curl_refused(
        Setup::default(),
        "gone.test",
        HOST_UNREACHABLE,
        "dns-failed",
    )
    .await;
}

#[tokio::test]
async fn limited_mode_blocks_socks() {
    let setup = Setup {
        mode: Mode::Limited,
        ..Setup::default()
    };
    assert_curl_refused(setup, "allowed.test", NOT_ALLOWED, "mitm-required").await;
}

#[tokio::test]
async fn junk_greetings_are_closed_and_the_listener_carries_on() {
    let echo = TcpEcho::start();
    let proxy = start(Setup::default()).await;
    // Not SOCKS5: closed after the method selection that was sent before anything was read.
    let cases: [&[u8]; 3] = [
        &[4, 1, 0, 80, 127, 0, 0, 1, 0],
        b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
        b"CONNECT allowed.test:80 HTTP/1.1\r\n\r\n",
    ];
    for junk in cases {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(junk).await.unwrap();
        assert_eq!(rest(&mut stream).await, [5, 0], "{junk:?}");
        still_serves(&proxy, &echo).await;
    }
    assert_eq!(echo.connections(), cases.len());
}

#[tokio::test]
async fn without_credentials_no_authentication_is_selected_before_the_greeting() {
    let echo = TcpEcho::start();
    let proxy = start(Setup::default()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut method = [0u8; 2];
    within("method before the greeting", stream.read_exact(&mut method))
        .await
        .unwrap();
    assert_eq!(method, [5, 0]);
    // Whatever the greeting then offers (only username/password, or nothing at all), the
    // client was told "no authentication" and its request is served.
    for greeting in [&[5, 1, 2][..], &[5, 0], &[5, 2, 2, 0]] {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let ask = [
            greeting,
            &request(1, Dest::Name(b"allowed.test"), echo.addr.port()),
        ]
        .concat();
        stream.write_all(&ask).await.unwrap();
        within("method", stream.read_exact(&mut method))
            .await
            .unwrap();
        assert_eq!(method, [5, 0], "{greeting:?}");
        let (code, _) = read_reply(&mut stream).await;
        assert_eq!(code, 0, "{greeting:?}");
        echo_through(&mut stream, b"served").await;
    }
}

#[tokio::test]
async fn truncated_requests_are_closed_without_a_reply() {
    let echo = TcpEcho::start();
    let proxy = start(Setup::default()).await;
    let full = request(1, Dest::Name(b"allowed.test"), echo.addr.port());
    for cut in [1, 4, 6, full.len() - 1] {
        let mut stream = greet(proxy.addr).await;
        stream.write_all(&full[..cut]).await.unwrap();
        stream.shutdown().await.unwrap();
        assert_eq!(rest(&mut stream).await, b"", "cut at {cut}");
    }
    // And a greeting cut short.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(&[5, 3, 0]).await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(rest(&mut stream).await, [5, 0]);
    assert_eq!(echo.connections(), 0);
    still_serves(&proxy, &echo).await;
}

#[tokio::test]
async fn unsupported_commands_get_0x07() {
    let echo = TcpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    for cmd in [2, 0, 4, 0xff] {
        let mut stream = greet(proxy.addr).await;
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
    let (code, _) = ask(proxy.addr, 3, Dest::V4([127, 0, 0, 1]), 0).await;
    assert_eq!(code, 7);
    assert_eq!(echo.connections(), 0);
    still_serves(&proxy, &echo).await;
}

#[tokio::test]
async fn unknown_address_types_get_0x08() {
    let echo = TcpEcho::start();
    let proxy = start(Setup::default()).await;
    for atyp in [0, 2, 5, 0xff] {
        let mut stream = greet(proxy.addr).await;
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
        let (code, _) = ask(proxy.addr, 1, Dest::Name(name), port).await;
        assert_eq!(code, NOT_ALLOWED, "{name:?}");
    }
    // Port 0 is no destination.
    let (code, _) = ask(proxy.addr, 1, Dest::Name(b"allowed.test"), 0).await;
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
        let (code, mut stream) = ask(proxy.addr, 1, Dest::Name(name), port).await;
        assert_eq!(code, 0, "{name:?}");
        echo_through(&mut stream, b"canonical").await;
    }
    // An IP literal written as a name is judged as the address (no IP rule here).
    for name in [&b"127.0.0.1"[..], b"127.1", b"0x7f000001", b"::1", b"[::1]"] {
        let (code, _) = ask(proxy.addr, 1, Dest::Name(name), port).await;
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
    let (code, _) = ask(proxy.addr, 1, Dest::V4([127, 0, 0, 1]), port).await;
    assert_eq!(code, NOT_ALLOWED);
    let (code, _) = ask(proxy.addr, 1, Dest::V6(Ipv6Addr::LOCALHOST), v6.port()).await;
    assert_eq!(code, NOT_ALLOWED);
    assert_eq!(echo.connections(), 0);

    // Exact IP rules open them, even without allow_local_binding.
    let proxy = start(Setup {
        allow: strings(&["127.0.0.1", "::1"]),
        allow_local_binding: false,
        ..Setup::default()
    })
    .await;
    let mut stream = greet(proxy.addr).await;
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

    let (code, mut stream) = ask(proxy.addr, 1, Dest::V6(Ipv6Addr::LOCALHOST), v6.port()).await;
    assert_eq!(code, 0);
    echo_through(&mut stream, b"v6").await;

    // An IPv4-mapped IPv6 address is judged (and dialled) as the IPv4 address.
    let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped();
    let (code, mut stream) = ask(proxy.addr, 1, Dest::V6(mapped), port).await;
    assert_eq!(code, 0);
    echo_through(&mut stream, b"mapped").await;
    // 127.0.0.2 is loopback too, but not the allowed address.
    let (code, _) = ask(proxy.addr, 1, Dest::V4([127, 0, 0, 2]), port).await;
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
    let (code, _) = ask(proxy.addr, 1, Dest::V4([127, 0, 0, 1]), proxy.addr.port()).await;
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
    let (code, _) = ask(proxy.addr, 1, Dest::V4([127, 0, 0, 1]), closed.port()).await;
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
    let (code, _) = ask(proxy.addr, 1, Dest::V4([127, 0, 0, 1]), port).await;
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
    for sent in [&[5u8][..], &[5, 1, 0, 5, 1]] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        assert_eq!(rest(&mut stream).await, [5, 0]);
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
    let (code, mut first) = ask(proxy.addr, 1, Dest::Name(b"allowed.test"), port).await;
    assert_eq!(code, 0);
    echo_through(&mut first, b"holding the only slot").await;
    let (code, _) = ask(proxy.addr, 1, Dest::Name(b"allowed.test"), port).await;
    assert_eq!(code, GENERAL_FAILURE);
    assert_eq!(echo.connections(), 1);
    drop(first);
    // The slot is released when the tunnel's task ends.
    let deadline = Instant::now() + STEP;
    loop {
        let (code, _) = ask(proxy.addr, 1, Dest::Name(b"allowed.test"), port).await;
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

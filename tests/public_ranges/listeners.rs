//! The listeners with and without a declared range, each test inside the namespace: a fake-IP
//! answer (198.18.0.1, benchmarking) is refused until `public_ranges` declares 198.18.0.0/15,
//! then every listener reaches the origin there; loopback and metadata spellings stay closed.

use std::io::{BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tokio::time::Instant;

use crate::in_namespace;
use crate::support::curl::{self, Via};
use crate::support::fake_dns::{Answer, FakeDns};
use crate::support::harness::Proxy;
use crate::support::http::blocking::{connect_tunnel, expect_close, get};
use crate::support::origin::{serve_http, HttpOrigin};
use crate::support::socks::{associate, datagram, Dest, NOT_ALLOWED};

/// The fake-IP DNS answer, on the namespace's `lo`.
pub(crate) const FAKE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const DECLARED: &str = "public_ranges = ['198.18.0.0/15']";

/// An HTTP origin and a TCP echo on the fake-IP address, counting what reaches them.
pub(crate) struct FakeIpOrigins {
    pub(crate) http: u16,
    echo: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeIpOrigins {
    pub(crate) fn start() -> FakeIpOrigins {
        let http = TcpListener::bind((FAKE_IP, 0)).expect("198.18.0.1 is on lo");
        let echo = TcpListener::bind((FAKE_IP, 0)).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let ports = (
            http.local_addr().unwrap().port(),
            echo.local_addr().unwrap().port(),
        );
        let seen = Arc::clone(&requests);
        thread::spawn(move || {
            for stream in http.incoming().flatten() {
                let seen = Arc::clone(&seen);
                thread::spawn(move || {
                    let reader = BufReader::new(stream.try_clone().unwrap());
                    serve_http(reader, stream, "fake-ip origin", &seen);
                });
            }
        });
        thread::spawn(move || {
            for mut stream in echo.incoming().flatten() {
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        FakeIpOrigins {
            http: ports.0,
            echo: ports.1,
            requests,
        }
    }

    pub(crate) fn requests(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// A UDP echo on the fake-IP address: its port and how many datagrams reached it.
fn udp_echo() -> (u16, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind((FAKE_IP, 0)).unwrap();
    let port = socket.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    (port, count)
}

fn zone() -> FakeDns {
    FakeDns::start(vec![
        ("fake.test", Answer::A(vec![FAKE_IP])),
        ("mapped.test", Answer::Aaaa(vec![FAKE_IP.to_ipv6_mapped()])),
        (
            "meta.test",
            Answer::A(vec![Ipv4Addr::new(169, 254, 169, 254)]),
        ),
        ("mixed.test", Answer::A(vec![FAKE_IP, Ipv4Addr::LOCALHOST])),
    ])
}

/// A proxy allowing `*`, with `extra` policy TOML.
fn proxy(dns: &FakeDns, extra: &str) -> Proxy {
    Proxy::builder()
        .allow("*")
        .dns(dns)
        .toml(extra)
        .start_blocking()
}

fn reason(reply: &crate::support::reply::Reply) -> (u16, &str) {
    (reply.status, reply.header("x-proxy-reason").unwrap_or("-"))
}

#[test]
fn an_undeclared_fake_ip_answer_is_refused_on_every_listener() {
    if !in_namespace("listeners::an_undeclared_fake_ip_answer_is_refused_on_every_listener") {
        return;
    }
    let origins = FakeIpOrigins::start();
    let dns = zone();
    let proxy = proxy(&dns, "");
    let url = |host: &str| format!("http://{host}:{}/", origins.http);

    let reply = get(proxy.addr, &url("fake.test"));
    assert_eq!(reason(&reply), (403, "dns-non-public:benchmarking"));
    let reply = get(proxy.addr, &url("198.18.0.1"));
    assert_eq!(reason(&reply), (403, "non-public-ip:benchmarking"));
    let (_, reply) = connect_tunnel(proxy.addr, &format!("fake.test:{}", origins.echo));
    assert_eq!(reason(&reply), (403, "dns-non-public:benchmarking"));
    curl::run(
        Via::Socks5Hostname(proxy.socks_addr()),
        &[&url("fake.test")],
    )
    .assert_socks_refused(NOT_ALLOWED);
    curl::run(Via::Socks5(proxy.socks_addr()), &[&url("198.18.0.1")])
        .assert_socks_refused(NOT_ALLOWED);
    assert_eq!(origins.requests(), 0);
}

#[test]
fn a_declared_fake_ip_answer_reaches_the_origin_through_every_listener() {
    if !in_namespace(
        "listeners::a_declared_fake_ip_answer_reaches_the_origin_through_every_listener",
    ) {
        return;
    }
    let origins = FakeIpOrigins::start();
    let dns = zone();
    let proxy = proxy(&dns, DECLARED);
    let port = origins.http;
    let say = |path: &str| format!("fake-ip origin saw GET {path} body=0");

    for (host, path) in [
        ("fake.test", "/forward"),
        ("mapped.test", "/mapped-answer"),
        ("198.18.0.1", "/literal"),
        ("[::ffff:198.18.0.1]", "/mapped-literal"),
    ] {
        let reply = get(proxy.addr, &format!("http://{host}:{port}{path}"));
        assert_eq!(reply.status, 200, "{host}: {reply:?}");
        assert_eq!(reply.body, say(path), "{host}");
    }
    let url = format!("http://fake.test:{port}/tunnel");
    curl::run(Via::Tunnel(&proxy.url()), &[&url]).assert_stdout(&say("/tunnel"));
    let url = format!("http://fake.test:{port}/socks-name");
    curl::run(Via::Socks5Hostname(proxy.socks_addr()), &[&url]).assert_stdout(&say("/socks-name"));
    let url = format!("http://198.18.0.1:{port}/socks-ip");
    curl::run(Via::Socks5(proxy.socks_addr()), &[&url]).assert_stdout(&say("/socks-ip"));
    assert_eq!(origins.requests(), 7);

    // The audit line keeps the class the declaration overrode.
    let decisions = proxy.audit.events("decision");
    let line = decisions
        .iter()
        .find(|v| v["host"] == "fake.test" && v["protocol"] == "connect")
        .unwrap_or_else(|| panic!("no CONNECT decision: {decisions:#?}"));
    assert_eq!(line["verdict"], "allow", "{line}");
    assert_eq!(line["ip"], "198.18.0.1", "{line}");
    assert_eq!(line["class"], "public", "{line}");
    assert_eq!(line["declared"], "benchmarking", "{line}");
}

/// Under a declaration, loopback, link-local and metadata spellings (in literals, IPv6
/// embeddings and answers) are refused exactly as without one, and nothing reaches a loopback
/// origin.
#[test]
fn a_declared_range_opens_no_loopback_or_metadata_spelling() {
    if !in_namespace("listeners::a_declared_range_opens_no_loopback_or_metadata_spelling") {
        return;
    }
    let local = HttpOrigin::start();
    let dns = zone();
    let proxy = proxy(
        &dns,
        "public_ranges = ['198.18.0.0/15', '100.64.0.0/10', '192.0.0.0/24', '::ffff:192.0.2.0/120']",
    );
    let p = local.addr.port();
    let cases = [
        (format!("127.0.0.1:{p}"), "non-public-ip:loopback"),
        (format!("127.1:{p}"), "non-public-ip:loopback"),
        (format!("[::1]:{p}"), "non-public-ip:loopback"),
        (format!("[::ffff:127.0.0.1]:{p}"), "non-public-ip:loopback"),
        (format!("[64:ff9b::7f00:1]:{p}"), "non-public-ip:loopback"),
        ("169.254.169.254:80".into(), "non-public-ip:link-local"),
        ("0xa9fea9fe:80".into(), "non-public-ip:link-local"),
        ("2852039166:80".into(), "non-public-ip:link-local"),
        (
            "[::ffff:169.254.169.254]:80".into(),
            "non-public-ip:link-local",
        ),
        ("[::ffff:a9fe:a9fe]:80".into(), "non-public-ip:link-local"),
        ("[2002:a9fe:a9fe::1]:80".into(), "non-public-ip:link-local"),
        ("[fe80::1]:80".into(), "non-public-ip:link-local"),
        ("100.100.100.200:80".into(), "non-public-ip:cgnat"),
        ("[::ffff:100.100.100.200]:80".into(), "non-public-ip:cgnat"),
        ("192.0.0.192:80".into(), "non-public-ip:reserved"),
        ("meta.test:80".into(), "dns-non-public:link-local"),
        (format!("mixed.test:{p}"), "dns-non-public:loopback"),
    ];
    for (authority, want) in &cases {
        let reply = get(proxy.addr, &format!("http://{authority}/"));
        assert_eq!(reason(&reply), (403, *want), "GET {authority}");
        let (_, reply) = connect_tunnel(proxy.addr, authority);
        assert_eq!(reason(&reply), (403, *want), "CONNECT {authority}");
    }
    curl::run(
        Via::Socks5(proxy.socks_addr()),
        &["http://169.254.169.254/"],
    )
    .assert_socks_refused(NOT_ALLOWED);
    assert_eq!(local.request_count(), 0);
}

/// A reload that drops the declaration closes the tunnel it opened: the open connection is
/// judged again under the new generation, never grandfathered.
#[test]
fn a_reload_without_the_declaration_closes_its_tunnels() {
    if !in_namespace("listeners::a_reload_without_the_declaration_closes_its_tunnels") {
        return;
    }
    let origins = FakeIpOrigins::start();
    let dns = zone();
    let mut proxy = proxy(&dns, DECLARED);
    let (mut tunnel, reply) = connect_tunnel(proxy.addr, &format!("fake.test:{}", origins.echo));
    assert_eq!(reply.status, 200, "{reply:?}");
    tunnel.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    tunnel.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");

    proxy.rewrite("");
    expect_close(&mut tunnel);
    let deadline = Instant::now() + Duration::from_secs(5);
    let close = loop {
        let closes = proxy.audit.events("close");
        if let Some(line) = closes.into_iter().find(|v| v["host"] == "fake.test") {
            break line;
        }
        assert!(Instant::now() < deadline, "no close line for the tunnel");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(close["closed_by"], "policy-reload", "{close}");
    assert_eq!(close["reason"], "dns-non-public:benchmarking", "{close}");
    let (_, reply) = connect_tunnel(proxy.addr, &format!("fake.test:{}", origins.echo));
    assert_eq!(reason(&reply), (403, "dns-non-public:benchmarking"));
}

/// SOCKS5 UDP datagrams go through the same engine: to a fake-IP address (literal or name)
/// they are dropped without the declaration and echoed with it; to a metadata address never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_to_a_declared_range_are_relayed() {
    if !in_namespace("listeners::udp_datagrams_to_a_declared_range_are_relayed") {
        return;
    }
    let (port, echoed) = udp_echo();
    let dns = zone();
    let plain = Proxy::builder().allow("*").dns(&dns).start().await;
    let a = associate(plain.socks_addr(), true).await;
    a.send(&datagram(0, Dest::V4(FAKE_IP.octets()), port, b"literal"))
        .await;
    a.send(&datagram(0, Dest::Name(b"fake.test"), port, b"name"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while plain.denials("socks-udp").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            plain.denials("socks-udp")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        plain.denials("socks-udp"),
        [
            ("198.18.0.1".to_string(), "non-public-ip:benchmarking"),
            ("fake.test".to_string(), "dns-non-public:benchmarking"),
        ]
    );
    assert_eq!(echoed.load(Ordering::SeqCst), 0);

    let declared = Proxy::builder()
        .allow("*")
        .dns(&dns)
        .toml(DECLARED)
        .start()
        .await;
    let a = associate(declared.socks_addr(), true).await;
    a.round_trip(Dest::V4(FAKE_IP.octets()), port, b"literal")
        .await;
    a.round_trip(Dest::Name(b"fake.test"), port, b"name").await;
    a.round_trip(Dest::V6(FAKE_IP.to_ipv6_mapped()), port, b"mapped")
        .await;
    let metadata: Ipv6Addr = "::ffff:169.254.169.254".parse().unwrap();
    a.send(&datagram(0, Dest::V6(metadata), port, b"metadata"))
        .await;
    // Handled in order: once this echo is back, the metadata datagram was refused. (Its
    // header names the address the way it was last decided, so only the payload is compared.)
    a.send(&datagram(0, Dest::Name(b"fake.test"), port, b"last"))
        .await;
    assert!(a.recv().await.ends_with(b"last"));
    assert_eq!(echoed.load(Ordering::SeqCst), 4);
    let denied: Vec<_> = declared.denials("socks-udp");
    assert_eq!(
        denied,
        [(
            "::ffff:169.254.169.254".to_string(),
            "non-public-ip:link-local"
        )]
    );
}

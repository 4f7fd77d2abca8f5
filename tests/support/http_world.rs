//! The world the HTTP listener tests run in: a fake DNS server answering 127.0.0.1 (or not at
//! all), a loopback origin and echo server, and the harness proxy with the standard policy.
//! Every blocked case checks the status, both `x-proxy-*` headers, and that the origin
//! recorded nothing.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use super::fake_dns::{Answer, FakeDns};
use super::harness::{Proxy, ProxyBuilder};
use super::http::blocking::get;
use super::origin::{HttpOrigin, TcpEcho};
use super::reply::Reply;

pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Names every test may use. All answer 127.0.0.1 unless they are about DNS failure, so a proxy
/// that wrongly let one through would reach the origin and be caught.
pub fn zone() -> Vec<(&'static str, Answer)> {
    let lo = || Answer::A(vec![LOOPBACK]);
    vec![
        ("allowed.test", lo()),
        ("api.corp.test", lo()),
        ("evil.corp.test", lo()),
        ("other.test", lo()),
        ("gone.test", Answer::NxDomain),
        ("silent.test", Answer::NoReply),
    ]
}

/// allow `allowed.test`, `**.corp.test`, `gone.test`, `silent.test`; deny `evil.corp.test`;
/// `allow_local_binding = true` so the fake DNS's 127.0.0.1 is acceptable.
pub fn standard(dns: &FakeDns) -> ProxyBuilder {
    Proxy::builder()
        .allow("allowed.test")
        .allow("**.corp.test")
        .deny("evil.corp.test")
        .allow("gone.test")
        .allow("silent.test")
        .allow_local_binding(true)
        .dns(dns)
}

pub struct World {
    pub proxy: Proxy,
    pub origin: HttpOrigin,
    pub echo: TcpEcho,
    pub dns: FakeDns,
}

impl World {
    pub fn start() -> World {
        World::with(|b| b)
    }

    /// The standard policy, changed by `customize`.
    pub fn with(customize: impl FnOnce(ProxyBuilder) -> ProxyBuilder) -> World {
        let dns = FakeDns::start(zone());
        let proxy = customize(standard(&dns)).start_blocking();
        World {
            proxy,
            origin: HttpOrigin::start(),
            echo: TcpEcho::start(),
            dns,
        }
    }

    /// `http://HOST:ORIGIN_PORT/PATH`.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.origin.addr.port())
    }

    /// `HOST:ORIGIN_PORT`.
    pub fn at_origin(&self, host: &str) -> String {
        format!("{host}:{}", self.origin.addr.port())
    }

    /// `HOST:ECHO_PORT`.
    pub fn at_echo(&self, host: &str) -> String {
        format!("{host}:{}", self.echo.addr.port())
    }

    #[track_caller]
    pub fn assert_nothing_reached_upstream(&self) {
        assert_eq!(
            self.origin.requests(),
            Vec::<String>::new(),
            "the origin was reached"
        );
        assert_eq!(self.origin.connections(), 0, "the origin was connected to");
        assert_eq!(
            self.echo.connections(),
            0,
            "the echo server was connected to"
        );
    }
}

/// A listener on 127.0.0.1 that runs `handler` on its first connection, for origins that must
/// behave in one specific way.
pub fn one_shot_origin(handler: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            handler(stream);
        }
    });
    addr
}

pub fn read_until(stream: &mut impl Read, end: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(end) {
        match stream.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            _ => break,
        }
    }
    got
}

/// A request through `w` that must work, to show the proxy still serves others.
#[track_caller]
pub fn assert_still_serving(w: &World, path: &str) {
    let reply = get(w.proxy.addr, &w.url("allowed.test", path));
    assert_eq!(reply.status, 200, "the proxy stopped serving: {reply:?}");
}

#[track_caller]
pub fn assert_verdict(reply: &Reply, status: u16, error: &str, reason: &str) {
    assert_eq!(
        reply.verdict(),
        (status, Some(error), Some(reason)),
        "reply: {reply:?}"
    );
}

/// A one-line denial body that names host:port, the reason, and the rule (or "rule: none").
#[track_caller]
pub fn assert_denial_body(reply: &Reply, dest: &str, reason: &str, rule: &str) {
    let body = &reply.body;
    assert!(
        body.ends_with('\n') && body.matches('\n').count() == 1,
        "not one line: {body:?}"
    );
    for part in [dest, reason, rule] {
        assert!(body.contains(part), "{part:?} missing from {body:?}");
    }
}

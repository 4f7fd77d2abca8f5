//! Every row of the README's reason-code table, through each listener that can give it:
//! a plain-HTTP GET via the proxy, a CONNECT, and a SOCKS5 CONNECT. Each row asserts the HTTP
//! status, `x-proxy-error`, `x-proxy-reason` and the SOCKS5 reply code the proxy gives today.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use egress_proxy::policy::Mode;
use support::fake_dns::{Answer, FakeDns};
use support::harness::{Proxy, ProxyBuilder};
use support::http::{exchange, proxy_connect, Reply};
use support::socks::{self, Dest, CONNECT, HOST_UNREACHABLE, NOT_ALLOWED};

/// Where a row's requests go.
#[derive(Clone, Copy)]
enum Target {
    /// `host` on a port nothing listens on (a denial never dials it).
    Host(&'static str),
    /// `127.0.0.1` on the proxy's own HTTP listener.
    OwnListener,
    /// A Unix socket nobody listed, through `x-unix-socket` (HTTP only).
    UnixSocket,
}

struct Row {
    reason: &'static str,
    error: &'static str,
    status: u16,
    /// `None`: the SOCKS5 listener has no way to ask for this.
    socks: Option<u8>,
    target: Target,
    setup: fn(ProxyBuilder) -> ProxyBuilder,
    /// The plain GET carries a body (`limited` mode refuses that).
    get_body: bool,
    /// `false`: only the plain GET can ask for this.
    connect: bool,
    /// `false`: only a tunnel can ask for this.
    get: bool,
}

const fn row(reason: &'static str, error: &'static str, status: u16, socks: u8) -> Row {
    Row {
        reason,
        error,
        status,
        socks: Some(socks),
        target: Target::Host("allowed.test"),
        setup: |b| b,
        get_body: false,
        connect: true,
        get: true,
    }
}

fn table() -> Vec<Row> {
    vec![
        Row {
            target: Target::Host("denied.test"),
            ..row("deny-rule", "blocked-by-denylist", 403, NOT_ALLOWED)
        },
        Row {
            target: Target::Host("unlisted.test"),
            ..row("not-allowed", "blocked-by-allowlist", 403, NOT_ALLOWED)
        },
        Row {
            setup: |b| b.mode(Mode::Limited).allow_local_binding(true),
            get_body: true,
            socks: None,
            connect: false,
            ..row(
                "method-not-allowed",
                "blocked-by-method-policy",
                403,
                NOT_ALLOWED,
            )
        },
        Row {
            setup: |b| b.mode(Mode::Limited).allow_local_binding(true),
            get: false,
            ..row(
                "mitm-required",
                "blocked-by-mitm-required",
                403,
                NOT_ALLOWED,
            )
        },
        Row {
            target: Target::Host("127.0.0.1"),
            setup: |b| b.allow("*"),
            ..row(
                "non-public-ip:loopback",
                "blocked-by-policy",
                403,
                NOT_ALLOWED,
            )
        },
        row(
            "dns-non-public:loopback",
            "blocked-by-policy",
            403,
            NOT_ALLOWED,
        ),
        Row {
            socks: None,
            target: Target::UnixSocket,
            connect: false,
            ..row("unix-socket-denied", "blocked-by-policy", 403, 0)
        },
        Row {
            target: Target::OwnListener,
            setup: |b| b.allow("127.0.0.1"),
            ..row("self-connection", "blocked-by-policy", 403, NOT_ALLOWED)
        },
        Row {
            target: Target::Host("a..test"),
            ..row("invalid-host", "blocked-by-policy", 400, NOT_ALLOWED)
        },
        Row {
            target: Target::Host("gone.test"),
            ..row("dns-failed", "blocked-by-policy", 502, HOST_UNREACHABLE)
        },
    ]
}

/// The port every `Target::Host` request names: nothing listens there.
const PORT: u16 = 9;

fn verdict(reply: &Reply) -> (u16, Option<&str>, Option<&str>) {
    (
        reply.status,
        reply.header("x-proxy-error"),
        reply.header("x-proxy-reason"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reason_code_through_every_listener() {
    let localhost = Answer::A(vec![Ipv4Addr::LOCALHOST]);
    let dns = FakeDns::start(vec![
        ("allowed.test", localhost.clone()),
        ("denied.test", localhost.clone()),
        ("unlisted.test", localhost),
        ("gone.test", Answer::NxDomain),
    ]);
    for row in table() {
        let base = Proxy::builder()
            .allow("allowed.test")
            .allow("denied.test")
            .deny("denied.test")
            .allow("gone.test")
            .dns(&dns);
        let proxy = (row.setup)(base).start().await;
        let (host, port) = match row.target {
            Target::Host(host) => (host, PORT),
            Target::OwnListener => ("127.0.0.1", proxy.addr.port()),
            Target::UnixSocket => ("localhost", 80),
        };
        let authority = format!("{host}:{port}");
        let want = (row.status, Some(row.error), Some(row.reason));

        let unix = match row.target {
            Target::UnixSocket => "x-unix-socket: /nonexistent/egress-proxy-denials.sock\r\n",
            _ => "",
        };
        let body = if row.get_body {
            "Content-Length: 3\r\n\r\nabc"
        } else {
            "\r\n"
        };
        let get = format!(
            "GET http://{authority}/path HTTP/1.1\r\nHost: {authority}\r\n{unix}\
             Connection: close\r\n{body}"
        );
        if row.get {
            let reply = exchange(proxy.addr, &get, false).await;
            assert_eq!(verdict(&reply), want, "GET {}: {reply:?}", row.reason);
        }

        if row.connect {
            let reply = proxy_connect(proxy.addr, &authority).await;
            assert_eq!(verdict(&reply), want, "CONNECT {}: {reply:?}", row.reason);
        }

        if let Some(code) = row.socks {
            let dest = match host.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => Dest::V4(ip.octets()),
                Ok(IpAddr::V6(ip)) => Dest::V6(ip),
                Err(_) => Dest::Name(host.as_bytes()),
            };
            let (got, _) = socks::ask(proxy.socks_addr(), CONNECT, dest, port).await;
            assert_eq!(got, code, "SOCKS5 {}", row.reason);
            let denials = proxy.denials("socks-tcp");
            assert_eq!(
                denials.last().map(|d| d.1),
                Some(row.reason),
                "SOCKS5 {}: {denials:?}",
                row.reason
            );
        }
    }
}

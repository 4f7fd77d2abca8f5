//! An `http://` upstream: CONNECT, forward and SOCKS5 TCP through it, the policy before it,
//! `resolve = "upstream"`, `NO_PROXY`, basic auth, refusals and an upstream that is down.

use crate::support::harness::TOKEN;
use crate::support::http::{exchange, proxy_get};
use crate::support::socks;
use crate::support::upstream::{HttpOptions, HttpUpstream};
use crate::*;

fn options() -> HttpOptions {
    HttpOptions::default()
}

#[tokio::test]
async fn connect_forward_and_socks_go_through_the_upstream_by_name() {
    let (dns, echo) = (dns(), echo());
    let upstream = HttpUpstream::start(echo.addr, options());
    let url = format!("http://{}", upstream.addr);
    let proxy = proxy(&dns).toml(&upstream_toml(&url, "")).start().await;

    let (reply, mut stream) = tunnel(proxy.addr, "Allowed.TEST.:443").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_echoes(&mut stream).await;
    drop(stream);

    let reply = proxy_get(
        proxy.addr,
        "allowed.test:8080",
        "Proxy-Authorization: Basic Y2xpZW50\r\n",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "upstream saw GET http://allowed.test:8080/path");

    let (code, mut stream) = socks::ask(
        proxy.socks_addr(),
        socks::CONNECT,
        socks::Dest::Name(b"allowed.test"),
        22,
    )
    .await;
    assert_eq!(code, socks::SUCCEEDED);
    socks::echo_through(&mut stream, b"over socks").await;
    drop(stream);

    let asked = upstream.asked();
    let lines: Vec<&str> = asked.iter().map(|a| a.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "CONNECT allowed.test:443",
            "GET http://allowed.test:8080/path",
            "CONNECT allowed.test:22"
        ]
    );
    assert!(
        asked.iter().all(|a| a.authorization.is_none()),
        "the client's Proxy-Authorization is never passed on: {asked:?}"
    );
    // The audit lines say the connection went through the upstream.
    let decisions = proxy.audit.events("decision");
    assert!(
        decisions.iter().all(|d| d["upstream"] == url.as_str()),
        "{decisions:?}"
    );
    let closes = closed_tunnels(&proxy, 2).await;
    assert!(
        closes.iter().all(|c| c["upstream"] == url.as_str()),
        "{closes:?}"
    );
}

#[tokio::test]
async fn the_policy_decides_before_anything_reaches_the_upstream() {
    let (dns, echo) = (dns(), echo());
    let upstream = HttpUpstream::start(echo.addr, options());
    let url = format!("http://{}", upstream.addr);
    let local_off = Proxy::builder()
        .allow("allowed.test")
        .allow("gone.test")
        .deny("denied.test")
        .dns(&dns)
        .toml(&upstream_toml(&url, ""))
        .start()
        .await;
    let rows = [
        (local_off.addr, "denied.test:443", "deny-rule"),
        (local_off.addr, "elsewhere.example:443", "not-allowed"),
        // Resolved here: its answer is loopback, and local answers are not allowed.
        (
            local_off.addr,
            "allowed.test:443",
            "dns-non-public:loopback",
        ),
        (local_off.addr, "gone.test:443", "dns-failed"),
        (local_off.addr, "127.0.0.1:443", "not-allowed"),
        (local_off.addr, "169.254.169.254:80", "not-allowed"),
    ];
    for (addr, target, reason) in rows {
        let (status, got) = connect_verdict(addr, target).await;
        assert_eq!(got.as_deref(), Some(reason), "{target} {status}");
    }
    let reply = proxy_get(local_off.addr, "denied.test", "").await;
    assert_eq!(reply.header("x-proxy-reason"), Some("deny-rule"));
    let (code, _) = socks::ask(
        local_off.socks_addr(),
        socks::CONNECT,
        socks::Dest::Name(b"denied.test"),
        80,
    )
    .await;
    assert_eq!(code, socks::NOT_ALLOWED);
    assert_eq!(
        upstream.lines(),
        Vec::<String>::new(),
        "nothing reached the upstream"
    );
    assert_eq!(echo.connections(), 0);
}

#[tokio::test]
async fn resolve_upstream_sends_names_unresolved_and_still_checks_addresses() {
    let (dns, echo) = (dns(), echo());
    let upstream = HttpUpstream::start(echo.addr, options());
    let url = format!("http://{}", upstream.addr);
    let proxy = Proxy::builder()
        .allow("allowed.test")
        .allow("**.corp.example")
        .deny("denied.test")
        .dns(&dns)
        .toml(&upstream_toml(&url, "resolve = \"upstream\"\n"))
        .start()
        .await;
    // Not in the fake zone, and allowed.test's answer is loopback: resolved here, both would
    // be refused. Left to the upstream, they go.
    for name in ["only-upstream-knows.corp.example:443", "allowed.test:443"] {
        let (reply, mut stream) = tunnel(proxy.addr, name).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.body);
        assert_echoes(&mut stream).await;
    }
    assert_eq!(
        dns.queries("only-upstream-knows.corp.example"),
        0,
        "never resolved here"
    );
    assert_eq!(dns.queries("allowed.test"), 0, "never resolved here");
    let refused = [
        ("denied.test:443", "deny-rule"),
        ("elsewhere.example:443", "not-allowed"),
        ("127.0.0.1:443", "not-allowed"),
        ("[::ffff:127.0.0.1]:443", "not-allowed"),
        ("169.254.169.254:80", "not-allowed"),
    ];
    for (target, reason) in refused {
        let (_, got) = connect_verdict(proxy.addr, target).await;
        assert_eq!(got.as_deref(), Some(reason), "{target}");
    }
    assert_eq!(
        upstream.lines(),
        [
            "CONNECT only-upstream-knows.corp.example:443",
            "CONNECT allowed.test:443"
        ]
    );
    let decisions = proxy.audit.events("decision");
    let allowed: Vec<_> = decisions
        .iter()
        .filter(|d| d["verdict"] == "allow")
        .collect();
    assert_eq!(allowed.len(), 2);
    assert!(
        allowed
            .iter()
            .all(|d| d["ip"].is_null() && d["upstream"] == url.as_str()),
        "{allowed:?}"
    );
}

#[tokio::test]
async fn no_proxy_and_loopback_go_direct() {
    let (dns, echo) = (dns(), echo());
    let upstream = HttpUpstream::start(echo.addr, options());
    let proxy = proxy(&dns)
        .allow("127.0.0.1")
        .env("HTTPS_PROXY", &format!("http://{}", upstream.addr))
        .env("NO_PROXY", ".internal.test")
        .start()
        .await;
    let port = echo.addr.port();
    for direct in [
        format!("direct.internal.test:{port}"),
        format!("127.0.0.1:{port}"),
    ] {
        let (reply, mut stream) = tunnel(proxy.addr, &direct).await;
        assert_eq!(reply.status, 200, "{direct}: {}", reply.body);
        assert_echoes(&mut stream).await;
    }
    assert!(upstream.lines().is_empty(), "{:?}", upstream.lines());
    let (reply, _) = tunnel(proxy.addr, "allowed.test:443").await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.lines(), ["CONNECT allowed.test:443"]);
    let decisions = proxy.audit.events("decision");
    assert!(decisions[0].get("upstream").is_none(), "{decisions:?}");
}

#[tokio::test]
async fn basic_auth_for_the_upstream_only() {
    let (dns, echo) = (dns(), echo());
    let upstream = HttpUpstream::start(
        echo.addr,
        HttpOptions {
            auth: Some(("corp user", SECRET)),
            ..options()
        },
    );
    let good = format!("http://corp%20user:{SECRET}@{}", upstream.addr);
    let proxy = proxy(&dns)
        .toml(&upstream_toml(&good, ""))
        .admin()
        .start()
        .await;
    let (reply, mut stream) = tunnel(proxy.addr, "allowed.test:443").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_echoes(&mut stream).await;
    let reply = proxy_get(proxy.addr, "allowed.test", "").await;
    assert_eq!(reply.body, "upstream saw GET http://allowed.test:80/path");
    let expected = "Basic Y29ycCB1c2VyOmh1bnRlcjItczNjcmV0";
    assert!(
        upstream
            .asked()
            .iter()
            .all(|a| a.authorization.as_deref() == Some(expected)),
        "{:?}",
        upstream.asked()
    );
    // The admin API's /config shows the upstream without the password.
    let config = exchange(
        proxy.admin.unwrap(),
        &format!("GET /config HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
        false,
    )
    .await;
    assert!(
        config
            .body
            .contains(&format!("http://corp%20user:***@{}", upstream.addr)),
        "{}",
        config.body
    );
    assert!(!config.body.contains(SECRET));

    for url in [
        format!("http://corp%20user:wrong@{}", upstream.addr),
        format!("http://{}", upstream.addr),
    ] {
        let proxy = crate::proxy(&dns)
            .toml(&upstream_toml(&url, ""))
            .start()
            .await;
        let (reply, _) = tunnel(proxy.addr, "allowed.test:443").await;
        assert_eq!(
            reply.verdict(),
            (502, Some("upstream-auth"), Some("upstream-auth")),
            "{url}"
        );
        assert!(reply.body.contains("HTTP 407"), "{}", reply.body);
        let reply = proxy_get(proxy.addr, "allowed.test", "").await;
        assert_eq!(
            reply.verdict(),
            (502, Some("upstream-auth"), Some("upstream-auth")),
            "{url}"
        );
        let (code, _) = socks::ask(
            proxy.socks_addr(),
            socks::CONNECT,
            socks::Dest::Name(b"allowed.test"),
            22,
        )
        .await;
        assert_eq!(code, socks::GENERAL_FAILURE);
    }
    let audit = format!("{:?}", proxy.audit.events("decision"));
    assert!(!audit.contains(SECRET), "{audit}");
}

#[tokio::test]
async fn a_refusal_names_the_upstreams_status() {
    let (dns, echo) = (dns(), echo());
    for (status, socks_code) in [(403, socks::NOT_ALLOWED), (503, socks::HOST_UNREACHABLE)] {
        let upstream = HttpUpstream::start(
            echo.addr,
            HttpOptions {
                refuse: Some(status),
                ..options()
            },
        );
        let url = format!("http://{}", upstream.addr);
        let proxy = proxy(&dns).toml(&upstream_toml(&url, "")).start().await;
        let (reply, _) = tunnel(proxy.addr, "allowed.test:443").await;
        assert_eq!(
            reply.verdict(),
            (502, Some("upstream-refused"), Some("upstream-refused"))
        );
        assert_eq!(
            reply.body,
            format!("egress-proxy: cannot connect to allowed.test:443: the upstream proxy {url} refused: HTTP {status}\n")
        );
        let (code, _) = socks::ask(
            proxy.socks_addr(),
            socks::CONNECT,
            socks::Dest::Name(b"allowed.test"),
            22,
        )
        .await;
        assert_eq!(code, socks_code, "{status}");
    }
}

#[tokio::test]
async fn an_upstream_that_is_down_is_unreachable() {
    let dns = dns();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{closed}");
    let proxy = proxy(&dns).toml(&upstream_toml(&url, "")).start().await;
    let (reply, _) = tunnel(proxy.addr, "allowed.test:443").await;
    assert_eq!(
        reply.verdict(),
        (
            502,
            Some("upstream-unreachable"),
            Some("upstream-unreachable")
        )
    );
    assert!(
        reply
            .body
            .contains(&format!("cannot reach the upstream proxy {url}")),
        "{}",
        reply.body
    );
    let reply = proxy_get(proxy.addr, "allowed.test", "").await;
    assert_eq!(
        reply.verdict(),
        (
            502,
            Some("upstream-unreachable"),
            Some("upstream-unreachable")
        )
    );
    let (code, _) = socks::ask(
        proxy.socks_addr(),
        socks::CONNECT,
        socks::Dest::Name(b"allowed.test"),
        22,
    )
    .await;
    assert_eq!(code, socks::GENERAL_FAILURE);
}

#[tokio::test]
async fn allow_upstream_proxy_false_dials_directly_despite_the_environment() {
    let (dns, echo) = (dns(), echo());
    let upstream = HttpUpstream::start(echo.addr, options());
    let url = format!("http://{}", upstream.addr);
    let proxy = proxy(&dns)
        .toml("allow_upstream_proxy = false")
        .env("HTTPS_PROXY", &url)
        .env("http_proxy", &url)
        .env("ALL_PROXY", &url)
        .start()
        .await;
    let (reply, mut stream) =
        tunnel(proxy.addr, &format!("allowed.test:{}", echo.addr.port())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_echoes(&mut stream).await;
    assert!(upstream.lines().is_empty());
}

/// A loopback upstream needs no `allow_local_binding`, and a name for it is resolved by the
/// system resolver, never by the fake DNS that judges destinations.
#[tokio::test]
async fn the_upstreams_own_address_is_never_judged() {
    let echo = echo();
    let upstream = HttpUpstream::start(echo.addr, options());
    let url = format!("http://localhost:{}", upstream.addr.port());
    let dns = FakeDns::start(vec![(
        "only.example",
        Answer::A(vec!["192.0.2.10".parse().unwrap()]),
    )]);
    let proxy = Proxy::builder()
        .allow("only.example")
        .dns(&dns)
        .toml(&upstream_toml(&url, "resolve = \"upstream\"\n"))
        .start()
        .await;
    let (reply, mut stream) = tunnel(proxy.addr, "only.example:443").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_echoes(&mut stream).await;
    assert_eq!(dns.queries("localhost"), 0);
    assert_eq!(upstream.lines(), ["CONNECT only.example:443"]);
}

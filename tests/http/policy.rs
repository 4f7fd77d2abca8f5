//! Which destinations the HTTP listener refuses, and how: deny and allow rules, loopback
//! spellings, DNS failures and rebinding, unreachable ports, limited mode and the proxy
//! itself. Every blocked case checks the status, both `x-proxy-*` headers, and that the
//! origin recorded nothing.

use std::io::{Read, Write};

use crate::support::curl::{self, Via};
use crate::support::harness::Proxy;
use crate::support::http::blocking::{
    connect, connect_tunnel, get, raw_request, read_head, read_reply,
};
use crate::support::http_world::{assert_denial_body, assert_verdict, World};
use crate::support::reply::Reply;
use egress_proxy::policy::Mode;

#[test]
fn denied_name_is_403_deny_rule_and_never_reaches_the_origin() {
    let w = World::start();
    let reply = get(w.proxy.addr, &w.url("evil.corp.test", "/"));
    assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    assert_denial_body(
        &reply,
        &w.at_origin("evil.corp.test"),
        "deny-rule",
        "rule deny `evil.corp.test` (--deny)",
    );
    let reply = curl::reply(Via::Proxy(&w.proxy.url()), &[&w.url("evil.corp.test", "/")]);
    assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("evil.corp.test"));
    assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    // curl -p reports the refused CONNECT.
    let out = curl::run(
        Via::Tunnel(&w.proxy.url()),
        &[&w.url("evil.corp.test", "/")],
    );
    out.assert_failed_with("403");
    // A sibling under the same wildcard is allowed: the deny is what blocked.
    let reply = get(w.proxy.addr, &w.url("api.corp.test", "/sibling"));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(w.origin.request_count(), 1);
    assert_eq!(
        w.origin.requests()[0].lines().next(),
        Some("GET /sibling HTTP/1.1")
    );
    assert_eq!(w.echo.connections(), 0);
    // Denied before any lookup: the name never leaked to DNS.
    assert_eq!(w.dns.queries("evil.corp.test"), 0);
}

/// Case, a trailing dot and percent-encoding do not get around a deny rule.
#[test]
fn denied_name_in_other_spellings_is_still_denied() {
    let w = World::start();
    for host in ["EVIL.corp.test", "evil.corp.test.", "Evil.Corp.Test."] {
        let reply = get(w.proxy.addr, &w.url(host, "/"));
        assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
        let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo(host));
        assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    }
    // Percent-encoding is either decoded (and denied) or refused outright.
    let reply = get(w.proxy.addr, &w.url("evil%2Ecorp.test", "/"));
    assert!(
        reply.verdict() == (403, Some("blocked-by-denylist"), Some("deny-rule"))
            || reply.status == 400,
        "{reply:?}"
    );
    w.assert_nothing_reached_upstream();
    // The same spellings of an allowed name work.
    let reply = get(w.proxy.addr, &w.url("ALLOWED.Test.", "/case"));
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[test]
fn unlisted_name_is_403_not_allowed() {
    let w = World::start();
    let reply = get(w.proxy.addr, &w.url("other.test", "/"));
    assert_verdict(&reply, 403, "blocked-by-allowlist", "not-allowed");
    assert_denial_body(
        &reply,
        &w.at_origin("other.test"),
        "not-allowed",
        "rule: none",
    );
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("other.test"));
    assert_verdict(&reply, 403, "blocked-by-allowlist", "not-allowed");
    let reply = curl::reply(Via::Proxy(&w.proxy.url()), &[&w.url("other.test", "/")]);
    assert_verdict(&reply, 403, "blocked-by-allowlist", "not-allowed");
    w.assert_nothing_reached_upstream();
    assert_eq!(w.dns.queries("other.test"), 0);
}

/// Legacy IPv4 spellings of 127.0.0.1 and IPv6 forms of loopback, as URL hosts.
const LOOPBACK_SPELLINGS: &[&str] = &[
    "127.1",
    "0x7f.0.0.1",
    "2130706433",
    "0177.0.0.1",
    "0x7f.1",
    "127.0.0.1.",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
];

#[test]
fn loopback_spellings_are_not_allowed_by_a_name_rule() {
    let w = World::start();
    for host in LOOPBACK_SPELLINGS {
        let reply = get(w.proxy.addr, &w.url(host, "/"));
        assert_verdict(&reply, 403, "blocked-by-allowlist", "not-allowed");
        let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo(host));
        assert_verdict(&reply, 403, "blocked-by-allowlist", "not-allowed");
    }
    w.assert_nothing_reached_upstream();
}

#[test]
fn loopback_spellings_are_non_public_under_a_global_allow() {
    let w = World::with(|b| b.allow("*").allow_local_binding(false));
    for host in LOOPBACK_SPELLINGS {
        let reply = get(w.proxy.addr, &w.url(host, "/"));
        assert_verdict(&reply, 403, "blocked-by-policy", "non-public-ip:loopback");
        let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo(host));
        assert_verdict(&reply, 403, "blocked-by-policy", "non-public-ip:loopback");
    }
    w.assert_nothing_reached_upstream();
}

/// The control for the two tests above: each spelling really is 127.0.0.1 (the IPv4 ones and
/// the mapped IPv6 ones reach the origin once local binding is allowed).
#[test]
fn loopback_spellings_reach_127_0_0_1_when_local_binding_is_allowed() {
    let w = World::with(|b| b.allow("*").allow_local_binding(true));
    let reachable: Vec<&str> = LOOPBACK_SPELLINGS
        .iter()
        .copied()
        .filter(|h| *h != "[::1]")
        .collect();
    for host in &reachable {
        let reply = get(w.proxy.addr, &w.url(host, "/spelling"));
        assert_eq!(reply.status, 200, "{host}: {reply:?}");
        let (mut stream, reply) = connect_tunnel(w.proxy.addr, &w.at_echo(host));
        assert_eq!(reply.status, 200, "{host}: {reply:?}");
        stream.write_all(b"x").unwrap();
        let mut x = [0u8; 1];
        stream.read_exact(&mut x).unwrap();
    }
    assert_eq!(w.origin.request_count(), reachable.len());
    assert_eq!(w.echo.connections(), reachable.len());
}

#[test]
fn userinfo_is_never_the_destination() {
    let w = World::start();
    let port = w.origin.addr.port();
    for url in [
        format!("http://allowed.test@127.0.0.1:{port}/"),
        format!("http://allowed.test:{port}@127.0.0.1:{port}/"),
        format!("http://allowed.test:pw@127.1:{port}/"),
    ] {
        let reply = raw_request(
            w.proxy.addr,
            format!("GET {url} HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n").as_bytes(),
        );
        assert_verdict(&reply, 403, "blocked-by-allowlist", "not-allowed");
        assert!(
            reply.body.contains(&format!("127.0.0.1:{port}")),
            "{url}: {reply:?}"
        );
    }
    // In a CONNECT target `@` is simply invalid.
    let (_, reply) = connect_tunnel(
        w.proxy.addr,
        &format!("allowed.test@127.0.0.1:{}", w.echo.addr.port()),
    );
    assert_eq!(reply.status, 400, "{reply:?}");
    w.assert_nothing_reached_upstream();

    // The other way round, the allowed name is the destination and userinfo is not forwarded.
    let reply = get(
        w.proxy.addr,
        &format!("http://127.0.0.1:{port}@allowed.test:{port}/ui"),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let head = &w.origin.requests()[0];
    assert!(head.starts_with("GET /ui HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("\r\nhost: allowed.test:{port}")),
        "{head}"
    );
    assert!(!head.contains('@'), "{head}");
}

#[test]
fn the_request_uri_decides_not_the_host_header() {
    let w = World::start();
    // A denied URI with an allowed Host header is denied.
    let reply = raw_request(
        w.proxy.addr,
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            w.url("evil.corp.test", "/"),
            w.at_origin("allowed.test")
        )
        .as_bytes(),
    );
    assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    w.assert_nothing_reached_upstream();

    // An allowed URI with a denied Host header goes to the URI, with Host rewritten to match.
    let reply = raw_request(
        w.proxy.addr,
        format!(
            "GET {} HTTP/1.1\r\nHost: evil.corp.test\r\n\r\n",
            w.url("allowed.test", "/h")
        )
        .as_bytes(),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let head = w.origin.requests()[0].to_ascii_lowercase();
    let hosts: Vec<&str> = head
        .split("\r\n")
        .filter(|l| l.starts_with("host:"))
        .collect();
    assert_eq!(
        hosts,
        [format!("host: {}", w.at_origin("allowed.test"))],
        "{head}"
    );
}

#[test]
fn invalid_hosts_are_400_invalid_host() {
    let w = World::start();
    let port = w.origin.addr.port();
    for host in [
        format!("allowed..test:{port}"),
        format!("127.0.0.1.1:{port}"),
        format!("[::1%25lo]:{port}"),
        "allowed.test:0".to_string(),
    ] {
        let reply = get(w.proxy.addr, &format!("http://{host}/"));
        assert_verdict(&reply, 400, "blocked-by-policy", "invalid-host");
    }
    for authority in ["allowed.test", "allowed..test:443", "allowed.test:0"] {
        let (_, reply) = connect_tunnel(w.proxy.addr, authority);
        assert_verdict(&reply, 400, "blocked-by-policy", "invalid-host");
    }
    // hyper refuses this request line itself, before the policy sees a target.
    let (_, reply) = connect_tunnel(w.proxy.addr, "::1:443");
    assert_eq!(reply.verdict(), (400, None, None), "{reply:?}");
    w.assert_nothing_reached_upstream();
}

/// `check URL` and the listener derive a URL's destination with one function, so they agree on
/// every URL: the listener answers 400 exactly when `check` says `invalid-host`, and otherwise
/// both name the same canonical host and port and reach the same decision. A tunnelled scheme
/// (`https`, `ws`, `wss`) is never forwarded (400) and is judged as the CONNECT a client sends.
#[test]
fn check_and_the_listener_agree_on_every_url() {
    let proxy = Proxy::builder().deny("evil.test").start_blocking();
    let urls = [
        "http:///path",
        "http://",
        "http://:80/",
        "http://a@b/",
        "http://@b/",
        "http://a@/",
        "http://a@b@c/",
        "http://[x]@c/",
        "http://u:p%40w@evil.test/",
        "http://[::1",
        "http://[::1/",
        "http://[::1]x/",
        "http://[::1]:8080/",
        "http://[fe80::1%25eth0]/",
        "http://::1/",
        "http://host:0/",
        "http://host:/",
        "http://host:65536/",
        "http://host:80:80/",
        "http://ho st/",
        "http://exa%6dple.com/",
        "http://bücher.de/",
        "http://a\\b/",
        "http://a\"b/",
        "http://*.example.com/",
        "http://a..b/",
        "http://1.2.3.4.5/",
        "HTTP://Example.COM./",
        "http://EVIL.test./x",
        "http://evil.test:8080?x",
        "http://127.0.0.1#@evil.test/",
        "http://127.1/",
        "http://0x7f.1/",
        "http://2130706433/",
        "http://[::ffff:127.0.0.1]/",
        "http://example.com/<",
        "http://example.com/`",
        "http://example.com/?\"",
        "http://example.com/a\"{}|^\\?{}`#<>",
        "ftp://x/",
        "gopher://x/",
        "ws://",
        "https://",
        "https://example.com/",
        "https://a@evil.test:8443/",
        "https://[::1]/",
        "wss://example.com/",
        "ws://evil.test/",
    ];
    let mut args = vec!["check", "--json", "--no-dns", "--deny", "evil.test"];
    args.extend(urls);
    let (_, out, err) = crate::support::bin::run(&args);
    assert_eq!(err, "");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), urls.len(), "{out}");
    // The decision and destination the listener reports: `(reason, host:port)`, or `None` for 400.
    let listener = |reply: &Reply| {
        if reply.status == 400 {
            return None;
        }
        let body = &reply.body;
        let dest = body
            .strip_prefix("egress-proxy: blocked ")
            .and_then(|rest| rest.split_once(": "))
            .unwrap_or_else(|| panic!("not a denial: {reply:?}"))
            .0
            .to_string();
        Some((reply.header("x-proxy-reason").unwrap().to_string(), dest))
    };
    for (url, line) in urls.iter().zip(&lines) {
        assert_eq!(line["target"], *url);
        let checked = (line["reason"] != "invalid-host").then(|| {
            let (host, port) = (line["host"].as_str().unwrap(), &line["port"]);
            let dest = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            (line["reason"].as_str().unwrap().to_string(), dest)
        });
        let forwarded = raw_request(
            proxy.addr,
            format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let tunnelled = !url.to_ascii_lowercase().starts_with("http://");
        if !tunnelled {
            assert_eq!(listener(&forwarded), checked, "{url}: {forwarded:?}");
            continue;
        }
        assert_eq!(forwarded.status, 400, "{url}: {forwarded:?}");
        if let Some((_, dest)) = &checked {
            let (_, reply) = connect_tunnel(proxy.addr, dest);
            assert_eq!(listener(&reply), checked, "{url} as CONNECT: {reply:?}");
        }
    }
}

/// A CIDR deny rule also judges the addresses a name resolves to: an allowed name whose
/// answer falls in a denied range never connects (the shape of a metadata-endpoint deny).
#[test]
fn a_cidr_deny_blocks_an_allowed_name_by_its_resolved_address() {
    let w = World::with(|b| b.deny("127.0.0.0/8"));
    let reply = get(w.proxy.addr, &w.url("allowed.test", "/"));
    assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    assert_denial_body(&reply, "allowed.test:", "deny-rule", "deny `127.0.0.0/8`");
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_origin("allowed.test"));
    assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    w.assert_nothing_reached_upstream();
}

#[test]
fn limited_mode_lets_get_head_and_options_through() {
    let w = World::with(|b| b.mode(Mode::Limited));
    let proxy = w.proxy.url();
    let reply = curl::reply(Via::Proxy(&proxy), &[&w.url("allowed.test", "/get")]);
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = curl::reply(Via::Proxy(&proxy), &["-I", &w.url("allowed.test", "/head")]);
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = curl::reply(
        Via::Proxy(&proxy),
        &["-X", "OPTIONS", &w.url("allowed.test", "/options")],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let lines: Vec<String> = w
        .origin
        .requests()
        .iter()
        .map(|h| h.lines().next().unwrap().to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "GET /get HTTP/1.1",
            "HEAD /head HTTP/1.1",
            "OPTIONS /options HTTP/1.1"
        ]
    );
}

#[test]
fn limited_mode_blocks_other_methods_and_connect() {
    let w = World::with(|b| b.mode(Mode::Limited));
    let reply = curl::reply(
        Via::Proxy(&w.proxy.url()),
        &["-d", "x=1", &w.url("allowed.test", "/post")],
    );
    assert_verdict(
        &reply,
        403,
        "blocked-by-method-policy",
        "method-not-allowed",
    );
    assert_denial_body(
        &reply,
        &w.at_origin("allowed.test"),
        "method-not-allowed",
        "rule: none",
    );
    for method in ["PUT", "DELETE", "PATCH", "get"] {
        let reply = raw_request(
            w.proxy.addr,
            format!(
                "{method} {} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                w.url("allowed.test", "/")
            )
            .as_bytes(),
        );
        assert_verdict(
            &reply,
            403,
            "blocked-by-method-policy",
            "method-not-allowed",
        );
    }
    // Without HTTPS inspection a tunnel's requests cannot be judged.
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("allowed.test"));
    assert_verdict(&reply, 403, "blocked-by-mitm-required", "mitm-required");
    let out = curl::run(Via::Tunnel(&w.proxy.url()), &[&w.url("allowed.test", "/")]);
    out.assert_failed_with("403");
    w.assert_nothing_reached_upstream();
}

/// Limited mode refuses a GET, HEAD or OPTIONS that carries a body (by length or chunked):
/// a body would make a read an upload. `Content-Length: 0` is no body.
#[test]
fn limited_mode_refuses_a_request_body_on_reads() {
    let w = World::with(|b| b.mode(Mode::Limited));
    let url = w.url("allowed.test", "/up");
    for (method, framing) in [
        ("GET", "Content-Length: 5\r\n\r\nhello"),
        ("HEAD", "Content-Length: 5\r\n\r\nhello"),
        ("OPTIONS", "Content-Length: 5\r\n\r\nhello"),
        (
            "GET",
            "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
    ] {
        let mut stream = connect(w.proxy.addr);
        write!(
            stream,
            "{method} {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{framing}"
        )
        .unwrap();
        // The answer to a HEAD has a length but no body.
        let reply = if method == "HEAD" {
            read_head(&mut stream)
        } else {
            read_reply(&mut stream)
        };
        assert_verdict(
            &reply,
            403,
            "blocked-by-method-policy",
            "method-not-allowed",
        );
        if method != "HEAD" {
            assert_denial_body(
                &reply,
                &w.at_origin("allowed.test"),
                "without a request body",
                "rule: none",
            );
        }
    }
    w.assert_nothing_reached_upstream();
    let reply = raw_request(
        w.proxy.addr,
        format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(w.origin.request_count(), 1);
}

#[test]
fn the_proxy_itself_is_never_a_destination() {
    let w = World::with(|b| b.allow("*").allow("localhost").allow("127.0.0.1"));
    let port = w.proxy.addr.port();
    for authority in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("allowed.test:{port}"),
        format!("127.0.0.2:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
    ] {
        let (_, reply) = connect_tunnel(w.proxy.addr, &authority);
        assert_verdict(&reply, 403, "blocked-by-policy", "self-connection");
        assert_denial_body(&reply, &format!(":{port}"), "self-connection", "rule");
        let reply = get(w.proxy.addr, &format!("http://{authority}/"));
        assert_verdict(&reply, 403, "blocked-by-policy", "self-connection");
    }
    // The unspecified address is refused for what it is.
    let (_, reply) = connect_tunnel(w.proxy.addr, &format!("0.0.0.0:{port}"));
    assert_verdict(
        &reply,
        403,
        "blocked-by-policy",
        "non-public-ip:unspecified",
    );
}

//! Session credentials on the HTTP listener (`run`'s default): every request, forward or
//! CONNECT, must carry `Proxy-Authorization: Basic base64(egress:<token>)`. Without it the
//! answer is 407 with a Basic challenge, before any policy decision or DNS lookup, and the
//! header never reaches an origin. Attacks: another spelling of the token, a prefix, an empty
//! password, another user, a second header, a kept connection's next request without it, an
//! oversized header.

use std::io::Write;

use base64::Engine as _;

use crate::support::curl::{self, Via};
use crate::support::http::blocking::{connect, connect_tunnel, raw_request, read_reply};
use crate::support::http_world::World;
use crate::support::reply::Reply;
use egress_proxy::session::SessionToken;

const TOKEN: &str = "5e55105e55105e55105e55105e55105e";

fn world() -> World {
    World::with(|b| b.session(SessionToken::parse(TOKEN).unwrap()))
}

/// `Proxy-Authorization: Basic base64(credentials)\r\n`.
fn basic(credentials: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    format!("Proxy-Authorization: Basic {encoded}\r\n")
}

fn good() -> String {
    basic(&format!("egress:{TOKEN}"))
}

fn get(w: &World, host: &str, headers: &str) -> Reply {
    let authority = w.at_origin(host);
    let request = format!(
        "GET http://{authority}/s HTTP/1.1\r\nHost: {authority}\r\n{headers}Connection: close\r\n\r\n"
    );
    raw_request(w.proxy.addr, request.as_bytes())
}

fn connect_with(w: &World, authority: &str, headers: &str) -> Reply {
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{headers}\r\n");
    let mut stream = connect(w.proxy.addr);
    stream.write_all(request.as_bytes()).unwrap();
    read_reply(&mut stream)
}

#[track_caller]
fn assert_407(reply: &Reply) {
    assert_eq!(
        reply.verdict(),
        (
            407,
            Some("proxy-auth-required"),
            Some("proxy-auth-required")
        ),
        "{reply:?}"
    );
    assert_eq!(
        reply.header("proxy-authenticate"),
        Some("Basic realm=\"egress-proxy\""),
        "{reply:?}"
    );
    assert!(
        reply
            .body
            .starts_with("egress-proxy: proxy authentication required"),
        "{reply:?}"
    );
}

#[test]
fn without_credentials_every_request_is_407_before_any_decision_or_lookup() {
    let w = world();
    for host in ["allowed.test", "evil.corp.test", "other.test", "gone.test"] {
        assert_407(&get(&w, host, ""));
        assert_407(&connect_with(&w, &w.at_echo(host), ""));
        assert_eq!(w.dns.queries(host), 0, "{host} was looked up");
    }
    // A unix socket request and an origin-form request are refused the same way.
    assert_407(&raw_request(
        w.proxy.addr,
        b"GET /x HTTP/1.1\r\nHost: a\r\nx-unix-socket: /run/x.sock\r\nConnection: close\r\n\r\n",
    ));
    assert_407(&raw_request(
        w.proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ));
    w.assert_nothing_reached_upstream();
    assert!(w.proxy.audit.events("decision").is_empty());
}

#[test]
fn the_407_answers_json_when_asked() {
    let w = world();
    let reply = get(&w, "allowed.test", "Accept: application/json\r\n");
    assert_eq!(reply.status, 407);
    assert!(reply.header("proxy-authenticate").is_some());
    let json: serde_json::Value = serde_json::from_str(reply.body.trim_end()).unwrap();
    assert_eq!(json["error"], "proxy-auth-required");
    assert_eq!(json["reason"], "proxy-auth-required");
}

#[test]
fn wrong_credentials_are_refused_on_both_paths() {
    let w = world();
    let upper = TOKEN.to_uppercase();
    let headers = [
        basic(&format!("egress:{upper}")),
        basic(&format!("egress:{}", &TOKEN[..31])),
        basic(&format!("egress:{}", &TOKEN[..1])),
        basic(&format!("egress:{TOKEN}{TOKEN}")),
        basic("egress:"),
        basic("egress"),
        basic(&format!("root:{TOKEN}")),
        basic(&format!(":{TOKEN}")),
        basic(TOKEN),
        format!("Proxy-Authorization: Bearer {TOKEN}\r\n"),
        format!("Proxy-Authorization: Basic {TOKEN}\r\n"),
        "Proxy-Authorization: Basic\r\n".to_string(),
        "Proxy-Authorization: \r\n".to_string(),
        // The right value in the origin's header, or twice: neither counts.
        good().replace("Proxy-Authorization", "Authorization"),
        format!("{}{}", good(), good()),
        format!("{}{}", basic("egress:x"), good()),
    ];
    for header in &headers {
        assert_407(&get(&w, "allowed.test", header));
        assert_407(&connect_with(&w, &w.at_echo("allowed.test"), header));
    }
    assert_eq!(w.dns.queries("allowed.test"), 0);
    w.assert_nothing_reached_upstream();
}

#[test]
fn with_credentials_curl_forwards_and_tunnels_and_the_origin_never_sees_them() {
    let w = world();
    let url = format!("http://egress:{TOKEN}@{}", w.proxy.addr);
    let reply = curl::reply(Via::Proxy(&url), &[&w.url("allowed.test", "/fwd")]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "origin saw GET /fwd body=0");
    let reply = curl::reply(Via::Tunnel(&url), &[&w.url("allowed.test", "/tun")]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "origin saw GET /tun body=0");
    for request in w.origin.requests() {
        let lower = request.to_ascii_lowercase();
        assert!(!lower.contains("proxy-authorization"), "{request}");
        assert!(!lower.contains(&TOKEN.to_ascii_lowercase()), "{request}");
    }
    // The policy still decides, after the credentials.
    let reply = curl::reply(Via::Proxy(&url), &[&w.url("evil.corp.test", "/")]);
    assert_eq!(
        reply.verdict(),
        (403, Some("blocked-by-denylist"), Some("deny-rule"))
    );
    // The scheme's case and the header name's case do not matter.
    let lower = good().replace("Proxy-Authorization: Basic", "proxy-authorization: bAsIc");
    assert_eq!(get(&w, "allowed.test", &lower).status, 200);
}

#[test]
fn a_raw_connect_with_credentials_tunnels() {
    let w = world();
    let authority = w.at_echo("allowed.test");
    let request = format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{}\r\n",
        good()
    );
    let mut stream = connect(w.proxy.addr);
    stream.write_all(request.as_bytes()).unwrap();
    let head = crate::support::http::blocking::read_head(&mut stream);
    assert_eq!(head.status, 200, "{head:?}");
    stream.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    std::io::Read::read_exact(&mut stream, &mut got).unwrap();
    assert_eq!(&got, b"ping");
    // Without them, the same CONNECT is refused and the echo server never sees a connection.
    let (_, refused) = connect_tunnel(w.proxy.addr, &authority);
    assert_407(&refused);
    assert_eq!(w.echo.connections(), 1);
}

/// Credentials belong to a request, not to a connection: on a kept connection, a request
/// without them is refused even after one with them succeeded, and the connection goes on.
#[test]
fn a_kept_connection_authenticates_every_request() {
    let w = world();
    let authority = w.at_origin("allowed.test");
    let mut stream = connect(w.proxy.addr);
    let mut send = |path: &str, headers: &str| {
        let request =
            format!("GET http://{authority}{path} HTTP/1.1\r\nHost: {authority}\r\n{headers}\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        read_reply(&mut stream)
    };
    let first = send("/1", &good());
    assert_eq!(first.status, 200, "{first:?}");
    assert_407(&send("/2", ""));
    assert_407(&send("/3", &basic("egress:wrong")));
    let fourth = send("/4", &good());
    assert_eq!(fourth.body, "origin saw GET /4 body=0", "{fourth:?}");
    let paths: Vec<String> = w
        .origin
        .requests()
        .iter()
        .map(|r| r.split(' ').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(paths, ["/1", "/4"]);
}

#[test]
fn an_oversized_proxy_authorization_is_431_and_the_listener_goes_on() {
    let w = world();
    let huge = format!("Proxy-Authorization: Basic {}\r\n", "QUFB".repeat(40_000));
    let reply = get(&w, "allowed.test", &huge);
    assert_eq!(reply.status, 431, "{reply:?}");
    // Long but under the header limit: decoded nowhere, refused.
    let long = format!("Proxy-Authorization: Basic {}\r\n", "QUFB".repeat(1000));
    assert_407(&get(&w, "allowed.test", &long));
    assert_eq!(get(&w, "allowed.test", &good()).status, 200);
}

#[test]
fn without_a_session_the_header_is_ignored_and_stripped() {
    let w = World::start();
    assert_eq!(get(&w, "allowed.test", "").status, 200);
    assert_eq!(get(&w, "allowed.test", &basic("any:thing")).status, 200);
    for request in w.origin.requests() {
        assert!(!request.to_ascii_lowercase().contains("proxy-authorization"));
    }
}

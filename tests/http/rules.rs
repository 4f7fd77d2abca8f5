//! `[[http_rules]]` on plain HTTP through the listener: method and path rules, the spellings a
//! client would try to get past them, and a kept connection whose second request is judged on
//! its own.

use std::io::{Read, Write};

use crate::support::http::blocking::{connect, connect_tunnel, raw_request, read_reply};
use crate::support::http_world::{assert_denial_body, assert_verdict, World};

/// GET anything on api.corp.test, POST only to issues, never to `/repos/x/locked`.
const RULES: &str = r#"
[[http_rules]]
host = "api.corp.test"
methods = ["GET"]
action = "allow"

[[http_rules]]
host = "api.corp.test"
methods = ["POST"]
paths = ["/repos/*/*/issues"]
action = "allow"

[[http_rules]]
host = "**.corp.test"
methods = ["POST"]
paths = ["/repos/x/locked"]
action = "deny"
"#;

fn world(extra: &str) -> World {
    World::with(|b| b.toml(extra))
}

fn request(w: &World, method: &str, path: &str) -> crate::support::reply::Reply {
    let url = w.url("api.corp.test", path);
    raw_request(
        w.proxy.addr,
        format!("{method} {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}")
            .as_bytes(),
    )
}

#[test]
fn http_rules_allow_and_deny_by_method_and_path() {
    let w = world(RULES);
    for (method, path) in [
        ("GET", "/anything?x=1"),
        ("POST", "/repos/a/b/issues"),
        ("POST", "/repos/a/b/issues/7/comments"),
        ("POST", "/repos/a/b/c/../issues"),
    ] {
        let reply = request(&w, method, path);
        assert_eq!(reply.status, 200, "{method} {path}: {reply:?}");
    }
    let allowed = w.origin.request_count();
    assert_eq!(allowed, 4);
    for (method, path) in [
        ("POST", "/repos/a/b/pulls"),
        ("PUT", "/repos/a/b/issues"),
        ("POST", "/REPOS/a/b/issues"),
        ("POST", "/repos/a/b/issuesx"),
    ] {
        let reply = request(&w, method, path);
        assert_verdict(&reply, 403, "blocked-by-allowlist", "not-allowed");
    }
    let reply = request(&w, "POST", "/repos/x/locked");
    assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    assert_denial_body(
        &reply,
        &w.at_origin("api.corp.test"),
        "deny-rule",
        "**.corp.test POST /repos/x/locked",
    );
    assert_eq!(
        w.origin.request_count(),
        allowed,
        "nothing refused got through"
    );
}

/// Other spellings of the denied path are the denied path, and a spelling that origins read
/// in more than one way is refused outright.
#[test]
fn respelt_paths_do_not_get_past_a_deny() {
    let w = world(RULES);
    for (method, path) in [
        ("POST", "/repos/x/y/../locked"),
        ("POST", "/repos/x/%6cocked"),
        ("POST", "/repos/x/%6Cocked/"),
        ("POST", "//repos//x/locked"),
        ("POST", "/repos/./x/locked/sub"),
        ("post", "/repos/x/locked"),
    ] {
        let reply = request(&w, method, path);
        assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    }
    for path in [
        "/repos/x/locked;x",
        "/repos%2Fx/locked",
        "/repos/x%2flocked",
        "/repos/x/locked%00",
        "/repos/x/%zzocked",
        "/repos/x/%25%36cocked",
    ] {
        let reply = request(&w, "POST", path);
        assert_verdict(&reply, 400, "blocked-by-policy", "invalid-request");
    }
    // A raw backslash never even parses as a request target.
    let reply = request(&w, "POST", "/repos\\x/locked");
    assert_eq!(reply.status, 400, "{reply:?}");
    w.assert_nothing_reached_upstream();
}

/// The second request on a kept connection is judged on its own: the first was allowed, the
/// second is denied and never reaches the origin.
#[test]
fn a_kept_connection_is_judged_request_by_request() {
    let w = world(RULES);
    let mut stream = connect(w.proxy.addr);
    let allowed = w.url("api.corp.test", "/repos/a/b/issues");
    let denied = w.url("api.corp.test", "/repos/x/locked");
    write!(
        stream,
        "POST {allowed} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .unwrap();
    assert_eq!(read_reply(&mut stream).status, 200);
    write!(
        stream,
        "POST {denied} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .unwrap();
    let reply = read_reply(&mut stream);
    assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    assert_eq!(w.origin.request_count(), 1);
    assert!(w.origin.requests()[0].starts_with("POST /repos/a/b/issues HTTP/1.1"));
}

/// Hosts no http rule names are untouched, and with interception off a tunnel to a host with
/// rules stays an opaque tunnel (the rules hold for plain HTTP only, as `validate` warns).
#[test]
fn http_rules_leave_other_hosts_and_opaque_tunnels_alone() {
    let w = world(RULES);
    let url = w.url("allowed.test", "/repos/x/locked;x");
    let reply = raw_request(
        w.proxy.addr,
        format!("DELETE {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("api.corp.test"));
    assert_eq!(reply.status, 200, "{reply:?}");
}

/// With interception on, a tunnel whose requests the rules must see is never relayed as
/// opaque bytes: until CONNECT hands it to the interception engine it is refused.
#[test]
fn a_tunnel_that_must_be_inspected_is_not_relayed_opaque() {
    let w = world(&format!("mitm = true\n{RULES}"));
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("api.corp.test"));
    assert_verdict(&reply, 403, "blocked-by-mitm-required", "mitm-required");
    let (mut tunnel, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("allowed.test"));
    assert_eq!(reply.status, 200, "{reply:?}");
    tunnel.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    tunnel.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping", "a host no http rule names is relayed");
}

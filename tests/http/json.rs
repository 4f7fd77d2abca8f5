//! `Accept: application/json`: a refusal of ours becomes one JSON object, on a forward request
//! and on a CONNECT, and any other `Accept` keeps the line of text.

use serde_json::Value;

use crate::support::http::blocking::raw_request;
use crate::support::http_world::{assert_verdict, World};
use crate::support::reply::Reply;

fn json(reply: &Reply) -> Value {
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{reply:?}"
    );
    assert_eq!(reply.body.matches('\n').count(), 1, "one line: {reply:?}");
    serde_json::from_str(reply.body.trim_end())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {reply:?}"))
}

#[test]
fn a_denial_is_one_json_object_when_asked_for() {
    let w = World::start();
    let dest = w.at_echo("other.test");
    let port: u16 = dest.rsplit_once(':').unwrap().1.parse().unwrap();
    let connect = format!(
        "CONNECT {dest} HTTP/1.1\r\nHost: {dest}\r\nAccept: text/html, application/json;q=0.9\r\n\r\n"
    );
    let reply = raw_request(w.proxy.addr, connect.as_bytes());
    assert_verdict(&reply, 403, "blocked-by-allowlist", "not-allowed");
    let body = json(&reply);
    assert_eq!(body["status"], "blocked");
    assert_eq!(body["host"], "other.test");
    assert_eq!(body["port"], port);
    assert_eq!(body["reason"], "not-allowed");
    assert_eq!(body["hint"], format!("add --allow {dest}"));
    assert_eq!(body["rule"], Value::Null);

    let url = w.url("evil.corp.test", "/");
    let get = format!(
        "GET {url} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    let reply = raw_request(w.proxy.addr, get.as_bytes());
    assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    let body = json(&reply);
    assert_eq!(body["rule"], "evil.corp.test");
    assert_eq!(body["decision"], "deny");

    for accept in ["*/*", "application/json;q=0", "text/plain"] {
        let get = format!(
            "GET {url} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        );
        let reply = raw_request(w.proxy.addr, get.as_bytes());
        assert!(
            reply.body.starts_with("egress-proxy: blocked "),
            "{accept}: {reply:?}"
        );
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }
    w.assert_nothing_reached_upstream();
}

#[test]
fn a_bad_request_is_json_too() {
    let w = World::start();
    let reply = raw_request(
        w.proxy.addr,
        b"GET /relative HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(reply.status, 400, "{reply:?}");
    let body = json(&reply);
    assert_eq!(body["status"], "error");
    assert_eq!(body["error"], "bad-request");
}

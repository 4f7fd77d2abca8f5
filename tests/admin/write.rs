//! The mutating endpoints and the admin listener's own defences: the token, reloads, mode
//! changes and the Host check.

use std::net::SocketAddr;

use crate::harness::{policy_text, Harness, DOMAINS, TOKEN};
use crate::support::fake_dns::{Answer, FakeDns};
use crate::support::http::exchange;
use crate::support::prometheus::sample;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_calls_need_the_token() {
    let h = Harness::start().await;
    let limited = r#"{"mode": "limited"}"#;
    for (path, body) in [("/mode", limited), ("/reload", "")] {
        let missing = h.post(path, None, body).await;
        assert_eq!(missing.status, 401, "{path}");
        assert!(missing
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer"));
        assert!(missing.json()["error"].is_string());

        let wrong = h.post(path, Some("test-token-0123456788"), body).await;
        assert_eq!(wrong.status, 401, "{path}");
        assert!(wrong
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token"));
        assert_eq!(h.post(path, Some("test"), body).await.status, 401);
        assert_eq!(
            h.post(path, Some(&format!("{TOKEN}x")), body).await.status,
            401
        );

        let basic = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {TOKEN}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(exchange(h.admin, &basic, false).await.status, 401);
    }
    // Nothing changed.
    assert_eq!(h.patterns().await["mode"], "full");
    assert_eq!(h.proxy_connect("allowed.test").await.status, 200);

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_methods_and_bodies() {
    let h = Harness::start().await;
    for path in ["/", "/nope", "/health/", "/HEALTH"] {
        let reply = h.get(path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert!(reply.json()["error"].is_string());
    }

    let reply = h.post("/health", Some(TOKEN), "").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    assert!(reply.json()["error"].is_string());
    let reply = h.get("/reload").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
    let delete = "DELETE /mode HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let reply = exchange(h.admin, delete, false).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));

    // Bodies: too large, not JSON, not a mode.
    let big = format!(r#"{{"mode": "limited", "pad": "{}"}}"#, "x".repeat(5000));
    assert_eq!(h.post("/mode", Some(TOKEN), &big).await.status, 413);
    let chunked = format!(
        "POST /mode HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n1388\r\n{}\r\n0\r\n\r\n",
        "x".repeat(5000)
    );
    assert_eq!(exchange(h.admin, &chunked, false).await.status, 413);
    for body in [
        "",
        "limited",
        r#"{"mode": "readonly"}"#,
        r#"{"mode": "full", "x": 1}"#,
    ] {
        let reply = h.post("/mode", Some(TOKEN), body).await;
        assert_eq!(reply.status, 400, "{body}");
        assert!(reply.json()["error"].as_str().unwrap().contains("mode"));
    }
    assert_eq!(h.patterns().await["mode"], "full");

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_limited_blocks_connect() {
    let h = Harness::start().await;
    assert_eq!(h.proxy_connect("allowed.test").await.status, 200);

    let reply = h.post("/mode", Some(TOKEN), r#"{"mode": "limited"}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), serde_json::json!({"mode": "limited"}));
    assert_eq!(h.patterns().await["mode"], "limited");
    assert_eq!(h.get("/config").await.json()["mode"], "limited");

    let connect = h.proxy_connect("allowed.test").await;
    assert_eq!(connect.status, 403);
    assert_eq!(connect.header("x-proxy-reason"), Some("mitm-required"));
    // Plain GET still goes through in limited mode.
    assert_eq!(h.proxy_get("allowed.test").await.status, 200);
    let blocked = h.get("/blocked").await.json();
    assert_eq!(blocked["blocked"][0]["protocol"], "connect");
    assert_eq!(blocked["blocked"][0]["reason"], "mitm-required");

    let reply = h.post("/mode", Some(TOKEN), r#"{"mode": "full"}"#).await;
    assert_eq!(reply.status, 200);
    assert_eq!(h.proxy_connect("allowed.test").await.status, 200);

    h.stop().await;
}

/// The requirements' `limited` is the administrator's: `POST /mode` can keep it but not
/// widen it, and neither can an earlier switch to `full` once a reload brings the requirement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_limited_mode_cannot_be_widened() {
    let h = Harness::start_managed("[experimental_network]\nmode = \"limited\"\n").await;
    assert_eq!(h.patterns().await["mode"], "limited");
    let reply = h.post("/mode", Some(TOKEN), r#"{"mode": "full"}"#).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("requirements"));
    assert_eq!(h.patterns().await["mode"], "limited");
    assert_eq!(h.proxy_connect("allowed.test").await.status, 403);
    let reply = h.post("/mode", Some(TOKEN), r#"{"mode": "limited"}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = h.post("/reload", Some(TOKEN), "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(h.proxy_connect("allowed.test").await.status, 403);
    h.stop().await;

    let h = Harness::start_managed("[experimental_network]\nenable_socks5_udp = true\n").await;
    let reply = h.post("/mode", Some(TOKEN), r#"{"mode": "full"}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let requirements = h.policy_file.with_file_name("requirements.toml");
    std::fs::write(
        &requirements,
        "[experimental_network]\nmode = \"limited\"\n",
    )
    .unwrap();
    let reply = h.post("/reload", Some(TOKEN), "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(h.patterns().await["mode"], "limited");
    assert_eq!(h.proxy_connect("allowed.test").await.status, 403);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_that_tightens_the_policy_blocks_the_next_request() {
    let h = Harness::start().await;
    assert_eq!(h.proxy_get("allowed.test").await.status, 200);
    let before = h.metrics().await;
    let ok_before = sample(&before, "egress_reloads_total", &[("result", "ok")]).unwrap_or(0.0);

    h.write_policy("\"allowed.test\" = \"deny\"");
    let reply = h.post("/reload", Some(TOKEN), "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), serde_json::json!({"reloaded": true}));

    let denied = h.proxy_get("allowed.test").await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.header("x-proxy-reason"), Some("deny-rule"));
    let patterns = h.patterns().await;
    assert_eq!(patterns["rules"].as_array().unwrap().len(), 1);
    assert_eq!(patterns["rules"][0]["action"], "deny");
    let after = h.metrics().await;
    let ok_after = sample(&after, "egress_reloads_total", &[("result", "ok")]).unwrap();
    assert!(ok_after >= ok_before + 1.0, "{after}");

    h.stop().await;
}

/// Even with every loopback address allowed, no listener of the proxy is a destination: not
/// the admin API (whose reads need no token), not the SOCKS5 port, and still after a reload
/// and a mode switch, which install new policy generations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_own_listeners_are_never_destinations() {
    let h = Harness::start().await;
    h.write_policy("\"127.0.0.1\" = \"allow\"");
    let socks = h.server.socks_addr.expect("SOCKS5 is on");
    let http = h.server.http_addr;
    let connect = |addr: SocketAddr| async move {
        let authority = format!("127.0.0.1:{}", addr.port());
        let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        exchange(http, &req, true).await
    };
    for step in ["reload", "mode"] {
        match step {
            "reload" => assert_eq!(h.post("/reload", Some(TOKEN), "").await.status, 200),
            _ => {
                let full = r#"{"mode":"full"}"#;
                assert_eq!(h.post("/mode", Some(TOKEN), full).await.status, 200);
            }
        }
        for addr in [h.admin, socks, h.server.http_addr] {
            let reply = connect(addr).await;
            assert_eq!(reply.status, 403, "after {step}, {addr}: {reply:?}");
            assert_eq!(
                reply.header("x-proxy-reason"),
                Some("self-connection"),
                "after {step}, {addr}"
            );
        }
        // The same address on another port is an ordinary allowed destination.
        assert_eq!(connect(h.origin.addr).await.status, 200, "after {step}");
    }
    h.stop().await;
}

/// A reload that points `[dns]` at another server: the listeners and `/check` both use it for
/// the next lookup, so `/check` never answers from servers the proxy has stopped using.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_that_changes_dns_servers_moves_the_proxy_and_check_together() {
    let h = Harness::start().await;
    assert_eq!(h.proxy_get("allowed.test").await.status, 200);
    let other = FakeDns::start(vec![("allowed.test", Answer::NxDomain)]);
    let token_file = h.dir.path().join("token");
    std::fs::write(
        &h.policy_file,
        policy_text(other.addr, DOMAINS, &token_file),
    )
    .unwrap();
    assert_eq!(h.post("/reload", Some(TOKEN), "").await.status, 200);

    let reply = h.proxy_get("allowed.test").await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.header("x-proxy-reason"), Some("dns-failed"));
    let check = h.get("/check?target=allowed.test").await;
    let line: Value = serde_json::from_str(check.body.trim()).unwrap();
    assert_eq!(line["reason"], "dns-failed", "{line}");

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_a_broken_file_keeps_the_old_policy() {
    let h = Harness::start().await;
    let before = h.metrics().await;
    let errors_before =
        sample(&before, "egress_reloads_total", &[("result", "error")]).unwrap_or(0.0);

    // Unknown key, and a syntax error: both are refused with the file's own error line.
    std::fs::write(
        &h.policy_file,
        "enabled = true\nbogus_key = 1\n[domains]\n\"allowed.test\" = \"deny\"\n",
    )
    .unwrap();
    let reply = h.post("/reload", Some(TOKEN), "").await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["reloaded"], false);
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("policy.toml:2:"), "{error}");
    assert!(error.contains("bogus_key"), "{error}");
    assert!(!error.contains('\n'), "{error}");

    std::fs::write(&h.policy_file, "[domains\n").unwrap();
    let reply = h.post("/reload", Some(TOKEN), "").await;
    assert_eq!(reply.status, 422);
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("policy.toml:1:"));

    // A limit no listener could be built with is refused at its value, as at start.
    std::fs::write(
        &h.policy_file,
        "enabled = true\n[domains]\n\"allowed.test\" = \"deny\"\n\
         [limits]\nmax_connections = 18446744073709551615\n",
    )
    .unwrap();
    let reply = h.post("/reload", Some(TOKEN), "").await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    let error = reply.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.ends_with("policy.toml:5:19: `[limits] max_connections` must be 1-1000000"),
        "{error}"
    );

    // Still decided by the old rules: allowed.test passes, denied.test is denied by its rule.
    assert_eq!(h.proxy_get("allowed.test").await.status, 200);
    let denied = h.proxy_get("denied.test").await;
    assert_eq!(denied.header("x-proxy-reason"), Some("deny-rule"));
    assert_eq!(h.patterns().await["rules"].as_array().unwrap().len(), 2);
    let after = h.metrics().await;
    let errors_after = sample(&after, "egress_reloads_total", &[("result", "error")]).unwrap();
    assert!(errors_after >= errors_before + 3.0, "{after}");

    h.stop().await;
}

/// Start-up refuses `enabled = false`; a reload must refuse it the same way, not install the
/// switched-off file's rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_a_disabled_policy_and_keeps_the_old_one() {
    let h = Harness::start().await;
    let errors = |text: &str| sample(text, "egress_reloads_total", &[("result", "error")]);
    let errors_before = errors(&h.metrics().await).unwrap_or(0.0);
    let token_file = h.dir.path().join("token");
    let disabled = policy_text(
        h.dns.addr,
        "\"allowed.test\" = \"deny\"\n\"other.test\" = \"allow\"",
        &token_file,
    )
    .replace("enabled = true", "enabled = false");
    std::fs::write(&h.policy_file, disabled).unwrap();

    let reply = h.post("/reload", Some(TOKEN), "").await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["reloaded"], false);
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("not enabled"), "{error}");

    assert_eq!(h.proxy_get("allowed.test").await.status, 200);
    let other = h.proxy_get("other.test").await;
    assert_eq!(other.header("x-proxy-reason"), Some("not-allowed"));
    assert_eq!(h.get("/config").await.json()["enabled"], true);
    let errors_after = errors(&h.metrics().await).unwrap();
    assert!(errors_after >= errors_before + 1.0);

    h.stop().await;
}

/// A web page the operator visits can rebind its own name to 127.0.0.1 and read the admin
/// API with the browser: only a `Host` that names this listener is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_host_naming_the_listener_is_served() {
    let h = Harness::start().await;
    let port = h.admin.port();
    let raw = |head: String| async move { exchange(h.admin, &head, false).await };
    let get = |path: &str, host: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    for path in [
        "/config",
        "/patterns",
        "/blocked",
        "/check?target=allowed.test",
        "/health",
    ] {
        let reply = raw(get(path, "evil.test")).await;
        assert_eq!(reply.status, 421, "{path}: {reply:?}");
        let error = reply.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains("`evil.test`"), "{error}");
        assert!(
            !reply.body.contains("allowed.test"),
            "{path}: {}",
            reply.body
        );
    }
    let refused = [
        format!("evil.test:{port}"),
        format!("localhost.evil.test:{port}"),
        format!("127.0.0.1.evil.test:{port}"),
        format!("127.0.0.2:{port}"),
        format!("[::2]:{port}"),
        "localhost:+80".to_string(),
        "localhost:99999".to_string(),
        "[::1".to_string(),
        String::new(),
    ];
    for host in &refused {
        assert_eq!(raw(get("/health", host)).await.status, 421, "Host: {host}");
    }
    let accepted = [
        h.admin.to_string(),
        "localhost".to_string(),
        format!("LocalHost:{port}"),
        "localhost:9999".to_string(),
        "127.0.0.1".to_string(),
        "127.0.0.1:9999".to_string(),
        "127.1".to_string(),
        "localhost.".to_string(),
        "[::1]".to_string(),
        format!("[::1]:{port}"),
        format!("[0:0:0:0:0:0:0:1]:{port}"),
    ];
    for host in &accepted {
        assert_eq!(raw(get("/health", host)).await.status, 200, "Host: {host}");
    }
    // HTTP/1.1 needs exactly one Host; HTTP/1.0 may go without.
    let missing = raw("GET /config HTTP/1.1\r\nConnection: close\r\n\r\n".into()).await;
    assert_eq!(missing.status, 400, "{missing:?}");
    let twice = "GET /config HTTP/1.1\r\nHost: localhost\r\nHost: evil.test\r\n\
                 Connection: close\r\n\r\n";
    assert_eq!(raw(twice.into()).await.status, 400);
    assert_eq!(raw("GET /health HTTP/1.0\r\n\r\n".into()).await.status, 200);
    // An absolute-form target names its host too.
    let absolute = "GET http://evil.test/config HTTP/1.1\r\nHost: localhost\r\n\
                    Connection: close\r\n\r\n";
    assert_eq!(raw(absolute.into()).await.status, 421);
    // Mutating calls are checked before the token.
    let post = format!(
        "POST /mode HTTP/1.1\r\nHost: evil.test\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: 19\r\nConnection: close\r\n\r\n{{\"mode\": \"limited\"}}"
    );
    assert_eq!(raw(post).await.status, 421);
    assert_eq!(h.patterns().await["mode"], "full");

    h.stop().await;
}

//! The read endpoints: health, config, patterns, check, blocked and metrics.

use crate::harness::{policy_text, Harness, DOMAINS, TOKEN};
use crate::support::http::{exchange, Reply};
use crate::support::prometheus::sample;
use egress_proxy::admin::{self};
use egress_proxy::dns::Resolver;
use egress_proxy::report;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_config_and_patterns() {
    let h = Harness::start().await;

    let health = h.get("/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), serde_json::json!({"status": "ok"}));
    assert_eq!(health.header("cache-control"), Some("no-store"));

    // HEAD answers like GET, without a body.
    let head = exchange(
        h.admin,
        "HEAD /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        true,
    )
    .await;
    assert_eq!(head.status, 200);

    // `/config` is exactly `validate --json`'s document.
    let config = h.get("/config").await;
    assert_eq!(config.status, 200);
    let expected = report::effective_json(&h.server.control.config(), &h.server.control.policy());
    let expected: Value = serde_json::from_str(&expected).unwrap();
    assert_eq!(config.json(), expected);
    assert_eq!(expected["mode"], "full");
    assert_eq!(expected["dns_servers"][0], h.dns.addr.to_string());

    let patterns = h.patterns().await;
    assert_eq!(patterns["mode"], "full");
    let rules = patterns["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{patterns}");
    let allowed = rules
        .iter()
        .find(|r| r["pattern"] == "allowed.test")
        .unwrap();
    assert_eq!(allowed["action"], "allow");
    assert_eq!(allowed["managed"], false);
    let origin = allowed["origin"].as_str().unwrap();
    assert!(
        origin.starts_with(&h.policy_file.display().to_string()),
        "{origin}"
    );
    let denied = rules
        .iter()
        .find(|r| r["pattern"] == "denied.test")
        .unwrap();
    assert_eq!(denied["action"], "deny");

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_matches_the_cli_json() {
    let h = Harness::start().await;
    // With the token, every answer is shown, private ones too.
    let reply = h
        .get_as("/check?target=allowed.test%3A8443&target=denied.test&target=http%3A%2F%2Fother.test%2Fx%3Fq%3D1", Some(TOKEN))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = reply
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{}", reply.body);

    assert_eq!(lines[0]["target"], "allowed.test:8443");
    assert_eq!(lines[0]["verdict"], "allow");
    assert_eq!(lines[0]["reason"], "allowed");
    assert_eq!(lines[0]["rule"], "allowed.test");
    assert_eq!(lines[0]["host"], "allowed.test");
    assert_eq!(lines[0]["port"], 8443);
    assert_eq!(
        lines[0]["ips"],
        serde_json::json!([{"ip": "127.0.0.1", "class": "loopback"}])
    );

    assert_eq!(lines[1]["target"], "denied.test");
    assert_eq!(lines[1]["verdict"], "block");
    assert_eq!(lines[1]["reason"], "deny-rule");
    assert_eq!(lines[1]["rule"], "denied.test");
    assert_eq!(lines[1]["port"], 443);

    // Percent-decoded: the URL arrives whole.
    assert_eq!(lines[2]["target"], "http://other.test/x?q=1");
    assert_eq!(lines[2]["verdict"], "block");
    assert_eq!(lines[2]["reason"], "not-allowed");
    assert_eq!(lines[2]["rule"], Value::Null);
    assert_eq!(lines[2]["port"], 80);

    // Line for line what `check --json` prints for the same policy and DNS.
    let resolver = Resolver::new(&h.server.control.config().dns).unwrap();
    let policy = h.server.control.policy();
    for (line, target) in reply.body.lines().zip([
        "allowed.test:8443",
        "denied.test",
        "http://other.test/x?q=1",
    ]) {
        let outcome = report::check(&policy, Some(&resolver), target, "GET").await;
        assert_eq!(line, report::json_line(&outcome));
    }

    // `no_dns` decides on the rules only.
    let reply = h.get("/check?target=allowed.test&no_dns=1").await;
    let line: Value = serde_json::from_str(reply.body.trim()).unwrap();
    assert_eq!(line["verdict"], "allow");
    assert_eq!(line["ips"], serde_json::json!([]));

    // No target, too many, or an unknown parameter.
    for path in ["/check", "/check?host=x", "/check?target=a&bogus=1"] {
        let reply = h.get(path).await;
        assert_eq!(reply.status, 400, "{path}");
        assert!(reply.json()["error"].is_string());
    }
    let many = vec!["target=a.test"; admin::MAX_CHECK_TARGETS + 1].join("&");
    assert_eq!(h.get(&format!("/check?{many}")).await.status, 400);

    h.stop().await;
}

/// `/check` answers the sandboxed child too: without the token it must not reveal what the
/// internal names it blocks resolve to, only how many answers it left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_hides_non_public_answers_without_the_token() {
    let h = Harness::start().await;
    let domains = format!(
        "{DOMAINS}\n\"internal.test\" = \"allow\"\n\"mixed.test\" = \"allow\"\n\"10.9.8.7\" = \"allow\""
    );
    let text = policy_text(h.dns.addr, &domains, &h.dir.path().join("token"))
        .replace("allow_local_binding = true\n", "");
    std::fs::write(&h.policy_file, text).unwrap();
    assert_eq!(h.post("/reload", Some(TOKEN), "").await.status, 200);
    let path = "/check?target=internal.test&target=mixed.test&target=allowed.test&target=10.9.8.7";
    let lines = |reply: &Reply| -> Vec<Value> {
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply
            .body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let ip = |ip: &str, class: &str| serde_json::json!({"ip": ip, "class": class});

    for token in [None, Some("not-the-token")] {
        let reply = h.get_as(path, token).await;
        assert!(!reply.body.contains("10.1.2.3"), "{}", reply.body);
        let got = lines(&reply);
        // Blocked by a private answer: the verdict and reason, not the address.
        assert_eq!(got[0]["verdict"], "block");
        assert_eq!(got[0]["ips"], serde_json::json!([]));
        assert_eq!(got[0]["ips_hidden"], 1);
        assert_eq!(got[1]["verdict"], "block");
        assert_eq!(got[1]["ips"], serde_json::json!([ip("1.2.3.4", "public")]));
        assert_eq!(got[1]["ips_hidden"], 1);
        assert_eq!(got[2]["ips"], serde_json::json!([]));
        assert_eq!(got[2]["ips_hidden"], 1);
        // An IP literal is what the asker wrote; nothing was resolved, nothing is hidden.
        assert_eq!(
            got[3]["ips"],
            serde_json::json!([ip("10.9.8.7", "private")])
        );
        assert_eq!(got[3].get("ips_hidden"), None);
    }

    let got = lines(&h.get_as(path, Some(TOKEN)).await);
    assert_eq!(
        got[0]["ips"],
        serde_json::json!([ip("10.1.2.3", "private")])
    );
    assert_eq!(
        got[1]["ips"],
        serde_json::json!([ip("1.2.3.4", "public"), ip("10.1.2.3", "private")])
    );
    assert_eq!(
        got[2]["ips"],
        serde_json::json!([ip("127.0.0.1", "loopback")])
    );
    assert!(got.iter().all(|l| l.get("ips_hidden").is_none()), "{got:?}");

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_lists_a_denied_proxy_request() {
    let h = Harness::start().await;
    let empty = h.get("/blocked").await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json(), serde_json::json!({"blocked": []}));

    let denied = h.proxy_get("denied.test").await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.header("x-proxy-reason"), Some("deny-rule"));
    let not_allowed = h.proxy_get("other.test").await;
    assert_eq!(not_allowed.status, 403);
    let allowed = h.proxy_get("allowed.test").await;
    assert_eq!(allowed.status, 200);

    let blocked = h.get("/blocked").await.json();
    let list = blocked["blocked"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{blocked}");
    let port = h.origin.addr.port();
    assert_eq!(list[0]["protocol"], "http");
    assert_eq!(list[0]["host"], "denied.test");
    assert_eq!(list[0]["port"], port);
    assert_eq!(list[0]["reason"], "deny-rule");
    assert_eq!(list[0]["rule"], "denied.test");
    let time = list[0]["time"].as_str().unwrap();
    assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
    assert_eq!(list[1]["host"], "other.test");
    assert_eq!(list[1]["reason"], "not-allowed");
    assert_eq!(list[1]["rule"], Value::Null);

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_after_traffic() {
    let h = Harness::start().await;
    let denied = [
        ("protocol", "http"),
        ("verdict", "block"),
        ("reason", "deny-rule"),
    ];
    let allowed = [
        ("protocol", "http"),
        ("verdict", "allow"),
        ("reason", "allowed"),
    ];
    // Other tests in this process count too, so compare before and after.
    let before = h.metrics().await;
    let denied_before = sample(&before, "egress_decisions_total", &denied).unwrap_or(0.0);
    let allowed_before = sample(&before, "egress_decisions_total", &allowed).unwrap_or(0.0);

    assert_eq!(h.proxy_get("denied.test").await.status, 403);
    assert_eq!(h.proxy_get("allowed.test").await.status, 200);

    let after = h.metrics().await;
    let denied_after = sample(&after, "egress_decisions_total", &denied).unwrap();
    let allowed_after = sample(&after, "egress_decisions_total", &allowed).unwrap();
    assert!(denied_after >= denied_before + 1.0, "{after}");
    assert!(allowed_after >= allowed_before + 1.0, "{after}");
    assert!(
        after.contains("# TYPE egress_decisions_total counter"),
        "{after}"
    );
    // The lookup of allowed.test landed in the latency histogram, with second buckets.
    assert!(
        sample(
            &after,
            "egress_dns_lookup_seconds_count",
            &[("result", "ok")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{after}"
    );
    assert!(
        sample(
            &after,
            "egress_dns_lookup_seconds_bucket",
            &[("result", "ok"), ("le", "0.005")]
        )
        .is_some(),
        "{after}"
    );

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_without_a_recorder_is_503() {
    let h = Harness::start_with(None).await;
    let reply = h.get("/metrics").await;
    assert_eq!(reply.status, 503);
    assert!(reply.json()["error"].is_string());
    h.stop().await;
}

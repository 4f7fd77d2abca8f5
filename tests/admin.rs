//! The admin API and the metrics endpoint, against a real `Server` on loopback (in-process), and
//! once through the `serve` binary.
//!
//! Each test writes its own policy file, starts a `Server` with every listener on 127.0.0.1:0,
//! points `[dns] servers` at a fake DNS server that answers 127.0.0.1, and sends raw HTTP/1.1
//! to the admin listener and the HTTP proxy. Every read and write gives up after a few
//! seconds, so a hang is a failure, not a stall.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use egress_proxy::admin::{self, AdminOptions};
use egress_proxy::config::{self, Sources};
use egress_proxy::dns::Resolver;
use egress_proxy::report;
use egress_proxy::server::Server;
use serde_json::Value;
use support::fake_dns::{Answer, FakeDns};
use support::http::{exchange, read_reply, Reply, IO_TIMEOUT};
use support::origin::HttpOrigin;
use support::prometheus::sample;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "test-token-0123456789";

// ---------------------------------------------------------------------------------------------
// A running server
// ---------------------------------------------------------------------------------------------

struct Harness {
    server: Server,
    admin: SocketAddr,
    policy_file: PathBuf,
    dns: FakeDns,
    origin: HttpOrigin,
    dir: tempfile::TempDir,
}

/// The policy every test starts from: `allowed.test` allowed (it resolves to 127.0.0.1, so
/// `allow_local_binding` lets it through to the origin), `denied.test` denied by a rule, and
/// everything else not allowed.
fn policy_text(dns: SocketAddr, domains: &str, token_file: &Path) -> String {
    format!(
        "enabled = true\nallow_local_binding = true\n\n[domains]\n{domains}\n\n\
         [dns]\nservers = [\"{dns}\"]\ntimeout_ms = 1000\n\n\
         [admin]\ntoken_file = {token_file:?}\n"
    )
}

const DOMAINS: &str = "\"allowed.test\" = \"allow\"\n\"denied.test\" = \"deny\"";

impl Harness {
    async fn start() -> Harness {
        Harness::start_with(egress_proxy::metrics::install()).await
    }

    async fn start_with(metrics: Option<metrics_exporter_prometheus::PrometheusHandle>) -> Self {
        let dns = FakeDns::start(vec![
            ("allowed.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
            ("denied.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
            ("other.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
            ("internal.test", Answer::A(vec![Ipv4Addr::new(10, 1, 2, 3)])),
            (
                "mixed.test",
                Answer::A(vec![Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(10, 1, 2, 3)]),
            ),
        ]);
        let origin = HttpOrigin::start();
        let dir = tempfile::tempdir().unwrap();
        let policy_file = dir.path().join("policy.toml");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("  {TOKEN}\n")).unwrap();
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&policy_file, policy_text(dns.addr, DOMAINS, &token_file)).unwrap();

        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let sources = Sources {
            configs: vec![policy_file.clone()],
            http_listen: Some(any),
            socks_listen: Some(any),
            admin_listen: Some(any),
            ..Sources::default()
        };
        let config = config::load(&sources).unwrap();
        let token = egress_proxy::token::load_or_generate(&config.admin).unwrap();
        assert!(!token.generated);
        assert_eq!(&*token.token, TOKEN);
        let server = Server::builder(config)
            .reload_from(sources)
            .admin(AdminOptions {
                token: token.token,
                metrics,
            })
            .start()
            .await
            .unwrap();
        let admin = server.admin_addr.expect("the admin listener was started");
        Harness {
            server,
            admin,
            policy_file,
            dns,
            origin,
            dir,
        }
    }

    /// Rewrites the policy file (the next reload reads it).
    fn write_policy(&self, domains: &str) {
        let token_file = self.dir.path().join("token");
        let text = policy_text(self.dns.addr, domains, &token_file);
        std::fs::write(&self.policy_file, text).unwrap();
    }

    async fn get(&self, path: &str) -> Reply {
        self.get_as(path, None).await
    }

    /// A GET with `Authorization: Bearer <token>` when `token` is given.
    async fn get_as(&self, path: &str, token: Option<&str>) -> Reply {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
        exchange(self.admin, &req, false).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &str) -> Reply {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        exchange(self.admin, &req, false).await
    }

    /// A plain-HTTP GET through the proxy to `host` on the origin's port.
    async fn proxy_get(&self, host: &str) -> Reply {
        let authority = format!("{host}:{}", self.origin.addr.port());
        let req = format!(
            "GET http://{authority}/path HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        );
        exchange(self.server.http_addr, &req, false).await
    }

    /// A CONNECT through the proxy to `host` on the origin's port; only the head is read.
    async fn proxy_connect(&self, host: &str) -> Reply {
        let authority = format!("{host}:{}", self.origin.addr.port());
        let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        exchange(self.server.http_addr, &req, true).await
    }

    async fn patterns(&self) -> Value {
        let reply = self.get("/patterns").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    async fn metrics(&self) -> String {
        let reply = self.get("/metrics").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4")
        );
        reply.body
    }

    async fn stop(self) {
        let left = tokio::time::timeout(
            Duration::from_secs(5),
            self.server.shutdown(Duration::from_secs(2)),
        )
        .await
        .expect("shutdown finishes");
        assert_eq!(left, 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------------------------

impl Reply {
    fn json(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

// ---------------------------------------------------------------------------------------------
// Read endpoints
// ---------------------------------------------------------------------------------------------

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
        let outcome = report::check(&policy, Some(&resolver), target).await;
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

// ---------------------------------------------------------------------------------------------
// Mutating endpoints
// ---------------------------------------------------------------------------------------------

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
    assert_eq!(connect.header("x-proxy-reason"), Some("method-not-allowed"));
    // Plain GET still goes through in limited mode.
    assert_eq!(h.proxy_get("allowed.test").await.status, 200);
    let blocked = h.get("/blocked").await.json();
    assert_eq!(blocked["blocked"][0]["protocol"], "connect");
    assert_eq!(blocked["blocked"][0]["reason"], "method-not-allowed");

    let reply = h.post("/mode", Some(TOKEN), r#"{"mode": "full"}"#).await;
    assert_eq!(reply.status, 200);
    assert_eq!(h.proxy_connect("allowed.test").await.status, 200);

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

/// Idle connections from the sandboxed child (on loopback every peer is 127.0.0.1) must not
/// lock the operator out of `POST /reload`: before, 64 of them made every call a `503`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_lock_the_operator_out() {
    let h = Harness::start().await;
    let mut idle = Vec::new();
    // More than the connections that may wait for a request head at once.
    for _ in 0..80 {
        idle.push(TcpStream::connect(h.admin).await.unwrap());
    }
    // Half a request head: waiting, not served.
    for stream in &mut idle {
        stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = h.post("/reload", Some(TOKEN), "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["reloaded"], true);
    assert_eq!(h.get("/health").await.status, 200);
    // The oldest idle connections were closed to make room.
    let mut first = [0u8; 1];
    let closed = tokio::time::timeout(IO_TIMEOUT, idle[0].read(&mut first))
        .await
        .expect("the oldest idle connection is closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    drop(idle);

    h.stop().await;
}

/// Slow requests without the token (a `/check` waiting on DNS) fill only their own slots:
/// calls with the token still get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_the_token_have_reserved_slots() {
    let h = Harness::start().await;
    let silent = FakeDns::start(vec![("slow.test", Answer::NoReply)]);
    let token_file = h.dir.path().join("token");
    let text = policy_text(silent.addr, "\"slow.test\" = \"allow\"", &token_file)
        .replace("timeout_ms = 1000", "timeout_ms = 3000");
    std::fs::write(&h.policy_file, text).unwrap();
    assert_eq!(h.post("/reload", Some(TOKEN), "").await.status, 200);

    let admin = h.admin;
    // As many as the old cap on admin connections, all of them slow.
    let slow: Vec<_> = (0..64)
        .map(|_| {
            tokio::spawn(async move {
                let req = "GET /check?target=slow.test HTTP/1.1\r\nHost: localhost\r\n\
                           Connection: close\r\n\r\n";
                exchange(admin, req, false).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = h.get("/health").await;
    assert_eq!(busy.status, 503, "{busy:?}");
    assert_eq!(busy.header("connection"), Some("close"));
    let reply = h
        .post("/mode", Some(TOKEN), "{\"mode\": \"limited\"}")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(h.get_as("/patterns", Some(TOKEN)).await.status, 200);
    let mut served = 0;
    for task in slow {
        match task.await.unwrap().status {
            200 => served += 1,
            status => assert_eq!(status, 503),
        }
    }
    assert!(served > 0);
    assert_eq!(h.get("/health").await.status, 200);

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_admin_connections() {
    let h = Harness::start().await;
    let mut stream = TcpStream::connect(h.admin).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let reply = tokio::time::timeout(IO_TIMEOUT, read_reply(&mut stream, false))
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    // The connection is kept alive; shutdown must not wait for it.
    let started = Instant::now();
    h.stop().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let mut rest = Vec::new();
    let read = tokio::time::timeout(IO_TIMEOUT, stream.read_to_end(&mut rest))
        .await
        .expect("the admin connection is closed");
    assert!(read.is_ok() && rest.is_empty());
}

// ---------------------------------------------------------------------------------------------
// The `serve` binary
// ---------------------------------------------------------------------------------------------

/// `serve` generates a token under `$XDG_RUNTIME_DIR`, names the file (never the token) in
/// its startup line, and installs the metrics recorder.
#[test]
fn serve_binary_generates_a_token_and_serves_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let runtime_dir = dir.path().join("run");
    std::fs::create_dir(&runtime_dir).unwrap();
    let dns = FakeDns::start(vec![]);
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        format!("enabled = true\n[dns]\nservers = [\"{}\"]\n", dns.addr),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_egress-proxy"))
        .arg("serve")
        .arg("--config")
        .arg(&policy)
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--socks-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", "127.0.0.1:0"])
        .env("XDG_RUNTIME_DIR", &runtime_dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let mut child = Kill(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut seen = Vec::new();
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("admin API listening") => break line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no admin startup line; stderr so far: {seen:#?}"),
        }
    };
    let field = |name: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
            .trim_matches('"')
            .to_string()
    };
    let addr: SocketAddr = field("addr").parse().unwrap();
    let token_file = PathBuf::from(field("token_file"));
    assert_eq!(
        token_file,
        runtime_dir.join("egress-proxy").join("admin-token")
    );
    let token = egress_proxy::token::read_token_file(&token_file).unwrap();
    assert!(!line.contains(&*token), "the token was logged: {line}");
    assert_mode(&token_file, 0o600);
    assert_mode(token_file.parent().unwrap(), 0o700);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let metrics = exchange(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            false,
        )
        .await;
        assert_eq!(metrics.status, 200);
        let post = |token: String| {
            format!(
                "POST /mode HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
                 Content-Length: 19\r\nConnection: close\r\n\r\n{{\"mode\": \"limited\"}}"
            )
        };
        assert_eq!(
            exchange(addr, &post("nope".into()), false).await.status,
            401
        );
        let reply = exchange(addr, &post(token.to_string()), false).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    });

    // SIGTERM stops it promptly.
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "serve did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_mode(path: &Path, mode: u32) {
    let actual = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(actual, mode, "{}", path.display());
}

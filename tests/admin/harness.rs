//! A running `Server` with a policy file, a fake DNS server and an origin, and the admin
//! client calls the tests make against it.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::fake_dns::{Answer, FakeDns};
use crate::support::http::{exchange, Reply};
use crate::support::origin::HttpOrigin;
use egress_proxy::admin::AdminOptions;
use egress_proxy::config::{self, Sources};
use egress_proxy::server::Server;
use serde_json::Value;

pub const TOKEN: &str = "test-token-0123456789";

// ---------------------------------------------------------------------------------------------
// A running server
// ---------------------------------------------------------------------------------------------

pub struct Harness {
    pub server: Server,
    pub admin: SocketAddr,
    pub policy_file: PathBuf,
    pub dns: FakeDns,
    pub origin: HttpOrigin,
    pub dir: tempfile::TempDir,
}

/// The policy every test starts from: `allowed.test` allowed (it resolves to 127.0.0.1, so
/// `allow_local_binding` lets it through to the origin), `denied.test` denied by a rule, and
/// everything else not allowed.
pub fn policy_text(dns: SocketAddr, domains: &str, token_file: &Path) -> String {
    format!(
        "enabled = true\nallow_local_binding = true\n\n[domains]\n{domains}\n\n\
         [dns]\nservers = [\"{dns}\"]\ntimeout_ms = 1000\n\n\
         [admin]\ntoken_file = {token_file:?}\n"
    )
}

pub const DOMAINS: &str = "\"allowed.test\" = \"allow\"\n\"denied.test\" = \"deny\"";

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(egress_proxy::metrics::install()).await
    }

    pub async fn start_with(
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Self {
        Harness::launch(metrics, None).await
    }

    /// The same, with an administrator's requirements file holding `requirements`.
    pub async fn start_managed(requirements: &str) -> Self {
        Harness::launch(egress_proxy::metrics::install(), Some(requirements)).await
    }

    async fn launch(
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
        requirements: Option<&str>,
    ) -> Self {
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

        let requirements = requirements.map(|text| {
            let path = dir.path().join("requirements.toml");
            std::fs::write(&path, text).unwrap();
            path
        });
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let sources = Sources {
            configs: vec![policy_file.clone()],
            requirements,
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
    pub fn write_policy(&self, domains: &str) {
        let token_file = self.dir.path().join("token");
        let text = policy_text(self.dns.addr, domains, &token_file);
        std::fs::write(&self.policy_file, text).unwrap();
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.get_as(path, None).await
    }

    /// A GET with `Authorization: Bearer <token>` when `token` is given.
    pub async fn get_as(&self, path: &str, token: Option<&str>) -> Reply {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
        exchange(self.admin, &req, false).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &str) -> Reply {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        exchange(self.admin, &req, false).await
    }

    /// A plain-HTTP GET through the proxy to `host` on the origin's port.
    pub async fn proxy_get(&self, host: &str) -> Reply {
        let authority = format!("{host}:{}", self.origin.addr.port());
        let req = format!(
            "GET http://{authority}/path HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        );
        exchange(self.server.http_addr, &req, false).await
    }

    /// A CONNECT through the proxy to `host` on the origin's port; only the head is read.
    pub async fn proxy_connect(&self, host: &str) -> Reply {
        let authority = format!("{host}:{}", self.origin.addr.port());
        let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        exchange(self.server.http_addr, &req, true).await
    }

    pub async fn patterns(&self) -> Value {
        let reply = self.get("/patterns").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    pub async fn metrics(&self) -> String {
        let reply = self.get("/metrics").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4")
        );
        reply.body
    }

    pub async fn stop(self) {
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
    pub fn json(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

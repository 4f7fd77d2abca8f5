//! An `https://` upstream: TLS to the proxy itself, verified against `[upstream] ca_file`.

use std::sync::Arc;

use crate::support::http::proxy_get;
use crate::support::upstream::{HttpOptions, HttpUpstream, TestCa};
use crate::*;

#[tokio::test]
async fn an_https_upstream_with_a_test_ca() {
    let (dns, echo) = (dns(), echo());
    let ca = Arc::new(TestCa::new());
    let upstream = HttpUpstream::start(
        echo.addr,
        HttpOptions {
            tls: Some(Arc::clone(&ca)),
            auth: Some(("me", SECRET)),
            ..HttpOptions::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://me:{SECRET}@{host}:{}", upstream.addr.port());
        let extra = format!("ca_file = {:?}\n", ca_file.display().to_string());
        let proxy = proxy(&dns).toml(&upstream_toml(&url, &extra)).start().await;
        let (reply, mut stream) = tunnel(proxy.addr, "allowed.test:443").await;
        assert_eq!(reply.status, 200, "{host}: {}", reply.body);
        assert_echoes(&mut stream).await;
        let reply = proxy_get(proxy.addr, "allowed.test", "").await;
        assert_eq!(
            reply.body, "upstream saw GET http://allowed.test:80/path",
            "{host}"
        );
    }
    assert_eq!(
        upstream.lines(),
        [
            "CONNECT allowed.test:443",
            "GET http://allowed.test:80/path",
            "CONNECT allowed.test:443",
            "GET http://allowed.test:80/path",
        ]
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_upstream_tls() {
    let (dns, echo) = (dns(), echo());
    let upstream = HttpUpstream::start(
        echo.addr,
        HttpOptions {
            tls: Some(Arc::new(TestCa::new())),
            ..HttpOptions::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, TestCa::new().pem).unwrap();
    let url = format!("https://localhost:{}", upstream.addr.port());
    let extra = format!("ca_file = {:?}\n", other.display().to_string());
    let proxy = proxy(&dns).toml(&upstream_toml(&url, &extra)).start().await;
    let (reply, _) = tunnel(proxy.addr, "allowed.test:443").await;
    assert_eq!(
        reply.verdict(),
        (502, Some("upstream-tls"), Some("upstream-tls")),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("TLS with the upstream proxy"),
        "{}",
        reply.body
    );
    let reply = proxy_get(proxy.addr, "allowed.test", "").await;
    assert_eq!(
        reply.verdict(),
        (502, Some("upstream-tls"), Some("upstream-tls"))
    );
    assert!(
        upstream.lines().is_empty(),
        "nothing was sent over a connection that failed TLS"
    );
}

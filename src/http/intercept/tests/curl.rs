//! curl as the client, trusting the engine's CA with `--cacert` and sent to the engine with
//! `--connect-to`, over HTTP/1.1 and HTTP/2.

use std::io::Write as _;

use super::*;

/// `curl -i` through the engine; the head and body it printed.
async fn curl(engine: &Engine, port: u16, args: &[&str]) -> String {
    let mut ca = tempfile::NamedTempFile::new().unwrap();
    ca.write_all(engine.ca.pem.as_bytes()).unwrap();
    let connect_to = format!("{NAME}:{port}:127.0.0.1:{}", engine.addr.port());
    let mut command = tokio::process::Command::new("curl");
    for var in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
        command.env_remove(var).env_remove(var.to_uppercase());
    }
    let output = command
        .args(["-q", "-sS", "-i", "--max-time", "10", "--cacert"])
        .arg(ca.path())
        .args(["--connect-to", &connect_to])
        .args(args)
        .arg(format!("https://{NAME}:{port}/curl?q=1"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("curl is required by these tests");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_lowercase()
}

#[tokio::test]
async fn curl_gets_through_over_http1_and_http2() {
    let (engine, origin) = world(H2_H1).await;
    let port = origin.addr.port();
    let h1 = curl(&engine, port, &["--http1.1"]).await;
    assert!(h1.starts_with("http/1.1 200"), "{h1}");
    assert!(h1.ends_with("origin saw get /curl?q=1"), "{h1}");
    let h2 = curl(&engine, port, &["--http2"]).await;
    assert!(h2.starts_with("http/2 200"), "{h2}");
    assert_eq!(origin.seen().len(), 2);
}

#[tokio::test]
async fn curl_sees_the_refusal_inside_tls() {
    let (engine, origin) = world(H2_H1).await;
    let port = origin.addr.port();
    for version in ["--http1.1", "--http2"] {
        let text = curl(&engine, port, &[version, "-X", "POST", "-d", "x"]).await;
        assert!(text.contains(" 403"), "{text}");
        assert!(
            text.contains("x-proxy-reason: method-not-allowed"),
            "{text}"
        );
        let json = curl(
            &engine,
            port,
            &[version, "-d", "x", "-H", "accept: application/json"],
        )
        .await;
        assert!(json.contains("\"reason\":\"method-not-allowed\""), "{json}");
    }
    assert_eq!(origin.connections(), 0);
}

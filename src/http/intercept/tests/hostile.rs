//! Clients that try what they should not: another host through the pinned origin, no TLS,
//! no handshake, no request, a huge head, an upgrade that is not WebSocket.

use tokio::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::clients::{h1, h2, read, request, tls};
use super::*;

#[tokio::test]
async fn another_host_inside_the_tunnel_is_421_and_never_sent() {
    let (engine, origin) = world(H2_H1).await;
    let port = origin.addr.port();
    let mut client = h1(engine.addr, &engine.ca).await;
    let fronted = [
        ("/", "other.test".to_string()),
        ("/", format!("other.test:{port}")),
        ("/", format!("{NAME}:1")),
        ("/", format!("127.0.0.1:{port}")),
        ("https://other.test/", format!("{NAME}:{port}")),
        ("https://user@other.test/", format!("{NAME}:{port}")),
    ];
    for (uri, host) in &fronted {
        client.ready().await.unwrap();
        let response = client
            .send_request(request("GET", uri, Some(host), ""))
            .await
            .unwrap();
        let (status, reason, _) = read(response, "x-proxy-reason").await;
        assert_eq!(
            (status, &*reason),
            (421, "misdirected-request"),
            "{uri} {host}"
        );
    }
    let mut h2 = h2(engine.addr, &engine.ca).await;
    let response = h2
        .send_request(request("GET", "https://other.test/x", None, ""))
        .await
        .unwrap();
    assert_eq!(read(response, "").await.0, 421);
    assert_eq!(origin.connections(), 0);
    assert!(engine.hooks.checked.lock().unwrap().is_empty());
    // The tunnel's own name, with or without its port, in other spellings.
    for host in [NAME.to_string(), format!("ALLOWED.test.:{port}")] {
        client.ready().await.unwrap();
        let response = client
            .send_request(request("GET", "/", Some(&host), ""))
            .await
            .unwrap();
        assert_eq!(read(response, "").await.0, 200, "{host}");
    }
}

/// The engine with a short header timeout, and a client that only opened TCP.
async fn slow_world() -> (Engine, TcpStream) {
    let origin_ca = Arc::new(TestCa::new());
    let mut setup = Setup::new("127.0.0.1:9".parse().unwrap(), origin_ca);
    setup.limits.header_timeout = Duration::from_millis(300);
    let engine = Engine::start(setup).await;
    let tcp = TcpStream::connect(engine.addr).await.unwrap();
    (engine, tcp)
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_cut_at_the_header_timeout() {
    let (mut engine, mut tcp) = slow_world().await;
    let start = Instant::now();
    let result = engine.result().await;
    assert!(
        matches!(result, Err(InterceptError::HandshakeTimeout(_))),
        "{result:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    let mut buf = [0u8; 64];
    assert_eq!(tcp.read(&mut buf).await.unwrap_or(0), 0);
}

#[tokio::test]
async fn a_plaintext_client_is_closed_without_an_http_answer() {
    let (mut engine, mut tcp) = slow_world().await;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
        .await
        .unwrap();
    let result = engine.result().await;
    assert!(
        matches!(result, Err(InterceptError::Handshake(_))),
        "{result:?}"
    );
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got).await;
    assert!(!got.starts_with(b"HTTP/"), "{got:?}");
}

#[tokio::test]
async fn a_client_that_never_sends_a_request_is_cut_at_the_header_timeout() {
    let (mut engine, tcp) = slow_world().await;
    drop(tcp);
    let _ = engine.result().await;
    let mut stream = tls(engine.addr, &engine.ca, H1).await;
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(engine.result().await.unwrap().requests, 0);
}

#[tokio::test]
async fn a_huge_head_gets_431() {
    let (engine, origin) = world(H2_H1).await;
    let mut stream = tls(engine.addr, &engine.ca, H1).await;
    let big = "a".repeat(Limits::default().max_header_bytes + 1);
    let head = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nx-big: {big}\r\n\r\n",
        host(&origin)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = vec![0u8; 64];
    let n = stream.read(&mut got).await.unwrap();
    let line = String::from_utf8_lossy(&got[..n]);
    assert!(line.starts_with("HTTP/1.1 431"), "{line}");
    assert_eq!(origin.connections(), 0);
}

#[tokio::test]
async fn an_upgrade_that_is_not_websocket_is_refused() {
    let (engine, origin) = world(H2_H1).await;
    let mut client = h1(engine.addr, &engine.ca).await;
    let mut req = request("GET", "/", Some(&host(&origin)), "");
    req.headers_mut().insert("upgrade", "h2c".parse().unwrap());
    req.headers_mut()
        .insert("connection", "upgrade".parse().unwrap());
    let response = client.send_request(req).await.unwrap();
    let (status, error, body) = read(response, "x-proxy-error").await;
    assert_eq!((status, &*error), (400, "bad-request"));
    assert!(body.contains("only WebSocket"), "{body}");
    assert_eq!(origin.connections(), 0);
}

#[tokio::test]
async fn http2_streams_are_bounded_per_connection() {
    let (engine, origin) = world(H2_H1).await;
    let io = hyper_util::rt::TokioIo::new(tls(engine.addr, &engine.ca, H2_H1).await);
    let executor = hyper_util::rt::TokioExecutor::new();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(executor, io)
        .await
        .unwrap();
    tokio::pin!(connection);
    let uri = format!("https://{}/", host(&origin));
    let exchange = async {
        let response = sender.send_request(request("GET", &uri, None, "")).await;
        read(response.unwrap(), "").await
    };
    let answer = tokio::select! {
        answer = exchange => answer,
        ended = connection.as_mut() => panic!("connection ended: {ended:?}"),
    };
    assert_eq!(answer.0, 200);
    // The server's SETTINGS_MAX_CONCURRENT_STREAMS, as the client learned it.
    let max = super::super::MAX_STREAMS as usize;
    assert_eq!(connection.current_max_send_streams(), max);
}

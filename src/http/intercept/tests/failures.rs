//! An origin that cannot be trusted or reached: the client gets a 502 inside TLS that says
//! why, never a silent pass.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::clients::{h1, read, request};
use super::*;

/// The engine in front of an origin whose certificate is `names` signed by `signer`, while
/// the engine trusts `trusted`.
async fn untrusted(
    names: &[&str],
    signer: &TestCa,
    trusted: Arc<TestCa>,
) -> (u16, String, String, usize) {
    let origin = HttpsOrigin::start(signer.server(names, H2_H1)).await;
    let engine = Engine::start(Setup::new(origin.addr, trusted)).await;
    let mut client = h1(engine.addr, &engine.ca).await;
    let response = client
        .send_request(request("GET", "/", Some(&host(&origin)), ""))
        .await
        .unwrap();
    let (status, reason, body) = read(response, "x-proxy-reason").await;
    let records = engine.hooks.records();
    assert_eq!(records[0].outcome, Outcome::Failed);
    assert_eq!(records[0].reason, Some("upstream-tls"));
    (status, reason, body, origin.seen().len())
}

#[tokio::test]
async fn an_origin_certificate_for_another_name_is_a_502_upstream_tls() {
    let ca = Arc::new(TestCa::new());
    let (status, reason, body, seen) = untrusted(&["other.test"], &ca, Arc::clone(&ca)).await;
    assert_eq!((status, &*reason, seen), (502, "upstream-tls", 0));
    assert!(body.contains("TLS to allowed.test:"), "{body}");
    assert!(body.contains("not valid for name"), "{body}");
}

#[tokio::test]
async fn an_origin_signed_by_an_unknown_ca_is_a_502_upstream_tls() {
    let (status, reason, body, seen) =
        untrusted(&[NAME], &TestCa::new(), Arc::new(TestCa::new())).await;
    assert_eq!((status, &*reason, seen), (502, "upstream-tls", 0));
    assert!(body.contains("UnknownIssuer"), "{body}");
}

#[tokio::test]
async fn an_origin_that_is_down_is_the_connect_paths_502() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let engine = Engine::start(Setup::new(closed, Arc::new(TestCa::new()))).await;
    let mut client = h1(engine.addr, &engine.ca).await;
    let host = format!("{NAME}:{}", closed.port());
    let response = client
        .send_request(request("GET", "/", Some(&host), ""))
        .await
        .unwrap();
    let (status, error, body) = read(response, "x-proxy-error").await;
    assert_eq!((status, &*error), (502, "connect-refused"));
    assert!(body.contains("connection refused by 127.0.0.1:"), "{body}");
    // The tunnel stays usable: the next request tries again.
    client.ready().await.unwrap();
    let again = client
        .send_request(request("GET", "/", Some(&host), ""))
        .await
        .unwrap();
    assert_eq!(read(again, "").await.0, 502);
}

/// An HTTP/1.1 origin that answers the first request of each connection and closes the
/// connection under the second without answering, as an origin whose keep-alive timer fired
/// does. Returns its address and a count of connections.
async fn closing_origin(ca: &TestCa) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server(&[NAME], H1));
    let connections = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut tls = acceptor.accept(tcp).await.unwrap();
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if tls.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                tls.write_all(answer).await.unwrap();
                let mut next = [0u8; 1];
                let _ = tls.read(&mut next).await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn a_kept_origin_connection_closed_under_a_get_is_replayed_once() {
    let origin_ca = Arc::new(TestCa::new());
    let (addr, connections) = closing_origin(&origin_ca).await;
    let engine = Engine::start(Setup::new(addr, origin_ca)).await;
    let host = format!("{NAME}:{}", addr.port());
    let mut client = h1(engine.addr, &engine.ca).await;
    for _ in 0..2 {
        client.ready().await.unwrap();
        let response = client
            .send_request(request("GET", "/", Some(&host), ""))
            .await;
        assert_eq!(
            read(response.unwrap(), "").await,
            (200, String::new(), "ok".into())
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    // A request with a body is not sent twice: the client is told.
    client.ready().await.unwrap();
    let upload = request("POST", "/upload", Some(&host), "data");
    let (status, error, _) =
        read(client.send_request(upload).await.unwrap(), "x-proxy-error").await;
    assert_eq!((status, &*error), (502, "upstream-failed"));
}

//! Clients of the engine: hyper over tokio-rustls, trusting the engine's CA, with the tunnel's
//! name as SNI.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{TestCa, H1, H2_H1, NAME};

pub(super) type ClientBody = BoxBody<Bytes, hyper::Error>;

/// A TLS connection to the engine offering `alpn`.
pub(super) async fn tls(addr: SocketAddr, ca: &TestCa, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = TlsConnector::from(ca.client(alpn));
    connector
        .connect(ServerName::try_from(NAME).unwrap(), tcp)
        .await
        .unwrap()
}

/// An HTTP/1.1 client on one kept connection.
pub(super) async fn h1(addr: SocketAddr, ca: &TestCa) -> http1::SendRequest<ClientBody> {
    let io = TokioIo::new(tls(addr, ca, H1).await);
    let (sender, connection) = http1::handshake(io).await.unwrap();
    tokio::spawn(connection.with_upgrades());
    sender
}

/// An HTTP/2 client on one multiplexed connection.
pub(super) async fn h2(addr: SocketAddr, ca: &TestCa) -> http2::SendRequest<ClientBody> {
    let stream = tls(addr, ca, H2_H1).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// A request with `body`; `host` is the Host header (HTTP/1.1) when given.
pub(super) fn request(
    method: &str,
    uri: &str,
    host: Option<&str>,
    body: impl Into<Bytes>,
) -> Request<ClientBody> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(host) = host {
        builder = builder.header("host", host);
    }
    builder
        .body(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

/// Status, one header and the body as text.
pub(super) async fn read(response: Response<Incoming>, header: &str) -> (u16, String, String) {
    let status = response.status().as_u16();
    let value = response
        .headers()
        .get(header)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, value, String::from_utf8_lossy(&body).into_owned())
}

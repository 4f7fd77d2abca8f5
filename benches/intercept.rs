//! Keep-alive HTTPS GETs through the interception engine against the same GETs straight to
//! the origin over TLS, both on loopback with one kept connection (HTTP/1.1 and HTTP/2).
//! The ratio of the two is the cost of terminating and re-originating TLS per request.
//!
//! `cargo bench --features bench --bench intercept`

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use egress_proxy::intercept_testing::{bench_world, H1, H2_H1, NAME};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

type Body = Empty<Bytes>;

/// A kept connection to `addr`, HTTP/2 when ALPN says so.
enum Client {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

impl Client {
    async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = ServerName::try_from(NAME).unwrap();
        let tls = TlsConnector::from(config).connect(name, tcp).await.unwrap();
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Client::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Client::H1(sender)
        }
    }

    async fn get(&mut self, uri: &str, host: &str) {
        let req = Request::get(uri)
            .header("host", host)
            .body(Empty::new())
            .unwrap();
        let response = match self {
            Client::H1(sender) => {
                sender.ready().await.unwrap();
                sender.send_request(req).await.unwrap()
            }
            Client::H2(sender) => {
                let mut req = req;
                *req.uri_mut() = format!("https://{host}{uri}").parse().unwrap();
                req.headers_mut().remove("host");
                sender.send_request(req).await.unwrap()
            }
        };
        assert!(response.status().is_success());
        response.into_body().collect().await.unwrap();
    }
}

fn keep_alive_gets(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    for (protocol, alpn) in [("h1", H1), ("h2", H2_H1)] {
        let world = rt.block_on(bench_world(alpn));
        let host = format!("{NAME}:{}", world.origin.port());
        let mut group = c.benchmark_group(format!("intercept_{protocol}_keepalive_get"));
        let sides = [
            ("direct", world.origin, &world.origin_client),
            ("intercepted", world.engine, &world.engine_client),
        ];
        for (side, addr, config) in sides {
            let mut client = rt.block_on(Client::connect(addr, Arc::clone(config)));
            group.bench_function(side, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            client.get("/size/1024", &host).await;
                        }
                        start.elapsed()
                    })
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = keep_alive_gets
}
criterion_main!(benches);

//! A local HTTPS origin (tokio-rustls and hyper's auto server) that records every request it
//! sees and every TLS connection it accepts.
//!
//! `/size/N` answers N bytes; a request with a body gets `got N`; `/ws` with
//! `Upgrade: websocket` answers 101 and echoes raw bytes; anything else `origin saw M P`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// One request as the origin saw it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) method: String,
    /// Path and query.
    pub(crate) target: String,
    /// The Host header, or the HTTP/2 `:authority`.
    pub(crate) host: String,
    pub(crate) version: hyper::Version,
    pub(crate) headers: hyper::HeaderMap,
}

pub(crate) struct HttpsOrigin {
    pub(crate) addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

type OriginBody = BoxBody<Bytes, hyper::Error>;

impl HttpsOrigin {
    pub(crate) async fn start(config: Arc<ServerConfig>) -> HttpsOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (all, count) = (Arc::clone(&seen), Arc::clone(&connections));
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, all, count) =
                    (acceptor.clone(), Arc::clone(&all), Arc::clone(&count));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let service = service_fn(move |req| {
                        let all = Arc::clone(&all);
                        async move { Ok::<_, Infallible>(answer(req, &all).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        HttpsOrigin {
            addr,
            seen,
            connections,
        }
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// TLS connections accepted.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn answer(mut req: Request<Incoming>, all: &Mutex<Vec<Seen>>) -> Response<OriginBody> {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(String::from)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let target = req
        .uri()
        .path_and_query()
        .map_or("", |pq| pq.as_str())
        .to_string();
    all.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        target: target.clone(),
        host,
        version: req.version(),
        headers: req.headers().clone(),
    });
    if target == "/ws" && req.headers().contains_key(UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 4096];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let mut response = Response::new(text(""));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert(UPGRADE, "websocket".parse().unwrap());
        response
            .headers_mut()
            .insert(CONNECTION, "upgrade".parse().unwrap());
        response
            .headers_mut()
            .insert("sec-websocket-accept", "test".parse().unwrap());
        return response;
    }
    if let Some(n) = target.strip_prefix("/size/") {
        let n: usize = n.parse().unwrap();
        return Response::new(text(vec![b'x'; n]));
    }
    let method = req.method().to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
    match body {
        Ok(0) => Response::new(text(format!("origin saw {method} {target}"))),
        Ok(n) => Response::new(text(format!("got {n}"))),
        Err(e) => Response::new(text(format!("body failed: {e}"))),
    }
}

fn text(body: impl Into<Bytes>) -> OriginBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

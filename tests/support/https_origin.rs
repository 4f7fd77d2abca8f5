//! An HTTPS origin on 127.0.0.1 (tokio-rustls and hyper's auto server, HTTP/1.1 and HTTP/2 as
//! ALPN chooses) with a certificate from a [`TestCa`], recording every request and every TLS
//! connection, so a test can assert what reached it and what never did.
//!
//! It answers `origin saw <METHOD> <path?query> <version>`, and serves a dumb-HTTP git
//! repository at `/repo.git` (`info/refs` with one branch, `HEAD`) for `git ls-remote`.
//! It runs on a thread with its own runtime and stops with the process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use super::tls::TestCa;

/// ALPN offering HTTP/2 and HTTP/1.1.
pub const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN offering HTTP/1.1 only.
pub const H1: &[&[u8]] = &[b"http/1.1"];

/// The branch `/repo.git` advertises.
pub const GIT_REF: &str = "0123456789abcdef0123456789abcdef01234567\trefs/heads/main";

/// One request as the origin saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The Host header, or the HTTP/2 `:authority`.
    pub host: String,
    pub version: Version,
}

pub struct HttpsOrigin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl HttpsOrigin {
    /// Serves a certificate `ca` signed for `names`, offering `alpn`.
    pub fn start(ca: &TestCa, names: &[&str], alpn: &[&[u8]]) -> HttpsOrigin {
        let acceptor = ca.acceptor(names, alpn);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (all, count) = (Arc::clone(&seen), Arc::clone(&connections));
        let addr = super::upstream::spawn(move |listener| async move {
            while let Ok((tcp, _)) = listener.accept().await {
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
                        .serve_connection(TokioIo::new(tls), service)
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

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// `METHOD target` of every request seen so far.
    pub fn lines(&self) -> Vec<String> {
        self.seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.target))
            .collect()
    }

    /// TLS connections accepted (a handshake that failed is not counted).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn answer(req: Request<Incoming>, all: &Mutex<Vec<Seen>>) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(String::from)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let target = req
        .uri()
        .path_and_query()
        .map_or("", |pq| pq.as_str())
        .to_string();
    let (method, version) = (req.method().to_string(), req.version());
    all.lock().unwrap().push(Seen {
        method: method.clone(),
        target: target.clone(),
        host,
        version,
    });
    let _ = req.into_body().collect().await;
    let path = target.split_once('?').map_or(target.as_str(), |(p, _)| p);
    let body = match path {
        "/repo.git/info/refs" => format!("{GIT_REF}\n"),
        "/repo.git/HEAD" => "ref: refs/heads/main\n".to_string(),
        _ => format!("origin saw {method} {target} {version:?}"),
    };
    Response::new(Full::new(Bytes::from(body)))
}

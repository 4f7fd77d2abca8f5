//! HTTPS inspection inside one CONNECT tunnel: terminate the client's TLS with a minted
//! certificate, serve HTTP/1.1 or HTTP/2 as ALPN chose, check every request before anything
//! reaches the origin, and forward what is allowed over TLS to the pinned origin.
//!
//! The engine takes plain inputs ([`Session`]: rustls configs, a dial function, the limits)
//! and a [`Hooks`] for the policy and the audit, so the CONNECT handler decides what to
//! intercept and this module only serves it. It lives under `http` because its answers are the
//! listener's (`respond`, `forward`'s header rules), and the CONNECT handler calls it.
//!
//! What a client inside the tunnel cannot do: reach the origin with a refused request (the
//! origin connection is opened on the first allowed one), ask the pinned origin for another
//! host (421, see [`request`]), or keep a connection open without using it (the header and
//! idle timeouts).

mod body;
mod origin;
mod request;
mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use crate::audit::RequestRecord;
use crate::config::Limits;
use crate::gate::Denied;
use crate::net::route::OpenError;
use crate::policy::Target;
use request::Exchange;

/// HTTP/2 streams one client connection may have open at once.
const MAX_STREAMS: u32 = 100;
/// hyper's smallest read buffer; a smaller `max_header_bytes` is enforced at this size.
const MIN_BUF: usize = 8192;

/// A connection to the origin, as the dial function opens it: TCP to the pinned address, or
/// a tunnel through the upstream proxy.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// What the dial function returns.
pub type Dialing = Pin<Box<dyn Future<Output = Result<Box<dyn Io>, OpenError>> + Send>>;

/// Opens a new connection to the address the gate pinned for the tunnel, and nowhere else.
pub type Dial = Arc<dyn Fn() -> Dialing + Send + Sync>;

/// Everything the engine needs about one intercepted tunnel.
pub struct Session {
    /// The client side: the minted leaf for the name, ALPN `h2` and `http/1.1`.
    pub server: Arc<ServerConfig>,
    /// The CONNECT target: the origin's TLS name (SNI and verification) and the only host a
    /// request inside may name.
    pub target: Target<'static>,
    /// The origin side, offering `h2` and `http/1.1`.
    pub origin: Arc<ClientConfig>,
    /// The origin side for WebSocket upgrades, offering `http/1.1` only.
    pub upgrade: Arc<ClientConfig>,
    /// Opens a connection to the pinned origin address.
    pub dial: Dial,
    /// The header timeout bounds the client's TLS handshake and each request head; the
    /// connect timeout the origin's handshake; the idle timeout an unused connection.
    pub limits: Limits,
}

/// The policy and the audit, as the CONNECT handler provides them.
pub trait Hooks: Send + Sync {
    /// Whether a request inside the tunnel may go to the origin. `path` has no query string;
    /// `body` says whether the request carries one. A denial is answered inside TLS.
    fn check(&self, method: &Method, path: &str, body: bool) -> Result<(), Denied>;
    /// Called once per request when its response is done (or abandoned).
    fn record(&self, request: &RequestRecord<'_>);
}

/// What one intercepted connection did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterceptStats {
    /// Requests the client sent.
    pub requests: u64,
    /// Those answered by the proxy instead of the origin.
    pub refused: u64,
}

/// Why an intercepted connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// The client did not finish its TLS handshake in time.
    #[error("client TLS handshake timed out after {} ms", .0.as_millis())]
    HandshakeTimeout(Duration),
    /// The client's TLS handshake failed (not TLS, or it does not trust the CA).
    #[error("client TLS handshake failed: {0}")]
    Handshake(io::Error),
    /// The tunnel's name cannot be a TLS server name.
    #[error("{0} is not a name TLS can verify")]
    Name(String),
    /// The HTTP connection with the client failed.
    #[error("client connection failed: {0}")]
    Http(Box<dyn std::error::Error + Send + Sync>),
}

/// Serves one intercepted tunnel until the client is done, the idle timeout passes, or the
/// connection fails.
pub async fn serve<C>(
    client: C,
    session: Session,
    hooks: Arc<dyn Hooks>,
) -> Result<InterceptStats, InterceptError>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let acceptor = TlsAcceptor::from(Arc::clone(&session.server));
    let limit = session.limits.header_timeout;
    let limits = session.limits.clone();
    let dest = session.target.to_string();
    let exchange = Exchange::new(session, hooks).ok_or(InterceptError::Name(dest))?;
    let exchange = Arc::new(exchange);
    let tls = match tokio::time::timeout(limit, acceptor.accept(client)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tls_failure("client");
            return Err(InterceptError::Handshake(error));
        }
        Err(_) => {
            tls_failure("client");
            return Err(InterceptError::HandshakeTimeout(limit));
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let served = Arc::clone(&exchange);
    let service = service_fn(move |req: Request<Incoming>| {
        let exchange = Arc::clone(&served);
        async move { Ok::<_, Infallible>(exchange.handle(req).await) }
    });
    let builder = builder(h2, &limits);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = exchange.idle(limits.header_timeout, limits.idle_timeout) => {
            connection.as_mut().graceful_shutdown();
            // Cut for idleness: whatever the cut connection says is not the client's failure.
            let _ = connection.await;
            Ok(())
        }
    };
    result.map_err(InterceptError::Http)?;
    Ok(InterceptStats {
        requests: exchange.requests.load(Ordering::Relaxed),
        refused: exchange.refused.load(Ordering::Relaxed),
    })
}

/// The server for what ALPN chose: HTTP/2 for `h2`, else HTTP/1.1 (no ALPN at all is an
/// HTTP/1.1 client), each with its own limits.
fn builder(h2: bool, limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // A head that does not fit gets hyper's 431.
        .max_buf_size(limits.max_header_bytes.max(MIN_BUF))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    }
}

/// Counts a failed TLS handshake on `side` (`client` or `origin`).
fn tls_failure(side: &'static str) {
    metrics::counter!(crate::metrics::TLS_FAILURES, "side" => side).increment(1);
}

#[cfg(any(test, feature = "bench"))]
// A bench build uses only the world, not the readers the tests assert with.
#[cfg_attr(not(test), allow(dead_code))]
pub mod testing;
#[cfg(test)]
mod tests;

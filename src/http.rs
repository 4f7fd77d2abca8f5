//! The HTTP proxy listener: absolute-form forward proxy for `http://` and CONNECT tunnels.
//!
//! Each request is decided by the policy, resolved once, and sent only to the addresses that
//! were checked ([`crate::net::Gate`]). hyper parses the requests and enforces the header
//! limits; malformed requests get hyper's 400/431 and the connection closes.

mod connect;
mod forward;
pub mod intercept;
pub mod respond;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

use crate::audit::Dest;
use crate::gate::Denied;
use crate::net::listener;
use crate::net::Ctx;
use crate::respond::Refusal;
use crate::session::SessionToken;

/// Response body: ours are small and whole, upstream ones are streamed through.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Serves the HTTP proxy on a bound listener until `shutdown` completes.
pub async fn serve(listener: TcpListener, ctx: Ctx, shutdown: impl Future<Output = ()>) {
    let slots = Arc::clone(&ctx.slots);
    let pool = Arc::new(forward::Pool::default());
    listener::accept_loop(listener, slots, shutdown, move |stream, peer, permit| {
        let ctx = ctx.clone();
        let pool = Arc::clone(&pool);
        async move {
            match permit {
                Some(permit) => {
                    serve_connection(stream, peer, ctx, Arc::new(permit), &pool).await;
                }
                None => {
                    let mut stream = stream;
                    let _ = stream.write_all(crate::respond::BUSY).await;
                    let _ = stream.shutdown().await;
                }
            }
        }
    })
    .await;
}

/// What the requests of one client connection share, behind one reference count: a request
/// clones this instead of the [`Ctx`] (seven to thirteen reference counts) and four more.
struct Conn {
    ctx: Ctx,
    client: SocketAddr,
    /// The origin connection kept for the next request ([`forward::Kept`]).
    upstream: Mutex<Option<forward::Upstream>>,
    /// The connection's permit: a CONNECT tunnel takes a clone along, so the slot stays taken
    /// until the tunnel ends, not just until hyper hands the connection over.
    slot: Arc<OwnedSemaphorePermit>,
    seen: Credentials,
    pool: Arc<forward::Pool>,
}

/// Serves one client connection. The origin connection it kept last goes to `pool` when it
/// closes.
async fn serve_connection(
    stream: TcpStream,
    client: SocketAddr,
    ctx: Ctx,
    slot: Arc<OwnedSemaphorePermit>,
    pool: &Arc<forward::Pool>,
) {
    let _ = stream.set_nodelay(true);
    let conn = Arc::new(Conn {
        ctx,
        client,
        upstream: Mutex::new(None),
        slot,
        seen: Credentials::default(),
        pool: Arc::clone(pool),
    });
    let shared = Arc::clone(&conn);
    let service = service_fn(move |req: Request<Incoming>| {
        let conn = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(req, &conn).await) }
    });
    let (limits, drain) = (&conn.ctx.limits, &conn.ctx.drain);
    let _open = drain.guard();
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true)
        // A client may send its request and shut down its write side (`printf … | nc -N`);
        // it still waits for the answer.
        .half_close(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    // On shutdown an idle keep-alive connection closes at once and a busy one after its
    // current response; tunnels already handed off keep their own guard.
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = drain.stopping() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%client, error = %err, "client connection ended with an error");
    }
    if let Some(kept) = conn.upstream.lock().ok().and_then(|mut kept| kept.take()) {
        conn.pool.put(client.ip(), kept);
    }
    if let Some(session) = &conn.ctx.session {
        conn.seen.warn_if_never_sent(session, client);
    }
}

async fn handle(req: Request<Incoming>, conn: &Conn) -> Response<Body> {
    let Conn {
        ctx, client, seen, ..
    } = conn;
    let client = *client;
    let json = respond::wants_json(req.headers());
    let mut response = if !seen.check(&req, client, ctx) {
        respond::response(&Refusal::ProxyAuth)
    } else if req.method() == Method::CONNECT {
        // hyper holds this future for the connection's whole life, sized for its largest
        // branch. Boxed, CONNECT (once per connection) and, in `forward`, the unix and
        // upstream-proxy branches take their room only when they run: a keep-alive
        // connection's future went from 7,784 to 4,104 bytes.
        Box::pin(connect::handle(req, client, ctx, Arc::clone(&conn.slot))).await
    } else {
        let kept = forward::Kept {
            conn: &conn.upstream,
            pool: &conn.pool,
        };
        forward::handle(req, client, ctx, kept).await
    };
    if json {
        respond::prefer_json(&mut response);
    }
    response
}

/// What the requests of one client connection did about the session credentials.
#[derive(Default)]
struct Credentials {
    refused: AtomicBool,
    accepted: AtomicBool,
}

impl Credentials {
    /// Whether the request carries the session credentials, when the listener has them.
    /// Every request is checked, also the next one on a kept connection: credentials belong
    /// to a request, not to a connection (RFC 9110 section 11.7.2).
    fn check(&self, req: &Request<Incoming>, client: SocketAddr, ctx: &Ctx) -> bool {
        let Some(session) = &ctx.session else {
            return true;
        };
        let ok = session.authorizes(req.headers());
        let seen = if ok { &self.accepted } else { &self.refused };
        seen.store(true, Ordering::Relaxed);
        if !ok {
            tracing::debug!(%client, "refused a request without this proxy's credentials (407)");
        }
        ok
    }

    /// Warns once per proxy about a connection refused without ever sending the credentials:
    /// the sign of a client that cannot send them. A client that sends them only after a 407
    /// (libcurl's `anyauth`, as git uses it) is not worth a word.
    fn warn_if_never_sent(&self, session: &SessionToken, client: SocketAddr) {
        let never = self.refused.load(Ordering::Relaxed) && !self.accepted.load(Ordering::Relaxed);
        if never && session.first_refusal() {
            tracing::warn!(
                %client,
                "refused a client that sent no proxy credentials (407); a client that cannot \
                 send them needs `run --no-session-auth`"
            );
        }
    }
}

/// The answer to a denial the gate already recorded.
fn denial(dest: Dest<'_>, denied: &Denied) -> Response<Body> {
    let shown = dest.to_string();
    respond::response(&Refusal::Denied {
        dest: &shown,
        denied,
    })
}

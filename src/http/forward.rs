//! The forward proxy for absolute-form `http://` requests and `x-unix-socket` requests.
//!
//! The destination is the request URI's authority (userinfo dropped, as a browser would), never
//! the Host header: the Host header is rewritten to match, so an origin behind a shared IP
//! cannot be addressed by a name the policy never saw. Bodies stream both ways. The upstream
//! connection is kept per client connection and reused only while the next request is pinned
//! to the same address. When a kept connection turns out to have been closed by the origin
//! under a bodiless GET, HEAD or OPTIONS, the request is sent again once on a new connection
//! (RFC 9110 section 9.2.2), as browsers and squid do, instead of failing with 502.
//!
//! Through an upstream proxy (`chain`), the request goes to it in absolute form instead, and
//! the kept connection is the one to the upstream.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST,
    TRANSFER_ENCODING, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::respond;
use super::{denial, Body};
use crate::audit::{Dest, Protocol};
use crate::gate::Pinned;
use crate::net::dial::{dial, dial_unix, DialError};
use crate::net::route::Route;
use crate::net::Ctx;
use crate::policy::{Access, FileId, InvalidHost, Target, UrlScheme};
use crate::respond::Refusal;

mod chain;
mod pool;

pub use pool::Pool;

/// The header that asks for a Unix socket instead of a TCP destination. Never forwarded.
const UNIX_SOCKET: &str = "x-unix-socket";

/// Where a kept upstream connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    /// An origin at `addr`, connected to for `dest` (canonical `host:port`).
    Tcp {
        addr: SocketAddr,
        dest: Box<str>,
    },
    Unix(FileId),
    /// The HTTP upstream proxy, which takes requests for any destination.
    Proxy,
    /// A tunnel to this destination through a SOCKS5 upstream.
    Socks(Target<'static>),
}

/// An idle upstream connection kept for the next request on the same client connection.
pub struct Upstream {
    key: Key,
    sender: SendRequest<Body>,
    /// An exchange on it carried `Authorization` or `WWW-Authenticate`: the origin may have
    /// bound an authentication to the connection (NTLM, Negotiate), so it never serves
    /// another client connection. On loopback every local user shares one client IP.
    authenticated: bool,
}

/// Where a request's upstream connection may come from: the one its client connection kept,
/// or for a new client connection, the listener's [`Pool`].
#[derive(Clone, Copy)]
pub struct Kept<'a> {
    pub conn: &'a Mutex<Option<Upstream>>,
    pub pool: &'a Pool,
}

pub async fn handle(
    req: Request<Incoming>,
    client: SocketAddr,
    ctx: &Ctx,
    kept: Kept<'_>,
) -> Response<Body> {
    let cache = kept.conn;
    if let Some(path) = req.headers().get(UNIX_SOCKET) {
        let Ok(path) = path.to_str().map(PathBuf::from) else {
            return respond::response(&Refusal::BadRequest("x-unix-socket must be a path"));
        };
        // Boxed, like the upstream-proxy branch: see `crate::http::handle`.
        return Box::pin(unix(req, &path, client, ctx, cache)).await;
    }
    // A copy (two reference counts) for the target to borrow from once `req` goes upstream.
    let uri = req.uri().clone();
    let Some(scheme) = uri.scheme_str() else {
        return respond::response(&Refusal::BadRequest(
            "this is a proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port",
        ));
    };
    let Some(authority) = uri.authority().map(|a| a.as_str()) else {
        return respond::response(&Refusal::BadRequest("request URI has no host"));
    };
    // What the Host header carries and what the log names: never the userinfo.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let target = match Target::parse_url_authority(scheme, authority) {
        Ok((UrlScheme::Http, target)) => target,
        Ok((UrlScheme::Tunnel, _)) | Err(InvalidHost::BadScheme) => {
            return respond::response(&Refusal::BadRequest(
                "only http:// URLs are forwarded; use CONNECT for https",
            ))
        }
        Err(_) => {
            let denied = ctx.refuse_invalid(Protocol::Http, client, host_port);
            return denial(Dest::Raw(host_port), &denied);
        }
    };
    let access = Access::Http {
        method: req.method().as_str(),
        path: req.uri().path(),
        body: has_body(&req),
    };
    let route = match ctx.route(Protocol::Http, client, &target, access).await {
        Ok((_, route)) => route,
        Err(denied) => return denial(Dest::Target(&target), &denied),
    };
    let host_header = HeaderValue::from_str(host_port).ok();
    match &route {
        Route::Direct(pinned) => {
            let origin = Origin {
                pinned,
                target: &target,
                client,
            };
            direct(prepare(req, host_header), origin, ctx, kept).await
        }
        Route::Upstream { proxy, dest: via } => {
            let dest = target.to_string();
            let chained = chain::Chained {
                proxy,
                via,
                target: &target,
                dest: &dest,
            };
            Box::pin(chained.send(prepare(req, host_header), ctx, cache)).await
        }
    }
}

/// A direct request's destination: where the gate pinned it, and for whom.
struct Origin<'a> {
    pinned: &'a Pinned,
    /// Written out as canonical `host:port` only where it is needed: for a new connection
    /// (its pool key) and in an error. A request on a kept connection needs it in neither.
    target: &'a Target<'a>,
    client: SocketAddr,
}

/// Sends the request to the address the gate pinned: on the kept connection when it goes
/// there, else (when the request can be sent again) on a pooled one to the same destination.
async fn direct(
    req: Request<Body>,
    origin: Origin<'_>,
    ctx: &Ctx,
    kept: Kept<'_>,
) -> Response<Body> {
    let Origin {
        pinned,
        target,
        client,
    } = origin;
    let mut reused = take_reusable(
        kept.conn,
        |key| matches!(key, Key::Tcp { addr, .. } if pinned.contains(*addr)),
    )
    .await;
    // Canonical `host:port`, written out at most once: the key of a pooled or new connection.
    let written = OnceLock::new();
    let dest = || -> &str { written.get_or_init(|| target.to_string()) };
    if reused.is_none() && replay_safe(&req) {
        reused = kept
            .pool
            .take(client.ip(), dest(), |addr| pinned.contains(addr));
    }
    let connect = || async {
        let (connected, addr) = dial(pinned, ctx.limits.connect_timeout)
            .await
            .map_err(|error| dial_failure(target, &error))?;
        let key = Key::Tcp {
            addr,
            dest: dest().into(),
        };
        handshake(connected, key)
            .await
            .map_err(|error| upstream_failure(target, &error))
    };
    exchange(req, reused, connect, target, kept.conn).await
}

/// The answer when an allowed destination could not be connected to.
fn dial_failure(dest: &(dyn fmt::Display + Sync), error: &DialError) -> Response<Body> {
    let dest = &dest.to_string();
    respond::response(&Refusal::Dial { dest, error })
}

async fn unix(
    req: Request<Incoming>,
    path: &Path,
    client: SocketAddr,
    ctx: &Ctx,
    cache: &Mutex<Option<Upstream>>,
) -> Response<Body> {
    let dest = format!("unix:{}", path.display());
    let access = Access::Http {
        method: req.method().as_str(),
        path: req.uri().path(),
        body: has_body(&req),
    };
    let pinned = match ctx.authorize_unix(client, path, access) {
        Ok(pinned) => pinned,
        Err(denied) => return denial(Dest::Unix(path), &denied),
    };
    let key = Key::Unix(pinned.socket().id());
    let kept = take_reusable(cache, |k| *k == key).await;
    let connect = || async {
        let stream = dial_unix(&pinned, ctx.limits.connect_timeout)
            .await
            .map_err(|error| dial_failure(&dest, &error))?;
        handshake(stream, key.clone())
            .await
            .map_err(|error| upstream_failure(&dest, &error))
    };
    // The URL's host is only what the Host header carries: keep the client's.
    exchange(prepare(req, None), kept, connect, &dest, cache).await
}

/// Whether the request carries a body, as hyper framed it: `Content-Length: 0` does not,
/// any other length or a chunked body does.
fn has_body(req: &Request<Incoming>) -> bool {
    !req.body().is_end_stream()
}

/// Takes the kept upstream connection if it goes where `wanted` says and can take a request.
async fn take_reusable(
    cache: &Mutex<Option<Upstream>>,
    wanted: impl Fn(&Key) -> bool,
) -> Option<Upstream> {
    let mut kept = cache.lock().ok()?.take()?;
    if !wanted(&kept.key) || kept.sender.is_closed() {
        return None;
    }
    // The previous response has been sent to the client, so this is normally ready at once
    // and taken without a timer; a connection whose last body was abandoned is dropped
    // instead of waited for.
    if kept.sender.is_ready() {
        return Some(kept);
    }
    match tokio::time::timeout(Duration::from_millis(200), kept.sender.ready()).await {
        Ok(Ok(())) => Some(kept),
        _ => None,
    }
}

async fn handshake<S>(stream: S, key: Key) -> Result<Upstream, hyper::Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "upstream connection ended with an error");
        }
    });
    Ok(Upstream {
        key,
        sender,
        authenticated: false,
    })
}

/// The client's request as it goes upstream: hop-by-hop, `Proxy-*` and `x-unix-socket`
/// headers removed, Host set to the URI's authority, origin-form, HTTP/1.1.
pub(super) fn prepare<B>(req: Request<B>, host: Option<HeaderValue>) -> Request<Body>
where
    B: hyper::body::Body<Data = bytes::Bytes, Error = hyper::Error> + Send + Sync + 'static,
{
    let (mut parts, body) = req.into_parts();
    // hyper has undone the client's chunking; keep the header so the body is chunked again.
    // Without it hyper sends the body of a GET or HEAD as empty.
    let codings: Vec<HeaderValue> = parts
        .headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .cloned()
        .collect();
    strip_hop_by_hop(&mut parts.headers);
    for coding in codings {
        parts.headers.append(TRANSFER_ENCODING, coding);
    }
    parts.headers.remove(UNIX_SOCKET);
    if let Some(host) = host {
        parts.headers.insert(HOST, host);
    }
    parts.uri = origin_form(&parts.uri);
    parts.version = hyper::Version::HTTP_11;
    Request::from_parts(parts, body.boxed())
}

/// Sends `req` on the kept connection, or on a new one from `connect`. A kept connection the
/// origin closed under a replayable request gets the request again on a new connection.
async fn exchange<C, F>(
    req: Request<Body>,
    kept: Option<Upstream>,
    connect: C,
    dest: &(dyn fmt::Display + Sync),
    cache: &Mutex<Option<Upstream>>,
) -> Response<Body>
where
    C: Fn() -> F,
    F: Future<Output = Result<Upstream, Response<Body>>>,
{
    let (upstream, replay) = match kept {
        Some(upstream) => {
            let replay = replayable(&req);
            (upstream, replay)
        }
        None => match connect().await {
            Ok(upstream) => (upstream, None),
            Err(response) => return response,
        },
    };
    let error = match send(req, upstream, dest, cache).await {
        Ok(response) => return response,
        Err(error) => error,
    };
    let Some(replay) = replay.filter(|_| closed_under_request(&error)) else {
        return upstream_failure(dest, &error);
    };
    tracing::debug!(%dest, %error, "kept upstream connection was closed; sending again on a new one");
    let upstream = match connect().await {
        Ok(upstream) => upstream,
        Err(response) => return response,
    };
    match send(replay, upstream, dest, cache).await {
        Ok(response) => response,
        Err(error) => upstream_failure(dest, &error),
    }
}

/// A copy of a bodiless GET, HEAD or OPTIONS to send again; `None` for anything else.
pub(super) fn replayable(req: &Request<Body>) -> Option<Request<Body>> {
    if !replay_safe(req) {
        return None;
    }
    let mut copy = Request::new(Empty::new().map_err(|never| match never {}).boxed());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Whether `req` is a bodiless GET, HEAD or OPTIONS: one that may be sent again.
fn replay_safe(req: &Request<Body>) -> bool {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let headers = req.headers();
    safe && !headers.contains_key(TRANSFER_ENCODING)
        && headers
            .get(CONTENT_LENGTH)
            .is_none_or(|length| length.as_bytes() == b"0")
}

/// Whether the origin closed the connection before answering: the sign of a kept connection
/// that timed out on its side while the request was on its way.
pub(super) fn closed_under_request(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
                    // TLS to an origin that closed without close_notify.
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = cause.source();
    }
    false
}

/// Sends one request; on success the connection is kept for the client's next request.
/// A `101 Switching Protocols` is never relayed: the request went without `Upgrade` (it is
/// hop-by-hop), so the client asked for no new protocol and its connection would be left
/// speaking one. The upstream connection, handed over to the new protocol, is dropped.
async fn send(
    req: Request<Body>,
    mut upstream: Upstream,
    dest: &(dyn fmt::Display + Sync),
    cache: &Mutex<Option<Upstream>>,
) -> Result<Response<Body>, hyper::Error> {
    upstream.authenticated |= req.headers().contains_key(AUTHORIZATION);
    let response = upstream.sender.send_request(req).await?;
    upstream.authenticated |= response.headers().contains_key(WWW_AUTHENTICATE);
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let dest = &dest.to_string();
        return Ok(respond::response(&Refusal::UnrequestedUpgrade { dest }));
    }
    if let Ok(mut slot) = cache.lock() {
        *slot = Some(upstream);
    }
    let (mut parts, body) = response.into_parts();
    response_headers(&mut parts.headers);
    Ok(Response::from_parts(parts, body.boxed()))
}

/// A response's headers as they go back to the client: without hop-by-hop headers, and
/// without a Content-Length sent along with chunks.
pub(super) fn response_headers(headers: &mut HeaderMap) {
    // The chunks frame a chunked response, not a Content-Length sent along with them
    // (RFC 9112 section 6.3); passing it on would cut the body short.
    if headers.contains_key(TRANSFER_ENCODING) {
        headers.remove(CONTENT_LENGTH);
    }
    strip_hop_by_hop(headers);
}

fn upstream_failure(dest: &(dyn fmt::Display + Sync), error: &hyper::Error) -> Response<Body> {
    let dest = &dest.to_string();
    respond::response(&Refusal::Upstream { dest, error })
}

/// `http://host/path?q` → `/path?q`.
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()))
}

/// Removes hop-by-hop headers (RFC 9110 section 7.6.1), those named in `Connection`, and every
/// `Proxy-*` header: they describe the client-proxy hop, and credentials for this proxy must
/// never reach an origin. One pass over the names present, instead of a lookup (which parses
/// and hashes the name) for each of the six: those were 3.4 % of the forward proxy's CPU.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name.as_str()))
        .cloned()
        .collect();
    for name in hop {
        headers.remove(name);
    }
}

/// A header that never crosses the proxy whatever `Connection` says. Names are lowercase.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade"
    ) || name.starts_with("proxy-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_proxy_headers_are_removed() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            // A second Connection line, its name in another case, with no space.
            ("connection", "close,X-Other"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-authorization", "Basic c2Vjb25kOnZhbHVl"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "expires"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
            ("authorization", "Bearer kept"),
            ("proxyish", "kept: not a proxy- header"),
        ] {
            headers.append(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "authorization", "proxyish"]);
    }

    #[test]
    fn absolute_uris_become_origin_form() {
        let cases = [
            ("http://example.com/a/b?c=d", "/a/b?c=d"),
            ("http://example.com", "/"),
            ("http://u:p@example.com:8080/x", "/x"),
        ];
        for (uri, want) in cases {
            assert_eq!(
                origin_form(&uri.parse().unwrap()).to_string(),
                want,
                "{uri}"
            );
        }
    }
}

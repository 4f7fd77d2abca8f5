//! The forward proxy for absolute-form `http://` requests and `x-unix-socket` requests.
//!
//! The destination is the request URI's authority (userinfo dropped, as a browser would), never
//! the Host header: the Host header is rewritten to match, so an origin behind a shared IP
//! cannot be addressed by a name the policy never saw. Bodies stream both ways. The upstream
//! connection is kept per client connection and reused only while the next request is pinned
//! to the same address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING,
};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::respond::{self, Failure};
use super::{refuse, Body};
use crate::audit::{Dest, Protocol};
use crate::net::{dial::dial, dial::DialError, Ctx, Denied};
use crate::policy::{Access, Target};

/// The header that asks for a Unix socket instead of a TCP destination. Never forwarded.
const UNIX_SOCKET: &str = "x-unix-socket";

/// Where a kept upstream connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// An idle upstream connection kept for the next request on the same client connection.
pub struct Upstream {
    key: Key,
    sender: SendRequest<Incoming>,
}

pub async fn handle(
    req: Request<Incoming>,
    client: SocketAddr,
    ctx: &Ctx,
    cache: &Mutex<Option<Upstream>>,
) -> Response<Body> {
    if let Some(path) = req.headers().get(UNIX_SOCKET) {
        let Ok(path) = path.to_str().map(PathBuf::from) else {
            return respond::response(&Failure::BadRequest("x-unix-socket must be a path"));
        };
        return unix(req, &path, client, ctx, cache).await;
    }
    let uri = req.uri();
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => {
            return respond::response(&Failure::BadRequest(
                "only http:// URLs are forwarded; use CONNECT for https",
            ))
        }
        None => {
            return respond::response(&Failure::BadRequest(
                "this is a proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port",
            ))
        }
    }
    let Some(authority) = uri.authority().map(|a| a.as_str()) else {
        return respond::response(&Failure::BadRequest("request URI has no host"));
    };
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let Ok(target) = Target::parse_authority(host_port, Some(80)) else {
        let denied = Denied::invalid_host();
        return refuse(ctx, Protocol::Http, client, Dest::Raw(host_port), &denied);
    };
    let dest = target.to_string();
    let host_header = HeaderValue::from_str(host_port).ok();
    let access = Access::Http {
        method: req.method().as_str(),
    };
    let pinned = match ctx.gate.authorize(&target, access).await {
        Ok(pinned) => pinned,
        Err(denied) => return refuse(ctx, Protocol::Http, client, Dest::Target(&target), &denied),
    };
    ctx.events.decision(
        Protocol::Http,
        client,
        Dest::Target(&target),
        &pinned.decision,
    );
    let kept = take_reusable(
        cache,
        |key| matches!(key, Key::Tcp(a) if pinned.addrs.contains(a)),
    )
    .await;
    let upstream = match kept {
        Some(upstream) => upstream,
        None => {
            let connected = match dial(&pinned.addrs, ctx.limits.connect_timeout).await {
                Ok(stream) => stream,
                Err(error) => {
                    return respond::response(&Failure::Dial {
                        dest: &dest,
                        error: &error,
                    })
                }
            };
            let key = match connected.peer_addr() {
                Ok(addr) => Key::Tcp(addr),
                Err(_) => Key::Tcp(pinned.addrs[0]),
            };
            match handshake(connected, key).await {
                Ok(upstream) => upstream,
                Err(error) => {
                    return respond::response(&Failure::Upstream {
                        dest: &dest,
                        error: &error,
                    })
                }
            }
        }
    };
    send(req, host_header, upstream, &dest, cache).await
}

async fn unix(
    req: Request<Incoming>,
    path: &Path,
    client: SocketAddr,
    ctx: &Ctx,
    cache: &Mutex<Option<Upstream>>,
) -> Response<Body> {
    let dest = format!("unix:{}", path.display());
    let policy = ctx.gate.current();
    let (decision, resolved) = policy.decide_unix(
        path,
        Access::Http {
            method: req.method().as_str(),
        },
    );
    if !decision.is_allowed() {
        let denied = Denied {
            decision,
            dns: None,
        };
        return refuse(ctx, Protocol::Unix, client, Dest::Unix(path), &denied);
    }
    ctx.events
        .decision(Protocol::Unix, client, Dest::Unix(path), &decision);
    let key = Key::Unix(resolved.clone());
    let upstream = match take_reusable(cache, |k| *k == key).await {
        Some(upstream) => upstream,
        None => {
            let connect = tokio::net::UnixStream::connect(&resolved);
            let stream = match tokio::time::timeout(ctx.limits.connect_timeout, connect).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    let error = match e.kind() {
                        std::io::ErrorKind::ConnectionRefused => DialError::Refused(unspecified()),
                        _ => DialError::Unreachable {
                            addr: unspecified(),
                            source: e,
                        },
                    };
                    return respond::response(&Failure::Dial {
                        dest: &dest,
                        error: &error,
                    });
                }
                Err(_) => {
                    let error = DialError::Timeout(ctx.limits.connect_timeout);
                    return respond::response(&Failure::Dial {
                        dest: &dest,
                        error: &error,
                    });
                }
            };
            match handshake(stream, key).await {
                Ok(upstream) => upstream,
                Err(error) => {
                    return respond::response(&Failure::Upstream {
                        dest: &dest,
                        error: &error,
                    })
                }
            }
        }
    };
    // The URL's host is only what the Host header carries: keep the client's.
    send(req, None, upstream, &dest, cache).await
}

/// Unix sockets have no address; errors about them name the path in the body instead.
fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// Takes the kept upstream connection if it goes where `wanted` says and can take a request.
async fn take_reusable(
    cache: &Mutex<Option<Upstream>>,
    wanted: impl Fn(&Key) -> bool,
) -> Option<Upstream> {
    let kept = cache.lock().ok()?.take()?;
    if !wanted(&kept.key) || kept.sender.is_closed() {
        return None;
    }
    let mut kept = kept;
    // The previous response has been sent to the client, so this is normally immediate; a
    // connection whose last body was abandoned is dropped instead of waited for.
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
    Ok(Upstream { key, sender })
}

async fn send(
    req: Request<Incoming>,
    host: Option<HeaderValue>,
    mut upstream: Upstream,
    dest: &str,
    cache: &Mutex<Option<Upstream>>,
) -> Response<Body> {
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
    let result = upstream
        .sender
        .send_request(Request::from_parts(parts, body))
        .await;
    match result {
        Ok(response) => {
            if let Ok(mut slot) = cache.lock() {
                *slot = Some(upstream);
            }
            let (mut parts, body) = response.into_parts();
            // The chunks frame a chunked response, not a Content-Length sent along with them
            // (RFC 9112 section 6.3); passing it on would cut the body short.
            if parts.headers.contains_key(TRANSFER_ENCODING) {
                parts.headers.remove(CONTENT_LENGTH);
            }
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(error) => respond::response(&Failure::Upstream {
            dest,
            error: &error,
        }),
    }
}

/// `http://host/path?q` → `/path?q`.
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()))
}

/// Removes hop-by-hop headers (RFC 9110 section 7.6.1), those named in `Connection`, and every
/// `Proxy-*` header: they describe the client-proxy hop, and credentials for this proxy must
/// never reach an origin.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
    for name in [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_proxy_headers_are_removed() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
            ("authorization", "Bearer kept"),
        ] {
            headers.append(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "authorization"]);
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

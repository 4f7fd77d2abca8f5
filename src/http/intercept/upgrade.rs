//! WebSocket inside an intercepted tunnel: an HTTP/1.1 `Upgrade: websocket` request the hooks
//! allowed goes to the origin on a connection of its own (ALPN `http/1.1`); on `101` both
//! sides are upgraded and the bytes copied both ways until either closes or the idle timeout
//! passes. Any other upgrade is refused before this ([`super::request`]).

use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, HOST, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use super::origin::OriginError;
use super::request::Exchange;
use crate::http::forward::{response_headers, strip_hop_by_hop};
use crate::http::Body;
use crate::net::copy::relay_streams;

/// Whether `req` asks for a WebSocket over HTTP/1.1.
pub(super) fn is_websocket(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Forwards the upgrade request; on `101` the relay runs on its own task.
pub(super) async fn websocket(
    exchange: &Arc<Exchange>,
    req: &mut Request<Incoming>,
) -> Result<Response<Body>, Response<Body>> {
    let failed = |error: OriginError| error.response(&exchange.dest);
    let client = hyper::upgrade::on(&mut *req);
    let (mut sender, connection) = exchange.origin.for_upgrade().await.map_err(failed)?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "origin WebSocket connection ended with an error");
        }
    });
    let mut headers = req.headers().clone();
    upgrade_headers(&mut headers);
    if let Some(host) = exchange.origin.host() {
        headers.insert(HOST, host);
    }
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let mut out = Request::new(Empty::new().map_err(|never| match never {}).boxed());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
    *out.headers_mut() = headers;
    let mut response = sender
        .send_request(out)
        .await
        .map_err(|e| failed(OriginError::Http(e)))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = response.into_parts();
        response_headers(&mut parts.headers);
        return Ok(Response::from_parts(parts, body.boxed()));
    }
    let origin = hyper::upgrade::on(&mut response);
    relay(client, origin, Arc::clone(exchange));
    let (mut parts, _) = response.into_parts();
    upgrade_headers(&mut parts.headers);
    Ok(Response::from_parts(parts, crate::http::respond::full("")))
}

/// Hop-by-hop headers removed, then the upgrade's own put back.
fn upgrade_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
}

fn relay(client: OnUpgrade, origin: OnUpgrade, exchange: Arc<Exchange>) {
    tokio::spawn(async move {
        let (client, origin) = match tokio::try_join!(client, origin) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(%error, "WebSocket upgrade failed");
                return;
            }
        };
        let idle = exchange.idle_timeout;
        let (stats, result) = relay_streams(
            TokioIo::new(client),
            TokioIo::new(origin),
            idle,
            std::future::pending(),
        )
        .await;
        tracing::debug!(
            dest = exchange.dest,
            up = stats.up,
            down = stats.down,
            ok = result.is_ok(),
            "WebSocket closed"
        );
    });
}

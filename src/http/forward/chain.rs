//! Plain-HTTP requests through the upstream proxy. An HTTP upstream gets the request in
//! absolute form (`GET http://host:port/path`, the destination as the client wrote it,
//! canonical) with `Proxy-Authorization` for the upstream only: the client's own `Proxy-*`
//! headers were stripped before. A SOCKS5 upstream opens a tunnel to the destination, and the
//! request goes through it as it would go direct. An upstream's 407 is the proxy's problem,
//! not the client's: it becomes 502 `upstream-auth`.

use std::sync::{Arc, Mutex};

use hyper::header::PROXY_AUTHORIZATION;
use hyper::{Request, Response, StatusCode, Uri};

use super::{exchange, handshake, take_reusable, upstream_failure, Body, Key, Upstream};
use crate::gate::Checked;
use crate::http::respond;
use crate::net::upstream::{Answer, Proxy, UpstreamError};
use crate::net::Ctx;
use crate::policy::Target;
use crate::respond::Refusal;

/// A request's way through the upstream.
pub(super) struct Chained<'a> {
    pub(super) proxy: &'a Arc<Proxy>,
    pub(super) via: &'a Checked,
    pub(super) target: &'a Target<'a>,
    pub(super) dest: &'a str,
}

impl Chained<'_> {
    pub(super) async fn send(
        &self,
        req: Request<Body>,
        ctx: &Ctx,
        cache: &Mutex<Option<Upstream>>,
    ) -> Response<Body> {
        let timeout = ctx.limits.connect_timeout;
        let failure = |error: &UpstreamError| {
            respond::response(&Refusal::UpstreamProxy {
                dest: self.dest,
                error,
            })
        };
        if self.proxy.kind().is_socks() {
            let key = Key::Socks(self.target.clone().into_owned());
            let kept = take_reusable(cache, |k| *k == key).await;
            let connect = || async {
                let connected = self
                    .proxy
                    .tunnel(self.via, self.target, timeout)
                    .await
                    .map_err(|e| failure(&e))?;
                handshake(connected.stream, key.clone())
                    .await
                    .map_err(|e| upstream_failure(&self.dest, &e))
            };
            return exchange(req, kept, connect, &self.dest, cache).await;
        }
        let req = self.absolute(req);
        let kept = take_reusable(cache, |k| *k == Key::Proxy).await;
        let connect = || async {
            let stream = self.proxy.open(timeout).await.map_err(|e| failure(&e))?;
            handshake(stream, Key::Proxy)
                .await
                .map_err(|e| upstream_failure(&self.dest, &e))
        };
        let response = exchange(req, kept, connect, &self.dest, cache).await;
        if response.status() != StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            return response;
        }
        if let Ok(mut slot) = cache.lock() {
            *slot = None;
        }
        self.proxy.count("auth");
        failure(&UpstreamError::Auth {
            proxy: Arc::clone(self.proxy.label()),
            answer: Answer::Http(407),
        })
    }

    /// The origin-form request in absolute form for the upstream, with its credentials.
    fn absolute(&self, req: Request<Body>) -> Request<Body> {
        let (mut parts, body) = req.into_parts();
        let absolute = format!("http://{}{}", self.target, parts.uri);
        if let Ok(uri) = absolute.parse::<Uri>() {
            parts.uri = uri;
        }
        if let Some(value) = self.proxy.authorization() {
            parts.headers.insert(PROXY_AUTHORIZATION, value.clone());
        }
        Request::from_parts(parts, body)
    }
}

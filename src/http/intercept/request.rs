//! One request inside the tunnel: refused inside TLS, or forwarded to the pinned origin.
//!
//! A request must name the tunnel's host, in its Host header and in an absolute-form or
//! HTTP/2 authority alike: a request for another name is answered `421 Misdirected Request`
//! (RFC 9110 section 15.5.20) and never sent, so an origin behind a shared address cannot be
//! asked for a host the policy never decided (domain fronting). A Host without a port is the
//! tunnel's port. Then the hooks decide; only then is the origin connection opened.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderValue, EXPECT, HOST, UPGRADE};
use hyper::{Method, Request, Response, StatusCode, Version};

use super::body::{Counted, Report, Tracked};
use super::origin::Origin;
use super::{upgrade, Hooks, Session};
use crate::audit::{Outcome, RequestRecord};
use crate::http::forward::response_headers;
use crate::http::respond::{self, Codes};
use crate::http::Body;
use crate::net::relay::Clock;
use crate::policy::Target;
use crate::respond::Refusal;

/// A refused request's body is read up to this many bytes, for this long at most.
const DRAIN_BYTES: usize = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// One client connection's state, shared by its requests.
pub(super) struct Exchange {
    hooks: Arc<dyn Hooks>,
    pub(super) origin: Arc<Origin>,
    target: Target<'static>,
    /// `host:port`, as refusals name the tunnel.
    pub(super) dest: String,
    pub(super) requests: AtomicU64,
    pub(super) refused: AtomicU64,
    /// Last request started or response finished.
    clock: Clock,
    /// Requests whose responses are not done.
    open: AtomicUsize,
    pub(super) idle_timeout: Duration,
}

impl Exchange {
    /// `None` when the tunnel's name cannot be a TLS server name.
    pub(super) fn new(session: Session, hooks: Arc<dyn Hooks>) -> Option<Self> {
        let dest = session.target.to_string();
        let host = HeaderValue::from_str(&dest).ok();
        Some(Exchange {
            hooks,
            origin: Arc::new(Origin::new(&session, host)?),
            idle_timeout: session.limits.idle_timeout,
            target: session.target,
            dest,
            requests: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            clock: Clock::new(),
            open: AtomicUsize::new(0),
        })
    }

    /// Completes when no request came within `first` (hyper's header timeout starts only at
    /// a request's first byte), or later once no response is open and nothing happened for
    /// `idle`.
    pub(super) async fn idle(&self, first: Duration, idle: Duration) {
        tokio::time::sleep(first).await;
        if self.requests.load(Ordering::Relaxed) == 0 {
            return;
        }
        loop {
            self.clock.idle(idle).await;
            if self.open.load(Ordering::Relaxed) == 0 {
                return;
            }
            self.clock.touch();
        }
    }

    pub(super) async fn handle(self: &Arc<Self>, mut req: Request<Incoming>) -> Response<Body> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        self.clock.touch();
        let json = respond::wants_json(req.headers());
        let method = req.method().clone();
        let path: Box<str> = req.uri().path().into();
        let (mut response, outcome) = match self.refusal(&req) {
            Some(refused) => {
                // A client that waits for `100 Continue` is answered without reading: reading
                // would ask it for the body.
                if !req.headers().contains_key(EXPECT) {
                    drain(req.into_body()).await;
                }
                (refused, Outcome::Refused)
            }
            None if upgrade::is_websocket(&req) => match upgrade::websocket(self, &mut req).await {
                Ok(response) => (response, Outcome::Forwarded),
                Err(failed) => (failed, Outcome::Failed),
            },
            None => match self.forward(req, &method, &path).await {
                Ok(response) => return response,
                Err(failed) => (failed, Outcome::Failed),
            },
        };
        if json {
            respond::prefer_json(&mut response);
        }
        let codes = response.extensions().get::<Codes>().copied();
        let reason = codes.map(|c| c.reason.unwrap_or(c.error));
        let status = response.status().as_u16();
        self.done(&method, &path, status, outcome, reason, [0, 0]);
        response
    }

    /// Reports a request whose response is done, and counts it.
    pub(super) fn done(
        &self,
        method: &Method,
        path: &str,
        status: u16,
        outcome: Outcome,
        reason: Option<&'static str>,
        [bytes_up, bytes_down]: [u64; 2],
    ) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.clock.touch();
        if outcome == Outcome::Refused {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        metrics::counter!(crate::metrics::INTERCEPTED_REQUESTS, "result" => outcome.as_str())
            .increment(1);
        self.hooks.record(&RequestRecord {
            method: method.as_str(),
            path,
            status,
            outcome,
            reason,
            bytes_up,
            bytes_down,
        });
    }

    /// The answer to a request that must not reach the origin, if it is one.
    fn refusal(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        if let Some(asked) = self.misdirected(req) {
            return Some(respond::response(&Refusal::Misdirected {
                dest: &self.dest,
                asked,
            }));
        }
        let body = !req.body().is_end_stream();
        if let Err(denied) = self.hooks.check(req.method(), req.uri().path(), body) {
            return Some(respond::response(&Refusal::Denied {
                dest: &self.dest,
                denied: &denied,
            }));
        }
        let unsupported = if req.method() == Method::CONNECT {
            "CONNECT inside an intercepted tunnel is not supported (nor HTTP/2 extended CONNECT)"
        } else if req.headers().contains_key(UPGRADE) && !upgrade::is_websocket(req) {
            "only WebSocket upgrades over HTTP/1.1 are passed through an intercepted tunnel"
        } else {
            return None;
        };
        Some(respond::response(&Refusal::BadRequest(unsupported)))
    }

    /// The host a request names that is not the tunnel's, if it names one.
    fn misdirected<'r>(&self, req: &'r Request<Incoming>) -> Option<&'r str> {
        let authority = req.uri().authority().map(|a| a.as_str());
        let host = req
            .headers()
            .get_all(HOST)
            .iter()
            .map(|value| value.to_str().unwrap_or("(not text)"));
        authority.into_iter().chain(host).find(|asked| {
            // Userinfo in an absolute-form URI is not part of the host.
            let hostport = asked.rsplit_once('@').map_or(*asked, |(_, hp)| hp);
            Target::parse_authority(hostport, Some(self.target.port))
                .map_or(true, |named| named != self.target)
        })
    }

    /// Sends an allowed request to the origin; the response streams back with its record.
    async fn forward(
        self: &Arc<Self>,
        req: Request<Incoming>,
        method: &Method,
        path: &str,
    ) -> Result<Response<Body>, Response<Body>> {
        let up = Arc::new(AtomicU64::new(0));
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, Counted::new(body, Arc::clone(&up)));
        let (response, kept) = self
            .origin
            .send(req)
            .await
            .map_err(|error| error.response(&self.dest))?;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Err(respond::response(&Refusal::UnrequestedUpgrade {
                dest: &self.dest,
            }));
        }
        let (mut parts, body) = response.into_parts();
        response_headers(&mut parts.headers);
        parts.version = Version::default();
        let report = Report {
            exchange: Arc::clone(self),
            method: method.clone(),
            path: path.into(),
            status: parts.status.as_u16(),
            up,
            down: 0,
        };
        let body = Tracked::new(body, kept, report);
        Ok(Response::from_parts(
            parts,
            http_body_util::BodyExt::boxed(body),
        ))
    }
}

/// A refused request's body read what a small one needs, so the client gets to finish
/// sending and reads the answer (an HTTP/2 stream reset under a body it is still sending is
/// an error to curl); a larger or slower one is cut.
async fn drain(body: Incoming) {
    if body.is_end_stream() {
        return;
    }
    let limited = http_body_util::Limited::new(body, DRAIN_BYTES);
    let _ = tokio::time::timeout(DRAIN_TIME, http_body_util::BodyExt::collect(limited)).await;
}

//! The origin side of a tunnel: TLS over the dial function (SNI and verification for the
//! tunnel's name), opened on the first allowed request. An origin that negotiates `h2` gets
//! one multiplexed connection; an HTTP/1.1 origin a small pool, one connection per request in
//! flight, idle ones reused.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::header::{HeaderValue, HOST, TE};
use hyper::http::uri::{Authority, Scheme};
use hyper::{Request, Response, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::body::Counted;
use super::{tls_failure, Dial, Io, Session};
use crate::http::forward::{closed_under_request, prepare, replayable, strip_hop_by_hop};
use crate::http::respond;
use crate::http::Body;
use crate::net::route::OpenError;
use crate::policy::Host;
use crate::respond::Refusal;

/// Idle HTTP/1.1 origin connections kept per tunnel.
const MAX_IDLE: usize = 8;

/// A TLS connection to the origin.
pub(super) type Tls = TlsStream<Box<dyn Io>>;

/// Why a request could not be sent to the origin.
#[derive(Debug)]
pub(super) enum OriginError {
    Open(OpenError),
    Tls(io::Error),
    Http(hyper::Error),
}

impl OriginError {
    /// The answer inside the tunnel: the CONNECT path's 502 for a dial, `upstream-tls` with
    /// the verifier's reason, or `upstream-failed`.
    pub(super) fn response(&self, dest: &str) -> Response<Body> {
        match self {
            OriginError::Open(error) => respond::response(&Refusal::open(dest, error)),
            OriginError::Tls(error) => respond::response(&Refusal::OriginTls { dest, error }),
            OriginError::Http(error) => respond::response(&Refusal::Upstream { dest, error }),
        }
    }
}

enum State {
    /// No connection yet: the first allowed request opens one.
    Unknown,
    H2(http2::SendRequest<Body>),
    H1,
}

pub(super) struct Origin {
    name: ServerName<'static>,
    connector: TlsConnector,
    upgrade: TlsConnector,
    dial: Dial,
    handshake_timeout: Duration,
    /// Host for HTTP/1.1, `:authority` for HTTP/2: the tunnel's `host:port`.
    host: Option<HeaderValue>,
    authority: Option<Authority>,
    /// Held while the first connection is opened, so concurrent first requests to an `h2`
    /// origin share it instead of each opening one.
    state: tokio::sync::Mutex<State>,
    idle: Mutex<Vec<http1::SendRequest<Body>>>,
}

/// An HTTP/1.1 origin connection busy with a response body; back to the pool when it ends.
pub(super) struct Kept {
    sender: http1::SendRequest<Body>,
    origin: Arc<Origin>,
}

impl Kept {
    pub(super) fn release(self) {
        if let Ok(mut idle) = self.origin.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(self.sender);
            }
        }
    }
}

impl Origin {
    /// `None` when the tunnel's name cannot be a TLS server name.
    pub(super) fn new(session: &Session, host: Option<HeaderValue>) -> Option<Self> {
        let name = match &session.target.host {
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
            Host::Name(name) => ServerName::try_from(name.to_string()).ok()?,
        };
        let authority = host
            .as_ref()
            .and_then(|h| Authority::try_from(h.as_bytes()).ok());
        Some(Origin {
            name,
            connector: TlsConnector::from(Arc::clone(&session.origin)),
            upgrade: TlsConnector::from(Arc::clone(&session.upgrade)),
            dial: Arc::clone(&session.dial),
            handshake_timeout: session.limits.connect_timeout,
            host,
            authority,
            state: tokio::sync::Mutex::new(State::Unknown),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `req` on a connection that can take it; an HTTP/1.1 connection comes back as
    /// [`Kept`] for the response body to return.
    pub(super) async fn send(
        self: &Arc<Self>,
        req: Request<Counted>,
    ) -> Result<(Response<Incoming>, Option<Kept>), OriginError> {
        match self.sender().await? {
            Sender::H2(mut sender) => {
                let response = sender
                    .send_request(self.for_h2(req))
                    .await
                    .map_err(OriginError::Http)?;
                Ok((response, None))
            }
            Sender::H1(sender) => self.send_h1(prepare(req, self.host.clone()), sender).await,
            Sender::Kept(sender) => {
                let req = prepare(req, self.host.clone());
                let replay = replayable(&req);
                match self.send_h1(req, sender).await {
                    Err(OriginError::Http(error)) if closed_under_request(&error) => {
                        // The origin closed the kept connection as the request left: a safe,
                        // bodiless request goes again on a new one, as the forward proxy does.
                        let Some(replay) = replay else {
                            return Err(OriginError::Http(error));
                        };
                        match self.open(None).await? {
                            Sender::H2(mut sender) => sender
                                .send_request(self.for_h2(replay))
                                .await
                                .map(|response| (response, None))
                                .map_err(OriginError::Http),
                            Sender::H1(sender) | Sender::Kept(sender) => {
                                self.send_h1(replay, sender).await
                            }
                        }
                    }
                    sent => sent,
                }
            }
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        req: Request<Body>,
        mut sender: http1::SendRequest<Body>,
    ) -> Result<(Response<Incoming>, Option<Kept>), OriginError> {
        let response = sender.send_request(req).await.map_err(OriginError::Http)?;
        let kept = Kept {
            sender,
            origin: Arc::clone(self),
        };
        Ok((response, Some(kept)))
    }

    /// A new HTTP/1.1-only connection for an upgrade, which it will not come back from.
    pub(super) async fn for_upgrade(
        &self,
    ) -> Result<
        (
            http1::SendRequest<Body>,
            http1::Connection<TokioIo<Tls>, Body>,
        ),
        OriginError,
    > {
        let tls = self.connect(&self.upgrade).await?;
        http1::handshake(TokioIo::new(tls))
            .await
            .map_err(OriginError::Http)
    }

    pub(super) fn host(&self) -> Option<HeaderValue> {
        self.host.clone()
    }

    async fn sender(&self) -> Result<Sender, OriginError> {
        let mut state = self.state.lock().await;
        match &*state {
            State::H2(sender) if !sender.is_closed() => return Ok(Sender::H2(sender.clone())),
            State::H1 => {
                drop(state);
                if let Some(sender) = self.idle_sender().await {
                    return Ok(Sender::Kept(sender));
                }
                return self.open(None).await;
            }
            State::H2(_) | State::Unknown => {}
        }
        self.open(Some(&mut state)).await
    }

    /// An idle HTTP/1.1 connection that can take a request now.
    async fn idle_sender(&self) -> Option<http1::SendRequest<Body>> {
        loop {
            let mut sender = self.idle.lock().ok()?.pop()?;
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// Opens a connection and learns from ALPN what the origin speaks; `state` is updated
    /// when the caller holds it.
    async fn open(&self, state: Option<&mut State>) -> Result<Sender, OriginError> {
        let tls = self.connect(&self.connector).await?;
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(tls))
                .await
                .map_err(OriginError::Http)?;
            spawn(connection);
            if let Some(state) = state {
                *state = State::H2(sender.clone());
            }
            return Ok(Sender::H2(sender));
        }
        let (sender, connection) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(OriginError::Http)?;
        spawn(connection);
        if let Some(state) = state {
            *state = State::H1;
        }
        Ok(Sender::H1(sender))
    }

    async fn connect(&self, connector: &TlsConnector) -> Result<Tls, OriginError> {
        let io = (self.dial)().await.map_err(OriginError::Open)?;
        let handshake = connector.connect(self.name.clone(), io);
        let result = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the origin did not finish its TLS handshake in time",
            )),
        };
        result.map_err(|error| {
            tls_failure("origin");
            OriginError::Tls(error)
        })
    }

    /// The request for an HTTP/2 origin: absolute URI (hyper sends it as `:scheme`,
    /// `:authority` and `:path`), no Host, no hop-by-hop headers.
    fn for_h2<B>(&self, req: Request<B>) -> Request<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes, Error = hyper::Error> + Send + Sync + 'static,
    {
        let (mut parts, body) = req.into_parts();
        // `TE: trailers` is the one TE an HTTP/2 request may carry (gRPC needs it).
        let trailers = parts.headers.get_all(TE).iter().any(|v| v == "trailers");
        strip_hop_by_hop(&mut parts.headers);
        if trailers {
            parts
                .headers
                .insert(TE, HeaderValue::from_static("trailers"));
        }
        parts.headers.remove(HOST);
        let mut uri = Uri::builder().scheme(Scheme::HTTPS);
        if let Some(authority) = &self.authority {
            uri = uri.authority(authority.clone());
        }
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        parts.uri = uri.path_and_query(path).build().unwrap_or_default();
        parts.version = Version::HTTP_2;
        Request::from_parts(parts, http_body_util::BodyExt::boxed(body))
    }
}

enum Sender {
    H2(http2::SendRequest<Body>),
    /// A new HTTP/1.1 connection.
    H1(http1::SendRequest<Body>),
    /// An idle one from the pool, which the origin may have closed meanwhile.
    Kept(http1::SendRequest<Body>),
}

fn spawn(connection: impl std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "origin connection ended with an error");
        }
    });
}

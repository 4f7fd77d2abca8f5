//! A CONNECT tunnel handed to the interception engine: the policy's request-level checks and
//! the audit as its [`Hooks`], the route the gate decided as its only way to the origin.
//!
//! Every request is checked against the current policy generation, so a reload applies to
//! the next request of a kept tunnel; a reload that denies the host closes the tunnel (it is
//! registered like an opaque one). A refused request is recorded as a decision too, so the
//! denial ring, the metrics and `run`'s live line see it as they see a refused CONNECT.
//! The tunnel's close line counts the bodies its requests carried, as their lines do.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use tokio::net::TcpStream;

use crate::net::rewind::Rewind;

use crate::audit::{Dest, RequestRecord, TunnelStats};
use crate::gate::Denied;
use crate::http::intercept::{self, Dial, Hooks, Io, Session};
use crate::mitm::{Alpn, Mitm};
use crate::net::dial::DialError;
use crate::net::route::{open, OpenError, Route};
use crate::net::{self, Ctx, Established};
use crate::policy::Target;

/// The policy and the audit for one intercepted tunnel.
struct Inspected {
    ctx: Ctx,
    target: Target<'static>,
    client: SocketAddr,
    /// The tunnel's decision id, for its request lines.
    id: u64,
    /// Body bytes of every request so far, up and down, for the close line (kept here, not
    /// in the engine, so a tunnel a reload revokes still reports them).
    up: AtomicU64,
    down: AtomicU64,
}

impl Hooks for Inspected {
    fn check(&self, method: &Method, path: &str, body: bool) -> Result<(), Denied> {
        let current = self.ctx.gate.current();
        match current.check_request(&self.target, method.as_str(), path, body) {
            None => Ok(()),
            Some(decision) => {
                self.ctx
                    .refuse_request(self.client, &self.target, &decision);
                Err(Denied {
                    decision,
                    dns: None,
                })
            }
        }
    }

    fn record(&self, request: &RequestRecord<'_>) {
        self.up.fetch_add(request.bytes_up, Ordering::Relaxed);
        self.down.fetch_add(request.bytes_down, Ordering::Relaxed);
        self.ctx
            .events
            .request(self.id, self.client, Dest::Target(&self.target), request);
    }
}

/// A denied CONNECT answered inside TLS: every request gets the tunnel's refusal, which was
/// recorded when the CONNECT was decided.
struct Refused(Denied);

impl Hooks for Refused {
    fn check(&self, _: &Method, _: &str, _: bool) -> Result<(), Denied> {
        Err(self.0.clone())
    }

    fn record(&self, _: &RequestRecord<'_>) {}
}

/// The engine's inputs for `target`; `None` (logged) when no certificate can be minted.
fn session(mitm: &Mitm, ctx: &Ctx, target: &Target<'static>, dial: Dial) -> Option<Session> {
    let server = mitm
        .server_config(&target.host)
        .inspect_err(|error| tracing::warn!(dest = %target, %error, "cannot intercept"))
        .ok()?;
    Some(Session {
        server,
        target: target.clone(),
        origin: mitm.client_config(Alpn::H2AndHttp1),
        upgrade: mitm.client_config(Alpn::Http1),
        dial,
        limits: ctx.limits.clone(),
    })
}

/// Serves an allowed tunnel that must be inspected, registered as an open tunnel until the
/// client is done or a reload denies the host. Origin connections are opened along `route`
/// when the first allowed request needs one.
pub(super) async fn allowed(
    ctx: &Ctx,
    mitm: &Mitm,
    client_io: Rewind<TcpStream>,
    allowed: Established<'_>,
    route: Arc<Route>,
) {
    let target = allowed.target.clone().into_owned();
    let timeout = ctx.limits.connect_timeout;
    let dial_target = target.clone();
    let dial: Dial = Arc::new(move || {
        let (route, target) = (Arc::clone(&route), dial_target.clone());
        Box::pin(async move {
            let opened = open(&route, &target, timeout).await?;
            if !opened.early.is_empty() {
                tracing::debug!(dest = %target, "bytes the upstream proxy sent before TLS were dropped");
            }
            Ok(Box::new(opened.stream) as Box<dyn Io>)
        })
    });
    let Some(session) = session(mitm, ctx, &target, dial) else {
        return;
    };
    let hooks = Arc::new(Inspected {
        ctx: ctx.clone(),
        target,
        client: allowed.client,
        id: allowed.id,
        up: AtomicU64::new(0),
        down: AtomicU64::new(0),
    });
    net::tunnel(ctx, allowed, |revoked| async move {
        let engine = Arc::clone(&hooks) as Arc<dyn Hooks>;
        let served = tokio::select! {
            served = intercept::serve(client_io, session, engine) => served.map(|_| ()),
            () = revoked.wait() => Ok(()),
        };
        let stats = TunnelStats {
            up: hooks.up.load(Ordering::Relaxed),
            down: hooks.down.load(Ordering::Relaxed),
            idle_timeout: false,
        };
        (stats, served.map_err(std::io::Error::other))
    })
    .await;
}

/// Answers a denied CONNECT inside TLS: the client, which trusts the CA, reads the 403 and its
/// reason as an HTTP answer instead of a failed CONNECT. Nothing is ever dialled.
pub(super) async fn denied(
    ctx: &Ctx,
    mitm: &Mitm,
    client_io: Rewind<TcpStream>,
    target: Target<'static>,
    denied: Denied,
) {
    // Never called: every request is refused before an origin is needed.
    let dial: Dial =
        Arc::new(|| Box::pin(async { Err(OpenError::Dial(DialError::Timeout(Duration::ZERO))) }));
    let Some(session) = session(mitm, ctx, &target, dial) else {
        return;
    };
    if let Err(error) = intercept::serve(client_io, session, Arc::new(Refused(denied))).await {
        tracing::debug!(dest = %target, %error, "a denied tunnel answered inside TLS ended");
    }
}

//! Where an allowed TCP connection goes: straight to the addresses the gate checked, or
//! through the upstream proxy.
//!
//! The policy decides first, always: [`Ctx::route`] picks the upstream for the protocol and
//! destination ([`Chain::for_target`]), then asks the gate. With `resolve = "local"` (the
//! default) the gate resolves and classifies the name exactly as for a direct connection, and
//! the upstream is asked for the name; with `resolve = "upstream"` names are not resolved here
//! ([`crate::gate::Named`]), IP literals still are. A [`Route::Direct`] holds only a
//! [`Pinned`], so a name that was never resolved cannot reach the direct dial.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::copy::relay_io;
use super::dial::{dial, DialError};
use super::relay::relay_tcp;
use super::upstream::{Proxy, Stream, UpstreamError};
use super::{tunnel, Ctx, Established};
use crate::audit::{Dest, Protocol};
use crate::gate::{Checked, Denied, Pinned};
use crate::policy::{Access, Decision, Policy, Target};

/// An allowed TCP destination and the way to it.
#[derive(Debug)]
pub enum Route {
    /// Connect to the checked addresses.
    Direct(Pinned),
    /// Ask the upstream proxy for the destination.
    Upstream { proxy: Arc<Proxy>, dest: Checked },
}

impl Route {
    pub fn decision(&self) -> &Decision {
        match self {
            Route::Direct(pinned) => pinned.decision(),
            Route::Upstream { dest, .. } => dest.decision(),
        }
    }

    /// The address a reload re-decides a tunnel on this route with: the first checked one,
    /// or `None` for a name the upstream proxy resolves.
    pub fn checked_ip(&self) -> Option<IpAddr> {
        match self {
            Route::Direct(pinned) => Some(pinned.first().ip()),
            Route::Upstream { dest, .. } => match dest {
                Checked::Pinned(pinned) => Some(pinned.first().ip()),
                Checked::Named(_) => None,
            },
        }
    }

    pub fn generation(&self) -> &Arc<Policy> {
        match self {
            Route::Direct(pinned) => pinned.generation(),
            Route::Upstream { dest, .. } => dest.generation(),
        }
    }

    pub fn upstream(&self) -> Option<&Arc<Proxy>> {
        match self {
            Route::Direct(_) => None,
            Route::Upstream { proxy, .. } => Some(proxy),
        }
    }
}

impl Ctx {
    /// Decides a TCP destination (CONNECT, SOCKS5 CONNECT, plain HTTP) and the way to it, and
    /// records the decision once, naming the upstream when there is one. Returns the
    /// decision's id for the close line.
    pub async fn route(
        &self,
        protocol: Protocol,
        client: SocketAddr,
        target: &Target<'_>,
        access: Access<'_>,
    ) -> Result<(u64, Route), Denied> {
        let proxy = self
            .upstream
            .as_ref()
            .and_then(|chain| chain.for_target(protocol, target));
        let gate = &self.gate;
        let result = match proxy {
            None => gate
                .authorize(protocol, client, target, access)
                .await
                .map(Route::Direct),
            Some(proxy) if proxy.resolves_names() => gate
                .authorize_by_name(protocol, client, target, access)
                .await
                .map(|dest| Route::Upstream {
                    proxy: Arc::clone(proxy),
                    dest,
                }),
            Some(proxy) => gate
                .authorize(protocol, client, target, access)
                .await
                .map(|pinned| Route::Upstream {
                    proxy: Arc::clone(proxy),
                    dest: Checked::Pinned(pinned),
                }),
        };
        let (decision, dns, via) = match &result {
            Ok(route) => (
                route.decision(),
                None,
                route.upstream().map(|p| &**p.label()),
            ),
            Err(denied) => (&denied.decision, denied.dns.as_ref(), None),
        };
        let id = self.record(protocol, client, Dest::Target(target), decision, dns, via);
        result.map(|route| (id, route))
    }
}

/// A connection made along a route.
pub struct Opened {
    pub stream: Stream,
    /// What the upstream sent after opening the tunnel; for the client before anything else.
    pub early: Vec<u8>,
    /// The address a reload re-decides the tunnel with: the one dialled, or for an upstream
    /// the checked one it was asked for (`None` when the upstream was given the name alone).
    pub dialled: Option<IpAddr>,
}

/// Why no connection was made along a route.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// Connects along `route`: the pinned dial, or a tunnel through the upstream.
pub async fn open(
    route: &Route,
    target: &Target<'_>,
    timeout: Duration,
) -> Result<Opened, OpenError> {
    match route {
        Route::Direct(pinned) => {
            let (tcp, dialled) = dial(pinned, timeout).await?;
            Ok(Opened {
                stream: Stream::Plain(tcp),
                early: Vec::new(),
                dialled: Some(dialled.ip()),
            })
        }
        Route::Upstream { proxy, dest } => {
            let connected = proxy.tunnel(dest, target, timeout).await?;
            let dialled = match dest {
                Checked::Pinned(pinned) => Some(pinned.first().ip()),
                Checked::Named(_) => None,
            };
            Ok(Opened {
                stream: connected.stream,
                early: connected.early,
                dialled,
            })
        }
    }
}

/// Relays an opened tunnel until it ends, as [`tunnel`] does: socket to socket when the
/// upstream side is plain TCP, through the TLS stream otherwise. The upstream's early bytes go to the client
/// first.
pub async fn relay(
    ctx: &Ctx,
    allowed: Established<'_>,
    client: &mut TcpStream,
    upstream: Stream,
    early: &[u8],
) -> io::Result<()> {
    if !early.is_empty() {
        client.write_all(early).await?;
    }
    let idle = ctx.limits.idle_timeout;
    match upstream {
        Stream::Plain(upstream) => {
            let client = &*client;
            tunnel(ctx, allowed, |revoked| {
                relay_tcp(client, &upstream, idle, revoked.wait())
            })
            .await;
        }
        Stream::Tls(upstream) => {
            tunnel(ctx, allowed, |revoked| {
                relay_io(client, *upstream, idle, revoked.wait())
            })
            .await;
        }
    }
    Ok(())
}

//! What every listener shares: the connection context whose [`Ctx::route`] and
//! [`Ctx::authorize`] ask the gate and record each decision once, the dialler that connects
//! only to what the gate pinned, the upstream proxy, the socket and stream relays, the accept
//! loop, graceful drain and the open-tunnel registry.

pub mod copy;
pub mod dial;
pub mod drain;
pub mod listener;
pub mod owner;
pub mod relay;
pub mod rewind;
pub mod route;
pub mod tunnels;
pub mod upstream;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::audit::{Closed, Dest, Events, Protocol};
use crate::config::Limits;
use crate::dns::DnsError;
use crate::gate::{Denied, Gate, Pinned, PinnedUnix};
use crate::mitm::Mitm;
use crate::policy::{Access, DecidedBy, Decision, Target};
use crate::session::SessionToken;
use route::Route;
use upstream::Chain;

/// What a listener needs to serve connections; cheap to clone into each connection task.
#[derive(Clone)]
pub struct Ctx {
    pub gate: Gate,
    pub limits: Limits,
    /// One permit per open client connection (`[limits] max_connections`).
    pub slots: Arc<Semaphore>,
    /// Where decisions and closed connections are reported.
    pub events: Arc<Events>,
    /// Stop signal and open-connection count for graceful shutdown.
    pub drain: drain::Drain,
    /// The open tunnels, which a new policy generation re-decides.
    pub tunnels: Arc<tunnels::Tunnels>,
    /// The upstream proxies, fixed at start; `None` when every connection is direct.
    pub upstream: Option<Arc<Chain>>,
    /// The credentials every client must present (`run`'s session token); `None` serves
    /// any client that reaches the listener.
    pub session: Option<SessionToken>,
    /// HTTPS inspection's CA and TLS configurations, when `mitm` is enabled.
    pub mitm: Option<Arc<Mitm>>,
}

impl Ctx {
    /// A context that reports to a fresh [`Events`] with no audit file and is never drained
    /// (for tests that stop by dropping the runtime).
    #[cfg(test)]
    pub fn new(gate: Gate, limits: Limits) -> Self {
        let (_handle, drain) = drain::channel();
        Ctx::with_events(gate, limits, Arc::new(Events::default()), drain)
    }

    pub fn with_events(
        gate: Gate,
        limits: Limits,
        events: Arc<Events>,
        drain: drain::Drain,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        Ctx {
            gate,
            limits,
            slots,
            events,
            drain,
            tunnels: Arc::default(),
            upstream: None,
            session: None,
            mitm: None,
        }
    }

    /// The same context, serving only clients that present `session`.
    pub fn with_session(mut self, session: Option<SessionToken>) -> Self {
        self.session = session;
        self
    }

    /// The same context, intercepting with `mitm`.
    pub fn with_mitm(mut self, mitm: Option<Arc<Mitm>>) -> Self {
        self.mitm = mitm;
        self
    }

    /// The same context, chaining through `upstream`.
    pub fn with_upstream(mut self, upstream: Option<Chain>) -> Self {
        self.upstream = upstream.map(Arc::new);
        self
    }

    /// Decides `target` through the gate, for a direct connection (SOCKS5 UDP never chains),
    /// and records the decision either way. Every decision of every listener (HTTP, CONNECT
    /// and SOCKS5 TCP in [`Ctx::route`], SOCKS5 UDP here, Unix sockets in
    /// [`Ctx::authorize_unix`], invalid hosts in [`Ctx::refuse_invalid`]) is recorded exactly
    /// once. Returns the decision's id for the close line.
    pub async fn authorize(
        &self,
        protocol: Protocol,
        client: SocketAddr,
        target: &Target<'_>,
        access: Access<'_>,
    ) -> Result<(u64, Pinned), Denied> {
        let result = self.gate.authorize(protocol, client, target, access).await;
        let (decision, dns) = match &result {
            Ok(pinned) => (pinned.decision(), None),
            Err(denied) => (&denied.decision, denied.dns.as_ref()),
        };
        let id = self.record(protocol, client, Dest::Target(target), decision, dns, None);
        result.map(|pinned| (id, pinned))
    }

    /// Records and returns the denial of a destination that is not a valid host (`written`
    /// as the client sent it): never matched, never resolved.
    pub fn refuse_invalid(&self, protocol: Protocol, client: SocketAddr, written: &str) -> Denied {
        let denied = Denied {
            decision: Decision::invalid_host(),
            dns: None,
        };
        self.record(
            protocol,
            client,
            Dest::Raw(written),
            &denied.decision,
            None,
            None,
        );
        denied
    }

    /// Records a request an intercepted tunnel refused (its method or path), as the decision
    /// it is.
    pub fn refuse_request(&self, client: SocketAddr, target: &Target<'_>, decision: &Decision) {
        self.record(
            Protocol::Connect,
            client,
            Dest::Target(target),
            decision,
            None,
            None,
        );
    }

    /// Decides a Unix socket (`x-unix-socket`) and records the decision.
    pub fn authorize_unix(
        &self,
        client: SocketAddr,
        path: &Path,
        access: Access<'_>,
    ) -> Result<PinnedUnix, Denied> {
        let result = self.gate.authorize_unix(path, access);
        let decision = match &result {
            Ok(pinned) => pinned.decision(),
            Err(denied) => &denied.decision,
        };
        self.record(
            Protocol::Unix,
            client,
            Dest::Unix(path),
            decision,
            None,
            None,
        );
        result
    }

    /// The one place a decision is reported. `dns`: why the lookup failed, for a `dns-failed`
    /// denial; `upstream`: the proxy an allowed connection goes through (no password).
    fn record(
        &self,
        protocol: Protocol,
        client: SocketAddr,
        dest: Dest<'_>,
        d: &Decision,
        dns: Option<&DnsError>,
        upstream: Option<&str>,
    ) -> u64 {
        self.events
            .decision_via(protocol, client, dest, d, dns, upstream)
    }
}

/// An allowed TCP tunnel, as its close line and a re-decision after a reload need it.
pub struct Established<'a> {
    /// The decision's event id.
    pub id: u64,
    pub protocol: Protocol,
    pub client: SocketAddr,
    pub target: &'a Target<'a>,
    pub route: &'a Route,
    /// The address a reload re-decides it with ([`route::Opened::dialled`]).
    pub dialled: Option<IpAddr>,
}

/// Runs the relay of an allowed connection until it ends or a new policy generation denies
/// it, counted as an open tunnel in the metrics and reported once closed, with bytes each way
/// and, when a reload closed it, the new decision. `relay` gets what to select on for the
/// latter. The caller holds the connection's drain guard.
pub async fn tunnel<F>(
    ctx: &Ctx,
    allowed: Established<'_>,
    relay: impl FnOnce(tunnels::Revoked) -> F,
) where
    F: Future<Output = (crate::audit::TunnelStats, io::Result<()>)>,
{
    let Established {
        id,
        protocol,
        client,
        target,
        route,
        dialled,
    } = allowed;
    let gauge = metrics::gauge!(crate::metrics::ACTIVE_TUNNELS, "protocol" => protocol.as_str());
    gauge.increment(1.0);
    let start = tokio::time::Instant::now();
    let how = tunnels::Decided {
        asked: route.decision().decided_by() == DecidedBy::Decider,
        intercepted: route.decision().intercept(),
    };
    let registration = ctx
        .tunnels
        .register(id, protocol, client, target, dialled, how);
    // A reload between the decision and the registration may have walked the registry
    // without this tunnel: re-decide it under the generation it missed.
    let current = ctx.gate.current();
    if !Arc::ptr_eq(&current, route.generation()) {
        ctx.tunnels.recheck_one(&current, id);
    }
    let (stats, result) = relay(registration.revoked()).await;
    if let Err(err) = result {
        tracing::debug!(%client, dest = %target, error = %err, "tunnel ended with an error");
    }
    gauge.decrement(1.0);
    let end = Closed {
        stats,
        duration: start.elapsed(),
        revoked: registration.revocation(),
        upstream: route.upstream().map(|p| &**p.label()),
    };
    ctx.events
        .closed(id, protocol, client, Dest::Target(target), end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DnsConfig;
    use crate::dns::Resolver;
    use crate::gate::policy_handle;
    use crate::policy::Policy;
    use crate::policy::{Action, PolicyOptions};

    fn policy(allow: &[&str]) -> Policy {
        let rules: Vec<(&str, Action)> = allow.iter().map(|&p| (p, Action::Allow)).collect();
        Policy::from_rules(&rules, PolicyOptions::default()).expect("test rules compile")
    }

    /// A reload that lands between a tunnel's decision and its registration has walked the
    /// registry without it: the tunnel re-decides itself under that generation.
    #[tokio::test]
    async fn a_tunnel_decided_before_a_reload_it_missed_is_re_decided() {
        let dns = DnsConfig {
            servers: vec!["127.0.0.1:9".parse().unwrap()],
            ..DnsConfig::default()
        };
        let gate = Gate::new(
            policy_handle(policy(&["127.0.0.1"])),
            Resolver::new(&dns).unwrap(),
        );
        let ctx = Ctx::new(gate, Limits::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target =
            Target::parse_authority("127.0.0.1", Some(listener.local_addr().unwrap().port()))
                .unwrap();
        let client: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let (id, pinned) = ctx
            .authorize(Protocol::Connect, client, &target, Access::Tunnel)
            .await
            .unwrap();
        let dialled = pinned.first().ip();
        let route = Route::Direct(pinned);
        ctx.gate.policy().store(Arc::new(policy(&["127.0.0.2"])));
        let allowed = Established {
            id,
            protocol: Protocol::Connect,
            client,
            target: &target,
            route: &route,
            dialled: Some(dialled),
        };
        let relay = tunnel(&ctx, allowed, |revoked| async {
            revoked.wait().await;
            (crate::audit::TunnelStats::default(), Ok(()))
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), relay)
            .await
            .expect("the tunnel was closed");
        assert_eq!(ctx.tunnels.recheck(&ctx.gate.current()), 0, "and left");
    }
}

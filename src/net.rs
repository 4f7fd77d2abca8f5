//! What every listener shares: the gate that turns a requested destination into checked
//! addresses, the dialler that connects only to those, and the relay that splices bytes.
//!
//! Invariant: a listener never connects to a name. It asks [`Gate::authorize`] for a
//! [`Pinned`] destination and hands it to [`dial`], which connects to one of the exact
//! addresses the policy classified; nothing re-resolves in between. A Unix socket likewise: a
//! listener asks [`Gate::authorize_unix`], which opens the path once and decides on the file
//! found, and [`dial::dial_unix`] connects to that file, never to the path again.

pub mod dial;
pub mod drain;
pub mod listener;
pub mod owner;
pub mod relay;
pub mod splice;
pub mod tunnels;
pub mod unix;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::audit::{Closed, Dest, Events, Protocol};
use crate::config::Limits;
use crate::dns::{DnsError, Resolver};
use crate::policy::{Access, Decision, Host, Policy, Target};
use unix::SocketFile;

/// The current policy generation. Listeners load it once per connection (or datagram
/// destination), so a reload swaps the policy for new work without a lock on the hot path.
pub type PolicyHandle = Arc<ArcSwap<Policy>>;

pub fn policy_handle(policy: Policy) -> PolicyHandle {
    Arc::new(ArcSwap::from_pointee(policy))
}

/// The resolver new lookups use; a reload that changes `[dns]` swaps it.
pub type ResolverHandle = Arc<ArcSwap<Resolver>>;

/// A destination the policy allowed, with the only addresses that may be dialled.
#[derive(Clone, Debug)]
pub struct Pinned {
    pub decision: Decision,
    pub addrs: Vec<SocketAddr>,
    /// The policy generation that decided, so a tunnel can tell whether a reload came in
    /// between.
    pub generation: Arc<Policy>,
}

/// A Unix socket the policy allowed, held open: the only file that may be connected to.
#[derive(Debug)]
pub struct PinnedUnix {
    pub decision: Decision,
    pub socket: SocketFile,
}

/// A destination the policy blocked; `dns` says why a lookup failed, when it did.
#[derive(Clone, Debug)]
pub struct Denied {
    pub decision: Decision,
    pub dns: Option<DnsError>,
}

impl Denied {
    /// A host that failed canonicalisation: never decided, never resolved.
    pub fn invalid_host() -> Self {
        Denied {
            decision: Decision::invalid_host(),
            dns: None,
        }
    }
}

/// Decides, resolves once and classifies.
#[derive(Clone)]
pub struct Gate {
    policy: PolicyHandle,
    resolver: ResolverHandle,
}

impl Gate {
    pub fn new(policy: PolicyHandle, resolver: Resolver) -> Self {
        Gate {
            policy,
            resolver: Arc::new(ArcSwap::from_pointee(resolver)),
        }
    }

    pub fn policy(&self) -> &PolicyHandle {
        &self.policy
    }

    pub fn resolver(&self) -> &ResolverHandle {
        &self.resolver
    }

    /// The policy generation new work should use.
    pub fn current(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    pub async fn authorize(
        &self,
        target: &Target<'_>,
        access: Access<'_>,
    ) -> Result<Pinned, Denied> {
        let policy = self.policy.load_full();
        let decision = policy.decide(target, access);
        let decision = match (&target.host, decision.needs_dns()) {
            (Host::Name(name), true) => match self.lookup(name).await {
                Ok(ips) => policy.check_resolved(decision, target.port, &ips),
                Err(err) => {
                    return Err(Denied {
                        decision: policy.dns_failed(decision),
                        dns: Some(err),
                    })
                }
            },
            _ => decision,
        };
        if !decision.is_allowed() {
            return Err(Denied {
                decision,
                dns: None,
            });
        }
        let addrs = decision
            .ips
            .iter()
            .map(|c| SocketAddr::new(c.ip, target.port))
            .collect();
        Ok(Pinned {
            decision,
            addrs,
            generation: policy,
        })
    }

    /// Opens the socket at `path` and decides on the file found there; a path with no socket
    /// behind it is denied.
    pub fn authorize_unix(&self, path: &Path, access: Access<'_>) -> Result<PinnedUnix, Denied> {
        let opened = SocketFile::open(path).inspect_err(|error| {
            tracing::debug!(path = %path.display(), %error, "no Unix socket to decide on");
        });
        let id = opened.as_ref().ok().map(SocketFile::id);
        let decision = self.current().decide_unix(path, id, access);
        match opened {
            Ok(socket) if decision.is_allowed() => Ok(PinnedUnix { decision, socket }),
            _ => Err(Denied {
                decision,
                dns: None,
            }),
        }
    }

    async fn lookup(&self, name: &str) -> Result<Vec<std::net::IpAddr>, DnsError> {
        let start = tokio::time::Instant::now();
        let resolver = self.resolver.load_full();
        let result = resolver.lookup(name).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(err) => err.kind(),
        };
        metrics::histogram!("egress_dns_lookup_seconds", "result" => outcome)
            .record(start.elapsed().as_secs_f64());
        result
    }
}

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
}

impl Ctx {
    /// A context that reports to a fresh [`Events`] with no audit file and is never drained
    /// (for tests and embedders that stop by dropping the runtime).
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
        }
    }
}

impl Ctx {
    /// Decides `target` through the gate and records the decision either way: every listener
    /// reports each decision exactly once, here. Returns the decision's id for the close line.
    pub async fn authorize(
        &self,
        protocol: Protocol,
        client: SocketAddr,
        target: &Target<'_>,
        access: Access<'_>,
    ) -> Result<(u64, Pinned), Denied> {
        let result = self.gate.authorize(target, access).await;
        let decision = match &result {
            Ok(pinned) => &pinned.decision,
            Err(denied) => &denied.decision,
        };
        let id = self
            .events
            .decision(protocol, client, Dest::Target(target), decision);
        result.map(|pinned| (id, pinned))
    }
}

/// An allowed TCP tunnel, as its close line and a re-decision after a reload need it.
pub struct Allowed<'a> {
    /// The decision's event id.
    pub id: u64,
    pub protocol: Protocol,
    pub client: SocketAddr,
    pub target: &'a Target<'a>,
    pub pinned: &'a Pinned,
}

/// Runs the relay of an allowed connection until it ends or a new policy generation denies
/// it, counted as an open tunnel in the metrics and reported once closed, with bytes each way
/// and, when a reload closed it, the new decision. `relay` gets what to select on for the
/// latter. The caller holds the connection's drain guard.
pub async fn tunnel<F>(
    ctx: &Ctx,
    allowed: Allowed<'_>,
    upstream: &TcpStream,
    relay: impl FnOnce(tunnels::Revoked) -> F,
) where
    F: Future<Output = (relay::RelayStats, io::Result<()>)>,
{
    let Allowed {
        id,
        protocol,
        client,
        target,
        pinned,
    } = allowed;
    let gauge = metrics::gauge!("egress_active_tunnels", "protocol" => protocol.as_str());
    gauge.increment(1.0);
    let start = tokio::time::Instant::now();
    let (stats, result, registration) = match upstream.peer_addr() {
        Ok(dialled) => {
            let registration = ctx
                .tunnels
                .register(id, protocol, client, target, dialled.ip());
            // A reload between the decision and the registration may have walked the
            // registry without this tunnel: re-decide it under the generation it missed.
            let current = ctx.gate.current();
            if !Arc::ptr_eq(&current, &pinned.generation) {
                ctx.tunnels.recheck_one(&current, id);
            }
            let (stats, result) = relay(registration.revoked()).await;
            (stats, result, Some(registration))
        }
        Err(error) => (relay::RelayStats::default(), Err(error), None),
    };
    if let Err(err) = result {
        tracing::debug!(%client, dest = %target, error = %err, "tunnel ended with an error");
    }
    gauge.decrement(1.0);
    let end = Closed {
        stats,
        duration: start.elapsed(),
        revoked: registration.as_ref().and_then(|r| r.revocation()),
    };
    ctx.events
        .closed(id, protocol, client, Dest::Target(target), end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DnsConfig;
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
        let upstream = TcpStream::connect(pinned.addrs[0]).await.unwrap();
        ctx.gate.policy().store(Arc::new(policy(&["127.0.0.2"])));
        let allowed = Allowed {
            id,
            protocol: Protocol::Connect,
            client,
            target: &target,
            pinned: &pinned,
        };
        let relay = tunnel(&ctx, allowed, &upstream, |revoked| async {
            revoked.wait().await;
            (relay::RelayStats::default(), Ok(()))
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), relay)
            .await
            .expect("the tunnel was closed");
        assert_eq!(ctx.tunnels.recheck(&ctx.gate.current()), 0, "and left");
    }
}

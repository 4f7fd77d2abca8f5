//! The gate: turns a requested destination into checked addresses, and records every
//! decision exactly once.
//!
//! Invariant: a listener never connects to a name. It asks [`crate::net::Ctx::authorize`] for a
//! [`Pinned`] destination and hands it to [`crate::net::dial::dial`], which connects to one of
//! the exact addresses the policy classified; nothing re-resolves in between, and a `Pinned`
//! is only made here, from the engine's [`crate::policy::Allowed`]. A Unix socket likewise:
//! [`crate::net::Ctx::authorize_unix`] opens the path once and decides on the file found, and
//! [`crate::net::dial::dial_unix`] connects to that file, never to the path again.
//!
//! The one exception is a name sent to an upstream proxy that resolves it
//! (`[upstream] resolve = "upstream"`): [`Gate::authorize_by_name`] gives a [`Named`], which
//! has no address, so the direct dial cannot take it; only the upstream dial does.

pub mod unix;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::audit::Protocol;
use crate::decider::Asker;
use crate::dns::{DnsError, Resolver};
use crate::policy::{self, Access, Decision, Policy, Reason, Step, Target};
use unix::SocketFile;

/// The current policy generation. Listeners load it once per connection (or datagram
/// destination), so a reload swaps the policy for new work without a lock on the hot path.
pub type PolicyHandle = Arc<ArcSwap<Policy>>;

pub fn policy_handle(policy: Policy) -> PolicyHandle {
    Arc::new(ArcSwap::from_pointee(policy))
}

/// The resolver new lookups use; a reload that changes `[dns]` swaps it.
pub type ResolverHandle = Arc<ArcSwap<Resolver>>;

/// A destination the policy allowed: the only addresses that may be dialled, and the policy
/// generation that decided (so a tunnel can tell whether a reload came in between). Only the
/// gate makes one.
#[derive(Clone, Debug)]
pub struct Pinned {
    allowed: policy::Allowed,
    generation: Arc<Policy>,
}

impl Pinned {
    pub fn decision(&self) -> &Decision {
        self.allowed.decision()
    }

    /// The checked addresses, in the order to try them.
    pub fn addrs(&self) -> impl ExactSizeIterator<Item = SocketAddr> + Clone + '_ {
        self.allowed.addrs()
    }

    /// The first of them.
    pub fn first(&self) -> SocketAddr {
        self.allowed.first()
    }

    /// Whether `addr` is one of them (a kept upstream connection may be reused only then).
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.allowed.contains(addr)
    }

    pub fn generation(&self) -> &Arc<Policy> {
        &self.generation
    }
}

/// A name the policy allowed without resolving it, for an upstream proxy that resolves it
/// itself: no address, so nothing can dial it directly. Only the gate makes one.
#[derive(Clone, Debug)]
pub struct Named {
    unresolved: policy::Unresolved,
    generation: Arc<Policy>,
}

impl Named {
    pub fn decision(&self) -> &Decision {
        self.unresolved.decision()
    }

    pub fn generation(&self) -> &Arc<Policy> {
        &self.generation
    }
}

/// What the gate allows for a connection through an upstream proxy that resolves names.
#[derive(Clone, Debug)]
pub enum Checked {
    /// An IP literal or `localhost`, classified here.
    Pinned(Pinned),
    /// A name, left to the upstream.
    Named(Named),
}

impl Checked {
    pub fn decision(&self) -> &Decision {
        match self {
            Checked::Pinned(pinned) => pinned.decision(),
            Checked::Named(named) => named.decision(),
        }
    }

    pub fn generation(&self) -> &Arc<Policy> {
        match self {
            Checked::Pinned(pinned) => pinned.generation(),
            Checked::Named(named) => named.generation(),
        }
    }
}

/// A Unix socket the policy allowed, held open: the only file that may be connected to.
#[derive(Debug)]
pub struct PinnedUnix {
    decision: Decision,
    socket: SocketFile,
}

impl PinnedUnix {
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    pub fn socket(&self) -> &SocketFile {
        &self.socket
    }
}

/// A destination the policy blocked; `dns` says why a lookup failed, when it did.
#[derive(Clone, Debug)]
pub struct Denied {
    pub decision: Decision,
    pub dns: Option<DnsError>,
}

impl From<policy::Blocked<DnsError>> for Denied {
    fn from(blocked: policy::Blocked<DnsError>) -> Self {
        Denied {
            decision: blocked.decision,
            dns: blocked.dns,
        }
    }
}

/// Decides, resolves once and classifies: the policy crate's pipeline over the current
/// generation and resolver.
#[derive(Clone)]
pub struct Gate {
    policy: PolicyHandle,
    resolver: ResolverHandle,
    /// The embedder's decider, asked about destinations no rule matched.
    asker: Option<Asker>,
    /// The CONNECT listener hands tunnels that must be inspected to the interception engine
    /// (a CA is loaded); without it they are refused, never relayed as opaque bytes.
    inspecting: bool,
}

impl Gate {
    pub fn new(policy: PolicyHandle, resolver: Resolver) -> Self {
        Gate {
            policy,
            resolver: Arc::new(ArcSwap::from_pointee(resolver)),
            asker: None,
            inspecting: false,
        }
    }

    /// The same gate, letting CONNECT tunnels that must be inspected through to the
    /// interception engine.
    pub(crate) fn inspecting(mut self, inspecting: bool) -> Self {
        self.inspecting = inspecting;
        self
    }

    /// The same gate, asking `asker` about destinations no rule matched.
    pub(crate) fn with_asker(mut self, asker: Option<Asker>) -> Self {
        self.asker = asker;
        self
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

    pub(crate) async fn authorize(
        &self,
        protocol: Protocol,
        client: SocketAddr,
        target: &Target<'_>,
        access: Access<'_>,
    ) -> Result<Pinned, Denied> {
        let generation = self.policy.load_full();
        let resolver = Metered(&self.resolver);
        let step = self
            .decide(&generation, protocol, client, target, access)
            .await;
        let allowed = step.resolve(&resolver).await?;
        Ok(Pinned {
            allowed,
            generation,
        })
    }

    /// [`Gate::authorize`] for a connection that an upstream proxy makes by name: an allowed
    /// name is not resolved here ([`crate::policy::Pending::unresolved`]); IP literals and
    /// `localhost` are decided and classified as usual.
    pub(crate) async fn authorize_by_name(
        &self,
        protocol: Protocol,
        client: SocketAddr,
        target: &Target<'_>,
        access: Access<'_>,
    ) -> Result<Checked, Denied> {
        let generation = self.policy.load_full();
        let step = self
            .decide(&generation, protocol, client, target, access)
            .await;
        let deferred = step.defer().map_err(|decision| Denied {
            decision,
            dns: None,
        })?;
        Ok(match deferred {
            policy::Deferred::Checked(allowed) => Checked::Pinned(Pinned {
                allowed,
                generation: Arc::clone(&generation),
            }),
            policy::Deferred::Unresolved(unresolved) => Checked::Named(Named {
                unresolved,
                generation: Arc::clone(&generation),
            }),
        })
    }

    /// The rules' step for `target`, asking the decider about what no rule matched. Only the
    /// CONNECT listener intercepts, and only with a CA: any other tunnel that must be
    /// intercepted is refused (`mitm-required`) rather than relayed as opaque bytes.
    async fn decide<'a>(
        &self,
        generation: &'a Policy,
        protocol: Protocol,
        client: SocketAddr,
        target: &'a Target<'_>,
        access: Access<'_>,
    ) -> Step<'a> {
        let step = match (generation.decide(target, access), &self.asker) {
            (Step::Done(decision), Some(asker))
                if decision.reason() == Reason::NotAllowed
                    && !refused_by_request(generation, target, access) =>
            {
                let allowed = asker.ask(protocol.as_str(), client, target).await;
                generation.decide_asked(target, access, allowed)
            }
            (step, _) => step,
        };
        if self.inspecting && protocol == Protocol::Connect {
            step
        } else {
            step.uninspected()
        }
    }

    /// Opens the socket at `path` and decides on the file found there; a path with no socket
    /// behind it is denied.
    pub(crate) fn authorize_unix(
        &self,
        path: &Path,
        access: Access<'_>,
    ) -> Result<PinnedUnix, Denied> {
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
}

/// Whether the request-level checks refused the request (an allow http rule names the host
/// and none matches): the decider is asked about hosts no rule matched, not about those, and
/// its yes would not change the refusal.
fn refused_by_request(policy: &Policy, target: &Target<'_>, access: Access<'_>) -> bool {
    match access {
        Access::Http { method, path, body } => {
            policy.check_request(target, method, path, body).is_some()
        }
        Access::Tunnel => false,
    }
}

/// What the gate pins for `target` under `policy` with `resolver`: the real pipeline, for unit
/// tests that need a [`Pinned`] without a listener.
#[cfg(test)]
pub(crate) async fn pin(
    policy: Policy,
    resolver: &impl policy::Resolve,
    target: &Target<'_>,
) -> Pinned {
    let allowed = policy::authorize(&policy, resolver, target, Access::Tunnel)
        .await
        .unwrap_or_else(|blocked| panic!("{target} allowed: {:?}", blocked.decision));
    Pinned {
        allowed,
        generation: Arc::new(policy),
    }
}

/// The listeners' resolver, timing each lookup into `egress_dns_lookup_seconds`.
/// It loads the current resolver only when a name needs one, so an IP literal or a denial
/// costs no reference count.
struct Metered<'a>(&'a ResolverHandle);

impl policy::Resolve for Metered<'_> {
    type Error = DnsError;

    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let start = tokio::time::Instant::now();
        let resolver = self.0.load_full();
        // Boxed: the lookup's future is 1.6 KiB, and every future that awaits a decision
        // (the forward request's, the tunnel's) would carry that room and copy it on each
        // move, also for an IP literal, which never looks anything up. A name pays one
        // allocation next to its lookup.
        let result = Box::pin(resolver.lookup(name)).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(err) => err.kind(),
        };
        metrics::histogram!(crate::metrics::DNS_LOOKUP_SECONDS, "result" => outcome)
            .record(start.elapsed().as_secs_f64());
        result
    }
}

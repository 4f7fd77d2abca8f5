//! The one pipeline: decide → resolve once → classify every answer → the addresses that may be
//! dialled. The listeners, `check` and the admin API's `/check` all run it; nothing else turns
//! a name into addresses.
//!
//! The steps are a typestate. [`Policy::decide`] gives a [`Step`]: a finished [`Decision`], or
//! a [`Pending`] name that can only be completed with its DNS answers ([`Pending::resolved`])
//! or a failed lookup ([`Pending::failed`]). A blocked decision never becomes a `Pending`, so
//! no answers can turn a deny into an allow. An allowed outcome is an [`Allowed`], which only
//! this module makes and which carries the exact addresses checked:
//!
//! A connection that goes to an upstream proxy *by name*, with the upstream resolving it, takes
//! a separate path: [`Step::defer`] (or [`Pending::unresolved`]) gives an [`Unresolved`] for a
//! name the rules allow, which has no addresses and so can never be taken for an [`Allowed`].
//!
//! ```compile_fail,E0451
//! use egress_policy::Allowed;
//! // Addresses nobody checked cannot be dressed up as allowed ones.
//! let forged = Allowed { decision: egress_policy::Decision::invalid_host() };
//! ```

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use crate::decision::{Decision, Reason};
use crate::matcher::RuleRef;
use crate::{DecidedBy, Policy};

/// Name resolution as the pipeline needs it: every address a name has, looked up once.
/// Implement it over any resolver (the proxy's is hickory); the engine never resolves itself.
pub trait Resolve {
    /// Why a lookup failed (shown to people; every failure blocks with `dns-failed`).
    type Error;

    /// All addresses of `name` (already canonical and lower-case, never an IP literal). An
    /// empty answer is a failure too.
    fn resolve(&self, name: &str) -> impl Future<Output = Result<Vec<IpAddr>, Self::Error>> + Send;
}

/// Where [`Policy::decide`] left a destination.
#[derive(Debug)]
#[must_use = "a pending name must be resolved before anything is dialled"]
pub enum Step<'a> {
    /// Decided without the network: an IP literal, `localhost`, a denial.
    Done(Decision),
    /// The rules allow the name; its answers decide.
    Resolve(Pending<'a>),
}

impl<'a> Step<'a> {
    /// Completes the step: a pending name is resolved once with `resolver` and every answer
    /// checked. `Ok` holds the only addresses that may be dialled.
    pub async fn resolve<R: Resolve>(self, resolver: &R) -> Result<Allowed, Blocked<R::Error>> {
        let (decision, dns) = match self {
            Step::Done(decision) => (decision, None),
            Step::Resolve(pending) => match resolver.resolve(pending.name).await {
                Ok(answers) => (pending.resolved(&answers), None),
                Err(err) => (pending.failed(), Some(err)),
            },
        };
        Allowed::new(decision).map_err(|decision| Blocked { decision, dns })
    }

    /// Completes the step without any lookup, for a connection that an upstream proxy makes
    /// by name (it resolves names itself): a pending name becomes [`Unresolved`]; an IP
    /// literal or `localhost`, already decided and classified, is an [`Allowed`]. `Err` is
    /// the blocked decision. See [`Pending::unresolved`] for why this is safe only there.
    pub fn defer(self) -> Result<Deferred, Decision> {
        match self {
            Step::Done(decision) => Allowed::new(decision).map(Deferred::Checked),
            Step::Resolve(pending) => Ok(Deferred::Unresolved(pending.unresolved())),
        }
    }

    /// Marks an allowed tunnel as one to intercept, now or once its answers are checked.
    pub(crate) fn intercepting(self, intercept: bool) -> Self {
        match self {
            Step::Done(decision) => Step::Done(decision.intercepting(intercept)),
            Step::Resolve(pending) => Step::Resolve(Pending {
                intercept,
                ..pending
            }),
        }
    }

    /// [`Decision::uninspected`] before the lookup: for a listener that cannot inspect, a
    /// name whose tunnel must be intercepted is refused `mitm-required` without resolving it.
    pub fn uninspected(self) -> Self {
        match self {
            Step::Done(decision) => Step::Done(decision.uninspected()),
            Step::Resolve(pending) if pending.intercept => Step::Done(
                Decision::block(Reason::MitmRequired, pending.rule)
                    .at(pending.port)
                    .by(pending.by),
            ),
            step => step,
        }
    }

    /// The decision, when no lookup is needed.
    pub fn done(&self) -> Option<&Decision> {
        match self {
            Step::Done(decision) => Some(decision),
            Step::Resolve(_) => None,
        }
    }
}

/// A name the rules allow, waiting for its answers. It borrows the policy generation that
/// decided, so the answers are judged by the same rules.
#[derive(Debug)]
#[must_use = "a pending name must be resolved before anything is dialled"]
pub struct Pending<'a> {
    pub(crate) policy: &'a Policy,
    pub(crate) name: &'a str,
    pub(crate) port: u16,
    pub(crate) rule: Option<RuleRef>,
    pub(crate) by: DecidedBy,
    /// The tunnel must be intercepted once allowed.
    pub(crate) intercept: bool,
}

impl Pending<'_> {
    /// The name to resolve.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The allow rule that matched (none when the embedder's decider allowed it).
    pub fn rule(&self) -> Option<&RuleRef> {
        self.rule.as_ref()
    }

    /// Judges the answers: any a deny rule matches blocks the name, then every answer is
    /// classified. The decision's addresses are the only ones that may be dialled; the name
    /// must not be resolved again.
    pub fn resolved(self, answers: &[IpAddr]) -> Decision {
        self.policy
            .check_resolved(self.rule, self.port, answers)
            .by(self.by)
            .intercepting(self.intercept)
    }

    /// Allows the name without resolving it here, for a connection that goes *by name* to an
    /// upstream proxy which resolves it (egress-proxy's `[upstream] resolve = "upstream"`, for
    /// networks where only that proxy can resolve).
    ///
    /// Safe only there. The rules have decided the name (deny rules, `limited` mode and the
    /// decider all applied before a name becomes pending), but its answers were never
    /// classified: the rebinding defence and CIDR deny rules on answers are left to the
    /// upstream, which is the one that connects. The outcome is an [`Unresolved`], which has no
    /// address, and no [`Allowed`] (the only thing a direct dial takes) can be made from it.
    pub fn unresolved(self) -> Unresolved {
        Unresolved {
            decision: Decision::allow(self.rule, Vec::new())
                .at(self.port)
                .by(self.by)
                .intercepting(self.intercept),
        }
    }

    /// The lookup failed or timed out: blocked, never retried by name.
    pub fn failed(self) -> Decision {
        Decision::block(Reason::DnsFailed, self.rule)
            .at(self.port)
            .by(self.by)
    }
}

/// A destination the pipeline allowed, with the only addresses that may be dialled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    decision: Decision,
}

impl Allowed {
    /// `Ok` for an allowed decision (which always has at least one checked address).
    pub(crate) fn new(decision: Decision) -> Result<Allowed, Decision> {
        if decision.is_allowed() && !decision.ips().is_empty() {
            Ok(Allowed { decision })
        } else {
            Err(decision)
        }
    }

    /// The decision.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The checked addresses with the destination port, in the order to try them.
    pub fn addrs(&self) -> impl ExactSizeIterator<Item = SocketAddr> + Clone + '_ {
        self.decision
            .ips()
            .iter()
            .map(|c| SocketAddr::new(c.ip, self.decision.port()))
    }

    /// The first of them.
    pub fn first(&self) -> SocketAddr {
        let ip = self.decision.ips()[0].ip;
        SocketAddr::new(ip, self.decision.port())
    }

    /// Whether `addr` is one of them.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        addr.port() == self.decision.port() && self.decision.ips().iter().any(|c| c.ip == addr.ip())
    }
}

/// A name the rules allowed that was not resolved here ([`Pending::unresolved`]): its route
/// is "by name, through an upstream proxy that resolves it". Its decision is allowed and has
/// no addresses; nothing may be dialled directly for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    decision: Decision,
}

impl Unresolved {
    /// The decision (allowed, with no addresses).
    pub fn decision(&self) -> &Decision {
        &self.decision
    }
}

/// What [`Step::defer`] allows: checked addresses (an IP literal, `localhost`), or a name left
/// to the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deferred {
    /// Decided without DNS and classified, as [`Step::resolve`] would.
    Checked(Allowed),
    /// A name the rules allow, not resolved here.
    Unresolved(Unresolved),
}

/// A destination the pipeline blocked; `dns` says why the lookup failed, when it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked<E> {
    /// The decision (never allowed).
    pub decision: Decision,
    /// The lookup's error, for `dns-failed`.
    pub dns: Option<E>,
}

/// Runs the whole pipeline for one destination under `policy`.
pub async fn authorize<R: Resolve>(
    policy: &Policy,
    resolver: &R,
    target: &crate::Target<'_>,
    access: crate::Access<'_>,
) -> Result<Allowed, Blocked<R::Error>> {
    policy.decide(target, access).resolve(resolver).await
}

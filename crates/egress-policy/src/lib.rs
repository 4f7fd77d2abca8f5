//! The policy engine of egress-proxy: pure, synchronous, and independent of sockets, runtimes
//! and resolvers.
//!
//! Every destination passes, in order: host canonicalisation ([`host`]) → mode/method policy →
//! the compiled domain matcher → IP classification ([`classifier`]) of the literal or of every
//! resolved address (counting the ranges a network declares public, [`public_ranges`]).
//! [`authorize`] runs all of it behind a small [`Resolve`] trait and gives
//! back an [`Allowed`] (the only addresses that may be dialled) or a [`Blocked`] decision;
//! [`Policy::decide`] is its first, network-free half (see [`Step`]).
//!
//! A compiled [`Policy`] is immutable and cheap to clone, so a running proxy swaps whole
//! generations atomically and a connection keeps the generation it started with.
//!
//! # The decider hook
//!
//! An embedder can be asked about destinations no rule matched (reason `not-allowed`), as
//! Codex's `NetworkPolicyDecider` and sandbox-runtime's ask callback do: when it says yes,
//! [`Policy::decide_asked`] continues as if an allow rule matched, so deny rules, the
//! local-address and self-connection refusals and the DNS checks still apply. It is never
//! asked about anything else.

#![forbid(unsafe_code)]
#![deny(missing_docs, rust_2018_idioms)]

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod authorize;
pub mod classifier;
mod decision;
pub mod host;
mod http_rules;
mod matcher;
pub mod pattern;
pub mod public_ranges;
mod spec;
mod target;
mod unix;
mod warnings;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use authorize::{authorize, Allowed, Blocked, Deferred, Pending, Resolve, Step, Unresolved};
pub use classifier::{classify, IpClass};
pub use decision::{Access, ClassifiedIp, DecidedBy, Decision, Declarable, Reason, Verdict};
pub use host::{Host, InvalidHost};
pub use http_rules::{check_rule_path, is_method_token, PathError};
pub use matcher::{RuleInfo, RuleRef};
pub use pattern::{Pattern, PatternError};
pub use public_ranges::{DeclaredRange, PublicRanges, RangeError};
pub use spec::{
    escape_controls, Action, HttpRuleSpec, InspectionSpec, Mode, MultiAnswer, Origin, RuleSpec,
    UnixAction, UnixSocketSpec,
};
pub use target::{Target, UrlScheme};
pub use unix::FileId;

use http_rules::HttpPolicy;
use matcher::{AllowKind, Matcher};
use unix::{UnixSocketMap, UnixVerdict};

/// Internals the differential fuzz targets compare with a reference model. Not API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub use crate::matcher::{AllowKind, Match, Matcher};
    use crate::IpClass;

    /// Forwards to the crate-private helper: `classifier` is a public module, so making the
    /// helper `pub` there would publish it without the feature.
    pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
        crate::classifier::embedded_v4(ip)
    }

    /// Forwards to the crate-private helper, for the same reason as [`embedded_v4`].
    pub fn net_class(net: ipnet::IpNet) -> Option<IpClass> {
        crate::classifier::net_class(net)
    }
}

/// Engine settings that are not rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyOptions {
    /// `full`, or `limited` (reads over plain HTTP only).
    pub mode: Mode,
    /// Lets allowed names and wildcard rules reach local (loopback, private, link-local,
    /// CGNAT, ULA) addresses; metadata and the never-reachable classes stay closed.
    pub allow_local_binding: bool,
    /// What a name whose answers mix public and non-public addresses gets.
    pub multi_answer: MultiAnswer,
    /// Any Unix socket may be reached (deny entries still win).
    pub dangerously_allow_all_unix_sockets: bool,
    /// Addresses classified `public` although the classifier's table names them otherwise,
    /// in literals and in answers alike, so the ordinary rules decide them.
    pub public_ranges: PublicRanges,
}

/// A rule that could not be compiled, with where it was written. Shown on one line: the
/// pattern text is the file's, so its control characters are escaped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// Where the rule was written.
    pub origin: Origin,
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub error: PatternError,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let PolicyError {
            origin,
            pattern,
            error,
        } = self;
        let message = format!("{origin}: invalid pattern `{pattern}`: {error}");
        f.write_str(&escape_controls(&message))
    }
}

struct Inner {
    matcher: Matcher,
    unix: UnixSocketMap,
    warnings: Vec<String>,
}

/// A compiled policy generation.
#[derive(Clone)]
pub struct Policy {
    inner: Arc<Inner>,
    options: PolicyOptions,
    /// The proxy's own listeners, never a permitted destination.
    self_addrs: Arc<[SocketAddr]>,
    /// `[[http_rules]]` and the inspection scope.
    http: Arc<HttpPolicy>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("options", &self.options)
            .field("rules", &self.inner.matcher.rules().len())
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Compiles rules. Every pattern is validated; the first bad one is the error.
    pub fn new(
        rules: &[RuleSpec],
        unix_sockets: &[UnixSocketSpec],
        options: PolicyOptions,
    ) -> Result<Policy, PolicyError> {
        let mut matcher = Matcher::default();
        let mut compiled = Vec::with_capacity(rules.len());
        for spec in rules {
            let pattern =
                Pattern::parse(&spec.pattern, spec.action).map_err(|error| PolicyError {
                    origin: spec.origin.clone(),
                    pattern: spec.pattern.clone(),
                    error,
                })?;
            let info = RuleInfo {
                pattern: pattern.to_string().into(),
                action: spec.action,
                origin: spec.origin.clone(),
                managed: spec.managed,
            };
            compiled.push((
                matcher.insert(&pattern, info),
                pattern,
                spec.pattern.as_str(),
            ));
        }
        let warnings = warnings::collect(&matcher, &compiled);
        let unix = UnixSocketMap::new(unix_sockets, options.dangerously_allow_all_unix_sockets);
        Ok(Policy {
            inner: Arc::new(Inner {
                matcher,
                unix,
                warnings,
            }),
            options,
            self_addrs: Arc::from([]),
            http: Arc::default(),
        })
    }

    /// The same domain rules with `[[http_rules]]` and the HTTPS-inspection scope. Every host
    /// pattern, method and path is validated; the first bad one is the error.
    pub fn with_http(
        &self,
        rules: &[HttpRuleSpec],
        inspection: &InspectionSpec,
    ) -> Result<Policy, PolicyError> {
        Ok(Policy {
            http: Arc::new(HttpPolicy::new(rules, inspection, self.options.mode)?),
            ..self.clone()
        })
    }

    /// Findings about the http rules and the inspection scope for `validate` and `serve`'s
    /// start-up log: http rules HTTPS would not see (mitm off, or the host outside
    /// `[mitm] domains`) and `limited` mode without interception.
    pub fn http_warnings(&self) -> &[String] {
        self.http.warnings()
    }

    /// The http rules it was compiled with, in order.
    pub fn http_rules(&self) -> &[HttpRuleSpec] {
        self.http.specs()
    }

    /// The request-level checks, for a plain-HTTP request (through [`Policy::decide`]) and for
    /// each request inside an intercepted tunnel (called directly): `limited` mode's reads,
    /// then the http rules. `None` lets the request go (the domain rules still decide its
    /// host); `Some` is the refusal. Allocates nothing unless an http rule names the host
    /// and the path is not already in normal form.
    pub fn check_request(
        &self,
        target: &Target<'_>,
        method: &str,
        path: &str,
        body: bool,
    ) -> Option<Decision> {
        if self.options.mode == Mode::Limited && !is_read(method, body) {
            return Some(Decision::block(Reason::MethodNotAllowed, None).at(target.port));
        }
        self.http
            .check(target, method, path)
            .map(|d| d.at(target.port))
    }

    /// Whether a CONNECT to `target` is answered inside TLS: interception is on and an
    /// explicit `[mitm] domains` pattern names it, so even a denial is a readable 403 there.
    pub fn answers_inside_tls(&self, target: &Target<'_>) -> bool {
        self.http.named_in_scope(target)
    }

    /// Whether interception is on and `target` is in its scope.
    pub fn interceptable(&self, target: &Target<'_>) -> bool {
        self.http.interceptable(target)
    }

    /// How a tunnel to `target` must be carried: `Ok(true)` intercepted, `Ok(false)` opaque,
    /// `Err` refused (`limited` mode where interception cannot see the requests).
    fn tunnel_inspection(&self, target: &Target<'_>) -> Result<bool, Decision> {
        let limited = self.options.mode == Mode::Limited;
        if !limited && !self.http.has_rules() {
            return Ok(false);
        }
        let interceptable = self.http.interceptable(target);
        if limited && !interceptable {
            return Err(Decision::block(Reason::MitmRequired, None).at(target.port));
        }
        Ok(interceptable && (limited || self.http.names(target)))
    }

    /// Compiles rules written in code (origin [`Origin::Api`], unmanaged): what an embedder
    /// without files, and the tests, start from.
    pub fn from_rules(
        rules: &[(&str, Action)],
        options: PolicyOptions,
    ) -> Result<Policy, PolicyError> {
        let specs: Vec<RuleSpec> = rules
            .iter()
            .map(|&(pattern, action)| RuleSpec {
                pattern: pattern.to_string(),
                action,
                origin: Origin::Api,
                managed: false,
            })
            .collect();
        Policy::new(&specs, &[], options)
    }

    /// The same policy, told which addresses its own listeners are bound to.
    pub fn with_self_addrs(&self, addrs: &[SocketAddr]) -> Policy {
        // Sorted by port: a wildcard listener brings every interface address of the host,
        // and a destination on no listener port should cost one binary search, not a scan.
        let mut addrs = addrs.to_vec();
        addrs.sort_unstable_by_key(SocketAddr::port);
        Policy {
            self_addrs: Arc::from(addrs),
            ..self.clone()
        }
    }

    /// The same rules in another mode (the admin API's `POST /mode`).
    pub fn with_mode(&self, mode: Mode) -> Policy {
        let mut policy = self.clone();
        policy.options.mode = mode;
        policy
    }

    /// The settings it was compiled with (and the mode it runs in).
    pub fn options(&self) -> &PolicyOptions {
        &self.options
    }

    /// The compiled rules, in the order they were given.
    pub fn rules(&self) -> &[RuleRef] {
        self.inner.matcher.rules()
    }

    /// Findings for `validate` and `serve`'s start-up log: allow rules that a deny rule makes
    /// useless, that open loopback or a metadata address, that reach names anyone can
    /// register, and IPv6 patterns that look like they carry a port.
    pub fn warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    /// Everything that can be decided without the network: a finished decision, or an
    /// allowed name whose answers must be checked. Allocates nothing for names.
    pub fn decide<'a>(&'a self, target: &'a Target<'_>, access: Access<'_>) -> Step<'a> {
        self.decide_by(target, access, None)
    }

    /// [`Policy::decide`] for a destination the embedder's decider was asked about because no
    /// rule matched it: `allowed` continues as if an allow rule matched (deny rules, local
    /// addresses, self-connections and the DNS answers are still checked, and no local
    /// exception applies), otherwise it stays `not-allowed`. The decision records
    /// [`DecidedBy::Decider`] when the answer mattered.
    pub fn decide_asked<'a>(
        &'a self,
        target: &'a Target<'_>,
        access: Access<'_>,
        allowed: bool,
    ) -> Step<'a> {
        self.decide_by(target, access, Some(allowed))
    }

    // Inlined into both callers, so `decide` (`asked` = None) pays nothing for the decider.
    #[inline(always)]
    fn decide_by<'a>(
        &'a self,
        target: &'a Target<'_>,
        access: Access<'_>,
        asked: Option<bool>,
    ) -> Step<'a> {
        let intercept = match access {
            Access::Http { method, path, body } => {
                match self.check_request(target, method, path, body) {
                    Some(refused) => return Step::Done(refused),
                    None => false,
                }
            }
            Access::Tunnel => match self.tunnel_inspection(target) {
                Ok(intercept) => intercept,
                Err(refused) => return Step::Done(refused),
            },
        };
        let matcher = &self.inner.matcher;
        let port = target.port;
        let m = match &target.host {
            Host::Ip(ip) => matcher.match_ip(ip.to_canonical(), port),
            Host::Name(name) => matcher.match_name(name, port),
        };
        if let Some(rule) = m.deny {
            let rule = matcher.rule(rule).clone();
            return Step::Done(Decision::block(Reason::DenyRule, Some(rule)).at(port));
        }
        let (rule, kind, by) = match (m.allow, asked) {
            (Some((rule, kind)), _) => (Some(matcher.rule(rule).clone()), kind, DecidedBy::Policy),
            (None, Some(true)) => (None, AllowKind::Wildcard, DecidedBy::Decider),
            (None, asked) => {
                let by = if asked.is_some() {
                    DecidedBy::Decider
                } else {
                    DecidedBy::Policy
                };
                return Step::Done(Decision::block(Reason::NotAllowed, None).at(port).by(by));
            }
        };
        let step = match &target.host {
            Host::Ip(ip) => Step::Done(self.decide_ip(ip.to_canonical(), port, rule, kind).by(by)),
            Host::Name(name) => self.decide_name(name, port, rule, kind, by),
        };
        step.intercepting(intercept)
    }

    fn decide_ip(&self, ip: IpAddr, port: u16, rule: Option<RuleRef>, kind: AllowKind) -> Decision {
        let checked = ClassifiedIp::under(ip, &self.options.public_ranges);
        if !self.local_ok(checked.class, kind) {
            return Decision::block(Reason::NonPublicIp(checked.class), rule)
                .with_ips(vec![checked])
                .at(port);
        }
        self.guard_self(Decision::allow(rule, vec![checked]).at(port))
    }

    fn decide_name<'a>(
        &'a self,
        name: &'a str,
        port: u16,
        rule: Option<RuleRef>,
        kind: AllowKind,
        by: DecidedBy,
    ) -> Step<'a> {
        if host::is_localhost(name) {
            // Resolved here, never through DNS, to the addresses it stands for; those meet the
            // IP and CIDR rules like any answer. Only an exact `localhost` rule (not a
            // wildcard, not `*.localhost`) is the local exception the seeds describe.
            let exact = kind == AllowKind::Exact && name == "localhost";
            let kind = if exact {
                AllowKind::Exact
            } else {
                AllowKind::Wildcard
            };
            let decision = self.check_answers(rule, port, &LOCALHOST, kind, Reason::NonPublicIp);
            return Step::Done(decision.by(by));
        }
        Step::Resolve(Pending {
            policy: self,
            name,
            port,
            rule,
            by,
            intercept: false,
        })
    }

    /// Whether a non-public class may be reached under this allow.
    fn local_ok(&self, class: IpClass, kind: AllowKind) -> bool {
        class.is_public()
            || (class.is_local() && (self.options.allow_local_binding || kind == AllowKind::Exact))
    }

    /// Judges the answers for a name the rules allowed (only through [`Pending`]).
    fn check_resolved(&self, rule: Option<RuleRef>, port: u16, answers: &[IpAddr]) -> Decision {
        // A resolved name never gets the exact-rule exception: only allow_local_binding
        // opens local answers, so a public name cannot be pointed at the LAN by its DNS.
        self.check_answers(
            rule,
            port,
            answers,
            AllowKind::Wildcard,
            Reason::DnsNonPublic,
        )
    }

    /// Judges the addresses an allowed name stands for: any answer a deny rule matches blocks
    /// the name, then every answer is classified under `kind` (`non_public` names the reason).
    fn check_answers(
        &self,
        rule: Option<RuleRef>,
        port: u16,
        answers: &[IpAddr],
        kind: AllowKind,
        non_public: fn(IpClass) -> Reason,
    ) -> Decision {
        let checked: Vec<ClassifiedIp> = answers
            .iter()
            .map(|ip| ClassifiedIp::under(ip.to_canonical(), &self.options.public_ranges))
            .collect();
        if checked.is_empty() {
            return Decision::block(Reason::DnsFailed, rule).at(port);
        }
        let matcher = &self.inner.matcher;
        for c in &checked {
            if let Some(deny) = matcher.match_ip(c.ip, port).deny {
                return Decision::block(Reason::DenyRule, Some(matcher.rule(deny).clone()))
                    .with_ips(checked)
                    .at(port);
            }
        }
        let acceptable = |c: &ClassifiedIp| self.local_ok(c.class, kind);
        let first_bad = checked.iter().find(|c| !acceptable(c)).map(|c| c.class);
        let decision = match (first_bad, self.options.multi_answer) {
            (None, _) => Decision::allow(rule, checked),
            (Some(class), MultiAnswer::BlockIfAnyNonPublic) => {
                Decision::block(non_public(class), rule).with_ips(checked)
            }
            (Some(class), MultiAnswer::UsePublicOnly) => {
                let kept: Vec<ClassifiedIp> =
                    checked.iter().copied().filter(|c| acceptable(c)).collect();
                if kept.is_empty() {
                    Decision::block(non_public(class), rule).with_ips(checked)
                } else {
                    Decision::allow(rule, kept)
                }
            }
        };
        self.guard_self(decision.at(port))
    }

    /// Decides again, without DNS, a destination already connected to `dialled` (after a
    /// reload): the name meets the domain rules, and `dialled` stands in for its answers.
    /// A destination the embedder's decider allowed is not allowed by the rules alone: see
    /// [`Policy::recheck_asked`].
    pub fn recheck(&self, target: &Target<'_>, dialled: IpAddr) -> Decision {
        Policy::finish_recheck(self.decide(target, Access::Tunnel), dialled)
    }

    /// [`Policy::recheck`] for a destination the embedder's decider allowed: its consent
    /// stands for the open connection, but new deny rules and address checks still apply.
    pub fn recheck_asked(&self, target: &Target<'_>, dialled: IpAddr) -> Decision {
        Policy::finish_recheck(self.decide_asked(target, Access::Tunnel, true), dialled)
    }

    fn finish_recheck(step: Step<'_>, dialled: IpAddr) -> Decision {
        match step {
            Step::Done(decision) => decision,
            Step::Resolve(pending) => pending.resolved(&[dialled]),
        }
    }

    fn guard_self(&self, decision: Decision) -> Decision {
        let port = decision.port();
        if decision.is_allowed()
            && decision
                .ips()
                .iter()
                .any(|c| is_self(&self.self_addrs, c.ip, port))
        {
            let ips = decision.ips().to_vec();
            let rule = decision.rule().cloned();
            return Decision::block(Reason::SelfConnection, rule)
                .with_ips(ips)
                .at(port);
        }
        decision
    }

    /// Judges a Unix socket (`x-unix-socket`): the map alone decides, not the domain rules.
    /// `socket` is the identity of the file the caller opened at `path` and will connect to
    /// (`None` when nothing there can be connected to, which is denied).
    pub fn decide_unix(&self, path: &Path, socket: Option<FileId>, access: Access<'_>) -> Decision {
        if self.options.mode == Mode::Limited && !is_read_only(access) {
            return Decision::block(Reason::MethodNotAllowed, None);
        }
        let rule_for = |entry: Option<PathBuf>, action| {
            entry.map(|p| {
                Arc::new(RuleInfo {
                    pattern: p.display().to_string().into(),
                    action,
                    origin: Origin::Api,
                    managed: false,
                })
            })
        };
        match self.inner.unix.check(path, socket) {
            UnixVerdict::Allowed { entry } => {
                Decision::allow(rule_for(entry, Action::Allow), vec![])
            }
            UnixVerdict::Denied { entry } => {
                Decision::block(Reason::UnixSocketDenied, rule_for(entry, Action::Deny))
            }
        }
    }
}

/// What `localhost` and `*.localhost` stand for, without asking DNS.
const LOCALHOST: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

/// Limited mode lets only these through: reads over plain HTTP. A body would make a "read"
/// an upload channel, so a GET with one is not a read.
fn is_read_only(access: Access<'_>) -> bool {
    matches!(access, Access::Http { method, body, .. } if is_read(method, body))
}

/// A read: GET, HEAD or OPTIONS (exactly so spelled) without a body.
fn is_read(method: &str, body: bool) -> bool {
    !body && matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// Whether dialling `ip:port` would reach one of the proxy's own listeners (`own` is sorted
/// by port).
fn is_self(own: &[SocketAddr], ip: IpAddr, port: u16) -> bool {
    let local = ip.is_loopback() || ip.is_unspecified();
    let first = own.partition_point(|addr| addr.port() < port);
    own[first..]
        .iter()
        .take_while(|addr| addr.port() == port)
        .any(|addr| local || addr.ip() == ip)
}

#[cfg(test)]
mod tests;

//! The policy engine: pure, synchronous, and independent of sockets.
//!
//! Every destination passes, in order: host canonicalisation ([`host`]) → mode/method policy →
//! the compiled domain matcher ([`matcher`]) → IP classification ([`classifier`]) of the
//! literal or of every resolved address. [`Policy::decide`] runs the steps that need no
//! network; a caller that gets [`Decision::needs_dns`] resolves the name once, passes the
//! answers to [`Policy::check_resolved`], and dials only the addresses in [`Decision::ips`].
//!
//! A compiled [`Policy`] is immutable and cheap to clone, so a running proxy swaps whole
//! generations atomically and a connection keeps the generation it started with.

pub mod classifier;
pub mod host;
mod matcher;
pub mod pattern;
mod spec;
mod target;
mod unix;
mod warnings;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use classifier::{classify, IpClass};
pub use host::{Host, InvalidHost};
pub use matcher::{RuleInfo, RuleRef};
pub use pattern::{Pattern, PatternError};
pub use spec::{
    escape_controls, Action, Mode, MultiAnswer, Origin, RuleSpec, UnixAction, UnixSocketSpec,
};
pub use target::{Target, UrlScheme};
pub use unix::FileId;

use matcher::{AllowKind, Matcher};
use unix::{UnixSocketMap, UnixVerdict};

/// Allow or block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Block,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Block => "block",
        }
    }
}

/// The stable reason codes of SPEC section 6, used in headers, logs, metrics and `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Allowed,
    DenyRule,
    NotAllowed,
    MethodNotAllowed,
    InvalidHost,
    NonPublicIp(IpClass),
    DnsFailed,
    DnsNonPublic(IpClass),
    UnixSocketDenied,
    SelfConnection,
}

impl Reason {
    /// The reason code, e.g. `non-public-ip:loopback`. Static, so rendering it never allocates.
    pub fn code(self) -> &'static str {
        use IpClass::*;
        match self {
            Reason::Allowed => "allowed",
            Reason::DenyRule => "deny-rule",
            Reason::NotAllowed => "not-allowed",
            Reason::MethodNotAllowed => "method-not-allowed",
            Reason::InvalidHost => "invalid-host",
            Reason::DnsFailed => "dns-failed",
            Reason::UnixSocketDenied => "unix-socket-denied",
            Reason::SelfConnection => "self-connection",
            Reason::NonPublicIp(class) => match class {
                Public => "non-public-ip:public",
                Unspecified => "non-public-ip:unspecified",
                Loopback => "non-public-ip:loopback",
                Private => "non-public-ip:private",
                Cgnat => "non-public-ip:cgnat",
                LinkLocal => "non-public-ip:link-local",
                Ula => "non-public-ip:ula",
                Reserved => "non-public-ip:reserved",
                Documentation => "non-public-ip:documentation",
                Benchmarking => "non-public-ip:benchmarking",
                Multicast => "non-public-ip:multicast",
                Broadcast => "non-public-ip:broadcast",
                Teredo => "non-public-ip:teredo",
            },
            Reason::DnsNonPublic(class) => match class {
                Public => "dns-non-public:public",
                Unspecified => "dns-non-public:unspecified",
                Loopback => "dns-non-public:loopback",
                Private => "dns-non-public:private",
                Cgnat => "dns-non-public:cgnat",
                LinkLocal => "dns-non-public:link-local",
                Ula => "dns-non-public:ula",
                Reserved => "dns-non-public:reserved",
                Documentation => "dns-non-public:documentation",
                Benchmarking => "dns-non-public:benchmarking",
                Multicast => "dns-non-public:multicast",
                Broadcast => "dns-non-public:broadcast",
                Teredo => "dns-non-public:teredo",
            },
        }
    }

    /// The `x-proxy-error` family of a denial.
    pub fn category(self) -> &'static str {
        match self {
            Reason::DenyRule => "blocked-by-denylist",
            Reason::NotAllowed => "blocked-by-allowlist",
            Reason::MethodNotAllowed => "blocked-by-method-policy",
            _ => "blocked-by-policy",
        }
    }

    /// One sentence for people reading `check` output or a 403 body.
    pub fn explain(self) -> &'static str {
        match self {
            Reason::Allowed => "an allow rule matches and no deny rule does",
            Reason::DenyRule => "a deny rule matches (deny beats allow)",
            Reason::NotAllowed => "no allow rule matches",
            Reason::MethodNotAllowed => {
                "limited mode only allows GET, HEAD and OPTIONS over plain HTTP, and no request body"
            }
            Reason::InvalidHost => "the host is not a valid name or address",
            Reason::NonPublicIp(class) if class.is_local() => {
                "the address is not public; only an allow rule naming it exactly (an IP, a CIDR inside one local range, or `localhost`) or allow_local_binding opens it"
            }
            Reason::NonPublicIp(_) => {
                "the address is in a range the proxy never connects to, whatever the rules say"
            }
            Reason::DnsFailed => "the name could not be resolved",
            Reason::DnsNonPublic(_) => {
                "the name resolves to a non-public address (DNS-rebinding defence)"
            }
            Reason::UnixSocketDenied => "the Unix socket is not allowed by the unix_sockets map",
            Reason::SelfConnection => "the destination is the proxy itself",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An address with its class, as checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassifiedIp {
    pub ip: IpAddr,
    pub class: IpClass,
}

impl ClassifiedIp {
    pub fn new(ip: IpAddr) -> Self {
        ClassifiedIp {
            ip,
            class: classify(ip),
        }
    }
}

/// The outcome for one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
    /// The rule that decided, if one did.
    pub rule: Option<RuleRef>,
    /// For an allowed destination, exactly the addresses that may be dialled (each checked);
    /// for a blocked one, the addresses that were looked at.
    pub ips: Vec<ClassifiedIp>,
    needs_dns: bool,
}

impl Decision {
    fn block(reason: Reason, rule: Option<RuleRef>) -> Self {
        Decision {
            verdict: Verdict::Block,
            reason,
            rule,
            ips: Vec::new(),
            needs_dns: false,
        }
    }

    fn allow(rule: Option<RuleRef>, ips: Vec<ClassifiedIp>) -> Self {
        Decision {
            verdict: Verdict::Allow,
            reason: Reason::Allowed,
            rule,
            ips,
            needs_dns: false,
        }
    }

    /// A host that failed canonicalisation.
    pub fn invalid_host() -> Self {
        Decision::block(Reason::InvalidHost, None)
    }

    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// The domain policy allows the name; it must now be resolved (once) and the answers
    /// passed to [`Policy::check_resolved`] before anything is dialled.
    pub fn needs_dns(&self) -> bool {
        self.needs_dns
    }

    fn with_ips(mut self, ips: Vec<ClassifiedIp>) -> Self {
        self.ips = ips;
        self
    }
}

/// What the client is asking to do; only `limited` mode looks at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// A plain-HTTP request with this method; `body` if it carries a request body.
    Http { method: &'a str, body: bool },
    /// A CONNECT tunnel or SOCKS5 (TCP or UDP): opaque bytes.
    Tunnel,
}

/// Engine settings that are not rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyOptions {
    pub mode: Mode,
    pub allow_local_binding: bool,
    pub multi_answer: MultiAnswer,
    pub dangerously_allow_all_unix_sockets: bool,
}

/// A rule that could not be compiled, with where it was written. Shown on one line: the
/// pattern text is the file's, so its control characters are escaped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub origin: Origin,
    pub pattern: String,
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
        })
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

    pub fn options(&self) -> &PolicyOptions {
        &self.options
    }

    pub fn rules(&self) -> &[RuleRef] {
        self.inner.matcher.rules()
    }

    /// Findings for `validate` and `serve`'s start-up log: allow rules that a deny rule makes
    /// useless, that open loopback or a metadata address, that reach names anyone can
    /// register, and IPv6 patterns that look like they carry a port.
    pub fn warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    pub fn unix_sockets_allowed(&self) -> bool {
        self.inner.unix.any_allowed()
    }

    /// Everything that can be decided without the network. Allocates nothing for names.
    pub fn decide(&self, target: &Target<'_>, access: Access<'_>) -> Decision {
        if self.options.mode == Mode::Limited && !is_read_only(access) {
            return Decision::block(Reason::MethodNotAllowed, None);
        }
        match &target.host {
            Host::Ip(ip) => self.decide_ip(ip.to_canonical(), target.port),
            Host::Name(name) => self.decide_name(name, target.port),
        }
    }

    fn decide_ip(&self, ip: IpAddr, port: u16) -> Decision {
        let matcher = &self.inner.matcher;
        let m = matcher.match_ip(ip, port);
        if let Some(rule) = m.deny {
            return Decision::block(Reason::DenyRule, Some(matcher.rule(rule).clone()));
        }
        let Some((rule, kind)) = m.allow else {
            return Decision::block(Reason::NotAllowed, None);
        };
        let rule = matcher.rule(rule).clone();
        let checked = ClassifiedIp::new(ip);
        if !self.local_ok(checked.class, kind) {
            return Decision::block(Reason::NonPublicIp(checked.class), Some(rule))
                .with_ips(vec![checked]);
        }
        self.guard_self(Decision::allow(Some(rule), vec![checked]), port)
    }

    fn decide_name(&self, name: &str, port: u16) -> Decision {
        let matcher = &self.inner.matcher;
        let m = matcher.match_name(name, port);
        if let Some(rule) = m.deny {
            return Decision::block(Reason::DenyRule, Some(matcher.rule(rule).clone()));
        }
        let Some((rule, kind)) = m.allow else {
            return Decision::block(Reason::NotAllowed, None);
        };
        let rule = matcher.rule(rule).clone();
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
            return self.check_answers(Some(rule), port, &LOCALHOST, kind, Reason::NonPublicIp);
        }
        Decision {
            needs_dns: true,
            ..Decision::allow(Some(rule), Vec::new())
        }
    }

    /// Whether a non-public class may be reached under this allow.
    fn local_ok(&self, class: IpClass, kind: AllowKind) -> bool {
        class.is_public()
            || (class.is_local() && (self.options.allow_local_binding || kind == AllowKind::Exact))
    }

    /// Judges the answers for a name that [`Policy::decide`] allowed. The returned decision's
    /// `ips` are the only addresses the caller may dial; the name must not be resolved again.
    pub fn check_resolved(&self, decision: Decision, port: u16, answers: &[IpAddr]) -> Decision {
        debug_assert!(decision.needs_dns, "check_resolved needs an allowed name");
        // A resolved name never gets the exact-rule exception: only allow_local_binding
        // opens local answers, so a public name cannot be pointed at the LAN by its DNS.
        self.check_answers(
            decision.rule,
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
            .map(|ip| ClassifiedIp::new(ip.to_canonical()))
            .collect();
        if checked.is_empty() {
            return Decision::block(Reason::DnsFailed, rule);
        }
        let matcher = &self.inner.matcher;
        for c in &checked {
            if let Some(deny) = matcher.match_ip(c.ip, port).deny {
                return Decision::block(Reason::DenyRule, Some(matcher.rule(deny).clone()))
                    .with_ips(checked);
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
        self.guard_self(decision, port)
    }

    /// Decides again, without DNS, a destination already connected to `dialled` (after a
    /// reload): the name meets the domain rules, and `dialled` stands in for its answers.
    pub fn recheck(&self, target: &Target<'_>, dialled: IpAddr) -> Decision {
        let decision = self.decide(target, Access::Tunnel);
        if decision.needs_dns() {
            self.check_resolved(decision, target.port, &[dialled])
        } else {
            decision
        }
    }

    /// The decision for a name whose lookup failed or timed out: blocked, never retried by name.
    pub fn dns_failed(&self, decision: Decision) -> Decision {
        Decision::block(Reason::DnsFailed, decision.rule)
    }

    fn guard_self(&self, decision: Decision, port: u16) -> Decision {
        if decision.is_allowed()
            && decision
                .ips
                .iter()
                .any(|c| is_self(&self.self_addrs, c.ip, port))
        {
            let Decision { rule, ips, .. } = decision;
            return Decision::block(Reason::SelfConnection, rule).with_ips(ips);
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
    matches!(
        access,
        Access::Http { method, body: false } if matches!(method, "GET" | "HEAD" | "OPTIONS")
    )
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

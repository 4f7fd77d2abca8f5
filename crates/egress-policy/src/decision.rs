//! What the engine answers: a [`Decision`] with its [`Verdict`], stable [`Reason`] code, the
//! rule that decided and the addresses it checked.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::classifier::{classify, IpClass};
use crate::matcher::RuleRef;
use crate::public_ranges::{self, PublicRanges};

/// Allow or block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The destination may be reached.
    Allow,
    /// It may not.
    Block,
}

impl Verdict {
    /// `allow` or `block`, as logs and `check` print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Block => "block",
        }
    }
}

/// The stable reason codes of SPEC section 6, used in headers, logs, metrics and `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// An allow rule (or the embedder's decider) allows it and nothing refused it.
    Allowed,
    /// A deny rule matches; deny beats allow.
    DenyRule,
    /// No allow rule matches.
    NotAllowed,
    /// `limited` mode: only reads (over HTTPS only where it is inspected).
    MethodNotAllowed,
    /// The host is not a valid name or address.
    InvalidHost,
    /// The address literal is in a class the rule may not open.
    NonPublicIp(IpClass),
    /// The name could not be resolved.
    DnsFailed,
    /// The name resolves to a class it may not reach (DNS-rebinding defence).
    DnsNonPublic(IpClass),
    /// The Unix-socket map does not allow the socket.
    UnixSocketDenied,
    /// The destination is one of the proxy's own listeners.
    SelfConnection,
    /// `limited` mode: a tunnel is only allowed when HTTPS inspection can see its requests.
    MitmRequired,
    /// A request path that stays ambiguous after normalisation, to a host with http rules.
    InvalidRequest,
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
            Reason::MitmRequired => "mitm-required",
            Reason::InvalidRequest => "invalid-request",
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

    /// One sentence for people reading `check` output or a 403 body.
    pub fn explain(self) -> &'static str {
        match self {
            Reason::Allowed => "an allow rule matches and no deny rule does",
            Reason::DenyRule => "a deny rule matches (deny beats allow)",
            Reason::NotAllowed => "no allow rule matches",
            Reason::MethodNotAllowed => {
                "limited mode only allows GET, HEAD and OPTIONS, and no request body (over HTTPS only where it is inspected)"
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
            Reason::MitmRequired => {
                "limited mode only allows a tunnel that HTTPS inspection opens; this host is not inspected (mitm off or outside [mitm] domains)"
            }
            Reason::InvalidRequest => {
                "the request path is ambiguous (an encoded `/`, `\\`, `;` or `%`, a `\\` or `;`, NUL, a bad escape) and http rules apply to the host"
            }
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
    /// The address, canonical (a mapped IPv6 address is its IPv4 address).
    pub ip: IpAddr,
    /// Its class: `public` for an address in a declared public range.
    pub class: IpClass,
    /// The class a declared public range overrode (`documentation` for a declared
    /// `192.0.2.0/24`), so reports can say what "public" stands for.
    pub declared: Option<IpClass>,
}

impl ClassifiedIp {
    /// Classifies `ip` by the classifier's table alone.
    pub fn new(ip: IpAddr) -> Self {
        ClassifiedIp {
            ip,
            class: classify(ip),
            declared: None,
        }
    }

    /// Classifies `ip`, counting `ranges` as public. Only an address the table does not call
    /// public is looked up, and only when something is declared.
    #[inline]
    pub fn under(ip: IpAddr, ranges: &PublicRanges) -> Self {
        let class = classify(ip);
        if class.is_public() || ranges.is_empty() || !ranges.contains(ip, class) {
            return ClassifiedIp {
                ip,
                class,
                declared: None,
            };
        }
        ClassifiedIp {
            ip,
            class: IpClass::Public,
            declared: Some(class),
        }
    }
}

/// An address a denial refused that a declared public range could open: its class and the
/// classifier row (the range to declare). See [`Decision::declarable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Declarable {
    /// The refused address.
    pub ip: IpAddr,
    /// Its class.
    pub class: IpClass,
    /// The classifier row it is in; for an IPv6 spelling of an IPv4 address, the IPv4 row.
    pub range: IpNet,
}

/// Who made a decision: the rules, or the embedder's [decider](crate#the-decider-hook) for a
/// destination no rule matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DecidedBy {
    /// The compiled rules and the engine's own checks.
    #[default]
    Policy,
    /// The embedder was asked about a destination no rule matched, and answered (or did not
    /// answer in time, which denies).
    Decider,
}

impl DecidedBy {
    /// `policy` or `decider`, as the audit line's `decided_by` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Policy => "policy",
            DecidedBy::Decider => "decider",
        }
    }
}

/// The outcome for one destination. Only the engine makes one, so an allowed decision always
/// went through every check; its fields are read through getters.
///
/// ```compile_fail,E0451
/// use egress_policy::{Decision, Reason, Verdict};
/// // Not even a deny can be written by hand, let alone an allow.
/// let forged = Decision { verdict: Verdict::Allow, reason: Reason::Allowed, rule: None, ips: vec![], port: 443 };
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    verdict: Verdict,
    reason: Reason,
    rule: Option<RuleRef>,
    ips: Vec<ClassifiedIp>,
    /// The destination port the addresses are dialled on (0 for a Unix socket).
    port: u16,
    by: DecidedBy,
    /// An allowed tunnel whose requests must be inspected.
    intercept: bool,
}

impl Decision {
    pub(crate) fn block(reason: Reason, rule: Option<RuleRef>) -> Self {
        Decision {
            verdict: Verdict::Block,
            reason,
            rule,
            ips: Vec::new(),
            port: 0,
            by: DecidedBy::Policy,
            intercept: false,
        }
    }

    pub(crate) fn allow(rule: Option<RuleRef>, ips: Vec<ClassifiedIp>) -> Self {
        Decision {
            verdict: Verdict::Allow,
            reason: Reason::Allowed,
            rule,
            ips,
            port: 0,
            by: DecidedBy::Policy,
            intercept: false,
        }
    }

    /// A host that failed canonicalisation: never matched, never resolved.
    pub fn invalid_host() -> Self {
        Decision::block(Reason::InvalidHost, None)
    }

    pub(crate) fn with_ips(mut self, ips: Vec<ClassifiedIp>) -> Self {
        self.ips = ips;
        self
    }

    pub(crate) fn at(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub(crate) fn by(mut self, by: DecidedBy) -> Self {
        self.by = by;
        self
    }

    pub(crate) fn intercepting(mut self, on: bool) -> Self {
        self.intercept = on;
        self
    }

    /// An allowed tunnel that must go through HTTPS inspection rather than be relayed as
    /// opaque bytes: interception is on, the host is in its scope, and `limited` mode or an
    /// http rule needs its requests seen. Always false for a blocked decision.
    pub fn intercept(&self) -> bool {
        self.intercept && self.is_allowed()
    }

    /// The decision for a listener that cannot inspect (SOCKS5, a tunnel with no engine): an
    /// allowed tunnel that must be intercepted becomes a `mitm-required` refusal, so no
    /// request the policy wants to see passes as opaque bytes.
    pub fn uninspected(self) -> Decision {
        if !self.intercept() {
            return self;
        }
        Decision::block(Reason::MitmRequired, self.rule)
            .with_ips(self.ips)
            .at(self.port)
            .by(self.by)
    }

    /// Whether the destination may be reached.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// Allow or block.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Why.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The rule that decided, if one did.
    pub fn rule(&self) -> Option<&RuleRef> {
        self.rule.as_ref()
    }

    /// For an allowed destination, exactly the addresses that may be dialled (each checked;
    /// none for a name left to an upstream proxy, see [`crate::Unresolved`]); for a blocked
    /// one, the addresses that were looked at.
    pub fn ips(&self) -> &[ClassifiedIp] {
        &self.ips
    }

    /// The destination port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The rules, or the embedder's decider.
    pub fn decided_by(&self) -> DecidedBy {
        self.by
    }

    /// The same decision showing only the addresses `keep` accepts (for a report that must
    /// not reveal some answers). The verdict stays: a blocked decision is never allowed by
    /// it, and an allowed one can only lose addresses.
    pub fn retain_ips(&mut self, keep: impl FnMut(&ClassifiedIp) -> bool) {
        self.ips.retain(keep);
    }

    /// For a `non-public-ip:<class>` or `dns-non-public:<class>` denial whose address a
    /// declared public range could open, that address and the range to declare: what a hint
    /// tells a user whose network really uses a special-purpose range. `None` for every other
    /// decision, for classes no declaration can open (loopback, link-local, …), when another
    /// answer is of such a class (no declaration would let the name through), and when another
    /// answer is really public: a resolver that answers from a special-purpose range answers
    /// every name from it, while a public answer next to a private one is what DNS rebinding
    /// looks like, and no one should be told to open the LAN for it.
    pub fn declarable(&self) -> Option<Declarable> {
        let class = match self.reason {
            Reason::NonPublicIp(class) | Reason::DnsNonPublic(class) => class,
            _ => return None,
        };
        let rules_it_out = |c: &ClassifiedIp| {
            if c.class.is_public() {
                c.declared.is_none()
            } else {
                public_ranges::declarable(c.ip).is_none()
            }
        };
        if self.ips.iter().any(rules_it_out) {
            return None;
        }
        let ip = self.ips.iter().find(|c| c.class == class)?.ip;
        let (range, class) = public_ranges::declarable(ip)?;
        Some(Declarable { ip, class, range })
    }
}

/// What the client is asking to do: `limited` mode, the http rules and the inspection scope
/// look at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// A plain-HTTP request.
    Http {
        /// The request method, as sent (methods are case-sensitive).
        method: &'a str,
        /// The request path, without the query string.
        path: &'a str,
        /// Whether the request carries a body.
        body: bool,
    },
    /// A CONNECT tunnel or SOCKS5 (TCP or UDP): opaque bytes.
    Tunnel,
}

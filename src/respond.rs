//! The one table from a refusal to what the client sees: an HTTP status with `x-proxy-error`,
//! `x-proxy-reason` and a one-line body (or, when asked, one JSON object), and an RFC 1928
//! reply code, side by side. Every listener refuses through [`Refusal`], so the same cause
//! always gets the same answer on both edges, and the policy engine never names a wire value.
//!
//! The same words serve the operator ([`describe`], `run`'s stderr line): a denial's
//! explanation, the rule that decided and a [`hint`]. Only the operator is told where a rule
//! was written; a body never shows the client a policy file's path.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;

use hyper::StatusCode;
use serde::Serialize;

use crate::dns::DnsError;
use crate::gate::Denied;
use crate::net::dial::DialError;
use crate::net::owner::OwnerError;
use crate::net::route::OpenError;
use crate::net::upstream::{Answer, UpstreamError};
use crate::policy::{Decision, Origin, Reason, RuleInfo};
use crate::socks5_codec::{Command, RequestError};

mod hint;
pub use hint::public_range_hint;

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
pub enum Refusal<'a> {
    /// The policy (or DNS) said no. `dest` is what the client asked for, as canonicalised.
    #[error("blocked {dest}: {}", .denied.decision.reason())]
    Denied { dest: &'a str, denied: &'a Denied },
    /// The destination was allowed but could not be reached.
    #[error("cannot connect to {dest}: {error}")]
    Dial { dest: &'a str, error: &'a DialError },
    /// The destination was allowed, but the upstream proxy did not connect to it.
    #[error("cannot connect to {dest}: {error}")]
    UpstreamProxy {
        dest: &'a str,
        error: &'a UpstreamError,
    },
    /// The HTTP request itself is unusable (malformed target, wrong form, bad header).
    #[error("{0}")]
    BadRequest(&'static str),
    /// The upstream answered `101 Switching Protocols` to a request that asked for no upgrade.
    #[error("upstream {dest} answered 101 Switching Protocols to a request without Upgrade (the proxy does not forward Upgrade)")]
    UnrequestedUpgrade { dest: &'a str },
    /// The origin's certificate did not verify (or its TLS handshake failed) inside an
    /// intercepted tunnel; `error` carries the verifier's reason.
    #[error("TLS to {dest} failed: {error}")]
    OriginTls { dest: &'a str, error: &'a io::Error },
    /// A request inside an intercepted tunnel named another host than the tunnel's: the
    /// pinned origin must never be asked for a name the policy did not decide (fronting).
    #[error("this TLS session is for {dest}; a request for another host ({asked}) needs its own connection")]
    Misdirected { dest: &'a str, asked: &'a str },
    /// The upstream broke the HTTP exchange after we connected.
    #[error("upstream {dest} failed: {error}")]
    Upstream {
        dest: &'a str,
        error: &'a hyper::Error,
    },
    /// SOCKS5 BIND, UDP ASSOCIATE while it is disabled, or a command RFC 1928 does not define.
    #[error("unsupported command {0:?}")]
    Command(Command),
    /// The SOCKS5 request was readable up to a field we cannot interpret.
    #[error("{0}")]
    Request(&'a RequestError),
    /// `max_connections` or `max_udp_associations` reached.
    #[error("too many connections, try again")]
    Busy,
    /// A local resource failed, e.g. binding the UDP relay socket.
    #[error("local error: {0}")]
    Local(&'a io::Error),
    /// The owner of a loopback client's control connection could not be told, so no
    /// datagram could be attributed to it.
    #[error("cannot tell who owns the client's connection: {0}")]
    Owner(&'a OwnerError),
    /// The listener takes only clients with its session credentials (`run`), and the request
    /// did not carry them. Decided before the policy sees the request.
    #[error("proxy authentication required: this proxy serves one `egress-proxy run`, whose proxy variables carry its credentials")]
    ProxyAuth,
}

impl<'a> Refusal<'a> {
    /// The refusal for a connection that could not be made along its route.
    pub fn open(dest: &'a str, error: &'a OpenError) -> Refusal<'a> {
        match error {
            OpenError::Dial(error) => Refusal::Dial { dest, error },
            OpenError::Upstream(error) => Refusal::UpstreamProxy { dest, error },
        }
    }
}

/// The reason code of an upstream failure, also its `x-proxy-error`.
pub fn upstream_code(error: &UpstreamError) -> &'static str {
    match error {
        UpstreamError::Unreachable { .. }
        | UpstreamError::Loop { .. }
        | UpstreamError::Timeout { .. } => "upstream-unreachable",
        UpstreamError::Tls { .. } => UPSTREAM_TLS,
        UpstreamError::Auth { .. } => "upstream-auth",
        UpstreamError::Refused { .. } | UpstreamError::Broken { .. } => "upstream-refused",
    }
}

/// What the HTTP listener answers.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: StatusCode,
    /// `x-proxy-error`.
    pub error: &'static str,
    /// `x-proxy-reason`, for a policy decision.
    pub reason: Option<&'static str>,
    /// `Proxy-Authenticate`, for a 407.
    pub challenge: Option<&'static str>,
    /// One line a person can act on.
    pub body: String,
    /// The same answer as one JSON object, for a client that asked with
    /// `Accept: application/json`.
    pub json: String,
}

/// Who reads a denial's details: the operator (stderr, logs) may see where a rule was written;
/// the client (a response body) is only told what kind of source it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    Operator,
    Client,
}

/// What the reader can do about a denial of `dest` (as canonicalised, `host:port`), if the
/// reason suggests anything. One arm per reason: a new hint is one line here, and it reaches
/// `run`'s stderr line, the 403 body and its JSON form alike. A hint never names a file.
pub fn hint(dest: &str, decision: &Decision, dns: Option<&DnsError>) -> Option<String> {
    match decision.reason() {
        Reason::NotAllowed => Some(format!("add --allow {dest}")),
        Reason::DnsFailed => dns.map(|error| format!("dns: {error}")),
        Reason::NonPublicIp(_) | Reason::DnsNonPublic(_) => public_range_hint(decision),
        _ => None,
    }
}

/// `rule deny `evil.test` (policy.toml:3:1)`: the rule that decided and where it was written,
/// as far as `audience` may know.
pub fn rule_text(rule: &RuleInfo, audience: Audience) -> String {
    format!(
        "rule {} `{}` ({})",
        rule.action.as_str(),
        rule.pattern,
        origin(rule, audience)
    )
}

/// Where `rule` was written. A file's path is the operator's: the client only learns that it
/// came from a file (and whether that file is the administrator's).
fn origin(rule: &RuleInfo, audience: Audience) -> Cow<'_, str> {
    match (&rule.origin, audience) {
        (Origin::File { .. }, Audience::Client) if rule.managed => "the requirements".into(),
        (Origin::File { .. }, Audience::Client) => "a policy file".into(),
        (origin, _) => origin.to_string().into(),
    }
}

/// `dest — reason (explanation; rule …; hint)`: a denial in one line for the operator, as
/// `run` prints it when a destination is first blocked.
pub fn describe(dest: &str, decision: &Decision, dns: Option<&DnsError>) -> String {
    let reason = decision.reason();
    let mut text = format!("{dest} — {reason} ({}", reason.explain());
    if let Some(rule) = decision.rule() {
        let _ = write!(text, "; {}", rule_text(rule, Audience::Operator));
    }
    if let Some(hint) = hint(dest, decision, dns) {
        let _ = write!(text, "; {hint}");
    }
    text.push(')');
    text
}

/// The JSON form of an answer, with Codex's field names where they mean the same
/// (`status`, `host`, `port`, `reason`, `decision`, `source`, `message`).
#[derive(Serialize)]
struct JsonAnswer<'a> {
    /// `blocked` for a policy decision, `error` for every other refusal.
    status: &'static str,
    /// `x-proxy-error`.
    error: &'static str,
    host: Option<&'a str>,
    port: Option<u16>,
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<&'static str>,
    /// `policy`, or `decider` when the embedder's decider answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'static str>,
    /// The pattern of the rule that decided.
    rule: Option<&'a str>,
    hint: Option<String>,
    /// The text body's line, without its prefix.
    message: &'a str,
}

/// `host:port` as [`crate::audit::Dest`] and the SOCKS5 listener render it, taken apart for the
/// JSON form (`[v6]:port` loses its brackets); anything else is all host.
fn host_port(dest: &str) -> (&str, Option<u16>) {
    let Some((host, port)) = dest.rsplit_once(':') else {
        return (dest, None);
    };
    let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    match (port.parse::<u16>(), bracketed) {
        (Ok(port), Some(v6)) => (v6, Some(port)),
        (Ok(port), None) if !host.contains(':') => (host, Some(port)),
        _ => (dest, None),
    }
}

/// The `x-proxy-error` family of a denial.
pub fn category(reason: Reason) -> &'static str {
    match reason {
        Reason::DenyRule => "blocked-by-denylist",
        Reason::NotAllowed => "blocked-by-allowlist",
        Reason::MethodNotAllowed => "blocked-by-method-policy",
        // Codex's proxy names it so.
        Reason::MitmRequired => "blocked-by-mitm-required",
        _ => "blocked-by-policy",
    }
}

/// `x-proxy-error` and `x-proxy-reason` of a request without the session credentials.
pub const PROXY_AUTH: &str = "proxy-auth-required";
/// The `Proxy-Authenticate` challenge of that 407: Basic is what every client sends from a
/// proxy URL's `user:password@`.
pub const CHALLENGE: &str = "Basic realm=\"egress-proxy\"";

/// TLS to the upstream proxy or, inside an intercepted tunnel, to the origin failed.
const UPSTREAM_TLS: &str = "upstream-tls";
/// `x-proxy-error` and `x-proxy-reason` of a fronting attempt inside an intercepted tunnel.
const MISDIRECTED: &str = "misdirected-request";

/// The HTTP answer to `refusal`.
pub fn http(refusal: &Refusal<'_>) -> HttpAnswer {
    let (status, error, reason) = match refusal {
        Refusal::Denied { dest, denied } => return denial(dest, denied),
        Refusal::Dial { error, .. } => match error {
            DialError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "connect-timeout", None),
            DialError::Refused(_) => (StatusCode::BAD_GATEWAY, "connect-refused", None),
            DialError::Unreachable { .. } => (StatusCode::BAD_GATEWAY, "connect-failed", None),
        },
        Refusal::UpstreamProxy { error, .. } => {
            let code = upstream_code(error);
            (StatusCode::BAD_GATEWAY, code, Some(code))
        }
        Refusal::BadRequest(_) | Refusal::Command(_) | Refusal::Request(_) => {
            (StatusCode::BAD_REQUEST, "bad-request", None)
        }
        Refusal::UnrequestedUpgrade { .. } | Refusal::Upstream { .. } => {
            (StatusCode::BAD_GATEWAY, "upstream-failed", None)
        }
        Refusal::OriginTls { .. } => (StatusCode::BAD_GATEWAY, UPSTREAM_TLS, Some(UPSTREAM_TLS)),
        Refusal::Misdirected { .. } => (
            StatusCode::MISDIRECTED_REQUEST,
            MISDIRECTED,
            Some(MISDIRECTED),
        ),
        Refusal::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy", None),
        Refusal::Local(_) | Refusal::Owner(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal", None)
        }
        Refusal::ProxyAuth => (
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            PROXY_AUTH,
            Some(PROXY_AUTH),
        ),
    };
    let dest = match refusal {
        Refusal::Dial { dest, .. }
        | Refusal::UpstreamProxy { dest, .. }
        | Refusal::UnrequestedUpgrade { dest }
        | Refusal::Upstream { dest, .. }
        | Refusal::OriginTls { dest, .. }
        | Refusal::Misdirected { dest, .. } => Some(host_port(dest)),
        _ => None,
    };
    // Every other refusal's body is its one-line description.
    let message = refusal.to_string();
    let json = JsonAnswer {
        status: "error",
        error,
        host: dest.map(|(host, _)| host),
        port: dest.and_then(|(_, port)| port),
        reason,
        decision: None,
        source: None,
        rule: None,
        hint: None,
        message: &message,
    };
    answer(status, error, reason, &message, &json)
}

/// The answer to a policy (or DNS) denial of `dest`: a person reads the reason, its
/// explanation, the rule (without a file's path) and the hint.
fn denial(dest: &str, denied: &Denied) -> HttpAnswer {
    let d = &denied.decision;
    let reason = d.reason();
    let status = match reason {
        Reason::InvalidHost | Reason::InvalidRequest => StatusCode::BAD_REQUEST,
        Reason::DnsFailed => StatusCode::BAD_GATEWAY,
        _ => StatusCode::FORBIDDEN,
    };
    let mut message = format!("blocked {dest}: {reason} ({})", reason.explain());
    match d.rule() {
        Some(rule) => {
            let _ = write!(message, "; {}", rule_text(rule, Audience::Client));
        }
        None => message.push_str("; rule: none"),
    }
    let hint = hint(dest, d, denied.dns.as_ref());
    if let Some(hint) = &hint {
        let _ = write!(message, "; {hint}");
    }
    let (host, port) = host_port(dest);
    let json = JsonAnswer {
        status: "blocked",
        error: category(reason),
        host: Some(host),
        port,
        reason: Some(reason.code()),
        decision: Some("deny"),
        source: Some(d.decided_by().as_str()),
        rule: d.rule().map(|r| &*r.pattern),
        hint,
        message: &message,
    };
    answer(
        status,
        category(reason),
        Some(reason.code()),
        &message,
        &json,
    )
}

fn answer(
    status: StatusCode,
    error: &'static str,
    reason: Option<&'static str>,
    message: &str,
    json: &JsonAnswer<'_>,
) -> HttpAnswer {
    let mut json = serde_json::to_string(json).unwrap_or_else(|_| String::from("{}"));
    json.push('\n');
    let challenge = (status == StatusCode::PROXY_AUTHENTICATION_REQUIRED).then_some(CHALLENGE);
    HttpAnswer {
        status,
        error,
        reason,
        challenge,
        body: format!("egress-proxy: {message}\n"),
        json,
    }
}

/// The raw answer for an HTTP connection that arrives when every slot is taken: written
/// before hyper sees the socket, so a flood cannot queue work behind it. The same answer as
/// `http(&Refusal::Busy)` (a test holds them together).
pub const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nx-proxy-error: busy\r\ncontent-type: text/plain\r\ncontent-length: 46\r\nconnection: close\r\n\r\negress-proxy: too many connections, try again\n";

/// REP values of RFC 1928 section 6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowed = 0x02,
    NetworkUnreachable = 0x03,
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    TtlExpired = 0x06,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

/// The SOCKS5 reply code for `refusal`.
pub fn socks(refusal: &Refusal<'_>) -> Code {
    match refusal {
        Refusal::Denied { denied, .. } => match denied.decision.reason() {
            Reason::DnsFailed => Code::HostUnreachable,
            _ => Code::NotAllowed,
        },
        Refusal::Dial { error, .. } => match error {
            DialError::Refused(_) => Code::ConnectionRefused,
            DialError::Timeout(_) => Code::TtlExpired,
            DialError::Unreachable { source, .. } => match source.kind() {
                io::ErrorKind::NetworkUnreachable => Code::NetworkUnreachable,
                io::ErrorKind::HostUnreachable => Code::HostUnreachable,
                io::ErrorKind::TimedOut => Code::TtlExpired,
                _ => Code::GeneralFailure,
            },
        },
        Refusal::UpstreamProxy { error, .. } => match error {
            // The upstream's own reply code says what it found; an HTTP upstream's status is
            // translated where SOCKS5 has a word for it.
            UpstreamError::Refused {
                answer: Answer::Socks(code @ 0x01..=0x08),
                ..
            } => socks_code(*code),
            UpstreamError::Refused {
                answer: Answer::Http(403),
                ..
            } => Code::NotAllowed,
            UpstreamError::Refused {
                answer: Answer::Http(502..=504),
                ..
            } => Code::HostUnreachable,
            _ => Code::GeneralFailure,
        },
        Refusal::Command(_) => Code::CommandNotSupported,
        Refusal::Request(RequestError::AddressType(_)) => Code::AddressTypeNotSupported,
        Refusal::Request(RequestError::Version(_) | RequestError::Incomplete) => {
            Code::GeneralFailure
        }
        Refusal::BadRequest(_)
        | Refusal::UnrequestedUpgrade { .. }
        | Refusal::Upstream { .. }
        | Refusal::OriginTls { .. }
        | Refusal::Misdirected { .. }
        | Refusal::Busy
        | Refusal::Local(_)
        | Refusal::Owner(_) => Code::GeneralFailure,
        // SOCKS5 refuses missing credentials in the method negotiation (0xFF) or with the
        // RFC 1929 failure status, before any request has a reply; this row is never sent.
        Refusal::ProxyAuth => Code::NotAllowed,
    }
}

/// The [`Code`] with RFC 1928 value `code` (1-8).
fn socks_code(code: u8) -> Code {
    match code {
        0x02 => Code::NotAllowed,
        0x03 => Code::NetworkUnreachable,
        0x04 => Code::HostUnreachable,
        0x05 => Code::ConnectionRefused,
        0x06 => Code::TtlExpired,
        0x07 => Code::CommandNotSupported,
        0x08 => Code::AddressTypeNotSupported,
        _ => Code::GeneralFailure,
    }
}

#[cfg(test)]
mod tests;

//! The one table from a refusal to what the client sees: an HTTP status with `x-proxy-error`,
//! `x-proxy-reason` and a one-line body, and an RFC 1928 reply code, side by side. Every
//! listener refuses through [`Refusal`], so the same cause always gets the same answer on
//! both edges, and the policy engine never names a wire value.

use std::fmt::Write as _;
use std::io;

use hyper::StatusCode;

use crate::gate::Denied;
use crate::net::dial::DialError;
use crate::net::owner::OwnerError;
use crate::net::route::OpenError;
use crate::net::upstream::{Answer, UpstreamError};
use crate::policy::Reason;
use crate::socks5_codec::{Command, RequestError};

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
        UpstreamError::Tls { .. } => "upstream-tls",
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
    /// One line a person can act on.
    pub body: String,
}

/// The `x-proxy-error` family of a denial.
pub fn category(reason: Reason) -> &'static str {
    match reason {
        Reason::DenyRule => "blocked-by-denylist",
        Reason::NotAllowed => "blocked-by-allowlist",
        Reason::MethodNotAllowed => "blocked-by-method-policy",
        _ => "blocked-by-policy",
    }
}

/// The HTTP answer to `refusal`.
pub fn http(refusal: &Refusal<'_>) -> HttpAnswer {
    let mut body = String::from("egress-proxy: ");
    let (status, error) = match refusal {
        Refusal::Denied { dest, denied } => {
            let d = &denied.decision;
            let reason = d.reason();
            let status = match reason {
                Reason::InvalidHost => StatusCode::BAD_REQUEST,
                Reason::DnsFailed => StatusCode::BAD_GATEWAY,
                _ => StatusCode::FORBIDDEN,
            };
            let _ = write!(body, "blocked {dest}: {reason} ({})", reason.explain());
            if let Some(dns) = &denied.dns {
                let _ = write!(body, "; dns: {dns}");
            }
            match d.rule() {
                Some(rule) => {
                    let action = rule.action.as_str();
                    let _ = write!(body, "; rule {action} `{}` ({})", rule.pattern, rule.origin);
                }
                None => body.push_str("; rule: none"),
            }
            return answer(status, category(reason), Some(reason.code()), body);
        }
        Refusal::Dial { error, .. } => {
            let (status, code) = match error {
                DialError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "connect-timeout"),
                DialError::Refused(_) => (StatusCode::BAD_GATEWAY, "connect-refused"),
                DialError::Unreachable { .. } => (StatusCode::BAD_GATEWAY, "connect-failed"),
            };
            (status, code)
        }
        Refusal::UpstreamProxy { error, .. } => {
            let code = upstream_code(error);
            let _ = write!(body, "{refusal}");
            return answer(StatusCode::BAD_GATEWAY, code, Some(code), body);
        }
        Refusal::BadRequest(_) | Refusal::Command(_) | Refusal::Request(_) => {
            (StatusCode::BAD_REQUEST, "bad-request")
        }
        Refusal::UnrequestedUpgrade { .. } | Refusal::Upstream { .. } => {
            (StatusCode::BAD_GATEWAY, "upstream-failed")
        }
        Refusal::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        Refusal::Local(_) | Refusal::Owner(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    // Every other refusal's body is its one-line description.
    let _ = write!(body, "{refusal}");
    answer(status, error, None, body)
}

fn answer(
    status: StatusCode,
    error: &'static str,
    reason: Option<&'static str>,
    mut body: String,
) -> HttpAnswer {
    body.push('\n');
    HttpAnswer {
        status,
        error,
        reason,
        body,
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
        | Refusal::Busy
        | Refusal::Local(_)
        | Refusal::Owner(_) => Code::GeneralFailure,
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

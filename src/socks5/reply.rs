//! The one table that turns a failure at the SOCKS5 edge into the RFC 1928 reply code the
//! client sees. Every rejection goes through [`code`], so the same cause always gets the same
//! answer.

use std::io;

use super::codec::{Command, RequestError};
use crate::net::dial::DialError;
use crate::net::owner::OwnerError;
use crate::net::Denied;
use crate::policy::Reason;

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

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
pub enum Failure<'a> {
    /// The policy blocked the destination, or its name could not be resolved.
    #[error("blocked: {}", .0.decision.reason)]
    Denied(&'a Denied),
    /// The destination was allowed but no connection could be made.
    #[error("{0}")]
    Dial(&'a DialError),
    /// BIND, UDP ASSOCIATE while it is disabled, or a command RFC 1928 does not define.
    #[error("unsupported command {0:?}")]
    Command(Command),
    /// The request was readable up to a field we cannot interpret.
    #[error("{0}")]
    Request(&'a RequestError),
    /// `max_connections` or `max_udp_associations` reached.
    #[error("over the connection or association limit")]
    Busy,
    /// A local resource failed, e.g. binding the UDP relay socket.
    #[error("local error: {0}")]
    Local(&'a io::Error),
    /// The owner of a loopback client's control connection could not be told, so no
    /// datagram could be attributed to it.
    #[error("cannot tell who owns the client's connection: {0}")]
    Owner(&'a OwnerError),
}

pub fn code(failure: &Failure<'_>) -> Code {
    match failure {
        Failure::Denied(denied) => match denied.decision.reason {
            Reason::DnsFailed => Code::HostUnreachable,
            _ => Code::NotAllowed,
        },
        Failure::Dial(DialError::Refused(_)) => Code::ConnectionRefused,
        Failure::Dial(DialError::Timeout(_)) => Code::TtlExpired,
        Failure::Dial(DialError::Unreachable { source, .. }) => match source.kind() {
            io::ErrorKind::NetworkUnreachable => Code::NetworkUnreachable,
            io::ErrorKind::HostUnreachable => Code::HostUnreachable,
            io::ErrorKind::TimedOut => Code::TtlExpired,
            _ => Code::GeneralFailure,
        },
        Failure::Dial(DialError::NoAddress) => Code::GeneralFailure,
        Failure::Command(_) => Code::CommandNotSupported,
        Failure::Request(RequestError::AddressType(_)) => Code::AddressTypeNotSupported,
        Failure::Request(RequestError::Version(_) | RequestError::Incomplete) => {
            Code::GeneralFailure
        }
        Failure::Busy | Failure::Local(_) | Failure::Owner(_) => Code::GeneralFailure,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::net::dial::Peer;
    use crate::policy::{Decision, IpClass};

    fn denied(reason: Reason) -> Denied {
        // Only the reason matters to the table; build decisions the way the policy does.
        let mut decision = Decision::invalid_host();
        decision.reason = reason;
        Denied {
            decision,
            dns: None,
        }
    }

    #[test]
    fn every_policy_denial_is_not_allowed_except_dns_failure() {
        for reason in [
            Reason::DenyRule,
            Reason::NotAllowed,
            Reason::MethodNotAllowed,
            Reason::InvalidHost,
            Reason::NonPublicIp(IpClass::Private),
            Reason::DnsNonPublic(IpClass::Loopback),
            Reason::SelfConnection,
        ] {
            assert_eq!(
                code(&Failure::Denied(&denied(reason))),
                Code::NotAllowed,
                "{reason}"
            );
        }
        assert_eq!(
            code(&Failure::Denied(&denied(Reason::DnsFailed))),
            Code::HostUnreachable
        );
    }

    #[test]
    fn dial_failures() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let unreachable = |kind: io::ErrorKind| DialError::Unreachable {
            peer: Peer::Tcp(addr),
            source: kind.into(),
        };
        let cases = [
            (DialError::Refused(Peer::Tcp(addr)), Code::ConnectionRefused),
            (DialError::Timeout(Duration::from_secs(1)), Code::TtlExpired),
            (DialError::NoAddress, Code::GeneralFailure),
            (
                unreachable(io::ErrorKind::NetworkUnreachable),
                Code::NetworkUnreachable,
            ),
            (
                unreachable(io::ErrorKind::HostUnreachable),
                Code::HostUnreachable,
            ),
            (unreachable(io::ErrorKind::TimedOut), Code::TtlExpired),
            (
                unreachable(io::ErrorKind::PermissionDenied),
                Code::GeneralFailure,
            ),
        ];
        for (error, want) in cases {
            assert_eq!(code(&Failure::Dial(&error)), want, "{error}");
        }
    }

    #[test]
    fn protocol_failures() {
        for command in [Command::Bind, Command::UdpAssociate, Command::Other(9)] {
            assert_eq!(code(&Failure::Command(command)), Code::CommandNotSupported);
        }
        let atyp = RequestError::AddressType(5);
        assert_eq!(
            code(&Failure::Request(&atyp)),
            Code::AddressTypeNotSupported
        );
        assert_eq!(
            code(&Failure::Request(&RequestError::Version(4))),
            Code::GeneralFailure
        );
        assert_eq!(code(&Failure::Busy), Code::GeneralFailure);
        let unknown = OwnerError::NotFound("127.0.0.1:9".parse().unwrap());
        assert_eq!(code(&Failure::Owner(&unknown)), Code::GeneralFailure);
        let err = io::Error::from(io::ErrorKind::AddrInUse);
        assert_eq!(code(&Failure::Local(&err)), Code::GeneralFailure);
        assert_eq!(Code::AddressTypeNotSupported as u8, 0x08);
    }
}

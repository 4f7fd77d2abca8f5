//! The SOCKS5 reply codes of failures that are not policy denials.

use std::net::SocketAddr;
use std::time::Duration;

use super::super::*;
use crate::net::dial::Peer;

#[test]
fn socks_dial_failures() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let unreachable = |kind: io::ErrorKind| DialError::Unreachable {
        peer: Peer::Tcp(addr),
        source: kind.into(),
    };
    let cases = [
        (DialError::Refused(Peer::Tcp(addr)), Code::ConnectionRefused),
        (DialError::Timeout(Duration::from_secs(1)), Code::TtlExpired),
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
        let refusal = Refusal::Dial {
            dest: "a:1",
            error: &error,
        };
        assert_eq!(socks(&refusal), want, "{error}");
    }
}

#[test]
fn socks_protocol_failures() {
    for command in [Command::Bind, Command::UdpAssociate, Command::Other(9)] {
        assert_eq!(socks(&Refusal::Command(command)), Code::CommandNotSupported);
    }
    let atyp = RequestError::AddressType(5);
    assert_eq!(
        socks(&Refusal::Request(&atyp)),
        Code::AddressTypeNotSupported
    );
    assert_eq!(
        socks(&Refusal::Request(&RequestError::Version(4))),
        Code::GeneralFailure
    );
    assert_eq!(socks(&Refusal::Busy), Code::GeneralFailure);
    let unknown = OwnerError::NotFound("127.0.0.1:9".parse().unwrap());
    assert_eq!(socks(&Refusal::Owner(&unknown)), Code::GeneralFailure);
    let err = io::Error::from(io::ErrorKind::AddrInUse);
    assert_eq!(socks(&Refusal::Local(&err)), Code::GeneralFailure);
    assert_eq!(Code::AddressTypeNotSupported as u8, 0x08);
}

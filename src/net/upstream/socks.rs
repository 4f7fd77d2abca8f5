//! SOCKS5 CONNECT to a `socks5://` or `socks5h://` upstream (tokio-socks), with RFC 1929
//! user/password authentication when the URL has credentials.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_socks::tcp::Socks5Stream;
use tokio_socks::Error as SocksError;

use super::{Answer, UpstreamError};

/// What the SOCKS5 request names.
#[derive(Clone, Copy, Debug)]
pub(super) enum Ask<'a> {
    Addr(SocketAddr),
    Name(&'a str, u16),
}

/// The CONNECT handshake on `tcp`; the stream is the tunnel when it succeeds.
pub(super) async fn connect(
    tcp: TcpStream,
    ask: Ask<'_>,
    credentials: Option<(&str, &str)>,
) -> Result<TcpStream, SocksError> {
    let stream = match (ask, credentials) {
        (Ask::Addr(addr), None) => Socks5Stream::connect_with_socket(tcp, addr).await?,
        (Ask::Name(name, port), None) => {
            Socks5Stream::connect_with_socket(tcp, (name, port)).await?
        }
        (Ask::Addr(addr), Some((user, pass))) => {
            Socks5Stream::connect_with_password_and_socket(tcp, addr, user, pass).await?
        }
        (Ask::Name(name, port), Some((user, pass))) => {
            Socks5Stream::connect_with_password_and_socket(tcp, (name, port), user, pass).await?
        }
    };
    Ok(stream.into_inner())
}

/// The reply code of a refusal, when the upstream sent one.
fn reply_code(error: &SocksError) -> Option<u8> {
    Some(match error {
        SocksError::GeneralSocksServerFailure => 0x01,
        SocksError::ConnectionNotAllowedByRuleset => 0x02,
        SocksError::NetworkUnreachable => 0x03,
        SocksError::HostUnreachable => 0x04,
        SocksError::ConnectionRefused => 0x05,
        SocksError::TtlExpired => 0x06,
        SocksError::CommandNotSupported => 0x07,
        SocksError::AddressTypeNotSupported => 0x08,
        _ => return None,
    })
}

pub(super) fn error(proxy: &Arc<str>, error: SocksError) -> UpstreamError {
    let proxy = Arc::clone(proxy);
    if let Some(code) = reply_code(&error) {
        return UpstreamError::Refused {
            proxy,
            answer: Answer::Socks(code),
        };
    }
    match error {
        SocksError::NoAcceptableAuthMethods | SocksError::AuthorizationRequired => {
            UpstreamError::Auth {
                proxy,
                answer: Answer::SocksNoMethod,
            }
        }
        SocksError::PasswordAuthFailure(_) => UpstreamError::Auth {
            proxy,
            answer: Answer::SocksPassword,
        },
        other => UpstreamError::Broken {
            proxy,
            detail: other.to_string(),
        },
    }
}

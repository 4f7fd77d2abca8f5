//! Connects to pinned addresses only.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpStream, UnixStream};

use crate::gate::{Pinned, PinnedUnix};

/// What a dial went to: a checked address, or an allowed Unix socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(addr) => addr.fmt(f),
            Peer::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Why no connection could be made; listeners map it to 502/504 or a SOCKS reply code.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connection refused by {0}")]
    Refused(Peer),
    #[error("connect timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("cannot reach {peer}: {source}")]
    Unreachable { peer: Peer, source: io::Error },
}

impl DialError {
    fn from_io(peer: Peer, error: io::Error) -> DialError {
        if error.kind() == io::ErrorKind::ConnectionRefused {
            DialError::Refused(peer)
        } else {
            DialError::Unreachable {
                peer,
                source: error,
            }
        }
    }
}

/// Tries each address the gate pinned, in order, within one overall timeout and returns the
/// first connection with the address it went to (so no caller asks the kernel again).
/// Nothing else can be dialled: a [`Pinned`] is only made by the gate.
pub async fn dial(
    pinned: &Pinned,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), DialError> {
    let attempt = async {
        let mut last = None;
        for addr in pinned.addrs() {
            match connect(addr).await {
                Ok(stream) => return Ok((stream, addr)),
                Err(e) => last = Some(DialError::from_io(Peer::Tcp(addr), e)),
            }
        }
        Err(last.expect("a pinned destination has at least one address"))
    };
    timed(timeout, attempt).await
}

/// A TCP connection to `addr`, with Nagle off. On loopback the handshake is done by the time
/// the non-blocking `connect` returns (the kernel answers the SYN within the call), so the
/// stream is used at once instead of after the runtime reports it writable: one trip through
/// the I/O driver less per tunnel, which under load is where a new tunnel waits. Elsewhere it
/// waits for writability as `TcpStream::connect` does. The socket is made non-blocking (and
/// close-on-exec) by `socket(2)` itself, not by two `fcntl` calls after it.
async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    if stream.peer_addr().is_err() {
        stream.writable().await?;
    }
    match stream.take_error()? {
        Some(error) => Err(error),
        None => Ok(stream),
    }
}

/// Connects to the Unix socket file the policy allowed ([`crate::net::Ctx::authorize_unix`]),
/// with the same timeout, errors and metric as [`dial`].
pub async fn dial_unix(pinned: &PinnedUnix, timeout: Duration) -> Result<UnixStream, DialError> {
    let socket = pinned.socket();
    let attempt = async {
        socket
            .connect()
            .await
            .map_err(|e| DialError::from_io(Peer::Unix(socket.path().to_path_buf()), e))
    };
    timed(timeout, attempt).await
}

/// Runs a connect attempt within `timeout` and records how long it took and how it ended.
async fn timed<T>(
    timeout: Duration,
    attempt: impl std::future::Future<Output = Result<T, DialError>>,
) -> Result<T, DialError> {
    let start = tokio::time::Instant::now();
    let result = match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(DialError::Timeout(timeout)),
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(DialError::Refused(_)) => "refused",
        Err(DialError::Timeout(_)) => "timeout",
        Err(DialError::Unreachable { .. }) => "error",
    };
    metrics::histogram!(crate::metrics::CONNECT_SECONDS, "result" => outcome)
        .record(start.elapsed().as_secs_f64());
    result
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::policy::{Action, Policy, PolicyOptions, Resolve, Target};

    /// A resolver that answers every name with the same addresses.
    struct Answers(Vec<IpAddr>);

    impl Resolve for Answers {
        type Error = ();

        async fn resolve(&self, _: &str) -> Result<Vec<IpAddr>, ()> {
            Ok(self.0.clone())
        }
    }

    /// What the gate pins for a name resolving to `ips` (local answers allowed).
    async fn pinned(ips: &[IpAddr], port: u16) -> Pinned {
        let options = PolicyOptions {
            allow_local_binding: true,
            ..PolicyOptions::default()
        };
        let policy = Policy::from_rules(&[("dial.test", Action::Allow)], options).unwrap();
        let target = Target::parse_authority("dial.test", Some(port)).unwrap();
        crate::gate::pin(policy, &Answers(ips.to_vec()), &target).await
    }

    #[tokio::test]
    async fn falls_through_to_the_next_address_and_reports_refusal() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good = listener.local_addr().unwrap();
        // Nothing listens on another loopback address at that port: connecting is refused.
        let closed: SocketAddr = "127.0.0.2:0".parse().unwrap();
        let both = pinned(&[closed.ip(), good.ip()], good.port()).await;
        let (stream, addr) = dial(&both, Duration::from_secs(5)).await.unwrap();
        assert_eq!(addr, good);
        assert_eq!(stream.peer_addr().unwrap(), good);
        assert!(stream.nodelay().unwrap());
        let refused = pinned(&[closed.ip()], good.port()).await;
        match dial(&refused, Duration::from_secs(5)).await {
            Err(DialError::Refused(peer)) => {
                assert_eq!(peer, Peer::Tcp(SocketAddr::new(closed.ip(), good.port())))
            }
            other => panic!("{other:?}"),
        }
    }
}

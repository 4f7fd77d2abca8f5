//! Connects to pinned addresses only.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};

use super::unix::SocketFile;

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
    #[error("no address to dial")]
    NoAddress,
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

/// Tries each checked address in order within one overall timeout and returns the first
/// connection. `addrs` must come from [`super::Gate::authorize`].
pub async fn dial(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, DialError> {
    let attempt = async {
        let mut last = DialError::NoAddress;
        for &addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = DialError::from_io(Peer::Tcp(addr), e),
            }
        }
        Err(last)
    };
    timed(timeout, attempt).await
}

/// Connects to the Unix socket file the policy allowed ([`super::Gate::authorize_unix`]), with
/// the same timeout, errors and metric as [`dial`].
pub async fn dial_unix(socket: &SocketFile, timeout: Duration) -> Result<UnixStream, DialError> {
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
        Err(DialError::Unreachable { .. } | DialError::NoAddress) => "error",
    };
    metrics::histogram!("egress_connect_seconds", "result" => outcome)
        .record(start.elapsed().as_secs_f64());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn falls_through_to_the_next_address_and_reports_refusal() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good = listener.local_addr().unwrap();
        // A port that was just free: connecting to it is refused.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let stream = dial(&[closed, good], Duration::from_secs(5)).await.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), good);
        match dial(&[closed], Duration::from_secs(5)).await {
            Err(DialError::Refused(peer)) => assert_eq!(peer, Peer::Tcp(closed)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            dial(&[], Duration::from_secs(1)).await,
            Err(DialError::NoAddress)
        ));
    }
}

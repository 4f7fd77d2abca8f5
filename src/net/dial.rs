//! Connects to pinned addresses only.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// Why no connection could be made; listeners map it to 502/504 or a SOCKS reply code.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connection refused by {0}")]
    Refused(SocketAddr),
    #[error("connect timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("cannot reach {addr}: {source}")]
    Unreachable { addr: SocketAddr, source: io::Error },
    #[error("no address to dial")]
    NoAddress,
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
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    last = DialError::Refused(addr);
                }
                Err(source) => last = DialError::Unreachable { addr, source },
            }
        }
        Err(last)
    };
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
            Err(DialError::Refused(addr)) => assert_eq!(addr, closed),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            dial(&[], Duration::from_secs(1)).await,
            Err(DialError::NoAddress)
        ));
    }
}

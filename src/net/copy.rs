//! A relay between a client socket and any stream (TLS to an `https://` upstream), where
//! [`super::relay`]'s non-blocking reads and writes on both sockets cannot work: the same
//! counts, idle timeout, half-close and stop, through `AsyncRead`/`AsyncWrite`.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::relay::{until_done, Clock};
use crate::audit::TunnelStats;

/// Bytes moved per read.
const CHUNK: usize = 16 * 1024;

/// Copies both ways until both directions are done, an error occurs, nothing moves for
/// `idle`, or `stop` completes.
pub async fn relay_io<S>(
    client: &mut TcpStream,
    upstream: S,
    idle: Duration,
    stop: impl Future<Output = ()>,
) -> (TunnelStats, io::Result<()>)
where
    S: AsyncRead + AsyncWrite,
{
    halves(client.split(), tokio::io::split(upstream), idle, stop).await
}

/// [`relay_io`] between two streams of any kind: the two sides of an upgraded (WebSocket)
/// exchange inside an intercepted tunnel.
pub async fn relay_streams<C, S>(
    client: C,
    upstream: S,
    idle: Duration,
    stop: impl Future<Output = ()>,
) -> (TunnelStats, io::Result<()>)
where
    C: AsyncRead + AsyncWrite,
    S: AsyncRead + AsyncWrite,
{
    halves(
        tokio::io::split(client),
        tokio::io::split(upstream),
        idle,
        stop,
    )
    .await
}

async fn halves(
    (client_read, client_write): (impl AsyncRead + Unpin, impl AsyncWrite + Unpin),
    (upstream_read, upstream_write): (impl AsyncRead + Unpin, impl AsyncWrite + Unpin),
    idle: Duration,
    stop: impl Future<Output = ()>,
) -> (TunnelStats, io::Result<()>) {
    let clock = Clock::new();
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let both = async {
        tokio::try_join!(
            one_way(client_read, upstream_write, &up, &clock),
            one_way(upstream_read, client_write, &down, &clock)
        )
    };
    until_done(both, &clock, idle, stop, [&up, &down]).await
}

async fn one_way(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    count: &AtomicU64,
    clock: &Clock,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Half-close: the other side may still answer.
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        clock.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn copies_both_ways_with_half_close_and_counts() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut client, mut client_side) = (client.unwrap(), accepted.unwrap().0);
        let (proxy_side, mut origin) = tokio::io::duplex(64 * 1024);
        let relay = tokio::spawn(async move {
            relay_io(
                &mut client_side,
                proxy_side,
                Duration::from_secs(30),
                pending(),
            )
            .await
        });
        client.write_all(b"hello upstream").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello upstream");
        origin.write_all(b"after half-close").await.unwrap();
        origin.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"after half-close");
        let (stats, result) = relay.await.unwrap();
        result.unwrap();
        assert_eq!((stats.up, stats.down, stats.idle_timeout), (14, 16, false));
    }
}

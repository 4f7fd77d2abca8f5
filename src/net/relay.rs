//! Splices two streams both ways, with half-close, an idle timeout and byte counts.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Large buffers: a tunnel is usually a bulk transfer, and fewer, larger copies are what keeps
/// it near loopback speed.
const BUF: usize = 64 * 1024;

/// What went through a finished relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client to upstream.
    pub up: u64,
    /// Upstream to client.
    pub down: u64,
    /// The relay ended because neither side sent anything for the idle timeout.
    pub idle_timeout: bool,
}

/// Copies until both directions are done (an EOF on one side is passed on as a write
/// shutdown, so half-closed connections keep working), an error occurs, or nothing moves
/// for `idle`.
pub async fn relay<A, B>(client: &mut A, upstream: &mut B, idle: Duration) -> io::Result<RelayStats>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let clock = Clock::new();
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut a = Counted {
        inner: client,
        bytes: &up,
        clock: &clock,
    };
    let mut b = Counted {
        inner: upstream,
        bytes: &down,
        clock: &clock,
    };
    let idle_timeout = tokio::select! {
        result = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUF, BUF) => {
            result.map(|_| false)
        }
        () = clock.idle(idle) => Ok(true),
    };
    let stats = RelayStats {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        idle_timeout: idle_timeout?,
    };
    Ok(stats)
}

/// Last activity, in milliseconds since the relay started.
pub(super) struct Clock {
    start: Instant,
    last: AtomicU64,
}

impl Clock {
    pub(super) fn new() -> Self {
        Clock {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub(super) fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    pub(super) async fn idle(&self, idle: Duration) {
        loop {
            let seen = self.last.load(Ordering::Relaxed);
            tokio::time::sleep_until(self.start + Duration::from_millis(seen) + idle).await;
            if self.last.load(Ordering::Relaxed) == seen {
                return;
            }
        }
    }
}

/// Counts the bytes read from a stream and records activity.
struct Counted<'a, S: ?Sized> {
    inner: &'a mut S,
    bytes: &'a AtomicU64,
    clock: &'a Clock,
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut *self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            self.clock.touch();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_and_passes_half_close_on() {
        let (mut client, mut client_side) = tokio::io::duplex(1024);
        let (mut upstream_side, mut upstream) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move {
            relay(
                &mut client_side,
                &mut upstream_side,
                Duration::from_secs(30),
            )
            .await
        });
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        // The client has half-closed; the reply still reaches it.
        upstream.write_all(b"reply!").await.unwrap();
        upstream.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"reply!");
        let stats = task.await.unwrap().unwrap();
        assert_eq!(
            stats,
            RelayStats {
                up: 7,
                down: 6,
                idle_timeout: false
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ends_when_idle() {
        let (_client, mut client_side) = tokio::io::duplex(64);
        let (mut upstream_side, mut upstream) = tokio::io::duplex(64);
        let task = tokio::spawn(async move {
            relay(
                &mut client_side,
                &mut upstream_side,
                Duration::from_secs(10),
            )
            .await
        });
        tokio::time::sleep(Duration::from_secs(6)).await;
        upstream.write_all(b"x").await.unwrap();
        // Activity at 6 s pushes the deadline to 16 s.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(!task.is_finished());
        tokio::time::sleep(Duration::from_secs(5)).await;
        let stats = task.await.unwrap().unwrap();
        assert!(stats.idle_timeout);
        assert_eq!(stats.down, 1);
    }
}

//! The relay between two TCP sockets. Each direction starts by copying through a small
//! buffer shared by the worker thread's tunnels ([`short`]) and, once it proves to be a bulk
//! transfer, copies through a buffer of its own, a read and a write of whole segments at a
//! time ([`whole_segments`]).
//!
//! Most tunnels are short (a TLS handshake, a request and its response), and for them a
//! buffer of their own is memory held for nothing. So a direction takes its own buffer only
//! when a read fills the [`short::BUF`] buffer (the sender has more queued than one read
//! takes: a bulk stream), or once it has copied more than [`short::SWITCH_AFTER`] bytes (a
//! long stream of small reads: past that, its own buffer saves copying what the other side
//! could not take yet into a `Vec` on every such wait). The limit was measured when the bulk
//! phase spliced (a grown pipe repaid itself after 32–48 KiB) and is kept; the bulk phase now
//! costs one 64 KiB allocation instead.
//!
//! Why copy and not `splice(2)`: on the 2-core VM we measure on, 64 MiB through the relay,
//! interleaved runs of 75 uploads and 25 downloads each, ratio to direct (upload / download):
//! `splice` through a 1 MiB pipe 0.59–0.70 / 0.52–0.61 whatever the length asked per call
//! (one segment to 1 MiB); a read and a write of one loopback segment (65,483 bytes)
//! 0.88–1.06 / 0.82–0.89; of 64 KiB, 53 bytes more, 0.53–0.62 / 0.38–0.42; of two segments
//! 0.77–0.80 / 0.71–0.81; of 256 KiB 0.75–0.83 / 0.60–0.80. A minimal C relay (a blocking
//! thread per direction) does the same: 0.54–0.61 / 0.47–0.50 spliced, 0.73–0.76 / 0.49–0.60
//! copied through 1 MiB. Writes of whole segments matter because every tunnel socket is
//! `TCP_NODELAY`: a 64 KiB write leaves as a 65,483-byte segment and a 53-byte one (68
//! segments per MiB against 54).

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::socket::{getsockopt, shutdown, sockopt, Shutdown};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::audit::TunnelStats;
use short::{copy_until_bulk, write_all, Copied};

mod short;
#[cfg(test)]
mod tests;

/// The bulk phase's buffer: reads of up to this many bytes, rounded down to whole segments.
const BULK: usize = 64 * 1024;

/// Relays both ways until both directions are done (EOF is passed on as a write shutdown),
/// an error occurs, nothing moves for `idle`, or `stop` completes (a reload denied the
/// tunnel). The counts are what moved either way, so a tunnel that ends in a reset still
/// reports its bytes.
pub async fn relay_tcp(
    client: &TcpStream,
    upstream: &TcpStream,
    idle: Duration,
    stop: impl Future<Output = ()>,
) -> (TunnelStats, io::Result<()>) {
    let clock = Clock::new();
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let both = async {
        tokio::try_join!(
            one_way(client, upstream, &up, &clock),
            one_way(upstream, client, &down, &clock)
        )
    };
    until_done(both, &clock, idle, stop, [&up, &down]).await
}

/// Runs both directions of a relay (`both`) until they are done, nothing moves for `idle`,
/// or `stop` completes; then the bytes counted `[up, down]`. Shared with [`super::copy`].
pub(super) async fn until_done(
    both: impl Future<Output = io::Result<((), ())>>,
    clock: &Clock,
    idle: Duration,
    stop: impl Future<Output = ()>,
    [up, down]: [&AtomicU64; 2],
) -> (TunnelStats, io::Result<()>) {
    let (idle_timeout, result) = tokio::select! {
        result = both => (false, result.map(|_| ())),
        () = clock.idle(idle) => (true, Ok(())),
        () = stop => (false, Ok(())),
    };
    let stats = TunnelStats {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        idle_timeout,
    };
    (stats, result)
}

/// Last activity, in milliseconds since the relay started: one atomic store per chunk moved,
/// instead of resetting a timer.
pub struct Clock {
    start: Instant,
    last: AtomicU64,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// Completes once nothing was touched for `idle`.
    pub async fn idle(&self, idle: Duration) {
        loop {
            let seen = self.last.load(Ordering::Relaxed);
            tokio::time::sleep_until(self.start + Duration::from_millis(seen) + idle).await;
            if self.last.load(Ordering::Relaxed) == seen {
                return;
            }
        }
    }
}

/// One direction: the copy phase, then (for a bulk transfer) the bulk phase; EOF, in either,
/// is passed on as a write shutdown, because the other side may still answer.
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    count: &AtomicU64,
    clock: &Clock,
) -> io::Result<()> {
    if copy_until_bulk(from, to, count, clock).await? == Copied::Bulk {
        copy_bulk(from, to, count, clock).await?;
    }
    match shutdown(to.as_raw_fd(), Shutdown::Write) {
        Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Copies `from` to `to` through a buffer of its own until `from` sends EOF: each read takes
/// at most whole segments of `to`, and is written out before the next.
async fn copy_bulk(
    from: &TcpStream,
    to: &TcpStream,
    count: &AtomicU64,
    clock: &Clock,
) -> io::Result<()> {
    let mut buf = vec![0u8; BULK].into_boxed_slice();
    loop {
        // The MSS grows with the peer's window early in a connection, so it is asked anew.
        let mss = getsockopt(to, sockopt::TcpMaxSeg).ok();
        let want = whole_segments(mss.and_then(|mss| usize::try_from(mss).ok()));
        let n = loop {
            from.readable().await?;
            match from.try_read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Ok(());
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        clock.touch();
        write_all(to, &buf[..n]).await?;
    }
}

/// The most bytes up to [`BULK`] that make whole segments of `mss` (all of [`BULK`] when
/// the MSS is unknown or larger).
fn whole_segments(mss: Option<usize>) -> usize {
    match mss {
        Some(mss) if mss > 0 && mss < BULK => BULK / mss * mss,
        _ => BULK,
    }
}

//! The relay between two TCP sockets. Each direction starts by copying through a small
//! buffer shared by the worker thread's tunnels ([`short`]) and switches to `splice(2)` once
//! it proves to be a bulk transfer: from then on bytes move from one socket's receive buffer
//! into a pipe and from the pipe into the other socket's send buffer, never through user
//! memory.
//!
//! Most tunnels are short (a TLS handshake, a request and its response), and for them the
//! pipe is pure overhead: `pipe2`, `F_SETPIPE_SZ`, two closes, and splice calls that cost more
//! than a read and a write of a few KiB. So a direction makes its pipe only when a read fills
//! the [`short::BUF`] buffer (the sender has more queued than one read takes: a bulk stream),
//! or once it has copied more than [`short::SWITCH_AFTER`] bytes. That limit is measured: one
//! chunk relayed on loopback costs 2.4–2.7 µs copied and 2.6–2.9 µs spliced up to 8 KiB, but
//! 0.7 µs more copied at 12 KiB and 1.5 µs more at 16 KiB, while a grown pipe's setup and
//! teardown cost ~2.5 µs; reads just under the buffer repay a pipe after 32–48 KiB.
//!
//! Why splice and not a read and a write through a buffer of the tunnel's own: 64 MiB
//! CONNECT transfers on the 2-core VM we measure on, interleaved with direct, ratio to direct
//! (upload / download) and the proxy's CPU per GiB moved. With CPU to spare, copies of whole
//! loopback segments (65,483 bytes) ran 0.88–1.06 / 0.82–0.89 against splice's 0.59–0.70 /
//! 0.52–0.61. With CPU scarce (the same code at half the requests per second) it went the
//! other way, medians of 10 rounds: spliced 0.52 / 0.84, copied 0.46 / 0.52, at 0.16 against
//! 0.48–0.64 CPU-s per GiB. The copies' edge was loopback's: every tunnel socket is
//! `TCP_NODELAY`, so a write of anything but whole 65,483-byte segments leaves a runt one; on
//! a real link's 1448-byte MSS that matters little, while a third of the CPU per byte helps on
//! every machine.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::sys::socket::{shutdown, Shutdown};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::audit::TunnelStats;
use short::{copy_until_bulk, Copied};

mod short;
#[cfg(test)]
mod tests;

/// Bytes asked of the kernel per splice call, and the size of a grown pipe.
const CHUNK: usize = 1 << 20;

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

/// One direction: the copy phase, then (for a bulk transfer) the splice; EOF, in either, is
/// passed on as a write shutdown, because the other side may still answer.
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    count: &AtomicU64,
    clock: &Clock,
) -> io::Result<()> {
    if copy_until_bulk(from, to, count, clock).await? == Copied::Bulk {
        splice_all(from, to, count, clock).await?;
    }
    match shutdown(to.as_raw_fd(), Shutdown::Write) {
        Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Splices `from` to `to` through a pipe of its own until `from` sends EOF.
async fn splice_all(
    from: &TcpStream,
    to: &TcpStream,
    count: &AtomicU64,
    clock: &Clock,
) -> io::Result<()> {
    let pipe = Pipe::new()?;
    let (pipe_out, pipe_in) = (&pipe.read, &pipe.write);
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        // The pipe is empty here, so EAGAIN can only mean the socket has nothing to read.
        let n = from
            .async_io(Interest::READABLE, || {
                splice(from, None, pipe_in, None, CHUNK, flags).map_err(io::Error::from)
            })
            .await?;
        if n == 0 {
            return Ok(());
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        clock.touch();
        let mut left = n;
        while left > 0 {
            left -= to
                .async_io(Interest::WRITABLE, || {
                    splice(pipe_out, None, to, None, left, flags).map_err(io::Error::from)
                })
                .await?;
        }
    }
}

/// Pipes grown past the default at any one time. Every pipe's pages count against the user's
/// `fs.pipe-user-pages-soft` (64 MiB by default); past it new pipes get 8 KiB and cannot grow,
/// which would slow every later tunnel. 16 pipes of 1 MiB use a quarter of that budget and
/// leave room for ~380 tunnels on default 64 KiB pipes.
const MAX_GROWN: usize = 16;
static GROWN: AtomicUsize = AtomicUsize::new(0);

/// A non-blocking pipe: [`CHUNK`] bytes while few are grown (a bulk transfer moves more per
/// call), otherwise the default 64 KiB.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    grown: bool,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let mut grown = GROWN.fetch_add(1, Ordering::Relaxed) < MAX_GROWN;
        if grown {
            let size = i32::try_from(CHUNK).unwrap_or(i32::MAX);
            grown = fcntl(&write, FcntlArg::F_SETPIPE_SZ(size)).is_ok();
        }
        if !grown {
            GROWN.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(Pipe { read, write, grown })
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if self.grown {
            GROWN.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

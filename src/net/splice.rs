//! Zero-copy relay between two TCP sockets: `splice(2)` moves bytes from one socket's receive
//! buffer into a pipe and from the pipe into the other socket's send buffer, so tunnel data
//! never passes through user memory. This is what keeps a tunnel close to loopback speed.

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

/// Bytes asked of the kernel per splice call, and the size of a grown pipe.
const CHUNK: usize = 1 << 20;

/// Splices both ways until both directions are done (EOF is passed on as a write shutdown),
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

async fn one_way(
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
            // Half-close: the other side may still answer.
            return match shutdown(to.as_raw_fd(), Shutdown::Write) {
                Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
                Err(e) => Err(e.into()),
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Two connected loopback pairs: (client, proxy's client side), (proxy's upstream side, origin).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    /// A client and an origin socket with the relay spliced between them.
    async fn relayed() -> (
        TcpStream,
        TcpStream,
        tokio::task::JoinHandle<(TunnelStats, io::Result<()>)>,
    ) {
        let (client, client_side) = pair().await;
        let (upstream_side, origin) = pair().await;
        let task = tokio::spawn(async move {
            relay_tcp(
                &client_side,
                &upstream_side,
                Duration::from_secs(30),
                pending(),
            )
            .await
        });
        (client, origin, task)
    }

    #[tokio::test]
    async fn splices_both_ways_with_half_close() {
        let (mut client, mut origin, task) = relayed().await;
        let big = vec![7u8; 3 << 20];
        let writer = tokio::spawn(async move {
            client.write_all(&big).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 3 << 20);
        assert!(got.iter().all(|&b| b == 7));
        let mut client = writer.await.unwrap();
        origin.write_all(b"reply after half-close").await.unwrap();
        origin.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply after half-close");
        let (stats, result) = task.await.unwrap();
        result.unwrap();
        assert_eq!((stats.up, stats.down), (3 << 20, 22));
        assert!(!stats.idle_timeout);
    }

    #[test]
    fn only_a_few_pipes_are_grown_at_once() {
        let pipes: Vec<Pipe> = (0..MAX_GROWN + 8).map(|_| Pipe::new().unwrap()).collect();
        let grown = pipes.iter().filter(|p| p.grown).count();
        assert!(grown <= MAX_GROWN, "{grown}");
        let size = |p: &Pipe| fcntl(&p.write, FcntlArg::F_GETPIPE_SZ).unwrap();
        assert!(pipes
            .iter()
            .filter(|p| !p.grown)
            .all(|p| size(p) <= 64 * 1024));
        drop(pipes);
        assert!(
            Pipe::new().unwrap().grown,
            "dropped pipes give their budget back"
        );
    }

    #[tokio::test]
    async fn a_reset_ends_the_relay_with_its_counts() {
        let (mut client, mut origin, task) = relayed().await;
        client.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        origin.read_exact(&mut got).await.unwrap();
        // Linger 0: close sends RST, so the relay's next read fails.
        nix::sys::socket::setsockopt(
            &client,
            nix::sys::socket::sockopt::Linger,
            &nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .unwrap();
        drop(client);
        let (stats, result) = task.await.unwrap();
        assert!(result.is_err(), "{stats:?}");
        assert_eq!(stats.up, 5);
    }

    #[tokio::test]
    async fn stop_ends_the_relay_with_its_counts() {
        let (mut client, client_side) = pair().await;
        let (upstream_side, mut origin) = pair().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = stopped.await;
            };
            relay_tcp(&client_side, &upstream_side, Duration::from_secs(30), stop).await
        });
        client.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        origin.read_exact(&mut got).await.unwrap();
        stop.send(()).unwrap();
        let (stats, result) = task.await.unwrap();
        result.unwrap();
        assert_eq!((stats.up, stats.down, stats.idle_timeout), (5, 0, false));
        // The relay's sockets are closed: both ends see EOF.
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(origin.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ends_when_idle() {
        let (_client, client_side) = pair().await;
        let (upstream_side, _origin) = pair().await;
        let (stats, result) = relay_tcp(
            &client_side,
            &upstream_side,
            Duration::from_secs(5),
            pending(),
        )
        .await;
        result.unwrap();
        assert!(stats.idle_timeout);
    }
}

//! Idle origin connections kept after their client connection closed, for the next client
//! connection from the same host to the same destination.
//!
//! A client that opens a connection per request (`ab`, HTTP/1.0 tools, shell loops of curl)
//! otherwise costs the proxy a new origin connection per request too: a TCP handshake and a
//! close each way, and the origin's accept. Measured with proxybench's row (b') (`ab`, no
//! keep-alive, GET 1 KiB from a loopback nginx), the origin's connect and close were the
//! largest part of the proxy's CPU per request.
//!
//! What is shared is narrow on purpose:
//! - An idle connection is taken only by a request from the same client IP, to the same
//!   destination as written canonically (`host:port`), and only when its address is one the
//!   gate pinned for this request: every request is still decided and resolved first; the
//!   pool only saves the dial. Clients on different hosts never share an origin connection,
//!   nor do two names that happen to resolve to one address.
//! - Only GET, HEAD and OPTIONS without a body take one (the requests the forward path sends
//!   again on a new connection when the origin closed the kept one under them), so an origin's
//!   idle close never costs a request that could not be replayed.
//! - A connection that carried `Authorization` or `WWW-Authenticate` is never kept: NTLM and
//!   Negotiate authenticate the connection, not the request, and on loopback every local user
//!   has the same client IP.
//! - A connection is kept [`IDLE`] at most, under the shortest keep-alive timeout of common
//!   origins (Apache's 5 s), and at most [`CAPACITY`] are kept per listener.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use super::{Key, Upstream};

/// How long an idle connection is kept.
pub(super) const IDLE: Duration = Duration::from_secs(4);
/// Idle connections kept per listener; past it the oldest is closed.
pub(super) const CAPACITY: usize = 32;

struct Idle {
    owner: IpAddr,
    upstream: Upstream,
    since: Instant,
}

/// The idle origin connections of one HTTP listener.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    /// Keeps the connection a client connection from `owner` leaves behind, if it goes
    /// straight to an origin and is still open.
    pub fn put(&self, owner: IpAddr, upstream: Upstream) {
        if !matches!(upstream.key, Key::Tcp { .. })
            || upstream.authenticated
            || upstream.sender.is_closed()
        {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let now = Instant::now();
        idle.retain(|entry| now.duration_since(entry.since) < IDLE);
        if idle.len() >= CAPACITY {
            idle.remove(0);
        }
        idle.push(Idle {
            owner,
            upstream,
            since: now,
        });
    }

    /// The most recently kept connection from `owner` to `dest` at an address `pinned` admits
    /// (one the gate pinned for this request) that can take a request now.
    pub(super) fn take(
        &self,
        owner: IpAddr,
        dest: &str,
        pinned: impl Fn(SocketAddr) -> bool,
    ) -> Option<Upstream> {
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        let found = idle.iter().rposition(|entry| {
            entry.owner == owner
                && now.duration_since(entry.since) < IDLE
                && matches!(&entry.upstream.key, Key::Tcp { addr, dest: kept }
                    if **kept == *dest && pinned(*addr))
        })?;
        let mut upstream = idle.remove(found).upstream;
        drop(idle);
        // Ready at once unless its last response was abandoned mid-body: then it is closed.
        let mut cx = Context::from_waker(Waker::noop());
        match upstream.sender.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => Some(upstream),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::DuplexStream;

    use super::super::handshake;
    use super::*;

    const A: &str = "127.0.0.1:80";

    /// A kept connection to `dest` at `addr` over an in-memory pipe (the origin's end is
    /// returned, so it stays open).
    async fn upstream(dest: &str, addr: &str) -> (Upstream, DuplexStream) {
        let (ours, origin) = tokio::io::duplex(1024);
        let key = Key::Tcp {
            addr: addr.parse().unwrap(),
            dest: dest.into(),
        };
        let kept = handshake(ours, key).await.unwrap();
        settle().await;
        (kept, origin)
    }

    /// Lets the connection tasks run: a new connection is ready once its task has polled.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn me() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_connection_is_taken_only_by_its_owner_for_its_name_and_address() {
        let pool = Pool::default();
        let (kept, _origin) = upstream("a.test:80", A).await;
        pool.put(me(), kept);
        let at_a = |addr: SocketAddr| addr == A.parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(pool.take(other, "a.test:80", at_a).is_none());
        assert!(pool.take(me(), "b.test:80", at_a).is_none());
        assert!(pool.take(me(), "a.test:8080", at_a).is_none());
        assert!(pool.take(me(), "a.test:80", |_| false).is_none());
        assert!(pool.take(me(), "a.test:80", at_a).is_some());
        assert!(pool.take(me(), "a.test:80", at_a).is_none(), "taken once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_kept_for_its_idle_time_only() {
        let pool = Pool::default();
        let (kept, _origin) = upstream("a.test:80", A).await;
        pool.put(me(), kept);
        tokio::time::advance(IDLE - Duration::from_millis(1)).await;
        let kept = pool.take(me(), "a.test:80", |_| true).expect("still kept");
        pool.put(me(), kept);
        tokio::time::advance(IDLE).await;
        assert!(pool.take(me(), "a.test:80", |_| true).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn past_its_capacity_the_oldest_connection_is_closed() {
        let pool = Pool::default();
        let mut origins = Vec::new();
        for n in 0..=CAPACITY {
            let (kept, origin) = upstream(&format!("h{n}.test:80"), A).await;
            origins.push(origin);
            pool.put(me(), kept);
        }
        assert!(pool.take(me(), "h0.test:80", |_| true).is_none());
        for n in 1..=CAPACITY {
            assert!(
                pool.take(me(), &format!("h{n}.test:80"), |_| true)
                    .is_some(),
                "{n}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn closed_connections_are_not_kept() {
        let pool = Pool::default();
        let (kept, origin) = upstream("a.test:80", A).await;
        drop(origin);
        settle().await;
        pool.put(me(), kept);
        assert!(pool.take(me(), "a.test:80", |_| true).is_none());
    }
}

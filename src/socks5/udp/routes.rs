//! The association's routes: one per destination as the client wrote it, holding the policy's
//! decision under the current generation and, when allowed, the upstream socket connected to
//! the checked address. That socket is how replies are labelled: the kernel delivers to it
//! only what that address sends, and the route's prebuilt header names the destination.
//!
//! Destinations per association are few in practice (a DNS server, a QUIC peer or two), so a
//! lookup compares the header's raw ATYP..DST.PORT octets with the last route used, then scans
//! the rest: no hashing, no canonicalisation, no allocation.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::net::UdpSocket;

use super::codec;
use crate::gate::Gate;
use crate::policy::Policy;
use crate::socks5;

/// Routes per association. Each allowed one holds a socket, so past this the least recently
/// used route is dropped, with its socket (replies still on their way to it are lost), and
/// decided afresh if the client comes back to it. Refusing new destinations instead would
/// break a long-lived association for good; dropping the oldest costs only the client that
/// uses this many.
pub(super) const MAX_DESTINATIONS: usize = 256;

/// Decisions for this association's destinations, valid for one policy generation.
pub(super) struct Routes {
    generation: Arc<Policy>,
    /// A forgotten route leaves `None`, so indices stay put: a batch names its route by index
    /// across a refresh.
    entries: Vec<Option<Route>>,
    /// The route the last lookup found, compared first.
    last: usize,
    /// Counts lookups; a route's `used` is the count at its last one.
    clock: u64,
    /// Where the next readiness poll starts, so one busy route cannot starve the others.
    cursor: usize,
}

struct Route {
    /// A reply's SOCKS header: RSV, FRAG, then ATYP..DST.PORT as the client wrote them (the
    /// lookup key).
    header: Box<[u8]>,
    used: u64,
    /// `None`: denied.
    upstream: Option<Upstream>,
}

/// Where an allowed destination's datagrams go.
pub(super) struct Upstream {
    /// The checked address the gate pinned.
    pub(super) addr: SocketAddr,
    /// Connected to `addr`.
    pub(super) socket: UdpSocket,
}

impl Route {
    fn dest(&self) -> &[u8] {
        &self.header[codec::UDP_PREFIX..]
    }
}

impl Routes {
    pub(super) fn new(generation: Arc<Policy>) -> Self {
        Routes {
            generation,
            entries: Vec::new(),
            last: 0,
            clock: 0,
            cursor: 0,
        }
    }

    /// After a reload, keeps the routes the new generation still allows to the same address
    /// (decided again without DNS, as open tunnels are), so replies in flight are not lost;
    /// the rest are forgotten, their sockets closed, and decided afresh on their next datagram.
    pub(super) fn refresh(&mut self, gate: &Gate) {
        let current = gate.policy().load();
        if Arc::ptr_eq(&current, &self.generation) {
            return;
        }
        self.generation = Arc::clone(&current);
        let policy = &self.generation;
        for entry in &mut self.entries {
            let keep = entry.as_ref().is_some_and(|route| {
                route.upstream.as_ref().is_some_and(|upstream| {
                    codec::parse_dest(route.dest())
                        .and_then(|(host, port)| socks5::target(host, port).ok())
                        .is_some_and(|target| {
                            policy
                                .recheck(&target, upstream.addr.ip())
                                .uninspected()
                                .is_allowed()
                        })
                })
            });
            if !keep {
                *entry = None;
            }
        }
    }

    /// The route of `dest` (ATYP..DST.PORT as written), if it has one.
    pub(super) fn find(&mut self, dest: &[u8]) -> Option<usize> {
        self.clock += 1;
        let index = match self.entries.get(self.last) {
            Some(Some(route)) if route.dest() == dest => self.last,
            _ => self
                .entries
                .iter()
                .position(|entry| entry.as_ref().is_some_and(|route| route.dest() == dest))?,
        };
        self.last = index;
        if let Some(route) = &mut self.entries[index] {
            route.used = self.clock;
        }
        Some(index)
    }

    /// Adds the route of `dest` (`upstream` `None`: denied) and returns its index.
    pub(super) fn insert(&mut self, dest: &[u8], upstream: Option<Upstream>) -> usize {
        let mut header = vec![0; codec::UDP_PREFIX + dest.len()];
        let end = header.len();
        codec::write_udp_header(&mut header, end, dest);
        let route = Route {
            header: header.into_boxed_slice(),
            used: self.clock,
            upstream,
        };
        let index = match self.entries.iter().position(Option::is_none) {
            Some(free) => free,
            None if self.entries.len() < MAX_DESTINATIONS => {
                self.entries.push(None);
                self.entries.len() - 1
            }
            None => self.least_recently_used(),
        };
        self.entries[index] = Some(route);
        self.last = index;
        index
    }

    fn least_recently_used(&self) -> usize {
        let used = |entry: &Option<Route>| entry.as_ref().map_or(0, |route| route.used);
        (0..self.entries.len())
            .min_by_key(|&index| used(&self.entries[index]))
            .unwrap_or(0)
    }

    /// Where route `index` sends, if it is an allowed one.
    pub(super) fn upstream(&self, index: usize) -> Option<&Upstream> {
        self.entries.get(index)?.as_ref()?.upstream.as_ref()
    }

    /// The header of a reply on route `index`, if it is an allowed one.
    pub(super) fn reply_header(&self, index: usize) -> Option<&[u8]> {
        let route = self.entries.get(index)?.as_ref()?;
        route.upstream.as_ref().map(|_| &route.header[..])
    }

    /// Forgets route `index` and closes its socket.
    pub(super) fn remove(&mut self, index: usize) {
        if let Some(entry) = self.entries.get_mut(index) {
            *entry = None;
        }
    }

    /// Waits until an allowed route's socket has something to read, and returns its index.
    /// Never ready while there is none.
    pub(super) fn readable(&mut self) -> impl Future<Output = usize> + '_ {
        std::future::poll_fn(move |cx| self.poll_readable(cx))
    }

    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<usize> {
        let n = self.entries.len();
        for k in 0..n {
            let index = (self.cursor + k) % n;
            let Some(Route {
                upstream: Some(upstream),
                ..
            }) = &self.entries[index]
            else {
                continue;
            };
            // An error is ready too: the read that follows reports it.
            if upstream.socket.poll_recv_ready(cx).is_ready() {
                self.cursor = index + 1;
                return Poll::Ready(index);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;

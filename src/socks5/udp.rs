//! UDP ASSOCIATE: our own relay between one client and the destinations the policy allows.
//!
//! One task per association owns everything: the client-facing socket (bound to the control
//! connection's local address, so on loopback), one upstream socket per allowed destination
//! (connected to its checked address), the routes ([`routes`]) and one set of datagram slots
//! ([`batch`]). Owning it all in one task keeps the hot path free of locks, and nothing is
//! allocated or hashed per datagram: a batch of datagrams costs one `recvmmsg`, and per
//! datagram a header parse, one policy-generation load and a comparison with the last route
//! used; consecutive datagrams to one route leave in one `sendmmsg` on its socket, and a batch
//! of replies from one route goes back to the client in one `sendmmsg`.
//!
//! Invariants:
//! - Datagrams are accepted from the control connection's peer IP only, and from one port:
//!   the one the ASSOCIATE request named, else the first one seen. The relay socket is then
//!   connected to that address, so the kernel drops everything else, and every datagram's
//!   source is still compared with it (what was queued before the connect).
//! - On loopback every local user shares the client's IP, so when the request names no port
//!   the first datagram is accepted only from a UDP socket owned by the same uid as the
//!   client's end of the control connection (both read from the kernel's socket tables by
//!   [`crate::net::owner`], once each: at ASSOCIATE, and for first datagrams until one is
//!   accepted). Processes of the same uid are not told apart: any of them can still send the
//!   first datagram. A client on another host is identified by its IP alone.
//! - Every destination is decided by [`super::authorize`] (policy, one lookup, audit) before
//!   its first datagram leaves; a name is resolved once and its first checked address is
//!   what its socket is connected to while the route lives. Every datagram first checks the
//!   policy generation; when it changed, every route is re-decided without DNS
//!   (`Policy::recheck`): the ones still allowed to the same address stay, so replies in
//!   flight are not lost, and the rest are forgotten (their sockets closed) and decided afresh.
//!   A batch's send checks the generation once more, so nothing leaves on a route the current
//!   generation no longer allows.
//! - Only what the checked address sends reaches a route's socket (the kernel drops the rest),
//!   and it is relayed back under the header of the destination the way the client wrote it,
//!   only while the current generation still allows the route.
//! - At most [`routes::MAX_DESTINATIONS`] routes (and so upstream sockets) per association;
//!   past it the least recently used one is dropped.
//! - The association ends with its control connection, or after `idle_timeout` without a
//!   relayed datagram.

mod batch;
mod routes;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::codec::{self, UdpHeader};
use crate::audit::{Protocol, UdpStats};
use crate::isolate::UdpFactory;
use crate::net::owner::{self, OwnerError};
use crate::net::Ctx;
use crate::respond::Refusal;
use batch::{Slots, BATCH};
use routes::{Routes, Upstream};

/// Why an association ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    ControlClosed,
    Idle,
}

/// Serves one UDP ASSOCIATE request on its control connection until the association ends.
/// `port` is the request's DST.PORT: the client's source port, if it knows it.
pub async fn associate(
    mut control: TcpStream,
    client: SocketAddr,
    port: u16,
    ctx: &Ctx,
    slots: &Arc<Semaphore>,
    relay: Option<&UdpFactory>,
) {
    let Ok(_permit) = Arc::clone(slots).try_acquire_owned() else {
        return super::reject(&mut control, client, &Refusal::Busy).await;
    };
    let source = (port != 0).then(|| SocketAddr::new(client.ip(), port));
    let local = match control.local_addr() {
        Ok(local) => local,
        Err(error) => return super::reject(&mut control, client, &Refusal::Local(&error)).await,
    };
    // In the command's own network namespace only the sandbox can reach the listener, and
    // this process cannot read that namespace's socket tables: no owner to check.
    let owner = match relay {
        Some(_) => Ok(None),
        None => first_datagram_owner(client, local, source).await,
    };
    let owner = match owner {
        Ok(owner) => owner,
        Err(error) => {
            tracing::warn!(%client, %error, "cannot tell who owns a SOCKS5 UDP client");
            return super::reject(&mut control, client, &Refusal::Owner(&error)).await;
        }
    };
    let setup = match Slots::new() {
        Ok(buffers) => bind_relay(local, source, relay)
            .await
            .map(|(relay, bound)| (relay, bound, buffers)),
        Err(error) => Err(error),
    };
    let (relay, bound, mut buffers) = match setup {
        Ok(bound) => bound,
        Err(error) => {
            tracing::warn!(%client, %error, "cannot set up a UDP relay");
            return super::reject(&mut control, client, &Refusal::Local(&error)).await;
        }
    };
    if super::succeed(&mut control, bound).await.is_err() {
        return;
    }
    let mut association = Association::new(ctx, client, source, owner, relay, bound);
    let gauge = metrics::gauge!(crate::metrics::UDP_ASSOCIATIONS);
    gauge.increment(1.0);
    let start = Instant::now();
    let idle = ctx.limits.idle_timeout;
    let end = association.run(&mut control, &mut buffers, idle).await;
    gauge.decrement(1.0);
    let idle_timeout = matches!(end, Ok(End::Idle));
    if let Err(error) = &end {
        tracing::debug!(%client, relay = %bound, %error, "SOCKS5 UDP association failed");
    }
    ctx.events.udp_closed(
        client,
        bound,
        &association.stats,
        start.elapsed(),
        idle_timeout,
    );
}

/// The uid whose UDP socket may send the first datagram: that of the client's end of the
/// control connection, when the client is on loopback and named no port. `None` when the
/// source is fixed already, or the client is on another host, where no uid can be known.
/// `local` is the control connection's own address.
async fn first_datagram_owner(
    client: SocketAddr,
    local: SocketAddr,
    source: Option<SocketAddr>,
) -> Result<Option<u32>, OwnerError> {
    if source.is_some() || !client.ip().to_canonical().is_loopback() {
        return Ok(None);
    }
    owner::tcp_owner(client, local).await.map(Some)
}

/// Binds the client-facing socket next to the control connection's local address.
async fn bind_relay(
    local: SocketAddr,
    source: Option<SocketAddr>,
    factory: Option<&UdpFactory>,
) -> io::Result<(UdpSocket, SocketAddr)> {
    let relay = match factory {
        Some(factory) => factory.bind(local.ip()).await?,
        None => UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?,
    };
    if let Some(source) = source {
        relay.connect(source).await?;
    }
    let bound = relay.local_addr()?;
    Ok((relay, bound))
}

struct Association<'a> {
    ctx: &'a Ctx,
    /// The control connection's peer.
    client: SocketAddr,
    /// The one address datagrams are accepted from, once known.
    source: Option<SocketAddr>,
    /// Until `source` is known: the uid that must own the socket of the first datagram.
    owner: Option<u32>,
    /// Client-facing; connected to the client's source once it is known.
    relay: UdpSocket,
    /// Whether `relay` is an IPv6 socket.
    relay_v6: bool,
    routes: Routes,
    stats: UdpStats,
}

/// Datagrams of one batch bound for one route, sent together.
struct Group {
    route: Option<usize>,
    len: usize,
    /// Each datagram's slot and the length of its SOCKS header.
    items: [(usize, usize); BATCH],
}

impl Group {
    fn new() -> Self {
        Group {
            route: None,
            len: 0,
            items: [(0, 0); BATCH],
        }
    }
}

impl<'a> Association<'a> {
    fn new(
        ctx: &'a Ctx,
        client: SocketAddr,
        source: Option<SocketAddr>,
        owner: Option<u32>,
        relay: UdpSocket,
        bound: SocketAddr,
    ) -> Self {
        Association {
            ctx,
            client,
            source,
            owner,
            relay,
            relay_v6: bound.is_ipv6(),
            routes: Routes::new(ctx.gate.current()),
            stats: UdpStats::default(),
        }
    }

    async fn run(
        &mut self,
        control: &mut TcpStream,
        slots: &mut Slots,
        idle: Duration,
    ) -> io::Result<End> {
        let mut ignored = [0u8; 64];
        let mut last = Instant::now();
        // Re-armed only when it fires, so activity costs a clock read, not a timer update.
        let timer = tokio::time::sleep_until(last + idle);
        tokio::pin!(timer);
        loop {
            let active = tokio::select! {
                read = control.read(&mut ignored) => match read {
                    Ok(0) | Err(_) => return Ok(End::ControlClosed),
                    // RFC 1928 gives the control connection no further use.
                    Ok(_) => false,
                },
                ready = self.relay.readable() => {
                    ready?;
                    self.relay_outbound(slots).await?
                }
                route = self.routes.readable() => self.relay_inbound(route, slots).await,
                () = &mut timer => {
                    if Instant::now() >= last + idle {
                        return Ok(End::Idle);
                    }
                    timer.as_mut().reset(last + idle);
                    false
                }
            };
            if active {
                last = Instant::now();
            }
        }
    }

    /// Relays a batch of what the client has queued; returns whether anything was sent on.
    async fn relay_outbound(&mut self, slots: &mut Slots) -> io::Result<bool> {
        let n = match batch::recv(&self.relay, slots, self.relay_v6) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || transient(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        let slots = &*slots;
        let before = self.stats.sent;
        let mut group = Group::new();
        for i in 0..n {
            let from = slots.source(i);
            let accepted = match self.source {
                Some(source) => source == from,
                None => self.accept_first(from).await?,
            };
            if accepted {
                self.forward(slots, i, &mut group).await;
            } else {
                self.stats.dropped += 1;
            }
        }
        self.flush(slots, &mut group).await;
        Ok(self.stats.sent > before)
    }

    /// Whether a first datagram from `from` is the client's; if so it fixes the source.
    async fn accept_first(&mut self, from: SocketAddr) -> io::Result<bool> {
        if from.ip() != self.client.ip() || !self.owned_by_client(from).await {
            return Ok(false);
        }
        self.relay.connect(from).await?;
        self.source = Some(from);
        Ok(true)
    }

    /// Whether the socket that sent from `from` belongs to the control connection's user,
    /// when that must be checked.
    async fn owned_by_client(&self, from: SocketAddr) -> bool {
        let Some(uid) = self.owner else {
            return true;
        };
        match owner::udp_owner(from).await {
            Ok(sender) if sender == uid => true,
            Ok(sender) => {
                tracing::warn!(client = %self.client, %from, sender, owner = uid, "a first SOCKS5 UDP datagram from another user's socket; ignored");
                false
            }
            Err(error) => {
                tracing::warn!(client = %self.client, %from, %error, "cannot tell who sent a first SOCKS5 UDP datagram; ignored");
                false
            }
        }
    }

    /// Decides the client's datagram in slot `i` and adds it to the group it leaves with;
    /// a denied, fragmented or malformed one is counted and goes nowhere.
    async fn forward(&mut self, slots: &Slots, i: usize, group: &mut Group) {
        // RFC 1928 lets a server that does not reassemble drop every fragment.
        let header = match codec::parse_udp_header(slots.datagram(i)) {
            Ok(header) if header.frag == 0 => header,
            Ok(_) | Err(_) => {
                self.stats.dropped += 1;
                return;
            }
        };
        self.routes.refresh(&self.ctx.gate);
        let route = match self.routes.find(header.dest) {
            Some(route) => route,
            None => {
                // A decision may wait for DNS and its route may take a grouped one's place:
                // the group goes first.
                self.flush(slots, group).await;
                match self.decide(&header).await {
                    Some(route) => route,
                    None => {
                        self.stats.dropped += 1;
                        return;
                    }
                }
            }
        };
        if self.routes.upstream(route).is_none() {
            self.stats.denied += 1;
            return;
        }
        if group.route != Some(route) {
            self.flush(slots, group).await;
            group.route = Some(route);
        }
        group.items[group.len] = (i, header.len);
        group.len += 1;
    }

    /// Decides a destination without a route and adds one; `None` when it is allowed but no
    /// socket can be made for it (the datagram is dropped, the next one decides again).
    /// The generation was loaded (by `refresh`) before the policy is consulted, so a reload
    /// in between only has the next refresh re-decide this route once more.
    async fn decide(&mut self, header: &UdpHeader<'_>) -> Option<usize> {
        let result = super::authorize(
            self.ctx,
            Protocol::SocksUdp,
            self.client,
            header.addr,
            header.port,
        )
        .await;
        let upstream = match result {
            Ok(pinned) => {
                let addr = pinned.first();
                match connect_upstream(addr).await {
                    Ok(socket) => Some(Upstream { addr, socket }),
                    Err(error) => {
                        tracing::warn!(client = %self.client, dest = %addr, %error, "cannot open a UDP socket to an allowed destination");
                        return None;
                    }
                }
            }
            Err(_) => None,
        };
        Some(self.routes.insert(header.dest, upstream))
    }

    /// Sends the group on its route, if the current generation still allows it (else its
    /// datagrams count as denied).
    async fn flush(&mut self, slots: &Slots, group: &mut Group) {
        let Some(route) = group.route.take() else {
            return;
        };
        let count = std::mem::take(&mut group.len);
        self.routes.refresh(&self.ctx.gate);
        let Some(upstream) = self.routes.upstream(route) else {
            self.stats.denied += count as u64;
            return;
        };
        let messages = batch::messages(count, |k| {
            let (i, header_len) = group.items[k];
            &slots.datagram(i)[header_len..]
        });
        let sent = send_all(&upstream.socket, &messages[..count]).await;
        self.stats.sent += sent.datagrams;
        self.stats.bytes_up += sent.bytes;
        self.stats.dropped += sent.dropped;
    }

    /// Relays a batch of what route `route`'s destination sent back; returns whether anything
    /// was relayed.
    async fn relay_inbound(&mut self, route: usize, slots: &mut Slots) -> bool {
        let Some(upstream) = self.routes.upstream(route) else {
            return false;
        };
        let n = match batch::recv(&upstream.socket, slots, upstream.addr.is_ipv6()) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(error) if transient(&error) => {
                tracing::debug!(client = %self.client, dest = %upstream.addr, %error, "UDP destination reported an error");
                return false;
            }
            Err(error) => {
                tracing::warn!(client = %self.client, dest = %upstream.addr, %error, "UDP route failed; dropped");
                self.routes.remove(route);
                return false;
            }
        };
        self.routes.refresh(&self.ctx.gate);
        let Some(header) = self.routes.reply_header(route) else {
            self.stats.dropped += n as u64;
            return false;
        };
        for i in 0..n {
            slots.prepend(i, header);
        }
        let header_len = header.len();
        let slots = &*slots;
        let messages = batch::messages(n, |i| slots.framed(i, header_len));
        let sent = send_all(&self.relay, &messages[..n]).await;
        self.stats.received += sent.datagrams;
        self.stats.bytes_down += sent.bytes - sent.datagrams * header_len as u64;
        self.stats.dropped += sent.dropped;
        sent.datagrams > 0
    }
}

/// A socket connected to `dest` (an allowed destination's checked address), bound to the
/// unspecified address: the destination may be anywhere the policy allows.
async fn connect_upstream(dest: SocketAddr) -> io::Result<UdpSocket> {
    let any = match dest {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(dest).await?;
    Ok(socket)
}

/// What [`send_all`] did.
#[derive(Default)]
struct Sent {
    datagrams: u64,
    bytes: u64,
    dropped: u64,
}

/// Sends `messages` on connected `socket` in as few calls as it takes, waiting while its
/// buffer is full. A message the socket refuses is dropped; after a transient error (the
/// report of an earlier datagram's ICMP error, which the kernel gives instead of sending) it
/// is tried once more.
async fn send_all(socket: &UdpSocket, messages: &[[std::io::IoSlice<'_>; 1]]) -> Sent {
    let mut sent = Sent::default();
    let mut next = 0;
    let mut retried = false;
    while next < messages.len() {
        match batch::send(socket, &messages[next..]) {
            Ok(n) => {
                let bytes: usize = messages[next..next + n].iter().map(|[m]| m.len()).sum();
                sent.datagrams += n as u64;
                sent.bytes += bytes as u64;
                next += n;
                retried = false;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(error) = socket.writable().await {
                    tracing::debug!(%error, "UDP socket not writable");
                    break;
                }
            }
            Err(e) if transient(&e) && !retried => retried = true,
            Err(error) => {
                tracing::debug!(%error, "UDP datagram not sent");
                sent.dropped += 1;
                next += 1;
                retried = false;
            }
        }
    }
    sent.dropped += (messages.len() - next) as u64;
    sent
}

/// Errors that leave the socket usable: an ICMP error for an earlier datagram (a client or
/// destination port or host that went away, a path that needs smaller datagrams) reported on
/// a later call of the connected socket, or an interrupted call.
fn transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::Interrupted
    ) || error.raw_os_error() == Some(Errno::EMSGSIZE as i32)
}

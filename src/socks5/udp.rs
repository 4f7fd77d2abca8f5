//! UDP ASSOCIATE: our own relay between one client and the destinations the policy allows.
//!
//! One task per association owns everything: the client-facing socket (bound to the control
//! connection's local address, so on loopback), one upstream socket per address family
//! (created on first use), one 64 KiB buffer each way and the decision cache. Owning it all
//! in one task keeps the hot path free of locks and allocation: a datagram to a known
//! destination costs a header parse, one policy-generation load, one hash lookup and a send.
//!
//! Invariants:
//! - Datagrams are accepted from the control connection's peer IP only, and from one port:
//!   the one the ASSOCIATE request named, else the first one seen. The relay socket is then
//!   connected to that address, so the kernel drops everything else.
//! - On loopback every local user shares the client's IP, so when the request names no port
//!   the first datagram is accepted only from a UDP socket owned by the same uid as the
//!   client's end of the control connection (both read from the kernel's socket tables by
//!   [`crate::net::owner`], once each: at ASSOCIATE, and for first datagrams until one is
//!   accepted). Processes of the same uid are not told apart: any of them can still send the
//!   first datagram. A client on another host is identified by its IP alone.
//! - Every destination is decided by [`super::authorize`] (policy, one lookup, audit) before
//!   its first datagram leaves; a name is resolved once and its first checked address is
//!   what datagrams go to while the cache entry lives. When the policy generation changes,
//!   the next datagram first re-decides every cached route without DNS (`Policy::recheck`):
//!   the ones still allowed to the same address stay, so replies in flight are not lost, and
//!   the rest are decided afresh.
//! - Only datagrams from an address in the cache (one we sent to under the current policy)
//!   are relayed back, under a header naming the destination the way the client wrote it.
//! - The association ends with its control connection, or after `idle_timeout` without a
//!   relayed datagram.

mod routes;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

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
use routes::{Route, Routes};

/// Enough for any UDP payload.
const BUF: usize = 64 * 1024;
/// Room in front of a reply's payload for the longest header, so it is written in place.
const HEADROOM: usize = codec::MAX_UDP_HEADER;
/// Datagrams handled per wake-up before the other direction gets a turn.
const BATCH: usize = 64;

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
    let (relay, bound) = match bind_relay(local, source, relay).await {
        Ok(relay) => relay,
        Err(error) => {
            tracing::warn!(%client, %error, "cannot bind a UDP relay socket");
            return super::reject(&mut control, client, &Refusal::Local(&error)).await;
        }
    };
    if super::succeed(&mut control, bound).await.is_err() {
        return;
    }
    let mut association = Association::new(ctx, client, source, owner, relay);
    let gauge = metrics::gauge!(crate::metrics::UDP_ASSOCIATIONS);
    gauge.increment(1.0);
    let start = Instant::now();
    let end = association.run(&mut control, ctx.limits.idle_timeout).await;
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
    sockets: Sockets,
    routes: Routes,
    stats: UdpStats,
}

struct Sockets {
    /// Client-facing; connected to the client's source once it is known.
    relay: UdpSocket,
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

impl<'a> Association<'a> {
    fn new(
        ctx: &'a Ctx,
        client: SocketAddr,
        source: Option<SocketAddr>,
        owner: Option<u32>,
        relay: UdpSocket,
    ) -> Self {
        Association {
            ctx,
            client,
            source,
            owner,
            sockets: Sockets {
                relay,
                v4: None,
                v6: None,
            },
            routes: Routes::new(ctx.gate.current()),
            stats: UdpStats::default(),
        }
    }

    async fn run(&mut self, control: &mut TcpStream, idle: Duration) -> io::Result<End> {
        let mut up = vec![0u8; BUF].into_boxed_slice();
        let mut down = vec![0u8; HEADROOM + BUF].into_boxed_slice();
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
                ready = self.sockets.relay.readable() => {
                    ready?;
                    self.relay_outbound(&mut up).await?
                }
                ready = readable(self.sockets.v4.as_ref()) => {
                    ready?;
                    self.relay_inbound(Family::V4, &mut down).await?
                }
                ready = readable(self.sockets.v6.as_ref()) => {
                    ready?;
                    self.relay_inbound(Family::V6, &mut down).await?
                }
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

    /// Relays what the client has queued; returns whether anything was sent.
    async fn relay_outbound(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let mut active = false;
        for _ in 0..BATCH {
            let (n, from) = match self.sockets.relay.try_recv_from(buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if transient(&e) => continue,
                Err(e) => return Err(e),
            };
            if !self.accept(from).await? {
                self.stats.dropped += 1;
                continue;
            }
            active |= self.forward(&buf[..n]).await;
        }
        Ok(active)
    }

    /// Whether a datagram from `from` is the client's; the first one fixes its port.
    async fn accept(&mut self, from: SocketAddr) -> io::Result<bool> {
        match self.source {
            Some(source) => Ok(source == from),
            None if from.ip() == self.client.ip() => {
                if !self.owned_by_client(from).await {
                    return Ok(false);
                }
                self.sockets.relay.connect(from).await?;
                self.source = Some(from);
                Ok(true)
            }
            None => Ok(false),
        }
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

    /// Sends one client datagram on if its destination is allowed; returns whether it was.
    async fn forward(&mut self, datagram: &[u8]) -> bool {
        // RFC 1928 lets a server that does not reassemble drop every fragment.
        let header = match codec::parse_udp_header(datagram) {
            Ok(header) if header.frag == 0 => header,
            Ok(_) | Err(_) => {
                self.stats.dropped += 1;
                return false;
            }
        };
        self.routes.refresh(&self.ctx.gate);
        let route = match self.routes.get(header.dest) {
            Some(route) => route,
            None => self.decide(&header).await,
        };
        let Route::Allowed(dest) = route else {
            self.stats.denied += 1;
            return false;
        };
        let sent = match self.sockets.upstream(dest).await {
            Ok(socket) => socket.send_to(&datagram[header.len..], dest).await,
            Err(error) => Err(error),
        };
        match sent {
            Ok(n) => {
                self.stats.sent += 1;
                self.stats.bytes_up += n as u64;
                true
            }
            Err(error) => {
                tracing::debug!(client = %self.client, %dest, %error, "UDP send failed");
                self.stats.dropped += 1;
                false
            }
        }
    }

    /// Decides a destination not in the cache. The generation was loaded (by `refresh`)
    /// before the policy is consulted, so a reload in between only has the next refresh
    /// re-decide this route once more.
    async fn decide(&mut self, header: &UdpHeader<'_>) -> Route {
        let result = super::authorize(
            self.ctx,
            Protocol::SocksUdp,
            self.client,
            header.addr,
            header.port,
        )
        .await;
        let route = match result {
            Ok(pinned) => Route::Allowed(pinned.first()),
            Err(_) => Route::Denied,
        };
        self.routes.insert(header.dest, route);
        route
    }

    /// Relays what destinations sent back; returns whether anything was.
    async fn relay_inbound(&mut self, family: Family, buf: &mut [u8]) -> io::Result<bool> {
        let socket = match family {
            Family::V4 => self.sockets.v4.as_ref(),
            Family::V6 => self.sockets.v6.as_ref(),
        };
        let Some(socket) = socket else {
            return Ok(false);
        };
        let mut active = false;
        for _ in 0..BATCH {
            let (n, from) = match socket.try_recv_from(&mut buf[HEADROOM..]) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if transient(&e) => continue,
                Err(e) => return Err(e),
            };
            self.routes.refresh(&self.ctx.gate);
            let Some(dest) = self.routes.dest_of(from) else {
                self.stats.dropped += 1;
                continue;
            };
            let start = codec::write_udp_header(buf, HEADROOM, dest);
            match self.sockets.relay.send(&buf[start..HEADROOM + n]).await {
                Ok(_) => {
                    self.stats.received += 1;
                    self.stats.bytes_down += n as u64;
                    active = true;
                }
                Err(error) => {
                    tracing::debug!(client = %self.client, %from, %error, "UDP reply not relayed");
                    self.stats.dropped += 1;
                }
            }
        }
        Ok(active)
    }
}

impl Sockets {
    /// The upstream socket for `dest`'s family, bound on first use to the unspecified
    /// address: the destination may be anywhere the policy allows.
    async fn upstream(&mut self, dest: SocketAddr) -> io::Result<&UdpSocket> {
        let (slot, any) = match dest {
            SocketAddr::V4(_) => (&mut self.v4, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            SocketAddr::V6(_) => (&mut self.v6, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))),
        };
        let socket = match slot.take() {
            Some(socket) => socket,
            None => UdpSocket::bind(any).await?,
        };
        Ok(slot.insert(socket))
    }
}

/// Waits until `socket` is readable; forever if there is none yet.
async fn readable(socket: Option<&UdpSocket>) -> io::Result<()> {
    match socket {
        Some(socket) => socket.readable().await,
        None => std::future::pending().await,
    }
}

/// Errors that leave the socket usable: an ICMP error for an earlier datagram (a client or
/// destination port that went away) reported on a later call, or an interrupted call.
fn transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

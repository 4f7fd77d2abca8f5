//! Datagrams a batch at a time: the association's buffers, and one system call per batch each
//! way where the OS has them (`recvmmsg`, `sendmmsg` on Linux), one call per datagram
//! elsewhere. Both work on connected sockets through tokio's `try_io`, so a would-block clears
//! the socket's readiness as tokio's own calls do.

use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddr};

use memmap2::MmapMut;

use super::codec;

#[cfg(any(target_os = "linux", target_os = "android"))]
#[path = "batch/mmsg.rs"]
mod sys;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[path = "batch/single.rs"]
mod sys;

pub(super) use sys::{recv, send};

/// Datagrams per system call.
pub(super) const BATCH: usize = 32;
/// Enough for any UDP payload.
const BUF: usize = 64 * 1024;
/// Room in front of each datagram for the longest SOCKS header, so a reply's is written in
/// place.
const HEADROOM: usize = codec::MAX_UDP_HEADER;
const SLOT: usize = HEADROOM + BUF;

/// One association's datagram buffers, [`BATCH`] slots of any UDP payload each, which both
/// directions share (the association's task handles one batch at a time). An anonymous
/// mapping, made once per association: only the pages datagrams touch become resident (a
/// 64-byte ping-pong keeps one), up to 2 MiB for a client that fills every slot with the
/// largest datagrams.
pub(super) struct Slots {
    buf: MmapMut,
    /// Length of each slot's datagram, which starts at `HEADROOM`.
    len: [usize; BATCH],
    /// Who sent each slot's datagram.
    from: [SocketAddr; BATCH],
}

impl Slots {
    pub(super) fn new() -> io::Result<Slots> {
        Ok(Slots {
            buf: MmapMut::map_anon(BATCH * SLOT)?,
            len: [0; BATCH],
            from: [SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)); BATCH],
        })
    }

    /// The datagram received into slot `i`.
    pub(super) fn datagram(&self, i: usize) -> &[u8] {
        &self.buf[i * SLOT + HEADROOM..][..self.len[i]]
    }

    /// Who sent slot `i`'s datagram.
    pub(super) fn source(&self, i: usize) -> SocketAddr {
        self.from[i]
    }

    /// Writes `header` in front of slot `i`'s datagram.
    pub(super) fn prepend(&mut self, i: usize, header: &[u8]) {
        let start = i * SLOT + HEADROOM;
        self.buf[start - header.len()..start].copy_from_slice(header);
    }

    /// Slot `i`'s datagram with the `header_len` octets before it (written by
    /// [`Slots::prepend`]).
    pub(super) fn framed(&self, i: usize, header_len: usize) -> &[u8] {
        let start = i * SLOT + HEADROOM;
        &self.buf[start - header_len..start + self.len[i]]
    }
}

/// The receive areas of the slots in `buf` (a [`Slots`]' buffer), in order.
fn areas(buf: &mut [u8]) -> impl Iterator<Item = &mut [u8]> {
    buf.chunks_exact_mut(SLOT).map(|slot| &mut slot[HEADROOM..])
}

/// Messages of one vectored send: one slice each, at most [`BATCH`].
pub(super) type Messages<'a> = [[IoSlice<'a>; 1]; BATCH];

/// `count` messages, the `k`-th `message(k)`, the rest empty.
pub(super) fn messages<'a>(
    count: usize,
    mut message: impl FnMut(usize) -> &'a [u8],
) -> Messages<'a> {
    std::array::from_fn(|k| [IoSlice::new(if k < count { message(k) } else { &[] })])
}

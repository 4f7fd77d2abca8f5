//! `recvmmsg` and `sendmmsg` through nix. Its message headers hold raw pointers, so they
//! cannot live in the association's (sendable) future: each thread keeps one set per use,
//! made once. A receive set is per address family because the kernel leaves each header's
//! address length at what it last wrote, the same for every datagram of one family.

use std::cell::RefCell;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn, SockaddrIn6,
    SockaddrLike,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::{areas, Slots, BATCH};

thread_local! {
    static RECV_V4: RefCell<MultiHeaders<SockaddrIn>> = RefCell::new(MultiHeaders::preallocate(BATCH, None));
    static RECV_V6: RefCell<MultiHeaders<SockaddrIn6>> = RefCell::new(MultiHeaders::preallocate(BATCH, None));
    // Sends name no address (the sockets are connected). A set of their own: a receive would
    // have the kernel write a source address where a send left none.
    static SEND: RefCell<MultiHeaders<()>> = RefCell::new(MultiHeaders::preallocate(BATCH, None));
}

const NO_ADDRESSES: [Option<()>; BATCH] = [None; BATCH];

/// Receives up to [`BATCH`] datagrams from `socket` (an IPv6 one when `ipv6`) into `slots`;
/// returns how many, or the error of the first.
///
/// A short batch clears the socket's readiness as a would-block does: on a non-blocking
/// socket `recvmmsg` stops short only at an error, the would-block of an empty queue or an
/// error that came during the call, and whatever comes after that wakes the socket again
/// (tokio counts wake-ups, so a clear never hides a later one). That saves the empty read
/// after each datagram of a ping-pong.
pub(in crate::socks5::udp) fn recv(
    socket: &UdpSocket,
    slots: &mut Slots,
    ipv6: bool,
) -> io::Result<usize> {
    let mut received = 0;
    let result = socket.try_io(Interest::READABLE, || {
        let fd = socket.as_raw_fd();
        received = if ipv6 {
            RECV_V6.with_borrow_mut(|headers| recv_into(fd, headers, slots))
        } else {
            RECV_V4.with_borrow_mut(|headers| recv_into(fd, headers, slots))
        }?;
        match received {
            BATCH => Ok(()),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    });
    match result {
        Err(error) if received == 0 => Err(error),
        _ => Ok(received),
    }
}

fn recv_into<S>(
    fd: std::os::fd::RawFd,
    headers: &mut MultiHeaders<S>,
    slots: &mut Slots,
) -> io::Result<usize>
where
    S: SockaddrLike + Copy + Into<SocketAddr>,
{
    let Slots { buf, len, from } = slots;
    let mut areas = areas(buf);
    let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
        std::array::from_fn(|_| [IoSliceMut::new(areas.next().unwrap_or_default())]);
    let received = recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::empty(), None)?;
    let mut n = 0;
    for (i, message) in received.enumerate() {
        len[i] = message.bytes;
        if let Some(address) = message.address {
            from[i] = address.into();
        }
        n = i + 1;
    }
    Ok(n)
}

/// Sends `messages` on connected `socket` in one call; returns how many went (at least one),
/// or the error of the first.
pub(in crate::socks5::udp) fn send(
    socket: &UdpSocket,
    messages: &[[IoSlice<'_>; 1]],
) -> io::Result<usize> {
    socket.try_io(Interest::WRITABLE, || {
        SEND.with_borrow_mut(|headers| {
            let no_cmsgs: [ControlMessage<'_>; 0] = [];
            let sent = sendmmsg(
                socket.as_raw_fd(),
                headers,
                messages,
                &NO_ADDRESSES[..messages.len()],
                no_cmsgs,
                MsgFlags::empty(),
            )?;
            Ok(sent.count())
        })
    })
}

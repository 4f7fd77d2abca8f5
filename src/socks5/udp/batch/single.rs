//! One system call per datagram, for systems without `recvmmsg`/`sendmmsg`.

use std::io::{self, IoSlice};

use tokio::net::UdpSocket;

use super::{areas, Slots};

/// Receives up to [`super::BATCH`] datagrams from `socket` into `slots`; returns how many, or
/// the error of the first.
pub(in crate::socks5::udp) fn recv(
    socket: &UdpSocket,
    slots: &mut Slots,
    _ipv6: bool,
) -> io::Result<usize> {
    let Slots { buf, len, from } = slots;
    let mut n = 0;
    for (i, area) in areas(buf).enumerate() {
        match socket.try_recv_from(area) {
            Ok((bytes, source)) => {
                len[i] = bytes;
                from[i] = source;
                n = i + 1;
            }
            Err(_) if n > 0 => break,
            Err(error) => return Err(error),
        }
    }
    Ok(n)
}

/// Sends `messages` on connected `socket`; returns how many went (at least one), or the error
/// of the first.
pub(in crate::socks5::udp) fn send(
    socket: &UdpSocket,
    messages: &[[IoSlice<'_>; 1]],
) -> io::Result<usize> {
    let mut n = 0;
    for [message] in messages {
        match socket.try_send(message) {
            Ok(_) => n += 1,
            Err(_) if n > 0 => break,
            Err(error) => return Err(error),
        }
    }
    Ok(n)
}

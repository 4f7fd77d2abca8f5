//! The helper stage's line to the proxy: one `SOCK_SEQPACKET` Unix socket pair, so each
//! message arrives whole, with file descriptors passed as `SCM_RIGHTS`.
//!
//! A message is a tag byte and its payload:
//!
//! | tag | from | payload | fds |
//! |---|---|---|---|
//! | `U` | helper | (namespaces entered) | |
//! | `M` | proxy | (uid and gid maps written) | |
//! | `R` | helper | (listeners ready) | HTTP, then SOCKS5 if asked for |
//! | `E` | helper | why a step failed (UTF-8) | |
//! | `S` | proxy | the command's environment: `NAME\0VALUE\0`… | its stdin, if the proxy has one |
//! | `D` | proxy | a UDP relay socket on this IP (text) | |
//! | `d` | helper | (the socket) or why not (UTF-8) | the socket |

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

pub const UNSHARED: u8 = b'U';
pub const MAPPED: u8 = b'M';
pub const READY: u8 = b'R';
pub const FAILED: u8 = b'E';
pub const SPAWN: u8 = b'S';
pub const UDP: u8 = b'D';
pub const UDP_ANSWER: u8 = b'd';

/// The most file descriptors one message carries.
const MAX_FDS: usize = 2;
/// The largest message: an environment of proxy variables is a few KiB.
const MAX_MESSAGE: usize = 64 * 1024;

/// One message: its tag, payload and file descriptors.
#[derive(Debug)]
pub struct Message {
    pub tag: u8,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// Sends one message (blocking or not, as the socket is).
pub fn send(
    socket: BorrowedFd<'_>,
    tag: u8,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors",
        ));
    }
    let tag = [tag];
    let iov = [IoSlice::new(&tag), IoSlice::new(payload)];
    sendmsg(socket, &iov, &mut control, SendFlags::NOSIGNAL)?;
    Ok(())
}

/// Receives one message; `None` when the other end has closed.
pub fn recv(socket: BorrowedFd<'_>) -> io::Result<Option<Message>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buf = vec![0u8; MAX_MESSAGE];
    let got = recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got
        .flags
        .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message truncated",
        ));
    }
    if got.bytes == 0 {
        return Ok(None);
    }
    buf.truncate(got.bytes);
    let tag = buf.remove(0);
    Ok(Some(Message {
        tag,
        payload: buf,
        fds,
    }))
}

/// The socket pair's end on a tokio runtime. Tokio has no sequenced-packet socket type; a
/// `UnixDatagram` registers any Unix socket for readiness, and every message goes through
/// [`send`] and [`recv`] on its descriptor.
pub struct Channel {
    socket: UnixDatagram,
}

impl Channel {
    /// Wraps `fd`, making it non-blocking.
    pub fn new(fd: OwnedFd) -> io::Result<Channel> {
        let socket = std::os::unix::net::UnixDatagram::from(fd);
        socket.set_nonblocking(true)?;
        Ok(Channel {
            socket: UnixDatagram::from_std(socket)?,
        })
    }

    pub async fn send(&self, tag: u8, payload: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        self.socket
            .async_io(Interest::WRITABLE, || {
                send(self.socket.as_fd(), tag, payload, fds)
            })
            .await
    }

    pub async fn recv(&self) -> io::Result<Option<Message>> {
        self.socket
            .async_io(Interest::READABLE, || recv(self.socket.as_fd()))
            .await
    }
}

/// Checks a received message's tag: an `E` becomes its text as the error, the end of the
/// channel `None`.
pub fn expect(message: Option<Message>, tag: u8) -> Result<Message, Option<String>> {
    match message {
        Some(message) if message.tag == tag => Ok(message),
        Some(message) if message.tag == FAILED => {
            Err(Some(String::from_utf8_lossy(&message.payload).into_owned()))
        }
        Some(message) => Err(Some(format!(
            "unexpected message `{}` from the isolation helper",
            char::from(message.tag).escape_default()
        ))),
        None => Err(None),
    }
}

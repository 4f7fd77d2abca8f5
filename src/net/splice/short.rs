//! The start of every tunnel direction: bytes go through a user-space buffer until a read
//! fills it or more than [`SWITCH_AFTER`] bytes have moved (see [`super`] for why these two
//! signs). The buffer is allocated, not zeroed, when the direction starts and freed when it
//! turns bulk: measured, a 16 KiB malloc and free cost ~25 ns, zeroing an array held in the
//! relay future ~80 ns, and that array would make every connection's task 32 KiB larger.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpStream;

use super::Clock;

/// The user-space buffer of one direction, and the read that fills it: the sign of a bulk
/// transfer (on loopback and fast links a bulk sender keeps more than this queued).
pub(super) const BUF: usize = 16 * 1024;

/// Bytes a direction copies, in reads smaller than [`BUF`], before it splices anyway.
pub(super) const SWITCH_AFTER: u64 = 64 * 1024;

/// How the copy phase of one direction ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Copied {
    /// `from` sent EOF: the tunnel carried no bulk data this way.
    Eof,
    /// Everything read so far was written out; splice the rest.
    Bulk,
}

/// Copies `from` to `to` until EOF or until the tunnel proves bulk; every byte read is counted
/// and written before it returns, so the splice that follows starts at the next byte.
pub(super) async fn copy_until_bulk(
    from: &TcpStream,
    to: &TcpStream,
    count: &AtomicU64,
    clock: &Clock,
) -> io::Result<Copied> {
    let mut buf = Vec::with_capacity(BUF);
    let mut moved = 0u64;
    loop {
        buf.clear();
        let n = read(from, &mut buf).await?;
        if n == 0 {
            return Ok(Copied::Eof);
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        clock.touch();
        write_all(to, &buf).await?;
        moved += n as u64;
        if n >= BUF || moved > SWITCH_AFTER {
            return Ok(Copied::Bulk);
        }
    }
}

/// One read into `buf`'s spare capacity (not zeroed first), up to [`BUF`] bytes.
async fn read(from: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        from.readable().await?;
        match from.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
    }
}

async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

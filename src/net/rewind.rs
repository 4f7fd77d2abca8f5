//! A stream that first gives back bytes already read from it: what a client sent behind its
//! CONNECT request before the 200 (a pipelined TLS ClientHello) belongs to the TLS session
//! the interception engine accepts on the socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, read after `early`; writes go straight to `inner`.
pub struct Rewind<S> {
    early: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(early: Bytes, inner: S) -> Self {
        Rewind { early, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early[..n]);
            self.early.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn early_bytes_come_first_then_the_stream_and_writes_pass_through() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut rewound = Rewind::new(Bytes::from_static(b"hello "), a);
        b.write_all(b"world").await.unwrap();
        drop(b.shutdown().await);
        let mut got = Vec::new();
        let mut small = [0u8; 4];
        // A buffer smaller than the early bytes takes them in pieces.
        let n = rewound.read(&mut small).await.unwrap();
        got.extend_from_slice(&small[..n]);
        rewound.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello world");
        rewound.write_all(b"back").await.unwrap();
    }
}

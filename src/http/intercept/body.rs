//! The bodies of a forwarded request and its response, streamed frame by frame: the request's
//! counts what goes up; the response's counts what comes down, hands an HTTP/1.1 origin
//! connection back to the pool once the body is complete, and reports the request when the
//! client is done with it (or abandons it).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::Method;

use super::origin::Kept;
use super::request::Exchange;
use crate::audit::Outcome;

/// The client's request body on its way to the origin.
pub(super) struct Counted {
    inner: Incoming,
    up: Arc<AtomicU64>,
}

impl Counted {
    pub(super) fn new(inner: Incoming, up: Arc<AtomicU64>) -> Self {
        Counted { inner, up }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &frame {
            if let Some(data) = frame.data_ref() {
                this.up.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The origin's response body on its way to the client.
pub(super) struct Tracked {
    inner: Incoming,
    kept: Option<Kept>,
    report: Report,
}

/// What the request's record says once its response is done.
pub(super) struct Report {
    pub(super) exchange: Arc<Exchange>,
    pub(super) method: Method,
    pub(super) path: Box<str>,
    pub(super) status: u16,
    pub(super) up: Arc<AtomicU64>,
    pub(super) down: u64,
}

impl Tracked {
    pub(super) fn new(inner: Incoming, kept: Option<Kept>, report: Report) -> Self {
        Tracked {
            inner,
            kept,
            report,
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.report.down += data.len() as u64;
                }
            }
            // Complete: the connection can take the next request now, not when hyper drops
            // the body.
            Poll::Ready(None) => {
                if let Some(kept) = this.kept.take() {
                    kept.release();
                }
            }
            Poll::Ready(Some(Err(_))) => this.kept = None,
            Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // A body that ends without a frame (HEAD, 204) is never polled to its end.
        if self.inner.is_end_stream() {
            if let Some(kept) = self.kept.take() {
                kept.release();
            }
        }
        let r = &self.report;
        r.exchange.done(
            &r.method,
            &r.path,
            r.status,
            Outcome::Forwarded,
            None,
            [r.up.load(Ordering::Relaxed), r.down],
        );
    }
}

//! What every relay shares: its byte counts and the idle clock that ends it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// What went through a finished relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client to upstream.
    pub up: u64,
    /// Upstream to client.
    pub down: u64,
    /// The relay ended because neither side sent anything for the idle timeout.
    pub idle_timeout: bool,
}

/// Last activity, in milliseconds since the relay started.
pub(super) struct Clock {
    start: Instant,
    last: AtomicU64,
}

impl Clock {
    pub(super) fn new() -> Self {
        Clock {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub(super) fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    pub(super) async fn idle(&self, idle: Duration) {
        loop {
            let seen = self.last.load(Ordering::Relaxed);
            tokio::time::sleep_until(self.start + Duration::from_millis(seen) + idle).await;
            if self.last.load(Ordering::Relaxed) == seen {
                return;
            }
        }
    }
}

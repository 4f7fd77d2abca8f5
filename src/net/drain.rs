//! Graceful shutdown: a stop signal every connection can watch, and a count of the
//! connections still open so the server can wait for them with a deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

#[derive(Debug, Default)]
struct Open {
    count: AtomicUsize,
    changed: Notify,
}

/// The listeners' side: watch for the stop signal, and hold a [`Guard`] per open connection.
#[derive(Clone, Debug)]
pub struct Drain {
    open: Arc<Open>,
    stop: watch::Receiver<bool>,
}

/// The owner's side: signal stop, then wait for the connections to finish.
#[derive(Debug)]
pub struct DrainHandle {
    open: Arc<Open>,
    stop: watch::Sender<bool>,
}

/// Counts one open connection (or tunnel) until dropped.
#[derive(Debug)]
pub struct Guard(Arc<Open>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

pub fn channel() -> (DrainHandle, Drain) {
    let open = Arc::new(Open::default());
    let (stop, watch) = watch::channel(false);
    (
        DrainHandle {
            open: Arc::clone(&open),
            stop,
        },
        Drain { open, stop: watch },
    )
}

impl Drain {
    pub fn guard(&self) -> Guard {
        self.open.count.fetch_add(1, Ordering::AcqRel);
        Guard(Arc::clone(&self.open))
    }

    /// Completes once stop has been signalled (immediately if it already was).
    pub async fn stopping(&self) {
        let mut stop = self.stop.clone();
        if stop.wait_for(|stopped| *stopped).await.is_err() {
            // The handle is gone without signalling: nobody can stop us any more.
            std::future::pending::<()>().await;
        }
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.count.load(Ordering::Acquire)
    }
}

impl DrainHandle {
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Waits until every guard is dropped or the deadline passes; returns how many were
    /// still open.
    pub async fn wait(&self, deadline: Duration) -> usize {
        let open = &self.open;
        let drained = async {
            loop {
                let changed = open.changed.notified();
                if open.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                changed.await;
            }
        };
        let _ = tokio::time::timeout(deadline, drained).await;
        open.count.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_guards_up_to_the_deadline() {
        let (handle, drain) = channel();
        let a = drain.guard();
        let b = drain.guard();
        assert_eq!(drain.open(), 2);
        let stopping = tokio::spawn({
            let drain = drain.clone();
            async move { drain.stopping().await }
        });
        handle.stop();
        stopping.await.unwrap();
        drop(a);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(b);
        });
        assert_eq!(handle.wait(Duration::from_secs(5)).await, 0);
        let _stuck = drain.guard();
        assert_eq!(handle.wait(Duration::from_secs(2)).await, 1);
    }
}

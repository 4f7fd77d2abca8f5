//! The accept loop every listener uses: a connection cap, accept errors that never kill the
//! loop, and a shutdown signal that stops accepting.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What to do after an accept error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptError {
    /// The peer gave up before we accepted it: try again at once.
    Retry,
    /// Out of file descriptors or memory: back off so others can finish, then try again.
    Backoff,
}

pub fn classify_accept_error(err: &io::Error) -> AcceptError {
    match err.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock => AcceptError::Retry,
        _ => AcceptError::Backoff,
    }
}

/// Accepts until `shutdown` completes. Each connection is handed to `handle` in its own task
/// with a permit from `slots`, or with `None` when the cap is reached, so the protocol can
/// answer "busy" (HTTP 503) instead of leaving the client hanging.
pub async fn accept_loop<H, Fut>(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    shutdown: impl Future<Output = ()>,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr, Option<OwnedSemaphorePermit>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let permit = Arc::clone(&slots).try_acquire_owned().ok();
                tokio::spawn(handle(stream, peer, permit));
            }
            Err(err) => match classify_accept_error(&err) {
                AcceptError::Retry => {}
                AcceptError::Backoff => {
                    tracing::warn!(error = %err, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified() {
        use io::ErrorKind::*;
        for kind in [ConnectionAborted, ConnectionReset, Interrupted, WouldBlock] {
            assert_eq!(
                classify_accept_error(&kind.into()),
                AcceptError::Retry,
                "{kind:?}"
            );
        }
        let emfile = io::Error::from_raw_os_error(24);
        assert_eq!(classify_accept_error(&emfile), AcceptError::Backoff);
        assert_eq!(
            classify_accept_error(&OutOfMemory.into()),
            AcceptError::Backoff
        );
    }
}

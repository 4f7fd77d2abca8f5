//! The admin API (`admin_url`, loopback unless `dangerously_allow_non_loopback_admin`) and the
//! Prometheus metrics endpoint.
//!
//! | method | path | auth | answer |
//! |---|---|---|---|
//! | `GET` | `/health` | none | `200 {"status":"ok"}` |
//! | `GET` | `/config` | none | the effective configuration, the JSON of `validate --json` (with the running mode) |
//! | `GET` | `/patterns` | none | `{"mode": "full"\|"limited", "rules": [{"pattern", "action", "origin", "managed"}]}` |
//! | `GET` | `/blocked` | none | `{"blocked": [{"time", "protocol", "host", "port", "reason", "rule"}]}`, oldest first (bounded ring) |
//! | `GET` | `/metrics` | none | Prometheus text (`text/plain; version=0.0.4`); `503` when no recorder is installed |
//! | `GET` | `/check?target=T[&target=T2…][&no_dns=1]` | none (bearer for private answers) | one `check --json` line per target (`application/x-ndjson`); without the token, resolved answers that are not public are left out and counted in `ips_hidden` |
//! | `POST` | `/mode` | bearer | body `{"mode": "limited"\|"full"}` → `200 {"mode": …}` |
//! | `POST` | `/reload` | bearer | `200 {"reloaded": true}`, or `422 {"reloaded": false, "error": "<one line>"}` and the running policy is kept |
//!
//! `GET` routes also answer `HEAD`. Mutating calls need `Authorization: Bearer <token>`
//! (compared in constant time), else `401` with `WWW-Authenticate: Bearer`: the sandboxed
//! child can reach loopback too, so it must not be able to loosen its own policy. Reads need
//! no token, but `/check` shows the private DNS answers of a name only with it. An unknown path
//! is `404`, a known path with another method `405` with `Allow`, a request body over 4 KiB
//! `413`, a bad body or query `400`. Every body except `/metrics` is JSON (`/check`: one JSON
//! object per line; errors: `{"error": "…"}`).
//!
//! `Host` must name the listener (its own `ip:port`, or `localhost`, `127.0.0.1`, `[::1]` in
//! any spelling, with any port), else `421`; HTTP/1.1 without `Host` is `400`. A web page the
//! operator visits can rebind its own name to loopback, but its requests still carry that
//! name.
//!
//! Capacity: connections waiting for a request head (new or idle between requests) are closed
//! after 5 s, and at most [`WAITING`] wait at once: a new one evicts the oldest. Requests
//! without the token share [`SHARED_REQUESTS`] slots, requests with it have
//! [`RESERVED_REQUESTS`] of their own; over either, `503`. So idle or slow connections from the
//! sandboxed child (on loopback every peer is 127.0.0.1) cannot lock the operator out.
//!
//! The token comes from `[admin] token_file`, or is generated at start and written 0600 to
//! `$XDG_RUNTIME_DIR/egress-proxy/admin-token` (else a new 0700 directory
//! `<temp dir>/egress-proxy-<pid>/`); `serve` logs the file, never the token ([`token`]).
//!
//! The metrics `/metrics` renders are named and described in [`crate::metrics`]. The
//! handlers are in `routes`.

mod routes;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};

use crate::control::Control;

pub use crate::token::AdminToken;

/// What the admin listener needs besides the running proxy.
#[derive(Clone)]
pub struct AdminOptions {
    /// The bearer token mutating calls must present.
    pub token: Arc<str>,
    /// The installed Prometheus recorder; `/metrics` answers 503 without one.
    pub metrics: Option<PrometheusHandle>,
}

impl std::fmt::Debug for AdminOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminOptions")
            .field("token", &"<redacted>")
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

/// Largest request body accepted (`POST /mode` needs a few bytes).
pub const MAX_BODY: usize = 4 * 1024;
/// Most targets one `/check` request may ask about.
pub const MAX_CHECK_TARGETS: usize = 32;
/// Open admin sockets at most (the rest get `503`): the waiting and request slots below, with
/// room for evicted connections that are still closing.
const MAX_CONNECTIONS: usize = 256;
/// Connections waiting for a request head at once; a new one evicts the oldest.
pub const WAITING: usize = 64;
/// Requests without the bearer token served at once.
pub const SHARED_REQUESTS: usize = 32;
/// Requests with the bearer token served at once, apart from the others.
pub const RESERVED_REQUESTS: usize = 8;
/// How long a connection may take to send a request head (the first, or the next one).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request body may take to arrive, and a closing connection to finish.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's read buffer, which bounds the request head (at least 8 KiB).
const MAX_BUF_BYTES: usize = 16 * 1024;
/// How often histogram samples are folded into buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Shared by every admin connection.
struct State {
    control: Arc<Control>,
    token: Arc<str>,
    metrics: Option<PrometheusHandle>,
    waiting: Arc<Waiting>,
    /// [`SHARED_REQUESTS`] slots for requests without the token.
    shared: Semaphore,
    /// [`RESERVED_REQUESTS`] slots for requests with it.
    reserved: Semaphore,
}

/// The connections waiting for a request head, oldest first, each with the signal that
/// evicts it. A queue, not a cap that refuses: a hostile local process that keeps
/// [`WAITING`] idle connections open only ever pushes out its own oldest ones.
#[derive(Default)]
struct Waiting {
    queue: Mutex<VecDeque<(u64, Arc<Notify>)>>,
    next_id: AtomicU64,
}

impl Waiting {
    fn queue(&self) -> MutexGuard<'_, VecDeque<(u64, Arc<Notify>)>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new connection, waiting for its first request head.
    fn join(self: &Arc<Self>) -> Waiter {
        let waiter = Waiter {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            evicted: Arc::new(Notify::new()),
            waiting: Arc::clone(self),
        };
        waiter.wait();
        waiter
    }
}

/// One connection's place in [`Waiting`]; it leaves the queue when dropped.
struct Waiter {
    id: u64,
    evicted: Arc<Notify>,
    waiting: Arc<Waiting>,
}

impl Waiter {
    /// Back in the queue, waiting for the next request head; evicts the oldest waiting
    /// connection when the queue is full.
    fn wait(&self) {
        let mut queue = self.waiting.queue();
        if queue.len() >= WAITING {
            if let Some((_, oldest)) = queue.pop_front() {
                oldest.notify_one();
            }
        }
        queue.push_back((self.id, Arc::clone(&self.evicted)));
    }

    /// A request head arrived: out of the queue (so never evicted) until its reply is ready.
    fn serve(&self) {
        self.waiting.queue().retain(|(id, _)| *id != self.id);
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.serve();
    }
}

/// Serves the admin API on a bound listener until `shutdown` completes; then open admin
/// connections finish their current request and close.
pub async fn serve(
    listener: TcpListener,
    control: Arc<Control>,
    options: AdminOptions,
    shutdown: impl Future<Output = ()>,
) {
    let state = Arc::new(State {
        control,
        token: options.token,
        metrics: options.metrics,
        waiting: Arc::default(),
        shared: Semaphore::new(SHARED_REQUESTS),
        reserved: Semaphore::new(RESERVED_REQUESTS),
    });
    let upkeep = state.metrics.clone().map(|handle| {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        })
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        stop_tx.send_replace(true);
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    crate::net::listener::accept_loop(listener, slots, shutdown, move |stream, peer, permit| {
        let state = Arc::clone(&state);
        let stop = stop_rx.clone();
        async move {
            match permit {
                Some(_permit) => serve_connection(stream, peer, state, stop).await,
                None => {
                    let mut stream = stream;
                    let _ = stream.write_all(BUSY).await;
                    let _ = stream.shutdown().await;
                }
            }
        }
    })
    .await;
    if let Some(upkeep) = upkeep {
        upkeep.abort();
    }
}

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 38\r\nconnection: close\r\n\r\n{\"error\":\"too many admin connections\"}";

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // The address this client reached, so `Host` is checked against what it really dialled
    // (also behind a listener on an unspecified address).
    let Ok(own) = stream.local_addr() else {
        return;
    };
    let waiter = Arc::new(state.waiting.join());
    let evicted = Arc::clone(&waiter.evicted);
    let service = service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&state);
        let waiter = Arc::clone(&waiter);
        async move {
            waiter.serve();
            let reply = routes::handle(req, &state, own).await;
            waiter.wait();
            Ok::<_, Infallible>(reply)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_BUF_BYTES)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let stopping = async {
        if stop.wait_for(|stopped| *stopped).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = evicted.notified() => {
            tracing::debug!(%peer, "idle admin connection evicted by a newer one");
            Ok(())
        }
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(BODY_TIMEOUT, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "admin connection ended with an error");
    }
}

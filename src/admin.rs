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
//! Metric names (all from the `metrics` facade; see [`install_metrics`]):
//! `egress_decisions_total{protocol,verdict,reason}`, `egress_bytes_total{protocol,direction}`,
//! `egress_active_tunnels{protocol}`, `egress_reloads_total{result}`,
//! `egress_dns_lookup_seconds{result}` and `egress_connect_seconds{result}` (histograms, seconds),
//! `egress_audit_write_errors_total`.

pub mod token;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};

use crate::control::Control;
use crate::policy::{Host, Mode, Target};
use crate::report;

pub use token::AdminToken;

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
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's read buffer, which bounds the request head (at least 8 KiB).
const MAX_BUF_BYTES: usize = 16 * 1024;
/// How often histogram samples are folded into buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Histogram buckets, in seconds: DNS lookups and connects take from well under a millisecond
/// on loopback to the multi-second timeouts.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the Prometheus recorder as the process's `metrics` recorder, once per process;
/// later calls return the same handle. `None` when another recorder was installed first.
pub fn install_metrics() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets(SECONDS_BUCKETS)
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    describe_metrics();
                    Some(handle)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot install the metrics recorder; /metrics is disabled");
                    None
                }
            }
        })
        .clone()
}

fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "egress_decisions_total",
        "Policy decisions by protocol, verdict and reason code"
    );
    describe_counter!(
        "egress_bytes_total",
        Unit::Bytes,
        "Bytes relayed for allowed connections, by protocol and direction (up = client to destination)"
    );
    describe_gauge!(
        "egress_active_tunnels",
        "Open tunnels (CONNECT, SOCKS5 TCP), by protocol"
    );
    describe_gauge!("egress_udp_associations", "Open SOCKS5 UDP associations");
    describe_counter!(
        "egress_udp_datagrams_total",
        "Client datagrams of closed UDP associations: relayed, denied by policy, dropped (fragments, malformed, foreign source)"
    );
    describe_counter!(
        "egress_reloads_total",
        "Policy reloads (SIGHUP or POST /reload) by result"
    );
    describe_histogram!(
        "egress_dns_lookup_seconds",
        Unit::Seconds,
        "DNS lookup latency by result"
    );
    describe_histogram!(
        "egress_connect_seconds",
        Unit::Seconds,
        "Latency of connecting to a checked destination address, by result"
    );
    describe_counter!(
        "egress_audit_write_errors_total",
        "Audit lines that could not be written"
    );
}

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
            let reply = handle(req, &state, own).await;
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

/// The routes, with the methods each accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Health,
    Config,
    Patterns,
    Blocked,
    Metrics,
    Check,
    Mode,
    Reload,
}

impl Route {
    fn find(path: &str) -> Option<Route> {
        Some(match path {
            "/health" => Route::Health,
            "/config" => Route::Config,
            "/patterns" => Route::Patterns,
            "/blocked" => Route::Blocked,
            "/metrics" => Route::Metrics,
            "/check" => Route::Check,
            "/mode" => Route::Mode,
            "/reload" => Route::Reload,
            _ => return None,
        })
    }

    fn mutating(self) -> bool {
        matches!(self, Route::Mode | Route::Reload)
    }

    fn allow(self) -> &'static str {
        if self.mutating() {
            "POST"
        } else {
            "GET, HEAD"
        }
    }

    fn accepts(self, method: &Method) -> bool {
        if self.mutating() {
            method == Method::POST
        } else {
            method == Method::GET || method == Method::HEAD
        }
    }
}

type Reply = Response<Full<Bytes>>;

async fn handle(req: Request<Incoming>, state: &Arc<State>, own: SocketAddr) -> Reply {
    if let Some(refusal) = misdirected(&req, own) {
        return refusal;
    }
    let presented = bearer(&req);
    let authenticated = presented.is_some_and(|t| token::matches(&state.token, t));
    let slots = if authenticated {
        &state.reserved
    } else {
        &state.shared
    };
    let Ok(_slot) = slots.try_acquire() else {
        let mut reply = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many admin requests at once; retry shortly",
        );
        reply
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return reply;
    };
    let Some(route) = Route::find(req.uri().path()) else {
        return error(StatusCode::NOT_FOUND, "no such endpoint");
    };
    if !route.accepts(req.method()) {
        let mut reply = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!(
                "{} is not allowed here; use {}",
                req.method(),
                route.allow()
            ),
        );
        reply
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(route.allow()));
        return reply;
    }
    if route.mutating() && !authenticated {
        return unauthorized(presented.is_some());
    }
    match route {
        Route::Health => json_reply(StatusCode::OK, &json!({"status": "ok"})),
        Route::Config => config(state),
        Route::Patterns => patterns(state),
        Route::Blocked => json_reply(
            StatusCode::OK,
            &json!({"blocked": state.control.events().recent_denials()}),
        ),
        Route::Metrics => metrics(state),
        Route::Check => check(req.uri().query().unwrap_or(""), state, authenticated).await,
        Route::Mode => match read_body(req).await {
            Ok(body) => set_mode(&body, state),
            Err((status, message)) => error(status, &message),
        },
        Route::Reload => match read_body(req).await {
            Ok(_) => reload(state).await,
            Err((status, message)) => error(status, &message),
        },
    }
}

/// The token of `Authorization: Bearer <token>`, if the request carries one.
fn bearer(req: &Request<Incoming>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start())
}

/// The `401` for a mutating call without the right token (`presented`: a wrong one).
fn unauthorized(presented: bool) -> Reply {
    let (challenge, message) = if presented {
        (
            "Bearer realm=\"egress-proxy\", error=\"invalid_token\"",
            "invalid bearer token",
        )
    } else {
        (
            "Bearer realm=\"egress-proxy\"",
            "this call needs `Authorization: Bearer <token>` (see the admin token file named at startup)",
        )
    };
    let mut reply = error(StatusCode::UNAUTHORIZED, message);
    reply.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    reply
}

/// The refusal of a request that does not name this listener: `400` for HTTP/1.1 without
/// exactly one `Host`, `421` when `Host` (or an absolute-form target's authority) names
/// anything but the listener's own `ip:port` or a loopback name.
fn misdirected(req: &Request<Incoming>, own: SocketAddr) -> Option<Reply> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Some(error(StatusCode::BAD_REQUEST, "more than one Host header")),
        (Some(host), None) => Some(host),
        (None, None) if req.version() == Version::HTTP_11 => {
            return Some(error(StatusCode::BAD_REQUEST, "missing Host header"))
        }
        (None, None) => None,
    };
    let named = req.uri().authority().map(|a| a.as_str().as_bytes());
    for authority in named.into_iter().chain(host.map(HeaderValue::as_bytes)) {
        let text = std::str::from_utf8(authority).ok();
        if !text.is_some_and(|a| names_listener(a, own)) {
            let shown = String::from_utf8_lossy(authority);
            return Some(error(
                StatusCode::MISDIRECTED_REQUEST,
                &format!(
                    "Host `{}` does not name this admin API; use {own}, localhost, 127.0.0.1 or [::1]",
                    shown.escape_debug()
                ),
            ));
        }
    }
    None
}

/// Whether an authority (`host[:port]`) names the listener at `own`: `localhost`,
/// `127.0.0.1` or `::1` (in any spelling) with any port (a tunnel may forward another port to it), or `own`'s
/// address with its port. Parsed by the canonicaliser every listener uses, so addresses are
/// compared as addresses, never as text.
fn names_listener(authority: &str, own: SocketAddr) -> bool {
    let Ok(target) = Target::parse_authority(authority, Some(80)) else {
        return false;
    };
    match target.host {
        Host::Name(name) => name == "localhost",
        Host::Ip(ip) => {
            let ip = ip.to_canonical();
            ip == IpAddr::V4(Ipv4Addr::LOCALHOST)
                || ip == IpAddr::V6(Ipv6Addr::LOCALHOST)
                || (ip == own.ip().to_canonical() && target.port == own.port())
        }
    }
}

/// The whole body, at most [`MAX_BODY`] bytes, within [`BODY_TIMEOUT`]; or the status and
/// message to refuse it with.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, (StatusCode, String)> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let collect = Limited::new(req.into_body(), MAX_BODY).collect();
    match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(err)) => Err((
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {err}"),
        )),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time".to_string(),
        )),
    }
}

fn config(state: &State) -> Reply {
    let (config, policy) = (state.control.config(), state.control.policy());
    let mut text = report::effective_json(&config, &policy);
    text.push('\n');
    json_text_reply(StatusCode::OK, text.into_bytes())
}

fn patterns(state: &State) -> Reply {
    let policy = state.control.policy();
    json_reply(
        StatusCode::OK,
        &json!({"mode": policy.options().mode.as_str(), "rules": report::rules_json(&policy)}),
    )
}

fn metrics(state: &State) -> Reply {
    let Some(handle) = &state.metrics else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics recorder is installed in this process",
        );
    };
    let mut reply = Response::new(Full::new(Bytes::from(handle.render())));
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    no_store(reply)
}

/// `full`: the request carries the token, so private answers are shown too.
async fn check(query: &str, state: &State, full: bool) -> Reply {
    let mut targets = Vec::new();
    let mut no_dns = false;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "target" => targets.push(value.into_owned()),
            "no_dns" => no_dns = !matches!(&*value, "0" | "false"),
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("unknown query parameter `{}`", other.escape_debug()),
                )
            }
        }
    }
    if targets.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "missing `target` query parameter (host, host:port, [v6]:port or URL)",
        );
    }
    if targets.len() > MAX_CHECK_TARGETS {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("at most {MAX_CHECK_TARGETS} targets per request"),
        );
    }
    let resolver = (!no_dns).then(|| state.control.resolver());
    // Every target is judged by the same policy generation, concurrently, so one slow lookup
    // does not add up with the others.
    let policy = state.control.policy();
    let tasks: Vec<_> = targets
        .into_iter()
        .map(|target| {
            let policy = Arc::clone(&policy);
            let resolver = resolver.clone();
            tokio::spawn(async move {
                let mut outcome = report::check(&policy, resolver.as_deref(), &target).await;
                if !full {
                    outcome.hide_non_public();
                }
                report::json_line(&outcome)
            })
        })
        .collect();
    let mut body = String::new();
    for task in tasks {
        match task.await {
            Ok(line) => {
                body.push_str(&line);
                body.push('\n');
            }
            Err(err) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("check failed: {err}"),
                )
            }
        }
    }
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    no_store(reply)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    mode: Mode,
}

fn set_mode(body: &[u8], state: &State) -> Reply {
    match serde_json::from_slice::<ModeBody>(body) {
        Ok(ModeBody { mode }) => {
            state.control.set_mode(mode);
            json_reply(StatusCode::OK, &json!({"mode": mode.as_str()}))
        }
        Err(err) => error(
            StatusCode::BAD_REQUEST,
            &format!("expected {{\"mode\": \"limited\" | \"full\"}}: {err}"),
        ),
    }
}

async fn reload(state: &State) -> Reply {
    // Reading and compiling the files is blocking work.
    let control = Arc::clone(&state.control);
    match tokio::task::spawn_blocking(move || control.reload()).await {
        Ok(Ok(())) => json_reply(StatusCode::OK, &json!({"reloaded": true})),
        Ok(Err(err)) => json_reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"reloaded": false, "error": err.to_string()}),
        ),
        Err(err) => json_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"reloaded": false, "error": format!("reload failed: {err}")}),
        ),
    }
}

fn json_reply(status: StatusCode, value: &Value) -> Reply {
    let mut text = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    text.push(b'\n');
    json_text_reply(status, text)
}

fn json_text_reply(status: StatusCode, text: Vec<u8>) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(text)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    no_store(reply)
}

fn error(status: StatusCode, message: &str) -> Reply {
    json_reply(status, &json!({"error": message}))
}

fn no_store(mut reply: Reply) -> Reply {
    reply
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_names_the_listener_by_its_own_address_and_port() {
        let own: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        for host in [
            "10.0.0.5:8080",
            "[::ffff:10.0.0.5]:8080",
            "localhost",
            "[::1]:1",
        ] {
            assert!(names_listener(host, own), "{host}");
        }
        for host in [
            "10.0.0.5",
            "10.0.0.5:8081",
            "10.0.0.6:8080",
            "[10.0.0.5]:8080",
        ] {
            assert!(!names_listener(host, own), "{host}");
        }
        let v6: SocketAddr = "[fd00::5]:8080".parse().unwrap();
        assert!(names_listener("[fd00:0::5]:8080", v6));
        assert!(!names_listener("fd00::5:8080", v6));
        let web: SocketAddr = "10.0.0.5:80".parse().unwrap();
        assert!(names_listener("10.0.0.5", web));
    }
}

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
//! | `GET` | `/check?target=T[&target=T2…][&no_dns=1]` | none | one `check --json` line per target (`application/x-ndjson`) |
//! | `POST` | `/mode` | bearer | body `{"mode": "limited"\|"full"}` → `200 {"mode": …}` |
//! | `POST` | `/reload` | bearer | `200 {"reloaded": true}`, or `422 {"reloaded": false, "error": "<one line>"}` and the running policy is kept |
//!
//! `GET` routes also answer `HEAD`. Mutating calls need `Authorization: Bearer <token>`
//! (compared in constant time), else `401` with `WWW-Authenticate: Bearer`: the sandboxed
//! child can reach loopback too, so it must not be able to loosen its own policy. Reads need
//! no token. An unknown path is `404`, a known path with another method `405` with `Allow`,
//! a request body over 4 KiB `413`, a bad body or query `400`. Every body except `/metrics`
//! is JSON (`/check`: one JSON object per line; errors: `{"error": "…"}`).
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

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::policy::Mode;
use crate::report;
use crate::server::Control;

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
/// Admin connections served at once; the rest get `503`.
const MAX_CONNECTIONS: usize = 64;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
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
    let service = service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(handle(req, &state).await) }
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

async fn handle(req: Request<Incoming>, state: &Arc<State>) -> Reply {
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
    if route.mutating() {
        if let Some(refusal) = unauthorized(&req, &state.token) {
            return refusal;
        }
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
        Route::Check => check(req.uri().query().unwrap_or(""), state).await,
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

/// `None` when the request carries `Authorization: Bearer <token>`, else the `401` to send.
fn unauthorized(req: &Request<Incoming>, token: &str) -> Option<Reply> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim_start())
        });
    let (challenge, message) = match presented {
        Some(presented) if token::matches(token, presented) => return None,
        Some(_) => (
            "Bearer realm=\"egress-proxy\", error=\"invalid_token\"",
            "invalid bearer token",
        ),
        None => (
            "Bearer realm=\"egress-proxy\"",
            "this call needs `Authorization: Bearer <token>` (see the admin token file named at startup)",
        ),
    };
    let mut reply = error(StatusCode::UNAUTHORIZED, message);
    reply.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    Some(reply)
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

async fn check(query: &str, state: &State) -> Reply {
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
                let outcome = report::check(&policy, resolver.as_deref(), &target).await;
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
            &json!({"reloaded": false, "error": err}),
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

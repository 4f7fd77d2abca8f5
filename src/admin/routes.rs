//! The admin routes: which paths exist and what each answers, after the checks every request
//! passes first (`Host` names the listener, a free request slot, the method, the token).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{State, BODY_TIMEOUT, MAX_BODY, MAX_CHECK_TARGETS};
use crate::policy::{Host, Mode, Target};
use crate::report;

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

pub(super) async fn handle(req: Request<Incoming>, state: &Arc<State>, own: SocketAddr) -> Reply {
    if let Some(refusal) = misdirected(&req, own) {
        return refusal;
    }
    let presented = bearer(&req);
    let authenticated = presented.is_some_and(|t| crate::token::matches(&state.token, t));
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
                let mut outcome = report::check(&policy, resolver.as_deref(), &target, "GET").await;
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
        Ok(ModeBody { mode }) => match state.control.set_mode(mode) {
            Ok(()) => json_reply(StatusCode::OK, &json!({"mode": mode.as_str()})),
            Err(err) => error(StatusCode::CONFLICT, &err.to_string()),
        },
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

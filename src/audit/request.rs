//! One line per request inside an intercepted TLS tunnel: what was asked (method and path,
//! never the query string or a header value), what it got, and why we refused it if we did.

use std::net::SocketAddr;

use serde::Serialize;

use super::{Dest, Envelope, Events, Protocol};

/// How an intercepted request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Sent to the origin; `status` is the origin's.
    Forwarded,
    /// Answered inside the tunnel by the proxy (policy, fronting, unsupported upgrade).
    Refused,
    /// Allowed, but the origin could not be reached or broke the exchange.
    Failed,
}

impl Outcome {
    /// As the metrics label and the audit line write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// One intercepted request, as the engine reports it to its hooks.
#[derive(Clone, Copy, Debug)]
pub struct RequestRecord<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request path, without its query string.
    pub path: &'a str,
    /// The status the client got.
    pub status: u16,
    /// Whether it reached the origin.
    pub outcome: Outcome,
    /// Our `x-proxy-reason` (or `x-proxy-error`) when we answered.
    pub reason: Option<&'static str>,
    /// Request body bytes sent to the origin.
    pub bytes_up: u64,
    /// Response body bytes sent to the client.
    pub bytes_down: u64,
}

#[derive(Serialize)]
struct RequestLine<'a> {
    #[serde(flatten)]
    envelope: Envelope,
    host: String,
    port: Option<u16>,
    method: &'a str,
    path: &'a str,
    status: u16,
    outcome: Outcome,
    reason: Option<&'static str>,
    bytes_up: u64,
    bytes_down: u64,
}

impl Events {
    /// Records one request inside the intercepted tunnel whose decision line had `id`.
    pub fn request(&self, id: u64, client: SocketAddr, dest: Dest<'_>, r: &RequestRecord<'_>) {
        tracing::debug!(target: "egress_proxy::request", id, %client, dest = %dest, method = r.method, path = r.path, status = r.status, outcome = r.outcome.as_str(), reason = r.reason.unwrap_or(""));
        if self.audit.is_some() {
            self.write(&RequestLine {
                envelope: Envelope::now("request", id, Protocol::Connect, client),
                host: dest.host(),
                port: dest.port(),
                method: r.method,
                path: r.path,
                status: r.status,
                outcome: r.outcome,
                reason: r.reason,
                bytes_up: r.bytes_up,
                bytes_down: r.bytes_down,
            });
        }
    }
}

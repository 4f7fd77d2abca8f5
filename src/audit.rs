//! Everything that happens to a connection, recorded once: the decision log (text through
//! `tracing`, and JSON audit lines), the metrics, and the ring of recent denials that the admin
//! API and `run`'s exit summary read.
//!
//! Field names are constant and stable. Query strings and header values are never recorded:
//! only the destination.

mod request;
mod stats;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::dns::DnsError;
use crate::policy::{Decision, RuleRef, Target};

pub use request::{Outcome, RequestRecord};
pub use stats::{TunnelStats, UdpStats};

/// How a destination was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// A plain-HTTP request through the forward proxy.
    Http,
    /// An HTTP CONNECT tunnel.
    Connect,
    /// A SOCKS5 CONNECT.
    SocksTcp,
    /// A SOCKS5 UDP ASSOCIATE destination.
    SocksUdp,
    /// A plain-HTTP request to a Unix socket (`x-unix-socket`).
    Unix,
}

impl Protocol {
    /// As the audit line and the metrics write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Connect => "connect",
            Protocol::SocksTcp => "socks-tcp",
            Protocol::SocksUdp => "socks-udp",
            Protocol::Unix => "unix",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was asked for, before or after canonicalisation.
#[derive(Clone, Copy, Debug)]
pub enum Dest<'a> {
    /// A canonical destination.
    Target(&'a Target<'a>),
    /// A Unix socket path, as requested.
    Unix(&'a Path),
    /// Input that never became a target (invalid host), as received.
    Raw(&'a str),
}

impl Dest<'_> {
    fn host(&self) -> String {
        match self {
            Dest::Target(t) => t.host.plain(),
            Dest::Unix(path) => path.display().to_string(),
            Dest::Raw(raw) => raw.escape_debug().to_string(),
        }
    }

    fn port(&self) -> Option<u16> {
        match self {
            Dest::Target(t) => Some(t.port),
            Dest::Unix(_) | Dest::Raw(_) => None,
        }
    }
}

impl fmt::Display for Dest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Target(t) => write!(f, "{t}"),
            Dest::Unix(path) => write!(f, "unix:{}", path.display()),
            Dest::Raw(raw) => write!(f, "{}", raw.escape_debug()),
        }
    }
}

/// How an allowed connection ended: bytes each way, how long it lived, and whether a new
/// policy generation closed it.
#[derive(Clone, Copy, Debug)]
pub struct Closed<'a> {
    /// Bytes each way.
    pub stats: TunnelStats,
    /// How long it was open.
    pub duration: Duration,
    /// The decision of the generation (a reload or `POST /mode`) that denied the open
    /// connection and closed it.
    pub revoked: Option<&'a Decision>,
    /// The upstream proxy it went through (its URL without the password).
    pub upstream: Option<&'a str>,
}

/// One recent denial, as `/blocked` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Blocked {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// The listener.
    pub protocol: Protocol,
    /// The host as decided (or the input, for an invalid host).
    pub host: String,
    /// The port, when there was one.
    pub port: Option<u16>,
    /// The reason code.
    pub reason: &'static str,
    /// The rule that decided, if one did.
    pub rule: Option<String>,
}

/// One distinct blocked destination and reason, as `run`'s exit summary lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedDest {
    /// `host:port` (or `unix:/path`, or the invalid input as received).
    pub dest: String,
    /// The reason code.
    pub reason: &'static str,
    /// The rule that decided the first time, if one did.
    pub rule: Option<RuleRef>,
}

/// `run`'s exit summary: every distinct blocked destination and reason, sorted, and whether
/// more were blocked than it keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Sorted by destination, then reason.
    pub blocked: Vec<BlockedDest>,
    /// Distinct destinations past [`SUMMARY`] were blocked too, but are neither listed nor
    /// reported when first blocked.
    pub truncated: bool,
}

/// A destination blocked for the first time with this reason, as [`Events::on_first_denial`]
/// reports it.
#[derive(Clone, Copy, Debug)]
pub struct FirstDenial<'a> {
    /// The listener it was asked through.
    pub protocol: Protocol,
    /// What was asked for.
    pub dest: Dest<'a>,
    /// The denial.
    pub decision: &'a Decision,
    /// Why the lookup failed, for `dns-failed`.
    pub dns: Option<&'a DnsError>,
}

/// Called once per distinct blocked destination and reason, on the connection's task: it must
/// be quick (a line on stderr), and it never runs for an allowed decision.
pub type DenialHook = Box<dyn Fn(&FirstDenial<'_>) + Send + Sync>;

/// How many recent denials `/blocked` keeps.
const RING: usize = 256;
/// How many distinct blocked destinations `run` reports and summarises: a child that asks for
/// endless names cannot grow the proxy's memory or flood the terminal.
pub const SUMMARY: usize = 1024;

#[derive(Default)]
struct Denials {
    recent: VecDeque<Blocked>,
    /// `(host:port, reason)` → the rule, for the live line and the deduplicated summary.
    distinct: BTreeMap<(String, &'static str), Option<RuleRef>>,
    truncated: bool,
}

/// The sink every listener reports to. One per proxy process; cheap to share in an `Arc`.
pub struct Events {
    audit: Option<Mutex<Box<dyn Write + Send>>>,
    denials: Mutex<Denials>,
    next_id: AtomicU64,
    on_first_denial: Option<DenialHook>,
    /// Allowed decisions are logged at INFO instead of DEBUG while this is set.
    allowed_at_info: AtomicBool,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("audit", &self.audit.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new(None)
    }
}

/// What every audit line starts with.
#[derive(Serialize)]
struct Envelope {
    time: String,
    event: &'static str,
    id: u64,
    protocol: Protocol,
    client: SocketAddr,
}

impl Envelope {
    fn now(event: &'static str, id: u64, protocol: Protocol, client: SocketAddr) -> Self {
        Envelope {
            time: rfc3339(SystemTime::now()),
            event,
            id,
            protocol,
            client,
        }
    }
}

#[derive(Serialize)]
struct DecisionLine<'a> {
    #[serde(flatten)]
    envelope: Envelope,
    host: String,
    port: Option<u16>,
    verdict: &'static str,
    reason: &'static str,
    rule: Option<&'a str>,
    /// `policy`, or `decider` when the embedder's decider was asked.
    decided_by: &'static str,
    ip: Option<String>,
    class: Option<&'static str>,
    /// The class a declared public range overrode for `ip` (`class` is then `public`).
    #[serde(skip_serializing_if = "Option::is_none")]
    declared: Option<&'static str>,
    /// The upstream proxy an allowed connection goes through (its URL without the password).
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<&'a str>,
}

#[derive(Serialize)]
struct CloseLine<'a> {
    #[serde(flatten)]
    envelope: Envelope,
    host: String,
    port: Option<u16>,
    bytes_up: u64,
    bytes_down: u64,
    duration_ms: u128,
    idle_timeout: bool,
    /// `policy-reload` when a new policy generation (a reload or `POST /mode`) closed the
    /// tunnel; absent when it ended on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    closed_by: Option<&'static str>,
    /// The new generation's reason for closing it.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<&'a str>,
}

/// The end of a SOCKS5 UDP association: one line for all its destinations, whose decisions
/// have their own lines.
#[derive(Serialize)]
struct UdpCloseLine {
    #[serde(flatten)]
    envelope: Envelope,
    relay: SocketAddr,
    datagrams_up: u64,
    datagrams_down: u64,
    datagrams_denied: u64,
    datagrams_dropped: u64,
    bytes_up: u64,
    bytes_down: u64,
    duration_ms: u128,
    idle_timeout: bool,
}

impl Events {
    /// `audit`: where JSON audit lines go (a file or stderr); `None` keeps only the text log,
    /// metrics and the denial ring.
    pub fn new(audit: Option<Box<dyn Write + Send>>) -> Self {
        Events {
            audit: audit.map(Mutex::new),
            denials: Mutex::default(),
            next_id: AtomicU64::new(1),
            on_first_denial: None,
            allowed_at_info: AtomicBool::new(false),
        }
    }

    /// Calls `hook` the first time each destination is blocked for each reason (`run`'s live
    /// stderr line).
    pub fn on_first_denial(mut self, hook: DenialHook) -> Self {
        self.on_first_denial = Some(hook);
        self
    }

    /// Logs allowed decisions at INFO (`on`) or DEBUG: `serve` shows a newcomer traffic flowing
    /// for its first seconds, or always with `--log-allowed`. One relaxed load per decision.
    pub fn log_allowed_at_info(&self, on: bool) {
        self.allowed_at_info.store(on, Ordering::Relaxed);
    }

    /// Records one decision and returns its id, which the matching [`Events::closed`] repeats.
    /// `dns` is why the lookup failed, for a `dns-failed` denial.
    pub fn decision(
        &self,
        protocol: Protocol,
        client: SocketAddr,
        dest: Dest<'_>,
        d: &Decision,
        dns: Option<&DnsError>,
    ) -> u64 {
        self.decision_via(protocol, client, dest, d, dns, None)
    }

    /// [`Events::decision`] for a connection that goes through the upstream proxy `upstream`
    /// (its URL without the password).
    pub fn decision_via(
        &self,
        protocol: Protocol,
        client: SocketAddr,
        dest: Dest<'_>,
        d: &Decision,
        dns: Option<&DnsError>,
        upstream: Option<&str>,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let verdict = d.verdict().as_str();
        let reason = d.reason().code();
        let rule = d.rule().map(|r| &*r.pattern);
        let first = d.ips().first();
        metrics::counter!(
            crate::metrics::DECISIONS,
            "protocol" => protocol.as_str(),
            "verdict" => verdict,
            "reason" => reason
        )
        .increment(1);
        // Allowed decisions are debug-level text: one line per request is a measurable share
        // of a busy forward proxy's CPU. The JSON audit log records every decision.
        if !d.is_allowed() {
            tracing::warn!(target: "egress_proxy::decision", id, protocol = protocol.as_str(), %client, dest = %dest, verdict, reason, rule = rule.unwrap_or(""));
            self.remember_denial(protocol, dest, d, dns);
        } else if self.allowed_at_info.load(Ordering::Relaxed) {
            tracing::info!(target: "egress_proxy::decision", id, protocol = protocol.as_str(), %client, dest = %dest, verdict, reason, rule = rule.unwrap_or(""), upstream = upstream.unwrap_or(""));
        } else {
            tracing::debug!(target: "egress_proxy::decision", id, protocol = protocol.as_str(), %client, dest = %dest, verdict, reason, rule = rule.unwrap_or(""), upstream = upstream.unwrap_or(""));
        }
        if self.audit.is_some() {
            self.write(&DecisionLine {
                envelope: Envelope::now("decision", id, protocol, client),
                host: dest.host(),
                port: dest.port(),
                verdict,
                reason,
                rule,
                decided_by: d.decided_by().as_str(),
                ip: first.map(|c| c.ip.to_string()),
                class: first.map(|c| c.class.name()),
                declared: first.and_then(|c| c.declared).map(|was| was.name()),
                upstream,
            });
        }
        id
    }

    /// Records the end of a connection that was allowed.
    pub fn closed(
        &self,
        id: u64,
        protocol: Protocol,
        client: SocketAddr,
        dest: Dest<'_>,
        end: Closed<'_>,
    ) {
        let Closed {
            stats,
            duration,
            revoked,
            upstream,
        } = end;
        metrics::counter!(crate::metrics::BYTES, "protocol" => protocol.as_str(), "direction" => "up")
            .increment(stats.up);
        metrics::counter!(crate::metrics::BYTES, "protocol" => protocol.as_str(), "direction" => "down")
            .increment(stats.down);
        tracing::debug!(target: "egress_proxy::close", id, protocol = protocol.as_str(), %client, dest = %dest, up = stats.up, down = stats.down, ms = duration.as_millis() as u64);
        if self.audit.is_some() {
            self.write(&CloseLine {
                envelope: Envelope::now("close", id, protocol, client),
                host: dest.host(),
                port: dest.port(),
                bytes_up: stats.up,
                bytes_down: stats.down,
                duration_ms: duration.as_millis(),
                idle_timeout: stats.idle_timeout,
                closed_by: revoked.map(|_| "policy-reload"),
                reason: revoked.map(|d| d.reason().code()),
                rule: revoked.and_then(|d| d.rule()).map(|r| &*r.pattern),
                upstream,
            });
        }
    }

    /// Records the end of a UDP association: datagrams and payload bytes each way.
    pub fn udp_closed(
        &self,
        client: SocketAddr,
        relay: SocketAddr,
        stats: &UdpStats,
        duration: Duration,
        idle_timeout: bool,
    ) {
        let protocol = Protocol::SocksUdp.as_str();
        metrics::counter!(crate::metrics::BYTES, "protocol" => protocol, "direction" => "up")
            .increment(stats.bytes_up);
        metrics::counter!(crate::metrics::BYTES, "protocol" => protocol, "direction" => "down")
            .increment(stats.bytes_down);
        metrics::counter!(crate::metrics::UDP_DATAGRAMS, "result" => "relayed")
            .increment(stats.sent);
        metrics::counter!(crate::metrics::UDP_DATAGRAMS, "result" => "denied")
            .increment(stats.denied);
        metrics::counter!(crate::metrics::UDP_DATAGRAMS, "result" => "dropped")
            .increment(stats.dropped);
        tracing::debug!(target: "egress_proxy::close", protocol, %client, %relay, sent = stats.sent, received = stats.received, denied = stats.denied, dropped = stats.dropped, ms = duration.as_millis() as u64);
        if self.audit.is_some() {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            self.write(&UdpCloseLine {
                envelope: Envelope::now("close", id, Protocol::SocksUdp, client),
                relay,
                datagrams_up: stats.sent,
                datagrams_down: stats.received,
                datagrams_denied: stats.denied,
                datagrams_dropped: stats.dropped,
                bytes_up: stats.bytes_up,
                bytes_down: stats.bytes_down,
                duration_ms: duration.as_millis(),
                idle_timeout,
            });
        }
    }

    fn remember_denial(
        &self,
        protocol: Protocol,
        dest: Dest<'_>,
        d: &Decision,
        dns: Option<&DnsError>,
    ) {
        let reason = d.reason().code();
        let first = {
            let Ok(mut denials) = self.denials.lock() else {
                return;
            };
            if denials.recent.len() == RING {
                denials.recent.pop_front();
            }
            denials.recent.push_back(Blocked {
                time: rfc3339(SystemTime::now()),
                protocol,
                host: dest.host(),
                port: dest.port(),
                reason,
                rule: d.rule().map(|r| r.pattern.to_string()),
            });
            let key = (dest.to_string(), reason);
            if denials.distinct.contains_key(&key) {
                false
            } else if denials.distinct.len() < SUMMARY {
                denials.distinct.insert(key, d.rule().cloned());
                true
            } else {
                denials.truncated = true;
                false
            }
        };
        // Outside the lock: the hook writes to a terminal, which may be slow.
        if let (true, Some(hook)) = (first, &self.on_first_denial) {
            hook(&FirstDenial {
                protocol,
                dest,
                decision: d,
                dns,
            });
        }
    }

    /// The most recent denials, oldest first.
    pub fn recent_denials(&self) -> Vec<Blocked> {
        self.denials
            .lock()
            .map(|d| d.recent.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every distinct blocked destination and reason with the rule that decided, sorted:
    /// `run`'s summary.
    pub fn blocked_summary(&self) -> Summary {
        self.denials
            .lock()
            .map(|d| Summary {
                blocked: d
                    .distinct
                    .iter()
                    .map(|((dest, reason), rule)| BlockedDest {
                        dest: dest.clone(),
                        reason,
                        rule: rule.clone(),
                    })
                    .collect(),
                truncated: d.truncated,
            })
            .unwrap_or_default()
    }

    fn write(&self, line: &impl Serialize) {
        let Some(audit) = &self.audit else { return };
        let Ok(mut text) = serde_json::to_vec(line) else {
            return;
        };
        text.push(b'\n');
        if let Ok(mut out) = audit.lock() {
            if out.write_all(&text).and_then(|()| out.flush()).is_err() {
                metrics::counter!(crate::metrics::AUDIT_WRITE_ERRORS).increment(1);
            }
        }
    }
}

/// `2026-11-23T10:54:27.142Z`: RFC 3339 in UTC, computed without a date library.
fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), valid for every date after 1970.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests;

//! Everything that happens to a connection, recorded once: the decision log (text through
//! `tracing`, and JSON audit lines), the metrics, and the ring of recent denials that the admin
//! API and `run`'s exit summary read.
//!
//! Field names are constant and stable. Query strings and header values are never recorded:
//! only the destination.

mod stats;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::policy::{Decision, Target};

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

/// How many recent denials `/blocked` keeps.
const RING: usize = 256;
/// How many distinct blocked destinations `run` summarises.
const SUMMARY: usize = 1024;

#[derive(Default)]
struct Denials {
    recent: VecDeque<Blocked>,
    /// `host:port` → reason, for the deduplicated summary.
    distinct: BTreeMap<String, &'static str>,
}

/// The sink every listener reports to. One per proxy process; cheap to share in an `Arc`.
pub struct Events {
    audit: Option<Mutex<Box<dyn Write + Send>>>,
    denials: Mutex<Denials>,
    next_id: AtomicU64,
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
        }
    }

    /// Records one decision and returns its id, which the matching [`Events::closed`] repeats.
    pub fn decision(
        &self,
        protocol: Protocol,
        client: SocketAddr,
        dest: Dest<'_>,
        d: &Decision,
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
        if d.is_allowed() {
            tracing::debug!(target: "egress_proxy::decision", id, protocol = protocol.as_str(), %client, dest = %dest, verdict, reason, rule = rule.unwrap_or(""));
        } else {
            tracing::warn!(target: "egress_proxy::decision", id, protocol = protocol.as_str(), %client, dest = %dest, verdict, reason, rule = rule.unwrap_or(""));
            self.remember_denial(protocol, dest, reason, rule);
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
        reason: &'static str,
        rule: Option<&str>,
    ) {
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
            rule: rule.map(str::to_string),
        });
        if denials.distinct.len() < SUMMARY {
            denials.distinct.entry(dest.to_string()).or_insert(reason);
        }
    }

    /// The most recent denials, oldest first.
    pub fn recent_denials(&self) -> Vec<Blocked> {
        self.denials
            .lock()
            .map(|d| d.recent.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every distinct blocked destination with its first reason, sorted: `run`'s summary.
    pub fn blocked_summary(&self) -> Vec<(String, &'static str)> {
        self.denials
            .lock()
            .map(|d| d.distinct.iter().map(|(k, v)| (k.clone(), *v)).collect())
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
mod tests {
    use super::*;

    /// A decision the rules make without DNS.
    fn done(step: crate::policy::Step<'_>) -> Decision {
        step.done().cloned().expect("decided without DNS")
    }
    use crate::policy::{Access, Action, Origin, Policy, PolicyOptions, RuleSpec};
    use std::sync::Arc;

    #[test]
    fn rfc3339_dates() {
        let at = |secs: u64, millis: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_795_430_067, 142), "2026-11-23T10:34:27.142Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn audit_lines_ring_and_summary() {
        let out = Shared::default();
        let events = Events::new(Some(Box::new(out.clone())));
        let policy = Policy::new(
            &[RuleSpec {
                pattern: "127.0.0.1".into(),
                action: Action::Allow,
                origin: Origin::Api,
                managed: false,
            }],
            &[],
            PolicyOptions::default(),
        )
        .unwrap();
        let client: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let allowed = Target::parse_authority("127.0.0.1:80", None).unwrap();
        let denied = Target::parse_authority("evil.test:443", None).unwrap();
        let id = events.decision(
            Protocol::Connect,
            client,
            Dest::Target(&allowed),
            &done(policy.decide(&allowed, Access::Tunnel)),
        );
        for _ in 0..2 {
            events.decision(
                Protocol::Http,
                client,
                Dest::Target(&denied),
                &done(policy.decide(&denied, Access::Tunnel)),
            );
        }
        let stats = TunnelStats {
            up: 10,
            down: 20,
            idle_timeout: false,
        };
        events.closed(
            id,
            Protocol::Connect,
            client,
            Dest::Target(&allowed),
            Closed {
                stats,
                duration: Duration::from_millis(7),
                revoked: None,
            },
        );

        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["event"], "decision");
        assert_eq!(lines[0]["id"], id);
        assert_eq!(lines[0]["protocol"], "connect");
        assert_eq!(lines[0]["client"], "127.0.0.1:5555");
        assert_eq!(lines[0]["host"], "127.0.0.1");
        assert_eq!(lines[0]["port"], 80);
        assert_eq!(lines[0]["verdict"], "allow");
        assert_eq!(lines[0]["rule"], "127.0.0.1");
        assert_eq!(lines[0]["ip"], "127.0.0.1");
        assert_eq!(lines[0]["class"], "loopback");
        assert_eq!(lines[1]["verdict"], "block");
        assert_eq!(lines[1]["reason"], "not-allowed");
        assert_eq!(lines[1]["rule"], serde_json::Value::Null);
        assert_eq!(lines[3]["event"], "close");
        assert_eq!(lines[3]["id"], id);
        assert_eq!(lines[3]["bytes_up"], 10);
        assert_eq!(lines[3]["bytes_down"], 20);
        assert_eq!(lines[3]["duration_ms"], 7);

        let recent = events.recent_denials();
        assert_eq!(recent.len(), 2);
        assert_eq!(
            (recent[0].host.as_str(), recent[0].port),
            ("evil.test", Some(443))
        );
        assert_eq!(
            events.blocked_summary(),
            [("evil.test:443".to_string(), "not-allowed")]
        );
    }

    #[test]
    fn the_ring_is_bounded() {
        let events = Events::default();
        let policy = Policy::new(&[], &[], PolicyOptions::default()).unwrap();
        let client: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for port in 1..=(RING as u16 + 10) {
            let t = Target::parse_authority("x.test", Some(port)).unwrap();
            events.decision(
                Protocol::SocksTcp,
                client,
                Dest::Target(&t),
                &done(policy.decide(&t, Access::Tunnel)),
            );
        }
        let recent = events.recent_denials();
        assert_eq!(recent.len(), RING);
        assert_eq!(recent[0].port, Some(11));
    }
}

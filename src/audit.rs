//! The decision log: one event per decision, with constant field names, for every protocol.

use std::fmt;
use std::net::SocketAddr;

use crate::policy::Decision;

/// How a destination was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Connect,
    SocksTcp,
    SocksUdp,
    Unix,
}

impl Protocol {
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

/// Logs one decision. Never logs query strings or header values: only the destination.
pub fn decision(protocol: Protocol, client: SocketAddr, target: &dyn fmt::Display, d: &Decision) {
    let rule = d.rule.as_ref().map_or("", |r| &r.pattern);
    let ip = d.ips.first().map(|c| c.ip);
    if d.is_allowed() {
        tracing::info!(target: "egress_proxy::decision", protocol = protocol.as_str(), %client, dest = %target, verdict = "allow", reason = d.reason.code(), rule, ip = ?ip);
    } else {
        tracing::warn!(target: "egress_proxy::decision", protocol = protocol.as_str(), %client, dest = %target, verdict = "block", reason = d.reason.code(), rule, ip = ?ip);
    }
}

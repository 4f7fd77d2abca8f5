//! The harness proxy as the SOCKS5 tests see it: a fake DNS server answering loopback for
//! the names the rules talk about, and the rules as policy-file keys a test can rewrite.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use egress_proxy::config::Limits;
use egress_proxy::policy::Mode;
use egress_proxy::session::SessionToken;

use super::fake_dns::{Answer, FakeDns};
use super::harness::{self, AuditLog};
use super::origin::TcpEcho;
use super::socks::{ask, echo_through, Dest};

pub struct Setup {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub allow_local_binding: bool,
    pub mode: Mode,
    pub limits: Limits,
    pub udp: bool,
    /// Session credentials every client must present (RFC 1929), as `run` sets them.
    pub session: Option<SessionToken>,
}

impl Default for Setup {
    /// Names answered by the fake DNS: `allowed.test`, `denied.test` (allowed and denied: deny
    /// wins), `unlisted.test` (no rule), `gone.test` (allowed, NXDOMAIN) and `udp.test`; all
    /// the others answer 127.0.0.1.
    fn default() -> Self {
        Setup {
            allow: strings(&["allowed.test", "denied.test", "gone.test", "udp.test"]),
            deny: strings(&["denied.test"]),
            allow_local_binding: true,
            mode: Mode::Full,
            limits: Limits {
                connect_timeout: Duration::from_secs(2),
                header_timeout: Duration::from_secs(3),
                ..Limits::default()
            },
            udp: true,
            session: None,
        }
    }
}

pub fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The harness proxy, seen from its SOCKS5 listener.
pub struct Proxy {
    /// The SOCKS5 listener.
    pub addr: SocketAddr,
    pub audit: AuditLog,
    pub proxy: harness::Proxy,
    pub _dns: FakeDns,
}

impl Proxy {
    /// (host, reason) of every denial recorded for `protocol`, oldest first.
    pub fn denials(&self, protocol: &str) -> Vec<(String, &'static str)> {
        self.proxy.denials(protocol)
    }
}

/// The setup's rules as policy-file keys, so a test can rewrite them and reload.
pub fn rules_toml(allow: &[String], deny: &[String]) -> String {
    format!("allowed_domains = {allow:?}\ndenied_domains = {deny:?}")
}

pub async fn start(setup: Setup) -> Proxy {
    let localhost = Answer::A(vec![Ipv4Addr::LOCALHOST]);
    let dns = FakeDns::start(vec![
        ("allowed.test", localhost.clone()),
        ("denied.test", localhost.clone()),
        ("unlisted.test", localhost.clone()),
        ("udp.test", localhost.clone()),
        ("gone.test", Answer::NxDomain),
    ]);
    let limits = setup.limits.clone();
    let mut builder = harness::Proxy::builder()
        .toml(&rules_toml(&setup.allow, &setup.deny))
        .allow_local_binding(setup.allow_local_binding)
        .mode(setup.mode)
        .udp(setup.udp)
        .limits(|l| *l = limits)
        .dns(&dns);
    if let Some(session) = setup.session {
        builder = builder.session(session);
    }
    let proxy = builder.start().await;
    Proxy {
        addr: proxy.socks_addr(),
        audit: proxy.audit.clone(),
        proxy,
        _dns: dns,
    }
}

/// The listener still tunnels a good client.
pub async fn still_serves(proxy: &Proxy, echo: &TcpEcho) {
    let (code, mut stream) =
        ask(proxy.addr, 1, Dest::Name(b"allowed.test"), echo.addr.port()).await;
    assert_eq!(code, 0);
    echo_through(&mut stream, b"still here").await;
}

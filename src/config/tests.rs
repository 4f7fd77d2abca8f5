//! Loading and layering, through `load_texts` and `load`, by behaviour.

use std::fs;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::policy::{Action, Origin, UnixAction};

mod codex;
mod layering;
mod listeners;
mod mitm;
mod public_ranges;
mod requirements;
mod values;
mod warnings;

fn flags() -> Sources {
    Sources::default()
}

fn ok(configs: &[(&str, &str)], requirements: Option<(&str, &str)>, sources: &Sources) -> Config {
    load_texts(configs, requirements, sources).unwrap_or_else(|e| panic!("{e}"))
}

fn err(configs: &[(&str, &str)], requirements: Option<(&str, &str)>, sources: &Sources) -> String {
    load_texts(configs, requirements, sources)
        .unwrap_err()
        .to_string()
}

/// Rules as `action pattern @origin[ managed]`, compact enough for table-driven asserts.
fn rules(config: &Config) -> Vec<String> {
    config
        .rules
        .iter()
        .map(|r| {
            let managed = if r.managed { " managed" } else { "" };
            format!("{} {} @{}{managed}", r.action.as_str(), r.pattern, r.origin)
        })
        .collect()
}

fn unix(config: &Config) -> Vec<String> {
    config
        .unix_sockets
        .iter()
        .map(|u| format!("{} {} @{}", u.action.as_str(), u.path.display(), u.origin))
        .collect()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn defaults(enabled: bool) -> Config {
    Config {
        enabled,
        mode: Mode::Full,
        managed_mode: None,
        rules: Vec::new(),
        unix_sockets: Vec::new(),
        allow_local_binding: false,
        enable_socks5: true,
        enable_socks5_udp: true,
        allow_upstream_proxy: true,
        public_ranges: PublicRanges::default(),
        upstream: UpstreamConfig::default(),
        proxy_addr: addr("127.0.0.1:3128"),
        socks_addr: addr("127.0.0.1:8081"),
        admin_addr: addr("127.0.0.1:8080"),
        dangerously_allow_non_loopback_proxy: false,
        dangerously_allow_non_loopback_admin: false,
        dangerously_allow_all_unix_sockets: false,
        dns: DnsConfig::default(),
        limits: Limits::default(),
        admin: AdminConfig::default(),
        log: LogConfig::default(),
        run: RunConfig::default(),
        mitm: MitmConfig::default(),
        http_rules: Vec::new(),
        warnings: Vec::new(),
    }
}

/// The warnings `validate` shows: the configuration's, then the compiled rules'.
fn shown(config: &Config) -> Vec<String> {
    let policy = config.policy().unwrap_or_else(|e| panic!("{e}"));
    config
        .warnings
        .iter()
        .chain(policy.warnings())
        .chain(policy.http_warnings())
        .cloned()
        .collect()
}

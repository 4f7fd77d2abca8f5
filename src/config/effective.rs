//! The effective configuration: the merged layers with their defaults, the loopback rules
//! for listeners, and `managed_allowed_domains_only` applied.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::error::{ConfigError, Source};
use super::keys::{DnsScalars, LimitScalars, MitmScalars};
use super::listen::{self, Listener};
use super::merge::{Entries, Merged, Set};
use super::upstream::{self, Inputs};
use super::warnings;
use super::{
    AdminConfig, CaFiles, Config, DnsConfig, Limits, LogConfig, MitmConfig, RunConfig, Sources,
};
use crate::policy::{Action, RuleSpec, UnixAction, UnixSocketSpec};

fn value<T: Clone>(set: &Option<Set<T>>) -> Option<T> {
    set.as_ref().map(|s| s.value.clone())
}

fn flag(set: &Option<Set<bool>>, default: bool) -> bool {
    value(set).unwrap_or(default)
}

/// Applies the defaults to what no layer set and checks what only the whole can decide.
pub(super) fn finish(
    merged: Merged,
    enabled_default: bool,
    configs: &[Source],
    sources: &Sources,
    mut warnings: Vec<String>,
) -> Result<Config, ConfigError> {
    let Merged {
        scalars: s,
        user_rules,
        managed_rules,
        unix,
        conflicts,
        managed_mode,
        http_rules,
    } = merged;
    warnings.extend(conflicts);
    let net = &s.network;

    let unix_sockets = unix_sockets(unix);
    let non_loopback_proxy = flag(&net.dangerously_allow_non_loopback_proxy, false);
    let non_loopback_admin = flag(&net.dangerously_allow_non_loopback_admin, false);
    let all_unix = flag(&net.dangerously_allow_all_unix_sockets, false);
    // A non-loopback listener that can reach local Unix sockets would be a remote bridge into
    // local daemons, so it is refused whatever `dangerously_allow_non_loopback_proxy` says.
    let unix_reachable = all_unix || unix_sockets.iter().any(|u| u.action == UnixAction::Allow);
    let l = &s.listeners;
    let proxy_addr = listener(
        &l.proxy,
        Listener::Proxy,
        non_loopback_proxy,
        unix_reachable,
    )?;
    let socks_addr = listener(
        &l.socks,
        Listener::Socks,
        non_loopback_proxy,
        unix_reachable,
    )?;
    let admin_addr = listener(&l.admin, Listener::Admin, non_loopback_admin, false)?;

    let managed_only = flag(&net.managed_allowed_domains_only, false);
    let (rules, managed_allows) = rules(user_rules, managed_rules, managed_only);
    let enabled = flag(&net.enabled, enabled_default);
    warnings.extend(warnings::settings(net, enabled, managed_allows, configs));
    let mut listeners = vec![(proxy_addr, "proxy_url"), (admin_addr, "admin_url")];
    if flag(&net.enable_socks5, true) {
        listeners.push((socks_addr, "socks_url"));
    }
    let inputs = Inputs {
        env: &sources.env,
        no_upstream_flag: sources.no_upstream_proxy,
        listeners: &listeners,
    };
    let upstream = upstream::effective(
        &s.upstream,
        &net.allow_upstream_proxy,
        &inputs,
        &mut warnings,
    )?;

    Ok(Config {
        enabled,
        mode: value(&net.mode).unwrap_or_default(),
        managed_mode,
        rules,
        unix_sockets,
        allow_local_binding: flag(&net.allow_local_binding, false),
        enable_socks5: flag(&net.enable_socks5, true),
        enable_socks5_udp: flag(&net.enable_socks5_udp, true),
        allow_upstream_proxy: flag(&net.allow_upstream_proxy, true),
        public_ranges: value(&net.public_ranges).unwrap_or_default(),
        upstream,
        proxy_addr,
        socks_addr,
        admin_addr,
        dangerously_allow_non_loopback_proxy: non_loopback_proxy,
        dangerously_allow_non_loopback_admin: non_loopback_admin,
        dangerously_allow_all_unix_sockets: all_unix,
        dns: dns(&s.dns),
        limits: limits(&s.limits),
        admin: AdminConfig {
            token_file: value(&s.admin.token_file),
        },
        log: LogConfig {
            format: value(&s.log.format).unwrap_or_default(),
            audit: value(&s.log.audit),
        },
        run: RunConfig {
            isolate: flag(&s.run.isolate, false),
        },
        mitm: mitm(&s.mitm, flag(&net.mitm, false)),
        http_rules,
        warnings,
    })
}

fn unix_sockets(unix: Entries<UnixAction>) -> Vec<UnixSocketSpec> {
    unix.into_entries()
        .map(|(path, action, origin)| UnixSocketSpec {
            path: PathBuf::from(path),
            action,
            origin,
        })
        .collect()
}

fn mitm(s: &MitmScalars, enabled: bool) -> MitmConfig {
    // `convert` allows the CA files only as a pair.
    let ca = match (value(&s.ca_cert), value(&s.ca_key)) {
        (Some(cert), Some(key)) => Some(CaFiles { cert, key }),
        _ => None,
    };
    MitmConfig {
        enabled,
        domains: value(&s.domains),
        ca,
        upstream_ca: value(&s.upstream_ca),
    }
}

fn dns(s: &DnsScalars) -> DnsConfig {
    let default = DnsConfig::default();
    DnsConfig {
        servers: value(&s.servers).unwrap_or(default.servers),
        timeout: value(&s.timeout_ms).unwrap_or(default.timeout),
        multi_answer: value(&s.multi_answer).unwrap_or(default.multi_answer),
    }
}

fn limits(s: &LimitScalars) -> Limits {
    let default = Limits::default();
    Limits {
        connect_timeout: value(&s.connect_timeout_ms).unwrap_or(default.connect_timeout),
        idle_timeout: value(&s.idle_timeout_ms).unwrap_or(default.idle_timeout),
        header_timeout: value(&s.header_timeout_ms).unwrap_or(default.header_timeout),
        max_header_bytes: value(&s.max_header_bytes).unwrap_or(default.max_header_bytes),
        max_connections: value(&s.max_connections).unwrap_or(default.max_connections),
        max_udp_associations: value(&s.max_udp_associations)
            .unwrap_or(default.max_udp_associations),
    }
}

/// User rules first, then managed ones; `managed_only` drops the user allows. Also counts
/// the managed allows, for the warning that none is left.
fn rules(
    user: Entries<Action>,
    managed: Entries<Action>,
    managed_only: bool,
) -> (Vec<RuleSpec>, usize) {
    let mut rules: Vec<RuleSpec> = user
        .into_entries()
        .filter(|(_, action, _)| !(managed_only && *action == Action::Allow))
        .map(|(pattern, action, origin)| RuleSpec {
            pattern,
            action,
            origin,
            managed: false,
        })
        .collect();
    let mut managed_allows = 0;
    for (pattern, action, origin) in managed.into_entries() {
        managed_allows += usize::from(action == Action::Allow);
        rules.push(RuleSpec {
            pattern,
            action,
            origin,
            managed: true,
        });
    }
    (rules, managed_allows)
}

/// The effective listener address, refusing non-loopback addresses unless permitted.
fn listener(
    set: &Option<Set<SocketAddr>>,
    listener: Listener,
    non_loopback_allowed: bool,
    unix_reachable: bool,
) -> Result<SocketAddr, ConfigError> {
    let Some(Set {
        value: addr,
        origin,
    }) = set
    else {
        return Ok(listener.default_addr());
    };
    if listen::is_loopback(addr.ip()) {
        return Ok(*addr);
    }
    let key = listener.key();
    if unix_reachable {
        Err(ConfigError::at_origin(
            origin,
            format!(
                "`{key}` listens on non-loopback address {addr}, but listeners stay on loopback \
                 while Unix sockets are allowed"
            ),
        ))
    } else if !non_loopback_allowed {
        Err(ConfigError::at_origin(
            origin,
            format!(
                "`{key}` listens on non-loopback address {addr}; set `{} = true` to allow it",
                listener.dangerous_key()
            ),
        ))
    } else {
        Ok(*addr)
    }
}

//! Converting one table into a layer: values get their origins, URLs and addresses are
//! parsed, paths and numbers are checked, each error at the value that caused it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::value::StringDeserializer;
use serde::de::DeserializeOwned;
use toml::Spanned;

use super::error::{ConfigError, Source};
use super::keys::{
    AdminScalars, DnsScalars, Key, LimitScalars, LogScalars, MitmScalars, NetworkScalars, RawMitm,
    RawNetwork, RunScalars, UpstreamScalars,
};
use super::listen::{self, Listener};
use super::merge::{Layer, Listeners, Scalars, Set, UnixEntry};
use super::raw::{RawHttpRule, RawLayer, SpannedList, SpannedMap};
use crate::policy::{
    check_rule_path, is_method_token, Action, DeclaredRange, HttpRuleSpec, Origin, PublicRanges,
};

/// What a conversion in the key table returns: the value with its origin, if it was set.
pub(super) type Converted<T> = Result<Option<Set<T>>, ConfigError>;

/// Converts one table; the key table's scalars first, in table order, then listeners and
/// rules.
pub(super) fn convert(src: &Source, table: RawLayer) -> Result<Layer, ConfigError> {
    let RawLayer {
        mut network,
        mut dns,
        mut limits,
        mut admin,
        mut log,
        mut upstream,
        mut run,
        mitm,
        mitm_table,
        http_rules: raw_http_rules,
    } = table;
    let mut network_scalars = NetworkScalars::take(src, &mut network)?;
    let mitm = mitm_settings(src, mitm, mitm_table, &mut network_scalars)?;
    let listeners = listeners(src, &mut network)?;
    let scalars = Scalars {
        network: network_scalars,
        listeners,
        dns: DnsScalars::take(src, &mut dns)?,
        limits: LimitScalars::take(src, &mut limits)?,
        admin: AdminScalars::take(src, &mut admin)?,
        log: LogScalars::take(src, &mut log)?,
        upstream: UpstreamScalars::take(src, &mut upstream)?,
        run: RunScalars::take(src, &mut run)?,
        mitm,
    };
    Ok(Layer {
        scalars,
        rules: domain_rules(src, &mut network)?,
        unix: unix_entries(src, &mut network)?,
        http_rules: http_rules(src, raw_http_rules)?,
    })
}

/// `[mitm]`: present means on unless `enabled` says otherwise (the table's `enabled` is the
/// network tables' `mitm`, so a later `mitm = false` turns it off), and the CA is two files
/// or none.
fn mitm_settings(
    src: &Source,
    mut raw: RawMitm,
    table: Option<std::ops::Range<usize>>,
    network: &mut NetworkScalars,
) -> Result<MitmScalars, ConfigError> {
    let enabled = match raw.enabled.take() {
        Some(enabled) => plain(src, &MITM_ENABLED, Some(enabled))?,
        None => table.map(|span| Set {
            value: true,
            origin: src.origin(&span),
        }),
    };
    if enabled.is_some() {
        network.mitm = enabled;
    }
    let mitm = MitmScalars::take(src, &mut raw)?;
    match (&mitm.ca_cert, &mitm.ca_key) {
        (Some(set), None) => Err(ConfigError::at_origin(
            &set.origin,
            "`[mitm] ca_cert` needs `ca_key` in the same table",
        )),
        (None, Some(set)) => Err(ConfigError::at_origin(
            &set.origin,
            "`[mitm] ca_key` needs `ca_cert` in the same table",
        )),
        _ => Ok(mitm),
    }
}

const MITM_ENABLED: Key = Key {
    table: "mitm",
    name: "enabled",
};

/// `[[http_rules]]` in file order, each value checked at its position (host patterns are
/// compiled, and checked, with the policy, like domain rules).
fn http_rules(src: &Source, raw: Vec<RawHttpRule>) -> Result<Vec<HttpRuleSpec>, ConfigError> {
    raw.into_iter()
        .map(|rule| {
            let action = entry(src, "http_rules", &rule.host, rule.action)?;
            let methods = checked_list(src, rule.methods, |m| {
                if is_method_token(m) {
                    Ok(())
                } else {
                    Err(format!("`methods`: `{m}` is not an HTTP method token"))
                }
            })?;
            let paths = checked_list(src, rule.paths, |p| {
                check_rule_path(p).map_err(|e| format!("`paths`: `{p}`: {e}"))
            })?;
            Ok(HttpRuleSpec {
                origin: src.origin(&rule.host.span()),
                host: rule.host.into_inner(),
                methods,
                paths,
                action,
            })
        })
        .collect()
}

/// A list's strings, each checked at its own position.
fn checked_list(
    src: &Source,
    list: Option<SpannedList>,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<Vec<String>, ConfigError> {
    list.map(Spanned::into_inner)
        .unwrap_or_default()
        .into_iter()
        .map(|item| {
            check(item.get_ref()).map_err(|m| src.error(&item.span(), m))?;
            Ok(item.into_inner())
        })
        .collect()
}

/// `[mitm] domains`: host patterns, each with where it was written (compiled, and checked,
/// with the policy).
pub(super) fn host_patterns(
    src: &Source,
    _: &Key,
    list: Option<SpannedList>,
) -> Converted<Vec<(String, Origin)>> {
    let Some(list) = list else {
        return Ok(None);
    };
    let origin = src.origin(&list.span());
    let value = list
        .into_inner()
        .into_iter()
        .map(|p| (p.get_ref().clone(), src.origin(&p.span())))
        .collect();
    Ok(Some(Set { value, origin }))
}

fn listeners(src: &Source, network: &mut RawNetwork) -> Result<Listeners, ConfigError> {
    let url = |listener: Listener, value: Option<Spanned<String>>| {
        checked(src, value, |url| listen::parse_listen_url(listener, &url))
    };
    // `http_port`/`socks_port` (requirements) and `proxy_url`/`socks_url` are never in the
    // same table, so at most one of each pair is set.
    let loopback_port = |port: Option<Spanned<u16>>| {
        port.map(|p| Set {
            origin: src.origin(&p.span()),
            value: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p.into_inner()),
        })
    };
    Ok(Listeners {
        proxy: url(Listener::Proxy, network.proxy_url.take())?
            .or_else(|| loopback_port(network.http_port.take())),
        socks: url(Listener::Socks, network.socks_url.take())?
            .or_else(|| loopback_port(network.socks_port.take())),
        admin: url(Listener::Admin, network.admin_url.take())?,
    })
}

fn domain_rules(
    src: &Source,
    network: &mut RawNetwork,
) -> Result<Vec<(String, Action, Origin)>, ConfigError> {
    let mut rules = Vec::new();
    for (pattern, action) in in_file_order(network.domains.take().unwrap_or_default()) {
        let action = entry(src, "domains", &pattern, action)?;
        let origin = src.origin(&pattern.span());
        rules.push((pattern.into_inner(), action, origin));
    }
    for (list, action) in [
        (network.allowed_domains.take(), Action::Allow),
        (network.denied_domains.take(), Action::Deny),
    ] {
        for pattern in list.map(Spanned::into_inner).unwrap_or_default() {
            let origin = src.origin(&pattern.span());
            rules.push((pattern.into_inner(), action, origin));
        }
    }
    Ok(rules)
}

fn unix_entries(
    src: &Source,
    network: &mut RawNetwork,
) -> Result<Vec<(String, UnixEntry, Origin)>, ConfigError> {
    let mut unix = Vec::new();
    for (path, value) in in_file_order(network.unix_sockets.take().unwrap_or_default()) {
        if !Path::new(path.get_ref()).is_absolute() {
            return Err(src.error(
                &path.span(),
                format!("Unix socket path `{}` must be absolute", path.get_ref()),
            ));
        }
        let entry = entry(src, "unix_sockets", &path, value)?;
        let origin = src.origin(&path.span());
        unix.push((path.into_inner(), entry, origin));
    }
    Ok(unix)
}

/// A setting taken as written.
pub(super) fn plain<T>(src: &Source, _: &Key, value: Option<Spanned<T>>) -> Converted<T> {
    checked(src, value, Ok)
}

/// A string setting read as one of an enum's (serde-renamed) words.
pub(super) fn choice<T: DeserializeOwned>(
    src: &Source,
    key: &Key,
    value: Option<Spanned<String>>,
) -> Converted<T> {
    checked(src, value, |word| {
        T::deserialize(StringDeserializer::<serde::de::value::Error>::new(word))
            .map_err(|e| format!("`{}`: {e}", key.name))
    })
}

/// A timeout in milliseconds.
pub(super) fn millis(src: &Source, key: &Key, value: Option<Spanned<u64>>) -> Converted<Duration> {
    checked(src, value, |ms| {
        bounded(key, ms, 1, MAX_TIMEOUT_MS).map(Duration::from_millis)
    })
}

/// A count of connections or associations.
pub(super) fn count(src: &Source, key: &Key, value: Option<Spanned<u64>>) -> Converted<usize> {
    bounded_usize(src, key, value, 1, MAX_COUNT)
}

/// The size limit of a request head.
pub(super) fn header_bytes(
    src: &Source,
    key: &Key,
    value: Option<Spanned<u64>>,
) -> Converted<usize> {
    bounded_usize(src, key, value, MIN_HEADER_BYTES, MAX_HEADER_BYTES)
}

fn bounded_usize(
    src: &Source,
    key: &Key,
    value: Option<Spanned<u64>>,
    min: u64,
    max: u64,
) -> Converted<usize> {
    checked(src, value, |n| {
        bounded(key, n, min, max).and_then(|n| {
            usize::try_from(n)
                .map_err(|_| format!("`{}` is too large for this platform", key.qualified()))
        })
    })
}

/// A file path; empty would name the working directory, never what was meant.
pub(super) fn path(src: &Source, key: &Key, value: Option<Spanned<String>>) -> Converted<PathBuf> {
    checked(src, value, |p| {
        if p.is_empty() {
            Err(format!("`{}` must not be empty", key.name))
        } else {
            Ok(PathBuf::from(p))
        }
    })
}

/// `[dns] servers`: each address is checked at its own position.
pub(super) fn dns_servers(
    src: &Source,
    _: &Key,
    servers: Option<SpannedList>,
) -> Converted<Vec<SocketAddr>> {
    let Some(servers) = servers else {
        return Ok(None);
    };
    let origin = src.origin(&servers.span());
    let value = servers
        .into_inner()
        .into_iter()
        .map(|s| listen::parse_dns_server(s.get_ref()).map_err(|m| src.error(&s.span(), m)))
        .collect::<Result<_, _>>()?;
    Ok(Some(Set { value, origin }))
}

/// `public_ranges`: each CIDR is checked at its own position, so the error names the one that
/// overlaps a never-public range.
pub(super) fn public_ranges(
    src: &Source,
    key: &Key,
    ranges: Option<SpannedList>,
) -> Converted<PublicRanges> {
    let Some(ranges) = ranges else {
        return Ok(None);
    };
    let origin = src.origin(&ranges.span());
    let checked = ranges
        .into_inner()
        .into_iter()
        .map(|r| {
            r.get_ref()
                .parse::<DeclaredRange>()
                .map_err(|e| src.error(&r.span(), format!("{}: {e}", key.name)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Set {
        value: PublicRanges::new(checked),
        origin,
    }))
}

/// `--public-range CIDR`, each checked like an entry of `public_ranges`.
pub(super) fn public_range_flags(flags: &[String]) -> Result<PublicRanges, ConfigError> {
    let origin = Origin::Flag("--public-range");
    let checked = flags
        .iter()
        .map(|r| {
            r.parse::<DeclaredRange>()
                .map_err(|e| ConfigError::at_origin(&origin, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PublicRanges::new(checked))
}

/// The value of one map entry, e.g. `"allow"` in `domains`, reported at the value when wrong.
fn entry<T: DeserializeOwned>(
    src: &Source,
    map: &str,
    key: &Spanned<String>,
    value: Spanned<String>,
) -> Result<T, ConfigError> {
    let span = value.span();
    T::deserialize(StringDeserializer::<serde::de::value::Error>::new(
        value.into_inner(),
    ))
    .map_err(|e| src.error(&span, format!("`{map}` entry `{}`: {e}", key.get_ref())))
}

/// The value with its origin, converted; a conversion error is reported at the value.
pub(super) fn checked<T, U>(
    src: &Source,
    value: Option<Spanned<T>>,
    convert: impl FnOnce(T) -> Result<U, String>,
) -> Converted<U> {
    let Some(value) = value else {
        return Ok(None);
    };
    let span = value.span();
    let converted = convert(value.into_inner()).map_err(|message| src.error(&span, message))?;
    Ok(Some(Set {
        value: converted,
        origin: src.origin(&span),
    }))
}

/// The longest timeout (7 days, in milliseconds): `Instant + timeout` must never overflow in a
/// listener task, and nothing waits longer on purpose.
const MAX_TIMEOUT_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// The most connections or UDP associations: far below `Semaphore::MAX_PERMITS`, whose
/// constructor panics above it, and above what one process can hold open.
const MAX_COUNT: u64 = 1_000_000;
const _: () = assert!(MAX_COUNT as usize <= tokio::sync::Semaphore::MAX_PERMITS);
/// The smallest request head worth accepting: a request line and a `Host`.
const MIN_HEADER_BYTES: u64 = 1024;
/// hyper's read buffer (8 KiB + 100 × 4 KiB) bounds a request head; a larger limit would
/// never apply.
const MAX_HEADER_BYTES: u64 = 8192 + 4096 * 100;

/// A value outside `min..=max`: zero would make every connection fail, and a huge one makes a
/// listener panic at start (a semaphore's permit limit, `Instant` overflow).
fn bounded(key: &Key, n: u64, min: u64, max: u64) -> Result<u64, String> {
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("`{}` must be {min}-{max}", key.qualified()))
    }
}

/// Map entries in the order they appear in the file (TOML tables iterate sorted by key).
fn in_file_order(map: SpannedMap) -> impl Iterator<Item = (Spanned<String>, Spanned<String>)> {
    let mut entries: Vec<_> = map.into_iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries.into_iter()
}

//! Layering: every table and flag becomes a layer. Later layers replace earlier scalars and
//! merge the rule maps entry by entry; `--allow`/`--deny` are the last user layer; the
//! requirements file comes last of all, and its rules are kept apart so no user layer can
//! remove them.

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::value::StringDeserializer;
use serde::de::DeserializeOwned;
use toml::Spanned;

use super::error::{ConfigError, Source};
use super::listen::{self, Listener};
use super::raw::{self, RawLayer, RawNetwork};
use super::{AdminConfig, Config, DnsConfig, Limits, LogConfig, LogFormat, MultiAnswer, Sources};
use crate::policy::pattern::PatternKind;
use crate::policy::{Action, Mode, Origin, Pattern, RuleSpec, UnixAction, UnixSocketSpec};

/// Loads every source named by the policy flags and layers them into one [`Config`].
///
/// Errors are one line each, `path:line:col: message` when the position is known; warnings
/// (disabled networking, `dangerously_*`, a global `*` allow, …) are in [`Config::warnings`].
pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
    let configs = sources
        .configs
        .iter()
        .map(|path| read(path))
        .collect::<Result<Vec<_>, _>>()?;
    let requirements = sources.requirements.as_deref().map(read).transpose()?;
    build(&configs, requirements.as_ref(), sources)
}

/// [`load`] for texts already in memory, each with the name its errors cite: the same layering
/// without the file system, for callers that hold the text (the fuzz targets). The paths in
/// `sources.configs` and `sources.requirements` are not read.
pub fn load_texts(
    configs: &[(&str, &str)],
    requirements: Option<(&str, &str)>,
    sources: &Sources,
) -> Result<Config, ConfigError> {
    let configs: Vec<Source> = configs
        .iter()
        .map(|(name, text)| Source::new(name, text.to_string()))
        .collect();
    let requirements = requirements.map(|(name, text)| Source::new(name, text.to_string()));
    build(&configs, requirements.as_ref(), sources)
}

fn read(path: &Path) -> Result<Source, ConfigError> {
    let text = fs::read_to_string(path).map_err(|e| ConfigError::read(path, &e))?;
    Ok(Source::new(&path.display().to_string(), text))
}

/// A value and where it was set, so warnings and errors about the effective value can point
/// at the layer that decided it.
#[derive(Debug)]
struct Set<T> {
    value: T,
    origin: Origin,
}

/// Declares the settings a later layer replaces as a whole.
macro_rules! scalars {
    ($($field:ident: $ty:ty,)*) => {
        #[derive(Debug, Default)]
        struct Scalars {
            $($field: Option<Set<$ty>>,)*
        }

        impl Scalars {
            fn override_with(&mut self, later: Scalars) {
                $(if later.$field.is_some() {
                    self.$field = later.$field;
                })*
            }
        }
    };
}

scalars! {
    enabled: bool,
    mode: Mode,
    allow_local_binding: bool,
    enable_socks5: bool,
    enable_socks5_udp: bool,
    allow_upstream_proxy: bool,
    proxy: SocketAddr,
    socks: SocketAddr,
    admin: SocketAddr,
    dangerously_allow_non_loopback_proxy: bool,
    dangerously_allow_non_loopback_admin: bool,
    dangerously_allow_all_unix_sockets: bool,
    managed_allowed_domains_only: bool,
    dns_servers: Vec<SocketAddr>,
    dns_timeout: Duration,
    multi_answer: MultiAnswer,
    connect_timeout: Duration,
    idle_timeout: Duration,
    header_timeout: Duration,
    max_header_bytes: usize,
    max_connections: usize,
    max_udp_associations: usize,
    token_file: PathBuf,
    log_format: LogFormat,
    audit: PathBuf,
}

/// A Unix-socket entry as written; `none` only exists until layering removes the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum UnixEntry {
    Allow,
    Deny,
    None,
}

/// One table or the flags, converted and checked, ready to merge.
#[derive(Debug, Default)]
struct Layer {
    scalars: Scalars,
    /// Domain rules in file order; a list-form table has its allows before its denies, so a
    /// pattern in both lists ends as a deny.
    rules: Vec<(String, Action, Origin)>,
    unix: Vec<(String, UnixEntry, Origin)>,
}

/// Entries keyed by pattern or path, in the order they were last set.
#[derive(Debug)]
struct Entries<V> {
    slots: Vec<Option<(String, V, Origin)>>,
    index: HashMap<String, usize>,
}

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries {
            slots: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<V> Entries<V> {
    fn set(&mut self, key: String, value: V, origin: Origin) {
        if let Some(old) = self.index.insert(key.clone(), self.slots.len()) {
            self.slots[old] = None;
        }
        self.slots.push(Some((key, value, origin)));
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.index.remove(key) {
            self.slots[old] = None;
        }
    }

    fn into_entries(self) -> impl Iterator<Item = (String, V, Origin)> {
        self.slots.into_iter().flatten()
    }
}

#[derive(Debug, Default)]
struct Merged {
    scalars: Scalars,
    user_rules: Entries<Action>,
    managed_rules: Entries<Action>,
    unix: Entries<UnixAction>,
    /// A pattern both allowed and denied inside one layer: the deny wins, and says so.
    conflicts: Vec<String>,
}

impl Merged {
    fn apply(&mut self, layer: Layer, managed: bool) {
        self.scalars.override_with(layer.scalars);
        let rules = if managed {
            &mut self.managed_rules
        } else {
            &mut self.user_rules
        };
        let mut seen: HashMap<&str, (Action, &Origin)> = HashMap::new();
        for (pattern, action, origin) in &layer.rules {
            match seen.insert(pattern, (*action, origin)) {
                Some((earlier, first)) if earlier != *action => {
                    let (allow, deny) = match action {
                        Action::Deny => (first, origin),
                        Action::Allow => (origin, first),
                    };
                    self.conflicts.push(format!(
                        "`{pattern}` is both allowed ({allow}) and denied ({deny}) in one layer: \
                         the deny wins and the allow has no effect"
                    ));
                }
                _ => {}
            }
        }
        for (pattern, action, origin) in layer.rules {
            rules.set(pattern, action, origin);
        }
        for (path, entry, origin) in layer.unix {
            match entry {
                UnixEntry::Allow => self.unix.set(path, UnixAction::Allow, origin),
                UnixEntry::Deny => self.unix.set(path, UnixAction::Deny, origin),
                UnixEntry::None => self.unix.remove(&path),
            }
        }
    }
}

/// Layers already-read sources; `load` without the file system.
pub(super) fn build(
    configs: &[Source],
    requirements: Option<&Source>,
    sources: &Sources,
) -> Result<Config, ConfigError> {
    let profile = sources.profile.as_deref();
    let mut merged = Merged::default();
    let mut warnings = Vec::new();
    let mut profiles = Vec::new();
    let mut any_native = false;
    for src in configs {
        let parsed = raw::parse_config(src, profile)?;
        any_native |= parsed.native;
        profiles.extend(parsed.profiles);
        warnings.extend(parsed.warnings);
        for table in parsed.layers {
            merged.apply(convert(src, table)?, false);
        }
    }
    if let Some(name) = profile {
        if !profiles.iter().any(|p| p == name) {
            return Err(unknown_profile(name, profiles));
        }
    }
    merged.apply(flag_layer(sources), false);
    if let Some(src) = requirements {
        if let Some(network) = raw::parse_requirements(src)? {
            merged.apply(convert(src, RawLayer::from(network))?, true);
        }
    }

    // Without an explicit `enabled`, a native file or bare flags mean "use the proxy";
    // Codex-shaped files follow Codex, where sandboxed networking is off by default.
    let enabled_default = any_native || configs.is_empty();
    finish(merged, enabled_default, configs, warnings)
}

fn unknown_profile(name: &str, mut defined: Vec<String>) -> ConfigError {
    defined.sort();
    defined.dedup();
    let known = if defined.is_empty() {
        "no config file defines any `[permissions.<name>]` profile".to_string()
    } else {
        let names = defined
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("defined profiles: {names}")
    };
    ConfigError::Invalid(format!("unknown profile `{name}` (--profile): {known}"))
}

fn flag_layer(sources: &Sources) -> Layer {
    let allows = sources
        .allow
        .iter()
        .map(|p| (p.clone(), Action::Allow, Origin::Flag("--allow")));
    let denies = sources
        .deny
        .iter()
        .map(|p| (p.clone(), Action::Deny, Origin::Flag("--deny")));
    let set = |addr: Option<SocketAddr>, flag| {
        addr.map(|value| Set {
            value,
            origin: Origin::Flag(flag),
        })
    };
    Layer {
        rules: allows.chain(denies).collect(),
        scalars: Scalars {
            proxy: set(sources.http_listen, "--http-listen"),
            socks: set(sources.socks_listen, "--socks-listen"),
            admin: set(sources.admin_listen, "--admin-listen"),
            dns_servers: (!sources.dns_servers.is_empty()).then(|| Set {
                value: sources.dns_servers.clone(),
                origin: Origin::Flag("--dns-server"),
            }),
            ..Scalars::default()
        },
        ..Layer::default()
    }
}

/// Converts one table: values get their origins, URLs and addresses are parsed, paths and
/// numbers are checked.
fn convert(src: &Source, table: RawLayer) -> Result<Layer, ConfigError> {
    let RawLayer {
        network,
        dns,
        limits,
        admin,
        log,
    } = table;
    let RawNetwork {
        enabled,
        mode,
        domains,
        allowed_domains,
        denied_domains,
        unix_sockets,
        allow_local_binding,
        enable_socks5,
        enable_socks5_udp,
        allow_upstream_proxy,
        proxy_url,
        socks_url,
        admin_url,
        dangerously_allow_non_loopback_proxy,
        dangerously_allow_non_loopback_admin,
        dangerously_allow_all_unix_sockets,
        http_port,
        socks_port,
        managed_allowed_domains_only,
    } = network;

    let url = |listener: Listener, value: Option<Spanned<String>>| {
        checked(src, value, |url| listen::parse_listen_url(listener, &url))
    };
    // `http_port`/`socks_port` (requirements) and `proxy_url`/`socks_url` are never in the
    // same table, so at most one of each pair is set.
    let loopback_port = |port: Option<Spanned<u16>>| {
        set(src, port).map(|p| Set {
            value: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p.value),
            origin: p.origin,
        })
    };
    let millis = |key: &'static str, value: Option<Spanned<u64>>| {
        checked(src, value, |ms| {
            bounded(key, ms, 1, MAX_TIMEOUT_MS).map(Duration::from_millis)
        })
    };
    let count = |key: &'static str, value: Option<Spanned<u64>>, min: u64, max: u64| {
        checked(src, value, |n| {
            bounded(key, n, min, max).and_then(|n| {
                usize::try_from(n).map_err(|_| format!("`{key}` is too large for this platform"))
            })
        })
    };
    let path = |key: &'static str, value: Option<Spanned<String>>| {
        checked(src, value, |p| {
            if p.is_empty() {
                Err(format!("`{key}` must not be empty"))
            } else {
                Ok(PathBuf::from(p))
            }
        })
    };

    let scalars = Scalars {
        enabled: set(src, enabled),
        mode: checked(src, mode, |m| choice("mode", m))?,
        allow_local_binding: set(src, allow_local_binding),
        enable_socks5: set(src, enable_socks5),
        enable_socks5_udp: set(src, enable_socks5_udp),
        allow_upstream_proxy: set(src, allow_upstream_proxy),
        proxy: url(Listener::Proxy, proxy_url)?.or_else(|| loopback_port(http_port)),
        socks: url(Listener::Socks, socks_url)?.or_else(|| loopback_port(socks_port)),
        admin: url(Listener::Admin, admin_url)?,
        dangerously_allow_non_loopback_proxy: set(src, dangerously_allow_non_loopback_proxy),
        dangerously_allow_non_loopback_admin: set(src, dangerously_allow_non_loopback_admin),
        dangerously_allow_all_unix_sockets: set(src, dangerously_allow_all_unix_sockets),
        managed_allowed_domains_only: set(src, managed_allowed_domains_only),
        dns_servers: dns_servers(src, dns.servers)?,
        dns_timeout: millis("[dns] timeout_ms", dns.timeout_ms)?,
        multi_answer: checked(src, dns.multi_answer, |m| choice("multi_answer", m))?,
        connect_timeout: millis("[limits] connect_timeout_ms", limits.connect_timeout_ms)?,
        idle_timeout: millis("[limits] idle_timeout_ms", limits.idle_timeout_ms)?,
        header_timeout: millis("[limits] header_timeout_ms", limits.header_timeout_ms)?,
        max_header_bytes: count(
            "[limits] max_header_bytes",
            limits.max_header_bytes,
            MIN_HEADER_BYTES,
            MAX_HEADER_BYTES,
        )?,
        max_connections: count(
            "[limits] max_connections",
            limits.max_connections,
            1,
            MAX_COUNT,
        )?,
        max_udp_associations: count(
            "[limits] max_udp_associations",
            limits.max_udp_associations,
            1,
            MAX_COUNT,
        )?,
        token_file: path("token_file", admin.token_file)?,
        log_format: checked(src, log.format, |f| choice("format", f))?,
        audit: path("audit", log.audit)?,
    };

    let mut rules = Vec::new();
    for (pattern, action) in in_file_order(domains.unwrap_or_default()) {
        let action = entry(src, "domains", &pattern, action)?;
        let origin = src.origin(&pattern.span());
        rules.push((pattern.into_inner(), action, origin));
    }
    for (list, action) in [
        (allowed_domains, Action::Allow),
        (denied_domains, Action::Deny),
    ] {
        for pattern in list.map(Spanned::into_inner).unwrap_or_default() {
            let origin = src.origin(&pattern.span());
            rules.push((pattern.into_inner(), action, origin));
        }
    }

    let mut unix = Vec::new();
    for (path, value) in in_file_order(unix_sockets.unwrap_or_default()) {
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

    Ok(Layer {
        scalars,
        rules,
        unix,
    })
}

/// A string setting read as one of an enum's (serde-renamed) words.
fn choice<T: DeserializeOwned>(key: &str, word: String) -> Result<T, String> {
    T::deserialize(StringDeserializer::<serde::de::value::Error>::new(word))
        .map_err(|e| format!("`{key}`: {e}"))
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

fn set<T>(src: &Source, value: Option<Spanned<T>>) -> Option<Set<T>> {
    value.map(|v| Set {
        origin: src.origin(&v.span()),
        value: v.into_inner(),
    })
}

/// Like [`set`], converting the value; a conversion error is reported at the value.
fn checked<T, U>(
    src: &Source,
    value: Option<Spanned<T>>,
    convert: impl FnOnce(T) -> Result<U, String>,
) -> Result<Option<Set<U>>, ConfigError> {
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
fn bounded(key: &str, n: u64, min: u64, max: u64) -> Result<u64, String> {
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("`{key}` must be {min}-{max}"))
    }
}

fn dns_servers(
    src: &Source,
    servers: Option<Spanned<Vec<Spanned<String>>>>,
) -> Result<Option<Set<Vec<SocketAddr>>>, ConfigError> {
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

/// Map entries in the order they appear in the file (TOML tables iterate sorted by key).
fn in_file_order(map: raw::SpannedMap) -> impl Iterator<Item = (Spanned<String>, Spanned<String>)> {
    let mut entries: Vec<_> = map.into_iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries.into_iter()
}

fn value<T: Clone>(set: &Option<Set<T>>) -> Option<T> {
    set.as_ref().map(|s| s.value.clone())
}

fn finish(
    merged: Merged,
    enabled_default: bool,
    configs: &[Source],
    mut warnings: Vec<String>,
) -> Result<Config, ConfigError> {
    let Merged {
        scalars: s,
        user_rules,
        managed_rules,
        unix,
        conflicts,
    } = merged;
    warnings.extend(conflicts);
    let flag = |set: &Option<Set<bool>>, default: bool| value(set).unwrap_or(default);

    let unix_sockets: Vec<UnixSocketSpec> = unix
        .into_entries()
        .map(|(path, action, origin)| UnixSocketSpec {
            path: PathBuf::from(path),
            action,
            origin,
        })
        .collect();
    let non_loopback_proxy = flag(&s.dangerously_allow_non_loopback_proxy, false);
    let non_loopback_admin = flag(&s.dangerously_allow_non_loopback_admin, false);
    let all_unix = flag(&s.dangerously_allow_all_unix_sockets, false);
    // A non-loopback listener that can reach local Unix sockets would be a remote bridge into
    // local daemons, so it is refused whatever `dangerously_allow_non_loopback_proxy` says.
    let unix_reachable = all_unix || unix_sockets.iter().any(|u| u.action == UnixAction::Allow);
    let proxy_addr = listener(
        &s.proxy,
        Listener::Proxy,
        non_loopback_proxy,
        unix_reachable,
    )?;
    let socks_addr = listener(
        &s.socks,
        Listener::Socks,
        non_loopback_proxy,
        unix_reachable,
    )?;
    let admin_addr = listener(&s.admin, Listener::Admin, non_loopback_admin, false)?;

    let managed_only = flag(&s.managed_allowed_domains_only, false);
    let mut rules: Vec<RuleSpec> = user_rules
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
    for (pattern, action, origin) in managed_rules.into_entries() {
        managed_allows += usize::from(action == Action::Allow);
        rules.push(RuleSpec {
            pattern,
            action,
            origin,
            managed: true,
        });
    }

    let enabled = flag(&s.enabled, enabled_default);
    match &s.enabled {
        Some(Set {
            value: false,
            origin,
        }) => warnings.push(format!(
            "sandboxed networking is disabled by `enabled = false` at {origin}; \
             `serve` and `run` will refuse to start"
        )),
        None if !enabled => {
            let files = configs
                .iter()
                .map(|c| c.path.as_ref())
                .collect::<Vec<_>>()
                .join(", ");
            warnings.push(format!(
                "sandboxed networking is disabled: `enabled` defaults to false in Codex-shaped \
                 files and none of {files} sets it; `serve` and `run` will refuse to start"
            ));
        }
        _ => {}
    }
    let dangers = [
        (
            &s.dangerously_allow_non_loopback_proxy,
            "dangerously_allow_non_loopback_proxy",
            "the proxy listeners may be reachable from other hosts",
        ),
        (
            &s.dangerously_allow_non_loopback_admin,
            "dangerously_allow_non_loopback_admin",
            "the admin API may be reachable from other hosts",
        ),
        (
            &s.dangerously_allow_all_unix_sockets,
            "dangerously_allow_all_unix_sockets",
            "every Unix socket that is not denied is reachable",
        ),
    ];
    for (setting, key, consequence) in dangers {
        if let Some(Set {
            value: true,
            origin,
        }) = setting
        {
            warnings.push(format!("`{key} = true` at {origin}: {consequence}"));
        }
    }
    for rule in &rules {
        // Judged as the policy will read it: `*:443` and ` * ` are the global rule too.
        let global = || {
            Pattern::parse(&rule.pattern, rule.action)
                .is_ok_and(|p| matches!(p.kind, PatternKind::Global))
        };
        if rule.action == Action::Allow && rule.pattern.trim_start().starts_with('*') && global() {
            warnings.push(format!(
                "global `*` allow rule at {}: every public host that is not denied is allowed",
                rule.origin
            ));
        }
    }
    if let Some(Set {
        value: true,
        origin,
    }) = &s.managed_allowed_domains_only
    {
        if managed_allows == 0 {
            warnings.push(format!(
                "`managed_allowed_domains_only = true` at {origin} but the requirements allow \
                 no domain, so no domain is allowed"
            ));
        }
    }

    let limits = Limits::default();
    Ok(Config {
        enabled,
        mode: value(&s.mode).unwrap_or_default(),
        rules,
        unix_sockets,
        allow_local_binding: flag(&s.allow_local_binding, false),
        enable_socks5: flag(&s.enable_socks5, true),
        enable_socks5_udp: flag(&s.enable_socks5_udp, true),
        allow_upstream_proxy: flag(&s.allow_upstream_proxy, true),
        proxy_addr,
        socks_addr,
        admin_addr,
        dangerously_allow_non_loopback_proxy: non_loopback_proxy,
        dangerously_allow_non_loopback_admin: non_loopback_admin,
        dangerously_allow_all_unix_sockets: all_unix,
        dns: DnsConfig {
            servers: value(&s.dns_servers).unwrap_or_default(),
            timeout: value(&s.dns_timeout).unwrap_or(DnsConfig::default().timeout),
            multi_answer: value(&s.multi_answer).unwrap_or_default(),
        },
        limits: Limits {
            connect_timeout: value(&s.connect_timeout).unwrap_or(limits.connect_timeout),
            idle_timeout: value(&s.idle_timeout).unwrap_or(limits.idle_timeout),
            header_timeout: value(&s.header_timeout).unwrap_or(limits.header_timeout),
            max_header_bytes: value(&s.max_header_bytes).unwrap_or(limits.max_header_bytes),
            max_connections: value(&s.max_connections).unwrap_or(limits.max_connections),
            max_udp_associations: value(&s.max_udp_associations)
                .unwrap_or(limits.max_udp_associations),
        },
        admin: AdminConfig {
            token_file: value(&s.token_file),
        },
        log: LogConfig {
            format: value(&s.log_format).unwrap_or_default(),
            audit: value(&s.audit),
        },
        warnings,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Sources {
        Sources::default()
    }

    fn ok(
        configs: &[(&str, &str)],
        requirements: Option<(&str, &str)>,
        sources: &Sources,
    ) -> Config {
        load_texts(configs, requirements, sources).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(
        configs: &[(&str, &str)],
        requirements: Option<(&str, &str)>,
        sources: &Sources,
    ) -> String {
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
            rules: Vec::new(),
            unix_sockets: Vec::new(),
            allow_local_binding: false,
            enable_socks5: true,
            enable_socks5_udp: true,
            allow_upstream_proxy: true,
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
            warnings: Vec::new(),
        }
    }

    #[test]
    fn defaults_of_every_key() {
        assert_eq!(ok(&[], None, &flags()), defaults(true));
        assert_eq!(ok(&[("p.toml", "")], None, &flags()), defaults(true));
        assert_eq!(
            ok(
                &[("p.toml", "[dns]\n[limits]\n[admin]\n[log]\n")],
                None,
                &flags()
            ),
            defaults(true)
        );
        // The documented defaults, spelled out once more so a changed default fails here.
        let d = DnsConfig::default();
        assert_eq!(
            (d.servers.len(), d.timeout, d.multi_answer),
            (
                0,
                Duration::from_millis(2000),
                MultiAnswer::BlockIfAnyNonPublic
            )
        );
        assert_eq!(LogFormat::default(), LogFormat::Text);

        let mut codex = defaults(false);
        codex.warnings = vec!["sandboxed networking is disabled: `enabled` defaults to false in Codex-shaped files and none of config.toml sets it; `serve` and `run` will refuse to start".to_string()];
        assert_eq!(
            ok(
                &[(
                    "config.toml",
                    "model = 'o3'\n[features]\nweb_search = true\n"
                )],
                None,
                &flags()
            ),
            codex
        );
        // A requirements file alone without `enabled` does not disable a flag-only run.
        assert_eq!(
            ok(&[], Some(("r.toml", "[experimental_network]\n")), &flags()),
            defaults(true)
        );
    }

    #[test]
    fn native_file_with_every_key_set() {
        let text = r#"
enabled = true
mode = "limited"
domains = { "example.com" = "allow", "bad.example.com" = "deny" }
unix_sockets = { "/run/a.sock" = "allow", "/run/b.sock" = "deny", "/run/c.sock" = "none" }
allow_local_binding = true
enable_socks5 = false
enable_socks5_udp = false
allow_upstream_proxy = false
proxy_url = "http://localhost:3000"
socks_url = "socks5h://[::1]:3001"
admin_url = "http://10.0.0.1:3002"
dangerously_allow_non_loopback_proxy = true
dangerously_allow_non_loopback_admin = true
dangerously_allow_all_unix_sockets = false

[dns]
servers = ["127.0.0.1:5353", "10.0.0.53", "[::1]:53"]
timeout_ms = 150
multi_answer = "use-public-only"

[limits]
connect_timeout_ms = 1
idle_timeout_ms = 2
header_timeout_ms = 3
max_header_bytes = 4096
max_connections = 5
max_udp_associations = 6

[admin]
token_file = "/etc/egress/token"

[log]
format = "json"
audit = "-"
"#;
        let got = ok(&[("all.toml", text)], None, &flags());
        let f = |line: u32, col: u32| Origin::File {
            path: "all.toml".into(),
            line,
            col,
        };
        let want = Config {
            enabled: true,
            mode: Mode::Limited,
            rules: vec![
                RuleSpec { pattern: "example.com".into(), action: Action::Allow, origin: f(4, 13), managed: false },
                RuleSpec { pattern: "bad.example.com".into(), action: Action::Deny, origin: f(4, 38), managed: false },
            ],
            unix_sockets: vec![
                UnixSocketSpec { path: "/run/a.sock".into(), action: UnixAction::Allow, origin: f(5, 18) },
                UnixSocketSpec { path: "/run/b.sock".into(), action: UnixAction::Deny, origin: f(5, 43) },
            ],
            allow_local_binding: true,
            enable_socks5: false,
            enable_socks5_udp: false,
            allow_upstream_proxy: false,
            proxy_addr: addr("127.0.0.1:3000"),
            socks_addr: addr("[::1]:3001"),
            admin_addr: addr("10.0.0.1:3002"),
            dangerously_allow_non_loopback_proxy: true,
            dangerously_allow_non_loopback_admin: true,
            dangerously_allow_all_unix_sockets: false,
            dns: DnsConfig {
                servers: vec![addr("127.0.0.1:5353"), addr("10.0.0.53:53"), addr("[::1]:53")],
                timeout: Duration::from_millis(150),
                multi_answer: MultiAnswer::UsePublicOnly,
            },
            limits: Limits {
                connect_timeout: Duration::from_millis(1),
                idle_timeout: Duration::from_millis(2),
                header_timeout: Duration::from_millis(3),
                max_header_bytes: 4096,
                max_connections: 5,
                max_udp_associations: 6,
            },
            admin: AdminConfig { token_file: Some("/etc/egress/token".into()) },
            log: LogConfig { format: LogFormat::Json, audit: Some("-".into()) },
            warnings: vec![
                "`dangerously_allow_non_loopback_proxy = true` at all.toml:13:40: the proxy listeners may be reachable from other hosts".to_string(),
                "`dangerously_allow_non_loopback_admin = true` at all.toml:14:40: the admin API may be reachable from other hosts".to_string(),
            ],
        };
        assert_eq!(got, want);
    }

    #[test]
    fn every_shape_contributes_its_tables() {
        let features_table = "model = 'o3'\n[features.network_proxy]\nenabled = true\ndomains = { \"a.com\" = \"allow\" }\n";
        let shorthand = "[features]\nnetwork_proxy = true\n";
        let network = "[network]\nenabled = true\nallowed_domains = ['n.com']\n";
        let profiles = "\
default_permissions = 'ws'
[permissions.ws.network]
enabled = true
allowed_domains = ['ws.com']
[permissions.ci.network]
enabled = true
denied_domains = ['ci.com']
";
        let ci = Sources {
            profile: Some("ci".into()),
            ..flags()
        };
        let cases: [(&str, &str, &Sources, Vec<&str>); 5] = [
            (
                "features table",
                features_table,
                &flags(),
                vec!["allow a.com @c.toml:4:13"],
            ),
            ("features shorthand", shorthand, &flags(), vec![]),
            (
                "[network]",
                network,
                &flags(),
                vec!["allow n.com @c.toml:3:20"],
            ),
            (
                "default_permissions",
                profiles,
                &flags(),
                vec!["allow ws.com @c.toml:4:20"],
            ),
            ("--profile", profiles, &ci, vec!["deny ci.com @c.toml:7:19"]),
        ];
        for (name, text, sources, want) in cases {
            let got = ok(&[("c.toml", text)], None, sources);
            assert!(got.enabled, "{name}");
            assert_eq!(rules(&got), want, "{name}");
            assert!(got.warnings.is_empty(), "{name}: {:?}", got.warnings);
        }

        let req = "\
[experimental_network]
enabled = true
http_port = 3130
socks_port = 3131
allowed_domains = ['api.openai.com']
denied_domains = ['blocked.example.com']
";
        let got = ok(&[], Some(("requirements.toml", req)), &flags());
        assert_eq!(
            rules(&got),
            [
                "allow api.openai.com @requirements.toml:5:20 managed",
                "deny blocked.example.com @requirements.toml:6:19 managed",
            ]
        );
        assert_eq!(
            (got.proxy_addr, got.socks_addr),
            (addr("127.0.0.1:3130"), addr("127.0.0.1:3131"))
        );
    }

    #[test]
    fn codex_order_inside_one_file_and_enabled_default() {
        let text = "\
default_permissions = 'p'
[features.network_proxy]
mode = 'limited'
allow_local_binding = true
domains = { 'x.com' = 'allow' }
[network]
mode = 'full'
domains = { 'x.com' = 'deny' }
[permissions.p.network]
allow_local_binding = false
";
        let got = ok(&[("c.toml", text)], None, &flags());
        assert_eq!(got.mode, Mode::Full);
        assert!(!got.allow_local_binding);
        assert_eq!(rules(&got), ["deny x.com @c.toml:8:13"]);
        // No table sets `enabled`, so the Codex default (off) applies.
        assert!(!got.enabled);

        let cases = [
            // (files, requirements, enabled)
            (vec![("a.toml", "enabled = false")], None, false),
            (
                vec![("a.toml", "enabled = false"), ("b.toml", "mode = 'full'")],
                None,
                false,
            ),
            (
                vec![("a.toml", "enabled = false"), ("b.toml", "enabled = true")],
                None,
                true,
            ),
            (vec![("c.toml", "[network]")], None, false),
            (vec![("c.toml", "[network]"), ("n.toml", "")], None, true),
            (
                vec![("c.toml", "features.network_proxy = true")],
                None,
                true,
            ),
            (
                vec![("c.toml", "features.network_proxy = true")],
                Some("experimental_network.enabled = false"),
                false,
            ),
            (
                vec![("c.toml", "[network]")],
                Some("experimental_network.enabled = true"),
                true,
            ),
            (
                vec![("c.toml", "[network]")],
                Some("[experimental_network]"),
                false,
            ),
        ];
        for (files, req, want) in cases {
            let got = ok(&files, req.map(|r| ("r.toml", r)), &flags());
            assert_eq!(got.enabled, want, "{files:?} {req:?}");
        }
    }

    #[test]
    fn map_and_list_forms_keep_positions() {
        let got = ok(
            &[(
                "l.toml",
                "allowed_domains = [\n  'a.com',\n  '*.b.com',\n  'both.com',\n]\ndenied_domains = ['both.com', 'c.com']\n",
            )],
            None,
            &flags(),
        );
        assert_eq!(
            rules(&got),
            [
                "allow a.com @l.toml:2:3",
                "allow *.b.com @l.toml:3:3",
                "deny both.com @l.toml:6:19",
                "deny c.com @l.toml:6:31",
            ]
        );
        let got = ok(
            &[(
                "m.toml",
                "[domains]\n\"z.com\" = 'allow'\n'a.com' = 'deny'\n\"  Mixed.COM. \" = 'allow'\n",
            )],
            None,
            &flags(),
        );
        // File order, not key order; pattern text as written (the policy normalises it).
        assert_eq!(
            rules(&got),
            [
                "allow z.com @m.toml:2:1",
                "deny a.com @m.toml:3:1",
                "allow   Mixed.COM.  @m.toml:4:1"
            ]
        );
        assert_eq!(
            err(&[("m.toml", "domains = {}\nallowed_domains = []\n")], None, &flags()),
            "m.toml:2:1: use either `domains` or `allowed_domains`/`denied_domains` in one table, not both"
        );
    }

    #[test]
    fn later_layers_override_scalars_and_merge_maps_by_entry() {
        let first = "\
mode = 'limited'
enable_socks5 = false
[domains]
'a.com' = 'allow'
'b.com' = 'deny'
'c.com' = 'allow'
[unix_sockets]
'/run/a.sock' = 'allow'
'/run/b.sock' = 'allow'
'/run/c.sock' = 'deny'
[dns]
servers = ['10.0.0.1']
timeout_ms = 100
";
        let second = "\
mode = 'full'
[domains]
'b.com' = 'allow'
'd.com' = 'deny'
[unix_sockets]
'/run/a.sock' = 'none'
'/run/c.sock' = 'allow'
'/run/never.sock' = 'none'
[dns]
timeout_ms = 200
";
        let got = ok(&[("1.toml", first), ("2.toml", second)], None, &flags());
        assert_eq!(got.mode, Mode::Full);
        assert!(
            !got.enable_socks5,
            "a scalar the later file does not set is kept"
        );
        assert_eq!(
            rules(&got),
            [
                "allow a.com @1.toml:4:1",
                "allow c.com @1.toml:6:1",
                "allow b.com @2.toml:3:1",
                "deny d.com @2.toml:4:1",
            ]
        );
        assert_eq!(
            unix(&got),
            [
                "allow /run/b.sock @1.toml:9:1",
                "allow /run/c.sock @2.toml:7:1"
            ]
        );
        assert_eq!(got.dns.servers, [addr("10.0.0.1:53")]);
        assert_eq!(got.dns.timeout, Duration::from_millis(200));

        let override_dns = Sources {
            dns_servers: vec![addr("127.0.0.1:5300")],
            ..flags()
        };
        let got = ok(&[("1.toml", first)], None, &override_dns);
        assert_eq!(got.dns.servers, [addr("127.0.0.1:5300")]);
    }

    #[test]
    fn allow_and_deny_flags_are_the_last_user_layer() {
        let sources = Sources {
            allow: vec!["**.github.com".into(), "x.com".into(), "both.com".into()],
            deny: vec!["y.com".into(), "both.com".into()],
            ..flags()
        };
        let got = ok(&[], None, &sources);
        assert!(got.enabled);
        assert_eq!(
            rules(&got),
            [
                "allow **.github.com @--allow",
                "allow x.com @--allow",
                "deny y.com @--deny",
                "deny both.com @--deny"
            ]
        );
        let got = ok(
            &[(
                "f.toml",
                "domains = { 'x.com' = 'deny', 'y.com' = 'allow', 'z.com' = 'allow' }",
            )],
            None,
            &sources,
        );
        assert_eq!(
            rules(&got),
            [
                "allow z.com @f.toml:1:50",
                "allow **.github.com @--allow",
                "allow x.com @--allow",
                "deny y.com @--deny",
                "deny both.com @--deny",
            ]
        );
    }

    #[test]
    fn managed_combinations() {
        let user = "\
proxy_url = 'http://127.0.0.1:4000'
allow_local_binding = true
[domains]
'user.com' = 'allow'
'shared.com' = 'allow'
'userdeny.com' = 'deny'
[unix_sockets]
'/run/user.sock' = 'allow'
'/run/shared.sock' = 'allow'
";
        let cases: [(&str, &str, Vec<&str>); 4] = [
            (
                "managed deny beats user allow, managed allow added",
                "[experimental_network]\ndomains = { 'shared.com' = 'deny', 'admin.com' = 'allow' }\n",
                vec![
                    "allow user.com @u.toml:4:1",
                    "allow shared.com @u.toml:5:1",
                    "deny userdeny.com @u.toml:6:1",
                    "deny shared.com @r.toml:2:13 managed",
                    "allow admin.com @r.toml:2:36 managed",
                ],
            ),
            (
                "managed_allowed_domains_only keeps managed allows and user denies",
                "[experimental_network]\nmanaged_allowed_domains_only = true\nallowed_domains = ['admin.com']\n",
                vec!["deny userdeny.com @u.toml:6:1", "allow admin.com @r.toml:3:20 managed"],
            ),
            (
                "managed_allowed_domains_only without managed allows leaves no allow",
                "[experimental_network]\nmanaged_allowed_domains_only = true\ndenied_domains = ['evil.com']\n",
                vec!["deny userdeny.com @u.toml:6:1", "deny evil.com @r.toml:3:19 managed"],
            ),
            (
                "managed_allowed_domains_only = false changes nothing",
                "[experimental_network]\nmanaged_allowed_domains_only = false\n",
                vec!["allow user.com @u.toml:4:1", "allow shared.com @u.toml:5:1", "deny userdeny.com @u.toml:6:1"],
            ),
        ];
        for (name, req, want) in cases {
            let got = ok(&[("u.toml", user)], Some(("r.toml", req)), &flags());
            assert_eq!(rules(&got), want, "{name}");
        }

        // The flag layer is a user layer: managed-only drops its allows too.
        let sources = Sources {
            allow: vec!["flag.com".into()],
            deny: vec!["flagdeny.com".into()],
            ..flags()
        };
        let got = ok(
            &[],
            Some((
                "r.toml",
                "experimental_network.managed_allowed_domains_only = true\n",
            )),
            &sources,
        );
        assert_eq!(rules(&got), ["deny flagdeny.com @--deny"]);
        assert_eq!(
            got.warnings,
            ["`managed_allowed_domains_only = true` at r.toml:1:53 but the requirements allow no domain, so no domain is allowed"]
        );

        // Managed scalars and Unix-socket entries override the user's.
        let req = "\
[experimental_network]
http_port = 5000
allow_local_binding = false
enable_socks5_udp = false
[experimental_network.unix_sockets]
'/run/shared.sock' = 'deny'
'/run/user.sock' = 'none'
'/run/admin.sock' = 'allow'
";
        let got = ok(&[("u.toml", user)], Some(("r.toml", req)), &flags());
        assert_eq!(got.proxy_addr, addr("127.0.0.1:5000"));
        assert!(!got.allow_local_binding);
        assert!(!got.enable_socks5_udp);
        assert_eq!(
            unix(&got),
            [
                "deny /run/shared.sock @r.toml:6:1",
                "allow /run/admin.sock @r.toml:8:1"
            ]
        );
    }

    #[test]
    fn listen_flags_obey_the_loopback_rules_and_lose_to_requirements() {
        let sources = Sources {
            http_listen: Some(addr("127.0.0.1:0")),
            socks_listen: Some(addr("[::1]:0")),
            ..Sources::default()
        };
        let got = ok(
            &[("l.toml", "proxy_url = 'http://127.0.0.1:3000'")],
            None,
            &sources,
        );
        assert_eq!(
            (got.proxy_addr, got.socks_addr),
            (addr("127.0.0.1:0"), addr("[::1]:0"))
        );
        let exposed = Sources {
            http_listen: Some(addr("0.0.0.0:3128")),
            ..Sources::default()
        };
        assert_eq!(
            err(&[], None, &exposed),
            "--http-listen: `proxy_url` listens on non-loopback address 0.0.0.0:3128; set `dangerously_allow_non_loopback_proxy = true` to allow it"
        );
        let req = ("r.toml", "[experimental_network]\nhttp_port = 5000\n");
        assert_eq!(
            ok(&[], Some(req), &sources).proxy_addr,
            addr("127.0.0.1:5000")
        );
    }

    #[test]
    fn listener_checks() {
        let unix = "unix_sockets = { '/run/docker.sock' = 'allow' }\n";
        let cases = [
            ("proxy_url = 'http://0.0.0.0:3128'", "l.toml:1:13: `proxy_url` listens on non-loopback address 0.0.0.0:3128; set `dangerously_allow_non_loopback_proxy = true` to allow it"),
            ("socks_url = 'socks5://[::]:1080'", "l.toml:1:13: `socks_url` listens on non-loopback address [::]:1080; set `dangerously_allow_non_loopback_proxy = true` to allow it"),
            ("admin_url = 'http://192.168.1.2:8080'\ndangerously_allow_non_loopback_proxy = true", "l.toml:1:13: `admin_url` listens on non-loopback address 192.168.1.2:8080; set `dangerously_allow_non_loopback_admin = true` to allow it"),
            ("proxy_url = 'http://127.0.0.1'", "l.toml:1:13: `proxy_url` has no port: `http://127.0.0.1` (write e.g. `http://127.0.0.1:3128`)"),
            ("socks_url = 'https://127.0.0.1:1'", "l.toml:1:13: `socks_url` must use `http://` or `socks5://` or `socks5h://`, got `https://`"),
            ("proxy_url = 'http://proxy.internal:3128'", "l.toml:1:13: `proxy_url` host must be an IP address or `localhost`, got `proxy.internal`"),
        ];
        for (text, want) in cases {
            assert_eq!(err(&[("l.toml", text)], None, &flags()), want, "{text}");
        }

        let exposed =
            "proxy_url = 'http://0.0.0.0:3128'\ndangerously_allow_non_loopback_proxy = true\n";
        let got = ok(&[("l.toml", exposed)], None, &flags());
        assert_eq!(got.proxy_addr, addr("0.0.0.0:3128"));
        let admin =
            "admin_url = 'http://0.0.0.0:9000'\ndangerously_allow_non_loopback_admin = true\n";
        assert_eq!(
            ok(&[("l.toml", admin)], None, &flags()).admin_addr,
            addr("0.0.0.0:9000")
        );
        // The admin listener is not a bridge to Unix sockets; only proxy listeners are forced.
        let admin_with_unix = format!("{admin}{unix}");
        assert_eq!(
            ok(&[("l.toml", &admin_with_unix)], None, &flags()).admin_addr,
            addr("0.0.0.0:9000")
        );

        let forced = "l.toml:1:13: `proxy_url` listens on non-loopback address 0.0.0.0:3128, but listeners stay on loopback while Unix sockets are allowed";
        assert_eq!(
            err(&[("l.toml", &format!("{exposed}{unix}"))], None, &flags()),
            forced
        );
        let all_unix = format!("{exposed}dangerously_allow_all_unix_sockets = true\n");
        assert_eq!(err(&[("l.toml", &all_unix)], None, &flags()), forced);
        // A socket allowed only by the requirements forces loopback just the same.
        let req = "experimental_network.unix_sockets = { '/run/x.sock' = 'allow' }\n";
        assert_eq!(
            err(&[("l.toml", exposed)], Some(("r.toml", req)), &flags()),
            forced
        );
        // Denied sockets open nothing, so they do not force loopback.
        let denied = format!("{exposed}unix_sockets = {{ '/run/x.sock' = 'deny' }}\n");
        assert_eq!(
            ok(&[("l.toml", &denied)], None, &flags()).proxy_addr,
            addr("0.0.0.0:3128")
        );
    }

    #[test]
    fn value_errors_point_at_the_value() {
        let cases = [
            ("unix_sockets = { 'run/docker.sock' = 'allow' }", "v.toml:1:18: Unix socket path `run/docker.sock` must be absolute"),
            ("[dns]\nservers = ['127.0.0.1', 'dns.google']", "v.toml:2:25: invalid DNS server `dns.google` (expected `IP`, `IP:PORT` or `[IPv6]:PORT`)"),
            ("[dns]\ntimeout_ms = 0", "v.toml:2:14: `[dns] timeout_ms` must be 1-604800000"),
            ("[limits]\nmax_connections = 0", "v.toml:2:19: `[limits] max_connections` must be 1-1000000"),
            ("[limits]\nmax_connections = 18446744073709551615", "v.toml:2:19: `[limits] max_connections` must be 1-1000000"),
            ("[limits]\nmax_udp_associations = 1000001", "v.toml:2:24: `[limits] max_udp_associations` must be 1-1000000"),
            ("[limits]\nmax_header_bytes = 1023", "v.toml:2:20: `[limits] max_header_bytes` must be 1024-417792"),
            ("[limits]\nidle_timeout_ms = 604800001", "v.toml:2:19: `[limits] idle_timeout_ms` must be 1-604800000"),
            ("[admin]\ntoken_file = ''", "v.toml:2:14: `token_file` must not be empty"),
            ("enable_socks5 = 1", "v.toml:1:17: `enable_socks5`: invalid type: integer `1`, expected a boolean"),
            ("mode = 'half'", "v.toml:1:8: `mode`: unknown variant `half`, expected `full` or `limited`"),
            ("[domains]\n\"a.com\" = 'allow'\n\"b.com\" = 'maybe'", "v.toml:3:11: `domains` entry `b.com`: unknown variant `maybe`, expected `allow` or `deny`"),
            ("unix_sockets = { \"/a\" = 'sometimes' }", "v.toml:1:25: `unix_sockets` entry `/a`: unknown variant `sometimes`, expected one of `allow`, `deny`, `none`"),
            ("[dns]\nmulti_answer = 'first'", "v.toml:2:16: `multi_answer`: unknown variant `first`, expected `block-if-any-non-public` or `use-public-only`"),
            ("[log]\nformat = 'xml'", "v.toml:2:10: `format`: unknown variant `xml`, expected `text` or `json`"),
            ("[features.network_proxy]\ndomains = { 'a' = 'none' }", "v.toml:2:19: `domains` entry `a`: unknown variant `none`, expected `allow` or `deny`"),
        ];
        for (text, want) in cases {
            assert_eq!(err(&[("v.toml", text)], None, &flags()), want, "{text}");
        }
    }

    #[test]
    fn unknown_profile_names_the_defined_ones() {
        let a = "[permissions.dev.network]\nenabled = true\n";
        let b = "[permissions.ci]\n[permissions.dev.network]\n";
        let sources = Sources {
            profile: Some("prod".into()),
            ..flags()
        };
        assert_eq!(
            err(&[("a.toml", a), ("b.toml", b)], None, &sources),
            "unknown profile `prod` (--profile): defined profiles: `ci`, `dev`"
        );
        assert_eq!(
            err(&[("n.toml", "")], None, &sources),
            "unknown profile `prod` (--profile): no config file defines any `[permissions.<name>]` profile"
        );
        // Defined in one file is enough; the others contribute their other tables.
        let dev = Sources {
            profile: Some("dev".into()),
            ..flags()
        };
        let got = ok(
            &[("c.toml", "[network]\nmode = 'limited'\n"), ("a.toml", a)],
            None,
            &dev,
        );
        assert!(got.enabled);
        assert_eq!(got.mode, Mode::Limited);
    }

    #[test]
    fn every_spelling_of_the_global_rule_warns() {
        let text = "enabled = true\nallowed_domains = ['*:443', ' * ', '**.example.com']\n";
        let got = ok(&[("g.toml", text)], None, &flags());
        assert_eq!(
            got.warnings,
            [
                "global `*` allow rule at g.toml:2:20: every public host that is not denied is allowed",
                "global `*` allow rule at g.toml:2:29: every public host that is not denied is allowed",
            ]
        );
    }

    #[test]
    fn warnings() {
        let text = "\
enabled = false
dangerously_allow_all_unix_sockets = true
allowed_domains = ['*', ' * ', '*.com.example']
";
        let got = ok(&[("w.toml", text)], None, &flags());
        assert_eq!(
            got.warnings,
            [
                "sandboxed networking is disabled by `enabled = false` at w.toml:1:11; `serve` and `run` will refuse to start",
                "`dangerously_allow_all_unix_sockets = true` at w.toml:2:38: every Unix socket that is not denied is reachable",
                "global `*` allow rule at w.toml:3:20: every public host that is not denied is allowed",
                "global `*` allow rule at w.toml:3:25: every public host that is not denied is allowed",
            ]
        );
        // Only the effective values warn: a later layer that turns a setting off is quiet.
        let got = ok(&[("w.toml", text), ("x.toml", "enabled = true\ndangerously_allow_all_unix_sockets = false\ndenied_domains = []\n")], None, &flags());
        assert_eq!(got.warnings.len(), 2, "{:?}", got.warnings);
        let got = ok(
            &[("d.toml", "default_permissions = 'nope'\n")],
            None,
            &flags(),
        );
        assert_eq!(got.warnings[0], "d.toml:1:23: `default_permissions = \"nope\"` names a profile this file does not define, so no `[permissions.<name>.network]` settings apply from it");
    }

    #[test]
    fn load_reads_files_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("p.toml");
        let requirements = dir.path().join("r.toml");
        fs::write(&config, "allowed_domains = ['a.com']\n").unwrap();
        fs::write(
            &requirements,
            "experimental_network.denied_domains = ['b.com']\n",
        )
        .unwrap();
        let sources = Sources {
            configs: vec![config.clone()],
            requirements: Some(requirements.clone()),
            ..flags()
        };
        let got = load(&sources).unwrap();
        assert_eq!(
            rules(&got),
            [
                format!("allow a.com @{}:1:20", config.display()),
                format!("deny b.com @{}:1:40 managed", requirements.display()),
            ]
        );

        let missing = dir.path().join("missing.toml");
        let sources = Sources {
            configs: vec![config, missing.clone()],
            ..flags()
        };
        assert_eq!(
            load(&sources).unwrap_err().to_string(),
            format!(
                "cannot read {}: No such file or directory",
                missing.display()
            )
        );
        let sources = Sources {
            requirements: Some(missing.clone()),
            ..flags()
        };
        assert_eq!(
            load(&sources).unwrap_err(),
            ConfigError::Read {
                path: missing.display().to_string(),
                reason: "No such file or directory".into()
            }
        );
    }
}

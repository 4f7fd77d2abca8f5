//! The shapes a file may take, as written. Every value keeps its byte span so errors and rules
//! can point back at the line and column it came from.
//!
//! Keys are checked against explicit per-table lists before serde sees a table: the same
//! struct serves native files, Codex tables and requirements, but each accepts different keys,
//! and an unknown key must be reported at the key with the list of what is accepted.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::error::{ConfigError, Source};

/// A map written as a TOML table: keys and values with their spans.
///
/// Enum-valued settings (`"allow"`, `"limited"`, …) stay strings here and are converted while
/// layering: toml reports a non-string value for an enum only as "wanted string or table",
/// while a `String` gets "invalid type: integer `3`, expected a string".
pub(super) type SpannedMap = BTreeMap<Spanned<String>, Spanned<String>>;
pub(super) type SpannedList = Spanned<Vec<Spanned<String>>>;

/// Keys of a network table: native top level, `[features.network_proxy]`, `[network]` and
/// `[permissions.<name>.network]`.
pub(super) const NETWORK_KEYS: &[&str] = &[
    "enabled",
    "mode",
    "domains",
    "allowed_domains",
    "denied_domains",
    "unix_sockets",
    "allow_local_binding",
    "enable_socks5",
    "enable_socks5_udp",
    "allow_upstream_proxy",
    "proxy_url",
    "socks_url",
    "admin_url",
    "dangerously_allow_non_loopback_proxy",
    "dangerously_allow_non_loopback_admin",
    "dangerously_allow_all_unix_sockets",
];

/// Keys of `[experimental_network]` in `requirements.toml`.
pub(super) const REQUIREMENT_KEYS: &[&str] = &[
    "enabled",
    "http_port",
    "socks_port",
    "domains",
    "allowed_domains",
    "denied_domains",
    "unix_sockets",
    "managed_allowed_domains_only",
    "allow_local_binding",
    "enable_socks5",
    "enable_socks5_udp",
    "allow_upstream_proxy",
    "dangerously_allow_non_loopback_proxy",
    "dangerously_allow_non_loopback_admin",
    "dangerously_allow_all_unix_sockets",
];

/// Extension tables only a native file has.
const NATIVE_TABLES: &[&str] = &["dns", "limits", "admin", "log"];
const DNS_KEYS: &[&str] = &["servers", "timeout_ms", "multi_answer"];
const LIMIT_KEYS: &[&str] = &[
    "connect_timeout_ms",
    "idle_timeout_ms",
    "header_timeout_ms",
    "max_header_bytes",
    "max_connections",
    "max_udp_associations",
];
const ADMIN_KEYS: &[&str] = &["token_file"];
const LOG_KEYS: &[&str] = &["format", "audit"];

/// Top-level keys that make a file Codex-shaped.
const CODEX_KEYS: &[&str] = &["features", "permissions", "network", "default_permissions"];

/// The union of every network-table key; which of them a table may use is decided by the
/// key lists above.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    pub(super) enabled: Option<Spanned<bool>>,
    pub(super) mode: Option<Spanned<String>>,
    pub(super) domains: Option<SpannedMap>,
    pub(super) allowed_domains: Option<SpannedList>,
    pub(super) denied_domains: Option<SpannedList>,
    pub(super) unix_sockets: Option<SpannedMap>,
    pub(super) allow_local_binding: Option<Spanned<bool>>,
    pub(super) enable_socks5: Option<Spanned<bool>>,
    pub(super) enable_socks5_udp: Option<Spanned<bool>>,
    pub(super) allow_upstream_proxy: Option<Spanned<bool>>,
    pub(super) proxy_url: Option<Spanned<String>>,
    pub(super) socks_url: Option<Spanned<String>>,
    pub(super) admin_url: Option<Spanned<String>>,
    pub(super) dangerously_allow_non_loopback_proxy: Option<Spanned<bool>>,
    pub(super) dangerously_allow_non_loopback_admin: Option<Spanned<bool>>,
    pub(super) dangerously_allow_all_unix_sockets: Option<Spanned<bool>>,
    pub(super) http_port: Option<Spanned<u16>>,
    pub(super) socks_port: Option<Spanned<u16>>,
    pub(super) managed_allowed_domains_only: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    pub(super) servers: Option<SpannedList>,
    pub(super) timeout_ms: Option<Spanned<u64>>,
    pub(super) multi_answer: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) connect_timeout_ms: Option<Spanned<u64>>,
    pub(super) idle_timeout_ms: Option<Spanned<u64>>,
    pub(super) header_timeout_ms: Option<Spanned<u64>>,
    pub(super) max_header_bytes: Option<Spanned<u64>>,
    pub(super) max_connections: Option<Spanned<u64>>,
    pub(super) max_udp_associations: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) token_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<Spanned<String>>,
    pub(super) audit: Option<Spanned<String>>,
}

/// One table that becomes one layer: its network keys plus, in a native file, the extension
/// tables.
#[derive(Debug, Default)]
pub(super) struct RawLayer {
    pub(super) network: RawNetwork,
    pub(super) dns: RawDns,
    pub(super) limits: RawLimits,
    pub(super) admin: RawAdmin,
    pub(super) log: RawLog,
}

/// One `--config` file, split into the layers it contributes, in the order they apply.
#[derive(Debug)]
pub(super) struct ParsedConfig {
    pub(super) native: bool,
    pub(super) layers: Vec<RawLayer>,
    /// Every `[permissions.<name>]` the file defines, so an unknown `--profile` can list them.
    pub(super) profiles: Vec<String>,
    pub(super) warnings: Vec<String>,
}

/// Reads a `--config` file in whichever shape it is written.
pub(super) fn parse_config(
    src: &Source,
    profile: Option<&str>,
) -> Result<ParsedConfig, ConfigError> {
    let (root, span) = parse_document(src)?;
    // A requirements file given as `--config` would otherwise be read as native and fail on
    // whichever Codex key comes first; name the real mistake instead.
    if let Some(key) = root.keys().find(|k| k.get_ref() == "experimental_network") {
        return Err(src.error(
            &key.span(),
            "`[experimental_network]` belongs in the --requirements file, not in --config",
        ));
    }
    if CODEX_KEYS.iter().any(|k| root.contains_key(*k)) {
        parse_codex(src, root, profile)
    } else {
        parse_native(src, root, span)
    }
}

/// Reads `[experimental_network]` from a requirements file; other keys there belong to Codex.
pub(super) fn parse_requirements(src: &Source) -> Result<Option<RawNetwork>, ConfigError> {
    let (mut root, _) = parse_document(src)?;
    root.remove("experimental_network")
        .map(|table| sub_table(src, "experimental_network", table, REQUIREMENT_KEYS))
        .transpose()
}

fn parse_document(src: &Source) -> Result<(DeTable<'_>, Range<usize>), ConfigError> {
    let whole = 0..src.text.len();
    let root = DeTable::parse(&src.text).map_err(|e| src.toml_error(&e, &whole))?;
    let span = root.span();
    Ok((root.into_inner(), span))
}

fn parse_native(
    src: &Source,
    mut root: DeTable<'_>,
    span: Range<usize>,
) -> Result<ParsedConfig, ConfigError> {
    let allowed: Vec<&str> = NETWORK_KEYS.iter().chain(NATIVE_TABLES).copied().collect();
    check_keys(src, &root, &allowed, "native policy file")?;
    let layer = RawLayer {
        dns: optional_table(src, &mut root, "dns", DNS_KEYS)?,
        limits: optional_table(src, &mut root, "limits", LIMIT_KEYS)?,
        admin: optional_table(src, &mut root, "admin", ADMIN_KEYS)?,
        log: optional_table(src, &mut root, "log", LOG_KEYS)?,
        network: typed(src, Spanned::new(span, DeValue::Table(root)))?,
    };
    Ok(ParsedConfig {
        native: true,
        layers: vec![layer],
        profiles: Vec::new(),
        warnings: Vec::new(),
    })
}

/// A Codex `config.toml`: `[features.network_proxy]`, then `[network]`, then the selected
/// `[permissions.<name>.network]`, each a layer over the previous one.
fn parse_codex(
    src: &Source,
    mut root: DeTable<'_>,
    profile: Option<&str>,
) -> Result<ParsedConfig, ConfigError> {
    // Codex ignores top-level network keys, so accepting them silently would drop rules,
    // denies included, without a word.
    if let Some(key) = root
        .keys()
        .filter(|k| NETWORK_KEYS.contains(&k.get_ref().as_ref()))
        .min_by_key(|k| k.span().start)
    {
        return Err(src.error(
            &key.span(),
            format!(
                "`{}` at the top level of a Codex config.toml has no effect; put it in \
                 `[features.network_proxy]`, `[network]` or `[permissions.<name>.network]`",
                key.get_ref()
            ),
        ));
    }
    // Our extension tables (`[dns]`, `[limits]`, `[admin]`, `[log]`) work in Codex files too.
    let mut layers = Vec::new();
    if NATIVE_TABLES.iter().any(|t| root.contains_key(*t)) {
        layers.push(RawLayer {
            dns: optional_table(src, &mut root, "dns", DNS_KEYS)?,
            limits: optional_table(src, &mut root, "limits", LIMIT_KEYS)?,
            admin: optional_table(src, &mut root, "admin", ADMIN_KEYS)?,
            log: optional_table(src, &mut root, "log", LOG_KEYS)?,
            network: RawNetwork::default(),
        });
    }
    if let Some(features) = root.remove("features") {
        let mut features = expect_table(src, "features", features)?;
        if let Some(proxy) = features.remove("network_proxy") {
            let network = match proxy.get_ref() {
                // The shorthand `features.network_proxy = true` is the toggle alone.
                DeValue::Boolean(on) => RawNetwork {
                    enabled: Some(Spanned::new(proxy.span(), *on)),
                    ..RawNetwork::default()
                },
                DeValue::Table(_) => sub_table(src, "features.network_proxy", proxy, NETWORK_KEYS)?,
                other => {
                    return Err(src.error(
                        &proxy.span(),
                        format!(
                            "`features.network_proxy` must be a boolean or a table, found {}",
                            other.type_str()
                        ),
                    ))
                }
            };
            layers.push(RawLayer::from(network));
        }
    }
    if let Some(network) = root.remove("network") {
        layers.push(RawLayer::from(sub_table::<RawNetwork>(
            src,
            "network",
            network,
            NETWORK_KEYS,
        )?));
    }

    let default_permissions = match root.remove("default_permissions") {
        Some(value) => match value.get_ref() {
            DeValue::String(name) => Some(Spanned::new(value.span(), name.to_string())),
            other => {
                return Err(src.error(
                    &value.span(),
                    format!(
                        "`default_permissions` must be a string, found {}",
                        other.type_str()
                    ),
                ))
            }
        },
        None => None,
    };
    let wanted = profile.or(default_permissions.as_ref().map(|d| d.get_ref().as_str()));

    let mut profiles = Vec::new();
    let mut selected: Option<RawNetwork> = None;
    if let Some(permissions) = root.remove("permissions") {
        for (name, value) in expect_table(src, "permissions", permissions)? {
            let name = name.into_inner().into_owned();
            let mut table = expect_table(src, &format!("permissions.{name}"), value)?;
            // Every profile's network table is checked, so a typo in an unused profile is
            // found before someone switches to it.
            let network = table
                .remove("network")
                .map(|t| sub_table(src, &format!("permissions.{name}.network"), t, NETWORK_KEYS))
                .transpose()?;
            if wanted == Some(name.as_str()) {
                selected = Some(network.unwrap_or_default());
            }
            profiles.push(name);
        }
    }

    let mut warnings = Vec::new();
    match (selected, profile, default_permissions) {
        (Some(network), _, _) => layers.push(network.into()),
        (None, None, Some(name)) => warnings.push(format!(
            "{}: `default_permissions = \"{}\"` names a profile this file does not define, \
             so no `[permissions.<name>.network]` settings apply from it",
            src.origin(&name.span()),
            name.get_ref()
        )),
        _ => {}
    }
    Ok(ParsedConfig {
        native: false,
        layers,
        profiles,
        warnings,
    })
}

impl From<RawNetwork> for RawLayer {
    fn from(network: RawNetwork) -> Self {
        RawLayer {
            network,
            ..RawLayer::default()
        }
    }
}

fn expect_table<'i>(
    src: &Source,
    name: &str,
    value: Spanned<DeValue<'i>>,
) -> Result<DeTable<'i>, ConfigError> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Table(table) => Ok(table),
        other => Err(src.error(
            &span,
            format!("`{name}` must be a table, found {}", other.type_str()),
        )),
    }
}

/// A named sub-table, checked against its key list and deserialized.
fn sub_table<'i, T: Deserialize<'i>>(
    src: &Source,
    name: &str,
    value: Spanned<DeValue<'i>>,
    keys: &[&str],
) -> Result<T, ConfigError> {
    let span = value.span();
    let table = expect_table(src, name, value)?;
    check_keys(src, &table, keys, &format!("`[{name}]`"))?;
    typed(src, Spanned::new(span, DeValue::Table(table)))
}

/// A native extension table, or its defaults when the file has none.
fn optional_table<'i, T: Deserialize<'i> + Default>(
    src: &Source,
    root: &mut DeTable<'i>,
    name: &str,
    keys: &[&str],
) -> Result<T, ConfigError> {
    match root.remove(name) {
        Some(value) => sub_table(src, name, value, keys),
        None => Ok(T::default()),
    }
}

/// Rejects keys outside `allowed` (the first one in file order) and a table that mixes the
/// map and list forms of domain rules.
fn check_keys(
    src: &Source,
    table: &DeTable<'_>,
    allowed: &[&str],
    context: &str,
) -> Result<(), ConfigError> {
    let unknown = table
        .keys()
        .filter(|k| !allowed.contains(&k.get_ref().as_ref()))
        .min_by_key(|k| k.span().start);
    if let Some(key) = unknown {
        let expected = allowed
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let hint = if key.get_ref() == "experimental_network" {
            "; `[experimental_network]` belongs in the --requirements file"
        } else {
            ""
        };
        return Err(src.error(
            &key.span(),
            format!(
                "unknown key `{}` in {context} (expected one of: {expected}){hint}",
                key.get_ref()
            ),
        ));
    }

    let span_of = |name: &str| table.get_key_value(name).map(|(k, _)| k.span());
    let list = [span_of("allowed_domains"), span_of("denied_domains")]
        .into_iter()
        .flatten()
        .min_by_key(|s| s.start);
    if let (Some(map), Some(list)) = (span_of("domains"), list) {
        let second = if map.start < list.start { list } else { map };
        return Err(src.error(
            &second,
            "use either `domains` or `allowed_domains`/`denied_domains` in one table, not both",
        ));
    }
    Ok(())
}

/// Deserializes a checked table. A type error is reported at the offending value and names the
/// key of this table it belongs to.
fn typed<'i, T: Deserialize<'i>>(
    src: &Source,
    value: Spanned<DeValue<'i>>,
) -> Result<T, ConfigError> {
    let span = value.span();
    let keys: Vec<(String, usize)> = match value.get_ref() {
        DeValue::Table(table) => table
            .iter()
            .map(|(k, v)| (k.get_ref().to_string(), v.span().start))
            .collect(),
        _ => Vec::new(),
    };
    T::deserialize(ValueDeserializer::from(value)).map_err(|err| {
        let at = err.span().unwrap_or_else(|| span.clone());
        // The value that holds the error is the one starting last at or before it (a table
        // defined by a header starts at its header, and its body follows).
        let key = keys
            .iter()
            .filter(|(_, start)| *start <= at.start)
            .max_by_key(|(_, start)| *start);
        match key {
            Some((key, _)) => src.error(&at, format!("`{key}`: {}", err.message())),
            None => src.error(&at, err.message()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Source {
        Source::new("t.toml", text.to_string())
    }

    fn config_err(text: &str) -> String {
        parse_config(&src(text), None).unwrap_err().to_string()
    }

    #[test]
    fn shape_is_decided_by_codex_top_level_keys() {
        let cases = [
            ("", true),
            ("enabled = true", true),
            ("[dns]\ntimeout_ms = 5", true),
            ("model = 'x'\n[features]\nother = true", false),
            ("[permissions.a]", false),
            ("[network]", false),
            ("default_permissions = 'a'", false),
        ];
        for (text, native) in cases {
            assert_eq!(
                parse_config(&src(text), None).unwrap().native,
                native,
                "{text:?}"
            );
        }
    }

    fn whole(text: &str) -> Spanned<DeValue<'_>> {
        let table = DeTable::parse(text).unwrap();
        let span = table.span();
        Spanned::new(span, DeValue::Table(table.into_inner()))
    }

    /// Whether serde knows `key` as a field of `T` (a type error still means it does).
    fn is_field<T: serde::de::DeserializeOwned>(key: &str) -> bool {
        let text = format!("{key} = []");
        match typed::<T>(&src(&text), whole(&text)) {
            Ok(_) => true,
            Err(err) => !err.to_string().contains("unknown field"),
        }
    }

    #[test]
    fn every_listed_key_is_a_field_of_its_struct() {
        // The key lists decide what a table accepts; a list naming a key its struct lacks
        // would only surface as a serde error at run time, so it is a test failure here.
        for key in NETWORK_KEYS.iter().chain(REQUIREMENT_KEYS) {
            assert!(is_field::<RawNetwork>(key), "{key}");
        }
        assert!(!is_field::<RawNetwork>("nonsense"));
        assert!(DNS_KEYS.iter().all(|k| is_field::<RawDns>(k)));
        assert!(LIMIT_KEYS.iter().all(|k| is_field::<RawLimits>(k)));
        assert!(ADMIN_KEYS.iter().all(|k| is_field::<RawAdmin>(k)));
        assert!(LOG_KEYS.iter().all(|k| is_field::<RawLog>(k)));
    }

    #[test]
    fn unknown_keys_are_reported_at_the_key() {
        let cases = [
            (
                "enabled = true\n\nallowd_domains = []\n",
                "t.toml:3:1: unknown key `allowd_domains` in native policy file (expected one of: `enabled`, `mode`, `domains`, `allowed_domains`, `denied_domains`, `unix_sockets`, `allow_local_binding`, `enable_socks5`, `enable_socks5_udp`, `allow_upstream_proxy`, `proxy_url`, `socks_url`, `admin_url`, `dangerously_allow_non_loopback_proxy`, `dangerously_allow_non_loopback_admin`, `dangerously_allow_all_unix_sockets`, `dns`, `limits`, `admin`, `log`)",
            ),
            (
                "[dns]\nservers = []\ntimeout = 3\n",
                "t.toml:3:1: unknown key `timeout` in `[dns]` (expected one of: `servers`, `timeout_ms`, `multi_answer`)",
            ),
            (
                "[limits]\nmax_conns = 3\n",
                "t.toml:2:1: unknown key `max_conns` in `[limits]` (expected one of: `connect_timeout_ms`, `idle_timeout_ms`, `header_timeout_ms`, `max_header_bytes`, `max_connections`, `max_udp_associations`)",
            ),
            (
                "[admin]\ntoken = 'x'\n",
                "t.toml:2:1: unknown key `token` in `[admin]` (expected one of: `token_file`)",
            ),
            (
                "[log]\n  level = 'x'\n",
                "t.toml:2:3: unknown key `level` in `[log]` (expected one of: `format`, `audit`)",
            ),
            (
                "model = 'o3'\n[features.network_proxy]\nenabled = true\nhttp_port = 1\n",
                "t.toml:4:1: unknown key `http_port` in `[features.network_proxy]` (expected one of: `enabled`, `mode`, `domains`, `allowed_domains`, `denied_domains`, `unix_sockets`, `allow_local_binding`, `enable_socks5`, `enable_socks5_udp`, `allow_upstream_proxy`, `proxy_url`, `socks_url`, `admin_url`, `dangerously_allow_non_loopback_proxy`, `dangerously_allow_non_loopback_admin`, `dangerously_allow_all_unix_sockets`)",
            ),
            (
                "[network]\nzzz = 1\naaa = 2\n",
                "t.toml:2:1: unknown key `zzz` in `[network]` (expected one of: `enabled`, `mode`, `domains`, `allowed_domains`, `denied_domains`, `unix_sockets`, `allow_local_binding`, `enable_socks5`, `enable_socks5_udp`, `allow_upstream_proxy`, `proxy_url`, `socks_url`, `admin_url`, `dangerously_allow_non_loopback_proxy`, `dangerously_allow_non_loopback_admin`, `dangerously_allow_all_unix_sockets`)",
            ),
            (
                "[permissions.unused.network]\nmanaged_allowed_domains_only = true\n",
                "t.toml:2:1: unknown key `managed_allowed_domains_only` in `[permissions.unused.network]` (expected one of: `enabled`, `mode`, `domains`, `allowed_domains`, `denied_domains`, `unix_sockets`, `allow_local_binding`, `enable_socks5`, `enable_socks5_udp`, `allow_upstream_proxy`, `proxy_url`, `socks_url`, `admin_url`, `dangerously_allow_non_loopback_proxy`, `dangerously_allow_non_loopback_admin`, `dangerously_allow_all_unix_sockets`)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(config_err(text), want, "{text:?}");
        }
        // Wherever it stands, a requirements table in a --config file is named as such.
        for text in [
            "experimental_network.enabled = true\n",
            "allowed_approval_policies = []\n[experimental_network]\nenabled = true\n",
        ] {
            assert!(
                config_err(text).ends_with(
                    "`[experimental_network]` belongs in the --requirements file, not in --config"
                ),
                "{text}"
            );
        }
        // Top-level network keys in a Codex-shaped file would be ignored: an error, not a
        // silently dropped deny rule.
        assert_eq!(
            config_err("denied_domains = ['evil.test']\n[network]\nenabled = true\n"),
            "t.toml:1:1: `denied_domains` at the top level of a Codex config.toml has no effect; put it in `[features.network_proxy]`, `[network]` or `[permissions.<name>.network]`"
        );
    }

    #[test]
    fn requirements_keys_are_checked_and_other_tables_ignored() {
        let ok = parse_requirements(&src(
            "[features]\nx = true\n[experimental_network]\nhttp_port = 3129\n",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(ok.http_port.map(|p| p.into_inner()), Some(3129));
        assert!(parse_requirements(&src("model = 1\n")).unwrap().is_none());
        let err = parse_requirements(&src("[experimental_network]\nmode = 'limited'\n"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "t.toml:2:1: unknown key `mode` in `[experimental_network]` (expected one of: `enabled`, `http_port`, `socks_port`, `domains`, `allowed_domains`, `denied_domains`, `unix_sockets`, `managed_allowed_domains_only`, `allow_local_binding`, `enable_socks5`, `enable_socks5_udp`, `allow_upstream_proxy`, `dangerously_allow_non_loopback_proxy`, `dangerously_allow_non_loopback_admin`, `dangerously_allow_all_unix_sockets`)"
        );
    }

    #[test]
    fn map_and_list_forms_in_one_table_point_at_the_second() {
        let msg =
            "use either `domains` or `allowed_domains`/`denied_domains` in one table, not both";
        let cases = [
            ("domains = {}\ndenied_domains = []\n", "t.toml:2:1"),
            ("allowed_domains = []\n\n domains = {}\n", "t.toml:3:2"),
            ("allowed_domains = []\n[domains]\n", "t.toml:2:2"),
            (
                "[network]\ndenied_domains = []\ndomains.a = 'allow'\nallowed_domains = []\n",
                "t.toml:3:1",
            ),
            (
                "[features.network_proxy]\ndomains = {}\nallowed_domains = []\n",
                "t.toml:3:1",
            ),
        ];
        for (text, at) in cases {
            assert_eq!(config_err(text), format!("{at}: {msg}"), "{text:?}");
        }
        let req = parse_requirements(&src(
            "[experimental_network]\nallowed_domains = ['a']\ndomains = {}\n",
        ))
        .unwrap_err();
        assert_eq!(req.to_string(), format!("t.toml:3:1: {msg}"));
    }

    #[test]
    fn type_errors_carry_the_position_and_key() {
        let cases = [
            ("enabled = \"yes\"\n", "t.toml:1:11: `enabled`: invalid type: string \"yes\", expected a boolean"),
            ("mode = 3\n", "t.toml:1:8: `mode`: invalid type: integer `3`, expected a string"),
            (
                "[domains]\n\"a.com\" = 'allow'\n\"b.com\" = true\n",
                "t.toml:3:11: `domains`: invalid type: boolean `true`, expected a string",
            ),
            (
                "unix_sockets = { \"/a\" = 1 }\n",
                "t.toml:1:25: `unix_sockets`: invalid type: integer `1`, expected a string",
            ),
            ("allowed_domains = ['a', 3]\n", "t.toml:1:25: `allowed_domains`: invalid type: integer `3`, expected a string"),
            ("[dns]\ntimeout_ms = -1\n", "t.toml:2:14: `timeout_ms`: invalid value: integer `-1`, expected u64"),
            ("[dns]\nmulti_answer = 1.5\n", "t.toml:2:16: `multi_answer`: invalid type: floating point `1.5`, expected a string"),
            ("[log]\nformat = []\n", "t.toml:2:10: `format`: invalid type: sequence, expected a string"),
            ("dns = 3\n", "t.toml:1:7: `dns` must be a table, found integer"),
            ("features = 3\n", "t.toml:1:12: `features` must be a table, found integer"),
            ("features.network_proxy = 'on'\n", "t.toml:1:26: `features.network_proxy` must be a boolean or a table, found string"),
            ("default_permissions = 1\n", "t.toml:1:23: `default_permissions` must be a string, found integer"),
            ("[permissions]\nx = 1\n", "t.toml:2:5: `permissions.x` must be a table, found integer"),
            ("[permissions.x]\nnetwork = []\n", "t.toml:2:11: `permissions.x.network` must be a table, found array"),
            ("enabled = \n", "t.toml:1:11: string values must be quoted, expected literal string"),
            ("[dns]\n[dns]\n", "t.toml:2:2: duplicate key"),
        ];
        for (text, want) in cases {
            assert_eq!(config_err(text), want, "{text:?}");
        }
        let port = parse_requirements(&src("[experimental_network]\nhttp_port = 70000\n"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            port,
            "t.toml:2:13: `http_port`: invalid value: integer `70000`, expected u16"
        );
    }

    #[test]
    fn codex_layers_come_in_order_and_only_the_selected_profile_applies() {
        let text = "\
model = 'o3'
default_permissions = 'b'
[features.network_proxy]
enabled = true
[network]
mode = 'limited'
[permissions.a.network]
enabled = false
[permissions.b]
filesystem = 'ignored'
[permissions.b.network]
allow_local_binding = true
";
        let by_default = parse_config(&src(text), None).unwrap();
        assert!(!by_default.native);
        assert_eq!(by_default.profiles, ["a", "b"]);
        assert_eq!(by_default.layers.len(), 3);
        let first = &by_default.layers[0].network;
        assert_eq!(first.enabled.as_ref().map(|e| *e.get_ref()), Some(true));
        assert_eq!(
            by_default.layers[1]
                .network
                .mode
                .as_ref()
                .map(|m| m.get_ref().as_str()),
            Some("limited")
        );
        let third = &by_default.layers[2].network;
        assert_eq!(
            third.allow_local_binding.as_ref().map(|b| *b.get_ref()),
            Some(true)
        );
        assert!(third.enabled.is_none());

        let by_flag = parse_config(&src(text), Some("a")).unwrap();
        assert_eq!(
            by_flag.layers[2]
                .network
                .enabled
                .as_ref()
                .map(|e| *e.get_ref()),
            Some(false)
        );
        // A profile defined elsewhere: this file contributes its other tables only.
        let elsewhere = parse_config(&src(text), Some("c")).unwrap();
        assert_eq!(elsewhere.layers.len(), 2);
        assert!(elsewhere.warnings.is_empty());
    }

    #[test]
    fn shorthand_and_undefined_default_profile() {
        let parsed = parse_config(
            &src("default_permissions = 'ws'\n[features]\nnetwork_proxy = false\n"),
            None,
        )
        .unwrap();
        assert_eq!(parsed.layers.len(), 1);
        let enabled = parsed.layers[0].network.enabled.as_ref().unwrap();
        assert_eq!((*enabled.get_ref(), enabled.span()), (false, 54..59));
        assert_eq!(
            parsed.warnings,
            ["t.toml:1:23: `default_permissions = \"ws\"` names a profile this file does not define, so no `[permissions.<name>.network]` settings apply from it"]
        );
    }
}

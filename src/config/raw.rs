//! The shapes a file may take, as written. Every value keeps its byte span so errors and rules
//! can point back at the line and column it came from.
//!
//! Keys are checked against the key table (`keys.rs`) before serde sees a table: the same
//! struct serves native files, Codex tables and requirements, but each accepts different keys,
//! and an unknown key must be reported at the key with the list of what is accepted.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::error::{ConfigError, Source};
use super::keys::{
    names, RawAdmin, RawDns, RawLimits, RawLog, RawMitm, RawNetwork, RawRun, RawUpstream, ADMIN,
    DNS, LIMITS, LOG, MITM, NETWORK, REQUIREMENTS, RUN, TABLE, UPSTREAM,
};

mod codex;

/// A map written as a TOML table: keys and values with their spans.
///
/// Enum-valued settings (`"allow"`, `"limited"`, …) stay strings here and are converted while
/// layering: toml reports a non-string value for an enum only as "wanted string or table",
/// while a `String` gets "invalid type: integer `3`, expected a string".
pub(super) type SpannedMap = BTreeMap<Spanned<String>, Spanned<String>>;
pub(super) type SpannedList = Spanned<Vec<Spanned<String>>>;

/// Extension tables only a native file has.
const NATIVE_TABLES: &[&str] = &["dns", "limits", "admin", "log", "upstream", "run"];

/// `[[http_rules]]`, a native file's only array of tables.
const HTTP_RULES: &str = "http_rules";

/// One `[[http_rules]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpRule {
    pub(super) host: Spanned<String>,
    pub(super) methods: Option<SpannedList>,
    pub(super) paths: Option<SpannedList>,
    pub(super) action: Spanned<String>,
}

/// Top-level keys that make a file Codex-shaped.
const CODEX_KEYS: &[&str] = &["features", "permissions", "network", "default_permissions"];

/// One table that becomes one layer: its network keys plus, in a native file, the extension
/// tables.
#[derive(Debug, Default)]
pub(super) struct RawLayer {
    pub(super) network: RawNetwork,
    pub(super) dns: RawDns,
    pub(super) limits: RawLimits,
    pub(super) admin: RawAdmin,
    pub(super) log: RawLog,
    pub(super) upstream: RawUpstream,
    pub(super) run: RawRun,
    pub(super) mitm: RawMitm,
    /// Where `[mitm]` was written, when the file has the table.
    pub(super) mitm_table: Option<Range<usize>>,
    pub(super) http_rules: Vec<RawHttpRule>,
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
        codex::parse_codex(src, root, profile)
    } else {
        parse_native(src, root, span)
    }
}

/// Reads `[experimental_network]` from a requirements file; other keys there belong to Codex.
pub(super) fn parse_requirements(src: &Source) -> Result<Option<RawNetwork>, ConfigError> {
    let (mut root, _) = parse_document(src)?;
    root.remove("experimental_network")
        .map(|table| {
            let keys = names(NETWORK, REQUIREMENTS);
            sub_table(src, "experimental_network", table, &keys)
        })
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
    let mut allowed = names(NETWORK, TABLE);
    allowed.extend(NATIVE_TABLES);
    allowed.push(HTTP_RULES);
    check_keys(src, &root, &allowed, "native policy file")?;
    let mut layer = extension_layer(src, &mut root)?;
    native_tables(src, &mut root, &mut layer)?;
    layer.network = typed(src, Spanned::new(span, DeValue::Table(root)))?;
    Ok(ParsedConfig {
        native: true,
        layers: vec![layer],
        profiles: Vec::new(),
        warnings: Vec::new(),
    })
}

/// The extension tables (`[dns]`, `[limits]`, `[admin]`, `[log]`, `[upstream]`, `[run]`), taken out
/// of `root`.
fn extension_layer(src: &Source, root: &mut DeTable<'_>) -> Result<RawLayer, ConfigError> {
    Ok(RawLayer {
        dns: optional_table(src, root, "dns", &names(DNS, TABLE))?,
        limits: optional_table(src, root, "limits", &names(LIMITS, TABLE))?,
        admin: optional_table(src, root, "admin", &names(ADMIN, TABLE))?,
        log: optional_table(src, root, "log", &names(LOG, TABLE))?,
        upstream: optional_table(src, root, "upstream", &names(UPSTREAM, TABLE))?,
        run: optional_table(src, root, "run", &names(RUN, TABLE))?,
        ..RawLayer::default()
    })
}

/// `[mitm]` and `[[http_rules]]`, taken out of `root`; `mitm = true` stays a network key.
fn native_tables<'i>(
    src: &Source,
    root: &mut DeTable<'i>,
    layer: &mut RawLayer,
) -> Result<(), ConfigError> {
    let table_span = root
        .get_key_value("mitm")
        .filter(|(_, v)| matches!(v.get_ref(), DeValue::Table(_)))
        .map(|(k, _)| k.span());
    if let Some(span) = table_span {
        layer.mitm = optional_table(src, root, "mitm", &names(MITM, TABLE))?;
        layer.mitm_table = Some(span);
    }
    if let Some(rules) = root.remove(HTTP_RULES) {
        layer.http_rules = typed(src, rules)?;
    }
    Ok(())
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
mod tests;

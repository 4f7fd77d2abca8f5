//! A Codex `config.toml`: `[features.network_proxy]`, then `[network]`, then the selected
//! `[permissions.<name>.network]`, each a layer over the previous one.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::{
    expect_table, extension_layer, names, sub_table, ParsedConfig, RawLayer, RawNetwork,
    NATIVE_TABLES, NETWORK, TABLE,
};
use crate::config::error::{ConfigError, Source};

pub(super) fn parse_codex(
    src: &Source,
    mut root: DeTable<'_>,
    profile: Option<&str>,
) -> Result<ParsedConfig, ConfigError> {
    let keys = names(NETWORK, TABLE);
    reject_top_level_network_keys(src, &root, &keys)?;
    // Our extension tables (`[dns]`, `[limits]`, `[admin]`, `[log]`, `[upstream]`) work in
    // Codex files too.
    let mut layers = Vec::new();
    if NATIVE_TABLES.iter().any(|t| root.contains_key(*t)) {
        layers.push(extension_layer(src, &mut root)?);
    }
    if let Some(features) = root.remove("features") {
        let mut features = expect_table(src, "features", features)?;
        if let Some(proxy) = features.remove("network_proxy") {
            layers.push(features_layer(src, proxy, &keys)?.into());
        }
    }
    if let Some(network) = root.remove("network") {
        layers.push(RawLayer::from(sub_table::<RawNetwork>(
            src, "network", network, &keys,
        )?));
    }

    let default_permissions = default_permissions(src, &mut root)?;
    let wanted = profile.or(default_permissions.as_ref().map(|d| d.get_ref().as_str()));
    let (profiles, selected) = permissions(src, &mut root, wanted, &keys)?;

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

/// Codex ignores top-level network keys, so accepting them silently would drop rules,
/// denies included, without a word.
fn reject_top_level_network_keys(
    src: &Source,
    root: &DeTable<'_>,
    keys: &[&str],
) -> Result<(), ConfigError> {
    let Some(key) = root
        .keys()
        .filter(|k| keys.contains(&k.get_ref().as_ref()))
        .min_by_key(|k| k.span().start)
    else {
        return Ok(());
    };
    Err(src.error(
        &key.span(),
        format!(
            "`{}` at the top level of a Codex config.toml has no effect; put it in \
             `[features.network_proxy]`, `[network]` or `[permissions.<name>.network]`",
            key.get_ref()
        ),
    ))
}

/// `[features.network_proxy]`, or the shorthand `features.network_proxy = true`, which is the
/// toggle alone.
fn features_layer(
    src: &Source,
    proxy: Spanned<DeValue<'_>>,
    keys: &[&str],
) -> Result<RawNetwork, ConfigError> {
    match proxy.get_ref() {
        DeValue::Boolean(on) => Ok(RawNetwork {
            enabled: Some(Spanned::new(proxy.span(), *on)),
            ..RawNetwork::default()
        }),
        DeValue::Table(_) => sub_table(src, "features.network_proxy", proxy, keys),
        other => Err(src.error(
            &proxy.span(),
            format!(
                "`features.network_proxy` must be a boolean or a table, found {}",
                other.type_str()
            ),
        )),
    }
}

fn default_permissions(
    src: &Source,
    root: &mut DeTable<'_>,
) -> Result<Option<Spanned<String>>, ConfigError> {
    let Some(value) = root.remove("default_permissions") else {
        return Ok(None);
    };
    match value.get_ref() {
        DeValue::String(name) => Ok(Some(Spanned::new(value.span(), name.to_string()))),
        other => Err(src.error(
            &value.span(),
            format!(
                "`default_permissions` must be a string, found {}",
                other.type_str()
            ),
        )),
    }
}

/// Every profile's name, and the network table of the `wanted` one (empty when that profile
/// has none).
fn permissions(
    src: &Source,
    root: &mut DeTable<'_>,
    wanted: Option<&str>,
    keys: &[&str],
) -> Result<(Vec<String>, Option<RawNetwork>), ConfigError> {
    let mut profiles = Vec::new();
    let mut selected = None;
    let Some(permissions) = root.remove("permissions") else {
        return Ok((profiles, selected));
    };
    for (name, value) in expect_table(src, "permissions", permissions)? {
        let name = name.into_inner().into_owned();
        let mut table = expect_table(src, &format!("permissions.{name}"), value)?;
        // Every profile's network table is checked, so a typo in an unused profile is
        // found before someone switches to it.
        let network = table
            .remove("network")
            .map(|t| sub_table(src, &format!("permissions.{name}.network"), t, keys))
            .transpose()?;
        if wanted == Some(name.as_str()) {
            selected = Some(network.unwrap_or_default());
        }
        profiles.push(name);
    }
    Ok((profiles, selected))
}

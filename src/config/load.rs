//! Loading: every table and flag becomes a layer, in order. Later `--config` files come after
//! earlier ones, `--allow`/`--deny` and the listen flags are the last user layer, and the
//! requirements file comes last of all.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use super::convert::{convert, public_range_flags};
use super::effective::finish;
use super::error::{ConfigError, Source};
use super::keys::{DnsScalars, NetworkScalars};
use super::merge::{Layer, Listeners, Merged, Scalars, Set};
use super::raw::{self, RawLayer};
use super::{Config, Sources};
use crate::policy::{Action, Origin};

/// Loads every source named by the policy flags and layers them into one [`Config`].
///
/// Errors are one line each, `path:line:col: message` when the position is known; warnings
/// about the settings (disabled networking, `dangerously_*`, …) are in [`Config::warnings`],
/// those about the rules (a global `*` allow, …) in the compiled policy's.
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

/// Layers already-read sources; `load` without the file system.
fn build(
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
    merged.apply(flag_layer(sources)?, false);
    if let Some(src) = requirements {
        if let Some(network) = raw::parse_requirements(src)? {
            merged.apply(convert(src, RawLayer::from(network))?, true);
        }
    }

    // Without an explicit `enabled`, a native file or bare flags mean "use the proxy";
    // Codex-shaped files follow Codex, where sandboxed networking is off by default.
    let enabled_default = any_native || configs.is_empty();
    finish(merged, enabled_default, configs, sources, warnings)
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

fn flag_layer(sources: &Sources) -> Result<Layer, ConfigError> {
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
    let public_ranges = if sources.public_ranges.is_empty() {
        None
    } else {
        Some(Set {
            value: public_range_flags(&sources.public_ranges)?,
            origin: Origin::Flag("--public-range"),
        })
    };
    Ok(Layer {
        rules: allows.chain(denies).collect(),
        scalars: Scalars {
            network: NetworkScalars {
                public_ranges,
                ..NetworkScalars::default()
            },
            listeners: Listeners {
                proxy: set(sources.http_listen, "--http-listen"),
                socks: set(sources.socks_listen, "--socks-listen"),
                admin: set(sources.admin_listen, "--admin-listen"),
            },
            dns: DnsScalars {
                servers: (!sources.dns_servers.is_empty()).then(|| Set {
                    value: sources.dns_servers.clone(),
                    origin: Origin::Flag("--dns-server"),
                }),
                ..DnsScalars::default()
            },
            ..Scalars::default()
        },
        ..Layer::default()
    })
}

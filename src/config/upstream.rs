//! Upstream proxy chaining: `allow_upstream_proxy`, the native `[upstream]` table (`url`,
//! `no_proxy`, `resolve`, `ca_file`) and the proxy's own environment, layered into one
//! [`UpstreamConfig`].
//!
//! `[upstream] url` names the upstream for every connection and the environment is then not
//! read at all; without it, the environment does ([`ProxyEnv`], curl's precedence). `no_proxy`
//! in the table replaces `NO_PROXY`; `resolve` and `ca_file` apply to whichever upstream is
//! chosen. `allow_upstream_proxy = false` or `--no-upstream-proxy` turns all of it off.

mod env;
mod no_proxy;
mod url;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use serde::de::{self, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::convert::{checked, Converted};
use super::error::{ConfigError, Source};
use super::keys::{Key, UpstreamScalars};
use super::merge::Set;
use crate::policy::Host;

pub use env::ProxyEnv;
pub use no_proxy::NoProxy;
pub use url::{ProxyKind, ProxyUrl};

/// Where the names of destinations sent to an upstream are resolved (`[upstream] resolve`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResolveAt {
    /// Here, and every answer classified, exactly as for a direct connection; the upstream
    /// is then asked for the name.
    #[default]
    Local,
    /// By the upstream only (for networks where only it can resolve); IP literals are still
    /// classified here.
    Upstream,
}

impl ResolveAt {
    /// `local` or `upstream`, as written.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolveAt::Local => "local",
            ResolveAt::Upstream => "upstream",
        }
    }
}

/// One chosen upstream and where it was named (`` `[upstream] url` at FILE:L:C ``,
/// `HTTPS_PROXY`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chosen {
    /// The proxy.
    pub url: ProxyUrl,
    /// What named it.
    pub from: String,
}

/// The effective upstream chaining. With neither proxy set, every connection is direct.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// For CONNECT tunnels and SOCKS5 CONNECT.
    pub tunnel: Option<Chosen>,
    /// For plain-HTTP (absolute-form) requests.
    pub forward: Option<Chosen>,
    /// Destinations that go direct.
    pub no_proxy: NoProxy,
    /// Where destination names are resolved.
    pub resolve: ResolveAt,
    /// Extra CA certificates (PEM) an `https://` upstream's certificate may chain to.
    pub ca_file: Option<PathBuf>,
    /// What turned chaining off (`allow_upstream_proxy = false` at …, `--no-upstream-proxy`).
    pub off: Option<String>,
}

impl UpstreamConfig {
    /// Whether any connection goes through an upstream.
    pub fn is_active(&self) -> bool {
        self.tunnel.is_some() || self.forward.is_some()
    }
}

/// `no_proxy` as written: one comma-separated string, or a list of them.
#[derive(Debug)]
pub(super) struct NoProxyText(Vec<String>);

impl<'de> Deserialize<'de> for NoProxyText {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = NoProxyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<NoProxyText, E> {
                Ok(NoProxyText(vec![text.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoProxyText, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = seq.next_element::<String>()? {
                    entries.push(entry);
                }
                Ok(NoProxyText(entries))
            }
        }
        deserializer.deserialize_any(Text)
    }
}

/// `[upstream] url`.
pub(super) fn proxy_url(
    src: &Source,
    key: &Key,
    value: Option<Spanned<String>>,
) -> Converted<ProxyUrl> {
    checked(src, value, |text| {
        if text.trim().is_empty() {
            return Err(format!(
                "`{}` must not be empty (set `allow_upstream_proxy = false` to dial directly)",
                key.qualified()
            ));
        }
        ProxyUrl::parse(&text).map_err(|e| format!("`{}`: {e}", key.qualified()))
    })
}

/// `[upstream] no_proxy`.
pub(super) fn no_proxy(
    src: &Source,
    _: &Key,
    value: Option<Spanned<NoProxyText>>,
) -> Converted<NoProxy> {
    checked(src, value, |text| {
        Ok(NoProxy::parse(text.0.iter().map(String::as_str)))
    })
}

/// The inputs of [`effective`] that are not in a file.
pub(super) struct Inputs<'a> {
    pub(super) env: &'a ProxyEnv,
    pub(super) no_upstream_flag: bool,
    /// Each listener address with its key: an upstream there would be this proxy.
    pub(super) listeners: &'a [(SocketAddr, &'static str)],
}

/// The effective chaining: the table, else the environment, unless something turned it off.
pub(super) fn effective(
    table: &UpstreamScalars,
    allow: &Option<Set<bool>>,
    inputs: &Inputs<'_>,
    warnings: &mut Vec<String>,
) -> Result<UpstreamConfig, ConfigError> {
    let off = match allow {
        _ if inputs.no_upstream_flag => Some("--no-upstream-proxy".to_string()),
        Some(Set {
            value: false,
            origin,
        }) => Some(format!("`allow_upstream_proxy = false` at {origin}")),
        _ => None,
    };
    if off.is_some() {
        return Ok(UpstreamConfig {
            off,
            ..UpstreamConfig::default()
        });
    }
    let (tunnel, forward, env_no_proxy) = match &table.url {
        Some(Set { value, origin }) => {
            let chosen = Chosen {
                url: value.clone(),
                from: format!("`[upstream] url` at {origin}"),
            };
            (Some(chosen.clone()), Some(chosen), None)
        }
        None => {
            let env = inputs.env;
            let no_proxy = env
                .no_proxy()
                .map(|(name, text)| (name, NoProxy::parse([text])));
            (from_env(env.tunnel())?, from_env(env.forward())?, no_proxy)
        }
    };
    let (no_proxy, no_proxy_from) = match (&table.no_proxy, env_no_proxy) {
        (Some(Set { value, origin }), _) => {
            (value.clone(), format!("`[upstream] no_proxy` at {origin}"))
        }
        (None, Some((name, value))) => (value, name.to_string()),
        (None, None) => (NoProxy::default(), String::new()),
    };
    for entry in no_proxy.ignored() {
        warnings.push(format!(
            "`{entry}` in {no_proxy_from} never matches: entries are names, IP addresses or \
             CIDR ranges without a port (as curl reads them)"
        ));
    }
    let resolve = table.resolve.as_ref().map_or(ResolveAt::Local, |s| s.value);
    if let Some(Set {
        value: ResolveAt::Upstream,
        origin,
    }) = &table.resolve
    {
        if let Some(socks) = [&tunnel, &forward]
            .into_iter()
            .flatten()
            .find(|c| !c.url.kind.takes_names())
        {
            return Err(ConfigError::at_origin(
                origin,
                format!(
                    "`resolve = \"upstream\"` needs an upstream that takes names, but {} ({}) \
                     takes addresses: use socks5h://",
                    socks.url, socks.from
                ),
            ));
        }
    }
    for chosen in [&tunnel, &forward].into_iter().flatten() {
        refuse_loop(chosen, inputs.listeners)?;
    }
    let config = UpstreamConfig {
        tunnel,
        forward,
        no_proxy,
        resolve,
        ca_file: table.ca_file.as_ref().map(|s| s.value.clone()),
        off: None,
    };
    if let Some(Set { origin, .. }) = &table.ca_file {
        let https = [&config.tunnel, &config.forward]
            .into_iter()
            .flatten()
            .any(|c| c.url.kind == ProxyKind::Https);
        if !https {
            warnings.push(format!(
                "`[upstream] ca_file` at {origin} has no effect: no https:// upstream applies"
            ));
        }
    }
    Ok(config)
}

/// The upstream an environment variable names; a bad one is an error naming the variable.
fn from_env(var: Option<(&'static str, &str)>) -> Result<Option<Chosen>, ConfigError> {
    let Some((name, text)) = var else {
        return Ok(None);
    };
    let url = ProxyUrl::parse(text).map_err(|e| {
        ConfigError::Invalid(format!(
            "{name} (the proxy's environment): {e}; fix it, or dial directly with \
             `allow_upstream_proxy = false` or --no-upstream-proxy"
        ))
    })?;
    Ok(Some(Chosen {
        url,
        from: name.to_string(),
    }))
}

/// An upstream written as one of this proxy's own listener addresses would send every
/// connection back to itself. Only IP literals and `localhost` can be told at load time.
fn refuse_loop(
    chosen: &Chosen,
    listeners: &[(SocketAddr, &'static str)],
) -> Result<(), ConfigError> {
    let ips: &[IpAddr] = match &chosen.url.host {
        Host::Ip(ip) => &[*ip],
        Host::Name(name) if name == "localhost" => &[
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
        Host::Name(_) => return Ok(()),
    };
    let port = chosen.url.port;
    let hit = listeners.iter().find(|(addr, _)| {
        addr.port() == port
            && ips.iter().any(|ip| {
                let ip = ip.to_canonical();
                addr.ip().to_canonical() == ip || (addr.ip().is_unspecified() && ip.is_loopback())
            })
    });
    match hit {
        Some((addr, key)) => Err(ConfigError::Invalid(format!(
            "the upstream proxy {} ({}) is this proxy's own listener {addr} (`{key}`): every \
             connection would come back here; name another upstream, or dial directly with \
             `allow_upstream_proxy = false` or --no-upstream-proxy",
            chosen.url, chosen.from
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;

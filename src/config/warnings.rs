//! Findings about the effective settings that `validate` and `serve` report: networking that
//! is off, `dangerously_*` switches that are on, declared public ranges, and a managed-only
//! policy that allows nothing. Findings about the rules themselves come from the compiled policy.

use super::error::Source;
use super::keys::NetworkScalars;
use super::merge::Set;

/// The warnings about the effective network settings, in a fixed order.
pub(super) fn settings(
    net: &NetworkScalars,
    enabled: bool,
    managed_allows: usize,
    configs: &[Source],
) -> Vec<String> {
    let mut warnings = Vec::new();
    warnings.extend(disabled(net, enabled, configs));
    let dangers = [
        (
            &net.dangerously_allow_non_loopback_proxy,
            "dangerously_allow_non_loopback_proxy",
            "the proxy listeners may be reachable from other hosts",
        ),
        (
            &net.dangerously_allow_non_loopback_admin,
            "dangerously_allow_non_loopback_admin",
            "the admin API may be reachable from other hosts",
        ),
        (
            &net.dangerously_allow_all_unix_sockets,
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
    warnings.extend(widened(net));
    if let Some(Set {
        value: true,
        origin,
    }) = &net.managed_allowed_domains_only
    {
        if managed_allows == 0 {
            warnings.push(format!(
                "`managed_allowed_domains_only = true` at {origin} but the requirements allow \
                 no domain, so no domain is allowed"
            ));
        }
    }
    warnings
}

/// Declared public ranges open addresses the classifier would refuse: say which, and what that
/// gives up.
fn widened(net: &NetworkScalars) -> Option<String> {
    let Set { value, origin } = net.public_ranges.as_ref()?;
    if value.is_empty() {
        return None;
    }
    let ranges = value
        .declared()
        .iter()
        .map(|r| r.covers().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "public ranges declared at {origin} widen what \"public\" means: addresses in {ranges} \
         are reached like any public address by every allow rule that matches them (`*` \
         included), and a name resolving into them is no longer refused as DNS rebinding"
    ))
}

/// `serve` and `run` refuse to start when networking is off; say which layer turned it off.
fn disabled(net: &NetworkScalars, enabled: bool, configs: &[Source]) -> Option<String> {
    match &net.enabled {
        Some(Set {
            value: false,
            origin,
        }) => Some(format!(
            "sandboxed networking is disabled by `enabled = false` at {origin}; \
             `serve` and `run` will refuse to start"
        )),
        None if !enabled => {
            let files = configs
                .iter()
                .map(|c| c.path.as_ref())
                .collect::<Vec<_>>()
                .join(", ");
            Some(format!(
                "sandboxed networking is disabled: `enabled` defaults to false in Codex-shaped \
                 files and none of {files} sets it; `serve` and `run` will refuse to start"
            ))
        }
        _ => None,
    }
}

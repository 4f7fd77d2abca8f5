//! Findings `validate` (and `serve` at start) report about a compiled rule set: rules that do
//! nothing, or that reach further than their spelling suggests. None of them changes a
//! decision; each names the rule and where it was written.
//!
//! They are judged on the compiled patterns, as the policy reads them: `*:443` and ` * ` are
//! the global rule too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::classifier::{self, IpClass};
use super::matcher::{Matcher, RuleInfo};
use super::pattern::{Pattern, PatternKind};
use super::spec::Action;

/// Suffixes under which anyone can register a name: an allow wildcard on one of them opens
/// every site there. A short list of the common ones, not the whole Public Suffix List.
const PUBLIC_SUFFIXES: &[&str] = &[
    "ac.uk",
    "co.uk",
    "gov.uk",
    "ltd.uk",
    "me.uk",
    "net.uk",
    "org.uk",
    "plc.uk",
    "com.au",
    "net.au",
    "org.au",
    "co.nz",
    "org.nz",
    "co.jp",
    "ne.jp",
    "or.jp",
    "co.kr",
    "or.kr",
    "co.in",
    "net.in",
    "org.in",
    "com.br",
    "net.br",
    "com.cn",
    "net.cn",
    "org.cn",
    "com.mx",
    "com.tr",
    "co.za",
    "com.sg",
    "com.hk",
    "com.tw",
    "co.il",
    "com.ar",
    "eu.org",
    "github.io",
    "githubusercontent.com",
    "gitlab.io",
    "pages.dev",
    "workers.dev",
    "netlify.app",
    "vercel.app",
    "herokuapp.com",
    "appspot.com",
    "web.app",
    "firebaseapp.com",
    "blogspot.com",
    "azurewebsites.net",
    "cloudfront.net",
    "amazonaws.com",
    "s3.amazonaws.com",
    "fly.dev",
    "onrender.com",
    "ngrok.io",
    "ngrok-free.app",
    "trycloudflare.com",
    "duckdns.org",
    "glitch.me",
    "surge.sh",
    "readthedocs.io",
];

/// Cloud metadata services: reaching one from a sandbox hands out the host's credentials.
const METADATA: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// Every finding for the compiled rules; `written` is each rule's pattern as written.
pub(super) fn collect(matcher: &Matcher, compiled: &[(u32, Pattern, &str)]) -> Vec<String> {
    // The widest finding first: every global allow, before the per-rule findings.
    let mut warnings: Vec<String> = compiled
        .iter()
        .filter(|(_, pattern, _)| matches!(pattern.kind, PatternKind::Global))
        .map(|(index, _, _)| {
            format!(
                "global `*` allow rule at {}: every public host that is not denied is allowed",
                matcher.rule(*index).origin
            )
        })
        .collect();
    for (index, pattern, written) in compiled {
        let rule = matcher.rule(*index);
        if let Some(w) = port_like_ipv6(rule, written) {
            warnings.push(w);
        }
        if rule.action != Action::Allow {
            continue;
        }
        if let Some(deny) = matcher.shadowing_deny(pattern) {
            let deny = matcher.rule(deny);
            warnings.push(format!(
                "allow rule `{}` ({}) has no effect: deny rule `{}` ({}) covers everything it allows",
                rule.pattern, rule.origin, deny.pattern, deny.origin
            ));
        }
        warnings.extend(local_reach(rule, pattern));
        warnings.extend(too_wide(rule, pattern));
    }
    if !matcher.has_allow_rules() {
        warnings.push("no allow rule: every destination is blocked".to_string());
    }
    warnings
}

/// Allow rules that cover loopback or a metadata address: say whether they open it.
fn local_reach(rule: &RuleInfo, pattern: &Pattern) -> Option<String> {
    let (net, opens) = match &pattern.kind {
        PatternKind::Exact(name) if name == "localhost" => {
            return Some(format!(
                "allow rule `{}` ({}) opens loopback (127.0.0.1, ::1): every service on the proxy's own host{}",
                rule.pattern,
                rule.origin,
                port_note(pattern)
            ));
        }
        PatternKind::Ip(ip) => (IpNet::from(ip.to_canonical()), true),
        PatternKind::Cidr(net) => (
            *net,
            classifier::net_class(*net).is_some_and(IpClass::is_local),
        ),
        _ => return None,
    };
    let loopback = covers(net, IpAddr::V4(Ipv4Addr::LOCALHOST))
        || covers(net, IpAddr::V6(Ipv6Addr::LOCALHOST))
        || classifier::net_class(net) == Some(IpClass::Loopback);
    let metadata = METADATA.iter().any(|&ip| covers(net, ip));
    let what = match (loopback, metadata) {
        (true, true) => "loopback and the cloud metadata address 169.254.169.254",
        (true, false) => "loopback: services on the proxy's own host",
        (false, true) => "the cloud metadata address 169.254.169.254",
        (false, false) => return None,
    };
    Some(if opens {
        format!(
            "allow rule `{}` ({}) opens {what}{}",
            rule.pattern,
            rule.origin,
            port_note(pattern)
        )
    } else {
        format!(
            "allow rule `{}` ({}) covers {what}, but opens only public addresses: only a CIDR inside one local range is a local exception",
            rule.pattern, rule.origin
        )
    })
}

fn port_note(pattern: &Pattern) -> &'static str {
    if pattern.port.is_some() {
        " (on that port)"
    } else {
        " (on every port)"
    }
}

/// Whether `net` holds `ip`, counting the IPv4-mapped part of a wide IPv6 range.
fn covers(net: IpNet, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpNet::V6(v6), IpAddr::V4(v4)) => v6.contains(&v4.to_ipv6_mapped()),
        _ => net.contains(&ip),
    }
}

/// Wildcards that reach names other people can register.
fn too_wide(rule: &RuleInfo, pattern: &Pattern) -> Option<String> {
    match &pattern.kind {
        PatternKind::Subdomains(base) | PatternKind::ApexAndSubdomains(base)
            if PUBLIC_SUFFIXES.contains(&base.as_str()) =>
        {
            Some(format!(
                "allow rule `{}` ({}) covers every site registered under the public suffix `{base}`: name the domain (`*.example.{base}`)",
                rule.pattern, rule.origin
            ))
        }
        PatternKind::Glob(labels) => {
            // The label right above the registrable suffix is the one people register.
            let suffix_len = labels
                .iter()
                .rposition(|l| l.contains('*'))
                .map(|i| labels.len() - i - 1)?;
            let suffix = labels[labels.len() - suffix_len..].join(".");
            let registrable = suffix_len == 1 || PUBLIC_SUFFIXES.contains(&suffix.as_str());
            registrable.then(|| {
                let glob = &labels[labels.len() - suffix_len - 1];
                format!(
                    "allow rule `{}` ({}) puts `*` in the registered name itself: `{glob}.{suffix}` also matches names like `{}.{suffix}` that anyone can register; put it in a subdomain label (`*.name.{suffix}`)",
                    rule.pattern,
                    rule.origin,
                    glob.replace('*', "evil")
                )
            })
        }
        _ => None,
    }
}

/// `::1:80` is an address, not `::1` port 80; the brackets say which was meant.
fn port_like_ipv6(rule: &RuleInfo, written: &str) -> Option<String> {
    let text = written.trim();
    text.parse::<Ipv6Addr>().ok()?;
    let (addr, last) = text.rsplit_once(':')?;
    let port: u16 = last.parse().ok()?;
    if last.len() < 2 || port == 0 || addr.parse::<Ipv6Addr>().is_err() {
        return None;
    }
    Some(format!(
        "{} rule `{text}` ({}) is the IPv6 address {}, not port {port} of {addr}: write `[{addr}]:{port}` for that",
        rule.action.as_str(),
        rule.origin,
        rule.pattern
    ))
}

#[cfg(test)]
mod tests {
    use crate::{Action, Policy, PolicyOptions};

    #[test]
    fn every_spelling_of_the_global_rule_warns_first() {
        let rules = [
            ("api.corp.test", Action::Allow),
            ("**.corp.test", Action::Deny),
            ("*:443", Action::Allow),
            (" * ", Action::Allow),
            ("**.example.com", Action::Allow),
        ];
        let p = Policy::from_rules(&rules, PolicyOptions::default()).unwrap();
        assert_eq!(
            p.warnings(),
            [
                "global `*` allow rule at <api>: every public host that is not denied is allowed",
                "global `*` allow rule at <api>: every public host that is not denied is allowed",
                "allow rule `api.corp.test` (<api>) has no effect: deny rule `**.corp.test` (<api>) covers everything it allows",
            ]
        );
    }
}

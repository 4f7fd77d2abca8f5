//! The pattern parser and the compiled matcher against a naive reference written from SPEC
//! section 5.
//!
//! Input: either text (seeds from the unit tests), one `allow PATTERN` / `deny PATTERN` rule
//! or one `host:port` query per line, or bytes from which a small rule set over a small
//! vocabulary and some queries are built (so rules and hosts collide often).
//!
//! Properties:
//! - for built rules, `Pattern::parse` accepts exactly what the SPEC allows and normalises the
//!   text (trim, lowercase, trailing dot, canonical host, port scope) to the expected kind;
//! - every accepted pattern renders to text that parses back to the same pattern;
//! - for every query, the compiled matcher agrees with the reference: a deny when some deny
//!   rule covers the destination (deny beats allow, whatever the specificity; for an IPv6
//!   address, also when a deny covers the IPv4 address it carries); otherwise the most specific
//!   allow (the exact name, then the longest suffix, then an in-label glob, then `*`; an IP or
//!   CIDR rule before `*`), reported as `AllowKind::Exact` exactly when an exact name, an IP or a
//!   CIDR inside one local class covers the destination; otherwise nothing.
#![no_main]

use std::net::IpAddr;

use arbitrary::{Result, Unstructured};
use egress_policy::fuzzing::{embedded_v4, net_class, AllowKind, Matcher};
use egress_policy::host::canonicalize;
use egress_policy::pattern::{Pattern, PatternKind};
use egress_policy::{Action, Host, Origin, RuleInfo, Target};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

struct Rule {
    text: String,
    action: Action,
    /// What the parser must make of `text`, when the rule was built rather than read.
    expect: Option<Expect>,
}

/// A destination to look up: a canonical host and a port.
type Query = (Host<'static>, u16);

/// The expected outcome of parsing a built rule.
#[derive(Debug)]
enum Expect {
    Reject,
    Kind(PatternKind, Option<u16>),
    /// An IP or CIDR literal from the vocabulary: accepted as one, details not predicted.
    Literal,
}

fuzz_target!(|data: &[u8]| {
    let built = match std::str::from_utf8(data) {
        Ok(text) if text.starts_with("allow ") || text.starts_with("deny ") => Ok(read(text)),
        _ => build(&mut Unstructured::new(data)),
    };
    if let Ok((rules, queries)) = built {
        check(&rules, &queries);
    }
});

fn read(text: &str) -> (Vec<Rule>, Vec<Query>) {
    let mut rules = Vec::new();
    let mut queries = Vec::new();
    for line in text.lines() {
        let rule = |pattern: &str, action| Rule {
            text: pattern.to_string(),
            action,
            expect: None,
        };
        if let Some(pattern) = line.strip_prefix("allow ") {
            rules.push(rule(pattern, Action::Allow));
        } else if let Some(pattern) = line.strip_prefix("deny ") {
            rules.push(rule(pattern, Action::Deny));
        } else if let Ok(target) = Target::parse_authority(line, Some(443)) {
            queries.push((target.host.into_owned(), target.port));
        }
    }
    (rules, queries)
}

const LABELS: &[&str] = &[
    "a",
    "b",
    "c",
    "ab",
    "a-b",
    "b_c",
    "x1",
    "com",
    "test",
    "localhost",
    "xn--bcher-kva",
    "0",
];
const GLOBS: &[&str] = &["a*", "*a", "a*b", "*-b", "*b*", "x*1", "*", "**"];
const LITERALS: &[&str] = &[
    "10.0.0.1",
    "10.0.0.0/8",
    "10.0.0.0/24",
    "0.0.0.0/0",
    "127.0.0.1",
    "127.0.0.1:80",
    "::1",
    "[::1]",
    "[::1]:443",
    "::ffff:10.0.0.1",
    "::ffff:10.0.0.0/104",
    "::ffff:0:0/96",
    "::ffff:127.0.0.0/120",
    "fd00::/8",
    "::/96",
    "64:ff9b::a00:1",
    "2002::/16",
    "2002:a00:1::/48",
];
const HOST_IPS: &[&str] = &[
    "10.0.0.1",
    "10.0.0.200",
    "10.1.2.3",
    "127.0.0.1",
    "8.8.8.8",
    "::1",
    "::ffff:10.0.0.1",
    "::a00:1",
    "64:ff9b::a00:1",
    "2002:a00:1::1",
    "fd00::1",
    "2001:db8::1",
];
const HOST_LABELS: &[&str] = &[
    "a",
    "b",
    "c",
    "ab",
    "aab",
    "a-b",
    "b_c",
    "x1",
    "x-1",
    "bab",
    "com",
    "test",
    "localhost",
];
const PORTS: &[u16] = &[80, 443, 22];

fn label(u: &mut Unstructured<'_>, vocab: &[&str]) -> Result<String> {
    if u.ratio(1, 8)? {
        let len = u.int_in_range(1..=4)?;
        (0..len)
            .map(|_| Ok(char::from(*u.choose(b"ab-_*0")?)))
            .collect()
    } else {
        Ok(u.choose(vocab)?.to_string())
    }
}

fn build(u: &mut Unstructured<'_>) -> Result<(Vec<Rule>, Vec<Query>)> {
    let mut rules = Vec::new();
    for _ in 0..u.int_in_range(0..=6)? {
        let action = if u.ratio(1, 3)? {
            Action::Deny
        } else {
            Action::Allow
        };
        if u.ratio(1, 5)? {
            rules.push(Rule {
                text: u.choose(LITERALS)?.to_string(),
                action,
                expect: Some(Expect::Literal),
            });
            continue;
        }
        let mut labels = Vec::new();
        for _ in 0..u.int_in_range(1..=4)? {
            let vocab = if u.ratio(1, 4)? { GLOBS } else { LABELS };
            labels.push(label(u, vocab)?);
        }
        let port = if u.ratio(1, 3)? {
            Some(*u.choose(PORTS)?)
        } else {
            None
        };
        let host = labels.join(".");
        let mut expect = expect(&host, action, port);
        let mut text = host;
        if u.arbitrary()? {
            text = text.to_ascii_uppercase();
        }
        if u.arbitrary()? {
            if text == "*" {
                // `*.` is not the global rule with its trailing dot stripped: it is an error.
                expect = Expect::Reject;
            }
            text.push('.');
        }
        if let Some(port) = port {
            text = format!("{text}:{port}");
        }
        if u.ratio(1, 8)? {
            text = format!("  {text} ");
        }
        rules.push(Rule {
            text,
            action,
            expect: Some(expect),
        });
    }
    let mut queries = Vec::new();
    for _ in 0..u.int_in_range(1..=4)? {
        let port = *u.choose(PORTS)?;
        let host = if u.ratio(1, 4)? {
            Host::Ip(u.choose(HOST_IPS)?.parse().expect("vocabulary address"))
        } else {
            let labels = (0..u.int_in_range(1..=4)?)
                .map(|_| label(u, HOST_LABELS))
                .collect::<Result<Vec<_>>>()?;
            match canonicalize(&labels.join(".")) {
                Ok(host) => host.into_owned(),
                Err(_) => continue,
            }
        };
        queries.push((host, port));
    }
    Ok((rules, queries))
}

/// What SPEC section 5 makes of a name pattern (lowercase, no trailing dot, port split off).
fn expect(host: &str, action: Action, port: Option<u16>) -> Expect {
    let kind = |kind| Expect::Kind(kind, port);
    if host == "*" {
        return match action {
            Action::Allow => kind(PatternKind::Global),
            Action::Deny => Expect::Reject,
        };
    }
    let (wildcard, rest) = if let Some(rest) = host.strip_prefix("**.") {
        (Some(true), rest)
    } else if let Some(rest) = host.strip_prefix("*.") {
        (Some(false), rest)
    } else {
        (None, host)
    };
    let labels: Vec<&str> = rest.split('.').collect();
    // A whole-label wildcard anywhere but the front.
    if labels.iter().any(|l| *l == "*" || *l == "**") {
        return Expect::Reject;
    }
    if rest.contains('*') {
        // In-label globs: not with a leading wildcard, not in the last label, one `*` at a
        // time, and at least a name under a top-level label.
        let tld = labels.last().expect("split yields a label");
        if wildcard.is_some()
            || labels.len() < 2
            || tld.contains('*')
            || labels.iter().any(|l| l.contains("**"))
        {
            return Expect::Reject;
        }
        return kind(PatternKind::Glob(
            labels.iter().map(|l| l.to_string()).collect(),
        ));
    }
    let name = match canonicalize(rest) {
        Ok(Host::Name(name)) => name.into_owned(),
        Ok(Host::Ip(ip)) if wildcard.is_none() => return kind(PatternKind::Ip(ip)),
        Ok(Host::Ip(_)) | Err(_) => return Expect::Reject,
    };
    match wildcard {
        None => kind(PatternKind::Exact(name)),
        Some(_) if action == Action::Allow && !name.contains('.') => Expect::Reject,
        Some(true) => kind(PatternKind::ApexAndSubdomains(name)),
        Some(false) => kind(PatternKind::Subdomains(name)),
    }
}

fn check(rules: &[Rule], queries: &[Query]) {
    let mut matcher = Matcher::default();
    let mut compiled: Vec<(Pattern, Action)> = Vec::new();
    for rule in rules {
        let parsed = Pattern::parse(&rule.text, rule.action);
        match (&rule.expect, &parsed) {
            (None, _) => {}
            (Some(Expect::Reject), Err(_)) => {}
            (Some(Expect::Literal), Ok(p)) => assert!(
                matches!(p.kind, PatternKind::Ip(_) | PatternKind::Cidr(_)),
                "{:?}: {p:?}",
                rule.text
            ),
            (Some(Expect::Kind(kind, port)), Ok(p)) => assert_eq!(
                (&p.kind, &p.port),
                (kind, port),
                "{:?} as {:?}",
                rule.text,
                rule.action
            ),
            (Some(want), got) => panic!(
                "{:?} as {:?}: want {want:?}, got {got:?}",
                rule.text, rule.action
            ),
        }
        let Ok(pattern) = parsed else {
            continue;
        };
        let text = pattern.to_string();
        assert_eq!(
            Pattern::parse(&text, rule.action).as_ref(),
            Ok(&pattern),
            "{:?} renders as {text:?}",
            rule.text
        );
        let index = matcher.insert(
            &pattern,
            RuleInfo {
                pattern: text.into(),
                action: rule.action,
                origin: Origin::Api,
                managed: false,
            },
        );
        assert_eq!(index as usize, compiled.len());
        compiled.push((pattern, rule.action));
    }
    for (host, port) in queries {
        let got = match host {
            Host::Ip(ip) => matcher.match_ip(*ip, *port),
            Host::Name(name) => matcher.match_name(name, *port),
        };
        let rules_text: Vec<String> = compiled
            .iter()
            .map(|(p, a)| format!("{} {p}", a.as_str()))
            .collect();
        let context = format!("{host}:{port} against {rules_text:?}: got {got:?}");

        let denies: Vec<usize> = (0..compiled.len())
            .filter(|&i| compiled[i].1 == Action::Deny && denied(&compiled[i].0, host, *port))
            .collect();
        if !denies.is_empty() {
            let rule = got.deny.unwrap_or_else(|| panic!("{context}: want a deny"));
            // `allow` is left unspecified: a caller reads `deny` first.
            assert!(
                denies.contains(&(rule as usize)),
                "{context}: want one of {denies:?}"
            );
            continue;
        }
        assert_eq!(got.deny, None, "{context}: no deny rule covers it");
        let allows: Vec<(usize, Tier)> = (0..compiled.len())
            .filter(|&i| compiled[i].1 == Action::Allow)
            .filter_map(|i| tier(&compiled[i].0, host, *port).map(|t| (i, t)))
            .collect();
        let Some(best) = allows.iter().map(|&(_, t)| t).max() else {
            assert_eq!(got.allow, None, "{context}: no allow rule covers it");
            continue;
        };
        let (rule, kind) = got
            .allow
            .unwrap_or_else(|| panic!("{context}: want an allow"));
        let hit = allows.iter().find(|&&(i, _)| i == rule as usize);
        let &(_, t) = hit.unwrap_or_else(|| panic!("{context}: rule {rule} does not cover it"));
        assert_eq!(t, best, "{context}: a more specific allow exists");
        // A CIDR is exact (a local exception) only when it lies inside one local class.
        let exact = |i: usize| match &compiled[i].0.kind {
            PatternKind::Exact(_) | PatternKind::Ip(_) => true,
            PatternKind::Cidr(net) => net_class(*net).is_some_and(|c| c.is_local()),
            _ => false,
        };
        let want_kind = if allows.iter().any(|&(i, _)| exact(i)) {
            AllowKind::Exact
        } else {
            AllowKind::Wildcard
        };
        assert_eq!(kind, want_kind, "{context}");
    }
}

/// How specifically a rule covers a destination; more specific is greater.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    Global,
    Glob,
    /// A `*.` or `**.` rule below its name, by the length of that name.
    Suffix(usize),
    /// An exact name, or the apex of `**.`; an IP or CIDR rule.
    Whole,
}

fn tier(p: &Pattern, host: &Host<'_>, port: u16) -> Option<Tier> {
    if p.port.is_some_and(|scope| scope != port) {
        return None;
    }
    let below = |name: &str, base: &str| {
        name.len() > base.len() + 1
            && name.ends_with(base)
            && name.as_bytes()[name.len() - base.len() - 1] == b'.'
    };
    match (&p.kind, host) {
        (PatternKind::Global, _) => Some(Tier::Global),
        (PatternKind::Exact(base), Host::Name(name)) => (name == base).then_some(Tier::Whole),
        (PatternKind::Subdomains(base), Host::Name(name)) => {
            below(name, base).then_some(Tier::Suffix(base.len()))
        }
        (PatternKind::ApexAndSubdomains(base), Host::Name(name)) => {
            if name == base {
                Some(Tier::Whole)
            } else {
                below(name, base).then_some(Tier::Suffix(base.len()))
            }
        }
        (PatternKind::Glob(globs), Host::Name(name)) => {
            let labels: Vec<&str> = name.split('.').collect();
            (labels.len() == globs.len()
                && globs
                    .iter()
                    .zip(&labels)
                    .all(|(g, l)| glob(g.as_bytes(), l.as_bytes())))
            .then_some(Tier::Glob)
        }
        (PatternKind::Ip(rule), Host::Ip(ip)) => {
            (rule.to_canonical() == ip.to_canonical()).then_some(Tier::Whole)
        }
        (PatternKind::Cidr(net), Host::Ip(ip)) => {
            in_cidr(net, ip.to_canonical()).then_some(Tier::Whole)
        }
        _ => None,
    }
}

/// Whether a deny rule covers the destination: as itself, or (IPv6) by the IPv4 address it
/// carries (mapped, compatible, NAT64, 6to4).
fn denied(p: &Pattern, host: &Host<'_>, port: u16) -> bool {
    if tier(p, host, port).is_some() {
        return true;
    }
    match host {
        Host::Ip(IpAddr::V6(v6)) => {
            embedded_v4(*v6).is_some_and(|v4| tier(p, &Host::Ip(IpAddr::V4(v4)), port).is_some())
        }
        _ => false,
    }
}

/// CIDR membership by identity: an IPv6 range holds an IPv4 address when it holds its mapped
/// form (`::ffff:10.0.0.0/104` and `::/0` both hold 10.1.2.3).
fn in_cidr(net: &IpNet, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpNet::V6(net), IpAddr::V4(v4)) => net.contains(&v4.to_ipv6_mapped()),
        _ => net.contains(&ip),
    }
}

/// Backtracking glob: `*` is any run of octets (the caller compares label by label).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

//! The compiled domain matcher.
//!
//! Name rules live in one hash table keyed by name ([`names`]). Each node holds the rules for
//! that exact name (exact rules and the apex of `**.`), the rules for the names below it (`*.`
//! and `**.`), and the in-label globs whose literal labels end there. A lookup walks the host's
//! label-boundary suffixes from the right (`com`, `example.com`, `www.example.com`) and probes
//! the table for those whose label count some rule has: the cost depends on the number of
//! labels, not the number of rules, nothing is allocated, and a match can never cross a label
//! (`evil-example.com` is not below `example.com`). IP literals sit in one table, CIDRs in one
//! table per prefix length ([`cidrs`]).
//!
//! Deny beats allow: a lookup stops at the first deny it meets. Otherwise it reports the most
//! specific allow: the exact name, then the longest suffix, then a glob, then `*`.

mod cidrs;
mod names;
mod shadow;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use foldhash::fast::RandomState;
use ipnet::IpNet;

use super::classifier;
use super::pattern::{Pattern, PatternKind};
use super::spec::{Action, Origin};
use cidrs::Cidrs;
use names::Names;

/// A rule as the policy reports it: normalised pattern text and where it was written.
#[derive(Debug, PartialEq, Eq)]
pub struct RuleInfo {
    /// The pattern in its normalised spelling (`**.example.com`, `10.0.0.0/8`, `[::1]:8080`).
    pub pattern: Box<str>,
    /// Whether the rule allows or denies what it matches.
    pub action: Action,
    /// Where the rule was written, so a decision can point back at it.
    pub origin: Origin,
    /// An administrator rule (`requirements.toml`) that user layers cannot override.
    pub managed: bool,
}

/// Shared handle to a rule; cloning it into a decision costs a reference count, not a copy.
pub type RuleRef = Arc<RuleInfo>;

/// How specifically an allow rule named the destination. Only `Exact` rules (a name, an IP
/// literal or a CIDR inside one local class) can open a local destination when
/// `allow_local_binding` is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowKind {
    /// An exact name, IP or a CIDR inside one local class: may open that local address.
    Exact,
    /// A wildcard, a global `*` or a wide CIDR: public addresses only.
    Wildcard,
}

/// One rule as a table holds it: small and `Copy`, so a lookup touches no rule text.
#[derive(Clone, Copy, Debug)]
struct Entry {
    rule: u32,
    action: Action,
    port: Option<u16>,
    kind: AllowKind,
}

impl Entry {
    /// With `port = Some(p)` this asks "does the rule apply to port p"; the shadow check
    /// passes the allow rule's own scope, so a port-scoped deny only covers the same port.
    fn applies(&self, port: Option<u16>) -> bool {
        self.port.is_none() || self.port == port
    }
}

/// The result of a lookup: rule indices into [`Matcher::rule`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Match {
    /// The deny rule that matched, if any.
    pub deny: Option<u32>,
    /// The allow rule that matched, with its kind.
    pub allow: Option<(u32, AllowKind)>,
}

impl Match {
    fn scan<'e>(&mut self, entries: impl IntoIterator<Item = &'e Entry>, port: Option<u16>) {
        let (deny, allow) = pick(entries, port);
        self.deny = self.deny.or(deny);
        self.allow = self.allow.or(allow);
    }
}

/// Entries by key (an address, a masked network): foldhash with a per-process seed.
type Table<K> = HashMap<K, Vec<Entry>, RandomState>;

/// `::ffff:0.0.0.0`, the first IPv4-mapped address.
const MAPPED: std::net::Ipv6Addr = Ipv4Addr::UNSPECIFIED.to_ipv6_mapped();

/// Every rule of a policy generation, compiled into lookup tables.
#[derive(Debug, Default)]
pub struct Matcher {
    rules: Vec<RuleRef>,
    names: Names,
    ips: Table<IpAddr>,
    cidrs: Cidrs,
    global: Vec<Entry>,
}

/// The first applicable deny and the first applicable allow among `entries`, an exact rule
/// before a wildcard one (on one name, `example.com` is more specific than `**.example.com`,
/// whichever was written first).
fn pick<'e>(
    entries: impl IntoIterator<Item = &'e Entry>,
    port: Option<u16>,
) -> (Option<u32>, Option<(u32, AllowKind)>) {
    let mut allow = None;
    for e in entries {
        if !e.applies(port) {
            continue;
        }
        match e.action {
            Action::Deny => return (Some(e.rule), allow),
            Action::Allow => {
                let better = match allow {
                    None => true,
                    Some((_, kind)) => kind == AllowKind::Wildcard && e.kind == AllowKind::Exact,
                };
                if better {
                    allow = Some((e.rule, e.kind));
                }
            }
        }
    }
    (None, allow)
}

impl Matcher {
    /// Adds a compiled pattern and returns its rule index.
    pub fn insert(&mut self, pattern: &Pattern, info: RuleInfo) -> u32 {
        let rule = u32::try_from(self.rules.len()).expect("fewer than 2^32 rules");
        let action = info.action;
        self.rules.push(Arc::new(info));
        let entry = |kind| Entry {
            rule,
            action,
            port: pattern.port,
            kind,
        };
        match &pattern.kind {
            PatternKind::Global => self.global.push(entry(AllowKind::Wildcard)),
            PatternKind::Exact(name) => {
                self.names
                    .node_mut(name)
                    .exact
                    .push(entry(AllowKind::Exact));
            }
            PatternKind::Subdomains(name) => {
                self.names
                    .node_mut(name)
                    .below
                    .push(entry(AllowKind::Wildcard));
            }
            PatternKind::ApexAndSubdomains(name) => {
                let node = self.names.node_mut(name);
                node.exact.push(entry(AllowKind::Wildcard));
                node.below.push(entry(AllowKind::Wildcard));
            }
            PatternKind::Glob(labels) => self.names.insert_glob(labels, entry(AllowKind::Wildcard)),
            PatternKind::Ip(ip) => self
                .ips
                .entry(ip.to_canonical())
                .or_default()
                .push(entry(AllowKind::Exact)),
            PatternKind::Cidr(net) => {
                // Only a range inside one local class is an exact local exception: `0.0.0.0/0`
                // must not open loopback or 169.254.169.254 as a side effect.
                let local = classifier::net_class(*net).is_some_and(|c| c.is_local());
                let entry = entry(if local {
                    AllowKind::Exact
                } else {
                    AllowKind::Wildcard
                });
                self.cidrs.insert(*net, entry);
                // A wider IPv6 range (`::/0`) holds every IPv4-mapped address, and mapped
                // destinations are matched as IPv4.
                if let IpNet::V6(v6) = net {
                    if v6.prefix_len() <= 96 && v6.contains(&MAPPED) {
                        self.cidrs.insert(IpNet::V4(Default::default()), entry);
                    }
                }
            }
        }
        rule
    }

    /// The rule behind an index a lookup returned.
    pub(crate) fn rule(&self, index: u32) -> &RuleRef {
        &self.rules[index as usize]
    }

    /// Every rule, in the order it was inserted.
    pub(crate) fn rules(&self) -> &[RuleRef] {
        &self.rules
    }

    /// Whether anything can be allowed at all (without an allow rule every destination is
    /// blocked, which `validate` reports).
    pub(crate) fn has_allow_rules(&self) -> bool {
        self.rules.iter().any(|r| r.action == Action::Allow)
    }

    /// Looks up a canonical name on a port.
    pub fn match_name(&self, host: &str, port: u16) -> Match {
        let port = Some(port);
        let mut m = Match::default();
        let mut glob_allow = None;
        self.names.walk(host, |node, whole| {
            let (deny, allow) = if whole {
                pick(&node.exact, port)
            } else {
                pick(&node.below, port)
            };
            if deny.is_some() {
                m.deny = deny;
                return false;
            }
            // Walking from the right, a later hit is a longer, more specific name.
            m.allow = allow.or(m.allow);
            if !whole && !node.globs.is_empty() {
                let hits = node.globs.iter().filter(|g| g.matches(host));
                let (deny, allow) = pick(hits.map(|g| &g.entry), port);
                if deny.is_some() {
                    m.deny = deny;
                    return false;
                }
                glob_allow = glob_allow.or(allow);
            }
            true
        });
        if m.deny.is_some() {
            m.allow = None;
            return m;
        }
        m.allow = m.allow.or(glob_allow);
        if m.allow.is_none() {
            m.allow = pick(&self.global, port).1;
        }
        m
    }

    /// Looks up an IP destination (or a resolved address) on a port. IPv4-mapped IPv6 is
    /// matched as IPv4; a deny rule also catches the IPv4 address inside NAT64, 6to4 and
    /// IPv4-compatible forms, so no spelling of a denied address slips past it.
    pub fn match_ip(&self, ip: IpAddr, port: u16) -> Match {
        let ip = ip.to_canonical();
        let port = Some(port);
        let mut m = self.match_ip_tables(ip, port);
        if m.deny.is_none() {
            if let IpAddr::V6(v6) = ip {
                if let Some(v4) = classifier::embedded_v4(v6) {
                    m.deny = self.match_ip_tables(IpAddr::V4(v4), port).deny;
                }
            }
        }
        if m.deny.is_none() && m.allow.is_none() {
            m.scan(&self.global, port);
        }
        m
    }

    /// The IP and CIDR rules for `ip` alone, without the IPv4 inside it and without `*`.
    fn match_ip_tables(&self, ip: IpAddr, port: Option<u16>) -> Match {
        let mut m = Match::default();
        if let Some(entries) = self.ips.get(&ip) {
            m.scan(entries, port);
        }
        if m.deny.is_none() {
            m.scan(self.cidrs.containing(ip, 128), port);
        }
        m
    }
}

#[cfg(test)]
mod tests;

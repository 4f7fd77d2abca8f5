//! The compiled domain matcher.
//!
//! Name rules live in one hash table keyed by name. Each node holds the rules for that exact
//! name (exact rules and the apex of `**.`), the rules for the names below it (`*.` and
//! `**.`), and the in-label globs whose literal labels end there. A lookup walks the host's
//! label-boundary suffixes from the right (`com`, `example.com`, `www.example.com`) and probes
//! the table for those whose label count some rule has: the cost depends on the number of
//! labels, not the number of rules, nothing is allocated, and a match can never cross a label
//! (`evil-example.com` is not below `example.com`).
//!
//! Deny beats allow: a lookup stops at the first deny it meets. Otherwise it reports the most
//! specific allow: the exact name, then the longest suffix, then a glob, then `*`.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use ipnet::IpNet;

use super::classifier::{self, mask128, mask32};
use super::host::last_dot;
use super::pattern::{glob_label_matches, Pattern, PatternKind};
use super::spec::{Action, Origin};

/// A rule as the policy reports it: normalised pattern text and where it was written.
#[derive(Debug, PartialEq, Eq)]
pub struct RuleInfo {
    pub pattern: Box<str>,
    pub action: Action,
    pub origin: Origin,
    pub managed: bool,
}

/// Shared handle to a rule; cloning it into a decision costs a reference count, not a copy.
pub type RuleRef = Arc<RuleInfo>;

/// How specifically an allow rule named the destination. Only `Exact` rules (a name, an IP
/// literal or a CIDR) can open a local destination when `allow_local_binding` is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowKind {
    Exact,
    Wildcard,
}

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
    pub deny: Option<u32>,
    pub allow: Option<(u32, AllowKind)>,
}

impl Match {
    fn scan<'e>(&mut self, entries: impl IntoIterator<Item = &'e Entry>, port: Option<u16>) {
        let (deny, allow) = pick(entries, port);
        self.deny = self.deny.or(deny);
        self.allow = self.allow.or(allow);
    }
}

type Table<K> = HashMap<K, Vec<Entry>, RandomState>;

/// `::ffff:0.0.0.0`, the first IPv4-mapped address.
const MAPPED: std::net::Ipv6Addr = Ipv4Addr::UNSPECIFIED.to_ipv6_mapped();

#[derive(Debug, Default)]
pub struct Matcher {
    rules: Vec<RuleRef>,
    names: Names,
    ips: Table<IpAddr>,
    cidrs: Cidrs,
    global: Vec<Entry>,
}

#[derive(Debug)]
struct Glob {
    labels: Box<[Box<str>]>,
    entry: Entry,
}

impl Glob {
    fn matches(&self, host: &str) -> bool {
        host.split('.').count() == self.labels.len()
            && self
                .labels
                .iter()
                .zip(host.split('.'))
                .all(|(glob, label)| glob_label_matches(glob, label))
    }
}

/// The rules attached to one name.
#[derive(Debug)]
struct Node {
    name: Box<str>,
    /// Exact rules and the apex of `**.` rules.
    exact: Vec<Entry>,
    /// `*.` and `**.` rules: they cover every name below this one.
    below: Vec<Entry>,
    /// In-label globs whose labels after the last glob label spell this name.
    globs: Vec<Glob>,
}

/// Rule names by their text. A host is looked up once per label-boundary suffix, but only at
/// the depths (label counts) some rule has, and each probed suffix is hashed on its own with
/// foldhash (per-process seed): one or two short hashes beat a byte-serial rolling hash over
/// the whole host.
#[derive(Debug, Default)]
struct Names {
    table: HashTable<Node>,
    state: RandomState,
    /// Bit `k` is set when some node has `k` labels (the last bit stands for 63 or more).
    depths: u64,
}

/// The `depths` bit of a name with `labels` labels.
fn depth_bit(labels: usize) -> u64 {
    1 << labels.min(63)
}

impl Names {
    fn node_mut(&mut self, name: &str) -> &mut Node {
        let state = &self.state;
        self.depths |= depth_bit(name.split('.').count());
        self.table
            .entry(
                state.hash_one(name),
                |n| &*n.name == name,
                |n| state.hash_one(&n.name),
            )
            .or_insert_with(|| Node {
                name: name.into(),
                exact: Vec::new(),
                below: Vec::new(),
                globs: Vec::new(),
            })
            .into_mut()
    }

    fn get(&self, name: &str) -> Option<&Node> {
        self.table
            .find(self.state.hash_one(name), |n| &*n.name == name)
    }

    /// Calls `visit` for every label-boundary suffix of `host` that has a node, shortest
    /// first, then for `host` itself (`whole = true`), until `visit` returns false.
    fn walk<'a>(&'a self, host: &str, mut visit: impl FnMut(&'a Node, bool) -> bool) {
        let mut labels = 1;
        let mut end = host.len();
        while let Some(dot) = last_dot(&host.as_bytes()[..end]) {
            if self.depths & depth_bit(labels) != 0 {
                if let Some(node) = self.get(&host[dot + 1..]) {
                    if !visit(node, false) {
                        return;
                    }
                }
            }
            labels += 1;
            if self.depths >> labels.min(63) == 0 {
                // No rule name has this many labels: nothing further left can match.
                return;
            }
            end = dot;
        }
        if self.depths & depth_bit(labels) != 0 {
            if let Some(node) = self.get(host) {
                visit(node, true);
            }
        }
    }
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

/// CIDR rules grouped by prefix length, longest first: a lookup is one hash probe per
/// distinct length, however many ranges there are.
#[derive(Debug, Default)]
struct Cidrs {
    v4: Vec<(u8, Table<u32>)>,
    v6: Vec<(u8, Table<u128>)>,
}

impl Cidrs {
    fn insert(&mut self, net: IpNet, entry: Entry) {
        fn slot<K: std::hash::Hash + Eq>(
            tables: &mut Vec<(u8, Table<K>)>,
            len: u8,
            key: K,
        ) -> &mut Vec<Entry> {
            let i = match tables.iter().position(|(l, _)| *l <= len) {
                Some(i) if tables[i].0 == len => i,
                Some(i) => {
                    tables.insert(i, (len, HashMap::default()));
                    i
                }
                None => {
                    tables.push((len, HashMap::default()));
                    tables.len() - 1
                }
            };
            tables[i].1.entry(key).or_default()
        }
        match net {
            IpNet::V4(net) => {
                slot(&mut self.v4, net.prefix_len(), u32::from(net.network())).push(entry);
            }
            IpNet::V6(net) => {
                slot(&mut self.v6, net.prefix_len(), u128::from(net.network())).push(entry);
            }
        }
    }

    /// Entries of every range that contains `ip` with a prefix of at most `max_len`, most
    /// specific first.
    fn containing(&self, ip: IpAddr, max_len: u8) -> impl Iterator<Item = &Entry> {
        let (v4, v6) = match ip {
            IpAddr::V4(ip) => {
                let bits = u32::from(ip);
                let hits = self
                    .v4
                    .iter()
                    .filter(move |(len, _)| *len <= max_len)
                    .filter_map(move |(len, table)| table.get(&(bits & mask32(*len))));
                (Some(hits), None)
            }
            IpAddr::V6(ip) => {
                let bits = u128::from(ip);
                let hits = self
                    .v6
                    .iter()
                    .filter(move |(len, _)| *len <= max_len)
                    .filter_map(move |(len, table)| table.get(&(bits & mask128(*len))));
                (None, Some(hits))
            }
        };
        v4.into_iter()
            .flatten()
            .chain(v6.into_iter().flatten())
            .flatten()
    }
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
            PatternKind::Glob(labels) => {
                let last_glob = labels.iter().rposition(|l| l.contains('*')).unwrap_or(0);
                let key = labels[last_glob + 1..].join(".");
                let glob = Glob {
                    labels: labels.iter().map(|l| l.as_str().into()).collect(),
                    entry: entry(AllowKind::Wildcard),
                };
                self.names.node_mut(&key).globs.push(glob);
            }
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

    pub fn rule(&self, index: u32) -> &RuleRef {
        &self.rules[index as usize]
    }

    pub fn rules(&self) -> &[RuleRef] {
        &self.rules
    }

    pub fn has_allow_rules(&self) -> bool {
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

    /// The first deny among the exact and suffix rules for `host` (no globs, no `*`).
    fn deny_for_name(&self, host: &str, port: Option<u16>) -> Option<u32> {
        let mut deny = None;
        self.names.walk(host, |node, whole| {
            let entries = if whole { &node.exact } else { &node.below };
            deny = pick(entries, port).0;
            deny.is_none()
        });
        deny
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

    /// The deny rule that makes an allow pattern useless, if any: every destination the
    /// allow pattern covers (on its port scope) is denied by that one rule.
    pub fn shadowing_deny(&self, allow: &Pattern) -> Option<u32> {
        let port = allow.port;
        // Every name below `base` is denied when `base` or one of its suffixes carries a
        // deny for the names below it.
        let covers_subdomains = |base: &str| {
            let mut rest = base;
            loop {
                let below = self.names.get(rest).map(|n| n.below.as_slice());
                if let Some(deny) = pick(below.unwrap_or_default(), port).0 {
                    return Some(deny);
                }
                let dot = rest.find('.')?;
                rest = &rest[dot + 1..];
            }
        };
        match &allow.kind {
            PatternKind::Exact(name) => self.deny_for_name(name, port),
            PatternKind::Subdomains(base) => covers_subdomains(base),
            PatternKind::ApexAndSubdomains(base) => {
                let apex = self.deny_for_name(base, port);
                apex.and(covers_subdomains(base))
            }
            PatternKind::Ip(ip) => self.match_ip_tables(ip.to_canonical(), port).deny,
            PatternKind::Cidr(net) => self
                .cidrs
                .containing(net.network(), net.prefix_len())
                .find(|e| e.action == Action::Deny && e.applies(port))
                .map(|e| e.rule),
            PatternKind::Global | PatternKind::Glob(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(rules: &[(&str, Action)]) -> Matcher {
        let mut m = Matcher::default();
        for (text, action) in rules {
            let p = Pattern::parse(text, *action).unwrap();
            m.insert(
                &p,
                RuleInfo {
                    pattern: p.to_string().into(),
                    action: *action,
                    origin: Origin::Api,
                    managed: false,
                },
            );
        }
        m
    }

    /// What decided: `deny <pattern>`, `allow <pattern>` or `none`.
    fn verdict(m: &Matcher, host: &str, port: u16) -> String {
        let r = match host.parse::<IpAddr>() {
            Ok(ip) => m.match_ip(ip, port),
            Err(_) => m.match_name(host, port),
        };
        match (r.deny, r.allow) {
            (Some(d), _) => format!("deny {}", m.rule(d).pattern),
            (None, Some((a, _))) => format!("allow {}", m.rule(a).pattern),
            (None, None) => "none".into(),
        }
    }

    use Action::{Allow, Deny};

    #[test]
    fn every_matcher_form() {
        let m = matcher(&[
            ("exact.test", Allow),
            ("*.sub.test", Allow),
            ("**.both.test", Allow),
            ("api-*.glob.test", Allow),
            ("*-ai.glob.test", Allow),
            ("port.test:443", Allow),
            ("*.ports.test:8443", Allow),
            ("127.0.0.1", Allow),
            ("[::1]:8080", Allow),
            ("10.1.0.0/16", Allow),
        ]);
        let cases = [
            ("exact.test", 443, "allow exact.test"),
            ("www.exact.test", 443, "none"),
            ("xexact.test", 443, "none"),
            ("sub.test", 443, "none"),
            ("a.sub.test", 443, "allow *.sub.test"),
            ("a.b.c.sub.test", 443, "allow *.sub.test"),
            ("evil-sub.test", 443, "none"),
            ("sub.test.evil", 443, "none"),
            ("both.test", 443, "allow **.both.test"),
            ("x.y.both.test", 443, "allow **.both.test"),
            ("notboth.test", 443, "none"),
            ("api-v1.glob.test", 443, "allow api-*.glob.test"),
            ("api-.glob.test", 443, "allow api-*.glob.test"),
            ("api.glob.test", 443, "none"),
            ("x.api-v1.glob.test", 443, "none"),
            ("us-ai.glob.test", 443, "allow *-ai.glob.test"),
            ("us.x-ai.glob.test", 443, "none"),
            ("port.test", 443, "allow port.test:443"),
            ("port.test", 22, "none"),
            ("a.ports.test", 8443, "allow *.ports.test:8443"),
            ("a.ports.test", 443, "none"),
            ("127.0.0.1", 1, "allow 127.0.0.1"),
            ("::ffff:127.0.0.1", 1, "allow 127.0.0.1"),
            ("127.0.0.2", 1, "none"),
            ("::1", 8080, "allow [::1]:8080"),
            ("::1", 8081, "none"),
            ("10.1.255.255", 1, "allow 10.1.0.0/16"),
            ("10.2.0.0", 1, "none"),
        ];
        for (host, port, want) in cases {
            assert_eq!(verdict(&m, host, port), want, "{host}:{port}");
        }
    }

    #[test]
    fn deny_beats_allow_whatever_the_specificity() {
        let m = matcher(&[
            ("*", Allow),
            ("**.example.com", Allow),
            ("api.example.com", Allow),
            ("*.example.com", Deny),
            ("blocked.test", Deny),
            ("*-exfil.test", Deny),
            ("ssh.test:22", Deny),
            ("10.0.0.0/8", Deny),
            ("192.0.2.1", Deny),
        ]);
        let cases = [
            ("example.com", 443, "allow **.example.com"),
            ("api.example.com", 443, "deny *.example.com"),
            ("deep.api.example.com", 443, "deny *.example.com"),
            ("blocked.test", 443, "deny blocked.test"),
            ("sub.blocked.test", 443, "allow *"),
            ("data-exfil.test", 443, "deny *-exfil.test"),
            ("ssh.test", 22, "deny ssh.test:22"),
            ("ssh.test", 443, "allow *"),
            ("anything.else", 443, "allow *"),
            ("10.9.9.9", 443, "deny 10.0.0.0/8"),
            ("::ffff:10.9.9.9", 443, "deny 10.0.0.0/8"),
            ("64:ff9b::a09:909", 443, "deny 10.0.0.0/8"),
            ("2002:a09:909::", 443, "deny 10.0.0.0/8"),
            ("192.0.2.1", 443, "deny 192.0.2.1"),
            ("8.8.8.8", 443, "allow *"),
        ];
        for (host, port, want) in cases {
            assert_eq!(verdict(&m, host, port), want, "{host}:{port}");
        }
    }

    #[test]
    fn cidrs_of_many_lengths_and_families() {
        let m = matcher(&[
            ("10.0.0.0/8", Allow),
            ("10.1.2.0/24", Deny),
            ("10.1.0.0/16", Allow),
            ("0.0.0.0/0", Allow),
            ("fd00::/8", Allow),
            ("fd00:1::/32", Deny),
            ("192.168.1.7/32", Deny),
        ]);
        let cases = [
            ("10.1.2.3", "deny 10.1.2.0/24"),
            ("10.1.3.3", "allow 10.1.0.0/16"),
            ("10.200.0.1", "allow 10.0.0.0/8"),
            ("11.0.0.1", "allow 0.0.0.0/0"),
            ("192.168.1.7", "deny 192.168.1.7/32"),
            ("192.168.1.8", "allow 0.0.0.0/0"),
            ("fd00:2::1", "allow fd00::/8"),
            ("fd00:1::1", "deny fd00:1::/32"),
            ("fe80::1", "none"),
        ];
        for (host, want) in cases {
            assert_eq!(verdict(&m, host, 1), want, "{host}");
        }
    }

    /// An IPv4-mapped range is the IPv4 range it maps, as allow and as deny.
    #[test]
    fn mapped_ranges_match_their_ipv4_addresses() {
        let m = matcher(&[
            ("::ffff:10.0.0.0/104", Allow),
            ("::ffff:127.0.0.0/104", Deny),
            ("2001:db8::/32", Allow),
        ]);
        let cases = [
            ("10.1.2.3", "allow 10.0.0.0/8"),
            ("::ffff:10.1.2.3", "allow 10.0.0.0/8"),
            ("127.0.0.1", "deny 127.0.0.0/8"),
            ("::ffff:127.0.0.1", "deny 127.0.0.0/8"),
            ("11.0.0.1", "none"),
        ];
        for (host, want) in cases {
            assert_eq!(verdict(&m, host, 1), want, "{host}");
        }
        let wide = matcher(&[("::/0", Deny), ("8.8.8.8", Allow)]);
        assert_eq!(verdict(&wide, "8.8.8.8", 1), "deny ::/0");
        let wide = matcher(&[("::/0", Allow)]);
        assert_eq!(verdict(&wide, "1.2.3.4", 1), "allow ::/0");
        let v6_only = matcher(&[("2000::/3", Deny), ("1.2.3.4", Allow)]);
        assert_eq!(verdict(&v6_only, "1.2.3.4", 1), "allow 1.2.3.4");
    }

    /// A CIDR is an exact local exception only when it lies inside one local class.
    #[test]
    fn only_ranges_inside_one_local_class_are_exact() {
        let m = matcher(&[
            ("0.0.0.0/0", Allow),
            ("::/0", Allow),
            ("10.1.0.0/16", Allow),
            ("127.0.0.0/8", Allow),
            ("169.0.0.0/8", Allow),
            ("fd00::/8", Allow),
        ]);
        let kind = |ip: &str| m.match_ip(ip.parse().unwrap(), 1).allow.map(|a| a.1);
        let cases = [
            ("10.1.2.3", AllowKind::Exact),
            ("10.2.0.1", AllowKind::Wildcard),
            ("127.0.0.1", AllowKind::Exact),
            ("169.254.169.254", AllowKind::Wildcard),
            ("fd00::1", AllowKind::Exact),
            ("fe80::1", AllowKind::Wildcard),
            ("::1", AllowKind::Wildcard),
            ("8.8.8.8", AllowKind::Wildcard),
        ];
        for (ip, want) in cases {
            assert_eq!(kind(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn ipv4_mapped_cidrs_cover_the_ipv4_addresses_they_map() {
        // Found by `fuzz/` (matcher): a destination is matched as IPv4 once canonical, so a
        // range written in its IPv4-mapped spelling is compiled as the IPv4 range it maps.
        let m = matcher(&[
            ("*", Allow),
            ("::ffff:10.0.0.0/104", Deny),
            ("::ffff:127.0.0.0/120", Allow),
        ]);
        let cases = [
            ("10.1.2.3", "deny 10.0.0.0/8"),
            ("::ffff:10.1.2.3", "deny 10.0.0.0/8"),
            ("64:ff9b::a01:203", "deny 10.0.0.0/8"),
            ("11.0.0.1", "allow *"),
            ("127.0.0.9", "allow 127.0.0.0/24"),
            ("127.0.1.9", "allow *"),
        ];
        for (host, want) in cases {
            assert_eq!(verdict(&m, host, 1), want, "{host}");
        }
        let shadowed = m.shadowing_deny(&Pattern::parse("10.1.0.0/16", Allow).unwrap());
        assert_eq!(shadowed.map(|r| &*m.rule(r).pattern), Some("10.0.0.0/8"));
        let shadowed = m.shadowing_deny(&Pattern::parse("::ffff:10.1.0.0/112", Allow).unwrap());
        assert_eq!(shadowed.map(|r| &*m.rule(r).pattern), Some("10.0.0.0/8"));
    }

    #[test]
    fn globs_are_found_under_their_literal_suffix() {
        let m = matcher(&[
            ("us-*.cloud.test", Allow),
            ("a.b*.example.test", Allow),
            ("*-evil.cloud.test", Deny),
            ("x*y.test", Allow),
        ]);
        let cases = [
            ("us-east.cloud.test", "allow us-*.cloud.test"),
            ("us-evil.cloud.test", "deny *-evil.cloud.test"),
            ("eu-west.cloud.test", "none"),
            ("a.bee.example.test", "allow a.b*.example.test"),
            ("a.cee.example.test", "none"),
            ("z.bee.example.test", "none"),
            ("xzzy.test", "allow x*y.test"),
            ("xy.test", "allow x*y.test"),
            ("a.xy.test", "none"),
        ];
        for (host, want) in cases {
            assert_eq!(verdict(&m, host, 1), want, "{host}");
        }
    }

    #[test]
    fn the_most_specific_allow_is_reported() {
        let m = matcher(&[
            ("*", Allow),
            ("*.example.com", Allow),
            ("**.api.example.com", Allow),
            ("v1.api.example.com", Allow),
        ]);
        assert_eq!(
            verdict(&m, "v1.api.example.com", 1),
            "allow v1.api.example.com"
        );
        assert_eq!(
            verdict(&m, "api.example.com", 1),
            "allow **.api.example.com"
        );
        assert_eq!(
            verdict(&m, "x.api.example.com", 1),
            "allow **.api.example.com"
        );
        assert_eq!(verdict(&m, "www.example.com", 1), "allow *.example.com");
        assert_eq!(verdict(&m, "other.test", 1), "allow *");
    }

    #[test]
    fn an_exact_rule_beats_the_apex_of_a_double_star_rule_in_any_order() {
        // Found by `fuzz/` (matcher): both sit on the same name, and the first written won.
        for rules in [
            [("**.x.test", Allow), ("x.test:80", Allow)],
            [("x.test:80", Allow), ("**.x.test", Allow)],
        ] {
            let m = matcher(&rules);
            assert_eq!(verdict(&m, "x.test", 80), "allow x.test:80", "{rules:?}");
            assert_eq!(
                m.match_name("x.test", 80).allow.unwrap().1,
                AllowKind::Exact
            );
            assert_eq!(verdict(&m, "x.test", 443), "allow **.x.test", "{rules:?}");
        }
    }

    #[test]
    fn allow_kind_tells_exact_from_wildcard() {
        let m = matcher(&[
            ("localhost", Allow),
            ("**.dev.test", Allow),
            ("127.0.0.1", Allow),
        ]);
        assert_eq!(
            m.match_name("localhost", 1).allow.unwrap().1,
            AllowKind::Exact
        );
        assert_eq!(
            m.match_name("dev.test", 1).allow.unwrap().1,
            AllowKind::Wildcard
        );
        let ip = "127.0.0.1".parse().unwrap();
        assert_eq!(m.match_ip(ip, 1).allow.unwrap().1, AllowKind::Exact);
        let g = matcher(&[("*", Allow)]);
        assert_eq!(g.match_ip(ip, 1).allow.unwrap().1, AllowKind::Wildcard);
    }

    #[test]
    fn shadowed_allow_rules_are_found() {
        let m = matcher(&[
            ("**.corp.test", Deny),
            ("exact.test", Deny),
            ("mail.test:25", Deny),
            ("10.0.0.0/8", Deny),
        ]);
        let shadow = |text: &str| {
            m.shadowing_deny(&Pattern::parse(text, Allow).unwrap())
                .map(|r| m.rule(r).pattern.to_string())
        };
        assert_eq!(shadow("api.corp.test").as_deref(), Some("**.corp.test"));
        assert_eq!(shadow("corp.test").as_deref(), Some("**.corp.test"));
        assert_eq!(shadow("*.corp.test").as_deref(), Some("**.corp.test"));
        assert_eq!(shadow("**.x.corp.test").as_deref(), Some("**.corp.test"));
        assert_eq!(shadow("exact.test:443").as_deref(), Some("exact.test"));
        assert_eq!(shadow("mail.test:25").as_deref(), Some("mail.test:25"));
        assert_eq!(shadow("10.1.0.0/16").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(shadow("10.1.2.3").as_deref(), Some("10.0.0.0/8"));
        // Partly covered rules still do something and are not reported.
        assert_eq!(shadow("mail.test"), None);
        assert_eq!(shadow("**.exact.test"), None);
        assert_eq!(shadow("other.test"), None);
        assert_eq!(shadow("*"), None);
    }
}

//! The shadow check behind `validate`'s "has no effect" warning: whether one deny rule covers
//! everything an allow pattern could reach. It runs once per rule when a policy is compiled,
//! never per connection.

use super::{pick, Matcher};
use crate::pattern::{Pattern, PatternKind};
use crate::spec::Action;

impl Matcher {
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

    /// The deny rule that makes an allow pattern useless, if any: every destination the
    /// allow pattern covers (on its port scope) is denied by that one rule.
    pub(crate) fn shadowing_deny(&self, allow: &Pattern) -> Option<u32> {
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

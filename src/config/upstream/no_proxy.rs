//! `NO_PROXY` as curl reads it: a comma-separated list where `*` alone means every host, a
//! name matches itself and its subdomains (a leading dot is optional), and IP addresses and
//! CIDR ranges match IP destinations. Entries are matched against the destination as the
//! client wrote it (canonicalised), never against what a name resolves to; the destination's
//! port plays no part. Two leniencies over curl: a leading `*.` reads like a leading `.` (as
//! Go reads it), and IPv6 entries may be bracketed.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::policy::host::canonicalize;
use crate::policy::Host;

/// The destinations that go direct although an upstream proxy is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoProxy {
    /// `*`: every destination goes direct.
    all: bool,
    /// Canonical names, each matching itself and its subdomains.
    names: Vec<Box<str>>,
    /// Addresses (as /32 or /128) and ranges.
    nets: Vec<IpNet>,
    /// Every entry as written, for `validate` and `/config`.
    written: Vec<String>,
    /// Entries that can never match (a port, a bad range), for a warning.
    ignored: Vec<String>,
}

impl NoProxy {
    /// Reads the entries of one or more comma-separated lists.
    pub fn parse<'a>(lists: impl IntoIterator<Item = &'a str>) -> NoProxy {
        let entries: Vec<&str> = lists
            .into_iter()
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .collect();
        let mut no_proxy = NoProxy {
            all: entries == ["*"],
            written: entries.iter().map(|e| e.to_string()).collect(),
            ..NoProxy::default()
        };
        if no_proxy.all {
            return no_proxy;
        }
        for entry in entries {
            match Entry::parse(entry) {
                Some(Entry::Name(name)) => no_proxy.names.push(name),
                Some(Entry::Net(net)) => no_proxy.nets.push(net),
                None => no_proxy.ignored.push(entry.to_string()),
            }
        }
        no_proxy
    }

    /// Whether `host` goes direct. Allocates nothing.
    pub fn matches(&self, host: &Host<'_>) -> bool {
        if self.all {
            return true;
        }
        match host {
            Host::Name(name) => self.names.iter().any(|entry| covers(entry, name)),
            Host::Ip(ip) => {
                let ip = ip.to_canonical();
                self.nets.iter().any(|net| net.contains(&ip))
            }
        }
    }

    /// Whether it is `*`.
    pub fn is_all(&self) -> bool {
        self.all
    }

    /// The entries as written.
    pub fn entries(&self) -> &[String] {
        &self.written
    }

    /// The entries that never match anything.
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }
}

enum Entry {
    Name(Box<str>),
    Net(IpNet),
}

impl Entry {
    fn parse(entry: &str) -> Option<Entry> {
        if let Some((ip, bits)) = entry.split_once('/') {
            let ip = ip_literal(ip)?;
            let net = IpNet::new(ip, bits.parse().ok()?).ok()?;
            return Some(Entry::Net(net.trunc()));
        }
        if let Some(ip) = ip_literal(entry) {
            return Some(Entry::Net(IpNet::from(ip)));
        }
        let name = entry.strip_prefix('*').unwrap_or(entry);
        let name = name.strip_prefix('.').unwrap_or(name);
        match canonicalize(name).ok()? {
            Host::Name(name) => Some(Entry::Name(name.into())),
            Host::Ip(ip) => Some(Entry::Net(IpNet::from(ip.to_canonical()))),
        }
    }
}

fn ip_literal(text: &str) -> Option<IpAddr> {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// `name` is `entry` or a subdomain of it, on a label boundary.
fn covers(entry: &str, name: &str) -> bool {
    match name.strip_suffix(entry) {
        Some("") => true,
        Some(rest) => rest.ends_with('.'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Target;

    fn goes_direct(no_proxy: &NoProxy, dest: &str) -> bool {
        let target = Target::parse_authority(dest, Some(443)).unwrap();
        no_proxy.matches(&target.host)
    }

    /// curl's rules, row by row: (NO_PROXY, destination, goes direct).
    #[test]
    fn matches_as_curl_does() {
        let rows = [
            ("", "a.test", false),
            ("*", "anything.test", true),
            ("*", "10.0.0.1", true),
            (" * ", "a.test", true),
            ("corp.test", "corp.test", true),
            ("corp.test", "api.corp.test:8443", true),
            ("corp.test", "x.y.corp.test", true),
            ("corp.test", "notcorp.test", false),
            ("corp.test", "corp.test.evil", false),
            (".corp.test", "corp.test", true),
            (".corp.test", "api.corp.test", true),
            ("*.corp.test", "api.corp.test", true),
            ("corp.test.", "api.corp.test", true),
            ("CORP.Test", "api.corp.test", true),
            ("a.test, corp.test ,,", "api.corp.test", true),
            ("a.test,b.test", "c.test", false),
            ("bücher.test", "xn--bcher-kva.test", true),
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.1.2.3", "10.1.2.3", true),
            ("10.1.2.3", "10.1.2.4", false),
            ("10.1.2.99/24", "10.1.2.3", true),
            ("10.0.0.0/8", "[::ffff:10.0.0.1]", true),
            ("::1", "[::1]", true),
            ("[::1]", "[::1]", true),
            ("fd00::/8", "[fd12::1]", true),
            ("10.0.0.0/8", "ten.test", false),
            ("corp.test", "10.0.0.1", false),
            ("corp.test:443", "corp.test", false),
            ("10.0.0.0/33", "10.0.0.1", false),
            ("*,a.test", "b.test", false),
        ];
        for (list, dest, want) in rows {
            let no_proxy = NoProxy::parse([list]);
            assert_eq!(
                goes_direct(&no_proxy, dest),
                want,
                "NO_PROXY={list:?} {dest}"
            );
        }
    }

    #[test]
    fn lists_are_joined_and_entries_that_never_match_are_named() {
        let no_proxy = NoProxy::parse(["a.test,corp.test:443", "10.0.0.0/33", " b.test "]);
        assert_eq!(
            no_proxy.entries(),
            ["a.test", "corp.test:443", "10.0.0.0/33", "b.test"]
        );
        assert_eq!(no_proxy.ignored(), ["corp.test:443", "10.0.0.0/33"]);
        assert!(goes_direct(&no_proxy, "b.test"));
        assert!(!no_proxy.is_all());
        assert!(NoProxy::parse(["*"]).is_all());
        assert!(!NoProxy::parse(["*", "a.test"]).is_all());
    }
}

//! Rule patterns: parsed and normalised once, when a policy is compiled.
//!
//! Patterns go through the same canonicaliser as destinations (trim, lowercase, trailing dot,
//! IDNA, brackets), so a rule can never be spelled in a way that no destination matches.
//! Anything ambiguous or over-broad is rejected here with a message that says what to write.

use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use super::host::{self, Host};
use super::spec::Action;
use super::target::{parse_port, split_authority};

/// What part of the name space a pattern covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatternKind {
    /// `*`: any host (allow only).
    Global,
    /// `example.com`.
    Exact(String),
    /// `*.example.com`: subdomains at any depth, not the apex.
    Subdomains(String),
    /// `**.example.com`: the apex and its subdomains.
    ApexAndSubdomains(String),
    /// `api-*.example.com`: `*` inside labels matches within that label only.
    Glob(Vec<String>),
    /// `127.0.0.1`, `::1`, `[::1]`.
    Ip(IpAddr),
    /// `10.1.0.0/16`.
    Cidr(IpNet),
}

/// A compiled pattern: what it covers and, optionally, the one port it is scoped to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// The names or addresses it covers.
    pub kind: PatternKind,
    /// The one port it applies to (`example.com:443`); `None` for every port.
    pub port: Option<u16>,
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            PatternKind::Global => f.write_str("*")?,
            PatternKind::Exact(name) => f.write_str(name)?,
            PatternKind::Subdomains(name) => write!(f, "*.{name}")?,
            PatternKind::ApexAndSubdomains(name) => write!(f, "**.{name}")?,
            PatternKind::Glob(labels) => f.write_str(&labels.join("."))?,
            PatternKind::Ip(IpAddr::V4(ip)) => write!(f, "{ip}")?,
            PatternKind::Ip(IpAddr::V6(ip)) if self.port.is_some() => write!(f, "[{ip}]")?,
            PatternKind::Ip(IpAddr::V6(ip)) => write!(f, "{ip}")?,
            PatternKind::Cidr(net) => write!(f, "{net}")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// Why a pattern was rejected; the policy error adds where it was written. Each message says
/// what to write instead.
///
/// Non-exhaustive: a newly refused shape gets its own variant without breaking a `match`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// Nothing but whitespace.
    #[error("empty pattern")]
    Empty,
    /// A URL where a host was expected; carries the host it names.
    #[error("a pattern is a host, not a URL: write `{0}` without scheme or path")]
    Url(String),
    /// A shell-style glob other than `*`.
    #[error("`?` and `[...]` globs are not supported; use `*.example.com`, `**.example.com` or `*` inside one label")]
    UnsupportedGlob,
    /// `*` as a deny rule, which would only hide that nothing is allowed.
    #[error("`*` cannot be a deny rule: with no allow rule everything is already blocked")]
    GlobalDeny,
    /// An allow wildcard directly under a top-level label (`*.com`).
    #[error(
        "`{0}` would allow every name under a top-level label; name the domain (`*.example.com`)"
    )]
    TopLevelWildcard(String),
    /// A whole-label `*` after the first label (`api.*.example.com`).
    #[error(
        "a whole-label `*` is only allowed at the front (`*.example.com` or `**.example.com`)"
    )]
    InnerWildcardLabel,
    /// An in-label `*` after a leading `*.` or `**.`.
    #[error("`*` inside a label cannot be combined with a leading `*.` or `**.`")]
    MixedWildcards,
    /// A `*` in the last label (`example.c*m`).
    #[error("`*` is not allowed in the top-level label")]
    WildcardTld,
    /// A glob label with a byte other than ASCII letters, digits, `-`, `_` and `*` (globs are
    /// not canonicalised, so they must already be canonical), or with `**` inside it.
    #[error("`*` inside a label only works with ASCII letters, digits, `-` and `_`")]
    GlobCharacters,
    /// `*.`, which stripping the trailing dot would silently turn into `*`.
    #[error("`*.` is not a pattern: write `*` for every host or `*.example.com` for subdomains")]
    DotWildcard,
    /// A wildcard in front of an IP address (`*.127.0.0.1`).
    #[error("wildcards apply to names, not IP addresses")]
    WildcardIp,
    /// The port after `:` is not 1 to 65535.
    #[error("invalid port: {0}")]
    Port(host::InvalidHost),
    /// The host does not canonicalise.
    #[error("invalid host: {0}")]
    Host(host::InvalidHost),
    /// Text with `/` that is not `address/prefix-length`.
    #[error("invalid CIDR: {0}")]
    Cidr(String),
    /// A CIDR with bits set after its prefix: probably not the range that was meant.
    #[error("CIDR `{given}` has host bits set; write `{network}`")]
    CidrHostBits {
        /// The CIDR as written.
        given: String,
        /// The network it truncates to.
        network: IpNet,
    },
    /// An http rule's method that is not an HTTP method token.
    #[error("not an HTTP method token (`GET`, `POST`, …)")]
    HttpMethod,
    /// An http rule's path that cannot be matched.
    #[error("invalid path: {0}")]
    HttpPath(crate::http_rules::PathError),
}

impl Pattern {
    /// Parses and normalises one pattern. `action` matters because some shapes (`*`,
    /// `*.com`) are only dangerous as allow rules.
    pub fn parse(text: &str, action: Action) -> Result<Pattern, PatternError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if let Some(i) = text.find("://") {
            let rest = &text[i + 3..];
            return Err(PatternError::Url(
                rest.split(['/', '?', '#'])
                    .next()
                    .unwrap_or(rest)
                    .to_string(),
            ));
        }
        if text.contains('?') || (text.contains('[') && !text.starts_with('[')) {
            return Err(PatternError::UnsupportedGlob);
        }
        if text.contains('/') {
            return parse_cidr(text);
        }
        if let Ok(ip) = text.parse::<std::net::Ipv6Addr>() {
            // Bare IPv6 is accepted in patterns (Codex writes `::1`), never in destinations.
            return Ok(Pattern {
                kind: PatternKind::Ip(IpAddr::V6(ip)),
                port: None,
            });
        }
        let (host_text, port) = split_port(text)?;
        let lower = host_text.to_ascii_lowercase();
        if lower == "*." {
            // Stripping the trailing dot would turn it into the global rule.
            return Err(PatternError::DotWildcard);
        }
        let host_text = lower.strip_suffix('.').unwrap_or(&lower);
        let port_kind = |kind| Ok(Pattern { kind, port });

        if host_text == "*" {
            return match action {
                Action::Allow => port_kind(PatternKind::Global),
                Action::Deny => Err(PatternError::GlobalDeny),
            };
        }
        let (wildcard, rest) = if let Some(rest) = host_text.strip_prefix("**.") {
            (Some(true), rest)
        } else if let Some(rest) = host_text.strip_prefix("*.") {
            (Some(false), rest)
        } else {
            (None, host_text)
        };
        if rest.split('.').any(|l| l == "*" || l == "**") {
            return Err(PatternError::InnerWildcardLabel);
        }
        if rest.contains('*') {
            if wildcard.is_some() {
                return Err(PatternError::MixedWildcards);
            }
            return port_kind(PatternKind::Glob(parse_glob(rest)?));
        }
        let name = match host::canonicalize(rest).map_err(PatternError::Host)? {
            Host::Ip(ip) if wildcard.is_none() => return port_kind(PatternKind::Ip(ip)),
            Host::Ip(_) => return Err(PatternError::WildcardIp),
            Host::Name(name) => name.into_owned(),
        };
        match wildcard {
            None => port_kind(PatternKind::Exact(name)),
            Some(_) if action == Action::Allow && !name.contains('.') => {
                Err(PatternError::TopLevelWildcard(host_text.to_string()))
            }
            Some(true) => port_kind(PatternKind::ApexAndSubdomains(name)),
            Some(false) => port_kind(PatternKind::Subdomains(name)),
        }
    }
}

/// Splits `host:port` and `[v6]:port`.
fn split_port(text: &str) -> Result<(&str, Option<u16>), PatternError> {
    let (host, port) = split_authority(text).map_err(PatternError::Host)?;
    let port = port
        .map(parse_port)
        .transpose()
        .map_err(PatternError::Port)?;
    Ok((host, port))
}

fn parse_cidr(text: &str) -> Result<Pattern, PatternError> {
    let net: IpNet = text
        .parse()
        .map_err(|_| PatternError::Cidr(format!("`{text}` is not an address/prefix-length")))?;
    if net.trunc() != net {
        return Err(PatternError::CidrHostBits {
            given: text.to_string(),
            network: net.trunc(),
        });
    }
    Ok(Pattern {
        kind: PatternKind::Cidr(unmap(net)),
        port: None,
    })
}

/// An IPv4-mapped range (`::ffff:127.0.0.0/104`) is another spelling of the IPv4 range it
/// maps, and destinations are matched in their IPv4 form, so it is compiled as that range.
fn unmap(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

fn parse_glob(rest: &str) -> Result<Vec<String>, PatternError> {
    let labels: Vec<&str> = rest.split('.').collect();
    if labels.last().is_some_and(|tld| tld.contains('*')) || labels.len() < 2 {
        return Err(PatternError::WildcardTld);
    }
    for label in &labels {
        if label.is_empty() {
            return Err(PatternError::Host(host::InvalidHost::EmptyLabel));
        }
        let ok = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*'));
        if !ok || label.contains("**") {
            return Err(PatternError::GlobCharacters);
        }
    }
    Ok(labels.into_iter().map(str::to_string).collect())
}

/// Whether `label` matches a glob label in which each `*` stands for any run of characters
/// within the label (never a dot: the caller compares label by label).
pub(crate) fn glob_label_matches(glob: &str, label: &str) -> bool {
    let mut parts = glob.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = label.strip_prefix(first) else {
        return false;
    };
    let mut parts = parts.peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            return rest.len() >= part.len() && rest.ends_with(part);
        }
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use PatternError as E;

    fn ok(text: &str, action: Action) -> String {
        Pattern::parse(text, action)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .to_string()
    }

    #[test]
    fn normalises_every_form() {
        let cases = [
            ("example.com", "example.com"),
            ("  Example.COM.  ", "example.com"),
            ("*.example.com", "*.example.com"),
            ("**.Example.com.", "**.example.com"),
            ("*", "*"),
            ("*:443", "*:443"),
            ("example.com:443", "example.com:443"),
            ("*.example.com:8443", "*.example.com:8443"),
            ("bücher.de", "xn--bcher-kva.de"),
            ("**.bücher.de", "**.xn--bcher-kva.de"),
            ("127.0.0.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("[::1]:8080", "[::1]:8080"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("10.1.0.0/16", "10.1.0.0/16"),
            ("fd00::/8", "fd00::/8"),
            ("::ffff:127.0.0.0/104", "127.0.0.0/8"),
            ("::ffff:10.1.2.3/128", "10.1.2.3/32"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
            ("::/80", "::/80"),
            ("::ffff:0:7f00:0/104", "::ffff:0:7f00:0/104"),
            ("api-*.example.com", "api-*.example.com"),
            ("*-aiplatform.example.com", "*-aiplatform.example.com"),
            ("a*b*c.example.com:443", "a*b*c.example.com:443"),
            ("localhost", "localhost"),
        ];
        for (input, want) in cases {
            assert_eq!(ok(input, Action::Allow), want, "{input}");
        }
    }

    #[test]
    fn classifies_kinds() {
        let p = Pattern::parse("**.example.com:443", Action::Allow).unwrap();
        assert_eq!(
            p,
            Pattern {
                kind: PatternKind::ApexAndSubdomains("example.com".into()),
                port: Some(443)
            }
        );
        let p = Pattern::parse("*.example.com", Action::Deny).unwrap();
        assert_eq!(p.kind, PatternKind::Subdomains("example.com".into()));
        let p = Pattern::parse("0x7f.1", Action::Allow).unwrap();
        assert_eq!(p.kind, PatternKind::Ip("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn rejects_bad_patterns_with_a_reason() {
        let cases: &[(&str, Action, PatternError)] = &[
            ("", Action::Allow, E::Empty),
            ("   ", Action::Allow, E::Empty),
            ("*", Action::Deny, E::GlobalDeny),
            ("*.", Action::Allow, E::DotWildcard),
            ("*.:443", Action::Allow, E::DotWildcard),
            (" *. ", Action::Deny, E::DotWildcard),
            ("*.com", Action::Allow, E::TopLevelWildcard("*.com".into())),
            (
                "**.com",
                Action::Allow,
                E::TopLevelWildcard("**.com".into()),
            ),
            ("api.*.com", Action::Allow, E::InnerWildcardLabel),
            ("api.*.com", Action::Deny, E::InnerWildcardLabel),
            ("*.*.example.com", Action::Allow, E::InnerWildcardLabel),
            ("example.**", Action::Allow, E::InnerWildcardLabel),
            ("exa?ple.com", Action::Allow, E::UnsupportedGlob),
            ("ex[ab]mple.com", Action::Allow, E::UnsupportedGlob),
            ("*.api-*.example.com", Action::Allow, E::MixedWildcards),
            ("example.c*m", Action::Allow, E::WildcardTld),
            ("a**b.example.com", Action::Allow, E::GlobCharacters),
            ("bü*.example.com", Action::Allow, E::GlobCharacters),
            ("*.127.0.0.1", Action::Allow, E::WildcardIp),
            ("**.[::1]", Action::Allow, E::UnsupportedGlob),
            (
                "https://example.com/path",
                Action::Allow,
                E::Url("example.com".into()),
            ),
            (
                "example.com:0",
                Action::Allow,
                E::Port(host::InvalidHost::BadPort),
            ),
            (
                "example.com:99999",
                Action::Allow,
                E::Port(host::InvalidHost::BadPort),
            ),
            (
                "example.com:https",
                Action::Allow,
                E::Port(host::InvalidHost::BadPort),
            ),
            (
                "exa mple.com",
                Action::Allow,
                E::Host(host::InvalidHost::ForbiddenChar),
            ),
            (
                "a..b",
                Action::Allow,
                E::Host(host::InvalidHost::EmptyLabel),
            ),
            (
                "user@example.com",
                Action::Allow,
                E::Host(host::InvalidHost::ForbiddenChar),
            ),
            (
                "1.2.3.4.5",
                Action::Allow,
                E::Host(host::InvalidHost::Unparseable),
            ),
            (
                "::g",
                Action::Allow,
                E::Host(host::InvalidHost::UnbracketedIpv6),
            ),
            (
                "10.0.0.0/33",
                Action::Allow,
                E::Cidr("`10.0.0.0/33` is not an address/prefix-length".into()),
            ),
            (
                "10.1.2.3/16",
                Action::Allow,
                E::CidrHostBits {
                    given: "10.1.2.3/16".into(),
                    network: "10.1.0.0/16".parse().unwrap(),
                },
            ),
        ];
        for (input, action, want) in cases {
            assert_eq!(
                Pattern::parse(input, *action).as_ref(),
                Err(want),
                "{input} as {action:?}"
            );
        }
        // Single-label wildcards are fine as deny rules: they only ever narrow.
        assert_eq!(ok("*.com", Action::Deny), "*.com");
        assert_eq!(ok("**.internal", Action::Deny), "**.internal");
    }

    #[test]
    fn glob_labels_stay_within_one_label() {
        let cases = [
            ("*-aiplatform", "us-aiplatform", true),
            ("*-aiplatform", "-aiplatform", true),
            ("*-aiplatform", "aiplatform", false),
            ("api-*", "api-v2", true),
            ("api-*", "api", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxcyyb", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("*", "anything", true),
            ("x*", "y", false),
        ];
        for (glob, label, want) in cases {
            assert_eq!(glob_label_matches(glob, label), want, "{glob} ~ {label}");
        }
    }
}

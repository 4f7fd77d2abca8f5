//! Host canonicalisation: the one function every listener, `check` and the pattern compiler use,
//! so that a host is compared in exactly one spelling.
//!
//! Parsing follows the WHATWG URL host parser (via the `url` crate): percent-decoding, UTS-46
//! mapping to punycode, lowercase, and every legacy IPv4 spelling (`127.1`, `0x7f.0.0.1`,
//! `2130706433`, `0177.0.0.1`) turned into the dotted quad. On top of WHATWG we are stricter,
//! because a proxy must never forward what it could not name: one trailing dot is stripped,
//! and empty labels, over-long labels or names, `@`, whitespace and control characters are
//! rejected. Plain lowercase LDH names (the common case) skip the WHATWG parser and are
//! borrowed, so canonicalising them allocates nothing.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

/// Why a host was rejected; rendered after "invalid host: ".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHost {
    #[error("empty host")]
    Empty,
    #[error("control character, whitespace or `@` in host")]
    ForbiddenChar,
    #[error("not a valid host name or IP address")]
    Unparseable,
    #[error("IPv6 address without brackets")]
    UnbracketedIpv6,
    #[error("empty label")]
    EmptyLabel,
    #[error("label longer than 63 octets")]
    LabelTooLong,
    #[error("name longer than 253 octets")]
    NameTooLong,
    #[error("missing port")]
    MissingPort,
    #[error("port must be 1-65535")]
    BadPort,
    #[error("unsupported URL scheme")]
    BadScheme,
    #[error("URL path or query has a character a request line cannot carry")]
    BadPath,
}

/// A canonical host: a lowercase ASCII name without trailing dot, or an IP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host<'a> {
    Name(Cow<'a, str>),
    Ip(IpAddr),
}

impl Host<'_> {
    pub fn into_owned(self) -> Host<'static> {
        match self {
            Host::Name(name) => Host::Name(Cow::Owned(name.into_owned())),
            Host::Ip(ip) => Host::Ip(ip),
        }
    }

    /// The host alone, as logs and JSON carry it: an IPv6 address without brackets.
    pub fn plain(&self) -> String {
        match self {
            Host::Name(name) => name.to_string(),
            Host::Ip(ip) => ip.to_string(),
        }
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// A canonical destination: host and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target<'a> {
    pub host: Host<'a>,
    pub port: u16,
}

impl<'a> Target<'a> {
    pub fn new(host: Host<'a>, port: u16) -> Self {
        Target { host, port }
    }

    /// Parses `host:port`, `[v6]:port`, or (with `default_port`) a bare `host` / `[v6]`,
    /// as found in a CONNECT request line, a Host header or a SOCKS domain name.
    pub fn parse_authority(input: &'a str, default_port: Option<u16>) -> Result<Self, InvalidHost> {
        let (host, port) = if input.starts_with('[') {
            split_authority(input)?
        } else {
            // The hot path: one reverse search. A second colon stays in the host, where
            // canonicalisation rejects it as unbracketed IPv6.
            // A byte loop: the port is a few bytes from the end, and memrchr's setup costs more
            // than the scan.
            match input.bytes().rposition(|b| b == b':') {
                Some(i) => (&input[..i], Some(&input[i + 1..])),
                None => (input, None),
            }
        };
        let host = canonicalize(host)?;
        let port = match port {
            Some(port) => parse_port(port)?,
            None => default_port.ok_or(InvalidHost::MissingPort)?,
        };
        Ok(Target { host, port })
    }

    /// Parses an absolute URL the way the HTTP listener sees one in a request line, so `check`
    /// and the listener can never disagree on a destination: the scheme up to `://`, the
    /// authority up to the first `/`, `?` or `#` (hyper's split), then
    /// [`Target::parse_url_authority`]. The path and query must be bytes hyper accepts in a
    /// request line.
    pub fn parse_url(input: &'a str) -> Result<(UrlScheme, Self), InvalidHost> {
        if input.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(InvalidHost::ForbiddenChar);
        }
        let (scheme, rest) = input.split_once("://").ok_or(InvalidHost::Unparseable)?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        check_path(path)?;
        Self::parse_url_authority(scheme, authority)
    }

    /// The destination of an absolute URL from its scheme and authority; the one function
    /// behind both the HTTP listener's absolute-form requests and `check URL`. The port
    /// defaults to the scheme's. Userinfo is ignored the way a browser ignores it, so
    /// `http://allowed.test@127.0.0.1/` is the destination 127.0.0.1; it must be RFC 3986
    /// userinfo (no `@`, `[` or `]`), so there is exactly one reading of where the host starts.
    /// The host and port allow only the characters RFC 3986 gives them (no percent-encoding,
    /// no non-ASCII), which is at least as strict as hyper's request-line parser.
    pub fn parse_url_authority(
        scheme: &str,
        authority: &'a str,
    ) -> Result<(UrlScheme, Self), InvalidHost> {
        let (kind, default_port) = UrlScheme::of(scheme)?;
        let host_port = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => {
                if !userinfo
                    .bytes()
                    .all(|b| URL_CLASS[usize::from(b)] & USERINFO != 0)
                {
                    return Err(InvalidHost::ForbiddenChar);
                }
                host_port
            }
            None => authority,
        };
        if !host_port
            .bytes()
            .all(|b| URL_CLASS[usize::from(b)] & HOST_PORT != 0)
        {
            return Err(InvalidHost::ForbiddenChar);
        }
        Ok((kind, Self::parse_authority(host_port, Some(default_port))?))
    }

    pub fn into_owned(self) -> Target<'static> {
        Target {
            host: self.host.into_owned(),
            port: self.port,
        }
    }
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// How a client reaches a URL's destination through this proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlScheme {
    /// `http://`: an absolute-form request that the HTTP listener forwards.
    Http,
    /// `https://`, `ws://`, `wss://`: clients tunnel these with CONNECT (for WebSocket,
    /// RFC 6455 section 4.1).
    Tunnel,
}

impl UrlScheme {
    /// The scheme's kind and default port; any other scheme is refused, as the listener
    /// refuses it.
    fn of(scheme: &str) -> Result<(UrlScheme, u16), InvalidHost> {
        let is = |name: &str| scheme.eq_ignore_ascii_case(name);
        if is("http") {
            Ok((UrlScheme::Http, 80))
        } else if is("https") || is("wss") {
            Ok((UrlScheme::Tunnel, 443))
        } else if is("ws") {
            Ok((UrlScheme::Tunnel, 80))
        } else {
            Err(InvalidHost::BadScheme)
        }
    }
}

/// A URL path and query (from the first `/`, `?` or `#` on) must be what hyper takes in a
/// request line: no `<` or `>`, no `` ` `` in the path, no `"` in the query. After `#`
/// anything printable goes.
fn check_path(path: &str) -> Result<(), InvalidHost> {
    let before_fragment = path.split('#').next().unwrap_or_default();
    let (path, query) = before_fragment
        .split_once('?')
        .unwrap_or((before_fragment, ""));
    let bad_path = path.bytes().any(|b| matches!(b, b'<' | b'>' | b'`'));
    let bad_query = query.bytes().any(|b| matches!(b, b'<' | b'>' | b'"'));
    if bad_path || bad_query {
        return Err(InvalidHost::BadPath);
    }
    Ok(())
}

const USERINFO: u8 = 1;
const HOST_PORT: u8 = 2;

/// RFC 3986 section 3.2: userinfo is unreserved, sub-delims, `:` and percent-encoding; host
/// and port are unreserved, sub-delims, `:` and the IPv6 brackets.
static URL_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let common = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
            );
        table[b] = if common {
            USERINFO | HOST_PORT
        } else if c == b'%' {
            USERINFO
        } else if c == b'[' || c == b']' {
            HOST_PORT
        } else {
            0
        };
        b += 1;
    }
    table
};

/// Splits an authority into host and optional port text without interpreting either.
pub(crate) fn split_authority(input: &str) -> Result<(&str, Option<&str>), InvalidHost> {
    if let Some(rest) = input.strip_prefix('[') {
        let end = rest.find(']').ok_or(InvalidHost::Unparseable)?;
        let host = &input[..end + 2];
        return match &rest[end + 1..] {
            "" => Ok((host, None)),
            tail => match tail.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(InvalidHost::Unparseable),
            },
        };
    }
    match input.rfind(':') {
        Some(i) if input[..i].contains(':') => Err(InvalidHost::UnbracketedIpv6),
        Some(i) => Ok((&input[..i], Some(&input[i + 1..]))),
        None => Ok((input, None)),
    }
}

pub(crate) fn parse_port(text: &str) -> Result<u16, InvalidHost> {
    if text.is_empty() || text.len() > 5 {
        return Err(InvalidHost::BadPort);
    }
    let mut port = 0u32;
    for b in text.bytes() {
        if !b.is_ascii_digit() {
            return Err(InvalidHost::BadPort);
        }
        port = port * 10 + u32::from(b - b'0');
    }
    match u16::try_from(port) {
        Ok(0) | Err(_) => Err(InvalidHost::BadPort),
        Ok(port) => Ok(port),
    }
}

/// Canonicalises a host (no port). IPv6 must be bracketed.
pub fn canonicalize(input: &str) -> Result<Host<'_>, InvalidHost> {
    if let Some(name) = fast_name(input) {
        return Ok(Host::Name(name));
    }
    if input.is_empty() {
        return Err(InvalidHost::Empty);
    }
    if input
        .bytes()
        .any(|b| b <= b' ' || b == 0x7f || b == b'@' || b == b'\\')
    {
        return Err(InvalidHost::ForbiddenChar);
    }
    if input.contains(':') && !input.starts_with('[') {
        return Err(InvalidHost::UnbracketedIpv6);
    }
    match url::Host::parse(input).map_err(|_| InvalidHost::Unparseable)? {
        url::Host::Ipv4(ip) => Ok(Host::Ip(IpAddr::V4(ip))),
        url::Host::Ipv6(ip) => Ok(Host::Ip(IpAddr::V6(ip))),
        url::Host::Domain(name) => Ok(Host::Name(check_name(Cow::Owned(name))?)),
    }
}

/// The canonical form of a name that WHATWG parsing could not change beyond case, checked in
/// a byte pass and a label pass: only ASCII letters, digits, `-`, `_` and dots, labels of 1 to
/// 63 octets, at most 253 octets, no punycode label (which needs IDNA validation), and a last
/// label that does not start with a digit (so it can never be read as an IPv4 number).
/// Anything else, valid or not, returns `None` and takes the full parser.
fn fast_name(input: &str) -> Option<Cow<'_, str>> {
    let bytes = input.as_bytes();
    let len = bytes.len() - usize::from(bytes.last() == Some(&b'.'));
    let name = &bytes[..len];
    if name.is_empty() || len > 253 {
        return None;
    }
    let classes = name
        .iter()
        .fold(0u8, |classes, &b| classes | BYTE_CLASS[usize::from(b)]);
    if classes & BAD != 0 {
        return None;
    }
    // Labels from the right, a word of bytes per step; the first is the last label.
    let mut end = name.len();
    let mut last = true;
    loop {
        let dot = last_dot(&name[..end]);
        let start = dot.map_or(0, |dot| dot + 1);
        let label = &name[start..end];
        let punycode = label.len() >= 4
            && label[2] == b'-'
            && label[3] == b'-'
            && label[..2].eq_ignore_ascii_case(b"xn");
        if label.is_empty() || label.len() > 63 || punycode || (last && label[0].is_ascii_digit()) {
            return None;
        }
        last = false;
        match dot {
            Some(dot) => end = dot,
            None => break,
        }
    }
    let name = &input[..len];
    Some(if classes & UPPER != 0 {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    })
}

/// The index of the last `.` in `bytes`, eight bytes per step: a walk over a host costs a few
/// instructions per word instead of per byte.
pub(crate) fn last_dot(bytes: &[u8]) -> Option<usize> {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const DOTS: u64 = 0x2e2e_2e2e_2e2e_2e2e;
    let mut end = bytes.len();
    while end >= 8 {
        let word = u64::from_le_bytes(bytes[end - 8..end].try_into().expect("8 bytes"));
        let x = word ^ DOTS;
        // The high bit of each byte of `zero` is set exactly where `x` has a zero byte (no
        // carry crosses a byte, so no false hits).
        let zero = !(((x & LOW7) + LOW7) | x | LOW7);
        if zero != 0 {
            return Some(end - 8 + (63 - zero.leading_zeros() as usize) / 8);
        }
        end -= 8;
    }
    bytes[..end].iter().rposition(|&b| b == b'.')
}

const LDH: u8 = 1;
const UPPER: u8 = 2;
const DOT: u8 = 4;
const BAD: u8 = 8;

/// What each byte is to the fast path: one table lookup instead of a chain of comparisons.
static BYTE_CLASS: [u8; 256] = {
    let mut table = [BAD; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_' {
            LDH
        } else if c.is_ascii_uppercase() {
            UPPER
        } else if c == b'.' {
            DOT
        } else {
            BAD
        };
        b += 1;
    }
    table
};

/// Applies the rules WHATWG leaves open: one trailing dot, no empty labels, DNS lengths.
fn check_name(name: Cow<'_, str>) -> Result<Cow<'_, str>, InvalidHost> {
    let len = name.strip_suffix('.').unwrap_or(&name).len();
    if len == 0 {
        return Err(InvalidHost::EmptyLabel);
    }
    if len > 253 {
        return Err(InvalidHost::NameTooLong);
    }
    // WHATWG lets `*`, `$`, `{` and friends through; no resolvable name contains them.
    if !name[..len]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(InvalidHost::ForbiddenChar);
    }
    for label in name[..len].split('.') {
        if label.is_empty() {
            return Err(InvalidHost::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(InvalidHost::LabelTooLong);
        }
    }
    Ok(match name {
        Cow::Borrowed(s) => Cow::Borrowed(&s[..len]),
        Cow::Owned(mut s) => {
            s.truncate(len);
            Cow::Owned(s)
        }
    })
}

/// `localhost` and its subdomains are loopback by definition (RFC 6761) and never go to DNS.
pub fn is_localhost(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn name(s: &str) -> Result<Host<'static>, InvalidHost> {
        Ok(Host::Name(Cow::Owned(s.to_string())))
    }
    fn v4(a: u8, b: u8, c: u8, d: u8) -> Result<Host<'static>, InvalidHost> {
        Ok(Host::Ip(IpAddr::V4(Ipv4Addr::new(a, b, c, d))))
    }
    fn v6(s: &str) -> Result<Host<'static>, InvalidHost> {
        Ok(Host::Ip(IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())))
    }

    #[test]
    fn canonicalises_the_odd_encodings_of_ssrf_write_ups() {
        use InvalidHost::*;
        let cases: &[(&str, Result<Host<'static>, InvalidHost>)] = &[
            // plain names, case, trailing dot
            ("example.com", name("example.com")),
            ("EXAMPLE.com", name("example.com")),
            ("example.com.", name("example.com")),
            ("Example.COM.", name("example.com")),
            ("under_score.example", name("under_score.example")),
            ("example.com..", Err(EmptyLabel)),
            ("a..b", Err(EmptyLabel)),
            (".example.com", Err(EmptyLabel)),
            (".", Err(EmptyLabel)),
            ("", Err(Empty)),
            // legacy IPv4 spellings of loopback
            ("127.0.0.1", v4(127, 0, 0, 1)),
            ("127.1", v4(127, 0, 0, 1)),
            ("127.0.1", v4(127, 0, 0, 1)),
            ("2130706433", v4(127, 0, 0, 1)),
            ("0x7f000001", v4(127, 0, 0, 1)),
            ("0x7f.0.0.1", v4(127, 0, 0, 1)),
            ("0X7F.0.0.1", v4(127, 0, 0, 1)),
            ("0177.0.0.1", v4(127, 0, 0, 1)),
            ("0177.0.0.01", v4(127, 0, 0, 1)),
            ("017700000001", v4(127, 0, 0, 1)),
            ("0x7f.1", v4(127, 0, 0, 1)),
            ("127.0.0.1.", v4(127, 0, 0, 1)),
            ("0", v4(0, 0, 0, 0)),
            ("0.0.0.0", v4(0, 0, 0, 0)),
            ("169.254.169.254", v4(169, 254, 169, 254)),
            ("0xa9fea9fe", v4(169, 254, 169, 254)),
            ("2852039166", v4(169, 254, 169, 254)),
            ("0251.0376.0251.0376", v4(169, 254, 169, 254)),
            ("10.0x1.0", v4(10, 1, 0, 0)),
            // percent-encoded forms decode before parsing
            ("127%2e0%2e0%2e1", v4(127, 0, 0, 1)),
            ("%31%32%37.0.0.1", v4(127, 0, 0, 1)),
            ("exa%6dple.com", name("example.com")),
            ("evil.com%00.example.com", Err(Unparseable)),
            ("evil.com%40example.com", Err(Unparseable)),
            // numeric last label that is not IPv4
            ("1.2.3.4.5", Err(Unparseable)),
            ("example.123", Err(Unparseable)),
            ("256.0.0.1", Err(Unparseable)),
            ("0x100000000", Err(Unparseable)),
            ("example.0x7f", Err(Unparseable)),
            ("1.2.3.08", Err(Unparseable)),
            // a digit-leading label that is not all digits is still a name
            ("example.1a", name("example.1a")),
            ("1password.com", name("1password.com")),
            // IPv6: brackets required, embedded IPv4 kept for the classifier
            ("[::1]", v6("::1")),
            ("[0:0:0:0:0:0:0:1]", v6("::1")),
            ("[::ffff:127.0.0.1]", v6("::ffff:7f00:1")),
            ("[::ffff:7f00:1]", v6("::ffff:7f00:1")),
            ("[::127.0.0.1]", v6("::7f00:1")),
            ("[64:ff9b::127.0.0.1]", v6("64:ff9b::7f00:1")),
            ("[2002:7f00:1::]", v6("2002:7f00:1::")),
            ("[FE80::1]", v6("fe80::1")),
            ("::1", Err(UnbracketedIpv6)),
            ("[fe80::1%25eth0]", Err(Unparseable)),
            ("[fe80::1%eth0]", Err(Unparseable)),
            ("[::1", Err(Unparseable)),
            ("[127.0.0.1]", Err(Unparseable)),
            // IDNA: UTS-46 mapping, homoglyphs and full-width dots
            ("bücher.de", name("xn--bcher-kva.de")),
            ("BÜCHER.de", name("xn--bcher-kva.de")),
            ("xn--bcher-kva.de", name("xn--bcher-kva.de")),
            ("ｅｘａｍｐｌｅ.com", name("example.com")),
            ("example。com", name("example.com")),
            ("example．com", name("example.com")),
            ("example｡com", name("example.com")),
            ("１２７.０.０.１", v4(127, 0, 0, 1)),
            ("ex\u{ad}ample.com", name("example.com")),
            ("аpple.com", name("xn--pple-43d.com")),
            ("xn--zz.com", Err(Unparseable)),
            ("ⓔⓧⓐⓜⓟⓛⓔ.com", name("example.com")),
            // forbidden characters and userinfo tricks
            ("allowed.test@127.0.0.1", Err(ForbiddenChar)),
            ("exa mple.com", Err(ForbiddenChar)),
            ("example.com\r\nx", Err(ForbiddenChar)),
            ("example.com\0", Err(ForbiddenChar)),
            ("example.com\t", Err(ForbiddenChar)),
            ("example.com\\@evil", Err(ForbiddenChar)),
            ("exa#mple.com", Err(Unparseable)),
            ("exa/mple.com", Err(Unparseable)),
            ("exa?mple.com", Err(Unparseable)),
            ("example.com:80", Err(UnbracketedIpv6)),
            ("a:b:c", Err(UnbracketedIpv6)),
            ("*.example.com", Err(ForbiddenChar)),
            ("exa$mple.com", Err(ForbiddenChar)),
            ("exa{mple}.com", Err(ForbiddenChar)),
        ];
        for (input, want) in cases {
            assert_eq!(
                &canonicalize(input).map(Host::into_owned),
                want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn enforces_dns_lengths() {
        let label63 = "a".repeat(63);
        let label64 = "a".repeat(64);
        assert!(canonicalize(&format!("{label63}.com")).is_ok());
        assert_eq!(
            canonicalize(&format!("{label64}.com")),
            Err(InvalidHost::LabelTooLong)
        );
        // 253 octets is the longest name; one more is rejected, with or without trailing dot.
        let name253 = format!("{0}.{0}.{0}.{1}", label63, "a".repeat(61));
        assert_eq!(name253.len(), 253);
        assert!(canonicalize(&name253).is_ok());
        assert!(canonicalize(&format!("{name253}.")).is_ok());
        assert_eq!(
            canonicalize(&format!("a{name253}")),
            Err(InvalidHost::NameTooLong)
        );
    }

    #[test]
    fn plain_lowercase_names_are_borrowed() {
        assert!(matches!(
            canonicalize("api.github.com"),
            Ok(Host::Name(Cow::Borrowed("api.github.com")))
        ));
        assert!(matches!(
            canonicalize("api.github.com."),
            Ok(Host::Name(Cow::Borrowed("api.github.com")))
        ));
    }

    #[test]
    fn fast_path_agrees_with_the_whatwg_parser() {
        for input in [
            "example.com",
            "EXAMPLE.COM",
            "a-b_c.d-e.example",
            "x.y.z.",
            "1a.b2.c3d",
            "abc.d1",
            "-lead.example",
            "trail-.example",
        ] {
            let fast =
                check_name(fast_name(input).expect("fast path applies")).map(Cow::into_owned);
            let slow = match url::Host::parse(input).unwrap() {
                url::Host::Domain(d) => check_name(Cow::Owned(d)).map(Cow::into_owned),
                other => panic!("{input}: {other:?}"),
            };
            assert_eq!(fast, slow, "{input}");
        }
        for input in [
            "127.1",
            "a.0x10",
            "xn--bcher-kva.de",
            "a.XN--bcher-kva",
            "a.9",
        ] {
            assert!(
                fast_name(input).is_none(),
                "{input} must take the slow path"
            );
        }
    }

    #[test]
    fn last_dot_agrees_with_a_byte_search() {
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for len in 0..40 {
            for dot in 0..=len {
                let mut v = vec![b'a'; len];
                if dot < len {
                    v[dot] = b'.';
                }
                inputs.push(v.clone());
                // Neighbours of '.' (0x2e) that a borrowing zero-byte test would mistake for it.
                for odd in [b'/', b'-', 0x2f, 0x6e, 0xae, 0x00, 0xff] {
                    let mut w = v.clone();
                    if dot + 1 < len {
                        w[dot + 1] = odd;
                    }
                    inputs.push(w);
                }
            }
        }
        inputs.push(b"a.b.c.d.e.f.g.h.i.j.k".to_vec());
        for input in inputs {
            let want = input.iter().rposition(|&b| b == b'.');
            assert_eq!(
                last_dot(&input),
                want,
                "{:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
    #[test]
    fn parses_authorities() {
        let t = Target::parse_authority("Example.com:443", None).unwrap();
        assert_eq!(t.to_string(), "example.com:443");
        let t = Target::parse_authority("[::1]:8080", None).unwrap();
        assert_eq!(t.to_string(), "[::1]:8080");
        let t = Target::parse_authority("[::1]", Some(80)).unwrap();
        assert_eq!(t.to_string(), "[::1]:80");
        let t = Target::parse_authority("127.1:22", None).unwrap();
        assert_eq!(t.to_string(), "127.0.0.1:22");
        let t = Target::parse_authority("example.com", Some(80)).unwrap();
        assert_eq!(t.port, 80);
        use InvalidHost::*;
        for (input, err) in [
            ("example.com", MissingPort),
            ("example.com:", BadPort),
            ("example.com:0", BadPort),
            ("example.com:65536", BadPort),
            ("example.com:+80", BadPort),
            ("example.com:080x", BadPort),
            ("example.com:000443", BadPort),
            ("::1:80", UnbracketedIpv6),
            ("fe80::1", UnbracketedIpv6),
            ("example.com:80:80", UnbracketedIpv6),
            ("::ffff:127.0.0.1:443", UnbracketedIpv6),
            ("[::1]x", Unparseable),
            ("[::1]:", BadPort),
            (":80", Empty),
            ("user@example.com:80", ForbiddenChar),
        ] {
            assert_eq!(Target::parse_authority(input, None), Err(err), "{input}");
        }
    }

    #[test]
    fn parses_urls_the_way_a_client_would() {
        use UrlScheme::{Http, Tunnel};
        let cases = [
            ("http://example.com/x?y", Http, "example.com:80"),
            ("https://example.com", Tunnel, "example.com:443"),
            ("https://example.com:8443/", Tunnel, "example.com:8443"),
            ("http://allowed.test@127.0.0.1/", Http, "127.0.0.1:80"),
            ("http://allowed.test:pw@127.1:8080/", Http, "127.0.0.1:8080"),
            ("http://a%40b:p%3Aw@127.1/", Http, "127.0.0.1:80"),
            ("http://@example.com/", Http, "example.com:80"),
            ("http://127.0.0.1#@allowed.test/", Http, "127.0.0.1:80"),
            ("http://127.0.0.1?@allowed.test/", Http, "127.0.0.1:80"),
            ("http://[::ffff:127.0.0.1]/", Http, "[::ffff:127.0.0.1]:80"),
            ("http://[::1]:8080", Http, "[::1]:8080"),
            ("http://0x7f.1/", Http, "127.0.0.1:80"),
            ("HTTP://EXAMPLE.COM./", Http, "example.com:80"),
            ("ws://example.com/", Tunnel, "example.com:80"),
            ("WSS://example.com/", Tunnel, "example.com:443"),
            (
                "http://example.com/a\\b^{}\"|?{}`#<>\"",
                Http,
                "example.com:80",
            ),
        ];
        for (input, scheme, want) in cases {
            let (got_scheme, target) = Target::parse_url(input).unwrap();
            assert_eq!(
                (got_scheme, target.to_string().as_str()),
                (scheme, want),
                "{input}"
            );
        }
        use InvalidHost::*;
        for (input, err) in [
            ("file:///etc/passwd", BadScheme),
            ("ftp://example.com/", BadScheme),
            ("gopher://example.com/", BadScheme),
            ("example.com/", Unparseable),
            ("http:///path", Empty),
            ("http://", Empty),
            ("https://", Empty),
            ("http://:80/", Empty),
            ("http://a@/", Empty),
            ("http://host:/", BadPort),
            ("http://host:0/", BadPort),
            ("http://host:65536/", BadPort),
            ("http://host:80:80/", UnbracketedIpv6),
            ("http://::1/", UnbracketedIpv6),
            ("http://[::1/", Unparseable),
            ("http://exa mple.com/", ForbiddenChar),
            ("http://exa%6dple.com/", ForbiddenChar),
            ("http://bücher.de/", ForbiddenChar),
            ("http://a\\b/", ForbiddenChar),
            ("http://a@b@c/", ForbiddenChar),
            ("http://[x]@c/", ForbiddenChar),
            ("http://a\"b/", ForbiddenChar),
            ("http://example.com/<", BadPath),
            ("http://example.com/`", BadPath),
            ("http://example.com/?\"", BadPath),
        ] {
            assert_eq!(Target::parse_url(input), Err(err), "{input}");
        }
    }

    #[test]
    fn localhost_names() {
        assert!(is_localhost("localhost"));
        assert!(is_localhost("app.localhost"));
        assert!(!is_localhost("localhost.example.com"));
        assert!(!is_localhost("notlocalhost"));
    }
}

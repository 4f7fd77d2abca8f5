//! Destinations as clients spell them: `host:port` authorities (CONNECT, Host headers, SOCKS5
//! domain names) and absolute URLs (plain-HTTP request lines, `check URL`), parsed into a
//! canonical [`Target`]. The host goes through [`crate::host::canonicalize`]; this module owns
//! everything around it (brackets, ports, schemes, userinfo), so the listeners and `check`
//! share one reading of where a host starts and ends.

use std::fmt;

use crate::host::{canonicalize, Host, InvalidHost};

/// A canonical destination: host and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target<'a> {
    /// The canonical host.
    pub host: Host<'a>,
    /// The port, 1 to 65535.
    pub port: u16,
}

impl<'a> Target<'a> {
    /// A destination from a host that is already canonical (a SOCKS5 address, a dialled IP).
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

    /// The same destination, independent of the input it was parsed from.
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

/// A port as RFC 3986 writes it, but at most five digits and never 0: `+80`, `080x` and
/// `000443` are refused, so one port has one spelling.
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

#[cfg(test)]
mod tests;

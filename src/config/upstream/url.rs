//! Upstream proxy URLs as curl reads them: `[scheme://][user[:password]@]host[:port][/]`.

use std::fmt;

use percent_encoding::percent_decode_str;

use crate::policy::{Host, Target};

/// How the proxy talks to an upstream proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// `http://`: CONNECT for tunnels, absolute-form requests for plain HTTP.
    Http,
    /// `https://`: the same over TLS to the proxy.
    Https,
    /// `socks5://`: SOCKS5 CONNECT to the address the proxy checked (curl's meaning: the
    /// client resolves).
    Socks5,
    /// `socks5h://`: SOCKS5 CONNECT to the name, which the upstream resolves.
    Socks5h,
}

impl ProxyKind {
    fn of(scheme: &str) -> Option<ProxyKind> {
        match scheme.to_ascii_lowercase().as_str() {
            "http" => Some(ProxyKind::Http),
            "https" => Some(ProxyKind::Https),
            "socks5" => Some(ProxyKind::Socks5),
            "socks5h" => Some(ProxyKind::Socks5h),
            _ => None,
        }
    }

    /// The scheme, as URLs, metrics and logs write it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Http => "http",
            ProxyKind::Https => "https",
            ProxyKind::Socks5 => "socks5",
            ProxyKind::Socks5h => "socks5h",
        }
    }

    /// curl's default proxy ports: 443 for an HTTPS proxy, 1080 for every other kind.
    pub fn default_port(self) -> u16 {
        match self {
            ProxyKind::Https => 443,
            _ => 1080,
        }
    }

    /// Whether the upstream is asked for names (all but `socks5://`, which takes addresses).
    pub fn takes_names(self) -> bool {
        self != ProxyKind::Socks5
    }

    /// A SOCKS5 proxy (else an HTTP one).
    pub fn is_socks(self) -> bool {
        matches!(self, ProxyKind::Socks5 | ProxyKind::Socks5h)
    }
}

/// A user name and password, percent-decoded. Never shown: `Debug` and the URL's `Display`
/// print `***` for the password.
#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    /// The user name as written (percent-encoded), for display.
    written_user: String,
    user: String,
    password: String,
}

/// An upstream proxy's URL. Its `Display` and `Debug` show `user:***@` in place of the
/// credentials, so it can be logged and served by `/config` as it is.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// The kind of proxy (the scheme).
    pub kind: ProxyKind,
    /// Its host, canonical.
    pub host: Host<'static>,
    /// Its port (curl's default when none is written).
    pub port: u16,
    credentials: Option<Credentials>,
}

impl ProxyUrl {
    /// Parses a proxy URL. Without a scheme it is `http://`, as curl reads `HTTPS_PROXY=h:3128`.
    /// The path may only be `/`. Errors never quote the credentials.
    pub fn parse(text: &str) -> Result<ProxyUrl, String> {
        let text = text.trim();
        let (scheme, rest) = text.split_once("://").unwrap_or(("http", text));
        let kind = ProxyKind::of(scheme).ok_or_else(|| {
            format!(
                "unsupported proxy scheme `{}://` (expected http://, https://, socks5:// or socks5h://)",
                scheme.escape_debug()
            )
        })?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if !tail.is_empty() && tail != "/" {
            return Err("a proxy URL has no path, query or fragment".to_string());
        }
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let target = Target::parse_authority(host_port, Some(kind.default_port()))
            .map_err(|e| format!("invalid proxy host `{}`: {e}", host_port.escape_debug()))?;
        let credentials = match userinfo {
            Some(userinfo) if !userinfo.is_empty() => Some(Credentials::parse(userinfo, kind)?),
            _ => None,
        };
        Ok(ProxyUrl {
            kind,
            host: target.host.into_owned(),
            port: target.port,
            credentials,
        })
    }

    /// The decoded user name and password, if the URL has them.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|c| (c.user.as_str(), c.password.as_str()))
    }

    /// `host:port` (an IPv6 host in brackets): what the TCP connection goes to.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl Credentials {
    fn parse(userinfo: &str, kind: ProxyKind) -> Result<Credentials, String> {
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let decode = |part: &str, what: &str| {
            percent_decode_str(part)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| format!("the proxy {what} is not UTF-8 once percent-decoded"))
        };
        let credentials = Credentials {
            written_user: user.to_string(),
            user: decode(user, "user name")?,
            password: decode(password, "password")?,
        };
        // RFC 1929 gives each a one-byte length.
        if kind.is_socks() && (credentials.user.len() > 255 || credentials.password.len() > 255) {
            return Err("SOCKS5 user names and passwords are at most 255 bytes".to_string());
        }
        Ok(credentials)
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.kind.as_str())?;
        if let Some(credentials) = &self.credentials {
            write!(f, "{}:***@", credentials.written_user)?;
        }
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_curl_reads_them() {
        let ok = [
            ("http://corp.test:8080", "http://corp.test:8080"),
            ("corp.test:3128", "http://corp.test:3128"),
            ("HTTP://Corp.Test:3128/", "http://corp.test:3128"),
            ("http://corp.test", "http://corp.test:1080"),
            ("https://corp.test", "https://corp.test:443"),
            ("socks5://127.0.0.1", "socks5://127.0.0.1:1080"),
            ("socks5h://[::1]:1081", "socks5h://[::1]:1081"),
            (
                "http://me:s3cret@corp.test:8080",
                "http://me:***@corp.test:8080",
            ),
            (
                "http://me%40corp:p%3Aw@corp.test:1",
                "http://me%40corp:***@corp.test:1",
            ),
            ("http://me@corp.test:1", "http://me:***@corp.test:1"),
            ("http://@corp.test:1", "http://corp.test:1"),
            ("  http://127.1:9  ", "http://127.0.0.1:9"),
        ];
        for (text, shown) in ok {
            let url = ProxyUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(url.to_string(), shown, "{text}");
            assert_eq!(format!("{url:?}"), shown, "{text}");
        }
        let url = ProxyUrl::parse("http://me%40corp:p%3Aw%25@corp.test:1").unwrap();
        assert_eq!(url.credentials(), Some(("me@corp", "p:w%")));
        assert_eq!(url.authority(), "corp.test:1");
        let bad = [
            ("socks4://corp.test:1", "unsupported proxy scheme `socks4://` (expected http://, https://, socks5:// or socks5h://)"),
            ("ftp://u:hunter2@corp.test:1", "unsupported proxy scheme `ftp://` (expected http://, https://, socks5:// or socks5h://)"),
            ("http://corp.test:1/path", "a proxy URL has no path, query or fragment"),
            ("http://u:hunter2@corp.test:0", "invalid proxy host `corp.test:0`: port must be 1-65535"),
            ("http://u:hunter2@bad host:1", "invalid proxy host `bad host:1`: control character, whitespace or `@` in host"),
            ("http://", "invalid proxy host ``: empty host"),
            ("http://u:%ff@corp.test:1", "the proxy password is not UTF-8 once percent-decoded"),
        ];
        for (text, want) in bad {
            let err = ProxyUrl::parse(text).unwrap_err();
            assert_eq!(err, want, "{text}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let long = format!("socks5://{}:pw@corp.test:1", "u".repeat(256));
        assert_eq!(
            ProxyUrl::parse(&long).unwrap_err(),
            "SOCKS5 user names and passwords are at most 255 bytes"
        );
        assert!(ProxyUrl::parse(&long.replace("socks5", "http")).is_ok());
    }

    #[test]
    fn kinds() {
        for (kind, names, socks) in [
            (ProxyKind::Http, true, false),
            (ProxyKind::Https, true, false),
            (ProxyKind::Socks5, false, true),
            (ProxyKind::Socks5h, true, true),
        ] {
            assert_eq!(kind.takes_names(), names, "{kind:?}");
            assert_eq!(kind.is_socks(), socks, "{kind:?}");
            assert_eq!(ProxyKind::of(kind.as_str()), Some(kind));
        }
    }
}

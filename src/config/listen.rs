//! Listener URLs and DNS server addresses as written in configuration.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Which listener a URL configures: decides the accepted schemes and names the key in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Listener {
    Proxy,
    Socks,
    Admin,
}

impl Listener {
    pub(super) fn key(self) -> &'static str {
        match self {
            Listener::Proxy => "proxy_url",
            Listener::Socks => "socks_url",
            Listener::Admin => "admin_url",
        }
    }

    /// The key that permits a non-loopback address for this listener.
    pub(super) fn dangerous_key(self) -> &'static str {
        match self {
            Listener::Proxy | Listener::Socks => "dangerously_allow_non_loopback_proxy",
            Listener::Admin => "dangerously_allow_non_loopback_admin",
        }
    }

    /// The documented defaults (Codex's), all on loopback.
    pub(super) fn default_addr(self) -> SocketAddr {
        let port = match self {
            Listener::Proxy => 3128,
            Listener::Socks => 8081,
            Listener::Admin => 8080,
        };
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    }

    fn schemes(self) -> &'static [&'static str] {
        match self {
            Listener::Socks => &["http", "socks5", "socks5h"],
            Listener::Proxy | Listener::Admin => &["http"],
        }
    }
}

/// Parses a listener URL into the address to bind, as loosely as Codex's parser does: the
/// scheme may be left out (`127.0.0.1:8080`, `localhost:3128`) and so may the port
/// (`http://127.0.0.1`, bare `::1`), which is then the listener's documented default. The host
/// must be an IP literal or `localhost`: a name would need DNS before the proxy can even
/// listen, and could resolve to something other than what the reader of the file expects.
pub(super) fn parse_listen_url(listener: Listener, url: &str) -> Result<SocketAddr, String> {
    let key = listener.key();
    let rest = match url.split_once("://") {
        Some((scheme, rest)) => {
            check_scheme(listener, scheme)?;
            rest
        }
        None => url,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "`{key}` must be only a scheme, a host and a port, got `{url}`"
        ));
    }
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = split_host_port(authority);
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else if host.is_empty() {
        return Err(format!(
            "`{key}` has no host: `{url}` (write e.g. `http://127.0.0.1:3128`)"
        ));
    } else {
        host.parse::<IpAddr>().map_err(|_| {
            format!("`{key}` host must be an IP address or `localhost`, got `{host}`")
        })?
    };
    let port = match port {
        None | Some("") => listener.default_addr().port(),
        Some(port) => port
            .parse::<u16>()
            .map_err(|_| format!("`{key}` has an invalid port `{port}`"))?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// The listener's accepted schemes, case-insensitively.
fn check_scheme(listener: Listener, scheme: &str) -> Result<(), String> {
    let schemes = listener.schemes();
    if schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return Ok(());
    }
    let accepted = schemes
        .iter()
        .map(|s| format!("`{s}://`"))
        .collect::<Vec<_>>()
        .join(" or ");
    Err(format!(
        "`{}` must use {accepted}, got `{scheme}://`",
        listener.key()
    ))
}

/// Splits `host[:port]`, where an IPv6 host is bracketed; an unbracketed IPv6 literal is
/// all host (so it gets the default port rather than being misread).
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            return (host, Some(after.strip_prefix(':').unwrap_or(after)));
        }
    }
    if authority.parse::<IpAddr>().is_ok() {
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

/// Parses a nameserver: `IP`, `IP:PORT` or `[IPv6]:PORT`; port 53 when none is given.
pub(crate) fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    text.parse::<SocketAddr>()
        .or_else(|_| bare.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| {
            format!("invalid DNS server `{text}` (expected `IP`, `IP:PORT` or `[IPv6]:PORT`)")
        })
}

/// Loopback including IPv4-mapped loopback (`::ffff:127.0.0.1`).
pub(super) fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_urls() {
        let ok = [
            (Listener::Proxy, "http://127.0.0.1:3128", "127.0.0.1:3128"),
            (Listener::Proxy, "HTTP://127.0.0.1:3128/", "127.0.0.1:3128"),
            (Listener::Proxy, "http://localhost:0", "127.0.0.1:0"),
            (Listener::Proxy, "http://[::1]:8080", "[::1]:8080"),
            (Listener::Proxy, "http://0.0.0.0:3128", "0.0.0.0:3128"),
            (Listener::Socks, "socks5://127.0.0.1:1080", "127.0.0.1:1080"),
            (
                Listener::Socks,
                "socks5h://localhost:1080",
                "127.0.0.1:1080",
            ),
            (Listener::Socks, "http://127.0.0.1:8081", "127.0.0.1:8081"),
            (Listener::Admin, "http://127.0.0.2:9", "127.0.0.2:9"),
            // Codex's parser accepts a missing scheme and a missing port (the default).
            (Listener::Proxy, "127.0.0.1:8080", "127.0.0.1:8080"),
            (Listener::Proxy, "localhost:3128", "127.0.0.1:3128"),
            (Listener::Proxy, "http://127.0.0.1", "127.0.0.1:3128"),
            (Listener::Proxy, "127.0.0.1", "127.0.0.1:3128"),
            (Listener::Proxy, "http://localhost:", "127.0.0.1:3128"),
            (Listener::Proxy, "http://::1", "[::1]:3128"),
            (Listener::Proxy, "::1", "[::1]:3128"),
            (Listener::Proxy, "[::1]:9", "[::1]:9"),
            (Listener::Socks, "socks5://[::1]", "[::1]:8081"),
            (Listener::Socks, "localhost", "127.0.0.1:8081"),
            (Listener::Socks, "127.0.0.1:1080", "127.0.0.1:1080"),
            (Listener::Admin, "localhost", "127.0.0.1:8080"),
            (Listener::Admin, "http://127.0.0.1/", "127.0.0.1:8080"),
        ];
        for (listener, url, want) in ok {
            assert_eq!(
                parse_listen_url(listener, url),
                Ok(want.parse().unwrap()),
                "{url}"
            );
        }
        let bad = [
            (Listener::Proxy, "https://127.0.0.1:3128", "`proxy_url` must use `http://`, got `https://`"),
            (Listener::Admin, "socks5://127.0.0.1:1", "`admin_url` must use `http://`, got `socks5://`"),
            (Listener::Socks, "ftp://127.0.0.1:1", "`socks_url` must use `http://` or `socks5://` or `socks5h://`, got `ftp://`"),
            (Listener::Proxy, "http://", "`proxy_url` has no host: `http://` (write e.g. `http://127.0.0.1:3128`)"),
            (Listener::Proxy, ":3128", "`proxy_url` has no host: `:3128` (write e.g. `http://127.0.0.1:3128`)"),
            (Listener::Proxy, "http://example.com:80", "`proxy_url` host must be an IP address or `localhost`, got `example.com`"),
            (Listener::Proxy, "proxy.internal:3128", "`proxy_url` host must be an IP address or `localhost`, got `proxy.internal`"),
            (Listener::Socks, "proxy.internal", "`socks_url` host must be an IP address or `localhost`, got `proxy.internal`"),
            (Listener::Proxy, "localhost.:3128", "`proxy_url` host must be an IP address or `localhost`, got `localhost.`"),
            (Listener::Proxy, "http://127.0.0.1:99999", "`proxy_url` has an invalid port `99999`"),
            (Listener::Proxy, "127.0.0.1:http", "`proxy_url` has an invalid port `http`"),
            (Listener::Proxy, "http://127.0.0.1:3128/path", "`proxy_url` must be only a scheme, a host and a port, got `http://127.0.0.1:3128/path`"),
            (Listener::Proxy, "http://u@127.0.0.1:1", "`proxy_url` must be only a scheme, a host and a port, got `http://u@127.0.0.1:1`"),
            (Listener::Proxy, "u@localhost", "`proxy_url` must be only a scheme, a host and a port, got `u@localhost`"),
        ];
        for (listener, url, want) in bad {
            assert_eq!(
                parse_listen_url(listener, url),
                Err(want.to_string()),
                "{url}"
            );
        }
    }

    #[test]
    fn dns_servers() {
        let ok = [
            ("10.0.0.1", "10.0.0.1:53"),
            ("127.0.0.1:5353", "127.0.0.1:5353"),
            ("[::1]:53", "[::1]:53"),
            ("[::1]", "[::1]:53"),
            ("::1", "[::1]:53"),
        ];
        for (text, want) in ok {
            assert_eq!(parse_dns_server(text), Ok(want.parse().unwrap()), "{text}");
        }
        assert_eq!(
            parse_dns_server("dns.google"),
            Err(
                "invalid DNS server `dns.google` (expected `IP`, `IP:PORT` or `[IPv6]:PORT`)"
                    .to_string()
            )
        );
    }

    #[test]
    fn loopback_includes_mapped_v4() {
        for (ip, want) in [
            ("127.0.0.1", true),
            ("127.9.9.9", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("0.0.0.0", false),
            ("::", false),
            ("10.0.0.1", false),
        ] {
            assert_eq!(is_loopback(ip.parse().unwrap()), want, "{ip}");
        }
    }
}

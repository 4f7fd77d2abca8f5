//! Connections through an upstream proxy (`[upstream]` or the proxy's environment).
//!
//! The policy has decided every destination before anything is sent here (see
//! [`crate::net::route`]); this module only talks to the upstream. Its own address is
//! configuration, not a destination: it is never classified (a loopback upstream needs no
//! `allow_local_binding`), and a name is resolved with the system's configuration
//! (`/etc/resolv.conf` with its search domains, `/etc/hosts`), as curl would, not with
//! `[dns] servers`, which judge destinations. Not with `getaddrinfo`: the release binary is
//! statically linked, and a static glibc that loads an NSS module of the host's own glibc
//! (`resolve`, `mdns` in `nsswitch.conf`) can crash.
//! One that resolves to one of this proxy's own listeners is refused: it would loop.
//!
//! What the upstream is asked for: `http://` and `https://` get `CONNECT host:port` with the
//! destination as the client wrote it (canonical), so the upstream's ACLs and SNI see the name;
//! `socks5h://` gets the name; `socks5://` gets the address checked here (curl's meaning of
//! the two schemes). Credentials in the URL become `Proxy-Authorization: Basic` or RFC 1929.

mod http;
mod socks;
mod stream;
mod tls;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hyper::header::HeaderValue;
use tokio::net::TcpStream;

use crate::audit::Protocol;
use crate::config::{NoProxy, ProxyKind, ProxyUrl, ResolveAt, UpstreamConfig};
use crate::dns::Resolver;
use crate::gate::Checked;
use crate::policy::{Host, Target};

pub use stream::Stream;
pub use tls::SetupError;

/// What an upstream answered when it did not open the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP status to CONNECT (or, for a forwarded request, 407).
    Http(u16),
    /// An RFC 1928 reply code.
    Socks(u8),
    /// SOCKS5: none of the authentication methods offered is acceptable.
    SocksNoMethod,
    /// SOCKS5: the RFC 1929 user name and password were rejected.
    SocksPassword,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Http(status) => write!(f, "HTTP {status}"),
            Answer::Socks(code) => write!(f, "SOCKS5 reply {code:#04x}"),
            Answer::SocksNoMethod => f.write_str("SOCKS5: no acceptable authentication method"),
            Answer::SocksPassword => f.write_str("SOCKS5: user name and password rejected"),
        }
    }
}

/// Why a connection through the upstream failed. `proxy` is the upstream's URL without its
/// password; the respond table maps each variant to `upstream-*` reason codes.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No TCP connection to the upstream itself.
    #[error("cannot reach the upstream proxy {proxy}: {source}")]
    Unreachable { proxy: Arc<str>, source: io::Error },
    /// The upstream's name resolves to one of this proxy's own listeners.
    #[error("the upstream proxy {proxy} is this proxy itself ({addr})")]
    Loop { proxy: Arc<str>, addr: SocketAddr },
    /// Connecting, TLS and the handshake took longer than `connect_timeout_ms`.
    #[error("the upstream proxy {proxy} did not open the connection within {} ms", .after.as_millis())]
    Timeout { proxy: Arc<str>, after: Duration },
    /// The TLS handshake with an `https://` upstream failed (its certificate, most often).
    #[error("TLS with the upstream proxy {proxy} failed: {source}")]
    Tls { proxy: Arc<str>, source: io::Error },
    /// The upstream wants (other) credentials.
    #[error("the upstream proxy {proxy} refused the credentials ({answer})")]
    Auth { proxy: Arc<str>, answer: Answer },
    /// The upstream would not open the tunnel.
    #[error("the upstream proxy {proxy} refused: {answer}")]
    Refused { proxy: Arc<str>, answer: Answer },
    /// The upstream broke off or answered something unreadable.
    #[error("the upstream proxy {proxy} broke off the handshake: {detail}")]
    Broken { proxy: Arc<str>, detail: String },
}

impl UpstreamError {
    /// The `result` label of `egress_upstream_connects_total`.
    fn result(&self) -> &'static str {
        match self {
            UpstreamError::Unreachable { .. }
            | UpstreamError::Loop { .. }
            | UpstreamError::Timeout { .. } => "unreachable",
            UpstreamError::Tls { .. } => "tls",
            UpstreamError::Auth { .. } => "auth",
            UpstreamError::Refused { .. } | UpstreamError::Broken { .. } => "refused",
        }
    }
}

/// One upstream proxy, ready to dial.
pub struct Proxy {
    url: ProxyUrl,
    /// The URL without its password: what logs, audit lines and errors name.
    label: Arc<str>,
    resolve: ResolveAt,
    tls: Option<tokio_rustls::TlsConnector>,
    /// `Basic …`, marked sensitive so no debug output shows it.
    authorization: Option<HeaderValue>,
    /// The proxy's own listeners.
    own: Arc<[SocketAddr]>,
    /// Resolves the upstream's name; `None` when it is an address.
    resolver: Option<Resolver>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Proxy").field(&self.label).finish()
    }
}

/// A tunnel through the upstream: the stream, and what the upstream sent after its answer.
pub struct Connected {
    pub stream: Stream,
    pub early: Vec<u8>,
}

impl Proxy {
    pub fn kind(&self) -> ProxyKind {
        self.url.kind
    }

    /// The URL without its password.
    pub fn label(&self) -> &Arc<str> {
        &self.label
    }

    /// Whether destination names are left to the upstream (`resolve = "upstream"`).
    pub fn resolves_names(&self) -> bool {
        self.resolve == ResolveAt::Upstream
    }

    /// The `Proxy-Authorization` value for an HTTP upstream, when the URL has credentials.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// Opens a tunnel to `target` through the upstream, within `timeout` for everything.
    pub async fn tunnel(
        &self,
        dest: &Checked,
        target: &Target<'_>,
        timeout: Duration,
    ) -> Result<Connected, UpstreamError> {
        let attempt = async {
            if self.url.kind.is_socks() {
                let tcp = self.connect_tcp().await?;
                let tcp = socks::connect(tcp, self.ask(dest, target), self.url.credentials())
                    .await
                    .map_err(|e| socks::error(&self.label, e))?;
                return Ok(Connected {
                    stream: Stream::Plain(tcp),
                    early: Vec::new(),
                });
            }
            let mut stream = self.connect().await?;
            let authority = target.to_string();
            let auth = self.authorization.as_ref().and_then(|v| v.to_str().ok());
            let early = http::connect(&mut stream, &authority, auth)
                .await
                .map_err(|e| e.into_upstream(&self.label))?;
            Ok(Connected { stream, early })
        };
        self.counted(timeout, attempt).await
    }

    /// A connection to an HTTP upstream for absolute-form requests.
    pub async fn open(&self, timeout: Duration) -> Result<Stream, UpstreamError> {
        self.counted(timeout, self.connect()).await
    }

    /// Counts one use of the upstream by its outcome.
    pub fn count(&self, result: &'static str) {
        metrics::counter!(crate::metrics::UPSTREAM_CONNECTS, "kind" => self.url.kind.as_str(), "result" => result)
            .increment(1);
    }

    async fn counted<T>(
        &self,
        timeout: Duration,
        attempt: impl std::future::Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout {
                proxy: Arc::clone(&self.label),
                after: timeout,
            }),
        };
        self.count(result.as_ref().map_or_else(UpstreamError::result, |_| "ok"));
        result
    }

    /// What a SOCKS5 upstream is asked for: the checked address for `socks5://`, else the
    /// destination as written. (`socks5://` with names left to the upstream is refused when
    /// the configuration loads; such a name would go as a name.)
    fn ask<'a>(&self, dest: &Checked, target: &'a Target<'a>) -> socks::Ask<'a> {
        match (self.url.kind, dest, &target.host) {
            (ProxyKind::Socks5, Checked::Pinned(pinned), _) => socks::Ask::Addr(pinned.first()),
            (_, _, Host::Ip(ip)) => socks::Ask::Addr(SocketAddr::new(*ip, target.port)),
            (_, _, Host::Name(name)) => socks::Ask::Name(name, target.port),
        }
    }

    /// TCP, then TLS for `https://`, to the upstream itself.
    async fn connect(&self) -> Result<Stream, UpstreamError> {
        let tcp = self.connect_tcp().await?;
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some(connector) => tls::handshake(connector, &self.url.host, tcp)
                .await
                .map(|tls| Stream::Tls(Box::new(tls)))
                .map_err(|source| UpstreamError::Tls {
                    proxy: Arc::clone(&self.label),
                    source,
                }),
        }
    }

    /// A TCP connection to the upstream itself, trying each of its addresses in turn.
    async fn connect_tcp(&self) -> Result<TcpStream, UpstreamError> {
        let unreachable = |source| UpstreamError::Unreachable {
            proxy: Arc::clone(&self.label),
            source,
        };
        let port = self.url.port;
        let addrs: Vec<SocketAddr> = match &self.url.host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Host::Name(name) => {
                let resolver = self
                    .resolver
                    .as_ref()
                    .expect("a named upstream has a resolver");
                resolver
                    .lookup_configured(name)
                    .await
                    .map_err(|e| unreachable(io::Error::other(format!("resolving {name}: {e}"))))?
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()
            }
        };
        if let Some(addr) = addrs.iter().find(|a| is_own(&self.own, **a)) {
            return Err(UpstreamError::Loop {
                proxy: Arc::clone(&self.label),
                addr: *addr,
            });
        }
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    return Ok(tcp);
                }
                Err(error) => last = error,
            }
        }
        Err(unreachable(last))
    }
}

/// Whether `addr` reaches one of `own` (a wildcard listener answers on loopback too).
fn is_own(own: &[SocketAddr], addr: SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    own.iter().any(|o| {
        o.port() == addr.port()
            && (o.ip().to_canonical() == ip || (o.ip().is_unspecified() && ip.is_loopback()))
    })
}

/// The upstreams of one configuration, fixed at start, and which destinations skip them.
#[derive(Debug)]
pub struct Chain {
    tunnel: Option<Arc<Proxy>>,
    forward: Option<Arc<Proxy>>,
    no_proxy: NoProxy,
}

impl Chain {
    /// The chain `config` describes, or `None` when every connection is direct. `own` are the
    /// proxy's listener addresses. Loads the TLS roots when an upstream is `https://`.
    pub fn new(config: &UpstreamConfig, own: &[SocketAddr]) -> Result<Option<Chain>, SetupError> {
        if !config.is_active() {
            return Ok(None);
        }
        let own: Arc<[SocketAddr]> = Arc::from(own);
        let https = [&config.tunnel, &config.forward]
            .into_iter()
            .flatten()
            .any(|c| c.url.kind == ProxyKind::Https);
        let tls = if https {
            Some(tls::connector(config.ca_file.as_deref())?)
        } else {
            None
        };
        let named = [&config.tunnel, &config.forward]
            .into_iter()
            .flatten()
            .any(|c| matches!(c.url.host, Host::Name(_)));
        let resolver = if named {
            Some(Resolver::system().map_err(SetupError::Resolver)?)
        } else {
            None
        };
        let make = |url: &ProxyUrl| {
            Arc::new(Proxy {
                url: url.clone(),
                label: Arc::from(url.to_string()),
                resolve: config.resolve,
                tls: (url.kind == ProxyKind::Https)
                    .then(|| tls.clone())
                    .flatten(),
                authorization: url.credentials().map(basic),
                own: Arc::clone(&own),
                resolver: matches!(url.host, Host::Name(_))
                    .then(|| resolver.clone())
                    .flatten(),
            })
        };
        let tunnel = config.tunnel.as_ref().map(|c| make(&c.url));
        let forward = match (&config.forward, &tunnel) {
            (Some(f), Some(t)) if f.url == t.url => Some(Arc::clone(t)),
            (forward, _) => forward.as_ref().map(|c| make(&c.url)),
        };
        Ok(Some(Chain {
            tunnel,
            forward,
            no_proxy: config.no_proxy.clone(),
        }))
    }

    /// The upstream a connection of `protocol` to `target` goes through, if any: CONNECT and
    /// SOCKS5 CONNECT take the tunnel upstream, plain HTTP the forward one; SOCKS5 UDP and
    /// Unix sockets never chain. `NO_PROXY` matches, `localhost` and loopback addresses go
    /// direct (as Go's `net/http` does: the upstream's loopback is not this machine's).
    pub fn for_target(&self, protocol: Protocol, target: &Target<'_>) -> Option<&Arc<Proxy>> {
        let proxy = match protocol {
            Protocol::Connect | Protocol::SocksTcp => self.tunnel.as_ref(),
            Protocol::Http => self.forward.as_ref(),
            Protocol::SocksUdp | Protocol::Unix => None,
        }?;
        let local = match &target.host {
            Host::Ip(ip) => ip.to_canonical().is_loopback(),
            Host::Name(name) => crate::policy::host::is_localhost(name),
        };
        (!local && !self.no_proxy.matches(&target.host)).then_some(proxy)
    }
}

impl fmt::Display for Chain {
    /// `tunnels via URL, plain HTTP via URL`, without passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let via = |proxy: &Option<Arc<Proxy>>| {
            proxy
                .as_ref()
                .map_or("direct", |p| &**p.label())
                .to_string()
        };
        write!(
            f,
            "tunnels via {}, plain HTTP via {}",
            via(&self.tunnel),
            via(&self.forward)
        )?;
        if !self.no_proxy.entries().is_empty() {
            write!(
                f,
                ", direct for no_proxy {}",
                self.no_proxy.entries().join(",")
            )?;
        }
        Ok(())
    }
}

/// `Basic base64(user:password)`, marked sensitive.
fn basic((user, password): (&str, &str)) -> HeaderValue {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value =
        HeaderValue::from_str(&format!("Basic {token}")).expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests;

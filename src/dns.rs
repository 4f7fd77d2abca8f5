//! Name resolution with `hickory-resolver`.
//!
//! Invariant: the proxy resolves a name once per connection, hands every answer to the policy,
//! and dials only the addresses the policy checked; it never re-resolves a name for the same
//! connection. That is what defeats DNS rebinding: a second lookup may return something else
//! (TTL 0 answers are never reused), so the caller must pin the checked addresses rather than
//! ask again. This module therefore only resolves: it does not classify addresses or decide
//! anything (see [`crate::policy`]).
//!
//! Both A and AAAA are queried in parallel. If one family fails and the other answers, the
//! answers that did arrive are returned; only they can be checked and dialled.

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::Name;
use hickory_resolver::TokioResolver;

use crate::config::DnsConfig;

/// Why a lookup produced no address. The policy maps every variant to `dns-failed`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN).
    #[error("nxdomain: no such name")]
    NxDomain,
    /// The name exists but has neither A nor AAAA records.
    #[error("no-records: the name has no A or AAAA records")]
    NoRecords,
    /// No answer within the configured timeout.
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// Anything else: SERVFAIL, refused, I/O, unreadable resolver configuration.
    #[error("{0}")]
    Other(String),
}

impl DnsError {
    /// A short stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DnsError::NxDomain => "nxdomain",
            DnsError::NoRecords => "no-records",
            DnsError::Timeout(_) => "timeout",
            DnsError::Other(_) => "error",
        }
    }

    fn from_net(err: &NetError, timeout: Duration) -> DnsError {
        if err.is_nx_domain() {
            DnsError::NxDomain
        } else if err.is_no_records_found() {
            DnsError::NoRecords
        } else if matches!(err, NetError::Timeout) {
            DnsError::Timeout(timeout)
        } else {
            DnsError::Other(err.to_string())
        }
    }
}

/// A resolver for A and AAAA records. Cheap to clone; clones share connections and cache.
///
/// Connections are spawned on the Tokio runtime of the first lookup, so build one resolver per
/// runtime.
#[derive(Clone, Debug)]
pub struct Resolver {
    inner: TokioResolver,
    timeout: Duration,
}

/// hickory's `attempts` counts retries after the first try. None: a retry of a silent query
/// could not finish within the budget, and it would hold back the family that did answer. The
/// UDP layer still retransmits within one try.
const RETRIES: usize = 0;

impl Resolver {
    /// Builds a resolver from `[dns]`.
    ///
    /// With no `servers`, the system configuration (`/etc/resolv.conf`, hosts file honoured) is
    /// used. Otherwise exactly those servers are queried, UDP first then TCP on the same port,
    /// and the hosts file is ignored so the answers depend only on those servers.
    pub fn new(cfg: &DnsConfig) -> Result<Resolver, DnsError> {
        let (config, mut opts) = if cfg.servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                DnsError::Other(format!("reading the system resolver configuration: {e}"))
            })?
        } else {
            let name_servers = cfg
                .servers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            let mut opts = ResolverOpts::default();
            opts.use_hosts_file = ResolveHosts::Never;
            (ResolverConfig::from_parts(None, vec![], name_servers), opts)
        };
        // Each query gets most of the budget, so that when one family answers and the other is
        // silent hickory returns the answers it has before the whole-lookup deadline fires.
        opts.timeout = cfg.timeout * 3 / 4;
        opts.attempts = RETRIES;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;

        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| DnsError::Other(format!("building the resolver: {e}")))?;
        Ok(Resolver {
            inner,
            timeout: cfg.timeout,
        })
    }

    /// Resolves a canonical name (lowercase ASCII, punycode, no trailing dot) to every A and
    /// AAAA answer, deduplicated, A answers first, in the server's order.
    ///
    /// The name is queried as fully qualified, so no search domain is ever appended.
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let mut fqdn = parse(name)?;
        fqdn.set_fqdn(true);
        self.lookup_name(fqdn).await
    }

    /// The system's resolver whatever `[dns]` says (`/etc/resolv.conf` and the hosts file), for
    /// names that are configuration rather than destinations, such as an upstream proxy's:
    /// they resolve as they would for curl, and nothing here judges them.
    pub fn system() -> Result<Resolver, DnsError> {
        Resolver::new(&DnsConfig::default())
    }

    /// Resolves a configured name as the system would: unlike [`Resolver::lookup`], a short
    /// name (fewer dots than `ndots`) gets the search domains, so `http://proxy:3128` works
    /// where the network's search domain completes it.
    pub async fn lookup_configured(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.lookup_name(parse(name)?).await
    }

    async fn lookup_name(&self, name: Name) -> Result<Vec<IpAddr>, DnsError> {
        // The whole lookup, retries included, fits in the configured timeout.
        let answers = match tokio::time::timeout(self.timeout, self.inner.lookup_ip(name)).await {
            Ok(Ok(answers)) => answers,
            Ok(Err(e)) => return Err(DnsError::from_net(&e, self.timeout)),
            Err(_) => return Err(DnsError::Timeout(self.timeout)),
        };

        let mut ips = Vec::new();
        for ip in answers.iter() {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        if ips.is_empty() {
            return Err(DnsError::NoRecords);
        }
        Ok(ips)
    }
}

fn parse(name: &str) -> Result<Name, DnsError> {
    Name::from_ascii(name).map_err(|e| DnsError::Other(format!("invalid name {name:?}: {e}")))
}

impl crate::policy::Resolve for Resolver {
    type Error = DnsError;

    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.lookup(name).await
    }
}

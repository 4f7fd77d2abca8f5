//! Configuration: files and flags layered into one immutable [`Config`].
//!
//! Accepted shapes (SPEC section 4): native files (keys at top level plus `[dns]`, `[limits]`,
//! `[admin]`, `[log]`), Codex `config.toml` (`[features.network_proxy]`, `[network]`,
//! `[permissions.<name>.network]`) and `requirements.toml` (`[experimental_network]`).
//! Later `--config` files override earlier scalars and merge maps entry by entry;
//! `--allow`/`--deny` are the last user layer; requirements apply last and win.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::policy::{
    HttpRuleSpec, InspectionSpec, Mode, MultiAnswer, Origin, Policy, PolicyError, PolicyOptions,
    PublicRanges, RuleSpec, UnixSocketSpec,
};

mod convert;
mod effective;
mod error;
mod keys;
mod listen;
mod load;
mod merge;
mod raw;
#[cfg(test)]
mod tests;
mod upstream;
mod warnings;

pub(crate) use listen::parse_dns_server;

pub use error::ConfigError;
pub use load::{load, load_texts};
pub use upstream::{Chosen, NoProxy, ProxyEnv, ProxyKind, ProxyUrl, ResolveAt, UpstreamConfig};

/// Everything that decides where configuration comes from, straight from the policy flags.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// `--config FILE`, in order; later files override earlier ones.
    pub configs: Vec<PathBuf>,
    /// `--requirements FILE`: the administrator's layer, applied last.
    pub requirements: Option<PathBuf>,
    /// `--profile NAME`: which `[permissions.<name>.network]` to use (else `default_permissions`).
    pub profile: Option<String>,
    /// `--allow PATTERN` / `--deny PATTERN`, the last user layer.
    pub allow: Vec<String>,
    /// `--deny PATTERN`, after the allows.
    pub deny: Vec<String>,
    /// `--dns-server IP:PORT`: replaces `[dns] servers` when not empty.
    pub dns_servers: Vec<SocketAddr>,
    /// `--public-range CIDR`: replaces the files' `public_ranges` when not empty (the
    /// requirements' list still replaces it).
    pub public_ranges: Vec<String>,
    /// `--http-listen`, `--socks-listen`, `--admin-listen`: part of the last user layer, so
    /// the loopback rules apply to them and requirements ports still win.
    pub http_listen: Option<SocketAddr>,
    /// `--socks-listen`.
    pub socks_listen: Option<SocketAddr>,
    /// `--admin-listen`.
    pub admin_listen: Option<SocketAddr>,
    /// The proxy's own environment (`HTTPS_PROXY`, `NO_PROXY`, …): where the upstream proxy
    /// comes from when no `[upstream] url` is set. The CLI fills it from its environment at
    /// start; it is empty by default, so an embedder or a test chains only when it says so.
    pub env: ProxyEnv,
    /// `--no-upstream-proxy`: dial directly, whatever the files and the environment say.
    pub no_upstream_proxy: bool,
}

/// The effective configuration after layering. Immutable once built.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// When false, `serve` and `run` refuse to start (never run a child unconstrained).
    pub enabled: bool,
    /// `full`, or `limited` (reads over plain HTTP only).
    pub mode: Mode,
    /// The mode the requirements set, if they did: `POST /mode` may narrow it but never
    /// widen a managed `limited`.
    pub managed_mode: Option<Mode>,
    /// Effective domain rules, user rules first then managed ones, with
    /// `managed_allowed_domains_only` already applied.
    pub rules: Vec<RuleSpec>,
    /// Effective Unix-socket entries (`none` already applied).
    pub unix_sockets: Vec<UnixSocketSpec>,
    /// Allowed names may reach local (loopback, private, link-local, CGNAT, ULA) addresses.
    pub allow_local_binding: bool,
    /// Run the SOCKS5 listener.
    pub enable_socks5: bool,
    /// Serve SOCKS5 UDP ASSOCIATE.
    pub enable_socks5_udp: bool,
    /// Honour an upstream proxy (`[upstream]` or the environment); see [`Config::upstream`].
    pub allow_upstream_proxy: bool,
    /// Ranges this network uses for public destinations (fake-IP DNS, a tailnet): classified
    /// `public`, never loopback, link-local or another never-public class.
    pub public_ranges: PublicRanges,
    /// Which upstream proxy each kind of connection goes through, if any.
    pub upstream: UpstreamConfig,
    /// The HTTP listener (`proxy_url`).
    pub proxy_addr: SocketAddr,
    /// The SOCKS5 listener (`socks_url`).
    pub socks_addr: SocketAddr,
    /// The admin API (`admin_url`).
    pub admin_addr: SocketAddr,
    /// The proxy listeners may bind a non-loopback address.
    pub dangerously_allow_non_loopback_proxy: bool,
    /// The admin API may bind a non-loopback address.
    pub dangerously_allow_non_loopback_admin: bool,
    /// Any Unix socket may be reached (deny entries still win).
    pub dangerously_allow_all_unix_sockets: bool,
    /// `[dns]`.
    pub dns: DnsConfig,
    /// `[limits]`.
    pub limits: Limits,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[run]`.
    pub run: RunConfig,
    /// `mitm`: HTTPS inspection.
    pub mitm: MitmConfig,
    /// `[[http_rules]]` of every file, in order.
    pub http_rules: Vec<HttpRuleSpec>,
    /// Non-fatal findings about the settings for `validate` (e.g. "`enabled` is false in
    /// config.toml"); those about the rules are the compiled policy's [`Policy::warnings`].
    pub warnings: Vec<String>,
}

impl Config {
    /// Compiles the effective rules and options into a policy: the configuration points at
    /// the engine, never the reverse.
    pub fn policy(&self) -> Result<Policy, PolicyError> {
        let inspection = InspectionSpec {
            enabled: self.mitm.enabled,
            domains: self.mitm.domains.clone(),
        };
        Policy::new(
            &self.rules,
            &self.unix_sockets,
            PolicyOptions {
                mode: self.mode,
                allow_local_binding: self.allow_local_binding,
                multi_answer: self.dns.multi_answer,
                dangerously_allow_all_unix_sockets: self.dangerously_allow_all_unix_sockets,
                public_ranges: self.public_ranges.clone(),
            },
        )?
        .with_http(&self.http_rules, &inspection)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
/// `[dns]`: where names are resolved, and how answers are judged.
pub struct DnsConfig {
    /// Empty means the system resolver configuration (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// A lookup that takes longer fails (`dns-failed`).
    pub timeout: Duration,
    /// What a name whose answers mix public and non-public addresses gets.
    pub multi_answer: MultiAnswer,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            servers: Vec::new(),
            timeout: Duration::from_millis(2000),
            multi_answer: MultiAnswer::default(),
        }
    }
}

/// Per-stage limits that keep a slow or hostile client from pinning resources. Loading bounds
/// every value (counts 1-1000000, timeouts 1 ms to 7 days, heads 1024-417792 bytes), so no
/// file can make a listener panic; code that builds one by hand must stay within them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long a connection to an allowed destination may take.
    pub connect_timeout: Duration,
    /// A tunnel or kept connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// How long a client may take to send its request head.
    pub header_timeout: Duration,
    /// The largest request head accepted.
    pub max_header_bytes: usize,
    /// Open client connections at most; the rest get `503 busy`.
    pub max_connections: usize,
    /// Open SOCKS5 UDP associations at most.
    pub max_udp_associations: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_connections: 1024,
            max_udp_associations: 256,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
/// `[admin]`.
pub struct AdminConfig {
    /// Where the bearer token is read from (generated when unset).
    pub token_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
/// How the text log is written.
pub enum LogFormat {
    #[default]
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
/// `[run]`: how `egress-proxy run` starts the command.
pub struct RunConfig {
    /// Run it in its own network namespace, where the proxy is the only way out
    /// (`run --isolate`).
    pub isolate: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
/// `mitm = true` or `[mitm]`: HTTPS inspection. Which hosts are intercepted is the policy's
/// ([`Policy`]'s inspection scope); this is the CA and the trust for the origin side.
pub struct MitmConfig {
    /// Interception is configured at all (`mitm = true`, `[mitm] enabled`).
    pub enabled: bool,
    /// `[mitm] domains`: the hosts interception applies to, each with where it was written;
    /// `None` for every host.
    pub domains: Option<Vec<(String, Origin)>>,
    /// `[mitm] ca_cert` and `ca_key`: the CA to mint leaf certificates with; `None` for the
    /// one generated under the user's data directory.
    pub ca: Option<CaFiles>,
    /// `[mitm] upstream_ca`: CAs trusted for origins besides the system roots.
    pub upstream_ca: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
/// A CA given as two PEM files.
pub struct CaFiles {
    /// The CA certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
/// `[log]`.
pub struct LogConfig {
    /// Text or JSON.
    pub format: LogFormat,
    /// `-` or unset means stderr.
    pub audit: Option<PathBuf>,
}

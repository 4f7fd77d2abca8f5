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
    Mode, MultiAnswer, Policy, PolicyError, PolicyOptions, RuleSpec, UnixSocketSpec,
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
mod warnings;

pub(crate) use listen::parse_dns_server;

pub use error::ConfigError;
pub use load::{load, load_texts};

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
    pub deny: Vec<String>,
    /// `--dns-server IP:PORT`: replaces `[dns] servers` when not empty.
    pub dns_servers: Vec<SocketAddr>,
    /// `--http-listen`, `--socks-listen`, `--admin-listen`: part of the last user layer, so
    /// the loopback rules apply to them and requirements ports still win.
    pub http_listen: Option<SocketAddr>,
    pub socks_listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
}

/// The effective configuration after layering. Immutable once built.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// When false, `serve` and `run` refuse to start (never run a child unconstrained).
    pub enabled: bool,
    pub mode: Mode,
    /// Effective domain rules, user rules first then managed ones, with
    /// `managed_allowed_domains_only` already applied.
    pub rules: Vec<RuleSpec>,
    /// Effective Unix-socket entries (`none` already applied).
    pub unix_sockets: Vec<UnixSocketSpec>,
    pub allow_local_binding: bool,
    pub enable_socks5: bool,
    pub enable_socks5_udp: bool,
    pub allow_upstream_proxy: bool,
    pub proxy_addr: SocketAddr,
    pub socks_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub dangerously_allow_non_loopback_proxy: bool,
    pub dangerously_allow_non_loopback_admin: bool,
    pub dangerously_allow_all_unix_sockets: bool,
    pub dns: DnsConfig,
    pub limits: Limits,
    pub admin: AdminConfig,
    pub log: LogConfig,
    /// Non-fatal findings about the settings for `validate` (e.g. "`enabled` is false in
    /// config.toml"); those about the rules are the compiled policy's [`Policy::warnings`].
    pub warnings: Vec<String>,
}

impl Config {
    /// Compiles the effective rules and options into a policy: the configuration points at
    /// the engine, never the reverse.
    pub fn policy(&self) -> Result<Policy, PolicyError> {
        Policy::new(
            &self.rules,
            &self.unix_sockets,
            PolicyOptions {
                mode: self.mode,
                allow_local_binding: self.allow_local_binding,
                multi_answer: self.dns.multi_answer,
                dangerously_allow_all_unix_sockets: self.dangerously_allow_all_unix_sockets,
            },
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Empty means the system resolver configuration (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
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
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
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
pub struct AdminConfig {
    pub token_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `-` or unset means stderr.
    pub audit: Option<PathBuf>,
}

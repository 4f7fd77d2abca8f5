//! The one key table. Every key a file may set is one line here; the line generates the raw
//! struct field serde fills, the key lists unknown-key errors print, and, for a setting a later
//! layer replaces as a whole, its converted slot, the conversion and the merge.
//!
//! A new setting is a line here, its field in [`Config`](super::Config), and its default in
//! `effective.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::convert::{
    choice, count, dns_servers, header_bytes, host_patterns, millis, path, plain, public_ranges,
};
use super::error::{ConfigError, Source};
use super::merge::{replace, Set};
use super::raw::{SpannedList, SpannedMap};
use super::upstream::{no_proxy, proxy_url, NoProxy, NoProxyText, ProxyUrl, ResolveAt};
use super::{LogFormat, MultiAnswer};
use crate::policy::{Mode, Origin, PublicRanges};

/// A key of every user network table: native top level, `[features.network_proxy]`,
/// `[network]`, `[permissions.<name>.network]`; and of each extension table.
pub(super) const TABLE: u8 = 1;
/// A key of `[experimental_network]` in `requirements.toml`.
pub(super) const REQUIREMENTS: u8 = 2;
const BOTH: u8 = TABLE | REQUIREMENTS;

/// A key's name and the table it sits in, for conversion messages.
pub(super) struct Key {
    /// Empty for the network tables.
    pub(super) table: &'static str,
    pub(super) name: &'static str,
}

impl Key {
    /// `[limits] max_connections`, or the bare name in a network table.
    pub(super) fn qualified(&self) -> String {
        if self.table.is_empty() {
            self.name.to_string()
        } else {
            format!("[{}] {}", self.table, self.name)
        }
    }
}

/// The keys of `table` accepted where `at` says, in table order.
pub(super) fn names(table: &[(&'static str, u8)], at: u8) -> Vec<&'static str> {
    table
        .iter()
        .filter(|(_, places)| places & at != 0)
        .map(|(name, _)| *name)
        .collect()
}

/// `table: Raw, Scalars, KEYS { key: raw type, where [=> converted type = conversion]; … }`.
///
/// A key without a conversion (rules, listener URLs and ports) stays in the raw struct for
/// `convert.rs`; a key with one becomes a field of the scalars struct.
macro_rules! key_table {
    ($(#[$doc:meta])* $table:literal: $raw:ident, $scalars:ident, $keys:ident {
        $($key:ident: $ty:ty, $at:expr $(=> $value:ty = $convert:ident)?;)*
    }) => {
        $(#[$doc])*
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $raw {
            $(pub(super) $key: Option<$ty>,)*
        }

        /// Every key of the table, in the order errors list them, with where it is accepted.
        pub(super) const $keys: &[(&str, u8)] = &[$((stringify!($key), $at),)*];

        /// The table's settings a later layer replaces as a whole, with where each was set.
        #[derive(Debug, Default)]
        pub(super) struct $scalars {
            $($(pub(super) $key: Option<Set<$value>>,)?)*
        }

        impl $scalars {
            /// Converts the settings, taking them out of `raw`; a bad value is an error at it.
            pub(super) fn take(src: &Source, raw: &mut $raw) -> Result<Self, ConfigError> {
                Ok($scalars {
                    $($($key: $convert(
                        src,
                        &Key { table: $table, name: stringify!($key) },
                        raw.$key.take(),
                    )?,)?)*
                })
            }

            pub(super) fn override_with(&mut self, later: $scalars) {
                $($(replace::<$value>(&mut self.$key, later.$key);)?)*
            }
        }
    };
}

key_table! {
    /// The union of every network-table key; which of them a table may use is its place.
    "": RawNetwork, NetworkScalars, NETWORK {
        enabled: Spanned<bool>, BOTH => bool = plain;
        http_port: Spanned<u16>, REQUIREMENTS;
        socks_port: Spanned<u16>, REQUIREMENTS;
        mode: Spanned<String>, BOTH => Mode = choice;
        domains: SpannedMap, BOTH;
        allowed_domains: SpannedList, BOTH;
        denied_domains: SpannedList, BOTH;
        unix_sockets: SpannedMap, BOTH;
        managed_allowed_domains_only: Spanned<bool>, REQUIREMENTS => bool = plain;
        allow_local_binding: Spanned<bool>, BOTH => bool = plain;
        enable_socks5: Spanned<bool>, BOTH => bool = plain;
        enable_socks5_udp: Spanned<bool>, BOTH => bool = plain;
        allow_upstream_proxy: Spanned<bool>, BOTH => bool = plain;
        public_ranges: SpannedList, BOTH => PublicRanges = public_ranges;
        proxy_url: Spanned<String>, TABLE;
        socks_url: Spanned<String>, TABLE;
        admin_url: Spanned<String>, TABLE;
        dangerously_allow_non_loopback_proxy: Spanned<bool>, BOTH => bool = plain;
        dangerously_allow_non_loopback_admin: Spanned<bool>, BOTH => bool = plain;
        dangerously_allow_all_unix_sockets: Spanned<bool>, BOTH => bool = plain;
        mitm: Spanned<bool>, BOTH => bool = plain;
    }
}

key_table! {
    /// `[mitm]` (native files): HTTPS inspection. `enabled` sets the network tables' `mitm`
    /// and `ca_cert`/`ca_key` are one setting; `convert.rs` does both.
    "mitm": RawMitm, MitmScalars, MITM {
        enabled: Spanned<bool>, TABLE;
        domains: SpannedList, TABLE => Vec<(String, Origin)> = host_patterns;
        ca_cert: Spanned<String>, TABLE => PathBuf = path;
        ca_key: Spanned<String>, TABLE => PathBuf = path;
        upstream_ca: Spanned<String>, TABLE => PathBuf = path;
    }
}

key_table! {
    "dns": RawDns, DnsScalars, DNS {
        servers: SpannedList, TABLE => Vec<SocketAddr> = dns_servers;
        timeout_ms: Spanned<u64>, TABLE => Duration = millis;
        multi_answer: Spanned<String>, TABLE => MultiAnswer = choice;
    }
}

key_table! {
    "limits": RawLimits, LimitScalars, LIMITS {
        connect_timeout_ms: Spanned<u64>, TABLE => Duration = millis;
        idle_timeout_ms: Spanned<u64>, TABLE => Duration = millis;
        header_timeout_ms: Spanned<u64>, TABLE => Duration = millis;
        max_header_bytes: Spanned<u64>, TABLE => usize = header_bytes;
        max_connections: Spanned<u64>, TABLE => usize = count;
        max_udp_associations: Spanned<u64>, TABLE => usize = count;
    }
}

key_table! {
    "admin": RawAdmin, AdminScalars, ADMIN {
        token_file: Spanned<String>, TABLE => PathBuf = path;
    }
}

key_table! {
    /// `[upstream]`: the upstream proxy, overriding the proxy's environment.
    "upstream": RawUpstream, UpstreamScalars, UPSTREAM {
        url: Spanned<String>, TABLE => ProxyUrl = proxy_url;
        no_proxy: Spanned<NoProxyText>, TABLE => NoProxy = no_proxy;
        resolve: Spanned<String>, TABLE => ResolveAt = choice;
        ca_file: Spanned<String>, TABLE => PathBuf = path;
    }
}

key_table! {
    /// `[run]`: how `egress-proxy run` starts the command.
    "run": RawRun, RunScalars, RUN {
        isolate: Spanned<bool>, TABLE => bool = plain;
    }
}

key_table! {
    "log": RawLog, LogScalars, LOG {
        format: Spanned<String>, TABLE => LogFormat = choice;
        audit: Spanned<String>, TABLE => PathBuf = path;
    }
}

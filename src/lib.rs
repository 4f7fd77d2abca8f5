//! egress-proxy: an egress proxy that sandboxed commands must go through to reach the network.
//!
//! # Layout
//!
//! The modules follow the path of one connection:
//!
//! - [`config`]: TOML files (native, Codex `config.toml`, `requirements.toml`) and flags, layered
//!   into one immutable [`config::Config`].
//! - [`policy`]: the engine other sandboxes embed. It knows nothing about sockets:
//!   [`policy::host`] canonicalises hosts, [`policy::matcher`] matches compiled domain rules,
//!   [`policy::classifier`] names IP ranges, [`policy::unix`] decides Unix sockets by identity, and
//!   [`policy::Policy`] turns all of it into one [`policy::Decision`] with a stable reason code.
//! - [`dns`]: resolves names with hickory, once per connection; [`policy::Policy::check_resolved`]
//!   then classifies every answer and hands back the exact addresses a listener may dial.
//! - [`net`]: what listeners share: the gate (decide, resolve once, classify), the dialler
//!   that connects only to checked addresses, the relay, the accept loop.
//! - [`socks5`]: the SOCKS5 listener (CONNECT and UDP ASSOCIATE) on top of [`net`].
//! - [`server`] runs the listeners of one configuration; [`admin`] is its admin API and
//!   Prometheus endpoint.
//! - [`audit`], [`metrics`] (every metric name, once) and [`cli`] at the edges.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod control;
pub mod decider;
pub mod dns;
pub mod gate;
pub mod http;
pub mod metrics;
pub mod net;
pub use egress_policy as policy;
pub mod report;
mod respond;
pub mod server;
pub mod socks5;
pub mod socks5_codec;
pub mod token;

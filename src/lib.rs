//! egress-proxy: an egress proxy that sandboxed commands must go through to reach the network.
//!
//! # Using it as a library
//!
//! [`server::Server::builder`] runs a whole configuration in-process (a [`config::Config`]
//! from [`config::load`] or [`config::load_texts`]); [`decider`] is the hook that asks the
//! embedder about destinations no rule matched; [`control`] reloads and switches modes while it
//! runs; [`dns::Resolver`] is the resolver the listeners use. The policy engine alone is
//! [`policy`] (the `egress-policy` crate, which has no runtime or OS dependency).
//!
//! # Layout
//!
//! The modules follow the path of one connection, each depending only on those before it:
//!
//! - `config`: TOML files (native, Codex `config.toml`, `requirements.toml`) and flags, layered
//!   into one immutable [`config::Config`]; [`config::Config::policy`] compiles the engine.
//! - [`policy`]: canonicalisation, matching, classification and the one pipeline
//!   ([`policy::authorize`]: decide, resolve once, classify every answer).
//! - `dns`: the hickory resolver behind [`policy::Resolve`].
//! - `audit` and `metrics`: the decision and close lines, every metric name once.
//! - `gate`: the pipeline over the current policy generation and resolver; the only maker of a
//!   pinned destination, with the embedder's `decider`.
//! - [`session`]: `run`'s per-session proxy credentials, checked by both listeners before the
//!   policy sees a request.
//! - `net`: what listeners share: the connection context that records each decision once,
//!   the route (direct, or through the upstream proxy of `[upstream]` or the environment), the
//!   dialler that takes only what the gate pinned, the relay, drain and tunnel registry.
//! - `respond`: every refusal's HTTP answer and SOCKS5 code, side by side.
//! - `isolate`: `run --isolate`'s network namespace, whose listeners the proxy serves.
//! - `http`, `socks5` (with `socks5_codec`): the listeners.
//! - `control` (reload, mode; `watch` reloads on a file change), `admin` (its API, with
//!   `token`), `server` (starts it all), `report` (what `check` and `validate` print) and
//!   `cli` at the edges.
#![forbid(unsafe_code)]
#![deny(missing_docs, rust_2018_idioms)]

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod control;
pub mod decider;
pub mod dns;
mod gate;
mod http;
#[cfg(feature = "bench")]
#[doc(hidden)]
pub use http::intercept::testing as intercept_testing;
mod isolate;
pub mod metrics;
pub mod mitm;
mod net;
pub use egress_policy as policy;
mod private;
pub mod report;
mod respond;
mod roots;
pub mod server;
pub mod session;
mod socks5;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod socks5_codec;
#[cfg(not(feature = "fuzzing"))]
mod socks5_codec;
pub mod token;
mod watch;

//! The HTTP proxy listener through real clients (`curl`, raw request bytes, a hyper client),
//! one module per behaviour. One test binary, so the slow cases of every module overlap.
//!
//! Everything stays on loopback: names are answered by a fake DNS server with 127.0.0.x (or
//! not at all), origins listen on 127.0.0.1, and the only other addresses that appear are
//! loopback spellings and always-blocked ones nothing can connect to.

#[path = "../support/mod.rs"]
mod support;

// libtest starts tests in name order on as many threads as there are cores: the longest tests
// (the Unix socket module's symlink-swap race, dial's connect timeout, the header timeout in
// limits) sort early, so the rest overlap them.
mod af_unix;
mod connect;
mod dial;
mod forward;
mod json;
mod limits;
mod policy;
mod pool;
mod rules;
mod session;

//! The SOCKS5 listener through its real accept loop on 127.0.0.1, one module per command
//! (CONNECT, UDP ASSOCIATE); one test binary, so their slow cases overlap.

#[path = "../support/mod.rs"]
mod support;

// libtest starts tests in name order: `associate` holds the longest test, so it sorts first.
mod associate;
mod connect;
mod routes;
mod session;

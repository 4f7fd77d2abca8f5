//! The admin API and the metrics endpoint, against a real `Server` on loopback (in-process), and
//! once through the `serve` binary.
//!
//! Each test writes its own policy file, starts a `Server` with every listener on 127.0.0.1:0,
//! points `[dns] servers` at a fake DNS server that answers 127.0.0.1, and sends raw HTTP/1.1
//! to the admin listener and the HTTP proxy. Every read and write gives up after a few
//! seconds, so a hang is a failure, not a stall.

#[path = "../support/mod.rs"]
mod support;

// libtest starts tests in name order: `connections` holds the longest test (reserved slots),
// so it sorts first and the rest overlap it.
mod connections;
mod harness;
mod read;
mod serve_binary;
mod write;

//! `egress-proxy serve` through the built binary (SPEC sections 3 and 7): starting up, a running
//! server's reloads (signals and file changes), shutdown, and its audit log. One test binary with a module per
//! behaviour, so the short tests run beside the drain tests' ten-second grace.

mod audit;
mod friction;
mod lifecycle;
#[path = "../support/serve.rs"]
mod serve;
mod startup;
#[path = "../support/mod.rs"]
mod support;
mod watch;

//! Helpers shared by the integration tests (`mod support;` in each test file).

// Every test binary compiles this whole module but uses only some helpers; the rest would
// otherwise be reported as dead code in that binary.
#![allow(dead_code)]

pub mod bin;
pub mod curl;
pub mod fake_dns;
pub mod harness;
pub mod http;
pub mod http_world;
pub mod https_origin;
pub mod netns;
pub mod origin;
pub mod prometheus;
pub mod reply;
pub mod run;
pub mod socks;
pub mod socks_world;
pub mod tls;
pub mod unix_origin;
pub mod upstream;

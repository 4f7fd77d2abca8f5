//! The CLI commands that run to completion, through the built binary (SPEC section 3):
//! `ca`, `check`, how it reads a TARGET, `validate`, and where a policy comes from. One test binary
//! with a module per behaviour, so the tests run in parallel and the library is linked once.

#[path = "../support/cli.rs"]
mod cli;
#[path = "../support/mod.rs"]
mod support;

mod ca;
mod check;
mod check_targets;
mod config_files;
mod http_rules;
mod validate;

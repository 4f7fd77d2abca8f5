//! The built `egress-proxy` binary, run to completion.

use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_egress-proxy");

/// Removes the variables through which the binary would chain through an upstream proxy of
/// the machine running the tests (a test that wants one sets it after this).
pub fn without_proxy_env(command: &mut Command) -> &mut Command {
    for var in super::curl::PROXY_VARS {
        command.env_remove(var);
    }
    command
}

/// Runs the binary with `args` (no `RUST_LOG`, no stdin): exit code, stdout, stderr.
pub fn run(args: &[&str]) -> (i32, String, String) {
    run_env(args, &[])
}

/// [`run`] with these variables added to the environment.
pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = without_proxy_env(&mut Command::new(BIN))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run egress-proxy");
    let code = out.status.code().expect("exited, not killed by a signal");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8 output");
    (code, text(out.stdout), text(out.stderr))
}

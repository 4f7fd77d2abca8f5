//! `egress-proxy __isolate`: the helper stage of `run --isolate`, started by the proxy (never
//! by hand) with the proxy's socket pair as its stdin. It prepares the namespace
//! ([`crate::isolate::helper`]), then starts the command there, passes signals on to it and
//! exits with its status.

use std::ffi::OsString;

use clap::Args;

use super::run::{exit_code, spawn_error, EXIT_INTERNAL};
use super::signals::Signals;
use crate::isolate::helper::{self, Spawn};
use crate::isolate::Options;

#[derive(Debug, Args)]
pub struct HelperArgs {
    /// Also create the SOCKS5 listener.
    #[arg(long)]
    socks: bool,
    /// Leave `socket(AF_UNIX)` allowed.
    #[arg(long = "allow-unix-sockets")]
    allow_unix_sockets: bool,
    /// Do not report the first refused DNS query.
    #[arg(long)]
    quiet: bool,
    #[arg(
        required = true,
        trailing_var_arg = true,
        value_parser = clap::value_parser!(OsString)
    )]
    command: Vec<OsString>,
}

pub fn run(args: &HelperArgs) -> i32 {
    let options = Options {
        socks: args.socks,
        allow_unix_sockets: args.allow_unix_sockets,
        quiet: args.quiet,
    };
    // Before any thread exists: a new user namespace needs a single-threaded process.
    let Ok(prepared) = helper::prepare(&options) else {
        return super::EXIT_USAGE;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the isolation helper's runtime: {err}");
            return EXIT_INTERNAL;
        }
    };
    runtime.block_on(async move {
        // Before the command starts, so a signal right after is passed on, not fatal to us.
        let mut signals = Signals::install();
        let Some(Spawn { env, stdin }) = prepared.wait_for_spawn().await else {
            return EXIT_INTERNAL;
        };
        let (program, rest) = match args.command.split_first() {
            Some(split) => split,
            None => return super::EXIT_USAGE,
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(rest)
            .envs(env)
            .stdin(stdin)
            .kill_on_drop(false);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => return spawn_error(program, &err),
        };
        match signals.forward_until_exit(&mut child).await {
            Ok(status) => exit_code(status),
            Err(err) => {
                eprintln!("error: lost track of the command: {err}");
                EXIT_INTERNAL
            }
        }
    })
}

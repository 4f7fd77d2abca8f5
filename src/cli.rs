//! The command line: parse flags, load the layered configuration, dispatch.
//!
//! Every failure is one line on stderr and an exit code, never a panic or a backtrace.

mod check;
mod serve;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, Sources};
use crate::policy::Policy;

/// Exit code for usage and configuration errors (clap uses it too).
pub const EXIT_USAGE: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "egress-proxy",
    version,
    about = "Egress proxy for sandboxed commands: every destination is checked against a domain policy"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Explain the verdict for each TARGET (`host`, `host:port`, `[v6]:port` or a URL).
    Check(check::CheckArgs),
    /// Run the proxy listeners as a long-lived gateway until SIGINT/SIGTERM.
    Serve(serve::ServeArgs),
    /// Load and compile the policy, print the effective policy and its warnings.
    Validate(validate::ValidateArgs),
}

/// The policy flags every subcommand shares.
#[derive(Debug, Args, Clone, Default)]
pub struct PolicyArgs {
    /// Policy file (native, Codex config.toml); repeatable, later files override earlier ones.
    #[arg(long = "config", value_name = "FILE")]
    configs: Vec<PathBuf>,
    /// Administrator requirements (requirements.toml `[experimental_network]`), applied last.
    #[arg(long, value_name = "FILE")]
    requirements: Option<PathBuf>,
    /// `[permissions.<NAME>.network]` profile to use (default: the file's `default_permissions`).
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// Allow a host pattern (`example.com`, `*.example.com`, `**.example.com`, `*`); repeatable.
    #[arg(long, value_name = "PATTERN")]
    allow: Vec<String>,
    /// Deny a host pattern; deny always beats allow. Repeatable.
    #[arg(long, value_name = "PATTERN")]
    deny: Vec<String>,
    /// DNS server to use instead of `[dns] servers` (`IP` or `IP:PORT`); repeatable.
    #[arg(long = "dns-server", value_name = "IP:PORT", value_parser = config::parse_dns_server)]
    dns_servers: Vec<SocketAddr>,
}

impl PolicyArgs {
    fn sources(&self) -> Sources {
        Sources {
            configs: self.configs.clone(),
            requirements: self.requirements.clone(),
            profile: self.profile.clone(),
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            dns_servers: self.dns_servers.clone(),
            ..Sources::default()
        }
    }

    /// Loads the layered configuration and compiles it; the error is the one line to print.
    pub fn load(&self) -> Result<(Config, Policy), String> {
        load(&self.sources())
    }
}

fn load(sources: &Sources) -> Result<(Config, Policy), String> {
    let config = config::load(sources).map_err(|e| e.to_string())?;
    let policy = Policy::from_config(&config).map_err(|e| e.to_string())?;
    Ok((config, policy))
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = err.exit_code();
            let _ = err.print();
            return code;
        }
    };
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Validate(args) => validate::run(&args),
    }
}

/// Human-readable logs on stderr; `RUST_LOG` overrides the level.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

//! The command line: parse flags, load the layered configuration, dispatch.
//!
//! Every failure is one line on stderr and an exit code, never a panic or a backtrace.

mod ca;
mod check;
#[cfg(target_os = "linux")]
mod isolate;
mod log_filter;
mod run;
mod runtime;
mod serve;
mod signals;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{self, Config, LogFormat, Sources};
use crate::control::LoadError;
use crate::policy::Policy;

/// Exit code for usage and configuration errors (clap uses it too).
pub const EXIT_USAGE: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "egress-proxy",
    version,
    about = "Egress proxy for sandboxed commands: every destination is checked against a domain policy"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The local CA of HTTPS inspection: `path`, `show` (`--pem`) or `rotate`.
    Ca(ca::CaArgs),
    /// Explain the verdict for each TARGET (`host`, `host:port`, `[v6]:port`, a bare IPv6 address or a URL).
    Check(check::CheckArgs),
    /// Run CMD with its network confined to the policy: ephemeral loopback listeners, proxy
    /// environment, the child's exit status, a summary of what was blocked.
    Run(run::RunArgs),
    /// Run the proxy listeners as a long-lived gateway until SIGINT/SIGTERM.
    Serve(serve::ServeArgs),
    /// Load and compile the policy, print the effective policy and its warnings.
    Validate(validate::ValidateArgs),
    /// The helper stage of `run --isolate` (started by `run`, not by hand).
    #[cfg(target_os = "linux")]
    #[command(name = "__isolate", hide = true)]
    Isolate(isolate::HelperArgs),
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
    /// Classify addresses in CIDR as public (a fake-IP DNS range, a tailnet), so the allow
    /// rules decide them; replaces the files' `public_ranges`. Never loopback, link-local,
    /// multicast, broadcast or unspecified. Repeatable.
    #[arg(long = "public-range", value_name = "CIDR")]
    public_ranges: Vec<String>,
    /// Dial every destination directly: ignore `[upstream]` and the HTTPS_PROXY, HTTP_PROXY,
    /// ALL_PROXY and NO_PROXY of this process's environment.
    #[arg(long = "no-upstream-proxy")]
    no_upstream_proxy: bool,
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
            public_ranges: self.public_ranges.clone(),
            // Read once, at start: `run` never changes its own environment (it sets the
            // child's), so an upstream named here is the user's, not the child's proxy.
            env: config::ProxyEnv::from_process(),
            no_upstream_proxy: self.no_upstream_proxy,
            ..Sources::default()
        }
    }

    /// Loads the layered configuration and compiles it; the error is the one line to print.
    pub fn load(&self) -> Result<(Config, Policy), LoadError> {
        crate::control::load(&self.sources())
    }
}

/// Loads a configuration that is about to carry traffic: a config error or a disabled
/// policy is one line on stderr and the usage exit code, so nothing ever runs unconstrained.
fn load_enabled(sources: &Sources, refusing: &str) -> Result<(Config, Policy), i32> {
    let (config, policy) = crate::control::load(sources).map_err(|err| {
        eprintln!("error: {err}");
        EXIT_USAGE
    })?;
    if !config.enabled {
        eprintln!("error: {}; {refusing}", LoadError::NotEnabled);
        return Err(EXIT_USAGE);
    }
    Ok((config, policy))
}

/// HTTPS inspection's CA and TLS configurations when `mitm` is enabled, built before anything
/// listens; a CA that cannot be used is one line on stderr and the usage exit code.
fn load_mitm(config: &Config) -> Result<Option<std::sync::Arc<crate::mitm::Mitm>>, i32> {
    if !config.mitm.enabled {
        return Ok(None);
    }
    crate::mitm::Mitm::new(&config.mitm)
        .map(Some)
        .map_err(|err| {
            eprintln!("error: {err}");
            EXIT_USAGE
        })
}

/// Starts the listeners of `serve` and `run`, with their audit log if one was asked for; a
/// failure is one line on stderr and `failed` as the exit code.
async fn start(
    builder: crate::server::Builder,
    audit: Option<Box<dyn std::io::Write + Send>>,
    failed: i32,
) -> Result<crate::server::Server, i32> {
    let builder = match audit {
        Some(audit) => builder.audit(audit),
        None => builder,
    };
    builder.start().await.map_err(|err| {
        match err {
            // One line per listener, each as clear as if it were the only one.
            crate::server::StartError::Bind(errors) => {
                for error in errors {
                    eprintln!("error: {error}");
                }
            }
            other => eprintln!("error: {other}"),
        }
        failed
    })
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
        Command::Ca(args) => ca::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Validate(args) => validate::run(&args),
        #[cfg(target_os = "linux")]
        Command::Isolate(args) => isolate::run(&args),
    }
}

/// Log format and audit destination, shared by `serve` and `run`.
#[derive(Debug, Args, Clone, Default)]
pub struct LogArgs {
    /// `text` for people (default), `json` for machines (overrides `[log] format`).
    #[arg(long = "log-format", value_name = "text|json", value_enum)]
    log_format: Option<LogFormatArg>,
    /// Write one JSON audit line per decision and per closed connection to FILE (`-` for
    /// stderr; overrides `[log] audit`).
    #[arg(long = "audit-log", value_name = "FILE|-")]
    audit_log: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

impl LogArgs {
    /// Installs the log subscriber (`RUST_LOG` overrides the level) and opens the audit log.
    fn init(&self, config: &Config) -> Result<Option<Box<dyn std::io::Write + Send>>, String> {
        self.init_with(config, "info")
    }

    /// [`LogArgs::init`] with another default filter (`run` keeps the child's stderr quiet).
    fn init_with(
        &self,
        config: &Config,
        default_filter: &str,
    ) -> Result<Option<Box<dyn std::io::Write + Send>>, String> {
        let json = match self.log_format {
            Some(LogFormatArg::Json) => true,
            Some(LogFormatArg::Text) => false,
            None => config.log.format == LogFormat::Json,
        };
        let rust_log = std::env::var("RUST_LOG").ok();
        let filter = log_filter::build(rust_log.as_deref(), default_filter);
        let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let logs = tracing_subscriber::registry().with(filter);
        let _ = if json {
            logs.with(layer.json()).try_init()
        } else {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            logs.with(layer.with_ansi(ansi)).try_init()
        };
        match self.audit_log.as_ref().or(config.log.audit.as_ref()) {
            Some(path) => serve::open_audit(path)
                .map(Some)
                .map_err(|e| format!("cannot open audit log {}: {e}", path.display())),
            None => Ok(None),
        }
    }
}

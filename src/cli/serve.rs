//! `egress-proxy serve`: the listeners as a long-lived gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::runtime::RuntimeArgs;
use super::{LogArgs, PolicyArgs, EXIT_USAGE};
use crate::admin::AdminOptions;
use crate::config::{Config, Sources};
use crate::mitm::Mitm;
use crate::policy::Policy;
use crate::server::Server;

/// How long open tunnels may keep running after SIGINT/SIGTERM.
const GRACE: Duration = Duration::from_secs(10);

/// For how long after start-up allowed decisions are logged at INFO (later at DEBUG, unless
/// `--log-allowed`): long enough for someone trying the gateway to see traffic flow, short
/// enough that a busy gateway's log is not one line per request.
const ALLOWED_AT_INFO_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// HTTP proxy listener (overrides `proxy_url`).
    #[arg(long = "http-listen", value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// SOCKS5 listener (overrides `socks_url`).
    #[arg(long = "socks-listen", value_name = "ADDR")]
    socks_listen: Option<SocketAddr>,
    /// Admin API listener (overrides `admin_url`).
    #[arg(long = "admin-listen", value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Do not reload when a policy file changes on disk (SIGHUP and `POST /reload` still do).
    #[arg(long = "no-watch")]
    no_watch: bool,
    /// Log every allowed decision at INFO. Without it only those of the first 10 seconds
    /// after start-up are; later ones are DEBUG (denials are always WARN).
    #[arg(long = "log-allowed")]
    log_allowed: bool,
}

pub fn run(args: &ServeArgs) -> i32 {
    let mut sources = args.policy.sources();
    sources.http_listen = args.http_listen;
    sources.socks_listen = args.socks_listen;
    sources.admin_listen = args.admin_listen;
    let (config, policy) = match super::load_enabled(&sources, "refusing to start") {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let audit = match args.log.init(&config) {
        Ok(audit) => audit,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_USAGE;
        }
    };
    for warning in crate::report::warnings(&config, &policy) {
        tracing::warn!("{warning}");
    }
    let mitm = match super::load_mitm(&config) {
        Ok(mitm) => mitm,
        Err(code) => return code,
    };
    let runtime = match args.runtime.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: {err}");
            return 1;
        }
    };
    runtime.block_on(gateway(args, config, policy, sources, audit, mitm))
}

/// Runs the gateway on the runtime until SIGINT/SIGTERM; the exit code.
async fn gateway(
    args: &ServeArgs,
    config: Config,
    policy: Policy,
    sources: Sources,
    audit: Option<Box<dyn std::io::Write + Send>>,
    mitm: Option<Arc<Mitm>>,
) -> i32 {
    // Installed before any listener line is logged: a supervisor that
    // signals as soon as it sees the startup lines must not kill us. Also before a token
    // is generated, so a signal cannot leave it behind.
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("error: cannot install signal handlers: {err}");
            return 1;
        }
    };
    let token = match crate::token::load_or_generate(&config.admin) {
        Ok(token) => token,
        Err(err) => {
            eprintln!("error: {err}");
            return if config.admin.token_file.is_some() {
                EXIT_USAGE
            } else {
                1
            };
        }
    };
    // Dropped on every way out of here, a failed start included.
    let _remove_token = token.removed_on_drop();
    if let Some(warning) = config
        .admin
        .token_file
        .as_deref()
        .and_then(crate::token::exposure_warning)
    {
        tracing::warn!("{warning}");
    }
    let admin_options = AdminOptions {
        token: Arc::clone(&token.token),
        metrics: crate::metrics::install(),
    };
    let builder = Server::builder(config)
        .policy(policy)
        .reload_from(sources)
        .watch(!args.no_watch)
        .admin(admin_options)
        .log_allowed_at_info(true);
    let builder = match mitm {
        Some(mitm) => builder.mitm(mitm),
        None => builder,
    };
    let server = match super::start(builder, audit, 1).await {
        Ok(server) => server,
        Err(code) => return code,
    };
    if !args.log_allowed {
        let events = Arc::clone(server.control.events());
        tokio::spawn(async move {
            tokio::time::sleep(ALLOWED_AT_INFO_FOR).await;
            events.log_allowed_at_info(false);
        });
    }
    if let Some(addr) = server.admin_addr {
        let source = if token.generated {
            "generated"
        } else {
            "token_file"
        };
        tracing::info!(
            %addr,
            token_file = %token.path.display(),
            token_source = source,
            "admin API listening; POST calls need the bearer token in token_file"
        );
    }
    signals.run_until_stopped(&server).await;
    tracing::info!("shutting down: no longer accepting connections");
    server.shutdown(GRACE).await;
    0
}

/// SIGHUP reloads; SIGINT and SIGTERM stop the gateway.
struct Signals {
    hup: Signal,
    int: Signal,
    term: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn run_until_stopped(mut self, server: &Server) {
        loop {
            tokio::select! {
                _ = self.int.recv() => return,
                _ = self.term.recv() => return,
                _ = self.hup.recv() => {
                    // File reads and compiling stay off the workers serving connections.
                    let control = Arc::clone(&server.control);
                    let _ = tokio::task::spawn_blocking(move || control.reload()).await;
                }
            }
        }
    }
}

/// Where `--audit-log` sends JSON lines.
pub(super) fn open_audit(path: &PathBuf) -> std::io::Result<Box<dyn std::io::Write + Send>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::stderr()));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(Box::new(std::io::LineWriter::new(file)))
}

//! `egress-proxy serve`: the listeners as a long-lived gateway.

use std::net::SocketAddr;

use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{PolicyArgs, EXIT_USAGE};
use crate::config::Config;
use crate::dns::Resolver;
use crate::net::{policy_handle, Ctx, Gate};
use crate::policy::Policy;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// HTTP proxy listener (overrides `proxy_url`).
    #[arg(long = "http-listen", value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// SOCKS5 listener (overrides `socks_url`).
    #[arg(long = "socks-listen", value_name = "ADDR")]
    socks_listen: Option<SocketAddr>,
}

pub fn run(args: &ServeArgs) -> i32 {
    let mut sources = args.policy.sources();
    sources.http_listen = args.http_listen;
    sources.socks_listen = args.socks_listen;
    let (config, policy) = match super::load(&sources) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_USAGE;
        }
    };
    if !config.enabled {
        eprintln!(
            "error: the network policy is not enabled (set `enabled = true`, or \
             `features.network_proxy.enabled = true` in a Codex config.toml); refusing to start"
        );
        return EXIT_USAGE;
    }
    super::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return 1;
        }
    };
    match runtime.block_on(serve(config, policy)) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("error: {err}");
            1
        }
    }
}

async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} ({key}): {e}"))
}

async fn serve(config: Config, policy: Policy) -> Result<(), String> {
    let http = bind(config.proxy_addr, "proxy_url").await?;
    let http_addr = http.local_addr().map_err(|e| e.to_string())?;
    let own = [http_addr, config.admin_addr];
    let policy = policy.with_self_addrs(&own);
    let resolver = Resolver::new(&config.dns).map_err(|e| format!("cannot set up DNS: {e}"))?;
    let ctx = Ctx::new(
        Gate::new(policy_handle(policy), resolver),
        config.limits.clone(),
    );

    let (stop, stopped) = watch::channel(false);
    let shutdown = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    tracing::info!(addr = %http_addr, "http proxy listening");
    let http_task = tokio::spawn(crate::http::serve(http, ctx, shutdown(stopped.clone())));

    wait_for_signal().await;
    tracing::info!("shutting down: no longer accepting connections");
    let _ = stop.send(true);
    let _ = http_task.await;
    Ok(())
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

//! A running proxy: the listeners of one configuration, the policy generation they share,
//! reload, and graceful shutdown. `serve` and `run` are thin shells around it.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminOptions};
use crate::audit::Events;
use crate::config::{self, Config, Sources};
use crate::dns::Resolver;
use crate::net::drain::{self, DrainHandle};
use crate::net::tunnels::Tunnels;
use crate::net::{policy_handle, Ctx, Gate, PolicyHandle, ResolverHandle};
use crate::policy::{Mode, Policy};
use crate::socks5::{self, SocksOptions};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        source: std::io::Error,
    },
    #[error("cannot set up DNS: {0}")]
    Dns(#[from] crate::dns::DnsError),
}

/// Why `serve` and `run` refuse to start, and a reload is refused, when the layered
/// configuration says `enabled = false`: nothing ever carries traffic under a policy its own
/// files switched off.
pub const NOT_ENABLED: &str = "the network policy is not enabled (set `enabled = true`, or \
     `features.network_proxy.enabled = true` in a Codex config.toml)";

/// Reads every layer of `sources` and compiles the policy: what start-up and reload share.
pub fn load(sources: &Sources) -> Result<(Config, Policy), String> {
    let config = config::load(sources).map_err(|e| e.to_string())?;
    let policy = config.policy().map_err(|e| e.to_string())?;
    Ok((config, policy))
}

/// What the admin API and signal handlers can change while the proxy runs.
pub struct Control {
    sources: Sources,
    policy: PolicyHandle,
    resolver: ResolverHandle,
    /// The listeners' own addresses, re-applied to every new generation.
    own: Vec<SocketAddr>,
    /// Set by `POST /mode`; survives reloads, so an operator's switch to `limited` is not
    /// undone by an unrelated policy edit.
    mode_override: Mutex<Option<Mode>>,
    config: Mutex<Arc<Config>>,
    events: Arc<Events>,
    /// The listeners' open tunnels, re-decided by every new generation.
    tunnels: Arc<Tunnels>,
}

impl Control {
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .lock()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    /// The resolver the listeners use now, for `/check` to answer as they would.
    pub fn resolver(&self) -> Arc<Resolver> {
        self.resolver.load_full()
    }

    /// Re-reads every file and swaps the policy (and, when `[dns]` changed, the resolver) for
    /// new connections. A bad file, or one that now says `enabled = false` (which start-up
    /// refuses too), leaves the running policy in place: the proxy never fails open.
    /// Listener addresses and `[limits]` are fixed at start; a change is logged.
    pub fn reload(&self) -> Result<(), String> {
        let running = self.config();
        let result = load(&self.sources).and_then(|(config, policy)| {
            if !config.enabled {
                return Err(NOT_ENABLED.to_string());
            }
            let resolver = if config.dns == running.dns {
                None
            } else {
                Some(Resolver::new(&config.dns).map_err(|e| format!("cannot set up DNS: {e}"))?)
            };
            Ok((config, policy, resolver))
        });
        match result {
            Ok((config, policy, resolver)) => {
                // Held until the config is stored too: a concurrent `/mode` or reload cannot
                // interleave and pair this policy with another config or lose the override.
                let mode = self.mode_override.lock().unwrap_or_else(|p| p.into_inner());
                self.install(policy, *mode);
                if let Some(resolver) = resolver {
                    self.resolver.store(Arc::new(resolver));
                }
                if needs_restart(&running, &config) {
                    tracing::warn!(
                        "listener addresses, SOCKS5 settings and [limits] apply at start only; \
                         restart to use the new values"
                    );
                }
                if let Ok(mut current) = self.config.lock() {
                    *current = Arc::new(config);
                }
                drop(mode);
                metrics::counter!("egress_reloads_total", "result" => "ok").increment(1);
                tracing::info!("policy reloaded");
                Ok(())
            }
            Err(err) => {
                metrics::counter!("egress_reloads_total", "result" => "error").increment(1);
                tracing::error!(error = %err, "reload failed; keeping the running policy");
                Err(err)
            }
        }
    }

    /// Switches the mode of the running policy (and of every later reload).
    pub fn set_mode(&self, mode: Mode) {
        let mut slot = self.mode_override.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(mode);
        let current = self.policy.load_full();
        self.install(current.with_mode(mode), None);
        drop(slot);
        tracing::info!(mode = mode.as_str(), "mode changed");
    }

    /// Swaps in a new generation for new work, then closes the open tunnels it denies. A
    /// tunnel that registers during the walk checks the generation itself
    /// ([`crate::net::tunnel`]), so none slips between the swap and the walk.
    fn install(&self, policy: Policy, mode: Option<Mode>) {
        let policy = match mode {
            Some(mode) => policy.with_mode(mode),
            None => policy,
        };
        let policy = Arc::new(policy.with_self_addrs(&reachable(&self.own)));
        self.policy.store(Arc::clone(&policy));
        let closed = self.tunnels.recheck(&policy);
        if closed > 0 {
            tracing::info!(closed, "closed open tunnels the new policy denies");
        }
    }
}

/// Every address that reaches the listeners: a wildcard bind (`0.0.0.0`, `::`) answers on each
/// of the host's interface addresses too, so each of those on a listener port is the proxy.
/// Read at start and on every reload and mode switch, as interfaces come and go.
fn reachable(bound: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut addrs = bound.to_vec();
    let wildcard: Vec<&SocketAddr> = bound.iter().filter(|a| a.ip().is_unspecified()).collect();
    if wildcard.is_empty() {
        return addrs;
    }
    let interfaces = match nix::ifaddrs::getifaddrs() {
        Ok(interfaces) => interfaces,
        Err(err) => {
            tracing::warn!(error = %err, "cannot list interface addresses; self-connections are recognised on loopback only");
            return addrs;
        }
    };
    for interface in interfaces {
        let Some(address) = interface.address else {
            continue;
        };
        let ip = match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => continue,
        };
        for listener in &wildcard {
            // `::` takes IPv4 too (dual stack); `0.0.0.0` only IPv4.
            if listener.is_ipv6() || ip.is_ipv4() {
                addrs.push(SocketAddr::new(ip.to_canonical(), listener.port()));
            }
        }
    }
    addrs
}

/// Whether `new` changes a setting the running listeners took at start.
fn needs_restart(running: &Config, new: &Config) -> bool {
    running.proxy_addr != new.proxy_addr
        || running.socks_addr != new.socks_addr
        || running.admin_addr != new.admin_addr
        || running.enable_socks5 != new.enable_socks5
        || running.enable_socks5_udp != new.enable_socks5_udp
        || running.limits != new.limits
}

/// Settings that are not part of the policy files.
#[derive(Default)]
pub struct Options {
    /// Where JSON audit lines go; `None` keeps only the text log.
    pub audit: Option<Box<dyn Write + Send>>,
    /// The admin API on `admin_url`; `None` runs without it (as `run` does).
    pub admin: Option<AdminOptions>,
}

/// A started proxy.
pub struct Server {
    pub http_addr: SocketAddr,
    pub socks_addr: Option<SocketAddr>,
    /// Where the admin API listens, when it was started.
    pub admin_addr: Option<SocketAddr>,
    pub control: Arc<Control>,
    drain: DrainHandle,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds every listener of `config` (before any connection is accepted, the policy learns
    /// their addresses, so it can refuse connections to the proxy itself) and starts serving.
    pub async fn start(
        config: Config,
        policy: Policy,
        sources: Sources,
        options: Options,
    ) -> Result<Server, StartError> {
        let http = bind(config.proxy_addr, "proxy_url").await?;
        let http_addr = local(&http, config.proxy_addr);
        let socks = if config.enable_socks5 {
            Some(bind(config.socks_addr, "socks_url").await?)
        } else {
            None
        };
        let socks_addr = socks.as_ref().map(|s| local(s, config.socks_addr));
        let admin_listener = if options.admin.is_some() {
            Some(bind(config.admin_addr, "admin_url").await?)
        } else {
            None
        };
        let admin_addr = admin_listener.as_ref().map(|a| local(a, config.admin_addr));
        let mut own = vec![http_addr, admin_addr.unwrap_or(config.admin_addr)];
        own.extend(socks_addr);

        let resolver = Resolver::new(&config.dns)?;
        let handle = policy_handle(policy.with_self_addrs(&reachable(&own)));
        let events = Arc::new(Events::new(options.audit));
        let (drain_handle, drain) = drain::channel();
        let gate = Gate::new(Arc::clone(&handle), resolver);
        let resolver = Arc::clone(gate.resolver());
        let ctx = Ctx::with_events(
            gate,
            config.limits.clone(),
            Arc::clone(&events),
            drain.clone(),
        );
        let stopping = |drain: drain::Drain| async move { drain.stopping().await };

        let mut tasks = Vec::new();
        tracing::info!(addr = %http_addr, "http proxy listening");
        tasks.push(tokio::spawn(crate::http::serve(
            http,
            ctx.clone(),
            stopping(drain.clone()),
        )));
        if let (Some(socks), Some(addr)) = (socks, socks_addr) {
            let udp = if config.enable_socks5_udp {
                "with UDP"
            } else {
                "TCP only"
            };
            tracing::info!(%addr, udp, "socks5 proxy listening");
            let opts = SocksOptions {
                udp: config.enable_socks5_udp,
            };
            tasks.push(tokio::spawn(socks5::serve(
                socks,
                ctx.clone(),
                opts,
                stopping(drain.clone()),
            )));
        }
        let control = Arc::new(Control {
            sources,
            policy: handle,
            resolver,
            own,
            mode_override: Mutex::new(None),
            config: Mutex::new(Arc::new(config)),
            events,
            tunnels: Arc::clone(&ctx.tunnels),
        });
        if let (Some(listener), Some(admin_options)) = (admin_listener, options.admin) {
            tasks.push(tokio::spawn(admin::serve(
                listener,
                Arc::clone(&control),
                admin_options,
                stopping(drain.clone()),
            )));
        }
        Ok(Server {
            http_addr,
            socks_addr,
            admin_addr,
            control,
            drain: drain_handle,
            tasks,
        })
    }

    /// Stops accepting, lets open connections and tunnels finish for up to `grace`, and
    /// returns how many were still open when it gave up.
    pub async fn shutdown(self, grace: Duration) -> usize {
        self.drain.stop();
        for task in self.tasks {
            let _ = task.await;
        }
        let left = self.drain.wait(grace).await;
        if left > 0 {
            tracing::warn!(
                open = left,
                "shutdown deadline reached; closing remaining connections"
            );
        }
        left
    }
}

async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, key, source })
}

fn local(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

//! A running proxy: the listeners of one configuration, the policy generation they share, and
//! graceful shutdown. `serve`, `run`, the tests and embedders all start one through
//! [`Server::builder`]; what changes while it runs lives in [`crate::control`].

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminOptions};
use crate::audit::{DenialHook, Events};
use crate::config::{Config, Sources};
use crate::control::{reachable, Control};
use crate::decider::{Asker, Decider, DeciderOptions};
use crate::dns::Resolver;
use crate::gate::{policy_handle, Gate};
use crate::isolate::UdpFactory;
use crate::mitm::Mitm;
use crate::net::drain::{self, DrainHandle};
use crate::net::upstream::Chain;
/// Why TLS to an `https://` upstream proxy cannot be set up.
pub use crate::net::upstream::SetupError as UpstreamSetupError;
use crate::net::Ctx;
use crate::policy::{Policy, PolicyError};
use crate::session::SessionToken;
use crate::socks5::{self, SocksOptions};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Listeners could not be bound: every one that failed, not only the first.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Bind(Vec<BindError>),
    /// The `[dns]` settings cannot be used.
    #[error("cannot set up DNS: {0}")]
    Dns(#[from] crate::dns::DnsError),
    /// A rule does not compile.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// TLS to the `https://` upstream proxy cannot be set up (`[upstream] ca_file`, no CA).
    #[error(transparent)]
    Upstream(#[from] UpstreamSetupError),
}

/// One listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({key}): {source}")]
pub struct BindError {
    /// The address in the configuration.
    pub addr: SocketAddr,
    /// The key that set it (`proxy_url`, `socks_url`, `admin_url`).
    pub key: &'static str,
    /// Why.
    pub source: std::io::Error,
}

/// How to start a [`Server`]: a configuration, and what is not part of it.
pub struct Builder {
    config: Config,
    policy: Option<Policy>,
    sources: Option<Sources>,
    audit: Option<Box<dyn Write + Send>>,
    admin: Option<AdminOptions>,
    asker: Option<Asker>,
    watch: bool,
    on_first_denial: Option<DenialHook>,
    allowed_at_info: bool,
    listeners: Option<Listeners>,
    udp_relay: Option<Arc<UdpFactory>>,
    session: Option<SessionToken>,
    mitm: Option<Arc<Mitm>>,
}

/// Listeners bound by someone else: HTTP, and SOCKS5 if it runs.
type Listeners = (std::net::TcpListener, Option<std::net::TcpListener>);

impl Builder {
    /// Serves only clients that present `session` (HTTP `Proxy-Authorization: Basic`, SOCKS5
    /// RFC 1929), checked before the policy sees a request; `None` (the default) serves any
    /// client that reaches a listener. `run` sets one per run, so other local users cannot
    /// use its proxy.
    pub fn session_auth(mut self, session: Option<SessionToken>) -> Self {
        self.session = session;
        self
    }

    /// Intercepts with `mitm` (its CA and TLS configurations) the tunnels the policy says to
    /// inspect; `serve` and `run` build it at start when `mitm` is enabled.
    pub fn mitm(mut self, mitm: Arc<Mitm>) -> Self {
        self.mitm = Some(mitm);
        self
    }

    /// The policy `config` compiles to, when the caller has compiled it already (start-up
    /// then does not compile the rules a second time).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The files a reload (SIGHUP, `POST /reload`, a [`Builder::watch`]) re-reads. Without them a reload is
    /// refused: a configuration built in memory has nothing to re-read.
    pub fn reload_from(mut self, sources: Sources) -> Self {
        self.sources = Some(sources);
        self
    }

    /// Also reloads when one of the [`Builder::reload_from`] files changes on disk (off
    /// unless asked for; `serve` asks unless `--no-watch`). The first look after start
    /// compares what the files load to with the configuration given here, so one that differs
    /// from its files (changed in memory, or edited since) is reloaded from them.
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// Where JSON audit lines go; without it only the text log has them.
    pub fn audit(mut self, out: Box<dyn Write + Send>) -> Self {
        self.audit = Some(out);
        self
    }

    /// Also runs the admin API on `admin_url` (`run` does not: its child could reach it).
    pub fn admin(mut self, options: AdminOptions) -> Self {
        self.admin = Some(options);
        self
    }

    /// Calls `hook` the first time each destination is blocked for each reason (see
    /// [`Events::on_first_denial`]).
    pub fn on_first_denial(mut self, hook: DenialHook) -> Self {
        self.on_first_denial = Some(hook);
        self
    }

    /// Logs allowed decisions at INFO from the first connection on (see
    /// [`Events::log_allowed_at_info`], which switches it later).
    pub fn log_allowed_at_info(mut self, on: bool) -> Self {
        self.allowed_at_info = on;
        self
    }

    /// Asks `decider` about destinations no rule matched (see [`crate::decider`]), keeping
    /// each answer and bounding each question as `options` say.
    pub fn decider(mut self, decider: Arc<dyn Decider>, options: DeciderOptions) -> Self {
        self.asker = Some(Asker::new(decider, options));
        self
    }

    /// Serves these listeners instead of binding `proxy_url` and `socks_url` (`run --isolate`
    /// creates them in the command's network namespace).
    pub(crate) fn listeners(
        mut self,
        http: std::net::TcpListener,
        socks: Option<std::net::TcpListener>,
    ) -> Self {
        self.listeners = Some((http, socks));
        self
    }

    /// Has `factory` make the SOCKS5 UDP relay's client-facing sockets (in the command's
    /// network namespace).
    pub(crate) fn udp_relay(mut self, factory: Arc<UdpFactory>) -> Self {
        self.udp_relay = Some(factory);
        self
    }

    /// Binds every listener on `127.0.0.1:0`, whatever the configuration says: for tests and
    /// embedders that read the chosen ports from the [`Server`].
    pub fn ephemeral(mut self) -> Self {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        self.config.proxy_addr = any;
        self.config.socks_addr = any;
        self.config.admin_addr = any;
        self
    }

    /// Binds every listener (before any connection is accepted, the policy learns their
    /// addresses, so it can refuse connections to the proxy itself) and starts serving.
    pub async fn start(mut self) -> Result<Server, StartError> {
        let policy = match self.policy.take() {
            Some(policy) => policy,
            None => self.config.policy()?,
        };
        Server::start(self, policy).await
    }
}

/// A started proxy.
pub struct Server {
    /// Where the HTTP proxy listens.
    pub http_addr: SocketAddr,
    /// Where the SOCKS5 proxy listens, when it runs.
    pub socks_addr: Option<SocketAddr>,
    /// Where the admin API listens, when it was started.
    pub admin_addr: Option<SocketAddr>,
    /// Reload, mode and the running policy.
    pub control: Arc<Control>,
    drain: DrainHandle,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Starts building a server that runs `config`.
    pub fn builder(config: Config) -> Builder {
        Builder {
            config,
            policy: None,
            sources: None,
            audit: None,
            admin: None,
            asker: None,
            watch: false,
            on_first_denial: None,
            allowed_at_info: false,
            listeners: None,
            udp_relay: None,
            session: None,
            mitm: None,
        }
    }

    async fn start(builder: Builder, policy: Policy) -> Result<Server, StartError> {
        let Builder {
            config,
            sources,
            audit,
            admin,
            asker,
            watch,
            on_first_denial,
            allowed_at_info,
            listeners,
            udp_relay,
            session,
            mitm,
            ..
        } = builder;
        let Bound {
            http,
            socks,
            admin: admin_listener,
        } = match listeners {
            Some(given) => Bound::given(&config, given, admin.is_some()).await?,
            None => Bound::all(&config, admin.is_some()).await?,
        };
        let http_addr = local(&http, config.proxy_addr);
        let socks_addr = socks.as_ref().map(|s| local(s, config.socks_addr));
        let admin_addr = admin_listener.as_ref().map(|a| local(a, config.admin_addr));
        let mut own = vec![http_addr, admin_addr.unwrap_or(config.admin_addr)];
        own.extend(socks_addr);

        let resolver = Resolver::new(&config.dns)?;
        let own_reachable = reachable(&own);
        let chain = Chain::new(&config.upstream, &own_reachable)?;
        if let Some(chain) = &chain {
            tracing::info!(upstream = %chain, "chaining through the upstream proxy");
        }
        let handle = policy_handle(policy.with_self_addrs(&own_reachable));
        let events = events(audit, on_first_denial, allowed_at_info);
        let (drain_handle, drain) = drain::channel();
        let gate = Gate::new(Arc::clone(&handle), resolver)
            .with_asker(asker)
            .inspecting(mitm.is_some());
        let resolver = Arc::clone(gate.resolver());
        let ctx = Ctx::with_events(
            gate,
            config.limits.clone(),
            Arc::clone(&events),
            drain.clone(),
        )
        .with_upstream(chain)
        .with_session(session)
        .with_mitm(mitm);
        let stopping = |drain: drain::Drain| async move { drain.stopping().await };
        let socks = socks.zip(socks_addr);
        let socks_options = SocksOptions {
            udp: config.enable_socks5_udp,
            relay: udp_relay,
        };
        let mut tasks = serve_proxies((http, http_addr), socks, socks_options, &ctx, &drain);
        let control = Arc::new(Control {
            sources,
            policy: handle,
            resolver,
            own,
            mode_override: Mutex::new(None),
            config: Mutex::new(Arc::new(config)),
            events,
            tunnels: Arc::clone(&ctx.tunnels),
            inputs: Mutex::new(None),
        });
        if watch {
            tasks.extend(crate::watch::start(
                Arc::clone(&control),
                stopping(drain.clone()),
            ));
        }
        if let (Some(listener), Some(admin_options)) = (admin_listener, admin) {
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

/// Where decisions go: the audit file, `run`'s first-denial hook, allowed lines at INFO or not.
fn events(
    audit: Option<Box<dyn Write + Send>>,
    on_first_denial: Option<DenialHook>,
    allowed_at_info: bool,
) -> Arc<Events> {
    let events = Events::new(audit);
    let events = match on_first_denial {
        Some(hook) => events.on_first_denial(hook),
        None => events,
    };
    events.log_allowed_at_info(allowed_at_info);
    Arc::new(events)
}

/// Spawns the HTTP listener and, when it runs, the SOCKS5 one; each stops accepting when
/// `drain` says so.
fn serve_proxies(
    (http, http_addr): (TcpListener, SocketAddr),
    socks: Option<(TcpListener, SocketAddr)>,
    socks_options: SocksOptions,
    ctx: &Ctx,
    drain: &drain::Drain,
) -> Vec<JoinHandle<()>> {
    let stopping = |drain: drain::Drain| async move { drain.stopping().await };
    let mut tasks = Vec::new();
    tracing::info!(addr = %http_addr, "http proxy listening");
    tasks.push(tokio::spawn(crate::http::serve(
        http,
        ctx.clone(),
        stopping(drain.clone()),
    )));
    if let Some((socks, addr)) = socks {
        let udp = if socks_options.udp {
            "with UDP"
        } else {
            "TCP only"
        };
        tracing::info!(%addr, udp, "socks5 proxy listening");
        tasks.push(tokio::spawn(socks5::serve(
            socks,
            ctx.clone(),
            socks_options,
            stopping(drain.clone()),
        )));
    }
    tasks
}

/// The listeners a configuration asks for, bound.
struct Bound {
    http: TcpListener,
    socks: Option<TcpListener>,
    admin: Option<TcpListener>,
}

impl Bound {
    /// Every listener is tried before giving up, so one start reports every taken port.
    async fn all(config: &Config, admin: bool) -> Result<Bound, StartError> {
        let mut failed = Vec::new();
        let http = bind(config.proxy_addr, "proxy_url", &mut failed).await;
        let socks = if config.enable_socks5 {
            bind(config.socks_addr, "socks_url", &mut failed).await
        } else {
            None
        };
        let admin = if admin {
            bind(config.admin_addr, "admin_url", &mut failed).await
        } else {
            None
        };
        match http {
            Some(http) if failed.is_empty() => Ok(Bound { http, socks, admin }),
            _ => Err(StartError::Bind(failed)),
        }
    }
}

impl Bound {
    /// Listeners bound by someone else, and the admin API if asked for.
    async fn given(config: &Config, given: Listeners, admin: bool) -> Result<Bound, StartError> {
        let tokio = |listener: std::net::TcpListener, addr, key| {
            listener
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(listener))
                .map_err(|source| BindError { addr, key, source })
        };
        let mut failed = Vec::new();
        let http = tokio(given.0, config.proxy_addr, "proxy_url").map_err(|e| failed.push(e));
        let socks = given.1.filter(|_| config.enable_socks5).and_then(|s| {
            tokio(s, config.socks_addr, "socks_url")
                .map_err(|e| failed.push(e))
                .ok()
        });
        let admin = if admin {
            bind(config.admin_addr, "admin_url", &mut failed).await
        } else {
            None
        };
        match http {
            Ok(http) if failed.is_empty() => Ok(Bound { http, socks, admin }),
            _ => Err(StartError::Bind(failed)),
        }
    }
}

/// Binds `addr`, or adds why not to `failed`.
async fn bind(
    addr: SocketAddr,
    key: &'static str,
    failed: &mut Vec<BindError>,
) -> Option<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(listener) => Some(listener),
        Err(source) => {
            failed.push(BindError { addr, key, source });
            None
        }
    }
}

fn local(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

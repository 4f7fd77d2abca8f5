//! The HTTP proxy listener, in-process, for tests.
//!
//! [`ProxyBuilder::start`] binds 127.0.0.1:0, compiles the policy (told its own address, as the
//! daemon does), and serves `egress_proxy::http::serve` on a Tokio runtime of its own thread,
//! so sync tests can point `curl` or raw sockets at [`Proxy::addr`]. Dropping the [`Proxy`]
//! stops accepting and shuts that runtime down.
//!
//! ```ignore
//! let dns = FakeDns::start(vec![("allowed.test", Answer::A(vec![Ipv4Addr::LOCALHOST]))]);
//! let proxy = Proxy::builder()
//!     .allow("allowed.test")
//!     .allow_local_binding(true)
//!     .dns(&dns)
//!     .start();
//! ```
//!
//! Without [`ProxyBuilder::dns`], names are resolved by a fake server with an empty zone, so
//! every lookup is NXDOMAIN and nothing ever leaves loopback.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use egress_proxy::config::{DnsConfig, Limits};
use egress_proxy::dns::Resolver;
use egress_proxy::gate::{policy_handle, Gate};
use egress_proxy::net::Ctx;
use egress_proxy::policy::{
    Action, Mode, Origin, Policy, PolicyOptions, RuleSpec, UnixAction, UnixSocketSpec,
};
use tokio::sync::oneshot;

use super::fake_dns::FakeDns;

/// Settings for one proxy; every test builds its own.
#[derive(Clone, Debug)]
pub struct ProxyBuilder {
    rules: Vec<RuleSpec>,
    unix_sockets: Vec<UnixSocketSpec>,
    options: PolicyOptions,
    limits: Limits,
    dns_servers: Vec<SocketAddr>,
    dns_timeout: Duration,
}

/// A running proxy; stops on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// The empty-zone server used when the test gave none.
    _default_dns: Option<FakeDns>,
}

impl Proxy {
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder {
            rules: Vec::new(),
            unix_sockets: Vec::new(),
            options: PolicyOptions::default(),
            limits: Limits {
                // Short enough that a test that hits one still finishes in seconds.
                connect_timeout: Duration::from_secs(3),
                idle_timeout: Duration::from_secs(10),
                header_timeout: Duration::from_secs(5),
                ..Limits::default()
            },
            dns_servers: Vec::new(),
            dns_timeout: Duration::from_secs(2),
        }
    }

    /// `http://127.0.0.1:PORT`, for `curl -x`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl ProxyBuilder {
    fn rule(mut self, pattern: &str, action: Action) -> Self {
        self.rules.push(RuleSpec {
            pattern: pattern.to_string(),
            action,
            origin: Origin::Flag(match action {
                Action::Allow => "--allow",
                Action::Deny => "--deny",
            }),
            managed: false,
        });
        self
    }

    pub fn allow(self, pattern: &str) -> Self {
        self.rule(pattern, Action::Allow)
    }

    pub fn deny(self, pattern: &str) -> Self {
        self.rule(pattern, Action::Deny)
    }

    pub fn allow_local_binding(mut self, on: bool) -> Self {
        self.options.allow_local_binding = on;
        self
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.options.mode = mode;
        self
    }

    fn unix(mut self, path: impl Into<PathBuf>, action: UnixAction) -> Self {
        self.unix_sockets.push(UnixSocketSpec {
            path: path.into(),
            action,
            origin: Origin::Api,
        });
        self
    }

    pub fn allow_unix(self, path: impl Into<PathBuf>) -> Self {
        self.unix(path, UnixAction::Allow)
    }

    pub fn deny_unix(self, path: impl Into<PathBuf>) -> Self {
        self.unix(path, UnixAction::Deny)
    }

    /// `dangerously_allow_all_unix_sockets` (deny entries still win).
    pub fn allow_all_unix(mut self) -> Self {
        self.options.dangerously_allow_all_unix_sockets = true;
        self
    }

    /// Adjusts `[limits]`.
    pub fn limits(mut self, change: impl FnOnce(&mut Limits)) -> Self {
        change(&mut self.limits);
        self
    }

    /// Resolves names with this fake server.
    pub fn dns(mut self, dns: &FakeDns) -> Self {
        self.dns_servers = vec![dns.addr];
        self
    }

    /// The whole-lookup DNS budget (`[dns] timeout`).
    pub fn dns_timeout(mut self, timeout: Duration) -> Self {
        self.dns_timeout = timeout;
        self
    }

    /// Binds 127.0.0.1:0 and serves until the returned [`Proxy`] is dropped.
    pub fn start(self) -> Proxy {
        init_tracing();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy listener");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("proxy address");

        let default_dns = self
            .dns_servers
            .is_empty()
            .then(|| FakeDns::start(Vec::new()));
        let servers = match &default_dns {
            Some(dns) => vec![dns.addr],
            None => self.dns_servers.clone(),
        };
        let dns = DnsConfig {
            servers,
            timeout: self.dns_timeout,
            multi_answer: self.options.multi_answer,
        };
        let policy = Policy::new(&self.rules, &self.unix_sockets, self.options.clone())
            .expect("the test policy compiles")
            .with_self_addrs(&[addr]);
        let limits = self.limits;

        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                runtime.block_on(async move {
                    let started = (|| {
                        let listener = tokio::net::TcpListener::from_std(listener)
                            .map_err(|e| format!("listener: {e}"))?;
                        let resolver = Resolver::new(&dns).map_err(|e| format!("resolver: {e}"))?;
                        Ok::<_, String>((listener, resolver))
                    })();
                    let (listener, resolver) = match started {
                        Ok(parts) => {
                            let _ = ready_tx.send(Ok(()));
                            parts
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let ctx = Ctx::new(Gate::new(policy_handle(policy), resolver), limits);
                    egress_proxy::http::serve(listener, ctx, async {
                        let _ = shutdown_rx.await;
                    })
                    .await;
                });
                // Tunnels and kept connections still running are cancelled here.
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("spawn the proxy thread");
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the proxy did not start: {e}"),
            Err(e) => panic!("the proxy did not start: {e}"),
        }
        Proxy {
            addr,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
            _default_dns: default_dns,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `RUST_LOG=egress_proxy=debug cargo test …` shows what the proxy did.
fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

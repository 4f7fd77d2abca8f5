//! The whole proxy, in-process, for tests: one builder on [`Server::builder`] that every
//! listener test starts from.
//!
//! The builder writes a policy file into a temporary directory and loads it the way `serve`
//! does, with [`ProxyBuilder::allow`] and [`ProxyBuilder::deny`] as `--allow` and `--deny`
//! flags, so [`Proxy::rewrite`] can change the file and reload. Every listener binds
//! 127.0.0.1:0 ([`egress_proxy::server::Builder::ephemeral`]); the JSON audit lines are kept
//! in memory ([`Proxy::audit`]).
//!
//! ```ignore
//! let dns = FakeDns::start(vec![("allowed.test", Answer::A(vec![Ipv4Addr::LOCALHOST]))]);
//! let proxy = Proxy::builder().allow("allowed.test").allow_local_binding(true).dns(&dns)
//!     .start().await;            // in a Tokio test
//! //  .start_blocking();          // in a sync test: the proxy gets a runtime of its own
//! ```
//!
//! Without [`ProxyBuilder::dns`], names are resolved by a fake server with an empty zone, so
//! every lookup is NXDOMAIN and nothing ever leaves loopback.

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use egress_proxy::admin::AdminOptions;
use egress_proxy::config::{self, Limits, ProxyEnv, Sources};
use egress_proxy::control::Control;
use egress_proxy::policy::Mode;
use egress_proxy::server::Server;
use egress_proxy::session::SessionToken;
use serde_json::Value;
use tokio::sync::oneshot;

use super::fake_dns::FakeDns;

/// The admin token of every harness proxy started with [`ProxyBuilder::admin`].
pub const TOKEN: &str = "harness-token";

/// Settings for one proxy; every test builds its own.
#[derive(Clone, Debug)]
pub struct ProxyBuilder {
    allow: Vec<String>,
    deny: Vec<String>,
    unix: Vec<(PathBuf, &'static str)>,
    allow_local_binding: bool,
    allow_all_unix: bool,
    mode: Mode,
    udp: bool,
    limits: Limits,
    dns: Option<SocketAddr>,
    dns_timeout: Duration,
    extra: String,
    admin: bool,
    /// The proxy's own environment (`HTTPS_PROXY`, …), as the CLI would read it.
    env: Vec<(String, String)>,
    /// The credentials every client must present (`run`'s session auth).
    session: Option<SessionToken>,
}

/// The JSON audit lines the proxy wrote, shared with the test.
#[derive(Clone, Default)]
pub struct AuditLog(Arc<Mutex<Vec<u8>>>);

impl Write for AuditLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AuditLog {
    /// Every line with `"event": event`, oldest first.
    pub fn events(&self, event: &str) -> Vec<Value> {
        let text = self.0.lock().unwrap().clone();
        String::from_utf8(text)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|line| line["event"] == event)
            .collect()
    }
}

/// A running proxy; stops on drop.
pub struct Proxy {
    /// The HTTP listener.
    pub addr: SocketAddr,
    /// The SOCKS5 listener (`enable_socks5` is on unless the extra TOML turns it off).
    pub socks: Option<SocketAddr>,
    /// The admin API, when [`ProxyBuilder::admin`] asked for it.
    pub admin: Option<SocketAddr>,
    pub control: Arc<Control>,
    pub audit: AuditLog,
    policy_file: PathBuf,
    builder: ProxyBuilder,
    running: Running,
    _dir: tempfile::TempDir,
    /// The empty-zone server used when the test gave none.
    _default_dns: Option<FakeDns>,
}

enum Running {
    /// Started by `start().await`: the server's tasks live on the test's runtime.
    Task(Option<Server>),
    /// Started by `start_blocking()`: a thread of its own runs the runtime.
    Thread {
        shutdown: Option<oneshot::Sender<()>>,
        thread: Option<JoinHandle<()>>,
    },
}

impl Proxy {
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder {
            allow: Vec::new(),
            deny: Vec::new(),
            unix: Vec::new(),
            allow_local_binding: false,
            allow_all_unix: false,
            mode: Mode::Full,
            udp: true,
            limits: Limits {
                // Short enough that a test that hits one still finishes in seconds.
                connect_timeout: Duration::from_secs(3),
                idle_timeout: Duration::from_secs(10),
                header_timeout: Duration::from_secs(5),
                ..Limits::default()
            },
            dns: None,
            dns_timeout: Duration::from_secs(2),
            extra: String::new(),
            admin: false,
            env: Vec::new(),
            session: None,
        }
    }

    /// `http://127.0.0.1:PORT`, for `curl -x`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The SOCKS5 listener; panics when SOCKS5 is off.
    pub fn socks_addr(&self) -> SocketAddr {
        self.socks.expect("SOCKS5 is enabled")
    }

    /// `(host, reason)` of every denial recorded for `protocol` (`http`, `connect`,
    /// `socks-tcp`, `socks-udp`, `unix`), oldest first.
    pub fn denials(&self, protocol: &str) -> Vec<(String, &'static str)> {
        self.control
            .events()
            .recent_denials()
            .into_iter()
            .filter(|d| d.protocol.as_str() == protocol)
            .map(|d| (d.host, d.reason))
            .collect()
    }

    /// Replaces the extra TOML of [`ProxyBuilder::toml`] in the policy file and reloads it.
    /// The rules of [`ProxyBuilder::allow`] and [`ProxyBuilder::deny`] are flags, as on the
    /// command line: a reload keeps them.
    pub fn rewrite(&mut self, extra: &str) {
        self.builder.extra = format!("{extra}\n");
        let dns = self
            .builder
            .dns
            .or(self._default_dns.as_ref().map(|d| d.addr));
        std::fs::write(&self.policy_file, self.builder.policy_text(dns)).unwrap();
        self.control.reload().expect("the rewritten policy loads");
    }

    /// Stops accepting, waits up to `grace` for open connections, and returns how many were
    /// still open. Only for a proxy started with `start().await`.
    pub async fn shutdown(mut self, grace: Duration) -> usize {
        match &mut self.running {
            Running::Task(server) => {
                server
                    .take()
                    .expect("not shut down yet")
                    .shutdown(grace)
                    .await
            }
            Running::Thread { .. } => panic!("shutdown is for a proxy started with start()"),
        }
    }
}

impl ProxyBuilder {
    pub fn allow(mut self, pattern: &str) -> Self {
        self.allow.push(pattern.to_string());
        self
    }

    pub fn deny(mut self, pattern: &str) -> Self {
        self.deny.push(pattern.to_string());
        self
    }

    pub fn allow_local_binding(mut self, on: bool) -> Self {
        self.allow_local_binding = on;
        self
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// `enable_socks5_udp`.
    pub fn udp(mut self, on: bool) -> Self {
        self.udp = on;
        self
    }

    pub fn allow_unix(mut self, path: impl Into<PathBuf>) -> Self {
        self.unix.push((path.into(), "allow"));
        self
    }

    pub fn deny_unix(mut self, path: impl Into<PathBuf>) -> Self {
        self.unix.push((path.into(), "deny"));
        self
    }

    /// `dangerously_allow_all_unix_sockets` (deny entries still win).
    pub fn allow_all_unix(mut self) -> Self {
        self.allow_all_unix = true;
        self
    }

    /// Adjusts `[limits]` (they apply at start only, as in the daemon).
    pub fn limits(mut self, change: impl FnOnce(&mut Limits)) -> Self {
        change(&mut self.limits);
        self
    }

    /// Resolves names with this fake server.
    pub fn dns(mut self, dns: &FakeDns) -> Self {
        self.dns = Some(dns.addr);
        self
    }

    /// The whole-lookup DNS budget (`[dns] timeout_ms`).
    pub fn dns_timeout(mut self, timeout: Duration) -> Self {
        self.dns_timeout = timeout;
        self
    }

    /// More top-level policy-file keys, written before any table.
    pub fn toml(mut self, extra: &str) -> Self {
        self.extra.push_str(extra);
        self.extra.push('\n');
        self
    }

    /// Sets a variable of the proxy's own environment (where an upstream proxy comes from).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Serves only clients with `session`'s credentials, as `run` does.
    pub fn session(mut self, session: SessionToken) -> Self {
        self.session = Some(session);
        self
    }

    /// Also runs the admin API, with the token [`TOKEN`] and no metrics recorder.
    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    fn policy_text(&self, dns: Option<SocketAddr>) -> String {
        let mut text = format!(
            "enabled = true\nmode = \"{}\"\nallow_local_binding = {}\nenable_socks5_udp = {}\n\
             dangerously_allow_all_unix_sockets = {}\n{}",
            self.mode.as_str(),
            self.allow_local_binding,
            self.udp,
            self.allow_all_unix,
            self.extra,
        );
        text.push_str("\n[unix_sockets]\n");
        for (path, action) in &self.unix {
            writeln!(text, "{:?} = \"{action}\"", path.display().to_string()).unwrap();
        }
        let servers: Vec<String> = dns.iter().map(|a| format!("\"{a}\"")).collect();
        write!(
            text,
            "\n[dns]\nservers = [{}]\ntimeout_ms = {}\n",
            servers.join(", "),
            self.dns_timeout.as_millis()
        )
        .unwrap();
        text
    }

    /// Writes and loads the policy file; what both starts share.
    fn prepare(self) -> (egress_proxy::server::Builder, Prepared) {
        init_tracing();
        let default_dns = self.dns.is_none().then(|| FakeDns::start(Vec::new()));
        let dns = self.dns.or(default_dns.as_ref().map(|d| d.addr));
        let dir = tempfile::tempdir().unwrap();
        let policy_file = dir.path().join("policy.toml");
        std::fs::write(&policy_file, self.policy_text(dns)).unwrap();
        let sources = Sources {
            configs: vec![policy_file.clone()],
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            env: ProxyEnv::from_vars(self.env.iter().map(|(k, v)| (k, v))),
            ..Sources::default()
        };
        let mut config = config::load(&sources).expect("the test policy loads");
        config.limits = self.limits.clone();
        let audit = AuditLog::default();
        let mut server = Server::builder(config)
            .reload_from(sources)
            .audit(Box::new(audit.clone()))
            .session_auth(self.session.clone())
            .ephemeral();
        if self.admin {
            server = server.admin(AdminOptions {
                token: Arc::from(TOKEN),
                metrics: None,
            });
        }
        let prepared = Prepared {
            audit,
            policy_file,
            builder: self,
            dir,
            default_dns,
        };
        (server, prepared)
    }

    /// Starts the proxy on the calling Tokio runtime.
    pub async fn start(self) -> Proxy {
        let (server, prepared) = self.prepare();
        let server = server.start().await.expect("the proxy starts");
        let started = Started::of(&server);
        prepared.finish(started, Running::Task(Some(server)))
    }

    /// Starts the proxy on a runtime of its own thread, for sync tests; dropping the
    /// [`Proxy`] stops it.
    pub fn start_blocking(self) -> Proxy {
        let (server, prepared) = self.prepare();
        let (ready_tx, ready_rx) = mpsc::channel::<Started>();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("harness-proxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                runtime.block_on(async move {
                    let server = server.start().await.expect("the proxy starts");
                    let _ = ready_tx.send(Started::of(&server));
                    let _ = shutdown_rx.await;
                    server.shutdown(Duration::ZERO).await;
                });
                // Tunnels and kept connections still running are cancelled here.
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("spawn the proxy thread");
        let started = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the proxy started");
        prepared.finish(
            started,
            Running::Thread {
                shutdown: Some(shutdown_tx),
                thread: Some(thread),
            },
        )
    }
}

/// What a started [`Proxy`] keeps besides the server.
struct Prepared {
    audit: AuditLog,
    policy_file: PathBuf,
    builder: ProxyBuilder,
    dir: tempfile::TempDir,
    default_dns: Option<FakeDns>,
}

struct Started {
    http: SocketAddr,
    socks: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    control: Arc<Control>,
}

impl Started {
    fn of(server: &Server) -> Started {
        Started {
            http: server.http_addr,
            socks: server.socks_addr,
            admin: server.admin_addr,
            control: Arc::clone(&server.control),
        }
    }
}

impl Prepared {
    fn finish(self, started: Started, running: Running) -> Proxy {
        Proxy {
            addr: started.http,
            socks: started.socks,
            admin: started.admin,
            control: started.control,
            audit: self.audit,
            policy_file: self.policy_file,
            builder: self.builder,
            running,
            _dir: self.dir,
            _default_dns: self.default_dns,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Running::Thread { shutdown, thread } = &mut self.running {
            if let Some(tx) = shutdown.take() {
                let _ = tx.send(());
            }
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// `RUST_LOG=egress_proxy=debug cargo test …` shows what the proxy did.
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|value| value.parse::<tracing_subscriber::filter::Targets>().ok());
    if let Some(filter) = filter {
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_test_writer())
            .try_init();
    }
}

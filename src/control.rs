//! What can change while the proxy runs: the policy generation (reload, `POST /mode`), the
//! resolver and the configuration they came from. The admin API, the signal handlers and the
//! file watch depend on this module, not on the server that started the listeners.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::audit::Events;
use crate::config::{self, Config, ConfigError, Sources};
use crate::dns::{DnsError, Resolver};
use crate::gate::{PolicyHandle, ResolverHandle};
use crate::net::tunnels::Tunnels;
use crate::policy::{Mode, Policy, PolicyError};

/// Why a configuration could not be loaded, or a reload was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error(transparent)]
    /// A file could not be read or parsed.
    Config(#[from] ConfigError),
    #[error(transparent)]
    /// A rule does not compile.
    Policy(#[from] PolicyError),
    /// `serve` and `run` refuse to start, and a reload is refused, when the layered
    /// configuration says `enabled = false`: nothing ever carries traffic under a policy its
    /// own files switched off.
    #[error(
        "the network policy is not enabled (set `enabled = true`, or \
         `features.network_proxy.enabled = true` in a Codex config.toml)"
    )]
    NotEnabled,
    #[error("cannot set up DNS: {0}")]
    /// The new `[dns]` settings cannot be used.
    Dns(#[from] DnsError),
    /// The server was built from a configuration in memory: there is nothing to re-read.
    #[error("this proxy was started from a configuration in memory; there are no files to reload")]
    NoFiles,
}

/// `POST /mode` asked for `full` while the requirements set `limited`.
#[derive(Debug, thiserror::Error)]
#[error("the requirements set mode = \"limited\"; it cannot be widened at run time")]
pub struct ManagedMode;

/// Reads every layer of `sources` and compiles the policy: what start-up and reload share.
pub fn load(sources: &Sources) -> Result<(Config, Policy), LoadError> {
    let config = config::load(sources)?;
    let policy = config.policy()?;
    Ok((config, policy))
}

/// What the admin API and signal handlers can change while the proxy runs.
pub struct Control {
    /// What a reload re-reads; `None` for a configuration built in memory.
    pub(crate) sources: Option<Sources>,
    pub(crate) policy: PolicyHandle,
    pub(crate) resolver: ResolverHandle,
    /// The listeners' own addresses, re-applied to every new generation.
    pub(crate) own: Vec<SocketAddr>,
    /// Set by `POST /mode`; survives reloads, so an operator's switch to `limited` is not
    /// undone by an unrelated policy edit.
    pub(crate) mode_override: Mutex<Option<Mode>>,
    pub(crate) config: Mutex<Arc<Config>>,
    pub(crate) events: Arc<Events>,
    /// The listeners' open tunnels, re-decided by every new generation.
    pub(crate) tunnels: Arc<Tunnels>,
    /// What the policy files held when a reload last read them (`None` until the first reload
    /// or the file watch's first look). Held for a whole reload, so reloads run one at a time
    /// and a slower one never installs an older read over a newer one.
    pub(crate) inputs: Mutex<Option<Inputs>>,
}

/// The bytes of every policy file (`--config` files, then `--requirements`), or why one could
/// not be read: what the file watch compares, so an event that changes no policy input
/// (another file in the same directory, a rewrite with the same bytes) does not reload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Inputs(Vec<Result<Vec<u8>, io::ErrorKind>>);

impl Inputs {
    /// Reads every policy file of `sources` now, through any symlinks.
    pub(crate) fn read(sources: &Sources) -> Inputs {
        Inputs(
            policy_files(sources)
                .map(|path| std::fs::read(path).map_err(|e| e.kind()))
                .collect(),
        )
    }
}

/// The files a configuration is loaded from, in load order.
pub(crate) fn policy_files(sources: &Sources) -> impl Iterator<Item = &PathBuf> {
    sources.configs.iter().chain(&sources.requirements)
}

impl Control {
    /// The policy generation new connections use.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// The configuration that generation came from.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .lock()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    /// Where decisions are reported (the blocked summary, recent denials).
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
    pub fn reload(&self) -> Result<(), LoadError> {
        let mut inputs = self.lock_inputs();
        if let Some(sources) = &self.sources {
            *inputs = Some(Inputs::read(sources));
        }
        self.reload_held()
    }

    /// [`Control::reload`] when a policy file holds something else than the last reload read
    /// (`None`: nothing changed, nothing was reloaded). The file watch's way in: events say
    /// that a directory changed, this says whether the policy did. Before any reload there is
    /// no earlier read, so the first look compares what the files load to with the running
    /// configuration, which was loaded before the watch began: an edit in between is not lost.
    pub(crate) fn reload_if_changed(&self) -> Option<Result<(), LoadError>> {
        let sources = self.sources.as_ref()?;
        let mut inputs = self.lock_inputs();
        let now = Inputs::read(sources);
        let changed = match inputs.as_ref() {
            Some(before) => *before != now,
            None => !matches!(config::load(sources), Ok(config) if config == *self.config()),
        };
        *inputs = Some(now);
        if !changed {
            return None;
        }
        tracing::info!("a policy file changed on disk; reloading");
        Some(self.reload_held())
    }

    fn lock_inputs(&self) -> MutexGuard<'_, Option<Inputs>> {
        self.inputs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reload itself; the caller holds [`Control::inputs`].
    fn reload_held(&self) -> Result<(), LoadError> {
        let running = self.config();
        let sources = self.sources.as_ref().ok_or(LoadError::NoFiles);
        let result = sources.and_then(load).and_then(|(config, policy)| {
            if !config.enabled {
                return Err(LoadError::NotEnabled);
            }
            let resolver = if config.dns == running.dns {
                None
            } else {
                Some(Resolver::new(&config.dns)?)
            };
            Ok((config, policy, resolver))
        });
        match result {
            Ok((config, policy, resolver)) => {
                // Held until the config is stored too: a concurrent `/mode` or reload cannot
                // interleave and pair this policy with another config or lose the override.
                let mode = self.mode_override.lock().unwrap_or_else(|p| p.into_inner());
                // An override from before the requirements said `limited` does not widen them.
                let kept = match (*mode, config.managed_mode) {
                    (Some(Mode::Full), Some(Mode::Limited)) => Some(Mode::Limited),
                    (kept, _) => kept,
                };
                self.install(policy, kept);
                if let Some(resolver) = resolver {
                    self.resolver.store(Arc::new(resolver));
                }
                if needs_restart(&running, &config) {
                    tracing::warn!(
                        "listener addresses, SOCKS5 settings, [limits] and the upstream proxy \
                         apply at start only; restart to use the new values"
                    );
                }
                if let Ok(mut current) = self.config.lock() {
                    *current = Arc::new(config);
                }
                drop(mode);
                metrics::counter!(crate::metrics::RELOADS, "result" => "ok").increment(1);
                tracing::info!("policy reloaded");
                Ok(())
            }
            Err(err) => {
                metrics::counter!(crate::metrics::RELOADS, "result" => "error").increment(1);
                tracing::error!(error = %err, "reload failed; keeping the running policy");
                Err(err)
            }
        }
    }

    /// Switches the mode of the running policy (and of every later reload). The requirements'
    /// `limited` is the administrator's and stays: widening it is refused.
    pub fn set_mode(&self, mode: Mode) -> Result<(), ManagedMode> {
        let mut slot = self.mode_override.lock().unwrap_or_else(|p| p.into_inner());
        if mode == Mode::Full && self.config().managed_mode == Some(Mode::Limited) {
            return Err(ManagedMode);
        }
        *slot = Some(mode);
        let current = self.policy.load_full();
        self.install(current.with_mode(mode), None);
        drop(slot);
        tracing::info!(mode = mode.as_str(), "mode changed");
        Ok(())
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
pub(crate) fn reachable(bound: &[SocketAddr]) -> Vec<SocketAddr> {
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
        || running.upstream != new.upstream
}

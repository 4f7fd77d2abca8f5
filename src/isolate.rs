//! `run --isolate`: the command runs in a network namespace of its own, where the proxy's
//! listeners are the only way out.
//!
//! A helper stage of this binary (`egress-proxy __isolate`, started by [`Sandbox::start`])
//! enters a new user and network namespace whose only interface is `lo`, creates the
//! listening sockets there and hands them to the proxy over a Unix socket pair: a socket
//! keeps the namespace it was created in, so the proxy accepts the command's connections on
//! them and dials out from the host's namespace. The helper then stays inside, as the
//! factory of the SOCKS5 UDP relay's client-facing sockets ([`UdpFactory`]), the DNS
//! responder that refuses every query, and the parent of the command.
//!
//! Invariants:
//! - Fail closed: when any step (namespaces, uid/gid maps, `lo`, seccomp) fails, the helper
//!   reports the cause and exits before the command is started; the command never runs
//!   outside the namespace.
//! - No byte passes through the helper: the proxy splices between the command's connection
//!   and the destination as without `--isolate`.
//! - Even as root the command gets a user namespace (every id mapped to itself): root with
//!   capabilities in the host's user namespace could enter the host's network namespace
//!   again.
//! - Linux only; elsewhere [`Sandbox::start`] says it is not supported here.

#[cfg(target_os = "linux")]
mod channel;
#[cfg(target_os = "linux")]
pub(crate) mod dns;
#[cfg(target_os = "linux")]
pub(crate) mod helper;
#[cfg(target_os = "linux")]
mod namespace;
#[cfg(target_os = "linux")]
mod sandbox;
#[cfg(target_os = "linux")]
pub(crate) mod seccomp;
#[cfg(not(target_os = "linux"))]
mod unsupported;

#[cfg(target_os = "linux")]
pub use sandbox::{Sandbox, UdpFactory};
#[cfg(not(target_os = "linux"))]
pub use unsupported::{Sandbox, UdpFactory};

/// The hidden subcommand the helper stage runs as.
pub const HELPER_COMMAND: &str = "__isolate";

/// `NO_PROXY` inside the namespace: its loopback is the sandbox's own, so the command's dev
/// servers are reached directly.
pub const NO_PROXY: &str = "localhost,127.0.0.1,::1";

/// What the helper stage is asked for, besides the command.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Also create the SOCKS5 listener.
    pub socks: bool,
    /// `dangerously_allow_all_unix_sockets`: leave `socket(AF_UNIX)` allowed.
    pub allow_unix_sockets: bool,
    /// `--quiet`: do not report the first refused DNS query.
    pub quiet: bool,
}

/// Why the command cannot be isolated; each is one line naming the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IsolateError {
    /// Not Linux.
    #[cfg(not(target_os = "linux"))]
    #[error("--isolate needs Linux network namespaces, which this system does not have")]
    NotSupported,
    /// The helper stage could not be started or talked to.
    #[error("cannot start the isolation helper: {0}")]
    Helper(std::io::Error),
    /// The helper stage reported a failed step.
    #[error("{0}")]
    Step(String),
    /// The helper stage ended before it was ready.
    #[error("the isolation helper ended before the namespace was ready")]
    HelperEnded,
}

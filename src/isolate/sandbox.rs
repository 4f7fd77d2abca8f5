//! The proxy's side of the helper stage: start it, map its ids, take its listeners, give it
//! the command's environment, and ask it for UDP relay sockets while the command runs.

use std::ffi::OsString;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustix::net::{AddressFamily, SocketFlags, SocketType};
use tokio::process::Child;

use super::channel::{self, Channel, MAPPED, READY, SPAWN, UDP, UDP_ANSWER, UNSHARED};
use super::{namespace, IsolateError, Options, HELPER_COMMAND};

/// A started helper stage whose namespace is ready, before the command starts.
pub struct Sandbox {
    helper: Child,
    channel: Arc<Channel>,
    http: Option<std::net::TcpListener>,
    socks: Option<std::net::TcpListener>,
}

impl Sandbox {
    /// Starts the helper stage for `command` and waits until its listeners are ready.
    pub async fn start(options: Options, command: &[OsString]) -> Result<Sandbox, IsolateError> {
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| IsolateError::Helper(e.into()))?;
        let channel = Channel::new(ours).map_err(IsolateError::Helper)?;
        let mut helper = spawn_helper(options, command, theirs).map_err(IsolateError::Helper)?;
        match handshake(&channel, &helper).await {
            Ok((http, socks)) => Ok(Sandbox {
                helper,
                channel: Arc::new(channel),
                http: Some(http),
                socks,
            }),
            Err(error) => {
                // It has reported, or never will: either way it must not go on.
                let _ = helper.start_kill();
                let _ = helper.wait().await;
                Err(error)
            }
        }
    }

    /// The HTTP and SOCKS5 listeners, created inside the namespace (once).
    pub fn take_listeners(
        &mut self,
    ) -> Option<(std::net::TcpListener, Option<std::net::TcpListener>)> {
        let http = self.http.take()?;
        Some((http, self.socks.take()))
    }

    /// Makes the SOCKS5 UDP relay's client-facing sockets inside the namespace.
    pub fn udp_factory(&self) -> Arc<UdpFactory> {
        Arc::new(UdpFactory {
            channel: Arc::clone(&self.channel),
            one_at_a_time: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Starts the command with `env` on top of the inherited environment and our stdin; the
    /// helper is what to wait for and signal: its exit status is the command's.
    pub async fn spawn(self, env: &[(&str, String)]) -> io::Result<Child> {
        let mut payload = Vec::new();
        for (name, value) in env {
            payload.extend_from_slice(name.as_bytes());
            payload.push(0);
            payload.extend_from_slice(value.as_bytes());
            payload.push(0);
        }
        let stdin = std::io::stdin();
        // A closed stdin stays closed (null) for the command.
        let fds = match rustix::io::fcntl_getfd(stdin.as_fd()) {
            Ok(_) => vec![stdin.as_fd()],
            Err(_) => Vec::new(),
        };
        self.channel.send(SPAWN, &payload, &fds).await?;
        Ok(self.helper)
    }
}

/// `/proc/self/exe __isolate [flags] -- CMD…` with the socket pair's other end as its stdin.
fn spawn_helper(options: Options, command: &[OsString], theirs: OwnedFd) -> io::Result<Child> {
    let mut helper = tokio::process::Command::new("/proc/self/exe");
    helper.arg(HELPER_COMMAND);
    if options.socks {
        helper.arg("--socks");
    }
    if options.allow_unix_sockets {
        helper.arg("--allow-unix-sockets");
    }
    if options.quiet {
        helper.arg("--quiet");
    }
    helper
        .arg("--")
        .args(command)
        .stdin(Stdio::from(theirs))
        .kill_on_drop(false);
    // The command's own stdin travels with the go message; `helper` (and our copy of the
    // pair's other end, which would hide the helper's exit) is dropped here.
    helper.spawn()
}

/// The messages up to the listeners' hand-over.
async fn handshake(
    channel: &Channel,
    helper: &Child,
) -> Result<(std::net::TcpListener, Option<std::net::TcpListener>), IsolateError> {
    let next = |tag| async move {
        let message = channel.recv().await.map_err(IsolateError::Helper)?;
        channel::expect(message, tag)
            .map_err(|why| why.map_or(IsolateError::HelperEnded, IsolateError::Step))
    };
    next(UNSHARED).await?;
    let pid = helper.id().ok_or(IsolateError::HelperEnded)?;
    namespace::write_maps(pid).map_err(IsolateError::Step)?;
    channel
        .send(MAPPED, &[], &[])
        .await
        .map_err(IsolateError::Helper)?;
    let ready = next(READY).await?;
    let mut fds = ready.fds.into_iter();
    let http = fds.next().ok_or(IsolateError::HelperEnded)?;
    Ok((http.into(), fds.next().map(Into::into)))
}

/// Asks the helper for UDP sockets bound inside the namespace, one request at a time.
pub struct UdpFactory {
    channel: Arc<Channel>,
    one_at_a_time: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
}

impl UdpFactory {
    /// A UDP socket bound to `ip:0` inside the namespace.
    pub async fn bind(&self, ip: IpAddr) -> io::Result<tokio::net::UdpSocket> {
        let _turn = self.one_at_a_time.lock().await;
        // A request whose caller went away leaves its answer behind; ids tell it apart.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let request = format!("{id} {ip}");
        self.channel.send(UDP, request.as_bytes(), &[]).await?;
        loop {
            let ended =
                || io::Error::new(io::ErrorKind::BrokenPipe, "the isolation helper has ended");
            let answer = self.channel.recv().await?.ok_or_else(ended)?;
            if answer.tag != UDP_ANSWER {
                continue;
            }
            let text = String::from_utf8_lossy(&answer.payload);
            let (answer_id, error) = text.split_once(' ').unwrap_or((&text, ""));
            if answer_id != id {
                continue;
            }
            let Some(fd) = answer.fds.into_iter().next() else {
                return Err(io::Error::other(format!(
                    "cannot bind a UDP socket in the namespace: {error}"
                )));
            };
            let socket = std::net::UdpSocket::from(fd);
            socket.set_nonblocking(true)?;
            return tokio::net::UdpSocket::from_std(socket);
        }
    }
}

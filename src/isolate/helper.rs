//! The helper stage inside the namespace, up to the command's start: enter the namespaces,
//! bring `lo` up, create the listeners and hand them over, then serve the proxy's requests
//! for UDP relay sockets and refuse DNS. Starting the command and passing its exit status on
//! are the CLI's (`cli/isolate.rs`).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;

use super::channel::{self, Channel, MAPPED, READY, SPAWN, UDP, UDP_ANSWER, UNSHARED};
use super::{dns, namespace, seccomp, Options};

/// The helper between the namespaces' creation and the command's start.
pub struct Prepared {
    channel: OwnedFd,
    dns: (std::net::UdpSocket, std::net::TcpListener),
    quiet: bool,
}

/// What the proxy asked the command to be started with.
pub struct Spawn {
    /// The proxy variables, on top of the inherited environment.
    pub env: Vec<(String, String)>,
    /// The proxy's stdin, or null when it has none.
    pub stdin: Stdio,
}

/// Everything up to the listeners' hand-over, while the process is still single-threaded.
/// The channel to the proxy is our stdin. Any failure is sent to the proxy, which reports it;
/// `Err` means the command must not be started.
pub fn prepare(options: &Options) -> Result<Prepared, ()> {
    let channel = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|_| ())?;
    match steps(&channel, options) {
        Ok(dns) => Ok(Prepared {
            channel,
            dns,
            quiet: options.quiet,
        }),
        Err(why) => {
            let _ = channel::send(channel.as_fd(), channel::FAILED, why.as_bytes(), &[]);
            Err(())
        }
    }
}

type DnsSockets = (std::net::UdpSocket, std::net::TcpListener);

fn steps(channel: &OwnedFd, options: &Options) -> Result<DnsSockets, String> {
    let lost = |e: std::io::Error| format!("lost the proxy: {e}");
    // Compiled first: nothing is created for a filter this system cannot have.
    let filter = seccomp::filter(options.allow_unix_sockets)?;
    namespace::enter()?;
    channel::send(channel.as_fd(), UNSHARED, &[], &[]).map_err(lost)?;
    match channel::recv(channel.as_fd()).map_err(lost)? {
        Some(message) if message.tag == MAPPED => {}
        _ => return Err("the proxy did not map the namespace's ids".into()),
    }
    namespace::loopback_up()?;
    namespace::point_resolver_here()?;
    let listen = || std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)));
    let bind_failed = |e: std::io::Error| format!("cannot listen inside the namespace: {e}");
    let http = listen().map_err(bind_failed)?;
    let socks = options
        .socks
        .then(listen)
        .transpose()
        .map_err(bind_failed)?;
    let dns = dns::bind().map_err(|e| format!("cannot bind port 53 inside the namespace: {e}"))?;
    seccomp::apply(&filter)?;
    let mut fds = vec![http.as_fd()];
    fds.extend(socks.as_ref().map(AsFd::as_fd));
    channel::send(channel.as_fd(), READY, &[], &fds).map_err(lost)?;
    Ok(dns)
}

impl Prepared {
    /// Waits for the proxy's go (on the runtime now running), starts the DNS responder and
    /// the UDP socket factory, and returns how to start the command; `None` if the proxy
    /// went away first.
    pub async fn wait_for_spawn(self) -> Option<Spawn> {
        let channel = Channel::new(self.channel).ok()?;
        let message = channel::expect(channel.recv().await.ok()?, SPAWN).ok()?;
        let env = parse_env(&message.payload);
        let stdin = message
            .fds
            .into_iter()
            .next()
            .map_or_else(Stdio::null, Stdio::from);
        let reporter = Arc::new(dns::Reporter::new(self.quiet));
        let (udp, tcp) = self.dns;
        if let Ok(udp) = tokio::net::UdpSocket::from_std(udp) {
            let reporter = Arc::clone(&reporter);
            tokio::spawn(async move { dns::serve_udp(udp, &reporter).await });
        }
        if let Ok(tcp) = tokio::net::TcpListener::from_std(tcp) {
            tokio::spawn(dns::serve_tcp(tcp, reporter));
        }
        tokio::spawn(serve_factory(channel));
        Some(Spawn { env, stdin })
    }
}

/// `NAME\0VALUE\0`… as pairs.
fn parse_env(payload: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(payload);
    let mut fields = text.split('\0');
    let mut env = Vec::new();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        env.push((name.to_string(), value.to_string()));
    }
    env
}

/// Answers the proxy's requests for UDP relay sockets (`ID IP`) with the socket, bound to
/// `IP:0` here in the namespace, or why not, under the same `ID`.
async fn serve_factory(channel: Channel) {
    while let Ok(Some(message)) = channel.recv().await {
        if message.tag != UDP {
            continue;
        }
        let request = String::from_utf8_lossy(&message.payload).into_owned();
        let (id, ip) = request.split_once(' ').unwrap_or((&request, ""));
        let bound = ip
            .parse::<IpAddr>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
            .and_then(|ip| std::net::UdpSocket::bind(SocketAddr::new(ip, 0)));
        let sent = match &bound {
            Ok(socket) => {
                channel
                    .send(UDP_ANSWER, id.as_bytes(), &[socket.as_fd()])
                    .await
            }
            Err(e) => {
                let answer = format!("{id} {e}");
                channel.send(UDP_ANSWER, answer.as_bytes(), &[]).await
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs() {
        let env = parse_env(b"A\0http://x\0B\0\0");
        assert_eq!(
            env,
            [("A".into(), "http://x".into()), ("B".into(), String::new())]
        );
    }
}

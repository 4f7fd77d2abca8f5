//! The SOCKS5 listener (RFC 1928; with session credentials, RFC 1929 username/password and
//! nothing else): CONNECT and UDP ASSOCIATE through the same policy, resolver and pinned dial
//! as the HTTP listener. A UDP association is authorised by its control connection's
//! handshake; its datagrams carry no credentials.
//!
//! One task per client connection reads the greeting and the request within
//! `limits.header_timeout`, then hands over to `tcp` (CONNECT) or `udp` (ASSOCIATE). A
//! destination is canonicalised ([`crate::policy::host::canonicalize`]), decided and resolved
//! once by [`crate::net::Gate::authorize`], and reported to [`crate::audit::Events`] before
//! anything is sent to it; the client learns the outcome only as a reply code, from the one
//! table in `reply`. Every connection holds a drain guard, so a graceful shutdown waits for
//! its tunnel or association.
//!
//! The handshake is hand-written ([`crate::socks5_codec`]) rather than `fast-socks5`'s server, because that
//! server writes its own error replies while reading the request (0x05 for a name that is not
//! UTF-8, where the policy's answer is 0x02 `invalid-host`), reads one field per system call,
//! allocates per request and per datagram, and resolves UDP destinations with the system
//! resolver, outside the policy.

/// Public so the fuzz targets (`fuzz/`) can drive the parsers directly.
use crate::socks5_codec as codec;
mod tcp;
mod udp;

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::audit::Protocol;
use crate::gate::{Denied, Pinned};
use crate::isolate::UdpFactory;
use crate::net::listener;
use crate::net::Ctx;
use crate::policy::host::{canonicalize, InvalidHost};
use crate::policy::{Access, Host, Target};
use crate::respond::{self, Code, Refusal};
use crate::session::SessionToken;
use codec::{Addr, AuthError, Command, GreetingError, Reply, Request, RequestError};

/// What the SOCKS5 listener serves beyond CONNECT.
#[derive(Clone, Default)]
pub struct SocksOptions {
    /// UDP ASSOCIATE (`enable_socks5_udp`); without it the command gets 0x07.
    pub udp: bool,
    /// Where the relay's client-facing sockets are made when the listener is in another
    /// network namespace (`run --isolate`); `None`: here, next to the listener.
    pub relay: Option<Arc<UdpFactory>>,
}

/// Serves SOCKS5 on a bound listener until `shutdown` completes. Connections over
/// `max_connections` finish their handshake and get 0x01, so the client sees why.
pub async fn serve(
    listener: TcpListener,
    ctx: Ctx,
    opts: SocksOptions,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::clone(&ctx.slots);
    let server = Arc::new(Server {
        associations: Arc::new(Semaphore::new(ctx.limits.max_udp_associations)),
        ctx,
        opts,
    });
    listener::accept_loop(listener, slots, shutdown, move |stream, client, permit| {
        let server = Arc::clone(&server);
        async move { server.connection(stream, client, permit).await }
    })
    .await;
}

/// What every connection of one listener shares; one `Arc` clone per connection.
struct Server {
    ctx: Ctx,
    opts: SocksOptions,
    /// One permit per open UDP association (`max_udp_associations`).
    associations: Arc<Semaphore>,
}

impl Server {
    async fn connection(
        &self,
        mut stream: TcpStream,
        client: SocketAddr,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let _open = self.ctx.drain.guard();
        let _ = stream.set_nodelay(true);
        let mut hs = Handshake::new();
        let header_timeout = self.ctx.limits.header_timeout;
        let session = self.ctx.session.as_ref();
        match tokio::time::timeout(header_timeout, hs.run(&mut stream, session)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                let unauthenticated = matches!(
                    err,
                    HandshakeError::WrongCredentials | HandshakeError::NoAcceptableMethod
                );
                if unauthenticated && session.is_some_and(SessionToken::first_refusal) {
                    tracing::warn!(
                        %client,
                        error = %err,
                        "refused a SOCKS5 client without this proxy's credentials; a client \
                         that cannot send them needs `run --no-session-auth`"
                    );
                } else {
                    tracing::debug!(%client, error = %err, "SOCKS5 handshake failed");
                }
                if unauthenticated {
                    close_gently(&mut stream).await;
                }
                return;
            }
            Err(_) => {
                tracing::debug!(%client, "SOCKS5 handshake timed out");
                return;
            }
        }
        let Request {
            command,
            addr,
            port,
            len,
        } = match codec::parse_request(hs.request()) {
            Ok(request) => request,
            Err(err) => return reject(&mut stream, client, &Refusal::Request(&err)).await,
        };
        let early = &hs.request()[len..];
        if permit.is_none() {
            return reject(&mut stream, client, &Refusal::Busy).await;
        }
        match command {
            Command::Connect => tcp::connect(stream, client, addr, port, early, &self.ctx).await,
            Command::UdpAssociate if self.opts.udp => {
                let relay = self.opts.relay.as_deref();
                udp::associate(stream, client, port, &self.ctx, &self.associations, relay).await;
            }
            other => reject(&mut stream, client, &Refusal::Command(other)).await,
        }
    }
}

/// Room for the longest greeting, username/password request and request together, plus early
/// data a client may send before our reply (forwarded once the tunnel is up).
const HANDSHAKE_BUF: usize = 2048;
const _: () = assert!(HANDSHAKE_BUF > codec::MAX_GREETING + codec::MAX_AUTH + codec::MAX_REQUEST);

/// The handshake's bytes: greeting, request and early data, read in as few calls as the
/// client allows.
struct Handshake {
    buf: [u8; HANDSHAKE_BUF],
    filled: usize,
    request_start: usize,
}

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("client closed the connection mid-handshake")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("greeting: {0}")]
    Greeting(#[from] GreetingError),
    #[error("client offers no acceptable authentication method")]
    NoAcceptableMethod,
    #[error("username/password: {0}")]
    Auth(#[from] AuthError),
    #[error("wrong username or password")]
    WrongCredentials,
}

impl Handshake {
    fn new() -> Self {
        Handshake {
            buf: [0; HANDSHAKE_BUF],
            filled: 0,
            request_start: 0,
        }
    }

    /// Reads the greeting, answers it, checks the credentials when the listener has them, and
    /// reads until the request is complete (or known to be unreadable: [`Handshake::request`]
    /// tells which).
    async fn run(
        &mut self,
        stream: &mut TcpStream,
        session: Option<&SessionToken>,
    ) -> Result<(), HandshakeError> {
        // Without credentials the selection is "no authentication" whatever the client
        // offers, so it is sent before the greeting is read: it is waiting in the client's
        // receive buffer when the client asks for it, which takes our wake-up off the
        // client's critical path (one of SOCKS5's two round trips before the tunnel).
        if session.is_none() {
            stream
                .write_all(&[codec::VERSION, codec::METHOD_NO_AUTH])
                .await?;
        }
        while let Err(GreetingError::Incomplete) = codec::parse_greeting(&self.buf[..self.filled]) {
            self.read_more(stream).await?;
        }
        let greeting = codec::parse_greeting(&self.buf[..self.filled])?;
        self.request_start = greeting.len;
        // With credentials, username/password is the only method: a client offering only
        // "no authentication" is told that none of its methods is acceptable.
        let method = match session {
            None => codec::METHOD_NO_AUTH,
            Some(_) if greeting.user_pass => codec::METHOD_USER_PASS,
            Some(_) => codec::METHOD_NONE_ACCEPTABLE,
        };
        if session.is_some() {
            stream.write_all(&[codec::VERSION, method]).await?;
        }
        match (method, session) {
            (codec::METHOD_USER_PASS, Some(session)) => self.authenticate(stream, session).await?,
            (codec::METHOD_NO_AUTH, _) => {}
            _ => return Err(HandshakeError::NoAcceptableMethod),
        }
        while let Err(RequestError::Incomplete) = codec::parse_request(self.request()) {
            self.read_more(stream).await?;
        }
        Ok(())
    }

    /// The RFC 1929 sub-negotiation: reads the username/password request that follows the
    /// greeting, answers its status, and fails (the caller closes) unless it is `session`'s.
    async fn authenticate(
        &mut self,
        stream: &mut TcpStream,
        session: &SessionToken,
    ) -> Result<(), HandshakeError> {
        let start = self.request_start;
        let parsed = loop {
            match codec::parse_user_pass(&self.buf[start..self.filled]) {
                Err(AuthError::Incomplete) => self.read_more(stream).await?,
                parsed => break parsed,
            }
        };
        let accepted = match parsed {
            Ok(auth) => {
                self.request_start = start + auth.len;
                session.accepts(auth.user, auth.password)
            }
            Err(_) => false,
        };
        let status = if accepted {
            codec::AUTH_SUCCEEDED
        } else {
            codec::AUTH_FAILED
        };
        stream.write_all(&status).await?;
        match parsed {
            Err(err) => Err(err.into()),
            Ok(_) if !accepted => Err(HandshakeError::WrongCredentials),
            Ok(_) => Ok(()),
        }
    }

    /// The request and any early data after it.
    fn request(&self) -> &[u8] {
        &self.buf[self.request_start..self.filled]
    }

    async fn read_more(&mut self, stream: &mut TcpStream) -> Result<(), HandshakeError> {
        // The longest greeting and request fit with room to spare, so the buffer is never
        // full while one is incomplete (and an empty slice would read 0: "closed").
        let n = stream.read(&mut self.buf[self.filled..]).await?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        self.filled += n;
        Ok(())
    }
}

/// How long a rejected client may keep sending before we close: reading what it sent keeps
/// the close from turning into a reset that could destroy our reply before it is read.
const LINGER: Duration = Duration::from_millis(500);

/// Answers with the failure's reply code and closes the connection.
async fn reject(stream: &mut TcpStream, client: SocketAddr, failure: &Refusal<'_>) {
    let code = respond::socks(failure);
    tracing::debug!(%client, %failure, ?code, "SOCKS5 request rejected");
    let unspecified = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    if stream
        .write_all(Reply::new(code as u8, unspecified).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    close_gently(stream).await;
}

/// Closes after an answer: reading what the client still sends (for up to [`LINGER`]) keeps
/// the close from becoming a reset that destroys the answer before it is read.
async fn close_gently(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = stream.read(&mut sink).await {}
    })
    .await;
}

/// Sends the success reply naming `bound`.
async fn succeed(stream: &mut TcpStream, bound: SocketAddr) -> io::Result<()> {
    stream
        .write_all(Reply::new(Code::Succeeded as u8, bound).as_bytes())
        .await
}

/// The destination the client wrote, canonical.
///
/// Names go through the one canonicaliser, so a SOCKS name is judged exactly like the same
/// name in a CONNECT line; one that fails it (empty, not UTF-8, bad characters) is denied as
/// `invalid-host` (and that denial recorded). Port 0 is not a destination either.
fn target_of<'a>(
    ctx: &Ctx,
    protocol: Protocol,
    client: SocketAddr,
    addr: Addr<'a>,
    port: u16,
) -> Result<Target<'a>, Denied> {
    target(addr, port).map_err(|_| ctx.refuse_invalid(protocol, client, &written(addr, port)))
}

/// Decides a UDP destination the way the client wrote it (always dialled directly: UDP is
/// never chained through an upstream proxy) and reports the decision.
async fn authorize(
    ctx: &Ctx,
    protocol: Protocol,
    client: SocketAddr,
    addr: Addr<'_>,
    port: u16,
) -> Result<Pinned, Denied> {
    let target = target_of(ctx, protocol, client, addr, port)?;
    let (_, pinned) = ctx
        .authorize(protocol, client, &target, Access::Tunnel)
        .await?;
    Ok(pinned)
}

fn target(addr: Addr<'_>, port: u16) -> Result<Target<'_>, InvalidHost> {
    if port == 0 {
        return Err(InvalidHost::BadPort);
    }
    let host = match addr {
        Addr::Ip(ip) => Host::Ip(ip),
        Addr::Domain(name) => {
            let name = std::str::from_utf8(name).map_err(|_| InvalidHost::Unparseable)?;
            // The DOMAINNAME field has no brackets; some clients put an IPv6 literal there.
            if name.contains(':') && !name.starts_with('[') {
                canonicalize(&format!("[{name}]"))?.into_owned()
            } else {
                canonicalize(name)?
            }
        }
    };
    Ok(Target::new(host, port))
}

/// A destination as the client wrote it, for the report of one that never became a
/// [`Target`] (the audit log escapes it).
fn written(addr: Addr<'_>, port: u16) -> String {
    match addr {
        Addr::Domain(name) => format!("{}:{port}", String::from_utf8_lossy(name)),
        Addr::Ip(_) => format!("{addr}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn targets_from_requests() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            target(Addr::Ip(ip), 80).unwrap().to_string(),
            "127.0.0.1:80"
        );
        let cases = [
            (&b"Allowed.TEST."[..], "allowed.test:443"),
            (b"127.1", "127.0.0.1:443"),
            (b"::1", "[::1]:443"),
            (b"[::1]", "[::1]:443"),
            (b"b\xc3\xbccher.de", "xn--bcher-kva.de:443"),
        ];
        for (name, want) in cases {
            assert_eq!(target(Addr::Domain(name), 443).unwrap().to_string(), want);
        }
        use InvalidHost::*;
        let bad = [
            (&b""[..], Empty),
            (b"bad host.test", ForbiddenChar),
            (b"a\xff.test", Unparseable),
            (b"a.test:80", Unparseable),
            (b"fe80::1%eth0", Unparseable),
        ];
        for (name, err) in bad {
            assert_eq!(target(Addr::Domain(name), 443), Err(err), "{name:?}");
        }
        assert_eq!(target(Addr::Ip(ip), 0), Err(BadPort));
        assert_eq!(written(Addr::Domain(b"a\xffb"), 80), "a\u{fffd}b:80");
        assert_eq!(written(Addr::Ip(ip), 0), "127.0.0.1:0");
    }
}

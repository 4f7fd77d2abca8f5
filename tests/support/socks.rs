//! SOCKS5 (RFC 1928) client bytes over a Tokio `TcpStream`: the greeting, requests, replies
//! and UDP datagram headers, for tests that must see exactly what the proxy answered.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// The longest any single step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(5);

pub const SUCCEEDED: u8 = 0x00;
pub const GENERAL_FAILURE: u8 = 0x01;
pub const NOT_ALLOWED: u8 = 0x02;
pub const HOST_UNREACHABLE: u8 = 0x04;

pub const CONNECT: u8 = 1;

/// Awaits `future`, failing the test after [`STEP`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match timeout(STEP, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// A destination as a client writes it.
#[derive(Clone, Copy)]
pub enum Dest<'a> {
    V4([u8; 4]),
    V6(Ipv6Addr),
    Name(&'a [u8]),
}

/// ATYP, address, port.
pub fn encode(dest: Dest<'_>, port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    match dest {
        Dest::V4(ip) => {
            out.push(1);
            out.extend_from_slice(&ip);
        }
        Dest::V6(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        Dest::Name(name) => {
            out.push(3);
            out.push(u8::try_from(name.len()).unwrap());
            out.extend_from_slice(name);
        }
    }
    out.extend_from_slice(&port.to_be_bytes());
    out
}

pub fn request(cmd: u8, dest: Dest<'_>, port: u16) -> Vec<u8> {
    [&[5, cmd, 0][..], &encode(dest, port)].concat()
}

pub fn datagram(frag: u8, dest: Dest<'_>, port: u16, payload: &[u8]) -> Vec<u8> {
    [&[0, 0, frag][..], &encode(dest, port), payload].concat()
}

/// Connects to the SOCKS5 listener at `addr` and completes the no-auth greeting.
pub async fn greet(addr: SocketAddr) -> TcpStream {
    let mut stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    stream.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    within("method", stream.read_exact(&mut method))
        .await
        .unwrap();
    assert_eq!(method, [5, 0]);
    stream
}

/// Reads a reply: its code and bound address.
pub async fn read_reply(stream: &mut TcpStream) -> (u8, SocketAddr) {
    let mut head = [0u8; 4];
    within("reply", stream.read_exact(&mut head)).await.unwrap();
    assert_eq!((head[0], head[2]), (5, 0), "reply header {head:?}");
    let ip = match head[3] {
        1 => {
            let mut ip = [0u8; 4];
            stream.read_exact(&mut ip).await.unwrap();
            IpAddr::from(ip)
        }
        4 => {
            let mut ip = [0u8; 16];
            stream.read_exact(&mut ip).await.unwrap();
            IpAddr::from(ip)
        }
        other => panic!("reply address type {other}"),
    };
    let mut port = [0u8; 2];
    stream.read_exact(&mut port).await.unwrap();
    (head[1], SocketAddr::new(ip, u16::from_be_bytes(port)))
}

/// Sends a request on a fresh connection to `addr` and returns the reply code and the stream.
pub async fn ask(addr: SocketAddr, cmd: u8, dest: Dest<'_>, port: u16) -> (u8, TcpStream) {
    let mut stream = greet(addr).await;
    stream.write_all(&request(cmd, dest, port)).await.unwrap();
    let (code, _) = read_reply(&mut stream).await;
    (code, stream)
}

/// Everything the proxy sends until it closes (a reset counts as closed).
pub async fn rest(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = within("close", stream.read_to_end(&mut got)).await;
    got
}

/// An echo round trip through a tunnel.
pub async fn echo_through(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(payload).await.unwrap();
    let mut got = vec![0u8; payload.len()];
    within("echo", stream.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, payload);
}

/// An association: its control connection, the client socket and the relay address.
pub struct Association {
    pub control: TcpStream,
    pub socket: UdpSocket,
    pub relay: SocketAddr,
}

/// Opens an association with the listener at `addr`; the request names the client socket's port when `name_port`.
pub async fn associate(addr: SocketAddr, name_port: bool) -> Association {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = if name_port {
        socket.local_addr().unwrap().port()
    } else {
        0
    };
    let mut control = greet(addr).await;
    control
        .write_all(&request(3, Dest::V4([0, 0, 0, 0]), port))
        .await
        .unwrap();
    let (code, relay) = read_reply(&mut control).await;
    assert_eq!(code, 0, "UDP ASSOCIATE refused");
    assert_eq!(relay.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    Association {
        control,
        socket,
        relay,
    }
}

impl Association {
    pub async fn send(&self, datagram: &[u8]) {
        self.socket.send_to(datagram, self.relay).await.unwrap();
    }

    pub async fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 65536];
        let (n, from) = within("UDP reply", self.socket.recv_from(&mut buf))
            .await
            .unwrap();
        assert_eq!(from, self.relay);
        buf.truncate(n);
        buf
    }

    /// Sends to `dest` and expects the echo under a header naming `dest` as written.
    pub async fn round_trip(&self, dest: Dest<'_>, port: u16, payload: &[u8]) {
        self.send(&datagram(0, dest, port, payload)).await;
        assert_eq!(self.recv().await, datagram(0, dest, port, payload));
    }
}

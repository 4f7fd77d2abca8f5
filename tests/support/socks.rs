//! SOCKS5 (RFC 1928) client bytes over a Tokio `TcpStream`: the greeting, requests, replies
//! and UDP datagram headers, for tests that must see exactly what the proxy answered.

use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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

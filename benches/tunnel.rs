//! Tunnels on loopback, one new connection per iteration, through a SOCKS5 handshake +
//! CONNECT, through an HTTP CONNECT, and straight to the origin (`direct`), each then closed:
//! a `GET` of a 1 KiB response (what the proxy adds to a short connection: its handshake, the
//! policy decision, the dial and the relay of one small response), and a 16 MiB download and
//! upload (the relay's bulk speed). The ratios to `direct` are what to read.
//!
//! `cargo bench --bench tunnel`

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use egress_proxy::config::{load_texts, Sources};
use egress_proxy::server::Server;
use tokio::runtime::Runtime;

/// The policy: only the origin's address (an exact IP rule grants the loopback exception).
const POLICY: &str = "enabled = true\nallowed_domains = [\"127.0.0.1\"]\n";

/// The small response's body.
const SMALL: usize = 1024;
/// The bulk download's body and the bulk upload's.
const BULK: usize = 16 << 20;
/// What the origin writes or reads per call in a bulk transfer.
const CHUNK: usize = 256 * 1024;

const GET_SMALL: &[u8] = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
const GET_BULK: &[u8] = b"GET /bulk HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

fn head(body: usize) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {body}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// An origin on its own thread, one connection at a time: `GET /small` gets 1 KiB of `x`,
/// `GET /bulk` [`BULK`] bytes, a `POST` has its [`BULK`]-byte body read and gets 1 KiB; then
/// the origin closes.
fn origin() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the origin");
    let addr = listener.local_addr().expect("origin address");
    let mut small = head(SMALL);
    small.extend(std::iter::repeat_n(b'x', SMALL));
    let chunk = vec![b'y'; CHUNK];
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let Some((request, body_start)) = read_head(&mut stream) else {
                continue;
            };
            let _ = if request.starts_with(b"GET /bulk") {
                stream
                    .write_all(&head(BULK))
                    .and_then(|()| (0..BULK / CHUNK).try_for_each(|_| stream.write_all(&chunk)))
            } else if request.starts_with(b"POST") {
                drain(&mut stream, BULK - body_start).and_then(|()| stream.write_all(&small))
            } else {
                stream.write_all(&small)
            };
        }
    });
    addr
}

/// Reads `left` bytes and drops them.
fn drain(stream: &mut TcpStream, mut left: usize) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let n = stream.read(&mut buf[..left.min(CHUNK)])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        left -= n;
    }
    Ok(())
}

/// Reads up to the end of an HTTP head (`\r\n\r\n`): the head and how many bytes after it
/// were read with it; `None` when the peer closed first.
fn read_head(stream: &mut TcpStream) -> Option<(Vec<u8>, usize)> {
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let after = head.len() - end - 4;
            return Some((head, after));
        }
        let n = stream.read(&mut buf).ok().filter(|&n| n > 0)?;
        head.extend_from_slice(&buf[..n]);
    }
}

/// Sends `request` on an open path to the origin and reads the whole response, which must be
/// a `200` with `body` bytes.
fn exchange(mut stream: TcpStream, request: &[u8], body: usize, scratch: &mut Vec<u8>) {
    stream.write_all(request).expect("send the request");
    scratch.clear();
    stream.read_to_end(scratch).expect("read the response");
    assert!(scratch.starts_with(b"HTTP/1.1 200") && scratch.len() == head(body).len() + body);
}

/// A `POST` of [`BULK`] bytes on an open path, then its 1 KiB answer.
fn upload(mut stream: TcpStream, body: &[u8], scratch: &mut Vec<u8>) {
    let request = format!(
        "POST /up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {BULK}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send the head");
    exchange(stream, body, SMALL, scratch);
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// SOCKS5 as curl speaks it: the no-auth greeting, its answer, then CONNECT to the origin's
/// IPv4 address and the 10-byte reply.
fn socks5(proxy: SocketAddr, origin: SocketAddr) -> TcpStream {
    let mut stream = connect(proxy);
    stream.write_all(&[5, 1, 0]).expect("greeting");
    let mut method = [0u8; 2];
    stream.read_exact(&mut method).expect("method");
    assert_eq!(method, [5, 0], "no-auth refused");
    let mut request = vec![5, 1, 0, 1, 127, 0, 0, 1];
    request.extend_from_slice(&origin.port().to_be_bytes());
    stream.write_all(&request).expect("request");
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).expect("reply");
    assert_eq!(&reply[..2], &[5, 0], "SOCKS5 CONNECT refused");
    stream
}

/// HTTP CONNECT to the origin, up to the end of the proxy's `200` head.
fn http_connect(proxy: SocketAddr, origin: SocketAddr) -> TcpStream {
    let mut stream = connect(proxy);
    let request = format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("CONNECT");
    let (head, after) = read_head(&mut stream).expect("the proxy's answer");
    assert!(
        head.starts_with(b"HTTP/1.1 200") && after == 0,
        "CONNECT refused"
    );
    stream
}

/// How a client reaches the origin.
#[derive(Clone, Copy)]
enum Path {
    Socks5(SocketAddr),
    Connect(SocketAddr),
    Direct,
}

impl Path {
    fn open(self, origin: SocketAddr) -> TcpStream {
        match self {
            Path::Socks5(proxy) => socks5(proxy, origin),
            Path::Connect(proxy) => http_connect(proxy, origin),
            Path::Direct => connect(origin),
        }
    }
}

fn tunnels(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let config = load_texts(&[("bench.toml", POLICY)], None, &Sources::default())
        .expect("the bench policy loads");
    let server = rt
        .block_on(Server::builder(config).ephemeral().start())
        .expect("the proxy starts");
    let paths = [
        (
            "socks5",
            Path::Socks5(server.socks_addr.expect("SOCKS5 is on")),
        ),
        ("connect", Path::Connect(server.http_addr)),
        ("direct", Path::Direct),
    ];
    let origin = origin();
    let mut scratch = Vec::with_capacity(BULK + 4096);

    let mut group = c.benchmark_group("tunnel_new_conn_get_1k");
    for (name, path) in paths {
        group.bench_function(name, |b| {
            b.iter(|| exchange(path.open(origin), GET_SMALL, SMALL, &mut scratch))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("tunnel_download_16m");
    group.throughput(Throughput::Bytes(BULK as u64));
    for (name, path) in paths {
        group.bench_function(name, |b| {
            b.iter(|| exchange(path.open(origin), GET_BULK, BULK, &mut scratch))
        });
    }
    group.finish();

    let body = vec![b'z'; BULK];
    let mut group = c.benchmark_group("tunnel_upload_16m");
    group.throughput(Throughput::Bytes(BULK as u64));
    for (name, path) in paths {
        group.bench_function(name, |b| {
            b.iter(|| upload(path.open(origin), &body, &mut scratch))
        });
    }
    group.finish();
    let _ = rt.block_on(server.shutdown(Duration::from_secs(1)));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = tunnels
}
criterion_main!(benches);

//! The forward proxy's request path on loopback: a plain-HTTP GET of 1 KiB through the proxy
//! against the same GET straight to the origin, on one kept connection and with a new
//! connection per request (which the proxy answers from its pool of origin connections).
//! Each request is decided by the policy as in production; the ratio of the two is what the
//! proxy adds per request.
//!
//! `cargo bench --bench forward`

use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use egress_proxy::config::{self, Sources};
use egress_proxy::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const BODY: usize = 1024;

/// An origin answering every request on a connection with 1 KiB, keep-alive.
async fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut response =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
                response.resize(response.len() + BODY, b'x');
                let mut buf = vec![0u8; 4096];
                let mut filled = 0;
                loop {
                    match stream.read(&mut buf[filled..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => filled += n,
                    }
                    // Requests here are bodiless: one ends at its blank line.
                    while let Some(end) = find(&buf[..filled], b"\r\n\r\n") {
                        if stream.write_all(&response).await.is_err() {
                            return;
                        }
                        buf.copy_within(end + 4..filled, 0);
                        filled -= end + 4;
                    }
                }
            });
        }
    });
    addr
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn proxy() -> Server {
    let policy = "allowed_domains = [\"127.0.0.1\"]\n";
    let config = config::load_texts(&[("bench.toml", policy)], None, &Sources::default()).unwrap();
    Server::builder(config).ephemeral().start().await.unwrap()
}

/// One GET on `stream`, read to the end of its body.
async fn get(stream: &mut TcpStream, request: &[u8], buf: &mut [u8]) {
    stream.write_all(request).await.unwrap();
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).await.unwrap();
        assert!(n > 0, "closed mid-response");
        filled += n;
        if let Some(end) = find(&buf[..filled], b"\r\n\r\n") {
            if filled >= end + 4 + BODY {
                return;
            }
        }
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

fn forward(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let (origin, server) = rt.block_on(async { (origin().await, proxy().await) });
    let direct = format!("GET /1k HTTP/1.1\r\nHost: {origin}\r\n\r\n").into_bytes();
    let proxied = format!("GET http://{origin}/1k HTTP/1.1\r\nHost: {origin}\r\n\r\n").into_bytes();
    let mut buf = vec![0u8; 8192];
    let mut group = c.benchmark_group("forward GET 1 KiB");
    for (name, to, request) in [
        ("kept connection, direct", origin, &direct),
        (
            "kept connection, through the proxy",
            server.http_addr,
            &proxied,
        ),
    ] {
        let mut stream = rt.block_on(connect(to));
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(get(&mut stream, request, &mut buf)));
        });
    }
    for (name, to, request) in [
        ("new connection, direct", origin, &direct),
        (
            "new connection, through the proxy",
            server.http_addr,
            &proxied,
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut stream = connect(to).await;
                    get(&mut stream, request, &mut buf).await;
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);

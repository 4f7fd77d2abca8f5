//! Chaining through an upstream proxy (`[upstream]`, the proxy's environment), through real
//! listeners and real upstreams on loopback (`support::upstream`), one module per kind of
//! upstream, plus the built binary.
//!
//! The test upstreams never connect where they are asked: every tunnel goes to one echo
//! server on 127.0.0.1, so whatever name or address reaches them, nothing leaves the machine.
//! Names are answered by a fake DNS server with 127.0.0.1.

#[path = "../support/serve.rs"]
mod serve;
#[path = "../support/mod.rs"]
mod support;

mod binary;
mod http_upstream;
mod socks_upstream;
mod tls_upstream;

use std::net::{Ipv4Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::fake_dns::{Answer, FakeDns};
use support::harness::{Proxy, ProxyBuilder};
use support::http::{read_reply, Reply, IO_TIMEOUT};
use support::origin::TcpEcho;

/// The password every test URL carries; no output may ever show it.
const SECRET: &str = "hunter2-s3cret";

/// Names the fake DNS answers with 127.0.0.1.
fn dns() -> FakeDns {
    let loopback = || Answer::A(vec![Ipv4Addr::LOCALHOST]);
    FakeDns::start(vec![
        ("allowed.test", loopback()),
        ("denied.test", loopback()),
        ("direct.internal.test", loopback()),
    ])
}

/// A proxy that allows the test names and their local answers, resolving with `dns`.
fn proxy(dns: &FakeDns) -> ProxyBuilder {
    Proxy::builder()
        .allow("allowed.test")
        .allow("**.internal.test")
        .deny("denied.test")
        .allow_local_binding(true)
        .dns(dns)
}

/// `[upstream]` with `url` and extra lines.
fn upstream_toml(url: &str, extra: &str) -> String {
    format!("[upstream]\nurl = \"{url}\"\n{extra}")
}

/// Sends `CONNECT authority` and reads the answer; the stream is the tunnel after a 200.
async fn tunnel(proxy: SocketAddr, authority: &str) -> (Reply, TcpStream) {
    let io = async {
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let reply = read_reply(&mut stream, false).await;
        (reply, stream)
    };
    tokio::time::timeout(IO_TIMEOUT, io)
        .await
        .expect("CONNECT answered")
}

/// Bytes go through the tunnel and come back (the far end is an echo server).
async fn assert_echoes(stream: &mut TcpStream) {
    let io = async {
        stream.write_all(b"ping through the chain").await.unwrap();
        let mut back = [0u8; 22];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping through the chain");
    };
    tokio::time::timeout(IO_TIMEOUT, io).await.expect("echoed");
}

/// `(status, x-proxy-reason)` of a CONNECT through `proxy`.
async fn connect_verdict(proxy: SocketAddr, authority: &str) -> (u16, Option<String>) {
    let (reply, _) = tunnel(proxy, authority).await;
    (
        reply.status,
        reply.header("x-proxy-reason").map(String::from),
    )
}

/// An echo server that counts connections: the far end of every tunnel.
fn echo() -> TcpEcho {
    TcpEcho::start()
}

/// The first `count` close lines, once the proxy has written them.
async fn closed_tunnels(proxy: &Proxy, count: usize) -> Vec<serde_json::Value> {
    let wait = async {
        loop {
            let closes = proxy.audit.events("close");
            if closes.len() >= count {
                return closes;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(IO_TIMEOUT, wait)
        .await
        .expect("the tunnels closed")
}

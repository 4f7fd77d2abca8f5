//! CONNECT tunnels through the HTTP listener: bytes both ways, half-closes, early bytes, the
//! idle timeout, the pinned address, and the slot an open tunnel holds.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use tokio::time::Instant;

use crate::support::curl::{self, Via};
use crate::support::fake_dns::FakeDns;
use crate::support::http::blocking::{connect, connect_tunnel, expect_close, get, read_head};
use crate::support::http::IO_TIMEOUT;
use crate::support::http_world::{assert_still_serving, one_shot_origin, standard, zone, World};

#[test]
fn curl_proxytunnel_connect_reaches_the_origin() {
    let w = World::start();
    let reply = curl::reply(
        Via::Tunnel(&w.proxy.url()),
        &[&w.url("allowed.test", "/tunnelled")],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "origin saw GET /tunnelled body=0");
    assert_eq!(w.origin.request_count(), 1);
}

#[test]
fn connect_tunnel_echoes_bytes_both_ways() {
    let w = World::start();
    let (mut stream, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("allowed.test"));
    assert_eq!(reply.status, 200, "{reply:?}");
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut writer = stream.try_clone().unwrap();
    let sent = payload.clone();
    let sender = thread::spawn(move || writer.write_all(&sent));
    let mut echoed = vec![0; payload.len()];
    stream
        .read_exact(&mut echoed)
        .expect("echo through the tunnel");
    sender.join().unwrap().unwrap();
    assert!(echoed == payload, "the tunnel corrupted the bytes");
    assert_eq!(w.echo.connections(), 1);
}

/// The client half-closes; the upstream sees EOF and can still answer over the other half.
#[test]
fn connect_tunnel_passes_half_close_on() {
    let dns = FakeDns::start(zone());
    let proxy = standard(&dns).start_blocking();
    let origin = one_shot_origin(|mut stream| {
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        write!(stream, "read {} bytes after which you closed", got.len()).unwrap();
    });
    let (mut stream, reply) =
        connect_tunnel(proxy.addr, &format!("allowed.test:{}", origin.port()));
    assert_eq!(reply.status, 200, "{reply:?}");
    stream.write_all(b"hello, then EOF").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("the upstream saw our EOF and answered");
    assert_eq!(answer, "read 15 bytes after which you closed");
}

/// Bytes sent right behind the CONNECT head (a TLS ClientHello sent optimistically) are not
/// lost, and a server that speaks first (SSH, SMTP) is heard.
#[test]
fn connect_tunnel_keeps_early_bytes_both_ways() {
    let dns = FakeDns::start(zone());
    let proxy = standard(&dns).start_blocking();
    let origin = one_shot_origin(|mut stream| {
        stream.write_all(b"220 banner\r\n").unwrap();
        let mut early = [0u8; 5];
        stream.read_exact(&mut early).unwrap();
        stream.write_all(&early).unwrap();
    });
    let mut stream = connect(proxy.addr);
    let authority = format!("allowed.test:{}", origin.port());
    write!(
        stream,
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\nearly"
    )
    .unwrap();
    let status = read_head(&mut stream).status;
    assert_eq!(status, 200);
    let mut got = Vec::new();
    stream.read_to_end(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), "220 banner\r\nearly");
}

#[test]
fn idle_tunnel_is_closed_after_the_idle_timeout() {
    let w = World::with(|b| b.limits(|l| l.idle_timeout = Duration::from_millis(300)));
    let (mut stream, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("allowed.test"));
    assert_eq!(reply.status, 200, "{reply:?}");
    stream.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    stream.read_exact(&mut pong).unwrap();
    let started = Instant::now();
    assert_eq!(expect_close(&mut stream), b"");
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// The client resets its tunnel; the proxy closes the upstream side and others carry on.
#[test]
fn client_vanishing_mid_tunnel_closes_upstream_and_leaves_others_alone() {
    let w = World::start();
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    let upstream = one_shot_origin(move |mut stream| {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = closed_tx.send(());
    });
    // A bystander tunnel, open throughout.
    let (mut bystander, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("allowed.test"));
    assert_eq!(reply.status, 200, "{reply:?}");

    let (mut leaver, reply) =
        connect_tunnel(w.proxy.addr, &format!("allowed.test:{}", upstream.port()));
    assert_eq!(reply.status, 200, "{reply:?}");
    leaver.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    leaver.read_exact(&mut pong).unwrap();
    // Unread data when the socket closes makes the kernel send a reset.
    leaver.write_all(b"unread echo").unwrap();
    thread::sleep(Duration::from_millis(100));
    drop(leaver);
    closed_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("the proxy kept the upstream of a vanished client open");

    bystander.write_all(b"still here").unwrap();
    let mut echoed = [0u8; 10];
    bystander.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"still here");
    assert_still_serving(&w, "/after");
}

/// An open tunnel is an open connection: it holds its slot until it ends.
#[test]
fn max_connections_counts_open_tunnels() {
    let w = World::with(|b| b.limits(|l| l.max_connections = 1));
    let (mut tunnel, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("allowed.test"));
    assert_eq!(reply.status, 200, "{reply:?}");
    tunnel.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    tunnel.read_exact(&mut pong).unwrap();

    let reply = get(w.proxy.addr, &w.url("allowed.test", "/second"));
    assert_eq!(
        (reply.status, reply.header("x-proxy-error")),
        (503, Some("busy")),
        "{reply:?}"
    );
    assert_eq!(w.origin.request_count(), 0);

    drop(tunnel);
    let deadline = Instant::now() + IO_TIMEOUT;
    while get(w.proxy.addr, &w.url("allowed.test", "/third")).status != 200 {
        assert!(
            Instant::now() < deadline,
            "the tunnel's slot was never released"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

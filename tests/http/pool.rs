//! Origin connections kept across client connections: a client that opens a connection per
//! request shares one origin connection, and only with itself, for the same name, for requests
//! that could be sent again, and only after each request was decided.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

use crate::forward::origin_closing_after_one_answer;
use crate::support::fake_dns::FakeDns;
use crate::support::harness::Proxy;
use crate::support::http::blocking::{connect, get, raw_request, read_reply};
use crate::support::http::read_reply as read_reply_async;
use crate::support::http_world::{read_until, standard, zone, World};
use crate::support::origin::HttpOrigin;

/// Long enough for the proxy to hand the origin connection of a closed client connection to
/// its pool before the next client connects.
const SETTLE: Duration = Duration::from_millis(50);

fn get_closing(w: &World, host: &str, path: &str) -> u16 {
    let reply = get(w.proxy.addr, &w.url(host, path));
    thread::sleep(SETTLE);
    reply.status
}

#[test]
fn a_connection_per_request_shares_one_origin_connection() {
    let w = World::start();
    for n in 0..5 {
        assert_eq!(get_closing(&w, "allowed.test", &format!("/{n}")), 200);
    }
    assert_eq!(w.origin.request_count(), 5);
    assert_eq!(w.origin.connections(), 1);
}

/// A GET from `source` (a loopback address of its own) on a new client connection.
async fn get_from(source: &str, proxy: SocketAddr, url: &str) -> u16 {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    let host = url.trim_start_matches("http://").split('/').next().unwrap();
    let request = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let status = read_reply_async(&mut stream, false).await.status;
    tokio::time::sleep(SETTLE).await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_address_never_gets_anothers_origin_connection() {
    let w = tokio::task::spawn_blocking(World::start).await.unwrap();
    let url = w.url("allowed.test", "/x");
    assert_eq!(get_from("127.0.0.1", w.proxy.addr, &url).await, 200);
    assert_eq!(get_from("127.0.0.2", w.proxy.addr, &url).await, 200);
    assert_eq!(
        w.origin.connections(),
        2,
        "127.0.0.2 got a connection of its own"
    );
    assert_eq!(get_from("127.0.0.1", w.proxy.addr, &url).await, 200);
    assert_eq!(get_from("127.0.0.2", w.proxy.addr, &url).await, 200);
    assert_eq!(w.origin.connections(), 2, "each client reuses its own");
    assert_eq!(w.origin.request_count(), 4);
}

#[test]
fn another_name_for_the_same_address_gets_its_own_origin_connection() {
    let w = World::start();
    assert_eq!(get_closing(&w, "allowed.test", "/a"), 200);
    assert_eq!(get_closing(&w, "api.corp.test", "/b"), 200);
    assert_eq!(w.origin.connections(), 2);
    // Another spelling of the same name is the same destination.
    assert_eq!(get_closing(&w, "ALLOWED.test.", "/c"), 200);
    assert_eq!(w.origin.connections(), 2);
}

#[test]
fn a_request_that_cannot_be_sent_again_never_takes_a_kept_connection() {
    let w = World::start();
    assert_eq!(get_closing(&w, "allowed.test", "/first"), 200);
    let port = w.origin.addr.port();
    for request in [
        format!("POST http://allowed.test:{port}/p HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"),
        format!("GET http://allowed.test:{port}/g HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"),
        format!("DELETE http://allowed.test:{port}/d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ] {
        let before = w.origin.connections();
        assert_eq!(raw_request(w.proxy.addr, request.as_bytes()).status, 200, "{request}");
        thread::sleep(SETTLE);
        assert_eq!(w.origin.connections(), before + 1, "{request}");
    }
    // A bodiless GET takes the most recently kept one.
    let before = w.origin.connections();
    assert_eq!(get_closing(&w, "allowed.test", "/again"), 200);
    assert_eq!(w.origin.connections(), before);
}

#[test]
fn every_request_is_decided_before_a_kept_connection_is_used() {
    let dns = FakeDns::start(zone());
    let rules = |deny: &str| {
        format!(
            "allowed_domains = [\"allowed.test\"]\ndenied_domains = [\"evil.corp.test\", {deny}]"
        )
    };
    let mut proxy = Proxy::builder()
        .toml(&rules(""))
        .allow_local_binding(true)
        .dns(&dns)
        .start_blocking();
    let origin = HttpOrigin::start();
    let addr = proxy.addr;
    let fetch = |host: &str, path: &str| {
        let url = format!("http://{host}:{}{path}", origin.addr.port());
        let status = get(addr, &url).status;
        thread::sleep(SETTLE);
        status
    };
    assert_eq!(fetch("allowed.test", "/kept"), 200);
    // The same address under a denied name, and under a name no rule allows.
    assert_eq!(fetch("evil.corp.test", "/no"), 403);
    assert_eq!(fetch("other.test", "/no"), 403);
    // A reload that denies the name the connection was kept for.
    proxy.rewrite(&rules("\"allowed.test\""));
    assert_eq!(fetch("allowed.test", "/after-reload"), 403);
    assert_eq!(origin.requests().len(), 1, "{:?}", origin.requests());
    assert_eq!(origin.connections(), 1);
}

#[test]
fn a_kept_connection_the_origin_closed_is_replaced_for_a_get() {
    let dns = FakeDns::start(zone());
    let proxy = standard(&dns).start_blocking();
    let (origin, seen) = origin_closing_after_one_answer();
    let url = |path: &str| format!("http://allowed.test:{}{path}", origin.port());
    assert_eq!(get(proxy.addr, &url("/first")).status, 200);
    thread::sleep(SETTLE);
    // On a new client connection: the kept connection closes under the GET, which is sent
    // again on a new one.
    let mut client = connect(proxy.addr);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
        url("/second")
    );
    client.write_all(request.as_bytes()).unwrap();
    let reply = read_reply(&mut client);
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "GET /first HTTP/1.1",
            "GET /second HTTP/1.1",
            "GET /second HTTP/1.1"
        ]
    );
}

/// An origin that answers every request on a kept connection with a connection-based
/// authentication challenge; returns its address and the connections it accepted.
fn challenging_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || loop {
                if read_until(&mut stream, b"\r\n\r\n").is_empty() {
                    return;
                }
                let challenge =
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM\r\nContent-Length: 0\r\n\r\n";
                if stream.write_all(challenge).is_err() {
                    return;
                }
            });
        }
    });
    (addr, accepted)
}

#[test]
fn a_connection_that_carried_authentication_serves_no_other_client_connection() {
    // NTLM and Negotiate authenticate the connection: a kept one must not carry one local
    // user's login into another's request (on loopback they share the client IP).
    let w = World::start();
    let port = w.origin.addr.port();
    let with_credentials = format!(
        "GET http://allowed.test:{port}/login HTTP/1.1\r\nHost: x\r\nAuthorization: NTLM TlRMTVNTUAAB\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(
        raw_request(w.proxy.addr, with_credentials.as_bytes()).status,
        200
    );
    thread::sleep(SETTLE);
    assert_eq!(get_closing(&w, "allowed.test", "/other-user"), 200);
    assert_eq!(w.origin.connections(), 2);

    let (origin, accepted) = challenging_origin();
    let url = format!("http://allowed.test:{}/challenge", origin.port());
    for _ in 0..2 {
        assert_eq!(get(w.proxy.addr, &url).status, 401);
        thread::sleep(SETTLE);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

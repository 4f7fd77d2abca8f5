//! The admin listener's connections: idle ones cannot lock the operator out, requests with
//! the token have reserved slots, and shutdown closes the idle ones.

use std::time::Duration;
use tokio::time::Instant;

use crate::harness::{policy_text, Harness, TOKEN};
use crate::support::fake_dns::{Answer, FakeDns};
use crate::support::http::{exchange, read_reply, IO_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Slow requests without the token (a `/check` waiting on DNS) fill only their own slots:
/// calls with the token still get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_the_token_have_reserved_slots() {
    let h = Harness::start().await;
    let silent = FakeDns::start(vec![("slow.test", Answer::NoReply)]);
    let token_file = h.dir.path().join("token");
    let text = policy_text(silent.addr, "\"slow.test\" = \"allow\"", &token_file)
        .replace("timeout_ms = 1000", "timeout_ms = 3000");
    std::fs::write(&h.policy_file, text).unwrap();
    assert_eq!(h.post("/reload", Some(TOKEN), "").await.status, 200);

    let admin = h.admin;
    // As many as the old cap on admin connections, all of them slow.
    let slow: Vec<_> = (0..64)
        .map(|_| {
            tokio::spawn(async move {
                let req = "GET /check?target=slow.test HTTP/1.1\r\nHost: localhost\r\n\
                           Connection: close\r\n\r\n";
                exchange(admin, req, false).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = h.get("/health").await;
    assert_eq!(busy.status, 503, "{busy:?}");
    assert_eq!(busy.header("connection"), Some("close"));
    let reply = h
        .post("/mode", Some(TOKEN), "{\"mode\": \"limited\"}")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(h.get_as("/patterns", Some(TOKEN)).await.status, 200);
    let mut served = 0;
    for task in slow {
        match task.await.unwrap().status {
            200 => served += 1,
            status => assert_eq!(status, 503),
        }
    }
    assert!(served > 0);
    assert_eq!(h.get("/health").await.status, 200);

    h.stop().await;
}

/// Idle connections from the sandboxed child (on loopback every peer is 127.0.0.1) must not
/// lock the operator out of `POST /reload`: before, 64 of them made every call a `503`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_lock_the_operator_out() {
    let h = Harness::start().await;
    let mut idle = Vec::new();
    // More than the connections that may wait for a request head at once.
    for _ in 0..80 {
        idle.push(TcpStream::connect(h.admin).await.unwrap());
    }
    // Half a request head: waiting, not served.
    for stream in &mut idle {
        stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = h.post("/reload", Some(TOKEN), "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["reloaded"], true);
    assert_eq!(h.get("/health").await.status, 200);
    // The oldest idle connections were closed to make room.
    let mut first = [0u8; 1];
    let closed = tokio::time::timeout(IO_TIMEOUT, idle[0].read(&mut first))
        .await
        .expect("the oldest idle connection is closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    drop(idle);

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_admin_connections() {
    let h = Harness::start().await;
    let mut stream = TcpStream::connect(h.admin).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let reply = tokio::time::timeout(IO_TIMEOUT, read_reply(&mut stream, false))
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    // The connection is kept alive; shutdown must not wait for it.
    let started = Instant::now();
    h.stop().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let mut rest = Vec::new();
    let read = tokio::time::timeout(IO_TIMEOUT, stream.read_to_end(&mut rest))
        .await
        .expect("the admin connection is closed");
    assert!(read.is_ok() && rest.is_empty());
}

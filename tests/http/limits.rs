//! The limits of the HTTP listener and the requests it must survive or refuse cleanly:
//! header size and timeout, the connection cap, half-closed and malformed requests.

use std::io::Write;
use std::net::Shutdown;
use std::process::Command;
use std::thread;
use std::time::Duration;
use tokio::time::Instant;

use crate::support::http::blocking::{
    connect, expect_close, get, raw_request, read_reply, try_read_reply,
};
use crate::support::http::IO_TIMEOUT;
use crate::support::http_world::{assert_still_serving, World};

/// A client that sends its request and shuts down its write side still gets the whole
/// answer: a denial and a forwarded response.
#[test]
fn a_request_followed_by_a_half_close_is_answered() {
    let w = World::start();
    for (host, status) in [("evil.corp.test", 403), ("allowed.test", 200)] {
        let mut stream = connect(w.proxy.addr);
        write!(
            stream,
            "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
            w.url(host, "/half")
        )
        .unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let reply = read_reply(&mut stream);
        assert_eq!(reply.status, status, "{host}: {reply:?}");
        expect_close(&mut stream);
    }
    assert_eq!(w.origin.request_count(), 1);
    assert!(w.origin.requests()[0].starts_with("GET /half HTTP/1.1\r\n"));
}

/// The same through `nc -N` (OpenBSD netcat), which shuts down its write side at the end of
/// its input; skipped where it is not installed.
#[test]
fn printf_into_nc_gets_an_answer() {
    let Ok(help) = Command::new("nc").arg("-h").output() else {
        eprintln!("nc not installed; skipping");
        return;
    };
    if !String::from_utf8_lossy(&help.stderr).contains("-N") {
        eprintln!("this nc has no -N; skipping");
        return;
    }
    let w = World::start();
    let mut nc = Command::new("nc")
        .args([
            "-N",
            "-w",
            "5",
            "127.0.0.1",
            &w.proxy.addr.port().to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    write!(
        nc.stdin.take().unwrap(),
        "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
        w.url("allowed.test", "/nc")
    )
    .unwrap();
    let out = nc.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.contains("saw GET /nc"), "{text}");
}

#[test]
fn malformed_request_lines_are_400_and_the_proxy_keeps_serving() {
    let w = World::start();
    let port = w.origin.addr.port();
    let cases: Vec<Vec<u8>> = vec![
        b"garbage\r\n\r\n".to_vec(),
        format!("GET http://allowed.test:{port}/\r\n\r\n").into_bytes(),
        b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        format!("GET http://allowed.test:{port}/\0 HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
        format!("GET http://allow\0ed.test:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
        format!("GET http://allowed.test:{port}/ HTTP/1.1\r\nHost: a\0b\r\n\r\n").into_bytes(),
        b"\0\0\0\0\r\n\r\n".to_vec(),
        format!("GET http://allowed.test:{port}/ HTTP/9.9\r\nHost: x\r\n\r\n").into_bytes(),
        format!("GET  http://allowed.test:{port}/ HTTP/1.1\r\n\r\n").into_bytes(),
    ];
    for (i, request) in cases.iter().enumerate() {
        let reply = raw_request(w.proxy.addr, request);
        assert_eq!(
            reply.status,
            400,
            "case {i} {:?}: {reply:?}",
            String::from_utf8_lossy(request)
        );
        assert_still_serving(&w, &format!("/after-{i}"));
    }
    assert_eq!(
        w.origin.request_count(),
        cases.len(),
        "a malformed request got through"
    );
}

#[test]
fn origin_form_request_is_400() {
    let w = World::start();
    let reply = raw_request(
        w.proxy.addr,
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\n\r\n",
            w.at_origin("allowed.test")
        )
        .as_bytes(),
    );
    assert_eq!(
        (reply.status, reply.header("x-proxy-error")),
        (400, Some("bad-request")),
        "{reply:?}"
    );
    w.assert_nothing_reached_upstream();
}

#[test]
fn https_absolute_form_is_400() {
    let w = World::start();
    let reply = get(
        w.proxy.addr,
        &format!("https://{}/", w.at_origin("allowed.test")),
    );
    assert_eq!(
        (reply.status, reply.header("x-proxy-error")),
        (400, Some("bad-request")),
        "{reply:?}"
    );
    assert!(reply.body.contains("CONNECT"), "{reply:?}");
    w.assert_nothing_reached_upstream();
}

#[test]
fn oversize_headers_get_431_or_a_clean_close() {
    let w = World::with(|b| b.limits(|l| l.max_header_bytes = 8 * 1024));
    let url = w.url("allowed.test", "/");
    // Under the limit: fine.
    let reply = raw_request(
        w.proxy.addr,
        format!(
            "GET {url} HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(4000)
        )
        .as_bytes(),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    // Over it.
    let mut stream = connect(w.proxy.addr);
    let request = format!(
        "GET {url} HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    // The proxy may answer and close before reading it all.
    let _ = stream.write_all(request.as_bytes());
    if let Some(reply) = try_read_reply(&mut stream) {
        assert_eq!(reply.status, 431, "{reply:?}");
    }
    expect_close(&mut stream);
    assert_eq!(
        w.origin.request_count(),
        1,
        "the oversize request got through"
    );
    assert_still_serving(&w, "/after");
}

#[test]
fn slow_client_is_closed_after_the_header_timeout_and_others_are_served() {
    let w = World::with(|b| b.limits(|l| l.header_timeout = Duration::from_millis(300)));
    // Starts a request line and never finishes the head.
    let mut stalled = connect(w.proxy.addr);
    write!(
        stalled,
        "GET {} HTTP/1.1\r\nHost: x\r\n",
        w.url("allowed.test", "/")
    )
    .unwrap();
    // Trickles one header byte at a time, never finishing either.
    let mut trickle = connect(w.proxy.addr);
    write!(trickle, "GET {} HTTP/1.1\r\n", w.url("allowed.test", "/")).unwrap();
    let mut writer = trickle.try_clone().unwrap();
    let trickler = thread::spawn(move || {
        for _ in 0..50 {
            if writer.write_all(b"X").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    // Says nothing at all.
    let mut silent = connect(w.proxy.addr);

    assert_still_serving(&w, "/meanwhile");
    let started = Instant::now();
    for (name, stream) in [
        ("stalled", &mut stalled),
        ("trickle", &mut trickle),
        ("silent", &mut silent),
    ] {
        let got = expect_close(stream);
        let text = String::from_utf8_lossy(&got);
        assert!(
            got.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{name}: {text:?}"
        );
    }
    // Each was closed by the 300 ms header timeout, long before the 5 s read timeout.
    assert!(started.elapsed() < Duration::from_secs(4));
    trickler.join().unwrap();
    assert_eq!(w.origin.request_count(), 1);
    assert_still_serving(&w, "/after");
}

#[test]
fn max_connections_one_second_client_gets_503_busy() {
    let w = World::with(|b| b.limits(|l| l.max_connections = 1));
    // The first client holds the only slot with a kept-alive connection.
    let mut first = connect(w.proxy.addr);
    write!(
        first,
        "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
        w.url("allowed.test", "/first")
    )
    .unwrap();
    assert_eq!(read_reply(&mut first).status, 200);

    let reply = get(w.proxy.addr, &w.url("allowed.test", "/second"));
    assert_eq!(
        (reply.status, reply.header("x-proxy-error")),
        (503, Some("busy")),
        "{reply:?}"
    );
    assert_eq!(w.origin.request_count(), 1);

    // The slot comes back when the first client leaves.
    drop(first);
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let reply = get(w.proxy.addr, &w.url("allowed.test", "/third"));
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503, "{reply:?}");
        assert!(Instant::now() < deadline, "the slot was never released");
        thread::sleep(Duration::from_millis(50));
    }
}

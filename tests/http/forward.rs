//! Plain-HTTP forwarding through the HTTP listener: curl, raw request bytes and a hyper
//! client reach a loopback origin, with bodies streamed, framing kept honest, hop-by-hop
//! headers dropped and upstream connections reused only while they are alive.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

use crate::support::curl::{self, Via};
use crate::support::fake_dns::FakeDns;
use crate::support::http::blocking::{connect, get, raw_request, read_head, read_reply};
use crate::support::http::IO_TIMEOUT;
use crate::support::http_world::{one_shot_origin, read_until, standard, zone, World, LOOPBACK};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Frame;
use hyper::Request;
use hyper_util::rt::TokioIo;

#[test]
fn curl_get_through_the_proxy_reaches_the_origin() {
    let w = World::start();
    let reply = curl::reply(
        Via::Proxy(&w.proxy.url()),
        &[&w.url("allowed.test", "/hello?q=1")],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "origin saw GET /hello?q=1 body=0");
    assert_eq!(reply.header("x-origin"), Some("yes"));
    let requests = w.origin.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].starts_with("GET /hello?q=1 HTTP/1.1\r\n"),
        "{requests:?}"
    );
    let host = format!("\r\nhost: {}", w.at_origin("allowed.test"));
    assert!(
        requests[0].to_ascii_lowercase().contains(&host),
        "{requests:?}"
    );
    // One lookup: A and AAAA.
    assert_eq!(w.dns.queries("allowed.test"), 2);
}

#[test]
fn curl_post_with_a_chunked_body_is_forwarded() {
    let w = World::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, vec![b'x'; 100_000]).unwrap();
    let reply = curl::reply(
        Via::Proxy(&w.proxy.url()),
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", file.display()),
            &w.url("allowed.test", "/upload"),
        ],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "origin saw POST /upload body=100000");
    let head = &w.origin.requests()[0];
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
}

#[test]
fn curl_post_with_a_large_body_is_forwarded_whole() {
    let w = World::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    let size = 8 * 1024 * 1024;
    std::fs::write(&file, vec![b'y'; size]).unwrap();
    let reply = curl::reply(
        Via::Proxy(&w.proxy.url()),
        &[
            "--data-binary",
            &format!("@{}", file.display()),
            &w.url("allowed.test", "/big"),
        ],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, format!("origin saw POST /big body={size}"));
}

/// A request body that arrives slowly is passed on as it comes: the origin sees the request
/// head while the client is still holding back the rest of the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_request_body_is_streamed_not_buffered() {
    let dns = FakeDns::start(zone());
    let proxy = standard(&dns).start_blocking();
    let (head_tx, head_rx) = tokio::sync::oneshot::channel::<String>();
    let origin = one_shot_origin(move |mut stream| {
        let head = read_until(&mut stream, b"\r\n\r\n");
        let _ = head_tx.send(String::from_utf8_lossy(&head).into_owned());
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut total = 0;
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).unwrap();
            total += n;
            if n == 0 {
                break;
            }
        }
        let body = format!("got {total}");
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });

    let (body_tx, body) = ChannelBody::new();
    let mut sender = hyper_client(proxy.addr).await;
    let uri = format!("http://allowed.test:{}/stream", origin.port());
    let request = Request::post(uri).body(body).unwrap();
    let response = tokio::spawn(async move { sender.send_request(request).await });

    body_tx.send(Bytes::from(vec![b'a'; 1000])).await.unwrap();
    let head = tokio::time::timeout(IO_TIMEOUT, head_rx)
        .await
        .expect("the origin saw nothing while the body was incomplete: the proxy buffers bodies")
        .unwrap();
    assert!(head.starts_with("POST /stream HTTP/1.1\r\n"), "{head}");
    body_tx
        .send(Bytes::from(vec![b'b'; 500_000]))
        .await
        .unwrap();
    drop(body_tx);

    let response = tokio::time::timeout(IO_TIMEOUT, response)
        .await
        .expect("response")
        .unwrap()
        .expect("request through the proxy");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"got 501000");
}

/// A response body is passed on as it comes: the client reads the first part while the origin
/// still holds back the rest.
#[test]
fn response_body_is_streamed_not_buffered() {
    let dns = FakeDns::start(zone());
    let proxy = standard(&dns).start_blocking();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let origin = one_shot_origin(move |mut stream| {
        read_until(&mut stream, b"\r\n\r\n");
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
            .unwrap();
        // Longer than the client's read timeout: a buffering proxy fails the test.
        if go_rx.recv_timeout(Duration::from_secs(10)).is_ok() {
            stream.write_all(b"later").unwrap();
        }
    });
    let mut client = connect(proxy.addr);
    write!(
        client,
        "GET http://allowed.test:{0}/ HTTP/1.1\r\nHost: allowed.test:{0}\r\n\r\n",
        origin.port()
    )
    .unwrap();
    let status = read_head(&mut client).status;
    assert_eq!(status, 200);
    let mut first = [0u8; 5];
    client
        .read_exact(&mut first)
        .expect("the first part of the body arrives before the rest is sent");
    assert_eq!(&first, b"first");
    go_tx.send(()).unwrap();
    let mut rest = [0u8; 5];
    client.read_exact(&mut rest).unwrap();
    assert_eq!(&rest, b"later");
}

#[test]
fn curl_keep_alive_reuses_the_client_and_upstream_connections() {
    let w = World::start();
    let out = curl::run(
        Via::Proxy(&w.proxy.url()),
        &[
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{num_connects}\n",
            &w.url("allowed.test", "/one"),
            &w.url("allowed.test", "/two"),
        ],
    );
    // curl opened one connection to the proxy and reused it for the second request...
    out.assert_stdout("200 1\n200 0\n");
    // ...and the proxy reused its one upstream connection.
    assert_eq!(w.origin.request_count(), 2);
    assert_eq!(w.origin.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_keep_alive_two_requests_use_one_upstream_connection() {
    let w = World::start();
    let mut sender = hyper_client(w.proxy.addr).await;
    for path in ["/a", "/b"] {
        let request = Request::get(w.url("allowed.test", path))
            .body(Empty::<Bytes>::new())
            .unwrap();
        // The previous exchange must finish before the connection takes another request.
        sender
            .ready()
            .await
            .expect("the client connection stays open");
        let response = tokio::time::timeout(IO_TIMEOUT, sender.send_request(request))
            .await
            .expect("response in time")
            .expect("request through the proxy");
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("origin saw GET {path} body=0"));
    }
    assert_eq!(w.origin.request_count(), 2);
    assert_eq!(w.origin.connections(), 1);
}

/// An origin whose keep-alive timeout fires just as the next request arrives: it answers the
/// first request on each connection, then reads the second and closes without a word.
/// Returns its address and the request lines it read.
pub(crate) fn origin_closing_after_one_answer() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                for answer in [true, false] {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    log.lock().unwrap().push(line.trim_end().to_string());
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).unwrap();
                        if header == "\r\n" {
                            break;
                        }
                        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:")
                        {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    if answer {
                        writer
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .unwrap();
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[test]
fn a_kept_upstream_connection_closed_under_a_get_is_retried_once_on_a_new_one() {
    let dns = FakeDns::start(zone());
    let proxy = standard(&dns).start_blocking();
    let (origin, seen) = origin_closing_after_one_answer();
    let mut client = connect(proxy.addr);
    for path in ["/first", "/second"] {
        let request = format!(
            "GET http://allowed.test:{port}{path} HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n",
            port = origin.port()
        );
        client.write_all(request.as_bytes()).unwrap();
        let reply = read_reply(&mut client);
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        assert_eq!(reply.body, "ok");
    }
    // The second GET reached the closing connection, then a new one that answered it.
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "GET /first HTTP/1.1",
            "GET /second HTTP/1.1",
            "GET /second HTTP/1.1"
        ]
    );
}

#[test]
fn a_post_is_never_sent_twice_when_the_kept_connection_closes_under_it() {
    let dns = FakeDns::start(zone());
    let proxy = standard(&dns).start_blocking();
    let (origin, seen) = origin_closing_after_one_answer();
    let mut client = connect(proxy.addr);
    let port = origin.port();
    let first = format!("GET http://allowed.test:{port}/first HTTP/1.1\r\nHost: x\r\n\r\n");
    client.write_all(first.as_bytes()).unwrap();
    assert_eq!(read_reply(&mut client).status, 200);
    let post = format!(
        "POST http://allowed.test:{port}/order HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbuy1"
    );
    client.write_all(post.as_bytes()).unwrap();
    let reply = read_reply(&mut client);
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        ["GET /first HTTP/1.1", "POST /order HTTP/1.1"],
        "the POST must reach the origin once"
    );
}

#[test]
fn hop_by_hop_and_proxy_headers_are_not_forwarded() {
    let w = World::start();
    let host = w.at_origin("allowed.test");
    let reply = raw_request(
        w.proxy.addr,
        format!(
            "GET http://{host}/h HTTP/1.1\r\nHost: {host}\r\n\
             Proxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\n\
             Connection: close, x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
             X-Kept: yes\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let head = w.origin.requests()[0].to_ascii_lowercase();
    assert!(head.contains("\r\nx-kept: yes"), "{head}");
    for gone in [
        "proxy-authorization",
        "proxy-connection",
        "x-secret",
        "keep-alive",
    ] {
        assert!(!head.contains(gone), "{gone} was forwarded: {head}");
    }
}

/// A request with both Transfer-Encoding and Content-Length (a smuggling attempt) must not
/// reach the origin framed by the Content-Length: RFC 9112 section 6.3 wants it rejected or
/// forwarded with the Content-Length removed and the whole chunked body.
#[test]
fn chunked_request_with_a_content_length_is_not_framed_by_the_length() {
    let w = World::start();
    let reply = raw_request(
        w.proxy.addr,
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
             6\r\nabcdef\r\n0\r\n\r\n",
            w.url("allowed.test", "/te-cl")
        )
        .as_bytes(),
    );
    if reply.status == 400 {
        assert_eq!(w.origin.request_count(), 0);
        return;
    }
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "origin saw POST /te-cl body=6");
    let head = w.origin.requests()[0].to_ascii_lowercase();
    assert!(!head.contains("content-length"), "{head}");
}

/// A GET with a chunked body (search APIs do this) keeps its body.
#[test]
fn chunked_get_body_is_forwarded() {
    let w = World::start();
    let reply = raw_request(
        w.proxy.addr,
        format!(
            "GET {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
            w.url("allowed.test", "/search")
        )
        .as_bytes(),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "origin saw GET /search body=4");
}

/// An origin response with both Transfer-Encoding and Content-Length reaches the client whole
/// (the chunked framing wins, as RFC 9112 section 6.3 says), not cut to the Content-Length.
#[test]
fn chunked_response_with_a_content_length_is_not_truncated() {
    let dns = FakeDns::start(zone());
    let proxy = standard(&dns).start_blocking();
    let origin = one_shot_origin(|mut stream| {
        read_until(&mut stream, b"\r\n\r\n");
        stream
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
                  6\r\nabcdef\r\n0\r\n\r\n",
            )
            .unwrap();
    });
    let reply = get(
        proxy.addr,
        &format!("http://allowed.test:{}/", origin.port()),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "abcdef");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let w = World::start();
    let mut client = connect(w.proxy.addr);
    let (one, two) = (w.url("allowed.test", "/one"), w.url("allowed.test", "/two"));
    write!(
        client,
        "GET {one} HTTP/1.1\r\nHost: x\r\n\r\nGET {two} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    assert_eq!(read_reply(&mut client).body, "origin saw GET /one body=0");
    assert_eq!(read_reply(&mut client).body, "origin saw GET /two body=0");
    assert_eq!(w.origin.connections(), 1);
}

#[test]
fn broken_upstream_is_502_upstream_failed() {
    let dns = FakeDns::start(zone());
    let proxy = standard(&dns).start_blocking();
    let garbage = one_shot_origin(|mut stream| {
        read_until(&mut stream, b"\r\n\r\n");
        let _ = stream.write_all(b"this is not HTTP\r\n\r\n");
    });
    let silent = one_shot_origin(|mut stream| {
        read_until(&mut stream, b"\r\n\r\n");
    });
    for origin in [garbage, silent] {
        let reply = get(
            proxy.addr,
            &format!("http://allowed.test:{}/", origin.port()),
        );
        assert_eq!(
            (reply.status, reply.header("x-proxy-error")),
            (502, Some("upstream-failed")),
            "{reply:?}"
        );
    }
}

/// An origin that answers `101 Switching Protocols` to a forwarded request (whose `Upgrade`
/// the proxy stripped) gets the client a 502, and its connection is closed.
#[test]
fn an_unrequested_101_from_the_origin_is_502_and_closes_the_upstream() {
    let w = World::start();
    let (closed_tx, closed_rx) = mpsc::channel();
    let port = one_shot_origin(move |mut stream| {
        read_until(&mut stream, b"\r\n\r\n");
        stream
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nwelcome",
            )
            .unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        let _ = closed_tx.send(rest);
    })
    .port();
    let mut stream = connect(w.proxy.addr);
    write!(
        stream,
        "GET http://allowed.test:{port}/ws HTTP/1.1\r\nHost: allowed.test:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    .unwrap();
    let reply = read_reply(&mut stream);
    assert_eq!(
        (reply.status, reply.header("x-proxy-error")),
        (502, Some("upstream-failed")),
        "{reply:?}"
    );
    assert!(reply.body.contains("101 Switching Protocols"), "{reply:?}");
    let rest = closed_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("the upstream connection was closed");
    assert!(
        rest.is_empty(),
        "sent to the origin after its 101: {rest:?}"
    );
    // The client connection is still a working HTTP connection.
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
        w.url("allowed.test", "/after")
    )
    .unwrap();
    assert_eq!(read_reply(&mut stream).status, 200);
}

/// An origin that closes after each response is not sent a second request on the dead
/// connection: the proxy dials again.
#[test]
fn upstream_that_closes_is_not_reused() {
    let dns = FakeDns::start(zone());
    let proxy = standard(&dns).start_blocking();
    let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for (i, stream) in listener.incoming().take(2).enumerate() {
            let mut stream = stream.unwrap();
            read_until(&mut stream, b"\r\n\r\n");
            let body = format!("connection {i}");
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let mut client = connect(proxy.addr);
    for i in 0..2 {
        write!(
            client,
            "GET http://allowed.test:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .unwrap();
        let reply = read_reply(&mut client);
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, format!("connection {i}").as_str()),
            "{reply:?}"
        );
    }
}

async fn hyper_client<B>(proxy: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// A request body fed through a channel, so a test decides when each part is sent.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl ChannelBody {
    fn new() -> (tokio::sync::mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        (tx, ChannelBody(rx))
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

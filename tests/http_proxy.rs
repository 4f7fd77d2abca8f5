//! The HTTP proxy listener (`egress_proxy::http::serve`) through real clients: `curl`, raw
//! request bytes on a `TcpStream`, and a hyper client.
//!
//! Everything stays on loopback: names are answered by a fake DNS server with 127.0.0.x (or
//! not at all), origins listen on 127.0.0.1, and the only other addresses that appear are
//! loopback spellings and always-blocked ones nothing can connect to. Every blocked case
//! checks the status, both `x-proxy-*` headers, and that the origin recorded nothing.

mod support;

use std::convert::Infallible;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::process::Command;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use egress_proxy::policy::Mode;
use http_body_util::{BodyExt, Empty};
use hyper::body::Frame;
use hyper::Request;
use hyper_util::rt::TokioIo;
use support::fake_dns::{Answer, FakeDns};
use support::harness::{Proxy, ProxyBuilder};
use support::origin::{HttpOrigin, TcpEcho};
use support::unix_origin::UnixHttpOrigin;

/// Every read and write in these tests gives up after this, so a hang is a failure, not a stall.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

// ---------------------------------------------------------------------------------------------
// Raw HTTP over a TcpStream
// ---------------------------------------------------------------------------------------------

/// One parsed response.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `(status, x-proxy-error, x-proxy-reason)`.
    fn verdict(&self) -> (u16, Option<&str>, Option<&str>) {
        (
            self.status,
            self.header("x-proxy-error"),
            self.header("x-proxy-reason"),
        )
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {:?}", self.status, self.headers, self.text())
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to the proxy");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Reads a response head byte by byte, so nothing after it (tunnel bytes) is consumed.
/// `None` if the peer closed (or reset) before sending a single byte.
fn try_read_head(stream: &mut TcpStream) -> Option<(u16, Vec<(String, String)>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) if head.is_empty() => return None,
            Ok(0) => panic!(
                "connection closed inside a response head: {:?}",
                String::from_utf8_lossy(&head)
            ),
            Ok(_) => head.push(byte[0]),
            Err(e) if head.is_empty() && e.kind() == ErrorKind::ConnectionReset => return None,
            Err(e) => panic!(
                "reading a response head: {e} (got {:?})",
                String::from_utf8_lossy(&head)
            ),
        }
        assert!(head.len() < 64 * 1024, "response head too long");
    }
    let text = String::from_utf8(head).expect("response head is UTF-8");
    let head = support::reply::Reply::from_head(&text);
    let headers = head
        .headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    Some((head.status, headers))
}

fn read_head(stream: &mut TcpStream) -> (u16, Vec<(String, String)>) {
    try_read_head(stream).expect("the proxy closed the connection without a response")
}

/// Reads a whole response: Content-Length, chunked, or until the close.
fn try_read_reply(stream: &mut TcpStream) -> Option<Reply> {
    let (status, headers) = try_read_head(stream)?;
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = reply.header("content-length") {
        let mut body = vec![0; len.parse().expect("content-length")];
        stream.read_exact(&mut body).expect("response body");
        reply.body = body;
    } else if reply
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        reply.body = read_chunked(stream);
    } else if status >= 200 && status != 204 && status != 304 {
        stream.read_to_end(&mut reply.body).expect("response body");
    }
    Some(reply)
}

fn read_reply(stream: &mut TcpStream) -> Reply {
    try_read_reply(stream).expect("the proxy closed the connection without a response")
}

fn read_chunked(stream: &mut TcpStream) -> Vec<u8> {
    let mut reader = BufReader::new(stream);
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).expect("chunk size");
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size is hex");
        let mut chunk = vec![0; n + 2];
        reader.read_exact(&mut chunk).expect("chunk");
        if n == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `bytes` on a new connection and reads one response.
fn raw_request(proxy: SocketAddr, bytes: &[u8]) -> Reply {
    let mut stream = connect(proxy);
    stream.write_all(bytes).expect("send the request");
    read_reply(&mut stream)
}

/// `GET <absolute-url>` on a new connection, closed after the response.
fn get(proxy: SocketAddr, url: &str) -> Reply {
    raw_request(
        proxy,
        format!(
            "GET {url} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            host_of(url)
        )
        .as_bytes(),
    )
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap()
}

/// `CONNECT authority` on a new connection; returns the stream (positioned after the head)
/// and the head (no body is read).
fn connect_tunnel(proxy: SocketAddr, authority: &str) -> (TcpStream, Reply) {
    let mut stream = connect(proxy);
    write!(
        stream,
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    )
    .expect("send CONNECT");
    let (status, headers) = read_head(&mut stream);
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    if status != 200 {
        if let Some(len) = reply.header("content-length") {
            let mut body = vec![0; len.parse().unwrap()];
            stream.read_exact(&mut body).expect("CONNECT error body");
            reply.body = body;
        }
    }
    (stream, reply)
}

/// Asserts the peer closes the connection (EOF or reset) before `IO_TIMEOUT`, discarding any
/// response it sends first. Returns what was read.
fn expect_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) => panic!(
                "the connection was not closed: {e} (read {:?})",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

#[track_caller]
fn assert_verdict(reply: &Reply, status: u16, error: &str, reason: &str) {
    assert_eq!(
        reply.verdict(),
        (status, Some(error), Some(reason)),
        "reply: {reply:?}"
    );
}

/// A one-line denial body that names host:port, the reason, and the rule (or "rule: none").
#[track_caller]
fn assert_denial_body(reply: &Reply, dest: &str, reason: &str, rule: &str) {
    let body = reply.text();
    assert!(
        body.ends_with('\n') && body.matches('\n').count() == 1,
        "not one line: {body:?}"
    );
    for part in [dest, reason, rule] {
        assert!(body.contains(part), "{part:?} missing from {body:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------------

struct Curl {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Curl {
    /// The final response of `curl -i` output (a CONNECT reply before it is skipped).
    fn reply(&self) -> Reply {
        assert_eq!(self.code, 0, "curl failed: {}", self.stderr);
        let mut rest = &self.stdout[..];
        loop {
            let end = rest
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(rest)));
            let head = std::str::from_utf8(&rest[..end]).unwrap();
            let after = &rest[end + 4..];
            if after.starts_with(b"HTTP/") {
                rest = after;
                continue;
            }
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            return Reply {
                status,
                headers,
                body: after.to_vec(),
            };
        }
    }
}

/// Runs `curl -q -sS -i --max-time 10 ARGS` with no proxy settings from the environment (a
/// `NO_PROXY` there could send curl around the proxy).
fn curl(args: &[&str]) -> Curl {
    curl_with(&["-i"], args)
}

fn curl_with(base: &[&str], args: &[&str]) -> Curl {
    let mut command = Command::new("curl");
    command
        .args(["-q", "-sS", "--max-time", "10"])
        .args(base)
        .args(args);
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
    ] {
        command.env_remove(var);
    }
    let output = command
        .output()
        .expect("`curl` is required by these tests: install curl");
    Curl {
        code: output.status.code().unwrap_or(-1),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The world: fake DNS, origins, proxy
// ---------------------------------------------------------------------------------------------

/// Names every test may use. All answer 127.0.0.1 unless they are about DNS failure, so a proxy
/// that wrongly let one through would reach the origin and be caught.
fn zone() -> Vec<(&'static str, Answer)> {
    let lo = || Answer::A(vec![LOOPBACK]);
    vec![
        ("allowed.test", lo()),
        ("api.corp.test", lo()),
        ("evil.corp.test", lo()),
        ("other.test", lo()),
        ("gone.test", Answer::NxDomain),
        ("silent.test", Answer::NoReply),
    ]
}

/// allow `allowed.test`, `**.corp.test`, `gone.test`, `silent.test`; deny `evil.corp.test`;
/// `allow_local_binding = true` so the fake DNS's 127.0.0.1 is acceptable.
fn standard(dns: &FakeDns) -> ProxyBuilder {
    Proxy::builder()
        .allow("allowed.test")
        .allow("**.corp.test")
        .deny("evil.corp.test")
        .allow("gone.test")
        .allow("silent.test")
        .allow_local_binding(true)
        .dns(dns)
}

struct World {
    proxy: Proxy,
    origin: HttpOrigin,
    echo: TcpEcho,
    dns: FakeDns,
}

impl World {
    fn start() -> World {
        World::with(|b| b)
    }

    /// The standard policy, changed by `customize`.
    fn with(customize: impl FnOnce(ProxyBuilder) -> ProxyBuilder) -> World {
        let dns = FakeDns::start(zone());
        let proxy = customize(standard(&dns)).start_blocking();
        World {
            proxy,
            origin: HttpOrigin::start(),
            echo: TcpEcho::start(),
            dns,
        }
    }

    /// `http://HOST:ORIGIN_PORT/PATH`.
    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.origin.addr.port())
    }

    /// `HOST:ORIGIN_PORT`.
    fn at_origin(&self, host: &str) -> String {
        format!("{host}:{}", self.origin.addr.port())
    }

    /// `HOST:ECHO_PORT`.
    fn at_echo(&self, host: &str) -> String {
        format!("{host}:{}", self.echo.addr.port())
    }

    #[track_caller]
    fn assert_nothing_reached_upstream(&self) {
        assert_eq!(
            self.origin.requests(),
            Vec::<String>::new(),
            "the origin was reached"
        );
        assert_eq!(self.origin.connections(), 0, "the origin was connected to");
        assert_eq!(
            self.echo.connections(),
            0,
            "the echo server was connected to"
        );
    }
}

/// A listener on 127.0.0.1 that runs `handler` on its first connection, for origins that must
/// behave in one specific way.
fn one_shot_origin(handler: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            handler(stream);
        }
    });
    addr
}

fn read_until(stream: &mut impl Read, end: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(end) {
        match stream.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            _ => break,
        }
    }
    got
}

// ---------------------------------------------------------------------------------------------
// Allowed destinations
// ---------------------------------------------------------------------------------------------

#[test]
fn curl_get_through_the_proxy_reaches_the_origin() {
    let w = World::start();
    let reply = curl(&["-x", &w.proxy.url(), &w.url("allowed.test", "/hello?q=1")]).reply();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "origin saw GET /hello?q=1 body=0");
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
    let reply = curl(&[
        "-x",
        &w.proxy.url(),
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", file.display()),
        &w.url("allowed.test", "/upload"),
    ])
    .reply();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "origin saw POST /upload body=100000");
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
    let reply = curl(&[
        "-x",
        &w.proxy.url(),
        "--data-binary",
        &format!("@{}", file.display()),
        &w.url("allowed.test", "/big"),
    ])
    .reply();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), format!("origin saw POST /big body={size}"));
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
    let (status, _) = read_head(&mut client);
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
    let out = curl_with(
        &["-o", "/dev/null", "-o", "/dev/null"],
        &[
            "-x",
            &w.proxy.url(),
            "-w",
            "%{http_code} %{num_connects}\n",
            &w.url("allowed.test", "/one"),
            &w.url("allowed.test", "/two"),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // curl opened one connection to the proxy and reused it for the second request...
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 1\n200 0\n");
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
fn origin_closing_after_one_answer() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
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
        assert_eq!(reply.text(), "ok");
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
fn curl_proxytunnel_connect_reaches_the_origin() {
    let w = World::start();
    let reply = curl(&[
        "-p",
        "-x",
        &w.proxy.url(),
        &w.url("allowed.test", "/tunnelled"),
    ])
    .reply();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "origin saw GET /tunnelled body=0");
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
    let (status, _) = read_head(&mut stream);
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
    assert_eq!(reply.text(), "origin saw POST /te-cl body=6");
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
    assert_eq!(reply.text(), "origin saw GET /search body=4");
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
    assert_eq!(reply.text(), "abcdef");
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
    assert_eq!(read_reply(&mut client).text(), "origin saw GET /one body=0");
    assert_eq!(read_reply(&mut client).text(), "origin saw GET /two body=0");
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

// ---------------------------------------------------------------------------------------------
// Local addresses and DNS rebinding
// ---------------------------------------------------------------------------------------------

#[test]
fn allowed_name_resolving_to_loopback_is_refused_without_local_binding() {
    let w = World::with(|b| b.allow_local_binding(false));
    let reply = get(w.proxy.addr, &w.url("allowed.test", "/"));
    assert_verdict(&reply, 403, "blocked-by-policy", "dns-non-public:loopback");
    assert_denial_body(
        &reply,
        &w.at_origin("allowed.test"),
        "dns-non-public:loopback",
        "`allowed.test`",
    );
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("allowed.test"));
    assert_verdict(&reply, 403, "blocked-by-policy", "dns-non-public:loopback");
    let reply = curl(&["-x", &w.proxy.url(), &w.url("allowed.test", "/")]).reply();
    assert_verdict(&reply, 403, "blocked-by-policy", "dns-non-public:loopback");
    w.assert_nothing_reached_upstream();
}

/// `rebind.test` answers 127.0.0.1 to the first lookup and 127.0.0.2 afterwards. The origin
/// listens on 127.0.0.1 only, so a dial to anything but the checked address is refused.
#[test]
fn rebinding_name_is_dialled_only_at_the_address_that_was_checked() {
    let dns = FakeDns::start(vec![(
        "rebind.test",
        Answer::Sequence(vec![
            Answer::A(vec![LOOPBACK]),
            Answer::A(vec![Ipv4Addr::new(127, 0, 0, 2)]),
        ]),
    )]);
    let origin = HttpOrigin::start();
    let proxy = Proxy::builder()
        .allow("rebind.test")
        .allow_local_binding(true)
        .dns(&dns)
        .start_blocking();
    let url = format!("http://rebind.test:{}/first", origin.addr.port());

    let first = curl(&["-x", &proxy.url(), &url]).reply();
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(origin.request_count(), 1);
    // Exactly one lookup (A + AAAA) for that connection: the proxy did not resolve again
    // between checking and dialling.
    assert_eq!(dns.queries("rebind.test"), 2);

    let second = get(proxy.addr, &url);
    assert_eq!(
        (second.status, second.header("x-proxy-error")),
        (502, Some("connect-refused")),
        "{second:?}"
    );
    assert!(second.text().contains("rebind.test"), "{second:?}");
    assert!(
        dns.queries("rebind.test") > 2,
        "the second connection resolved again"
    );
    assert_eq!(
        origin.request_count(),
        1,
        "the second answer reached the origin"
    );
}

#[test]
fn rebinding_name_in_a_connect_tunnel_is_dialled_only_at_the_checked_address() {
    let dns = FakeDns::start(vec![(
        "rebind.test",
        Answer::Sequence(vec![
            Answer::A(vec![LOOPBACK]),
            Answer::A(vec![Ipv4Addr::new(127, 0, 0, 2)]),
        ]),
    )]);
    let echo = TcpEcho::start();
    let proxy = Proxy::builder()
        .allow("rebind.test")
        .allow_local_binding(true)
        .dns(&dns)
        .start_blocking();
    let target = format!("rebind.test:{}", echo.addr.port());

    let (mut stream, reply) = connect_tunnel(proxy.addr, &target);
    assert_eq!(reply.status, 200, "{reply:?}");
    stream.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    stream.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"ping");
    assert_eq!(dns.queries("rebind.test"), 2);

    let (_, reply) = connect_tunnel(proxy.addr, &target);
    assert_eq!(
        (reply.status, reply.header("x-proxy-error")),
        (502, Some("connect-refused")),
        "{reply:?}"
    );
    assert_eq!(echo.connections(), 1);
}

// ---------------------------------------------------------------------------------------------
// Denials
// ---------------------------------------------------------------------------------------------

#[test]
fn denied_name_is_403_deny_rule_and_never_reaches_the_origin() {
    let w = World::start();
    let reply = get(w.proxy.addr, &w.url("evil.corp.test", "/"));
    assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    assert_denial_body(
        &reply,
        &w.at_origin("evil.corp.test"),
        "deny-rule",
        "rule deny `evil.corp.test` (--deny)",
    );
    let reply = curl(&["-x", &w.proxy.url(), &w.url("evil.corp.test", "/")]).reply();
    assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("evil.corp.test"));
    assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    // curl -p reports the refused CONNECT.
    let out = curl(&["-p", "-x", &w.proxy.url(), &w.url("evil.corp.test", "/")]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("403"), "{}", out.stderr);
    // A sibling under the same wildcard is allowed: the deny is what blocked.
    let reply = get(w.proxy.addr, &w.url("api.corp.test", "/sibling"));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(w.origin.request_count(), 1);
    assert_eq!(
        w.origin.requests()[0].lines().next(),
        Some("GET /sibling HTTP/1.1")
    );
    assert_eq!(w.echo.connections(), 0);
    // Denied before any lookup: the name never leaked to DNS.
    assert_eq!(w.dns.queries("evil.corp.test"), 0);
}

/// Case, a trailing dot and percent-encoding do not get around a deny rule.
#[test]
fn denied_name_in_other_spellings_is_still_denied() {
    let w = World::start();
    for host in ["EVIL.corp.test", "evil.corp.test.", "Evil.Corp.Test."] {
        let reply = get(w.proxy.addr, &w.url(host, "/"));
        assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
        let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo(host));
        assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    }
    // Percent-encoding is either decoded (and denied) or refused outright.
    let reply = get(w.proxy.addr, &w.url("evil%2Ecorp.test", "/"));
    assert!(
        reply.verdict() == (403, Some("blocked-by-denylist"), Some("deny-rule"))
            || reply.status == 400,
        "{reply:?}"
    );
    w.assert_nothing_reached_upstream();
    // The same spellings of an allowed name work.
    let reply = get(w.proxy.addr, &w.url("ALLOWED.Test.", "/case"));
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[test]
fn unlisted_name_is_403_not_allowed() {
    let w = World::start();
    let reply = get(w.proxy.addr, &w.url("other.test", "/"));
    assert_verdict(&reply, 403, "blocked-by-allowlist", "not-allowed");
    assert_denial_body(
        &reply,
        &w.at_origin("other.test"),
        "not-allowed",
        "rule: none",
    );
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("other.test"));
    assert_verdict(&reply, 403, "blocked-by-allowlist", "not-allowed");
    let reply = curl(&["-x", &w.proxy.url(), &w.url("other.test", "/")]).reply();
    assert_verdict(&reply, 403, "blocked-by-allowlist", "not-allowed");
    w.assert_nothing_reached_upstream();
    assert_eq!(w.dns.queries("other.test"), 0);
}

/// Legacy IPv4 spellings of 127.0.0.1 and IPv6 forms of loopback, as URL hosts.
const LOOPBACK_SPELLINGS: &[&str] = &[
    "127.1",
    "0x7f.0.0.1",
    "2130706433",
    "0177.0.0.1",
    "0x7f.1",
    "127.0.0.1.",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
];

#[test]
fn loopback_spellings_are_not_allowed_by_a_name_rule() {
    let w = World::start();
    for host in LOOPBACK_SPELLINGS {
        let reply = get(w.proxy.addr, &w.url(host, "/"));
        assert_verdict(&reply, 403, "blocked-by-allowlist", "not-allowed");
        let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo(host));
        assert_verdict(&reply, 403, "blocked-by-allowlist", "not-allowed");
    }
    w.assert_nothing_reached_upstream();
}

#[test]
fn loopback_spellings_are_non_public_under_a_global_allow() {
    let w = World::with(|b| b.allow("*").allow_local_binding(false));
    for host in LOOPBACK_SPELLINGS {
        let reply = get(w.proxy.addr, &w.url(host, "/"));
        assert_verdict(&reply, 403, "blocked-by-policy", "non-public-ip:loopback");
        let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo(host));
        assert_verdict(&reply, 403, "blocked-by-policy", "non-public-ip:loopback");
    }
    w.assert_nothing_reached_upstream();
}

/// The control for the two tests above: each spelling really is 127.0.0.1 (the IPv4 ones and
/// the mapped IPv6 ones reach the origin once local binding is allowed).
#[test]
fn loopback_spellings_reach_127_0_0_1_when_local_binding_is_allowed() {
    let w = World::with(|b| b.allow("*").allow_local_binding(true));
    let reachable: Vec<&str> = LOOPBACK_SPELLINGS
        .iter()
        .copied()
        .filter(|h| *h != "[::1]")
        .collect();
    for host in &reachable {
        let reply = get(w.proxy.addr, &w.url(host, "/spelling"));
        assert_eq!(reply.status, 200, "{host}: {reply:?}");
        let (mut stream, reply) = connect_tunnel(w.proxy.addr, &w.at_echo(host));
        assert_eq!(reply.status, 200, "{host}: {reply:?}");
        stream.write_all(b"x").unwrap();
        let mut x = [0u8; 1];
        stream.read_exact(&mut x).unwrap();
    }
    assert_eq!(w.origin.request_count(), reachable.len());
    assert_eq!(w.echo.connections(), reachable.len());
}

#[test]
fn userinfo_is_never_the_destination() {
    let w = World::start();
    let port = w.origin.addr.port();
    for url in [
        format!("http://allowed.test@127.0.0.1:{port}/"),
        format!("http://allowed.test:{port}@127.0.0.1:{port}/"),
        format!("http://allowed.test:pw@127.1:{port}/"),
    ] {
        let reply = raw_request(
            w.proxy.addr,
            format!("GET {url} HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n").as_bytes(),
        );
        assert_verdict(&reply, 403, "blocked-by-allowlist", "not-allowed");
        assert!(
            reply.text().contains(&format!("127.0.0.1:{port}")),
            "{url}: {reply:?}"
        );
    }
    // In a CONNECT target `@` is simply invalid.
    let (_, reply) = connect_tunnel(
        w.proxy.addr,
        &format!("allowed.test@127.0.0.1:{}", w.echo.addr.port()),
    );
    assert_eq!(reply.status, 400, "{reply:?}");
    w.assert_nothing_reached_upstream();

    // The other way round, the allowed name is the destination and userinfo is not forwarded.
    let reply = get(
        w.proxy.addr,
        &format!("http://127.0.0.1:{port}@allowed.test:{port}/ui"),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let head = &w.origin.requests()[0];
    assert!(head.starts_with("GET /ui HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("\r\nhost: allowed.test:{port}")),
        "{head}"
    );
    assert!(!head.contains('@'), "{head}");
}

#[test]
fn the_request_uri_decides_not_the_host_header() {
    let w = World::start();
    // A denied URI with an allowed Host header is denied.
    let reply = raw_request(
        w.proxy.addr,
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            w.url("evil.corp.test", "/"),
            w.at_origin("allowed.test")
        )
        .as_bytes(),
    );
    assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    w.assert_nothing_reached_upstream();

    // An allowed URI with a denied Host header goes to the URI, with Host rewritten to match.
    let reply = raw_request(
        w.proxy.addr,
        format!(
            "GET {} HTTP/1.1\r\nHost: evil.corp.test\r\n\r\n",
            w.url("allowed.test", "/h")
        )
        .as_bytes(),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let head = w.origin.requests()[0].to_ascii_lowercase();
    let hosts: Vec<&str> = head
        .split("\r\n")
        .filter(|l| l.starts_with("host:"))
        .collect();
    assert_eq!(
        hosts,
        [format!("host: {}", w.at_origin("allowed.test"))],
        "{head}"
    );
}

#[test]
fn nxdomain_is_502_dns_failed() {
    let w = World::start();
    let reply = get(w.proxy.addr, &w.url("gone.test", "/"));
    assert_verdict(&reply, 502, "blocked-by-policy", "dns-failed");
    assert_denial_body(&reply, &w.at_origin("gone.test"), "dns-failed", "nxdomain");
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("gone.test"));
    assert_verdict(&reply, 502, "blocked-by-policy", "dns-failed");
    w.assert_nothing_reached_upstream();
}

#[test]
fn dns_timeout_is_502_dns_failed() {
    let w = World::with(|b| b.dns_timeout(Duration::from_millis(300)));
    let reply = get(w.proxy.addr, &w.url("silent.test", "/"));
    assert_verdict(&reply, 502, "blocked-by-policy", "dns-failed");
    assert!(reply.text().contains("timed out"), "{reply:?}");
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("silent.test"));
    assert_verdict(&reply, 502, "blocked-by-policy", "dns-failed");
    w.assert_nothing_reached_upstream();
}

#[test]
fn invalid_hosts_are_400_invalid_host() {
    let w = World::start();
    let port = w.origin.addr.port();
    for host in [
        format!("allowed..test:{port}"),
        format!("127.0.0.1.1:{port}"),
        format!("[::1%25lo]:{port}"),
        "allowed.test:0".to_string(),
    ] {
        let reply = get(w.proxy.addr, &format!("http://{host}/"));
        assert_verdict(&reply, 400, "blocked-by-policy", "invalid-host");
    }
    for authority in ["allowed.test", "allowed..test:443", "allowed.test:0"] {
        let (_, reply) = connect_tunnel(w.proxy.addr, authority);
        assert_verdict(&reply, 400, "blocked-by-policy", "invalid-host");
    }
    // hyper refuses this request line itself, before the policy sees a target.
    let (_, reply) = connect_tunnel(w.proxy.addr, "::1:443");
    assert_eq!(reply.verdict(), (400, None, None), "{reply:?}");
    w.assert_nothing_reached_upstream();
}

/// `check URL` and the listener derive a URL's destination with one function, so they agree on
/// every URL: the listener answers 400 exactly when `check` says `invalid-host`, and otherwise
/// both name the same canonical host and port and reach the same decision. A tunnelled scheme
/// (`https`, `ws`, `wss`) is never forwarded (400) and is judged as the CONNECT a client sends.
#[test]
fn check_and_the_listener_agree_on_every_url() {
    let proxy = Proxy::builder().deny("evil.test").start_blocking();
    let urls = [
        "http:///path",
        "http://",
        "http://:80/",
        "http://a@b/",
        "http://@b/",
        "http://a@/",
        "http://a@b@c/",
        "http://[x]@c/",
        "http://u:p%40w@evil.test/",
        "http://[::1",
        "http://[::1/",
        "http://[::1]x/",
        "http://[::1]:8080/",
        "http://[fe80::1%25eth0]/",
        "http://::1/",
        "http://host:0/",
        "http://host:/",
        "http://host:65536/",
        "http://host:80:80/",
        "http://ho st/",
        "http://exa%6dple.com/",
        "http://bücher.de/",
        "http://a\\b/",
        "http://a\"b/",
        "http://*.example.com/",
        "http://a..b/",
        "http://1.2.3.4.5/",
        "HTTP://Example.COM./",
        "http://EVIL.test./x",
        "http://evil.test:8080?x",
        "http://127.0.0.1#@evil.test/",
        "http://127.1/",
        "http://0x7f.1/",
        "http://2130706433/",
        "http://[::ffff:127.0.0.1]/",
        "http://example.com/<",
        "http://example.com/`",
        "http://example.com/?\"",
        "http://example.com/a\"{}|^\\?{}`#<>",
        "ftp://x/",
        "gopher://x/",
        "ws://",
        "https://",
        "https://example.com/",
        "https://a@evil.test:8443/",
        "https://[::1]/",
        "wss://example.com/",
        "ws://evil.test/",
    ];
    let mut args = vec!["check", "--json", "--no-dns", "--deny", "evil.test"];
    args.extend(urls);
    let (_, out, err) = support::bin::run(&args);
    assert_eq!(err, "");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), urls.len(), "{out}");
    // The decision and destination the listener reports: `(reason, host:port)`, or `None` for 400.
    let listener = |reply: &Reply| {
        if reply.status == 400 {
            return None;
        }
        let body = reply.text();
        let dest = body
            .strip_prefix("egress-proxy: blocked ")
            .and_then(|rest| rest.split_once(": "))
            .unwrap_or_else(|| panic!("not a denial: {reply:?}"))
            .0
            .to_string();
        Some((reply.header("x-proxy-reason").unwrap().to_string(), dest))
    };
    for (url, line) in urls.iter().zip(&lines) {
        assert_eq!(line["target"], *url);
        let checked = (line["reason"] != "invalid-host").then(|| {
            let (host, port) = (line["host"].as_str().unwrap(), &line["port"]);
            let dest = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            (line["reason"].as_str().unwrap().to_string(), dest)
        });
        let forwarded = raw_request(
            proxy.addr,
            format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let tunnelled = !url.to_ascii_lowercase().starts_with("http://");
        if !tunnelled {
            assert_eq!(listener(&forwarded), checked, "{url}: {forwarded:?}");
            continue;
        }
        assert_eq!(forwarded.status, 400, "{url}: {forwarded:?}");
        if let Some((_, dest)) = &checked {
            let (_, reply) = connect_tunnel(proxy.addr, dest);
            assert_eq!(listener(&reply), checked, "{url} as CONNECT: {reply:?}");
        }
    }
}

/// A CIDR deny rule also judges the addresses a name resolves to: an allowed name whose
/// answer falls in a denied range never connects (the shape of a metadata-endpoint deny).
#[test]
fn a_cidr_deny_blocks_an_allowed_name_by_its_resolved_address() {
    let w = World::with(|b| b.deny("127.0.0.0/8"));
    let reply = get(w.proxy.addr, &w.url("allowed.test", "/"));
    assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    assert_denial_body(&reply, "allowed.test:", "deny-rule", "deny `127.0.0.0/8`");
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_origin("allowed.test"));
    assert_verdict(&reply, 403, "blocked-by-denylist", "deny-rule");
    w.assert_nothing_reached_upstream();
}

#[test]
fn closed_port_is_502_connect_refused() {
    let w = World::start();
    let closed = TcpListener::bind((LOOPBACK, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let reply = get(
        w.proxy.addr,
        &format!("http://allowed.test:{}/", closed.port()),
    );
    assert_eq!(
        (reply.status, reply.header("x-proxy-error")),
        (502, Some("connect-refused")),
        "{reply:?}"
    );
    let (_, reply) = connect_tunnel(w.proxy.addr, &format!("allowed.test:{}", closed.port()));
    assert_eq!(
        (reply.status, reply.header("x-proxy-error")),
        (502, Some("connect-refused")),
        "{reply:?}"
    );
}

/// A loopback listener whose accept queue is full drops new SYNs, so a connect to it hangs
/// until the proxy's connect timeout.
#[test]
fn unanswered_connect_is_504_connect_timeout() {
    let dns = FakeDns::start(zone());
    let proxy = standard(&dns)
        .limits(|l| l.connect_timeout = Duration::from_millis(500))
        .start_blocking();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((LOOPBACK, 0).into()).unwrap();
        socket.listen(0).unwrap()
    });
    let addr = listener.local_addr().unwrap();
    // Fill the accept queue until a connect hangs.
    let mut fillers = Vec::new();
    let full =
        (0..8).any(
            |_| match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(stream) => {
                    fillers.push(stream);
                    false
                }
                Err(_) => true,
            },
        );
    assert!(
        full,
        "could not fill the accept queue of a loopback listener"
    );

    let reply = get(proxy.addr, &format!("http://allowed.test:{}/", addr.port()));
    assert_eq!(
        (reply.status, reply.header("x-proxy-error")),
        (504, Some("connect-timeout")),
        "{reply:?}"
    );
    let (_, reply) = connect_tunnel(proxy.addr, &format!("allowed.test:{}", addr.port()));
    assert_eq!(
        (reply.status, reply.header("x-proxy-error")),
        (504, Some("connect-timeout")),
        "{reply:?}"
    );
    drop(listener);
}

// ---------------------------------------------------------------------------------------------
// Limited mode
// ---------------------------------------------------------------------------------------------

#[test]
fn limited_mode_lets_get_head_and_options_through() {
    let w = World::with(|b| b.mode(Mode::Limited));
    let proxy = w.proxy.url();
    let reply = curl(&["-x", &proxy, &w.url("allowed.test", "/get")]).reply();
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = curl(&["-x", &proxy, "-I", &w.url("allowed.test", "/head")]).reply();
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = curl(&[
        "-x",
        &proxy,
        "-X",
        "OPTIONS",
        &w.url("allowed.test", "/options"),
    ])
    .reply();
    assert_eq!(reply.status, 200, "{reply:?}");
    let lines: Vec<String> = w
        .origin
        .requests()
        .iter()
        .map(|h| h.lines().next().unwrap().to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "GET /get HTTP/1.1",
            "HEAD /head HTTP/1.1",
            "OPTIONS /options HTTP/1.1"
        ]
    );
}

#[test]
fn limited_mode_blocks_other_methods_and_connect() {
    let w = World::with(|b| b.mode(Mode::Limited));
    let reply = curl(&[
        "-x",
        &w.proxy.url(),
        "-d",
        "x=1",
        &w.url("allowed.test", "/post"),
    ])
    .reply();
    assert_verdict(
        &reply,
        403,
        "blocked-by-method-policy",
        "method-not-allowed",
    );
    assert_denial_body(
        &reply,
        &w.at_origin("allowed.test"),
        "method-not-allowed",
        "rule: none",
    );
    for method in ["PUT", "DELETE", "PATCH", "get"] {
        let reply = raw_request(
            w.proxy.addr,
            format!(
                "{method} {} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                w.url("allowed.test", "/")
            )
            .as_bytes(),
        );
        assert_verdict(
            &reply,
            403,
            "blocked-by-method-policy",
            "method-not-allowed",
        );
    }
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("allowed.test"));
    assert_verdict(
        &reply,
        403,
        "blocked-by-method-policy",
        "method-not-allowed",
    );
    let out = curl(&["-p", "-x", &w.proxy.url(), &w.url("allowed.test", "/")]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("403"), "{}", out.stderr);
    w.assert_nothing_reached_upstream();
}

/// Limited mode refuses a GET, HEAD or OPTIONS that carries a body (by length or chunked):
/// a body would make a read an upload. `Content-Length: 0` is no body.
#[test]
fn limited_mode_refuses_a_request_body_on_reads() {
    let w = World::with(|b| b.mode(Mode::Limited));
    let url = w.url("allowed.test", "/up");
    for (method, framing) in [
        ("GET", "Content-Length: 5\r\n\r\nhello"),
        ("HEAD", "Content-Length: 5\r\n\r\nhello"),
        ("OPTIONS", "Content-Length: 5\r\n\r\nhello"),
        (
            "GET",
            "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
    ] {
        let mut stream = connect(w.proxy.addr);
        write!(
            stream,
            "{method} {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{framing}"
        )
        .unwrap();
        // The answer to a HEAD has a length but no body.
        let reply = if method == "HEAD" {
            let (status, headers) = read_head(&mut stream);
            Reply {
                status,
                headers,
                body: Vec::new(),
            }
        } else {
            read_reply(&mut stream)
        };
        assert_verdict(
            &reply,
            403,
            "blocked-by-method-policy",
            "method-not-allowed",
        );
        if method != "HEAD" {
            assert_denial_body(
                &reply,
                &w.at_origin("allowed.test"),
                "no request body",
                "rule: none",
            );
        }
    }
    w.assert_nothing_reached_upstream();
    let reply = raw_request(
        w.proxy.addr,
        format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(w.origin.request_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Unix sockets
// ---------------------------------------------------------------------------------------------

struct UnixWorld {
    proxy: Proxy,
    ok: UnixHttpOrigin,
    denied: UnixHttpOrigin,
    unlisted: UnixHttpOrigin,
    root: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// `ok.sock` allowed, `denied.sock` denied, `unlisted.sock` in neither list, plus
/// `alias-ok.sock` → ok, `alias-denied.sock` → denied (listed as allowed!) and
/// `innocent.sock` → denied (unlisted).
fn unix_world(customize: impl FnOnce(ProxyBuilder) -> ProxyBuilder) -> UnixWorld {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let ok = UnixHttpOrigin::start(&root.join("ok.sock"));
    let denied = UnixHttpOrigin::start(&root.join("denied.sock"));
    let unlisted = UnixHttpOrigin::start(&root.join("unlisted.sock"));
    std::os::unix::fs::symlink(&ok.path, root.join("alias-ok.sock")).unwrap();
    std::os::unix::fs::symlink(&denied.path, root.join("alias-denied.sock")).unwrap();
    std::os::unix::fs::symlink(&denied.path, root.join("innocent.sock")).unwrap();
    let proxy = customize(
        Proxy::builder()
            .allow_unix(root.join("ok.sock"))
            .deny_unix(root.join("denied.sock"))
            .allow_unix(root.join("alias-denied.sock")),
    )
    .start_blocking();
    UnixWorld {
        proxy,
        ok,
        denied,
        unlisted,
        root,
        _dir: dir,
    }
}

impl UnixWorld {
    /// `curl -x PROXY -H 'x-unix-socket: ROOT/SOCKET' EXTRA http://localhost/x`.
    fn curl(&self, socket: &str, extra: &[&str]) -> Reply {
        let proxy = self.proxy.url();
        let header = format!("x-unix-socket: {}", self.root.join(socket).display());
        let mut args = vec!["-x", proxy.as_str(), "-H", header.as_str()];
        args.extend_from_slice(extra);
        args.push("http://localhost/x");
        curl(&args).reply()
    }
}

#[test]
fn an_allowed_unix_socket_nobody_listens_on_is_a_502_naming_the_path() {
    let u = unix_world(|b| b);
    let gone = u.root.join("gone.sock");
    // A socket file with no listener behind it: connecting is refused.
    drop(std::os::unix::net::UnixListener::bind(&gone).unwrap());
    let u = UnixWorld {
        proxy: Proxy::builder().allow_unix(&gone).start_blocking(),
        ..u
    };
    let reply = u.curl("gone.sock", &[]);
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(reply.header("x-proxy-error"), Some("connect-refused"));
    assert_eq!(
        reply.text(),
        format!(
            "egress-proxy: cannot connect to unix:{0}: connection refused by unix:{0}\n",
            gone.display()
        )
    );
}

#[test]
fn allowed_unix_socket_is_used_and_the_header_is_not_forwarded() {
    let u = unix_world(|b| b);
    let reply = u.curl("ok.sock", &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "unix origin saw GET /x body=0");
    let head = u.ok.requests()[0].to_ascii_lowercase();
    assert!(!head.contains("x-unix-socket"), "{head}");
    assert!(head.contains("\r\nhost: localhost"), "{head}");
    // A symlink to an allowed socket is judged by where it points.
    let reply = u.curl("alias-ok.sock", &["-d", "abc"]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "unix origin saw POST /x body=3");
    assert_eq!(u.ok.request_count(), 2);
}

#[test]
fn unlisted_unix_socket_is_403_unix_socket_denied() {
    let u = unix_world(|b| b);
    let reply = u.curl("unlisted.sock", &[]);
    assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    assert_denial_body(&reply, "unlisted.sock", "unix-socket-denied", "rule: none");
    let reply = u.curl("denied.sock", &[]);
    assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    assert!(reply.text().contains("rule deny"), "{reply:?}");
    // A relative path is never allowed.
    let reply = raw_request(
        u.proxy.addr,
        b"GET http://localhost/x HTTP/1.1\r\nHost: localhost\r\nx-unix-socket: ok.sock\r\n\r\n",
    );
    assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    assert_eq!(u.unlisted.request_count(), 0);
    assert_eq!(u.denied.request_count(), 0);
    assert_eq!(u.ok.request_count(), 0);
}

#[test]
fn symlink_to_a_denied_unix_socket_stays_denied() {
    let u = unix_world(|b| b);
    // Unlisted link → denied socket.
    let reply = u.curl("innocent.sock", &[]);
    assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    // Even a link that is itself on the allow list.
    let reply = u.curl("alias-denied.sock", &[]);
    assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    assert_eq!(u.denied.request_count(), 0);
}

#[test]
fn a_hard_link_to_a_denied_unix_socket_at_an_allowed_path_stays_denied() {
    let u = unix_world(|b| b);
    // A client that can write next to the allowed socket swaps it for another name of the
    // denied one: same text as the allow entry, no symlink anywhere.
    std::fs::remove_file(&u.ok.path).unwrap();
    std::fs::hard_link(&u.denied.path, &u.ok.path).unwrap();
    let reply = u.curl("ok.sock", &[]);
    assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    let deny_entry = u.denied.path.display().to_string();
    assert_denial_body(&reply, "ok.sock", "unix-socket-denied", &deny_entry);
    assert_eq!(u.denied.connection_count(), 0);
}

#[test]
fn swapping_an_allowed_unix_socket_for_a_symlink_never_reaches_the_denied_one() {
    let u = unix_world(|b| b);
    // `ok.sock` flips between a hard link to the allowed socket and a symlink to the denied one,
    // each swap one atomic rename, as fast as it can.
    let inode = u.root.join("ok-inode.sock");
    std::fs::hard_link(&u.ok.path, &inode).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, root, allowed) = (Arc::clone(&stop), u.root.clone(), u.ok.path.clone());
        let denied = u.denied.path.clone();
        thread::spawn(move || {
            let (to_ok, to_denied) = (root.join("next-ok"), root.join("next-denied"));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Symlink first: renaming a link over another name of the same file is a no-op.
                std::os::unix::fs::symlink(&denied, &to_denied).unwrap();
                std::fs::rename(&to_denied, &allowed).unwrap();
                std::fs::hard_link(&inode, &to_ok).unwrap();
                std::fs::rename(&to_ok, &allowed).unwrap();
            }
        })
    };
    let request = format!(
        "GET http://localhost/x HTTP/1.1\r\nHost: localhost\r\nx-unix-socket: {}\r\n\
         Connection: close\r\n\r\n",
        u.ok.path.display()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut served, mut refused) = (0, 0);
    for _ in 0..2000 {
        if Instant::now() > deadline || u.denied.connection_count() > 0 {
            break;
        }
        let reply = raw_request(u.proxy.addr, request.as_bytes());
        match reply.status {
            200 => served += 1,
            403 => refused += 1,
            _ => panic!("{reply:?}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    assert_eq!(
        u.denied.connection_count(),
        0,
        "the denied socket was reached ({served} served, {refused} refused)"
    );
    assert!(served > 0, "no request got through ({refused} refused)");
}

#[test]
fn allow_all_unix_sockets_still_denies_every_name_of_a_denied_socket() {
    let u = unix_world(|b| b.allow_all_unix());
    let reply = u.curl("unlisted.sock", &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    // A hard link anywhere on the same file system is the denied socket.
    std::fs::create_dir(u.root.join("elsewhere")).unwrap();
    std::fs::hard_link(&u.denied.path, u.root.join("elsewhere/fresh.sock")).unwrap();
    let reply = u.curl("elsewhere/fresh.sock", &[]);
    assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    assert_eq!(u.denied.connection_count(), 0);
    assert_eq!(u.unlisted.request_count(), 1);
}

#[test]
fn an_allowed_unix_socket_path_that_is_no_socket_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(root.join("file.sock"), "").unwrap();
    std::fs::create_dir(root.join("dir.sock")).unwrap();
    let u = UnixWorld {
        proxy: Proxy::builder()
            .allow_unix(root.join("file.sock"))
            .allow_unix(root.join("dir.sock"))
            .allow_unix(root.join("missing.sock"))
            .start_blocking(),
        ..unix_world(|b| b)
    };
    for name in ["file.sock", "dir.sock", "missing.sock"] {
        let reply = raw_request(
            u.proxy.addr,
            format!(
                "GET http://localhost/x HTTP/1.1\r\nHost: localhost\r\nx-unix-socket: {}\r\n\r\n",
                root.join(name).display()
            )
            .as_bytes(),
        );
        assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    }
}

#[test]
fn unix_socket_requests_obey_limited_mode() {
    let u = unix_world(|b| b.mode(Mode::Limited));
    let reply = u.curl("ok.sock", &["-d", "x"]);
    assert_verdict(
        &reply,
        403,
        "blocked-by-method-policy",
        "method-not-allowed",
    );
    let reply = u.curl("ok.sock", &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(u.ok.request_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Robustness
// ---------------------------------------------------------------------------------------------

/// A request through `w` that must work, to show the proxy still serves others.
#[track_caller]
fn assert_still_serving(w: &World, path: &str) {
    let reply = get(w.proxy.addr, &w.url("allowed.test", path));
    assert_eq!(reply.status, 200, "the proxy stopped serving: {reply:?}");
}

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
    assert!(
        reply.text().contains("101 Switching Protocols"),
        "{reply:?}"
    );
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
    assert!(reply.text().contains("CONNECT"), "{reply:?}");
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
            (reply.status, reply.text()),
            (200, format!("connection {i}")),
            "{reply:?}"
        );
    }
}

#[test]
fn the_proxy_itself_is_never_a_destination() {
    let w = World::with(|b| b.allow("*").allow("localhost").allow("127.0.0.1"));
    let port = w.proxy.addr.port();
    for authority in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("allowed.test:{port}"),
        format!("127.0.0.2:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
    ] {
        let (_, reply) = connect_tunnel(w.proxy.addr, &authority);
        assert_verdict(&reply, 403, "blocked-by-policy", "self-connection");
        assert_denial_body(&reply, &format!(":{port}"), "self-connection", "rule");
        let reply = get(w.proxy.addr, &format!("http://{authority}/"));
        assert_verdict(&reply, 403, "blocked-by-policy", "self-connection");
    }
    // The unspecified address is refused for what it is.
    let (_, reply) = connect_tunnel(w.proxy.addr, &format!("0.0.0.0:{port}"));
    assert_verdict(
        &reply,
        403,
        "blocked-by-policy",
        "non-public-ip:unspecified",
    );
}

// ---------------------------------------------------------------------------------------------
// hyper client plumbing
// ---------------------------------------------------------------------------------------------

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

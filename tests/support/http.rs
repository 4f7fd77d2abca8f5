//! One raw HTTP/1.1 client over a Tokio `TcpStream`, for tests that must see exactly what the
//! proxy or the admin API wrote. Every exchange gives up after [`IO_TIMEOUT`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use super::reply::Reply;

/// How long one exchange may take before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `request` on a new connection and reads one response: the head, then as many body
/// bytes as `Content-Length` says (none with `head_only`, for CONNECT and HEAD).
pub async fn exchange(addr: SocketAddr, request: &str, head_only: bool) -> Reply {
    let io = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        read_reply(&mut stream, head_only).await
    };
    tokio::time::timeout(IO_TIMEOUT, io)
        .await
        .unwrap_or_else(|_| panic!("no reply from {addr} to {request:?}"))
}

/// A plain-HTTP `GET url` through the proxy at `proxy`, closing afterwards.
pub async fn proxy_get(proxy: SocketAddr, authority: &str, extra_headers: &str) -> Reply {
    let req = format!(
        "GET http://{authority}/path HTTP/1.1\r\nHost: {authority}\r\n{extra_headers}\
         Connection: close\r\n\r\n"
    );
    exchange(proxy, &req, false).await
}

/// A `CONNECT authority` through the proxy at `proxy`; only the head is read.
pub async fn proxy_connect(proxy: SocketAddr, authority: &str) -> Reply {
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    exchange(proxy, &req, true).await
}

/// Reads one response off `stream`: the head, then the `Content-Length` body unless
/// `head_only`.
pub async fn read_reply(stream: &mut TcpStream, head_only: bool) -> Reply {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed before the response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut reply = Reply::from_head(std::str::from_utf8(&buf[..head_end]).unwrap());
    let mut body = buf[head_end..].to_vec();
    if !head_only {
        if let Some(length) = reply.content_length() {
            while body.len() < length {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed inside the body");
                body.extend_from_slice(&chunk[..n]);
            }
        }
    }
    reply.body = String::from_utf8_lossy(&body).into_owned();
    reply
}

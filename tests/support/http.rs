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

/// The same client over a blocking `std::net::TcpStream`, for tests that drive the proxy from
/// plain threads. Every read and write gives up after [`IO_TIMEOUT`].
pub mod blocking {
    use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
    use std::net::{SocketAddr, TcpStream};

    use super::{Reply, IO_TIMEOUT};

    pub fn connect(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to the proxy");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }

    /// Reads a response head byte by byte, so nothing after it (tunnel bytes) is consumed.
    /// `None` if the peer closed (or reset) before sending a single byte.
    pub fn try_read_head(stream: &mut TcpStream) -> Option<Reply> {
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
        Some(Reply::from_head(&text))
    }

    /// A response head; the body is left unread.
    pub fn read_head(stream: &mut TcpStream) -> Reply {
        try_read_head(stream).expect("the proxy closed the connection without a response")
    }

    /// Reads a whole response: Content-Length, chunked, or until the close.
    pub fn try_read_reply(stream: &mut TcpStream) -> Option<Reply> {
        let mut reply = try_read_head(stream)?;
        let mut body = Vec::new();
        if let Some(len) = reply.content_length() {
            body = vec![0; len];
            stream.read_exact(&mut body).expect("response body");
        } else if reply
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            body = read_chunked(stream);
        } else if reply.status >= 200 && reply.status != 204 && reply.status != 304 {
            stream.read_to_end(&mut body).expect("response body");
        }
        reply.body = String::from_utf8_lossy(&body).into_owned();
        Some(reply)
    }

    pub fn read_reply(stream: &mut TcpStream) -> Reply {
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
    pub fn raw_request(proxy: SocketAddr, bytes: &[u8]) -> Reply {
        let mut stream = connect(proxy);
        stream.write_all(bytes).expect("send the request");
        read_reply(&mut stream)
    }

    /// `GET <absolute-url>` on a new connection, closed after the response.
    pub fn get(proxy: SocketAddr, url: &str) -> Reply {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let host = rest.split('/').next().unwrap();
        raw_request(
            proxy,
            format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    }

    /// `CONNECT authority` on a new connection; returns the stream (positioned after the head)
    /// and the head, with the body of a refusal.
    pub fn connect_tunnel(proxy: SocketAddr, authority: &str) -> (TcpStream, Reply) {
        let mut stream = connect(proxy);
        write!(
            stream,
            "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
        )
        .expect("send CONNECT");
        let mut reply = read_head(&mut stream);
        if reply.status != 200 {
            if let Some(len) = reply.content_length() {
                let mut body = vec![0; len];
                stream.read_exact(&mut body).expect("CONNECT error body");
                reply.body = String::from_utf8_lossy(&body).into_owned();
            }
        }
        (stream, reply)
    }

    /// Asserts the peer closes the connection (EOF or reset) before `IO_TIMEOUT`, discarding
    /// any response it sends first. Returns what was read.
    pub fn expect_close(stream: &mut TcpStream) -> Vec<u8> {
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
}

//! `CONNECT host:port` to an HTTP upstream: one request, one response head (httparse), and
//! whatever the upstream already sent behind it.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Answer, UpstreamError};

/// The longest response head read from an upstream.
const MAX_HEAD: usize = 16 * 1024;

/// How a CONNECT exchange failed.
#[derive(Debug)]
pub(super) enum Failed {
    Status(u16),
    Io(io::Error),
    Unreadable(&'static str),
}

impl Failed {
    pub(super) fn into_upstream(self, proxy: &Arc<str>) -> UpstreamError {
        let proxy = Arc::clone(proxy);
        match self {
            Failed::Status(407) => UpstreamError::Auth {
                proxy,
                answer: Answer::Http(407),
            },
            Failed::Status(status) => UpstreamError::Refused {
                proxy,
                answer: Answer::Http(status),
            },
            Failed::Io(error) => UpstreamError::Broken {
                proxy,
                detail: error.to_string(),
            },
            Failed::Unreadable(what) => UpstreamError::Broken {
                proxy,
                detail: what.to_string(),
            },
        }
    }
}

/// Asks for a tunnel to `authority`; returns the bytes the upstream sent after a 2xx head
/// (a server that speaks first may already have).
pub(super) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    authority: &str,
    authorization: Option<&str>,
) -> Result<Vec<u8>, Failed> {
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(value) = authorization {
        request.push_str("Proxy-Authorization: ");
        request.push_str(value);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(Failed::Io)?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await.map_err(Failed::Io)?;
        if n == 0 {
            return Err(Failed::Unreadable(
                "it closed the connection before answering",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((status, len)) = parse(&buf)? {
            if !(200..300).contains(&status) {
                return Err(Failed::Status(status));
            }
            return Ok(buf.split_off(len));
        }
        if buf.len() > MAX_HEAD {
            return Err(Failed::Unreadable("its answer head is too long"));
        }
    }
}

/// The status and head length of a complete response head, `None` while it is incomplete.
fn parse(buf: &[u8]) -> Result<Option<(u16, usize)>, Failed> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(response.code.map(|code| (code, len))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(Failed::Unreadable("its answer is not HTTP")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exchange(answer: &'static [u8]) -> (String, Result<Vec<u8>, Failed>) {
        let (mut ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let upstream = tokio::spawn(async move {
            let mut seen = vec![0u8; 4096];
            let n = theirs.read(&mut seen).await.unwrap();
            theirs.write_all(answer).await.unwrap();
            String::from_utf8(seen[..n].to_vec()).unwrap()
        });
        let result = connect(&mut ours, "name.test:443", Some("Basic dTpw")).await;
        (upstream.await.unwrap(), result)
    }

    #[tokio::test]
    async fn a_2xx_opens_the_tunnel_and_keeps_what_follows_the_head() {
        let (request, result) =
            exchange(b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\nSSH-2.0-banner").await;
        assert_eq!(
            request,
            "CONNECT name.test:443 HTTP/1.1\r\nHost: name.test:443\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
        );
        assert_eq!(result.unwrap(), b"SSH-2.0-banner");
        let (_, result) = exchange(b"HTTP/1.0 200 OK\r\n\r\n").await;
        assert!(result.unwrap().is_empty());
    }

    #[tokio::test]
    async fn refusals_and_garbage() {
        let cases: [(&'static [u8], &str); 4] = [
            (
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
                "Status(407)",
            ),
            (
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
                "Status(403)",
            ),
            (
                b"SSH-2.0-not-http\r\n\r\n",
                "Unreadable(\"its answer is not HTTP\")",
            ),
            (
                b"HTTP/1.1 200",
                "Unreadable(\"it closed the connection before answering\")",
            ),
        ];
        for (answer, want) in cases {
            let (_, result) = exchange(answer).await;
            assert_eq!(format!("{:?}", result.unwrap_err()), want);
        }
    }
}

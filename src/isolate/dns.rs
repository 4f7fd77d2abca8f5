//! The namespace's DNS responder: every query on port 53 gets REFUSED at once, so a client
//! that resolves names itself fails fast instead of waiting for a timeout, and the first name
//! asked for is reported once on stderr. Names are resolved by the proxy (HTTP proxies,
//! `socks5h://`); nothing here resolves anything.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::policy::escape_controls;

const HEADER: usize = 12;
/// QR (a response) in the flags' first byte.
const QR: u8 = 0x80;
/// OPCODE and RD: what a response copies from the query's first flag byte.
const OPCODE_RD: u8 = 0x79;
const REFUSED: u8 = 5;
/// Enough for any UDP query; a longer one is not answered.
const MAX_QUERY: usize = 4096;

/// The REFUSED answer to `query` (its header and first question echoed, nothing else), and
/// the name it asked for; `None` for what is not a query.
pub fn refuse(query: &[u8]) -> Option<(Vec<u8>, Option<String>)> {
    let header = query.get(..HEADER)?;
    if header[2] & QR != 0 {
        return None;
    }
    let questions = u16::from_be_bytes([header[4], header[5]]);
    let question = (questions > 0)
        .then(|| question(&query[HEADER..]))
        .flatten();
    let mut answer = Vec::with_capacity(HEADER + question.as_ref().map_or(0, |(len, _)| *len));
    answer.extend_from_slice(&header[..2]);
    answer.push(QR | (header[2] & OPCODE_RD));
    answer.push(REFUSED);
    let qdcount: u16 = question.is_some().into();
    answer.extend_from_slice(&qdcount.to_be_bytes());
    answer.extend_from_slice(&[0; 6]);
    let name = question.map(|(len, name)| {
        answer.extend_from_slice(&query[HEADER..HEADER + len]);
        name
    });
    Some((answer, name))
}

/// The first question's length (name, type, class) and its name as text; `None` when it is
/// malformed or compressed (a query has no earlier name to point to).
fn question(bytes: &[u8]) -> Option<(usize, String)> {
    let mut name = String::new();
    let mut at = 0;
    loop {
        let len = usize::from(*bytes.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = bytes.get(at..at + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(label));
        at += len;
    }
    bytes.get(at..at + 4)?;
    if name.is_empty() {
        name.push('.');
    }
    Some((at + 4, name))
}

/// Reports the first refused name, once.
pub struct Reporter {
    quiet: bool,
    reported: AtomicBool,
}

impl Reporter {
    pub fn new(quiet: bool) -> Reporter {
        Reporter {
            quiet,
            reported: AtomicBool::new(false),
        }
    }

    fn refused(&self, name: Option<String>) {
        let Some(name) = name else { return };
        if self.quiet || self.reported.swap(true, Ordering::Relaxed) {
            return;
        }
        let line = format!(
            "egress-proxy: refused a DNS query for {name} inside the sandbox: names are resolved \
             by the proxy (use the proxy variables, or socks5h://)"
        );
        eprintln!("{}", escape_controls(&line));
    }
}

/// Port 53 on every address of the namespace (its only interface is `lo`, and
/// `/etc/resolv.conf` may name 127.0.0.53 or ::1), dual-stack where IPv6 is on.
pub fn bind() -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 53));
    let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 53));
    let udp = std::net::UdpSocket::bind(v6).or_else(|_| std::net::UdpSocket::bind(v4))?;
    let tcp = std::net::TcpListener::bind(v6).or_else(|_| std::net::TcpListener::bind(v4))?;
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    Ok((udp, tcp))
}

/// Answers UDP queries until the runtime stops.
pub async fn serve_udp(socket: UdpSocket, reporter: &Reporter) {
    let mut buf = vec![0u8; MAX_QUERY];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some((answer, name)) = refuse(&buf[..n]) {
            let _ = socket.send_to(&answer, from).await;
            reporter.refused(name);
        }
    }
}

/// Answers TCP queries (length-prefixed, one per connection) until the runtime stops.
pub async fn serve_tcp(listener: TcpListener, reporter: Arc<Reporter>) {
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer_tcp(stream, Arc::clone(&reporter)));
        }
    }
}

/// How long a TCP client may take to send its query.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

async fn answer_tcp(stream: TcpStream, reporter: Arc<Reporter>) {
    let _ = tokio::time::timeout(TCP_TIMEOUT, answer_tcp_query(stream, reporter)).await;
}

async fn answer_tcp_query(mut stream: TcpStream, reporter: Arc<Reporter>) {
    let mut len = [0u8; 2];
    if stream.read_exact(&mut len).await.is_err() {
        return;
    }
    let mut query = vec![0u8; usize::from(u16::from_be_bytes(len)).min(MAX_QUERY)];
    if stream.read_exact(&mut query).await.is_err() {
        return;
    }
    if let Some((answer, name)) = refuse(&query) {
        let len = u16::try_from(answer.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes();
        let _ = stream.write_all(&[&len[..], &answer].concat()).await;
        reporter.refused(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` (type A, class IN) with id 0xbeef, RD set, and an EDNS record.
    fn query(name: &str) -> Vec<u8> {
        let mut q = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
        q
    }

    #[test]
    fn refuses_with_the_question_echoed() {
        let q = query("pkg.example.test");
        let (answer, name) = refuse(&q).unwrap();
        assert_eq!(name.as_deref(), Some("pkg.example.test"));
        assert_eq!(
            &answer[..12],
            &[0xbe, 0xef, 0x81, 0x05, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&answer[12..], &q[12..12 + 18 + 4]);
    }

    #[test]
    fn responses_short_and_malformed_queries() {
        let mut response = query("a.test");
        response[2] |= QR;
        assert!(refuse(&response).is_none(), "never answer an answer");
        assert!(refuse(&[0; 11]).is_none());
        let mut cut = query("a.test");
        cut.truncate(16);
        let (answer, name) = refuse(&cut).unwrap();
        assert_eq!(name, None);
        assert_eq!(answer, [0xbe, 0xef, 0x81, 0x05, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut pointer = query("a.test");
        pointer[12] = 0xc0;
        assert_eq!(refuse(&pointer).unwrap().1, None);
    }
}

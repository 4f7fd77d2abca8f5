//! Origins on 127.0.0.1 that record what reached them, so a test can assert that a blocked
//! request never arrived. Each runs on its own threads and stops with the process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// A minimal HTTP/1.1 origin with keep-alive. It answers every request with `200` and a body
/// `origin saw <METHOD> <target> body=<n bytes>`, and records each request head.
pub struct HttpOrigin {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
}

impl HttpOrigin {
    pub fn start() -> HttpOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (reqs, conns) = (Arc::clone(&requests), Arc::clone(&connections));
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                conns.fetch_add(1, Ordering::SeqCst);
                let reqs = Arc::clone(&reqs);
                thread::spawn(move || {
                    let reader = BufReader::new(stream.try_clone().unwrap());
                    serve_http(reader, stream, "origin", &reqs)
                });
            }
        });
        HttpOrigin {
            addr,
            requests,
            connections,
        }
    }

    /// Every request head seen so far (request line and headers, `\r\n`-joined).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// TCP connections accepted, to tell keep-alive reuse from new connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Serves HTTP/1.1 on one connection (TCP or Unix) until it closes: every request gets `200`
/// and `<who> saw <METHOD> <target> body=<n bytes>`.
pub fn serve_http(
    mut reader: impl BufRead,
    mut writer: impl Write,
    who: &str,
    requests: &Mutex<Vec<String>>,
) {
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if line.is_empty() {
                break;
            }
            head.push(line);
        }
        let header = |name: &str| {
            head.iter().skip(1).find_map(|h| {
                let (k, v) = h.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let body_len = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            read_chunked(&mut reader)
        } else {
            let n: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; n];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            n
        };
        let mut parts = head[0].split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let body = format!("{who} saw {method} {target} body={body_len}");
        requests.lock().unwrap().push(head.join("\r\n"));
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nX-Origin: yes\r\n\r\n{}",
            body.len(),
            if method == "HEAD" { "" } else { &body }
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn read_chunked(reader: &mut impl BufRead) -> usize {
    let mut total = 0;
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return total;
        }
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let mut chunk = vec![0; n + 2];
        if reader.read_exact(&mut chunk).is_err() {
            return total;
        }
        total += n;
        if n == 0 {
            return total;
        }
    }
}

/// A TCP echo server that counts connections.
pub struct TcpEcho {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl TcpEcho {
    pub fn start() -> TcpEcho {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let conns = Arc::clone(&connections);
        thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                conns.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        TcpEcho { addr, connections }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A UDP echo server that counts datagrams.
pub struct UdpEcho {
    pub addr: SocketAddr,
    datagrams: Arc<AtomicUsize>,
}

impl UdpEcho {
    pub fn start() -> UdpEcho {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let datagrams = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&datagrams);
        thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = socket.send_to(&buf[..n], from);
            }
        });
        UdpEcho { addr, datagrams }
    }

    pub fn datagrams(&self) -> usize {
        self.datagrams.load(Ordering::SeqCst)
    }
}

//! Upstream proxies on 127.0.0.1 for the chaining tests, each recording what it was asked.
//!
//! [`HttpUpstream`] answers CONNECT and absolute-form requests, optionally over TLS with a
//! test CA ([`TestCa`], for `localhost` and 127.0.0.1), requiring basic auth, or refusing with a status. [`SocksUpstream`]
//! is a SOCKS5 server (fast-socks5's protocol half), optionally requiring RFC 1929 auth.
//! Neither ever connects where it is asked to: every tunnel goes to the one `backend`
//! address the test gives (on loopback), and forwarded requests are answered by the upstream
//! itself (`upstream saw GET http://…`), so whatever name or address reaches them, nothing
//! leaves the machine. Each runs on a thread with its own runtime and stops with the process.

use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use base64::Engine as _;
use fast_socks5::server::Socks5ServerProtocol;
use fast_socks5::util::target_addr::TargetAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub use super::tls::TestCa;

/// One request an HTTP upstream received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    /// `CONNECT name.test:443`, `GET http://name.test:80/path`.
    pub line: String,
    pub authorization: Option<String>,
}

/// How an [`HttpUpstream`] behaves.
#[derive(Clone, Default)]
pub struct HttpOptions {
    /// Basic credentials it requires (else 407).
    pub auth: Option<(&'static str, &'static str)>,
    /// The status it refuses every request with.
    pub refuse: Option<u16>,
    /// Serve TLS with this CA's certificate.
    pub tls: Option<Arc<TestCa>>,
}

/// An HTTP (or HTTPS) upstream proxy.
pub struct HttpUpstream {
    pub addr: SocketAddr,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl HttpUpstream {
    /// Tunnels go to `backend`.
    pub fn start(backend: SocketAddr, options: HttpOptions) -> HttpUpstream {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&asked);
        let addr = spawn(move |listener| async move {
            let acceptor = options
                .tls
                .as_ref()
                .map(|ca| ca.acceptor(&["localhost", "127.0.0.1"], &[]));
            while let Ok((tcp, _)) = listener.accept().await {
                let (options, seen, acceptor) =
                    (options.clone(), Arc::clone(&seen), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                serve_http(tls, backend, &options, &seen).await;
                            }
                        }
                        None => serve_http(tcp, backend, &options, &seen).await,
                    }
                });
            }
        });
        HttpUpstream { addr, asked }
    }

    /// Everything asked so far.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }

    /// The request lines asked so far.
    pub fn lines(&self) -> Vec<String> {
        self.asked().into_iter().map(|a| a.line).collect()
    }
}

/// A SOCKS5 upstream proxy.
pub struct SocksUpstream {
    pub addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
}

impl SocksUpstream {
    /// Tunnels go to `backend`; with `auth`, only those RFC 1929 credentials are accepted.
    pub fn start(backend: SocketAddr, auth: Option<(&'static str, &'static str)>) -> SocksUpstream {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&asked);
        let addr = spawn(move |listener| async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let proto = match auth {
                        None => Socks5ServerProtocol::accept_no_auth(tcp).await.ok(),
                        Some((u, p)) => {
                            Socks5ServerProtocol::accept_password_auth(tcp, |user, pass| {
                                user == u && pass == p
                            })
                            .await
                            .ok()
                            .map(|(proto, _)| proto)
                        }
                    };
                    let Some(proto) = proto else { return };
                    let Ok((proto, _cmd, target)) = proto.read_command().await else {
                        return;
                    };
                    let written = match &target {
                        TargetAddr::Ip(addr) => format!("ip {addr}"),
                        TargetAddr::Domain(name, port) => format!("name {name}:{port}"),
                    };
                    seen.lock().unwrap().push(written);
                    let Ok(mut origin) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let Ok(mut client) = proto.reply_success(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut origin).await;
                });
            }
        });
        SocksUpstream { addr, asked }
    }

    /// `ip 127.0.0.1:80` or `name allowed.test:80` per CONNECT, oldest first.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

/// Binds 127.0.0.1:0 and serves `run` on a thread of its own.
pub fn spawn<F, Fut>(run: F) -> SocketAddr
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            run(listener).await;
        });
    });
    rx.recv().unwrap()
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    backend: SocketAddr,
    options: &HttpOptions,
    seen: &Mutex<Vec<Asked>>,
) {
    let expected = options.auth.map(|(u, p)| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    });
    loop {
        let Some(head) = read_head(&mut stream).await else {
            return;
        };
        let mut lines = head.split("\r\n");
        let request = lines.next().unwrap_or_default();
        let mut parts = request.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let header = |name: &str| {
            head.split("\r\n").skip(1).find_map(|h| {
                let (k, v) = h.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let authorization = header("proxy-authorization");
        seen.lock().unwrap().push(Asked {
            line: format!("{method} {target}"),
            authorization: authorization.clone(),
        });
        if expected.is_some() && authorization != expected {
            let _ = stream
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
            return;
        }
        if let Some(status) = options.refuse {
            let answer = format!(
                "HTTP/1.1 {status} Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
            return;
        }
        if method == "CONNECT" {
            let Ok(mut origin) = TcpStream::connect(backend).await else {
                return;
            };
            if stream
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut origin).await;
            return;
        }
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let text = format!("upstream saw {method} {target}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Upstream: yes\r\n\r\n{text}",
            text.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One request head, or `None` when the connection ends first.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

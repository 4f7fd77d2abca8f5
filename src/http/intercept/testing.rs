//! What the engine's tests and its bench share: a test CA, a local HTTPS origin, and the
//! engine on a loopback listener. Compiled for tests and for the `bench` feature only.

#[cfg(feature = "bench")]
mod bench;
pub(crate) mod origin;

#[cfg(feature = "bench")]
pub use bench::{bench_world, BenchWorld};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{serve, Dial, Hooks, InterceptError, InterceptStats, Io, Session};
use crate::config::Limits;
use crate::net::dial::{DialError, Peer};
use crate::net::route::OpenError;
use crate::policy::Target;

/// The name the tunnel is for.
pub const NAME: &str = "allowed.test";

/// A CA that signs leaves for names.
pub(crate) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) der: CertificateDer<'static>,
    pub(crate) pem: String,
}

impl TestCa {
    pub(crate) fn new() -> TestCa {
        static SERIAL: AtomicUsize = AtomicUsize::new(0);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        // Distinct subjects: a leaf of one CA must not look issued by another.
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("egress-proxy test CA {n}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` and its key.
    pub(crate) fn leaf(
        &self,
        names: &[&str],
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key)
    }

    /// A server config for `names` offering `alpn`.
    pub(crate) fn server(&self, names: &[&str], alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let (chain, key) = self.leaf(names);
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A client config trusting this CA only, offering `alpn`.
    pub(crate) fn client(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// ALPN offering HTTP/2 and HTTP/1.1.
pub const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN offering HTTP/1.1 only.
pub const H1: &[&[u8]] = &[b"http/1.1"];

/// The engine listening on loopback: one [`serve`] per accepted connection, each result sent
/// to `results`.
pub(crate) struct Listening {
    pub(crate) addr: SocketAddr,
    pub(crate) results: mpsc::UnboundedReceiver<Result<InterceptStats, InterceptError>>,
}

/// Serves `target` with `server` on a new loopback listener, dialling `origin` and trusting
/// `origin_ca` for it.
pub(crate) async fn listen(
    server: Arc<ServerConfig>,
    target: Target<'static>,
    origin: SocketAddr,
    origin_ca: &TestCa,
    limits: Limits,
    hooks: Arc<dyn Hooks>,
) -> Listening {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, results) = mpsc::unbounded_channel();
    let (h2_h1, h1) = (origin_ca.client(H2_H1), origin_ca.client(H1));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let session = Session {
                server: Arc::clone(&server),
                target: target.clone(),
                origin: Arc::clone(&h2_h1),
                upgrade: Arc::clone(&h1),
                dial: dial_to(origin),
                limits: limits.clone(),
            };
            let (hooks, tx) = (Arc::clone(&hooks), tx.clone());
            tokio::spawn(async move {
                let _ = tx.send(serve(stream, session, hooks).await);
            });
        }
    });
    Listening { addr, results }
}

/// A dial to `addr`, failing as the pinned dialler does.
pub(crate) fn dial_to(addr: SocketAddr) -> Dial {
    Arc::new(move || {
        Box::pin(async move {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    Ok(Box::new(stream) as Box<dyn Io>)
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    Err(OpenError::Dial(DialError::Refused(Peer::Tcp(addr))))
                }
                Err(source) => Err(OpenError::Dial(DialError::Unreachable {
                    peer: Peer::Tcp(addr),
                    source,
                })),
            }
        })
    })
}

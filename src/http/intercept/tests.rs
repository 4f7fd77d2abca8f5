//! The engine between real TLS clients and a local HTTPS origin, all on loopback: a test CA
//! signs the engine's leaf (what a client trusts) and the origin's (what the engine trusts).

mod clients;
mod curl;
mod failures;
mod hostile;
mod origin;
mod serving;
mod websocket;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Method;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{serve, Dial, Hooks, InterceptError, InterceptStats, Io, Session};
use crate::audit::{Outcome, RequestRecord};
use crate::config::Limits;
use crate::gate::Denied;
use crate::net::dial::{DialError, Peer};
use crate::net::route::OpenError;
use crate::policy::{Access, Action, Mode, Policy, PolicyOptions, Step, Target};

/// The name the tunnel is for.
pub(super) const NAME: &str = "allowed.test";

/// A CA that signs leaves for names.
pub(super) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub(super) der: CertificateDer<'static>,
    pub(super) pem: String,
}

impl TestCa {
    pub(super) fn new() -> TestCa {
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
    pub(super) fn leaf(
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
    pub(super) fn server(&self, names: &[&str], alpn: &[&[u8]]) -> Arc<ServerConfig> {
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
    pub(super) fn client(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
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

pub(super) const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
pub(super) const H1: &[&[u8]] = &[b"http/1.1"];

/// Hooks that refuse POST outside `/upload` (as `limited` plus a rule would) and keep every
/// check and record.
#[derive(Default)]
pub(super) struct TestHooks {
    pub(super) checked: Mutex<Vec<(String, String, bool)>>,
    pub(super) records: Mutex<Vec<Recorded>>,
}

/// A [`RequestRecord`], owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Recorded {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) status: u16,
    pub(super) outcome: Outcome,
    pub(super) reason: Option<&'static str>,
    pub(super) bytes: [u64; 2],
}

impl Hooks for TestHooks {
    fn check(&self, method: &Method, path: &str, body: bool) -> Result<(), Denied> {
        let seen = (method.to_string(), path.to_string(), body);
        self.checked.lock().unwrap().push(seen);
        if method == Method::POST && !path.starts_with("/upload") {
            return Err(method_not_allowed());
        }
        Ok(())
    }

    fn record(&self, r: &RequestRecord<'_>) {
        self.records.lock().unwrap().push(Recorded {
            method: r.method.to_string(),
            path: r.path.to_string(),
            status: r.status,
            outcome: r.outcome,
            reason: r.reason,
            bytes: [r.bytes_up, r.bytes_down],
        });
    }
}

impl TestHooks {
    pub(super) fn records(&self) -> Vec<Recorded> {
        self.records.lock().unwrap().clone()
    }
}

/// The decision `limited` makes for a POST, made by the policy engine.
fn method_not_allowed() -> Denied {
    let options = PolicyOptions {
        mode: Mode::Limited,
        ..PolicyOptions::default()
    };
    let policy = Policy::from_rules(&[(NAME, Action::Allow)], options).unwrap();
    let target = Target::parse_authority(NAME, Some(443)).unwrap();
    let access = Access::Http {
        method: "POST",
        body: true,
    };
    let Step::Done(decision) = policy.decide(&target, access) else {
        panic!("a POST in limited mode is decided without DNS");
    };
    Denied {
        decision,
        dns: None,
    }
}

/// The engine on a loopback listener, one [`serve`] per accepted connection, each result
/// sent to `results`.
pub(super) struct Engine {
    pub(super) addr: SocketAddr,
    pub(super) ca: Arc<TestCa>,
    pub(super) hooks: Arc<TestHooks>,
    pub(super) results: mpsc::UnboundedReceiver<Result<InterceptStats, InterceptError>>,
}

/// How a test sets the engine up.
pub(super) struct Setup {
    /// Where the dial goes.
    pub(super) origin: SocketAddr,
    /// The CONNECT target's port (the origin's, unless a test says otherwise).
    pub(super) port: u16,
    /// Trusted for the origin.
    pub(super) origin_ca: Arc<TestCa>,
    pub(super) limits: Limits,
}

impl Setup {
    pub(super) fn new(origin: SocketAddr, origin_ca: Arc<TestCa>) -> Setup {
        Setup {
            origin,
            port: origin.port(),
            origin_ca,
            limits: Limits {
                header_timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(5),
                ..Limits::default()
            },
        }
    }
}

impl Engine {
    pub(super) async fn start(setup: Setup) -> Engine {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ca = Arc::new(TestCa::new());
        let hooks = Arc::new(TestHooks::default());
        let (tx, results) = mpsc::unbounded_channel();
        let server = ca.server(&[NAME], H2_H1);
        let (engine_hooks, origin_ca) = (Arc::clone(&hooks), Arc::clone(&setup.origin_ca));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let session = Session {
                    server: Arc::clone(&server),
                    target: Target::parse_authority(NAME, Some(setup.port))
                        .unwrap()
                        .into_owned(),
                    origin: origin_ca.client(H2_H1),
                    upgrade: origin_ca.client(H1),
                    dial: dial_to(setup.origin),
                    limits: setup.limits.clone(),
                };
                let hooks: Arc<dyn Hooks> = Arc::clone(&engine_hooks) as Arc<dyn Hooks>;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(serve(stream, session, hooks).await);
                });
            }
        });
        Engine {
            addr,
            ca,
            hooks,
            results,
        }
    }

    /// The next connection's result.
    pub(super) async fn result(&mut self) -> Result<InterceptStats, InterceptError> {
        tokio::time::timeout(Duration::from_secs(10), self.results.recv())
            .await
            .expect("the engine ended the connection")
            .unwrap()
    }
}

/// A dial to `addr`, failing as the pinned dialler does.
fn dial_to(addr: SocketAddr) -> Dial {
    Arc::new(move || {
        Box::pin(async move {
            match TcpStream::connect(addr).await {
                Ok(stream) => Ok(Box::new(stream) as Box<dyn Io>),
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

/// An origin for `NAME` offering `alpn`, with its own CA, and the engine in front of it.
async fn world(alpn: &[&[u8]]) -> (Engine, origin::HttpsOrigin) {
    let origin_ca = Arc::new(TestCa::new());
    let origin = origin::HttpsOrigin::start(origin_ca.server(&[NAME], alpn)).await;
    let engine = Engine::start(Setup::new(origin.addr, origin_ca)).await;
    (engine, origin)
}

/// `allowed.test:PORT`, the Host a client of the tunnel sends.
fn host(origin: &origin::HttpsOrigin) -> String {
    format!("{NAME}:{}", origin.addr.port())
}

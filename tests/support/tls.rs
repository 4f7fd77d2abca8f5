//! Test CAs: each signs leaf certificates for the names a test asks for and serves them over
//! TLS (rustls with ring, as the product), so an origin or an upstream proxy on loopback can
//! be verified by a client that trusts only this CA's PEM.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// A self-signed CA with a subject of its own (`egress-proxy test CA <n>`), so a client can
/// tell which CA issued the certificate it was shown.
pub struct TestCa {
    /// The CA certificate, PEM: what a client (or `ca_file`, `upstream_ca`) trusts.
    pub pem: String,
    /// The CA's subject common name.
    pub name: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        static SERIAL: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "egress-proxy test CA {}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, &name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            name,
            issuer: Issuer::new(params, key),
        }
    }

    /// A TLS server with a certificate this CA signed for `names` (an IP literal becomes an
    /// IP address name), offering `alpn` (nothing when empty).
    pub fn acceptor(&self, names: &[&str], alpn: &[&[u8]]) -> TlsAcceptor {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsAcceptor::from(Arc::new(config))
    }
}

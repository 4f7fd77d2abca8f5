//! The CA certificates TLS clients trust: the system's store (rustls-native-certs: a corporate
//! proxy's CA is installed there, and a compiled-in bundle such as webpki-roots would not have
//! it), plus PEM files named in the configuration. Shared by TLS to an `https://` upstream,
//! the origin side of HTTPS inspection and the CA bundle `run` gives its child.

use std::path::Path;
use std::sync::OnceLock;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// The system's CA certificates, read once per process (the store is many files).
pub(crate) fn system() -> &'static [CertificateDer<'static>] {
    static SYSTEM: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::debug!(%error, "skipping part of the system trust store");
        }
        native.certs
    })
}

/// The certificates of a PEM file; one without any is an error. The error is the reason, for
/// the caller to name the file and the key that set it.
pub(crate) fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".to_string());
    }
    Ok(certs)
}

/// The system roots plus the certificates of `extra`; the error is why `extra` cannot be used.
/// The store may be empty (no system roots, no file): callers say what that means for them.
pub(crate) fn store(extra: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(system().iter().cloned());
    tracing::debug!(added, "system CA certificates loaded");
    if let Some(path) = extra {
        for cert in read_pem(path)? {
            roots.add(cert).map_err(|e| e.to_string())?;
        }
    }
    Ok(roots)
}

/// The system roots as one PEM text (for a child's `SSL_CERT_FILE`).
pub(crate) fn system_pem() -> String {
    let pems: Vec<_> = system()
        .iter()
        .map(|cert| pem::Pem::new("CERTIFICATE", cert.to_vec()))
        .collect();
    pem::encode_many(&pems)
}

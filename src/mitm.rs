//! HTTPS inspection's TLS: the local CA ([`Ca`]), the leaf certificates minted with it for
//! intercepted hosts (client side), and the configurations that verify origins (origin side).
//! The interception engine asks [`Mitm`] for both; everything here is built at start, except a
//! host's leaf, minted on its first connection and then cached.

mod ca;
mod leaf;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};

use crate::config::MitmConfig;
use crate::policy::Host;

pub use ca::{show_time, Ca, CaError, CaPaths};
pub use leaf::CAPACITY;

/// Why HTTPS inspection cannot start, or a leaf cannot be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MitmError {
    /// The CA cannot be loaded or generated.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// `[mitm] upstream_ca` is unreadable or holds no certificate.
    #[error("cannot read `[mitm] upstream_ca` {}: {reason}", .path.display())]
    UpstreamCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing to verify origins with.
    #[error("no CA certificate to verify origins with: the system store is empty and no `[mitm] upstream_ca` is set")]
    NoRoots,
    /// The per-process leaf key cannot be generated.
    #[error("cannot generate the leaf key: {0}")]
    LeafKey(String),
    /// A leaf cannot be signed for this host.
    #[error("cannot mint a certificate for {host}: {reason}")]
    Mint {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the settings.
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Which protocols the origin side offers: what the client negotiated with us decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` and `http/1.1` (the client negotiated HTTP/2, which can fall back).
    H2AndHttp1,
    /// `http/1.1` only.
    Http1,
}

/// The CA, the leaf cache and the origin-side configurations of one process.
pub struct Mitm {
    ca: Ca,
    leaves: leaf::Leaves,
    h2_and_http1: Arc<ClientConfig>,
    http1: Arc<ClientConfig>,
}

impl std::fmt::Debug for Mitm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mitm")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl Mitm {
    /// Loads (or generates) the CA of `config` and builds the origin-side configurations.
    pub fn new(config: &MitmConfig) -> Result<Arc<Mitm>, MitmError> {
        Mitm::with_ca(Ca::load(config)?, config.upstream_ca.as_deref())
    }

    /// With a CA loaded already; origins are verified against the system roots plus
    /// `upstream_ca`.
    pub fn with_ca(ca: Ca, upstream_ca: Option<&Path>) -> Result<Arc<Mitm>, MitmError> {
        Mitm::with_capacity(ca, upstream_ca, CAPACITY)
    }

    /// [`Mitm::with_ca`] keeping at most `capacity` hosts' leaves.
    pub fn with_capacity(
        ca: Ca,
        upstream_ca: Option<&Path>,
        capacity: usize,
    ) -> Result<Arc<Mitm>, MitmError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = crate::roots::store(upstream_ca).map_err(|reason| MitmError::UpstreamCa {
            path: upstream_ca.map(Path::to_path_buf).unwrap_or_default(),
            reason,
        })?;
        if roots.is_empty() {
            return Err(MitmError::NoRoots);
        }
        let roots = Arc::new(roots);
        let client = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, MitmError> {
            let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(Arc::clone(&roots))
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(config))
        };
        Ok(Arc::new(Mitm {
            h2_and_http1: client(&[b"h2", b"http/1.1"])?,
            http1: client(&[b"http/1.1"])?,
            leaves: leaf::Leaves::new(Arc::clone(&provider), capacity)?,
            ca,
        }))
    }

    /// The client-side configuration for `host`, the CONNECT target (never the SNI the
    /// client sends): cached after the first call, which mints its leaf.
    pub fn server_config(&self, host: &Host<'_>) -> Result<Arc<ServerConfig>, MitmError> {
        self.leaves.get(&self.ca, host)
    }

    /// The origin-side configuration offering `alpn`.
    pub fn client_config(&self, alpn: Alpn) -> Arc<ClientConfig> {
        match alpn {
            Alpn::H2AndHttp1 => Arc::clone(&self.h2_and_http1),
            Alpn::Http1 => Arc::clone(&self.http1),
        }
    }

    /// The CA certificate, PEM: what children must trust.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }
}

#[cfg(test)]
mod tests;

//! TLS to an `https://` upstream: rustls with the ring provider, verifying the proxy's
//! certificate against the system's trust store plus the PEM certificates of
//! `[upstream] ca_file` ([`crate::roots`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::policy::Host;

/// Why TLS to the upstream cannot be set up at start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// `[upstream] ca_file` is unreadable or holds no certificate.
    #[error("cannot read `[upstream] ca_file` {}: {reason}", .path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing to verify the upstream's certificate with.
    #[error("no CA certificate to verify the https:// upstream with: the system store is empty and no `[upstream] ca_file` is set")]
    NoRoots,
    /// An upstream is named, and the system's resolver configuration is unreadable.
    #[error("cannot resolve the upstream proxy's name: {0}")]
    Resolver(crate::dns::DnsError),
    /// rustls refused the settings.
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// The connector every `https://` upstream uses.
pub(super) fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, SetupError> {
    let roots = crate::roots::store(ca_file).map_err(|reason| SetupError::CaFile {
        path: ca_file.map(Path::to_path_buf).unwrap_or_default(),
        reason,
    })?;
    if roots.is_empty() {
        return Err(SetupError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The handshake with the upstream at `host`: its certificate must name it (a DNS name, or
/// an IP address SAN for an IP literal).
pub(super) async fn handshake(
    connector: &TlsConnector,
    host: &Host<'static>,
    tcp: TcpStream,
) -> io::Result<TlsStream<TcpStream>> {
    let name = match host {
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        Host::Name(name) => ServerName::try_from(name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
    };
    connector.connect(name, tcp).await
}

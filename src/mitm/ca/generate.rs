//! Generating the CA: a fresh ECDSA P-256 key and a self-signed certificate, written key first
//! (a certificate without its key is regenerated on the next load, never used).

use rcgen::KeyPair;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use super::{ca_params, validity, Ca, CaError, CaPaths};

/// Generates a CA and writes it to `paths` (whose lock the caller holds).
pub(super) fn create(paths: CaPaths) -> Result<Ca, CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CaError::Generate(e.to_string()))?;
    let (not_before, not_after) = validity();
    create_with(paths, key, not_before, not_after)
}

/// [`create`] with a given key and validity (tests make expired ones).
pub(super) fn create_with(
    paths: CaPaths,
    key: KeyPair,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Ca, CaError> {
    let params = ca_params(not_before, not_after)?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| CaError::Generate(e.to_string()))?;
    let write = |path: &std::path::Path, text: String| {
        crate::private::write(path, text.as_bytes()).map_err(|source| CaError::Write {
            path: path.to_path_buf(),
            source,
        })
    };
    write(&paths.key, key.serialize_pem())?;
    let pem = cert.pem();
    write(&paths.cert, pem.clone())?;
    let der: CertificateDer<'static> = cert.der().clone();
    let subject = x509_parser::parse_x509_certificate(&der)
        .map(|(_, x509)| x509.subject().to_string())
        .map_err(|e| CaError::Generate(e.to_string()))?;
    tracing::info!(cert = %paths.cert.display(), "generated the local CA for HTTPS inspection");
    Ok(Ca {
        issuer: rcgen::Issuer::new(params, key),
        der,
        pem,
        subject,
        not_before,
        not_after,
        paths,
        created: true,
    })
}

/// A random positive 128-bit serial: every certificate of one issuer must have its own.
pub(in crate::mitm) fn random_serial() -> Result<[u8; 16], CaError> {
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| CaError::Generate("no random bytes from the system".into()))?;
    serial[0] &= 0x7f;
    Ok(serial)
}

/// `user@host` for the CA's subject, so a user who finds it in a trust store knows whose it is.
pub(super) fn user_at_host() -> String {
    let uid = nix::unistd::geteuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

/// A time as `2027-01-31 12:00:00 UTC`.
pub fn show_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

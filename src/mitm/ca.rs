//! The local CA that signs the leaf certificates of intercepted hosts: the operator's
//! (`[mitm] ca_cert`/`ca_key`) or one generated on first use under the user's data directory
//! (`$XDG_DATA_HOME/egress-proxy/ca.pem` and `ca.key`).
//!
//! Whoever holds the key can impersonate any site to every child that trusts the CA, so the
//! generated one lives in a 0700 directory, is written 0600 through an exclusive temporary
//! file and a rename (see [`crate::private`]), is never read through a symlink, and a key that
//! is not the user's alone is refused. Generation takes a lock, so two processes starting at
//! once end with one CA.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::config::MitmConfig;

mod error;
mod generate;

pub use error::CaError;
pub(super) use generate::random_serial;
pub use generate::show_time;

/// The generated CA's directory inside the data directory, and its files.
const DIR: &str = "egress-proxy";
const CERT_FILE: &str = "ca.pem";
const KEY_FILE: &str = "ca.key";
const LOCK_FILE: &str = "ca.lock";

/// Where a CA's two files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaPaths {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// True for the generated CA, false for `[mitm] ca_cert`/`ca_key`.
    pub generated: bool,
}

impl CaPaths {
    /// The files `config` names, or the generated CA's under `data_dir`.
    fn of(config: &MitmConfig, data_dir: &Path) -> CaPaths {
        match &config.ca {
            Some(files) => CaPaths {
                cert: files.cert.clone(),
                key: files.key.clone(),
                generated: false,
            },
            None => {
                let dir = data_dir.join(DIR);
                CaPaths {
                    cert: dir.join(CERT_FILE),
                    key: dir.join(KEY_FILE),
                    generated: true,
                }
            }
        }
    }
}

/// A CA ready to sign: its certificate, its key, and where they came from.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
    subject: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    paths: CaPaths,
    created: bool,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.subject)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// The configured CA, or the generated one under the user's data directory
    /// (`$XDG_DATA_HOME`, else `~/.local/share`), generated on first use.
    pub fn load(config: &MitmConfig) -> Result<Ca, CaError> {
        Ca::load_from(config, &data_dir(config)?)
    }

    /// [`Ca::load`] with the generated CA under `data_dir/egress-proxy` (tests, embedders).
    pub fn load_from(config: &MitmConfig, data_dir: &Path) -> Result<Ca, CaError> {
        let paths = CaPaths::of(config, data_dir);
        if !paths.generated {
            return read(paths, true);
        }
        let _lock = lock(&paths)?;
        match read(paths.clone(), false) {
            Err(CaError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                generate::create(paths)
            }
            other => other,
        }
    }

    /// Replaces the generated CA with a new one; refused when `[mitm] ca_cert`/`ca_key` are
    /// set (those files are the operator's).
    pub fn rotate(config: &MitmConfig) -> Result<Ca, CaError> {
        Ca::rotate_in(config, &data_dir(config)?)
    }

    /// [`Ca::rotate`] with the generated CA under `data_dir/egress-proxy`.
    pub fn rotate_in(config: &MitmConfig, data_dir: &Path) -> Result<Ca, CaError> {
        let paths = CaPaths::of(config, data_dir);
        if !paths.generated {
            return Err(CaError::RotateConfigured { cert: paths.cert });
        }
        let _lock = lock(&paths)?;
        generate::create(paths)
    }

    /// Where the CA's files are for `config`, without reading or generating them.
    pub fn paths(config: &MitmConfig) -> Result<CaPaths, CaError> {
        Ok(CaPaths::of(config, &data_dir(config)?))
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// The certificate, DER (the second certificate of every leaf's chain).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The subject, as `CN=…, O=…`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The start of the validity period.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// The end of the validity period; leaves never outlive it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Where the files are, and whether they are the generated CA's.
    pub fn paths_of(&self) -> &CaPaths {
        &self.paths
    }

    /// True when this call generated the CA (first use or rotate).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The SHA-256 fingerprint of the certificate, as `AB:CD:…`.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.der);
        let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        hex.join(":")
    }

    /// The signer of leaf certificates.
    pub(super) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

/// The user's data directory: `$XDG_DATA_HOME` when absolute, else `$HOME/.local/share`.
/// Not needed (and not asked for) when the CA is configured.
fn data_dir(config: &MitmConfig) -> Result<PathBuf, CaError> {
    if config.ca.is_some() {
        return Ok(PathBuf::new());
    }
    let xdg = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from);
    if let Some(xdg) = xdg.filter(|d| d.is_absolute()) {
        return Ok(xdg);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match home.filter(|h| h.is_absolute()) {
        Some(home) => Ok(home.join(".local").join("share")),
        None => Err(CaError::NoDataDir),
    }
}

/// Makes the generated CA's directory private and holds its lock until dropped: generating,
/// rotating and reading it are one at a time across processes.
fn lock(paths: &CaPaths) -> Result<Flock<File>, CaError> {
    let dir = paths.cert.parent().unwrap_or(Path::new("."));
    let dir_error = |source| CaError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(dir_error)?;
    }
    crate::private::dir(dir).map_err(dir_error)?;
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .map_err(|source| CaError::Lock {
            path: path.clone(),
            source,
        })?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| CaError::Lock {
        path,
        source: errno.into(),
    })
}

/// Reads and checks both files. `follow`: whether a symlink is followed (the operator's
/// files may be links; the generated CA's never are).
fn read(paths: CaPaths, follow: bool) -> Result<Ca, CaError> {
    let key_pem = read_private_key(&paths.key, follow)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Key {
        path: paths.key.clone(),
        reason: e.to_string(),
    })?;
    let cert_pem = read_file(&paths.cert, follow)?;
    let bad = |reason: String| CaError::Cert {
        path: paths.cert.clone(),
        reason,
    };
    let der =
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    let is_ca = x509
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|ext| ext.value.ca);
    if !is_ca {
        return Err(bad("it is not a CA certificate (basic constraints)".into()));
    }
    if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(bad(format!(
            "it does not match the key {}",
            paths.key.display()
        )));
    }
    let validity = x509.validity();
    let not_before = validity.not_before.to_datetime();
    let not_after = validity.not_after.to_datetime();
    if OffsetDateTime::now_utc() > not_after {
        return Err(CaError::Expired {
            path: paths.cert,
            not_after: generate::show_time(not_after),
            generated: paths.generated,
        });
    }
    let subject = x509.subject().to_string();
    let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| bad(e.to_string()))?;
    Ok(Ca {
        issuer,
        der: der.into_owned(),
        pem: cert_pem,
        subject,
        not_before,
        not_after,
        paths,
        created: false,
    })
}

/// Opens `path` for reading, never through a symlink unless `follow`.
fn open(path: &Path, follow: bool) -> Result<File, CaError> {
    let flags = if follow { 0 } else { OFlag::O_NOFOLLOW.bits() };
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(nix::libc::ELOOP) {
                CaError::Symlink {
                    path: path.to_path_buf(),
                }
            } else {
                CaError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })
}

/// The key's text, once the open file is known to be a regular file of this user's that
/// nobody else may read or write.
fn read_private_key(path: &Path, follow: bool) -> Result<String, CaError> {
    let mut file = open(path, follow)?;
    let meta = file.metadata().map_err(|source| CaError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(CaError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(CaError::KeyNotOwned {
            path: path.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyExposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|source| CaError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(text)
}

/// A file's text, never through a symlink unless `follow`.
fn read_file(path: &Path, follow: bool) -> Result<String, CaError> {
    let mut text = String::new();
    open(path, follow)?
        .read_to_string(&mut text)
        .map_err(|source| CaError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(text)
}

/// The parameters of a new CA valid from `not_before` to `not_after`.
fn ca_params(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        format!("egress-proxy local CA ({})", generate::user_at_host()),
    );
    name.push(DnType::OrganizationName, "egress-proxy");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    Ok(params)
}

/// A generated CA's validity: from a little in the past (clocks of a VM and its host differ)
/// to a year from now.
fn validity() -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - Duration::hours(1), now + Duration::days(365))
}

#[cfg(test)]
mod tests;

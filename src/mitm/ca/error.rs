//! Why the CA cannot be used: each message names the file and the cause.

use std::path::PathBuf;

/// Why the CA cannot be loaded, generated or rotated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// Neither `XDG_DATA_HOME` nor `HOME` says where the generated CA lives.
    #[error("cannot find the user's data directory for the CA: neither XDG_DATA_HOME nor HOME is an absolute path (or set [mitm] ca_cert and ca_key)")]
    NoDataDir,
    /// The generated CA's directory cannot be made private.
    #[error("cannot use {} for the CA: {source}", .path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The lock that serialises generation cannot be taken.
    #[error("cannot lock {}: {source}", .path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A generated CA file is a symlink: someone else may have planted it.
    #[error("refusing {}: it is a symlink, and the generated CA's files never are (planted by someone else?); remove it or run `egress-proxy ca rotate`", .path.display())]
    Symlink {
        /// The file.
        path: PathBuf,
    },
    /// The key is not a regular file.
    #[error("refusing the CA key {}: it is not a regular file", .path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// The key belongs to another user.
    #[error("refusing the CA key {}: it is owned by uid {owner}, not by this user (uid {me})", .path.display())]
    KeyNotOwned {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective user.
        me: u32,
    },
    /// The key can be read or written by its group or by others.
    #[error("refusing the CA key {}: its group or others have access (mode {mode:04o}); whoever reads it can impersonate any site to the children: `chmod 600` it", .path.display())]
    KeyExposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key is not a PEM private key rcgen can sign with.
    #[error("cannot use the CA key {}: {reason}", .path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate is unreadable, not a CA, or not the key's.
    #[error("cannot use the CA certificate {}: {reason}", .path.display())]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate's validity has ended.
    #[error("the CA certificate {} expired on {not_after}: {}", .path.display(), if *.generated { "run `egress-proxy ca rotate` for a new one (children must then trust it)" } else { "replace `[mitm] ca_cert` and `ca_key`" })]
    Expired {
        /// The file.
        path: PathBuf,
        /// When it expired.
        not_after: String,
        /// True for the generated CA (rotate replaces it).
        generated: bool,
    },
    /// rcgen or the system's random source failed.
    #[error("cannot generate the CA: {0}")]
    Generate(String),
    /// A generated file cannot be written.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `rotate` with a configured CA.
    #[error("[mitm] ca_cert is set ({}): `ca rotate` replaces only the generated CA; replace the configured files instead", .cert.display())]
    RotateConfigured {
        /// The configured certificate.
        cert: PathBuf,
    },
}

//! The CA bundle `run` gives its child when HTTPS inspection is on: the system roots plus
//! the local CA, in a fresh 0700 directory of its own, so the child's TLS clients (curl,
//! Python, Node, git, pip, cargo) trust the leaves the proxy mints, and other users can neither
//! read nor swap it. Removed when the run ends, however it ends.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::EXIT_INTERNAL;
use crate::config::Config;
use crate::mitm::Mitm;

/// The bundle's file name inside its directory.
const FILE: &str = "ca-bundle.pem";

/// With `mitm` enabled, the interception's CA and configurations and the child's bundle;
/// nothing without it. A CA that cannot be used is a configuration error (exit 2), a bundle
/// that cannot be written the proxy's own failure (exit 125).
pub(super) fn start(config: &Config) -> Result<(Option<Arc<Mitm>>, Option<Bundle>), i32> {
    let Some(mitm) = super::super::load_mitm(config)? else {
        return Ok((None, None));
    };
    let bundle = Bundle::write(&std::env::temp_dir(), mitm.ca_pem()).map_err(|err| {
        eprintln!("error: cannot write the CA bundle for the command: {err}");
        EXIT_INTERNAL
    })?;
    Ok((Some(mitm), Some(bundle)))
}

/// A written bundle; dropping it removes the file and its directory.
#[derive(Debug)]
pub(super) struct Bundle {
    dir: PathBuf,
    path: String,
}

impl Bundle {
    /// Writes the system roots and `ca_pem` to a new file under `temp_dir`.
    pub(super) fn write(temp_dir: &Path, ca_pem: &str) -> io::Result<Bundle> {
        let dir = crate::private::fresh_dir(temp_dir, "egress-proxy-ca")?;
        // Owned from here on: a failure below still removes the directory.
        let mut bundle = Bundle {
            dir,
            path: String::new(),
        };
        let file = bundle.dir.join(FILE);
        bundle.path = file
            .to_str()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not UTF-8 (set TMPDIR)", file.display()),
                )
            })?
            .to_string();
        let mut text = crate::roots::system_pem();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(ca_pem);
        crate::private::write(&file, text.as_bytes())?;
        Ok(bundle)
    }

    /// The file, as the child's variables carry it.
    pub(super) fn path(&self) -> &str {
        &self.path
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join(FILE));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_bundle_is_private_holds_the_ca_and_goes_away() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let bundle = Bundle::write(tmp.path(), ca).unwrap();
        let path = PathBuf::from(bundle.path());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with(ca), "{text}");
        assert!(text.starts_with(&crate::roots::system_pem()));
        drop(bundle);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}

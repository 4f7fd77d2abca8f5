//! Files only this user can read, safe against a hostile local setup: directories of mode
//! 0700 that are real directories we own, and files of mode 0600 written through a new
//! temporary file and a rename, so a file or symlink planted at the path is replaced, never
//! written through. The admin token, the generated CA and `run`'s CA bundle live in them.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

/// Creates `dir` with mode 0700, or makes sure an existing one is a real directory (not a
/// symlink) that we own, and restricts it to 0700.
pub(crate) fn dir(dir: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if !fs::symlink_metadata(dir)?.file_type().is_dir() {
        return Err(io::Error::new(
            ErrorKind::AlreadyExists,
            "it exists and is not a directory",
        ));
    }
    // Only the owner (or root) may change the mode, so this also checks ownership.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// A new directory of mode 0700 that nobody else created: `<parent>/<prefix>-<pid>`, or with
/// a random suffix when that name already exists (a stale directory of an earlier process
/// with the same pid, or one planted there).
pub(crate) fn fresh_dir(parent: &Path, prefix: &str) -> io::Result<PathBuf> {
    let pid = std::process::id();
    let mut candidate = parent.join(format!("{prefix}-{pid}"));
    for _ in 0..8 {
        match DirBuilder::new().mode(0o700).create(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                candidate = parent.join(format!("{prefix}-{pid}-{}", suffix()?));
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        ErrorKind::AlreadyExists,
        format!("no fresh directory name for {prefix} was free"),
    ))
}

/// Writes `bytes` to `path` with mode 0600: a temporary file beside it, created exclusively
/// (never through a symlink) and synced, then renamed over `path` in one step, so a reader
/// sees the old file or the whole new one.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.{}.tmp", std::process::id(), suffix()?));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Eight random hex digits: a name nobody could have planted in advance.
fn suffix() -> io::Result<String> {
    let mut bytes = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| io::Error::other("no random bytes from the system"))?;
    Ok(format!("{:08x}", u32::from_be_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_planted_symlink_is_replaced_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let path = tmp.path().join("file");
        symlink(&victim, &path).unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            2,
            "a temp file is left"
        );
    }

    #[test]
    fn a_directory_is_made_private_and_a_symlinked_one_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let made = tmp.path().join("made");
        fs::create_dir(&made).unwrap();
        fs::set_permissions(&made, fs::Permissions::from_mode(0o755)).unwrap();
        dir(&made).unwrap();
        let mode = fs::metadata(&made).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let link = tmp.path().join("link");
        symlink(&made, &link).unwrap();
        assert!(dir(&link).is_err());
        let fresh = fresh_dir(tmp.path(), "x").unwrap();
        let again = fresh_dir(tmp.path(), "x").unwrap();
        assert_ne!(fresh, again);
    }
}

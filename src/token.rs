//! The admin bearer token: read from `[admin] token_file`, or generated at start and written
//! with mode 0600 where the operator (and nobody else) can read it.
//!
//! The token itself is never logged or shown in `Debug` output; only the file it lives in.

use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::AdminConfig;

/// The file a generated token is written to, inside its directory.
pub const TOKEN_FILE_NAME: &str = "admin-token";

/// A token and where it came from.
#[derive(Clone)]
pub struct AdminToken {
    /// The token itself (never logged).
    pub token: Arc<str>,
    /// The file the token was read from or written to.
    pub path: PathBuf,
    /// True when this process generated the token (no `[admin] token_file`).
    pub generated: bool,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminToken")
            .field("token", &"<redacted>")
            .field("path", &self.path)
            .field("generated", &self.generated)
            .finish()
    }
}

impl AdminToken {
    /// For a token this process generated, a guard that removes it when dropped: the token
    /// grants control of the policy, and the directory made for it is of no use to anyone once
    /// the process is gone. `None` for a `token_file`, which is the operator's.
    pub fn removed_on_drop(&self) -> Option<RemoveOnDrop> {
        self.generated.then(|| RemoveOnDrop {
            path: self.path.clone(),
            token: Arc::clone(&self.token),
        })
    }
}

/// Removes a generated token file when dropped, if it still holds this process's token (a
/// later `serve` sharing `$XDG_RUNTIME_DIR` may have written its own since), and then its
/// directory if that is left empty.
#[derive(Debug)]
pub struct RemoveOnDrop {
    path: PathBuf,
    token: Arc<str>,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if read_token_file(&self.path).is_ok_and(|t| t == self.token) {
            let _ = fs::remove_file(&self.path);
        }
        if let Some(dir) = self.path.parent() {
            // Fails, as it should, while anything else is in it.
            let _ = fs::remove_dir(dir);
        }
    }
}

/// `[admin] token_file` when set; otherwise a fresh token in
/// `$XDG_RUNTIME_DIR/egress-proxy/admin-token`, or, without `XDG_RUNTIME_DIR`, in a new
/// `<temp dir>/egress-proxy-<pid>/admin-token` directory of mode 0700.
pub fn load_or_generate(config: &AdminConfig) -> Result<AdminToken, String> {
    match &config.token_file {
        Some(path) => Ok(AdminToken {
            token: read_token_file(path)?,
            path: path.clone(),
            generated: false,
        }),
        None => {
            let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
            generate(xdg.as_deref(), &std::env::temp_dir())
        }
    }
}

/// Reads a token file: surrounding whitespace is trimmed; an empty token, or one that could not
/// travel in an HTTP header, is an error.
pub fn read_token_file(path: &Path) -> Result<Arc<str>, String> {
    let text = fs::read_to_string(path)
        .map_err(|e| format!("cannot read admin token file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("admin token file {} is empty", path.display()));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "admin token in {} must be printable ASCII without spaces",
            path.display()
        ));
    }
    Ok(Arc::from(token))
}

/// A warning when `[admin] token_file` can be read by its group or by others: whoever reads
/// the token (the sandboxed child runs as some user too) can loosen the policy through the
/// admin API. `None` when only the owner can read it, or it cannot be inspected (reading it
/// reports that).
pub fn exposure_warning(path: &Path) -> Option<String> {
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then(|| {
        format!(
            "`[admin] token_file` {} is readable by group or others (mode {mode:04o}); \
             anyone who reads it can change the policy: `chmod 600` it",
            path.display()
        )
    })
}

/// Generates a token (32 random bytes, hex) and writes it with mode 0600.
///
/// `xdg_runtime_dir`: when it is an absolute path, the token goes to
/// `<it>/egress-proxy/admin-token` (the directory is created 0700 if missing). Otherwise a new
/// directory `<temp_dir>/egress-proxy-<pid>` (mode 0700; a random suffix is added if that name
/// is taken) holds it.
pub fn generate(xdg_runtime_dir: Option<&Path>, temp_dir: &Path) -> Result<AdminToken, String> {
    let dir = match xdg_runtime_dir.filter(|d| d.is_absolute()) {
        Some(runtime) => private_dir(&runtime.join("egress-proxy"))?,
        None => fresh_dir(temp_dir)?,
    };
    let token: Arc<str> = Arc::from(hex(&urandom::<32>()?));
    let path = dir.join(TOKEN_FILE_NAME);
    write_private(&path, &token)?;
    Ok(AdminToken {
        token,
        path,
        generated: true,
    })
}

/// Creates `dir` with mode 0700, or makes sure an existing one is a real directory (not a
/// symlink) that we own, and restricts it to 0700.
fn private_dir(dir: &Path) -> Result<PathBuf, String> {
    crate::private::dir(dir).map_err(|e| {
        format!(
            "cannot use {} for the admin token: {e}; remove it or set [admin] token_file",
            dir.display()
        )
    })?;
    Ok(dir.to_path_buf())
}

/// A directory nobody else created: `egress-proxy-<pid>`, or with a random suffix.
fn fresh_dir(temp_dir: &Path) -> Result<PathBuf, String> {
    crate::private::fresh_dir(temp_dir, "egress-proxy").map_err(|e| {
        format!(
            "cannot create a fresh directory for the admin token in {}: {e}",
            temp_dir.display()
        )
    })
}

/// Writes `token` to `path` with mode 0600, never through a file or symlink planted there.
fn write_private(path: &Path, token: &str) -> Result<(), String> {
    crate::private::write(path, format!("{token}\n").as_bytes())
        .map_err(|e| format!("cannot write the admin token to {}: {e}", path.display()))
}

/// `N` bytes from the kernel's random source (also the session token's, `crate::session`).
pub(crate) fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes))?;
    Ok(bytes)
}

fn urandom<const N: usize>() -> Result<[u8; N], String> {
    random_bytes().map_err(|e| format!("cannot read /dev/urandom: {e}"))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Compares a presented token with the expected one in time that does not depend on where they
/// differ (only on the length of the presented one).
pub fn matches(expected: &str, presented: impl AsRef<[u8]>) -> bool {
    let (a, b) = (expected.as_bytes(), presented.as_ref());
    let mut diff = u8::from(a.len() != b.len());
    for (i, y) in b.iter().enumerate() {
        let x = a.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generated_in_the_runtime_dir() {
        let runtime = tempfile::tempdir().unwrap();
        let first = generate(Some(runtime.path()), Path::new("/nonexistent")).unwrap();
        assert!(first.generated);
        assert_eq!(
            first.path,
            runtime.path().join("egress-proxy").join(TOKEN_FILE_NAME)
        );
        assert_eq!(first.token.len(), 64);
        assert!(first.token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(mode(&first.path), 0o600);
        assert_eq!(mode(first.path.parent().unwrap()), 0o700);
        assert_eq!(read_token_file(&first.path).unwrap(), first.token);
        // A second start replaces the token; the directory is reused.
        let second = generate(Some(runtime.path()), Path::new("/nonexistent")).unwrap();
        assert_ne!(first.token, second.token);
        assert_eq!(read_token_file(&second.path).unwrap(), second.token);
        assert!(!format!("{second:?}").contains(&*second.token));
    }

    #[test]
    fn generated_in_a_fresh_temp_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let a = generate(None, tmp.path()).unwrap();
        let dir = a.path.parent().unwrap();
        assert_eq!(
            dir.file_name().unwrap().to_str().unwrap(),
            format!("egress-proxy-{}", std::process::id())
        );
        assert_eq!(mode(dir), 0o700);
        assert_eq!(mode(&a.path), 0o600);
        // The name is taken now: the next one gets a directory of its own.
        let b = generate(Some(Path::new("relative/is/ignored")), tmp.path()).unwrap();
        assert_ne!(a.path.parent(), b.path.parent());
        assert_eq!(read_token_file(&a.path).unwrap(), a.token);
    }

    #[test]
    fn a_generated_token_and_its_directory_are_removed_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = generate(None, tmp.path()).unwrap();
        let dir = fresh.path.parent().unwrap().to_path_buf();
        drop(fresh.removed_on_drop().expect("generated"));
        assert!(!dir.exists(), "{dir:?} is left");

        // A shared runtime dir: a token another process wrote since is left alone, and so is
        // the directory holding it.
        let runtime = tempfile::tempdir().unwrap();
        let first = generate(Some(runtime.path()), tmp.path()).unwrap();
        let guard = first.removed_on_drop().unwrap();
        let second = generate(Some(runtime.path()), tmp.path()).unwrap();
        drop(guard);
        assert_eq!(read_token_file(&second.path).unwrap(), second.token);
        drop(second.removed_on_drop());
        assert!(!runtime.path().join("egress-proxy").exists());

        let file = tmp.path().join("t");
        fs::write(&file, "s3cret\n").unwrap();
        let given = AdminToken {
            token: Arc::from("s3cret"),
            path: file.clone(),
            generated: false,
        };
        assert!(given.removed_on_drop().is_none());
        assert!(file.exists());
    }

    #[test]
    fn token_files_are_trimmed_and_never_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t");
        fs::write(&path, "  s3cret \n").unwrap();
        assert_eq!(&*read_token_file(&path).unwrap(), "s3cret");
        fs::write(&path, " \n").unwrap();
        assert!(read_token_file(&path).unwrap_err().contains("is empty"));
        fs::write(&path, "a b").unwrap();
        assert!(read_token_file(&path).is_err());
        let missing = read_token_file(&tmp.path().join("missing")).unwrap_err();
        assert!(
            missing.starts_with("cannot read admin token file"),
            "{missing}"
        );
    }

    #[test]
    fn a_token_file_others_can_read_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t");
        fs::write(&path, "s3cret\n").unwrap();
        for (bits, warned) in [(0o600, false), (0o400, false), (0o640, true), (0o604, true)] {
            fs::set_permissions(&path, fs::Permissions::from_mode(bits)).unwrap();
            let warning = exposure_warning(&path);
            assert_eq!(warning.is_some(), warned, "{bits:o}: {warning:?}");
        }
        let shown = exposure_warning(&path).unwrap();
        assert!(shown.contains("(mode 0604)"), "{shown}");
        assert_eq!(exposure_warning(&tmp.path().join("missing")), None);
    }

    #[test]
    fn comparison() {
        assert!(matches("abc", "abc"));
        assert!(!matches("abc", "abd"));
        assert!(!matches("abc", "ab"));
        assert!(!matches("abc", "abcd"));
        assert!(!matches("abc", ""));
    }
}

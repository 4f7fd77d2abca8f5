//! A requested Unix socket held by identity: the file the policy decides on is the file the
//! proxy connects to.
//!
//! On Linux the path is resolved once, by an `O_PATH` open (which opens no socket, FIFO or
//! device and has no side effect). The descriptor's `fstat` identity is what the policy decides
//! on, and the connection goes to `/proc/self/fd/N` of that descriptor, which the kernel resolves
//! to that very inode: a symlink or file swapped in at the path after the check changes nothing.
//!
//! Elsewhere (macOS) there is no `O_PATH`: a symlinked last component is refused, and the
//! identity is checked again by path right before connecting, which leaves only the instant
//! between that check and `connect(2)`.

use std::io;
use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use crate::policy::FileId;

/// Why a requested path gives nothing to decide on (the request is then denied).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open: {0}")]
    Io(#[from] io::Error),
    #[error("not a socket")]
    NotASocket,
}

/// The socket file found at a requested path, held until it is connected.
#[derive(Debug)]
pub struct SocketFile {
    /// The path as requested, for messages.
    path: PathBuf,
    id: FileId,
    #[cfg(target_os = "linux")]
    fd: std::fs::File,
}

impl SocketFile {
    /// The path as the client gave it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity the policy decides on.
    pub fn id(&self) -> FileId {
        self.id
    }
}

#[cfg(target_os = "linux")]
impl SocketFile {
    /// Opens `path` (symlinks followed) without opening the socket itself.
    pub fn open(path: &Path) -> Result<SocketFile, OpenError> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_PATH.bits())
            .open(path)?;
        let meta = fd.metadata()?;
        if !meta.file_type().is_socket() {
            return Err(OpenError::NotASocket);
        }
        Ok(SocketFile {
            path: path.to_path_buf(),
            id: FileId::of(&meta),
            fd,
        })
    }

    /// Connects to the file that was opened, whatever the path names now.
    pub(crate) async fn connect(&self) -> io::Result<UnixStream> {
        use std::os::fd::AsRawFd;
        UnixStream::connect(format!("/proc/self/fd/{}", self.fd.as_raw_fd())).await
    }
}

#[cfg(not(target_os = "linux"))]
impl SocketFile {
    /// Identifies the socket at `path`; a symlinked last component is not a socket here.
    pub fn open(path: &Path) -> Result<SocketFile, OpenError> {
        Ok(SocketFile {
            path: path.to_path_buf(),
            id: socket_at(path)?,
        })
    }

    /// Connects by path once the same socket is still there.
    pub(crate) async fn connect(&self) -> io::Result<UnixStream> {
        match socket_at(&self.path) {
            Ok(id) if id == self.id => UnixStream::connect(&self.path).await,
            _ => Err(io::Error::other("the socket changed after it was checked")),
        }
    }
}

/// The identity of the socket at `path`, its last component not followed.
#[cfg(not(target_os = "linux"))]
fn socket_at(path: &Path) -> Result<FileId, OpenError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_socket() {
        return Err(OpenError::NotASocket);
    }
    Ok(FileId::of(&meta))
}

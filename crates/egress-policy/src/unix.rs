//! The Unix-socket map: which local sockets a plain-HTTP request may be sent to.
//!
//! A socket is decided by the file it is, its `(device, inode)`, never by how its path is
//! spelled: a symlink, a hard link or a bind mount of a denied socket is the denied socket. The
//! caller opens the requested path once, passes that file's identity here, and connects to the
//! file it opened (the proxy's `net::unix`), so nothing resolves the path between the decision and
//! the connection.
//!
//! Entries are identified when a request is checked, since sockets come and go: an entry stands
//! for the file at its path at that moment, symlinks followed (so an allow entry written through a
//! symlinked directory, `/var/run/docker.sock` when `/var/run` links to `/run`, still works). A
//! deny entry also matches the requested path spelled exactly like it.
//!
//! What this promises: the proxy is never the one to connect to a denied socket. It does not stop
//! a process running as the same user from connecting to a socket itself (that is the sandbox's
//! job). An allow entry allows whatever socket is at its path when the request comes, so a client
//! must not be able to write to its directory; a deny entry whose path was removed identifies no
//! file, so a hard link left elsewhere to that socket is no longer recognised.

use std::collections::HashSet;
#[cfg(unix)]
use std::fs::Metadata;
use std::path::{Path, PathBuf};

use super::spec::{UnixAction, UnixSocketSpec};

/// A file's identity as `stat(2)` reports it: two paths name the same socket exactly when their
/// identities are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    /// The device the file lives on (`st_dev`).
    pub dev: u64,
    /// The inode number on that device (`st_ino`).
    pub ino: u64,
}

impl FileId {
    /// The identity in `meta` (Unix only: elsewhere no file has one, and every socket is
    /// denied).
    #[cfg(unix)]
    pub fn of(meta: &Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;

        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The identity of the file at `path`, symlinks followed.
#[cfg(unix)]
fn identify(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|meta| FileId::of(&meta))
}

#[cfg(not(unix))]
fn identify(_: &Path) -> Option<FileId> {
    None
}

/// The outcome for one path, with the entry that decided (if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum UnixVerdict {
    Allowed { entry: Option<PathBuf> },
    Denied { entry: Option<PathBuf> },
}

#[derive(Clone, Debug, Default)]
pub(crate) struct UnixSocketMap {
    allow: HashSet<PathBuf>,
    deny: HashSet<PathBuf>,
    allow_all: bool,
}

impl UnixSocketMap {
    pub(crate) fn new(entries: &[UnixSocketSpec], allow_all: bool) -> Self {
        let mut map = UnixSocketMap {
            allow_all,
            ..Default::default()
        };
        for entry in entries {
            let set = match entry.action {
                UnixAction::Allow => &mut map.allow,
                UnixAction::Deny => &mut map.deny,
            };
            set.insert(entry.path.clone());
        }
        map
    }

    /// Judges the socket `socket` that the caller opened at `path` (`None`: nothing that can be
    /// connected to is there, which is always denied). Entries are identified against the file
    /// system as it is now.
    pub(crate) fn check(&self, path: &Path, socket: Option<FileId>) -> UnixVerdict {
        self.check_with(path, socket, identify)
    }

    /// The pure decision: `identify` gives the identity of the file an entry names, symlinks
    /// followed, or `None` when there is none.
    pub(crate) fn check_with(
        &self,
        path: &Path,
        socket: Option<FileId>,
        identify: impl Fn(&Path) -> Option<FileId>,
    ) -> UnixVerdict {
        if let Some(entry) = self.deny.get(path) {
            return UnixVerdict::Denied {
                entry: Some(entry.clone()),
            };
        }
        let Some(socket) = socket.filter(|_| path.is_absolute()) else {
            return UnixVerdict::Denied { entry: None };
        };
        let names_socket = |entry: &&PathBuf| identify(entry) == Some(socket);
        if let Some(entry) = self.deny.iter().find(names_socket) {
            return UnixVerdict::Denied {
                entry: Some(entry.clone()),
            };
        }
        if let Some(entry) = self.allow.iter().find(names_socket) {
            return UnixVerdict::Allowed {
                entry: Some(entry.clone()),
            };
        }
        if self.allow_all {
            return UnixVerdict::Allowed { entry: None };
        }
        UnixVerdict::Denied { entry: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;
    use std::os::unix::fs::symlink;

    fn spec(path: &Path, action: UnixAction) -> UnixSocketSpec {
        UnixSocketSpec {
            path: path.to_path_buf(),
            action,
            origin: Origin::Api,
        }
    }

    /// What the caller hands the map: the identity of the file the path leads to.
    fn opened(path: &Path) -> Option<FileId> {
        std::fs::metadata(path).ok().map(|meta| FileId::of(&meta))
    }

    #[test]
    fn links_cannot_reach_a_denied_socket() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let allowed = root.join("allowed.sock");
        let denied = root.join("denied.sock");
        std::fs::write(&allowed, "").unwrap();
        std::fs::write(&denied, "").unwrap();
        let to_denied = root.join("innocent.sock");
        symlink(&denied, &to_denied).unwrap();
        let hard_denied = root.join("hard.sock");
        std::fs::hard_link(&denied, &hard_denied).unwrap();
        let to_allowed = root.join("alias.sock");
        symlink(&allowed, &to_allowed).unwrap();
        let hard_allowed = root.join("hard-alias.sock");
        std::fs::hard_link(&allowed, &hard_allowed).unwrap();
        let linkdir = root.join("run");
        symlink(&root, &linkdir).unwrap();

        let map = UnixSocketMap::new(
            &[
                spec(&allowed, UnixAction::Allow),
                spec(&denied, UnixAction::Deny),
                spec(&hard_denied, UnixAction::Allow),
                spec(&linkdir.join("via-dir.sock"), UnixAction::Allow),
            ],
            false,
        );
        let check = |p: &Path| map.check(p, opened(p));
        let by = |entry: &Path| Some(entry.to_path_buf());
        assert_eq!(
            check(&allowed),
            UnixVerdict::Allowed {
                entry: by(&allowed)
            }
        );
        for path in [&to_allowed, &hard_allowed] {
            assert_eq!(
                check(path),
                UnixVerdict::Allowed {
                    entry: by(&allowed)
                }
            );
        }
        for path in [&denied, &to_denied, &hard_denied] {
            assert_eq!(check(path), UnixVerdict::Denied { entry: by(&denied) });
        }
        // The deny entry's spelling is denied even when nothing is there to identify.
        assert_eq!(
            map.check(&denied, None),
            UnixVerdict::Denied { entry: by(&denied) }
        );
        assert_eq!(
            map.check(&allowed, None),
            UnixVerdict::Denied { entry: None }
        );
        assert_eq!(
            check(&root.join("other.sock")),
            UnixVerdict::Denied { entry: None }
        );
        assert_eq!(
            map.check(Path::new("relative.sock"), opened(&allowed)),
            UnixVerdict::Denied { entry: None }
        );
        // An allow entry written through a symlinked directory matches the real file.
        std::fs::write(root.join("via-dir.sock"), "").unwrap();
        assert!(matches!(
            check(&root.join("via-dir.sock")),
            UnixVerdict::Allowed { .. }
        ));
    }

    #[test]
    fn allow_all_still_honours_denies() {
        let map = UnixSocketMap::new(&[spec(Path::new("/x/denied.sock"), UnixAction::Deny)], true);
        let denied = FileId { dev: 1, ino: 7 };
        let other = FileId { dev: 1, ino: 8 };
        let identify = |p: &Path| (p == Path::new("/x/denied.sock")).then_some(denied);
        let p = Path::new("/x/any.sock");
        assert_eq!(
            map.check_with(p, Some(other), identify),
            UnixVerdict::Allowed { entry: None }
        );
        // Another name for the denied file is the denied file.
        assert!(matches!(
            map.check_with(p, Some(denied), identify),
            UnixVerdict::Denied { entry: Some(_) }
        ));
        // The same inode number on another device is another file.
        assert!(matches!(
            map.check_with(p, Some(FileId { dev: 2, ino: 7 }), identify),
            UnixVerdict::Allowed { .. }
        ));
        assert!(matches!(
            map.check_with(p, None, identify),
            UnixVerdict::Denied { entry: None }
        ));
    }
}

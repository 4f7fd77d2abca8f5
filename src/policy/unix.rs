//! The Unix-socket map: which local sockets a plain-HTTP request may be sent to.
//!
//! A path is judged as given and after symlink resolution: a deny of either wins, and an allow
//! must match the resolved path. That way a symlink planted next to an allowed socket cannot
//! point the proxy at a denied one, and a symlinked allow entry (`/var/run/docker.sock` when
//! `/var/run` links to `/run`) still works.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::spec::{UnixAction, UnixSocketSpec};

/// The outcome for one path, with the entry that decided (if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnixVerdict {
    Allowed { entry: Option<PathBuf> },
    Denied { entry: Option<PathBuf> },
}

#[derive(Clone, Debug, Default)]
pub struct UnixSocketMap {
    allow: HashSet<PathBuf>,
    deny: HashSet<PathBuf>,
    allow_all: bool,
}

impl UnixSocketMap {
    pub fn new(entries: &[UnixSocketSpec], allow_all: bool) -> Self {
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

    /// Whether any socket at all can be reached (listeners must then stay on loopback).
    pub fn any_allowed(&self) -> bool {
        self.allow_all || !self.allow.is_empty()
    }

    /// Judges a path against the file system as it is now (symlinks followed). Returns the
    /// resolved path too: that is the one to connect to, so a symlink swapped after the check
    /// cannot redirect the connection.
    pub fn check(&self, path: &Path) -> (UnixVerdict, PathBuf) {
        if !path.is_absolute() {
            return (UnixVerdict::Denied { entry: None }, path.to_path_buf());
        }
        let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let resolve = |p: &PathBuf| std::fs::canonicalize(p).ok();
        (self.check_resolved(path, &resolved, resolve), resolved)
    }

    /// The pure decision: `resolved` is `path` with symlinks followed, and `resolve` follows
    /// the symlinks of a map entry (entries may be symlinks themselves).
    pub fn check_resolved(
        &self,
        path: &Path,
        resolved: &Path,
        resolve: impl Fn(&PathBuf) -> Option<PathBuf>,
    ) -> UnixVerdict {
        // Each entry is resolved at most once, and only when its text does not match.
        let matches = |entry: &PathBuf, candidates: &[&Path]| {
            candidates.contains(&entry.as_path())
                || resolve(entry).is_some_and(|r| candidates.contains(&r.as_path()))
        };
        if let Some(entry) = self.deny.iter().find(|d| matches(d, &[path, resolved])) {
            return UnixVerdict::Denied {
                entry: Some(entry.clone()),
            };
        }
        if let Some(entry) = self.allow.iter().find(|a| matches(a, &[resolved])) {
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
    use crate::policy::Origin;
    use std::os::unix::fs::symlink;

    fn spec(path: &Path, action: UnixAction) -> UnixSocketSpec {
        UnixSocketSpec {
            path: path.to_path_buf(),
            action,
            origin: Origin::Api,
        }
    }

    #[test]
    fn symlinks_cannot_reach_a_denied_socket() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let allowed = root.join("allowed.sock");
        let denied = root.join("denied.sock");
        std::fs::write(&allowed, "").unwrap();
        std::fs::write(&denied, "").unwrap();
        let to_denied = root.join("innocent.sock");
        symlink(&denied, &to_denied).unwrap();
        let to_allowed = root.join("alias.sock");
        symlink(&allowed, &to_allowed).unwrap();
        let linkdir = root.join("run");
        symlink(&root, &linkdir).unwrap();

        let map = UnixSocketMap::new(
            &[
                spec(&allowed, UnixAction::Allow),
                spec(&denied, UnixAction::Deny),
                spec(&linkdir.join("via-dir.sock"), UnixAction::Allow),
            ],
            false,
        );
        let allowed_by = |p: &Path| match map.check(p).0 {
            UnixVerdict::Allowed { entry } => Some(entry),
            UnixVerdict::Denied { .. } => None,
        };
        assert_eq!(allowed_by(&allowed), Some(Some(allowed.clone())));
        assert_eq!(allowed_by(&to_allowed), Some(Some(allowed.clone())));
        assert_eq!(
            map.check(&denied).0,
            UnixVerdict::Denied {
                entry: Some(denied.clone())
            }
        );
        assert_eq!(
            map.check(&to_denied).0,
            UnixVerdict::Denied {
                entry: Some(denied.clone())
            }
        );
        assert_eq!(
            map.check(&root.join("other.sock")).0,
            UnixVerdict::Denied { entry: None }
        );
        assert_eq!(
            map.check(Path::new("relative.sock")).0,
            UnixVerdict::Denied { entry: None }
        );
        // An allow entry written through a symlinked directory matches the real path.
        std::fs::write(root.join("via-dir.sock"), "").unwrap();
        assert!(allowed_by(&root.join("via-dir.sock")).is_some());
    }

    #[test]
    fn allow_all_still_honours_denies() {
        let map = UnixSocketMap::new(&[spec(Path::new("/x/denied.sock"), UnixAction::Deny)], true);
        let none = |_: &PathBuf| None;
        let p = Path::new("/x/any.sock");
        assert_eq!(
            map.check_resolved(p, p, none),
            UnixVerdict::Allowed { entry: None }
        );
        let d = Path::new("/x/denied.sock");
        assert!(matches!(
            map.check_resolved(d, d, none),
            UnixVerdict::Denied { .. }
        ));
        // A path that resolves to the denied socket is denied too.
        assert!(matches!(
            map.check_resolved(p, d, none),
            UnixVerdict::Denied { .. }
        ));
        assert!(map.any_allowed());
        assert!(!UnixSocketMap::new(&[], false).any_allowed());
    }
}

//! Reload when a policy file changes on disk, through the same [`Control`] reload as SIGHUP and
//! `POST /reload` (so a broken file keeps the running policy and counts `reload{result=error}`).
//!
//! The watch is on the *directories* that hold each policy file and every symlink on the way to
//! it, never on the file itself: an editor saves by writing a new file and renaming it over the
//! old one, and a Kubernetes ConfigMap volume updates by swapping a `..data` symlink in the
//! mount directory, so the file a watch was put on is no longer the one the path names. After
//! every look the set of directories is worked out again, because a swap moves the file into a
//! new directory. Events only say that something in a directory changed; the policy files'
//! bytes ([`crate::control::Inputs`]) say whether anything needs reloading, so another file in
//! the same directory, a rewrite with the same bytes and the proxy's own reads never reload.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Sources;
use crate::control::{policy_files, Control};

/// How long the watched directories must stay quiet before the files are read: a save or a
/// ConfigMap update is a burst of events (a new file or directory, a rename, a removal), and
/// one look after the last of them sees the finished state and reloads once.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(300);

/// The longest a steady stream of events postpones a look, so a directory that never stays
/// quiet (a log written next to the policy) cannot hold a policy edit back for good.
const LONGEST_WAIT: Duration = Duration::from_secs(2);

/// How many symlinks resolving one path may pass through, as the kernel's `ELOOP` limit.
const MAX_LINKS: usize = 40;

/// Starts watching the directories of `control`'s policy files, reloading on a change until
/// `stopping` completes. `None` when there are no files, or when no watch can be set up (the
/// inotify limits): that is logged, and SIGHUP and `POST /reload` still work.
pub(crate) fn start(
    control: Arc<Control>,
    stopping: impl Future<Output = ()> + Send + 'static,
) -> Option<JoinHandle<()>> {
    let sources = control.sources.clone()?;
    policy_files(&sources).next()?;
    let wake = Arc::new(Notify::new());
    let watcher = match notify::recommended_watcher(waker(Arc::clone(&wake))) {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch the policy files; reload with SIGHUP or POST /reload");
            return None;
        }
    };
    let mut watched = Watched {
        watcher,
        dirs: BTreeSet::new(),
        failing: BTreeSet::new(),
    };
    watched.sync(&sources);
    if watched.dirs.is_empty() {
        // Each failure was logged; without a watched directory no event would ever come.
        return None;
    }
    let dirs: Vec<String> = watched
        .dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    tracing::info!(
        dirs = %dirs.join(", "),
        debounce_ms = DEBOUNCE.as_millis() as u64,
        "watching the policy files for changes"
    );
    Some(tokio::spawn(async move {
        tokio::select! {
            () = run(control, sources, watched, wake) => {}
            () = stopping => {}
        }
    }))
}

/// The event handler on notify's thread: wakes the watch task for anything but a read (the
/// watch's own reads of the files must not wake it again). An error may mean lost events (a
/// queue overflow), so it wakes the task too.
fn waker(wake: Arc<Notify>) -> impl FnMut(notify::Result<Event>) + Send + 'static {
    move |event| match event {
        Ok(event) if !is_read(&event.kind) => wake.notify_one(),
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(error = %err, "policy file watch error; checking the files");
            wake.notify_one();
        }
    }
}

/// An open, a read, or a close without a write: nothing on disk changed.
fn is_read(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(access) if *access != AccessKind::Close(AccessMode::Write))
}

/// One look after start-up, then one per settled burst of events.
async fn run(control: Arc<Control>, sources: Sources, mut watched: Watched, wake: Arc<Notify>) {
    let sources = Arc::new(sources);
    loop {
        let control = Arc::clone(&control);
        let sources = Arc::clone(&sources);
        // File reads and compiling stay off the workers serving connections.
        let looked = tokio::task::spawn_blocking(move || {
            // Watches first, then the read: a change after the read has an event to wake us.
            watched.sync(&sources);
            if control.reload_if_changed().is_none() {
                tracing::debug!("no policy file changed; not reloading");
            }
            watched
        })
        .await;
        watched = match looked {
            Ok(watched) => watched,
            Err(err) => {
                tracing::error!(error = %err, "the policy file watch stopped; reload with SIGHUP or POST /reload");
                return;
            }
        };
        wake.notified().await;
        settle(&wake).await;
    }
}

/// Returns once no event has come for [`DEBOUNCE`], or [`LONGEST_WAIT`] after it was called.
async fn settle(wake: &Notify) {
    let deadline = Instant::now() + LONGEST_WAIT;
    loop {
        let quiet = (Instant::now() + DEBOUNCE).min(deadline);
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(quiet) => return,
            () = wake.notified() => {}
        }
    }
}

/// The watcher and the directories it watches now.
struct Watched {
    watcher: RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
    /// Directories that could not be watched, so each failure is logged once.
    failing: BTreeSet<PathBuf>,
}

impl Watched {
    /// Watches every directory the policy files resolve through now, and no other. Each is
    /// watched again even when it already was: a directory removed and created again is a new
    /// one to the kernel, and watching a watched one is harmless.
    fn sync(&mut self, sources: &Sources) {
        let mut want = BTreeSet::new();
        for file in policy_files(sources) {
            resolving_dirs(file, &mut want);
        }
        for gone in self.dirs.difference(&want) {
            // A removed directory has lost its watch already.
            let _ = self.watcher.unwatch(gone);
        }
        self.dirs.clear();
        for dir in want {
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.failing.remove(&dir);
                    self.dirs.insert(dir);
                }
                Err(err) => {
                    if self.failing.insert(dir.clone()) {
                        tracing::warn!(
                            dir = %dir.display(),
                            error = %err,
                            "cannot watch a policy file's directory; changes there need SIGHUP or POST /reload"
                        );
                    }
                }
            }
        }
    }
}

/// Adds to `dirs` every directory whose entries decide what `path` opens: the one that holds
/// the file in the end, and each one that holds a symlink on the way (for a ConfigMap's
/// `policy.toml -> ..data/policy.toml`, `..data -> ..2026_01_01`: the mount directory and the
/// current data directory). Relative paths start at the working directory, as loading does.
fn resolving_dirs(path: &Path, dirs: &mut BTreeSet<PathBuf>) {
    let Ok(path) = std::path::absolute(path) else {
        return;
    };
    // What is left to resolve, one component each, the next one last.
    let mut todo: Vec<PathBuf> = reversed(&path).collect();
    let mut at = PathBuf::new();
    let mut links = 0;
    while let Some(item) = todo.pop() {
        match item.components().next() {
            Some(Component::Normal(name)) => {
                let next = at.join(name);
                match std::fs::read_link(&next) {
                    Ok(target) if links < MAX_LINKS => {
                        links += 1;
                        dirs.insert(at.clone());
                        // Resolved from the link's directory, or from `/` when absolute.
                        todo.extend(reversed(&target));
                    }
                    _ => at = next,
                }
            }
            Some(Component::ParentDir) => {
                at.pop();
            }
            Some(Component::RootDir | Component::Prefix(_)) => at = item,
            Some(Component::CurDir) | None => {}
        }
    }
    if let Some(parent) = at.parent() {
        dirs.insert(parent.to_path_buf());
    }
}

/// `path`'s components, last first.
fn reversed(path: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    path.components()
        .rev()
        .map(|component| PathBuf::from(component.as_os_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dirs_of(path: &Path) -> BTreeSet<PathBuf> {
        let mut dirs = BTreeSet::new();
        resolving_dirs(path, &mut dirs);
        dirs
    }

    /// A plain file: its own directory only.
    #[test]
    fn a_plain_file_is_watched_through_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("p.toml"), "").unwrap();
        assert_eq!(
            dirs_of(&root.join("p.toml")),
            BTreeSet::from([root.clone()])
        );
        // A file that is not there yet: the directory it would appear in.
        assert_eq!(dirs_of(&root.join("later.toml")), BTreeSet::from([root]));
    }

    /// The layout of a ConfigMap volume: the mount directory (where `..data` is swapped) and
    /// the data directory the file is in now.
    #[test]
    fn a_configmap_file_is_watched_through_the_mount_and_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("..2026_a")).unwrap();
        std::fs::write(root.join("..2026_a/policy.toml"), "").unwrap();
        symlink("..2026_a", root.join("..data")).unwrap();
        symlink("..data/policy.toml", root.join("policy.toml")).unwrap();
        assert_eq!(
            dirs_of(&root.join("policy.toml")),
            BTreeSet::from([root.clone(), root.join("..2026_a")])
        );
    }

    /// An absolute link into another directory, a link to a link, a `..` after a link, and a
    /// directory link in the middle of the path: every directory holding a link counts.
    #[test]
    fn every_directory_holding_a_link_on_the_way_is_watched() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for sub in ["etc", "srv/real", "srv/links", "mid"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(root.join("srv/real/p.toml"), "").unwrap();
        symlink(root.join("srv/links/hop"), root.join("etc/p.toml")).unwrap();
        symlink("../real/p.toml", root.join("srv/links/hop")).unwrap();
        assert_eq!(
            dirs_of(&root.join("etc/p.toml")),
            BTreeSet::from([
                root.join("etc"),
                root.join("srv/links"),
                root.join("srv/real")
            ])
        );
        symlink(root.join("srv/real"), root.join("mid/current")).unwrap();
        assert_eq!(
            dirs_of(&root.join("mid/current/p.toml")),
            BTreeSet::from([root.join("mid"), root.join("srv/real")])
        );
    }

    /// A symlink loop ends (as `ELOOP` would) instead of spinning.
    #[test]
    fn a_symlink_loop_ends() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        symlink("b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        assert_eq!(dirs_of(&root.join("a")), BTreeSet::from([root]));
    }

    /// Reads never wake the watch (its own reads of the files would loop); a finished write does.
    #[test]
    fn reads_are_not_changes() {
        assert!(is_read(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(is_read(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_read(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!is_read(&EventKind::Any));
        assert!(!is_read(&EventKind::Modify(notify::event::ModifyKind::Any)));
    }
}

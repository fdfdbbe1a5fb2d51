//! Watching the config file for a ConfigMap update (SPEC section 7).
//!
//! The kubelet never edits a ConfigMap file in place. The mounted directory
//! holds `..2026_11_23_10_00_00.123/` (the data), `..data -> ..2026_…/`, and
//! one symlink per key, `drainit.toml -> ..data/drainit.toml`. An update
//! writes a new timestamped directory, points a new `..data_tmp` symlink at
//! it, renames `..data_tmp` over `..data` (atomic), and deletes the old
//! directory. A watch on the file itself would follow the old inode into the
//! deleted directory and never fire again, so this module watches the
//! *directory* that holds the configured path (and, if that path is a symlink
//! into another directory, the directories along the chain) and reacts to
//! the file's own name or any `..`-prefixed name.
//!
//! This module only says "something changed, look again": it never reads or
//! parses the file. The caller re-opens it by path, validates it and decides
//! what to swap in. It never polls: with nothing changing, the task sleeps on
//! the inotify descriptor and costs no wake-ups.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A burst of events never delays the notification by more than this many
/// debounce periods: a file rewritten continuously still gets reloaded.
const MAX_DELAY_FACTOR: u32 = 10;

/// How many symlinks [`watch`] follows from the configured path before it
/// stops adding directories (the kernel's own limit for a path is 40).
const MAX_LINK_HOPS: usize = 8;

/// Watches the directory holding `path` with inotify (a watch on the file
/// itself would follow the deleted old inode after a ConfigMap `..data`
/// symlink swap) and sends `()` on the returned channel, debounced by
/// `debounce`: after the first relevant event it waits until no relevant
/// event came for `debounce` (at most `10 * debounce` in all), then notifies
/// once.
///
/// Relevant events: any create, move, modify, close-after-write, delete or
/// attribute change in that directory whose name is the file's name or
/// starts with `..` (the ConfigMap's `..data` and timestamped directories),
/// plus the loss of a watched directory and an inotify queue overflow. When
/// `path` is a symlink into another directory, that directory is watched
/// too; the set of watched directories is worked out again after every
/// notification, so a re-pointed symlink is followed.
///
/// The caller re-opens the file by path and validates it. The channel closes
/// when the watcher stops for good (an inotify read error, logged); dropping
/// the receiver stops the watcher and closes its descriptor.
///
/// Must be called inside a Tokio runtime with I/O enabled. Errors: inotify
/// cannot be set up, or the directory holding `path` cannot be watched (it
/// does not exist, or the per-user watch limit is reached).
pub fn watch(path: &Path, debounce: Duration) -> io::Result<mpsc::UnboundedReceiver<()>> {
    let path = absolute(path)?;
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    // SAFETY: `InotifyFd` owns the descriptor (an `OwnedFd` inside
    // `Inotify`), never replaces it, and closes it only when dropped, which
    // happens after the `AsyncFd` deregisters it.
    let fd = unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) }
        .map_err(io::Error::from)?;
    let mut watcher = Watcher {
        fd,
        path,
        watches: HashMap::new(),
    };
    // Watch before returning, so that no change made after `watch` returns
    // can be missed.
    watcher.rewatch()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(watcher.run(tx, debounce));
    Ok(rx)
}

/// The inotify instance as something `AsyncFd` can register.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

struct Watcher {
    fd: AsyncFd<InotifyFd>,
    /// The configured path, made absolute.
    path: PathBuf,
    /// Watched directory -> names in it that matter (besides `..*`).
    watches: HashMap<WatchDescriptor, HashSet<OsString>>,
}

/// The events that can mean the file behind a name changed.
fn dir_mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

impl Watcher {
    /// Works out the directories to watch from the current symlink chain and
    /// makes the inotify watches match. The first directory (the one holding
    /// the configured path) is required; the others are best effort.
    fn rewatch(&mut self) -> io::Result<()> {
        let mut wanted: HashMap<WatchDescriptor, HashSet<OsString>> = HashMap::new();
        for (i, (dir, name)) in watch_targets(&self.path).into_iter().enumerate() {
            match self.fd.get_ref().0.add_watch(&dir, dir_mask()) {
                Ok(wd) => {
                    wanted.entry(wd).or_default().insert(name);
                }
                Err(e) if i == 0 => {
                    return Err(io::Error::new(
                        io::Error::from(e).kind(),
                        format!("cannot watch {}: {e}", dir.display()),
                    ));
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "config watch: cannot watch the symlink target's directory");
                }
            }
        }
        for old in self.watches.keys() {
            if !wanted.contains_key(old) {
                // EINVAL when the kernel already dropped it (IN_IGNORED).
                let _ = self.fd.get_ref().0.rm_watch(*old);
            }
        }
        self.watches = wanted;
        Ok(())
    }

    /// Reads every queued event; returns whether any of them is relevant.
    /// `Ok(false)` with nothing read means the descriptor is drained.
    fn drain_events(&mut self) -> io::Result<bool> {
        let mut relevant = false;
        loop {
            match self.fd.get_ref().0.read_events() {
                Ok(events) if events.is_empty() => return Ok(relevant),
                Ok(events) => {
                    for event in events {
                        relevant |= self.is_relevant(event.wd, event.mask, event.name.as_deref());
                    }
                }
                Err(Errno::EAGAIN) => return Ok(relevant),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn is_relevant(&self, wd: WatchDescriptor, mask: AddWatchFlags, name: Option<&OsStr>) -> bool {
        // Lost events, or a watched directory itself went away: look again.
        if mask.intersects(
            AddWatchFlags::IN_Q_OVERFLOW
                | AddWatchFlags::IN_IGNORED
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF,
        ) {
            return self.watches.contains_key(&wd) || mask.contains(AddWatchFlags::IN_Q_OVERFLOW);
        }
        let (Some(names), Some(name)) = (self.watches.get(&wd), name) else {
            return false;
        };
        name.as_bytes().starts_with(b"..") || names.contains(name)
    }

    /// Waits for relevant events and sends one `()` per debounced burst,
    /// until the receiver is dropped or reading fails.
    async fn run(mut self, tx: mpsc::UnboundedSender<()>, debounce: Duration) {
        // When a burst started and when its last relevant event came.
        let mut pending: Option<(Instant, Instant)> = None;
        loop {
            let deadline = pending
                .map(|(first, last)| (last + debounce).min(first + debounce * MAX_DELAY_FACTOR));
            tokio::select! {
                () = tx.closed() => return,
                () = sleep_until(deadline) => {
                    pending = None;
                    // Re-resolve the symlink chain: the swap may have
                    // re-pointed a link into another directory.
                    if let Err(e) = self.rewatch() {
                        tracing::warn!(error = %e, "config watch: cannot watch the config directory any more");
                    }
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                ready = self.fd.readable() => {
                    let mut guard = match ready {
                        Ok(guard) => guard,
                        Err(e) => {
                            tracing::error!(error = %e, "config watch: inotify failed; config reload is off");
                            return;
                        }
                    };
                    // Clear readiness before draining, so that an event that
                    // lands after our last read wakes us again.
                    guard.clear_ready();
                    drop(guard);
                    match self.drain_events() {
                        Ok(true) => {
                            let now = Instant::now();
                            pending = Some((pending.map_or(now, |(first, _)| first), now));
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "config watch: reading inotify events failed; config reload is off");
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `path`, absolute (relative to the current directory), without resolving
/// symlinks: the name the user configured is what must be watched.
fn absolute(path: &Path) -> io::Result<PathBuf> {
    if path.file_name().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        ));
    }
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

/// The (directory, name) pairs to watch for `path`: its own directory, then
/// for each symlink along the chain the directory its target sits in.
///
/// A target inside a `..`-prefixed entry of a directory already watched
/// (the ConfigMap's `drainit.toml -> ..data/drainit.toml`) adds nothing: the
/// swap of `..data` shows up in the outer directory, while a watch on
/// `..data` would follow the old timestamped directory and die with it.
fn watch_targets(path: &Path) -> Vec<(PathBuf, OsString)> {
    let mut targets: Vec<(PathBuf, OsString)> = Vec::new();
    let mut current = path.to_path_buf();
    for _ in 0..=MAX_LINK_HOPS {
        let (Some(dir), Some(name)) = (current.parent(), current.file_name()) else {
            break;
        };
        let covered = targets.iter().any(|(watched, _)| {
            dir.strip_prefix(watched).is_ok_and(|rest| {
                rest.components().next().is_some_and(|c| {
                    c.as_os_str().as_bytes().starts_with(b"..") && c.as_os_str() != ".."
                })
            })
        });
        if !covered && !targets.iter().any(|(d, n)| d == dir && n == name) {
            targets.push((dir.to_path_buf(), name.to_os_string()));
        }
        let Ok(link) = std::fs::read_link(&current) else {
            break; // not a symlink (or gone): the chain ends here
        };
        current = lexical_normalize(&dir.join(link));
    }
    targets
}

/// Removes `.` and resolves `..` components by text (a symlink target is
/// relative to the link's directory, and `Path::parent` must see real names).
fn lexical_normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const DEBOUNCE: Duration = Duration::from_millis(250);
    /// A safety net only: a notification normally comes within `DEBOUNCE`.
    const WAIT: Duration = Duration::from_secs(10);

    async fn next(rx: &mut mpsc::UnboundedReceiver<()>) {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("no notification within the wait")
            .expect("watcher stopped");
    }

    /// Asserts nothing more arrives within `2 * DEBOUNCE`.
    async fn quiet(rx: &mut mpsc::UnboundedReceiver<()>) {
        let more = tokio::time::timeout(2 * DEBOUNCE, rx.recv()).await;
        assert!(more.is_err(), "unexpected extra notification: {more:?}");
    }

    #[tokio::test]
    async fn plain_file_burst_of_writes_notifies_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("drainit.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        let mut rx = watch(&file, DEBOUNCE).unwrap();

        // Spaced well under the debounce, and each gap lets the watcher read
        // the events so far: without the debounce this would notify 5 times.
        for i in 0..5 {
            std::fs::write(&file, format!("a = {i}\n")).unwrap();
            tokio::time::sleep(DEBOUNCE / 10).await;
        }
        next(&mut rx).await;
        quiet(&mut rx).await;

        // A later, separate change notifies again.
        std::fs::write(&file, "a = 9\n").unwrap();
        next(&mut rx).await;
        quiet(&mut rx).await;
    }

    #[tokio::test]
    async fn configmap_symlink_swap_notifies_and_path_reads_new_content() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..2026_a")).unwrap();
        std::fs::write(d.join("..2026_a/drainit.toml"), "old\n").unwrap();
        symlink("..2026_a", d.join("..data")).unwrap();
        symlink("..data/drainit.toml", d.join("drainit.toml")).unwrap();
        let file = d.join("drainit.toml");
        let mut rx = watch(&file, DEBOUNCE).unwrap();

        // The kubelet's atomic writer, step by step.
        std::fs::create_dir(d.join("..2026_b")).unwrap();
        std::fs::write(d.join("..2026_b/drainit.toml"), "new\n").unwrap();
        symlink("..2026_b", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(d.join("..2026_a")).unwrap();

        next(&mut rx).await;
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new\n");
        quiet(&mut rx).await;

        // The watch survives the swap: a second update notifies again.
        std::fs::create_dir(d.join("..2026_c")).unwrap();
        std::fs::write(d.join("..2026_c/drainit.toml"), "newer\n").unwrap();
        symlink("..2026_c", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(d.join("..2026_b")).unwrap();
        next(&mut rx).await;
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "newer\n");
    }

    #[tokio::test]
    async fn unrelated_file_does_not_notify() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("drainit.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        let mut rx = watch(&file, DEBOUNCE).unwrap();

        let other = dir.path().join("other.txt");
        std::fs::write(&other, "x").unwrap();
        std::fs::write(dir.path().join("drainit.toml.bak"), "x").unwrap();
        std::fs::rename(&other, dir.path().join("other2.txt")).unwrap();
        quiet(&mut rx).await;

        // The watcher is alive all along: a change to the file itself does
        // notify, so the silence above is not a dead watch.
        std::fs::write(&file, "a = 2\n").unwrap();
        next(&mut rx).await;
        quiet(&mut rx).await;
    }

    #[tokio::test]
    async fn symlink_into_another_directory_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        let mount = dir.path().join("mount");
        std::fs::create_dir(&etc).unwrap();
        std::fs::create_dir(&mount).unwrap();
        std::fs::write(mount.join("drainit.toml"), "old\n").unwrap();
        symlink("../mount/drainit.toml", etc.join("drainit.toml")).unwrap();
        let mut rx = watch(&etc.join("drainit.toml"), DEBOUNCE).unwrap();

        std::fs::write(mount.join("drainit.toml"), "new\n").unwrap();
        next(&mut rx).await;
        quiet(&mut rx).await;
    }

    #[tokio::test]
    async fn missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = watch(&dir.path().join("nope/drainit.toml"), DEBOUNCE).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn configmap_layout_watches_only_the_mount_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..2026_a")).unwrap();
        std::fs::write(d.join("..2026_a/drainit.toml"), "x").unwrap();
        symlink("..2026_a", d.join("..data")).unwrap();
        symlink("..data/drainit.toml", d.join("drainit.toml")).unwrap();
        let targets = watch_targets(&d.join("drainit.toml"));
        assert_eq!(targets, vec![(d.to_path_buf(), "drainit.toml".into())]);
    }
}

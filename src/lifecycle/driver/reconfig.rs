//! Config reloads in the driver: re-reading the file off the loop's thread
//! and swapping in what may change at run time.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::{budget, Supervisor};
use crate::config::{self, Config};

/// Re-reads the config (file plus command-line overrides) on reload; runs
/// on tokio's blocking pool.
pub type Loader = Box<dyn Fn() -> Result<Config, config::Error> + Send + Sync>;

/// Where the config came from, for reloads.
pub struct Reload {
    pub path: PathBuf,
    pub load: Loader,
}

/// A config re-read after a change, or why it is rejected (the text that
/// follows "keeping the last good config:" in the log).
pub(super) type Reloaded = Result<Config, String>;

/// Re-reads the config (and its `http.token_file`) after every change the
/// watcher reports, and hands the result to the supervisor.
///
/// The reads run on tokio's blocking pool, never on the thread that
/// forwards signals and answers probes: the file is refused unread if it is
/// not a regular file ([`crate::config::files`]), but even a regular file can hang
/// on a stalled network file system, and then only reloads wait. One read
/// at a time; changes reported while it runs make one more read.
pub(super) fn load_on_change(
    mut changes: mpsc::UnboundedReceiver<()>,
    load: Loader,
) -> mpsc::UnboundedReceiver<Reloaded> {
    let load = Arc::new(load);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            while changes.try_recv().is_ok() {}
            let load = Arc::clone(&load);
            let reloaded = tokio::task::spawn_blocking(move || {
                let new = load().map_err(|e| format!("\n{e}"))?;
                new.http
                    .resolve_token()
                    .map_err(|e| format!(" http.token_file: {e}"))?;
                Ok(new)
            })
            .await
            .unwrap_or_else(|e| Err(format!(" the read failed: {e}")));
            if tx.send(reloaded).is_err() {
                break;
            }
        }
    });
    rx
}

pub(super) async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> T {
    match rx {
        Some(r) => match r.recv().await {
            Some(v) => v,
            None => {
                *rx = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

impl Supervisor {
    /// Swaps in what can change at run time from a config re-read after the
    /// watcher saw a change ([`load_on_change`]), or logs why it was
    /// rejected.
    pub(super) fn on_reload(&mut self, reloaded: Reloaded) {
        let new = match reloaded {
            Ok(new) => new,
            Err(e) => {
                error!("config reload rejected; keeping the last good config:{e}");
                self.metrics.reload(false);
                return;
            }
        };
        if new == *self.config {
            debug!("config unchanged");
            return;
        }
        let mut new = new;
        if new.app != self.config.app {
            warn!("app settings changed (command, user, workdir, env, restart): they apply after a container restart");
            new.app = self.config.app.clone();
        }
        if new.http.listen != self.config.http.listen {
            warn!(old = %self.config.http.listen, new = %new.http.listen, "http.listen changed: it applies after a container restart");
            new.http.listen = self.config.http.listen.clone();
        }
        self.machine.set_budget(budget(&new));
        self.record_path = None;
        let new = Arc::new(new);
        self.config = new.clone();
        self.config_tx.send_replace(new);
        self.sync_rules();
        self.metrics.reload(true);
        info!("config reloaded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    /// A config read that hangs (a stalled network file system) holds up
    /// only reloads: the runtime's thread, which forwards signals and
    /// answers probes, goes on (here: its timer fires). Changes reported
    /// while the read hangs make one more read, not one each.
    #[tokio::test]
    async fn a_hung_config_read_holds_up_only_reloads() {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Mutex::new(released);
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&reads);
        let load: Loader = Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = released.lock().unwrap().recv();
            Ok(Config::default())
        });
        let (changes, changed) = mpsc::unbounded_channel();
        let mut reloaded = load_on_change(changed, load);
        changes.send(()).unwrap();
        let stuck = tokio::time::timeout(Duration::from_millis(200), reloaded.recv()).await;
        assert!(stuck.is_err(), "no outcome while the read hangs");
        for _ in 0..3 {
            changes.send(()).unwrap();
        }
        drop(changes);
        release.send(()).unwrap();
        release.send(()).unwrap();
        let safety = Duration::from_secs(10);
        for _ in 0..2 {
            let got = tokio::time::timeout(safety, reloaded.recv()).await.unwrap();
            assert!(matches!(got, Some(Ok(_))), "{got:?}");
        }
        let end = tokio::time::timeout(safety, reloaded.recv()).await.unwrap();
        assert!(end.is_none());
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }
}

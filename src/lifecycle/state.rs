//! What the driver shares with the HTTP server: a published status,
//! the live config, counters, and the one channel into the shutdown machine.
//!
//! The driver is the only writer of [`Status`] (through the
//! `watch::Sender` it keeps; [`Shared`] holds only the receiver); the
//! server only reads it and sends [`Request`]s.
//! Nothing here decides anything: the shutdown rules live in `shutdown`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::lifecycle::steps::StepReport;

/// A request from the HTTP server to the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `GET /prestop`: start the shutdown (joins a running one).
    Prestop,
    /// `POST /drain`: start the drain only.
    Drain,
}

/// The lifecycle state shown by `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    Running,
    Draining,
    Stopping,
    Exited,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Starting,
        Phase::Running,
        Phase::Draining,
        Phase::Stopping,
        Phase::Exited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Draining => "draining",
            Phase::Stopping => "stopping",
            Phase::Exited => "exited",
        }
    }
}

/// Progress of one list of steps (`poststart`, `drain`, `on_exit`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ListState {
    NotStarted,
    Running { steps: Vec<StepReport> },
    Done { ok: bool, steps: Vec<StepReport> },
}

impl ListState {
    pub fn is_done(&self) -> bool {
        matches!(self, ListState::Done { .. })
    }

    /// Whether the list finished and every step succeeded.
    pub fn succeeded(&self) -> bool {
        matches!(self, ListState::Done { ok: true, .. })
    }

    pub fn steps(&self) -> &[StepReport] {
        match self {
            ListState::NotStarted => &[],
            ListState::Running { steps } | ListState::Done { steps, .. } => steps,
        }
    }

    /// One line per step: name, outcome, duration — the body of `/prestop`
    /// and `/poststart`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for s in self.steps() {
            out.push_str(&s.summary_line());
            out.push('\n');
        }
        if out.is_empty() {
            out.push_str("no steps\n");
        }
        out
    }
}

/// A snapshot of everything the server shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub state: Phase,
    pub app_pid: Option<i32>,
    /// Whether the app process is alive (for `/healthz`).
    pub app_alive: bool,
    pub restarts: u32,
    /// Whether any shutdown start happened (readiness is off from then on).
    pub shutdown_started: bool,
    /// The cause of the stop (SPEC section 5): what started the shutdown,
    /// or `app_exit` once the app ended on its own.
    pub shutdown_cause: Option<crate::config::Cause>,
    pub poststart: ListState,
    pub drain: ListState,
    pub on_exit: ListState,
    /// The app's exit, once it exited for good (`"exited with code 0"`).
    pub exit: Option<String>,
    #[serde(skip)]
    pub started_at: Instant,
}

impl Status {
    pub fn new() -> Status {
        Status {
            state: Phase::Starting,
            app_pid: None,
            app_alive: false,
            restarts: 0,
            shutdown_started: false,
            shutdown_cause: None,
            poststart: ListState::NotStarted,
            drain: ListState::NotStarted,
            on_exit: ListState::NotStarted,
            exit: None,
            started_at: Instant::now(),
        }
    }

    /// Ready: poststart succeeded and no shutdown has started. (The
    /// `readiness.check` is applied on top by the server.)
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.shutdown_started {
            Err("shutting down")
        } else if !self.app_alive {
            Err("app not running")
        } else if !self.poststart.is_done() {
            Err("poststart steps running")
        } else if !self.poststart.succeeded() {
            Err("poststart failed")
        } else {
            Ok(())
        }
    }
}

impl Default for Status {
    fn default() -> Self {
        Status::new()
    }
}

/// Counters for `/metrics`: one relaxed atomic add each, no lock, no
/// allocation.
#[derive(Debug)]
pub struct Metrics {
    /// Forwarded and reaped, counted by the core.
    pub core: Arc<crate::init::core::Counts>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Whether drainit's last `/healthz` answer was not 200: a shutdown
    /// that starts then has the cause `liveness` (SPEC section 5).
    pub healthz_failing: AtomicBool,
    /// `[[keepalive]]` runs by step index: (name, successes, failures).
    pub keepalive: std::sync::Mutex<Vec<(String, u64, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            core: Arc::default(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            healthz_failing: AtomicBool::new(false),
            keepalive: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl Metrics {
    /// Counts one signal forwarded to the app (the core counts its own in
    /// [`crate::init::core::Counts`], shared here).
    pub fn signal_forwarded(&self, sig: crate::config::Signal) {
        self.core.signal_forwarded(sig);
    }

    /// Forwarded signals by name (`TERM`, `USR1`, ...), those seen at least once.
    pub fn signals_forwarded(&self) -> BTreeMap<String, u64> {
        self.core.signals_forwarded()
    }

    /// Counts one `[[keepalive]]` run of step `index` (named `name`).
    pub fn keepalive_run(&self, index: usize, name: &str, ok: bool) {
        let Ok(mut runs) = self.keepalive.lock() else {
            return;
        };
        if runs.len() <= index {
            runs.resize(index + 1, (String::new(), 0, 0));
        }
        let entry = &mut runs[index];
        if entry.0 != name {
            *entry = (name.to_string(), 0, 0);
        }
        if ok {
            entry.1 += 1;
        } else {
            entry.2 += 1;
        }
    }

    /// Counts a reloaded config applied (`ok`) or refused. The driver
    /// calls it once it has loaded and checked the new config; the file
    /// watcher (`lifecycle::reload`) only says that the file changed.
    pub fn reload(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything the server needs, behind one `Arc`.
pub struct Shared {
    pub status: watch::Receiver<Status>,
    pub config: watch::Receiver<Arc<Config>>,
    pub requests: mpsc::UnboundedSender<Request>,
    pub metrics: Arc<Metrics>,
}

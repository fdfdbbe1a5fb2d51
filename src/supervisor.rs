//! The main loop: wait for a signal or a deadline, act, repeat.
//!
//! This module owns the running app: it spawns it, forwards signals to it,
//! feeds trigger signals to the shutdown [`Machine`] and carries out its
//! actions, restarts the app per `app.restart`, and, once the app is gone,
//! cleans up the rest of the process tree before returning the exit code.
//! It is the only caller of [`Reaper::reap`]. It never sleeps on a timer
//! unless a deadline is pending, so an idle drainit makes no wake-ups.

use std::future::poll_fn;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_core::Stream;
use nix::sys::signal::killpg;
use nix::unistd::{getpid, Pid};
use signal_hook_tokio::Signals;
use tracing::{debug, error, info, warn};

use crate::child;
use crate::config::{Config, ForwardTo, Restart};
use crate::exit;
use crate::reaper::{Children, Reaper, Status};
use crate::shutdown::{self, Action, Event, Machine};
use crate::signals::{self, Signal};

/// Process-level options from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `-s`: become a child subreaper (automatic when not PID 1).
    pub subreaper: bool,
    /// `-p`: signal to get when drainit's parent dies.
    pub pdeathsig: Option<Signal>,
}

/// The app while it runs.
#[derive(Debug, Clone, Copy)]
struct Running {
    pid: Pid,
    started: Instant,
}

struct Supervisor {
    config: Config,
    spec: child::Spec,
    reaper: Reaper,
    machine: Machine,
    is_pid1: bool,
    app: Option<Running>,
    /// The app's process group, kept after it exits for cleanup.
    app_pgid: Option<Pid>,
    last_status: Option<Status>,
    restart_at: Option<Instant>,
    next_backoff: Duration,
    restarts: u32,
}

/// Runs drainit: installs signal handling, spawns the app, supervises it,
/// and returns the exit code to exit with.
pub async fn run(config: Config, options: Options) -> i32 {
    let is_pid1 = getpid().as_raw() == 1;
    if let Err(e) = become_init(is_pid1, options) {
        error!("cannot set up process attributes: {e}");
        return exit::INTERNAL;
    }
    // Handlers go in before the app exists, so no signal sent to drainit
    // after it has a child can be lost.
    let mut signals = match Signals::new(signals::caught()) {
        Ok(signals) => signals,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return exit::INTERNAL;
        }
    };

    let ids = match config
        .app
        .user
        .as_deref()
        .map(|u| crate::user::resolve(u, std::path::Path::new("/")))
    {
        Some(Ok(ids)) => Some(ids),
        Some(Err(e)) => {
            error!("app.user: {e}");
            return exit::USAGE;
        }
        None => None,
    };
    let spec = child::Spec {
        argv: config.app.command.clone(),
        env: config.app.env.clone(),
        workdir: config.app.workdir.clone(),
        ids,
        foreground: child::stdin_is_tty(),
    };
    let budget = budget(&config);
    let mut sup = Supervisor {
        next_backoff: config.app.restart_backoff.initial.0,
        config,
        spec,
        reaper: Reaper::default(),
        machine: Machine::new(budget),
        is_pid1,
        app: None,
        app_pgid: None,
        last_status: None,
        restart_at: None,
        restarts: 0,
    };
    if let Err(e) = sup.spawn() {
        error!("{e}");
        return e.exit_code();
    }
    sup.supervise(&mut signals).await;
    sup.clean_up_orphans(&mut signals).await;
    let code = sup.exit_code();
    info!(code, "exiting");
    code
}

fn budget(config: &Config) -> shutdown::Budget {
    shutdown::Budget {
        grace_period: config.shutdown.grace_period.0,
        stop_timeout: config.shutdown.stop_timeout.0,
        kill_margin: config.shutdown.kill_margin.0,
        prestop_stops_app: config.shutdown.prestop_stops_app,
    }
}

/// Subreaper, parent-death signal, and SIG_IGN for SIGTTIN/SIGTTOU.
fn become_init(is_pid1: bool, options: Options) -> nix::Result<()> {
    if !is_pid1 || options.subreaper {
        // As PID 1 every orphan comes to us anyway; otherwise ask for them.
        nix::sys::prctl::set_child_subreaper(true)?;
    }
    if let (Some(sig), false) = (options.pdeathsig, is_pid1) {
        // SAFETY: prctl with an integer argument; no memory is passed.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig.number() as libc::c_ulong) } != 0 {
            return Err(nix::errno::Errno::last());
        }
    }
    for sig in [libc::SIGTTIN, libc::SIGTTOU] {
        // SAFETY: installing SIG_IGN has no handler code to be unsafe in.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    Ok(())
}

/// Waits for the next signal number; `None` if the stream closed.
async fn next_signal(signals: &mut Signals) -> Option<i32> {
    poll_fn(|cx| Pin::new(&mut *signals).poll_next(cx)).await
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Supervisor {
    fn spawn(&mut self) -> Result<(), child::Error> {
        let pid = child::spawn(&self.spec)?;
        info!(pid = pid.as_raw(), command = ?self.spec.argv, "app started");
        self.app = Some(Running {
            pid,
            started: Instant::now(),
        });
        self.app_pgid = Some(pid);
        Ok(())
    }

    /// The loop of the app's life: returns when the app has exited for good.
    async fn supervise(&mut self, signals: &mut Signals) {
        while self.app.is_some() || self.restart_at.is_some() {
            let deadline = match (self.machine.deadline(), self.restart_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                sig = next_signal(signals) => match sig {
                    Some(sig) => self.on_signal(sig),
                    None => {
                        error!("signal stream closed; cannot supervise any longer");
                        self.execute(vec![Action::Kill]);
                        return;
                    }
                },
                () = sleep_until(deadline) => self.on_deadline(),
            }
        }
    }

    fn on_signal(&mut self, n: i32) {
        if n == libc::SIGCHLD {
            self.reap();
            return;
        }
        let Ok(sig) = Signal::from_number(n) else {
            return;
        };
        if self.config.signals.ignore.contains(&sig) {
            debug!(signal = %sig, "ignored");
            return;
        }
        if self.config.shutdown.triggers.contains(&sig) {
            info!(signal = %sig, "trigger signal received");
            if self.app.is_none() {
                // Waiting to restart: nothing to stop, so stop waiting.
                info!("shutdown during restart back-off: not restarting");
                self.restart_at = None;
                return;
            }
            let actions = self.machine.handle(Event::Trigger, Instant::now());
            self.execute(actions);
            return;
        }
        self.forward(signals::rewrite(&self.config.signals.rewrite, sig));
    }

    fn on_deadline(&mut self) {
        let now = Instant::now();
        if self.restart_at.is_some_and(|at| at <= now) {
            self.restart_at = None;
            self.restart();
        }
        if self.machine.deadline().is_some_and(|at| at <= now) {
            let actions = self.machine.on_deadline(now);
            self.execute(actions);
        }
    }

    /// Carries out the machine's actions. With no drain steps configured, a
    /// started drain finishes at once.
    fn execute(&mut self, actions: Vec<Action>) {
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::StartDrain => {
                    info!(
                        cause = self.machine.cause().map(|c| c.as_str()),
                        "shutdown started; readiness is off"
                    );
                    info!("drain done (no drain steps)");
                    queue.extend(self.machine.handle(Event::DrainFinished, Instant::now()));
                }
                Action::CutDrain => info!("drain cut short"),
                Action::Stop => {
                    let sig = self.config.stop_signal();
                    info!(signal = %sig, "stopping the app");
                    self.forward(sig);
                }
                Action::Kill => {
                    if let Some(pgid) = self.app_pgid.filter(|_| self.app.is_some()) {
                        warn!(
                            pgid = pgid.as_raw(),
                            "app did not stop in time: sending SIGKILL to its group"
                        );
                        let _ = killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                    }
                }
            }
        }
    }

    /// Sends `sig` to the app's group or the app alone, per
    /// `signals.forward_to`.
    fn forward(&self, sig: Signal) {
        let Some(app) = self.app else {
            debug!(signal = %sig, "no app running; signal dropped");
            return;
        };
        let target = match self.config.signals.forward_to {
            ForwardTo::Group => -app.pid.as_raw(),
            ForwardTo::Child => app.pid.as_raw(),
        };
        // SAFETY: kill(2) with plain integers; libc is used because nix's
        // Signal cannot name real-time signals.
        let rc = unsafe { libc::kill(target, sig.number()) };
        if rc == 0 {
            debug!(signal = %sig, target, "forwarded");
        } else {
            debug!(signal = %sig, target, error = %nix::errno::Errno::last(), "forwarding failed");
        }
    }

    fn reap(&mut self) -> Children {
        let (done, children) = self.reaper.reap();
        for (pid, status) in done {
            match self.app {
                Some(app) if app.pid == pid => self.on_app_exit(app, status),
                _ => debug!(pid = pid.as_raw(), %status, "reaped"),
            }
        }
        children
    }

    fn on_app_exit(&mut self, app: Running, status: Status) {
        let ran = app.started.elapsed();
        info!(pid = app.pid.as_raw(), %status, ran_ms = ran.as_millis() as u64, "app exited");
        self.app = None;
        self.last_status = Some(status);
        let actions = self.machine.handle(Event::AppExited, Instant::now());
        self.execute(actions);
        let restart = match self.config.app.restart {
            Restart::Never => false,
            Restart::Always => true,
            Restart::OnFailure => !status.success(),
        };
        if !restart || self.machine.started() {
            return;
        }
        let backoff = &self.config.app.restart_backoff;
        if ran >= backoff.reset_after.0 {
            self.next_backoff = backoff.initial.0;
        }
        let delay = self.next_backoff;
        self.next_backoff = (delay * 2).min(backoff.max.0);
        info!(
            delay_ms = delay.as_millis() as u64,
            "restarting the app after back-off"
        );
        // The machine has seen AppExited and would ignore every later event,
        // so a trigger could never stop the next app. No shutdown has
        // started (checked above): a fresh machine loses nothing.
        self.machine = Machine::new(budget(&self.config));
        self.restart_at = Some(Instant::now() + delay);
    }

    fn restart(&mut self) {
        self.restarts += 1;
        if let Err(e) = self.spawn() {
            error!(restarts = self.restarts, "restart failed: {e}");
            self.last_status = Some(Status::Exited(e.exit_code()));
            // Keep trying with back-off: a restart policy that gives up on a
            // transient error would be worse than the crash it supervises.
            let delay = self.next_backoff;
            self.next_backoff = (delay * 2).min(self.config.app.restart_backoff.max.0);
            self.restart_at = Some(Instant::now() + delay);
        }
    }

    /// After the app has exited: SIGTERM everything left (as PID 1,
    /// `kill(-1)`, which reaches processes that left the group with setsid),
    /// wait up to `orphan_grace` while reaping, then SIGKILL the rest.
    async fn clean_up_orphans(&mut self, signals: &mut Signals) {
        if self.reap() == Children::None {
            return;
        }
        info!(
            grace_ms = self.config.shutdown.orphan_grace.0.as_millis() as u64,
            "app gone; terminating remaining processes"
        );
        self.signal_remaining(libc::SIGTERM);
        let deadline = Instant::now() + self.config.shutdown.orphan_grace.0;
        if self.wait_for_no_children(signals, deadline).await {
            return;
        }
        warn!("processes left after orphan_grace: sending SIGKILL");
        self.signal_remaining(libc::SIGKILL);
        // SIGKILL cannot be caught; a process in uninterruptible sleep can
        // still hold us, so the wait is bounded.
        if !self
            .wait_for_no_children(signals, Instant::now() + Duration::from_secs(1))
            .await
        {
            warn!("some processes survived SIGKILL for 1s; exiting anyway");
        }
    }

    fn signal_remaining(&self, sig: i32) {
        if self.is_pid1 {
            // SAFETY: kill(2) with plain integers. As PID 1, -1 means every
            // process in our namespace but ourselves.
            unsafe { libc::kill(-1, sig) };
            return;
        }
        if let Some(pgid) = self.app_pgid {
            // SAFETY: as above.
            unsafe { libc::kill(-pgid.as_raw(), sig) };
        }
        for pid in children_of(getpid()) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// Reaps until no child is left (true) or `deadline` passes (false).
    /// Other signals arriving meanwhile are forwarded to nobody: the app is
    /// gone.
    async fn wait_for_no_children(&mut self, signals: &mut Signals, deadline: Instant) -> bool {
        loop {
            if self.reap() == Children::None {
                return true;
            }
            tokio::select! {
                biased;
                sig = next_signal(signals) => if sig.is_none() { return false },
                () = tokio::time::sleep_until(deadline.into()) => return self.reap() == Children::None,
            }
        }
    }

    fn exit_code(&self) -> i32 {
        let code = self.last_status.map_or(exit::INTERNAL, Status::code);
        self.config.map_exit_code(code)
    }
}

/// Direct children of `parent`, from /proc (used when not PID 1, where
/// `kill(-1)` would reach far more than our own tree).
fn children_of(parent: Pid) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // Field 4 (ppid) follows the ")" that closes the command name.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent.as_raw())
        })
        .collect()
}

//! The app's runs in the driver: spawning it, reaping (the one
//! `waitpid(-1)` owner's passes), restarts with back-off, the orphan sweep
//! and the exit code.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use tracing::{debug, error, info, warn};

use super::{budget, Events, Running, Supervisor};
use crate::config::Restart;
use crate::init::child;
use crate::init::core::{self, Command};
use crate::init::exit;
use crate::init::reaper::{Children, Status};
use crate::init::sweep::Sweep;
use crate::lifecycle::shutdown::{Event, Machine};
use crate::lifecycle::state::ListState;
use crate::lifecycle::steps::ListKind;

impl Supervisor {
    /// The core started the app (at start, or a restart).
    pub(super) fn on_app_started(&mut self, pid: Pid) {
        self.app = Some(Running {
            pid,
            started: Instant::now(),
        });
        self.app_pgid = Some(pid);
        self.start_list(ListKind::Poststart);
    }

    /// One reaping pass of the core: exec steps get their status, the
    /// app's exit is handled, and the sweep goes on.
    pub(super) fn on_reaped(&mut self, done: &[(Pid, Status)], children: Children) {
        self.claims.deliver(done);
        self.children = children;
        for &(pid, status) in done {
            match self.app {
                Some(app) if app.pid == pid => self.on_app_exit(app, status),
                _ => debug!(pid = pid.as_raw(), %status, "reaped"),
            }
        }
        self.advance_sweep(children);
    }

    /// After a reaping pass: ends the sweep when no child is left, starts
    /// it (SIGTERM) when the pass that saw the app exit finds some, and
    /// otherwise, in a tree sweep, signals the dead children's orphans.
    pub(super) fn advance_sweep(&mut self, children: Children) {
        let Some(sweep) = &self.sweep else { return };
        if children == Children::None {
            debug!("no process left");
            self.sweep = None;
        } else if sweep.sig == 0 {
            let grace = self.config.shutdown.orphan_grace.0;
            let grace_ms = grace.as_millis() as u64;
            if self.restart_at.is_some() {
                info!(
                    grace_ms,
                    "terminating what the last run left before restarting"
                );
            } else {
                info!(grace_ms, "app gone; terminating remaining processes");
            }
            self.start_round(libc::SIGTERM, Instant::now() + grace);
        } else if sweep.tree {
            self.signal_newcomers();
        }
    }

    /// A sweep deadline: a rescan, or the end of a round with processes
    /// left: SIGKILL after SIGTERM; a second after the SIGKILL, give up (a
    /// process in uninterruptible sleep must not hold drainit).
    pub(super) fn on_sweep_deadline(&mut self, now: Instant) {
        let Some(sweep) = &self.sweep else { return };
        if sweep.until > now {
            self.signal_newcomers();
        } else if sweep.sig == libc::SIGTERM {
            warn!("processes left after orphan_grace: sending SIGKILL");
            self.start_round(libc::SIGKILL, now + Duration::from_secs(1));
        } else {
            let then = if self.restart_at.is_some() {
                "restarting anyway"
            } else {
                "exiting anyway"
            };
            warn!("some processes survived SIGKILL for 1s; {then}");
            self.sweep = None;
        }
    }

    pub(super) fn start_round(&mut self, sig: i32, until: Instant) {
        let group = self.app_pgid.map(Pid::as_raw);
        if let Some(sweep) = &mut self.sweep {
            sweep.start_round(sig, until, group);
        }
    }

    pub(super) fn signal_newcomers(&mut self) {
        let group = self.app_pgid.map(Pid::as_raw);
        if let Some(sweep) = &mut self.sweep {
            sweep.signal_newcomers(group);
        }
    }

    pub(super) fn on_app_exit(&mut self, app: Running, status: Status) {
        let ran = app.started.elapsed();
        info!(pid = app.pid.as_raw(), %status, ran_ms = ran.as_millis() as u64, "app exited");
        self.app = None;
        self.stop_keepalive();
        self.last_status = Some(status);
        if let Some(cut) = self.poststart_cut.take() {
            let _ = cut.send(());
        }
        let restart = match self.config.app.restart {
            Restart::Never => false,
            Restart::Always => true,
            Restart::OnFailure => !status.success(),
        };
        if restart && !self.machine.started() && !self.poststart_failed {
            let delay = self
                .backoff
                .next(&self.config.app.restart_backoff, Some(ran));
            info!(
                delay_ms = delay.as_millis() as u64,
                "restarting the app after back-off"
            );
            // The machine has seen AppExited and would ignore every later
            // event, so a trigger could never stop the next app. No shutdown
            // has started (checked above): a fresh machine loses nothing.
            self.machine = Machine::new(budget(&self.config));
            // Set before anything publishes: an app gone with no restart
            // pending reads as `exited`, and `exited` is final.
            self.restart_at = Some(Instant::now() + delay);
            // The reaping pass this exit came from decides, when it ends,
            // whether anything is left to clean up (`advance_sweep`).
            self.sweep = Some(Sweep::pending(true));
            // A crash during poststart cut it: no stop is in progress, so
            // no record stands (SPEC 8; the crash is the logs' to tell).
            self.clear_record();
        } else {
            self.status.exit = Some(status.to_string());
            let actions = self.machine.handle(Event::AppExited, Instant::now());
            self.execute(actions);
        }
        self.publish();
    }

    /// Whether the main loop goes on: the app runs or is being restarted,
    /// a restart is pending, or the drain of a cancelled restart still runs.
    pub(super) fn supervising(&self) -> bool {
        self.app.is_some()
            || self.spawning
            || self.restart_at.is_some()
            || (self.restart_cancelled && self.machine.draining())
    }

    /// A shutdown start during a back-off wait: the restart is off, but the
    /// shutdown goes on (the machine is fresh, so it runs the drain, which
    /// must undo what the last poststart registered); once the drain is
    /// done drainit exits with the last run's code.
    pub(super) fn cancel_restart(&mut self) {
        if self.app.is_some() || self.restart_at.take().is_none() {
            return;
        }
        info!("shutdown during restart back-off: not restarting; the drain still runs");
        self.restart_cancelled = true;
        // The sweep would hit the drain's exec steps; the exit's cleanup
        // takes the leftovers instead.
        self.sweep = None;
        self.status.exit = self.last_status.map(|s| s.to_string());
    }

    pub(super) fn restart(&mut self) {
        self.status.restarts += 1;
        self.status.poststart = ListState::NotStarted;
        // The 503s `/healthz` answered during the back-off were about the
        // crashed run: the new one has not failed a probe (SPEC 5's
        // `liveness` cause is about the app that runs).
        self.metrics.healthz_failing.store(false, Ordering::Relaxed);
        self.spawning = true;
        self.core.send(Command::Spawn(Box::new(self.spec.clone())));
        self.publish();
    }

    /// The core could not start the app again.
    pub(super) fn on_spawn_failed(&mut self, e: &child::Error) {
        error!(restarts = self.status.restarts, "restart failed: {e}");
        self.last_status = Some(Status::Exited(e.exit_code()));
        // Keep trying with back-off: a restart policy that gives up on a
        // transient error would be worse than the crash it supervises.
        let delay = self.backoff.next(&self.config.app.restart_backoff, None);
        self.restart_at = Some(Instant::now() + delay);
        self.publish();
    }

    /// After the app has exited for good: the [`Sweep`] (SIGTERM to
    /// everything left, SIGKILL after `orphan_grace`), reaping meanwhile.
    /// Other signals arriving meanwhile go to nobody: the app is gone.
    pub(super) async fn clean_up_orphans(&mut self, events: &mut Events) {
        self.sweep = Some(Sweep::pending(!self.is_pid1));
        // The last pass's word stands: every exit since has a pass coming.
        self.advance_sweep(self.children);
        while let Some(wake) = self.sweep.as_ref().and_then(Sweep::wake) {
            tokio::select! {
                biased;
                event = events.next() => match event {
                    core::Event::SignalsFailed(_) => return,
                    event => self.on_core_after(event),
                },
                () = tokio::time::sleep_until(wake.into()) => self.on_sweep_deadline(Instant::now()),
            }
        }
    }

    pub(super) fn exit_code(&self) -> i32 {
        exit::of_app(
            self.last_status,
            |code| self.config.map_exit_code(code),
            self.poststart_failed,
        )
    }
}

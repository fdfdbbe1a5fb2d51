//! The termination record in the driver: the flight record rewritten as a
//! stop goes (SPEC section 8) and the final record at exit.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use tracing::{debug, info, warn};

use super::Supervisor;
use crate::config;
use crate::lifecycle::state::ListState;
use crate::lifecycle::steps;
use crate::lifecycle::termination;

/// The wall-clock time of a monotonic instant, for records read after
/// drainit is gone.
pub(super) fn wall(at: Instant) -> SystemTime {
    let (now, wall_now) = (Instant::now(), SystemTime::now());
    if at >= now {
        wall_now + (at - now)
    } else {
        wall_now - (now - at)
    }
}

impl Supervisor {
    /// Whether the app crashed outside a shutdown and `on_crash = "logs"`
    /// leaves the file empty for the kubelet's FallbackToLogsOnError. An
    /// exit that `exit_code_map` turns into 0 is no crash to the kubelet.
    pub(super) fn crash_left_to_logs(&self) -> bool {
        self.config.termination_message.on_crash == config::OnCrash::Logs
            && self.machine.cause().is_none()
            && self.last_status.is_some_and(|s| !s.success())
            && self.exit_code() != 0
    }

    /// The termination file's path, looked up once.
    pub(super) fn record_path(&mut self) -> Option<PathBuf> {
        let configured = self.config.termination_message.path.as_deref();
        self.record_path
            .get_or_insert_with(|| termination::path(configured))
            .clone()
    }

    /// What part of a stop is in progress, for the flight record; `None`
    /// while the app simply runs.
    pub(super) fn stage(&self) -> Option<termination::Stage> {
        use termination::Stage;
        let running = |l: &ListState| matches!(l, ListState::Running { .. });
        if running(&self.status.on_exit) {
            Some(Stage::OnExit)
        } else if self.app.is_some() && self.machine.stop_sent() {
            Some(Stage::Stop)
        } else if running(&self.status.drain) {
            Some(Stage::Drain)
        } else if self.app.is_some() && self.machine.started() && self.machine.drain_done() {
            Some(Stage::Drained)
        } else if self.app.is_some()
            && running(&self.status.poststart)
            && !self.config.poststart.is_empty()
        {
            Some(Stage::Poststart)
        } else {
            None
        }
    }

    /// Rewrites the termination file with the record as it stands (SPEC
    /// section 8), so that a SIGKILL to drainit leaves it saying where the
    /// stop was. Called at each step start and end and phase change, never
    /// on a timer; a no-op without a termination file.
    pub(super) fn flight_record(&mut self) {
        use termination::Stage;
        let Some(stage) = self.stage() else { return };
        if stage == Stage::OnExit && self.crash_left_to_logs() {
            return;
        }
        // An empty drain ends at once and the stop follows: its record
        // would only delay the stop signal. The stop's own record is
        // written after the signal has gone out.
        if stage == Stage::Drain && self.config.drain.is_empty() {
            return;
        }
        let Some(path) = self.record_path() else {
            return;
        };
        let (kind, list, steps) = match stage {
            Stage::Poststart => (0, &self.status.poststart, &self.config.poststart),
            Stage::Drain => (1, &self.status.drain, &self.config.drain),
            Stage::OnExit => (2, &self.status.on_exit, &self.config.on_exit),
            Stage::Drained | Stage::Stop => (1, &ListState::NotStarted, &Vec::new()),
        };
        let done = list.steps().len();
        let names: Vec<String> = steps.iter().map(steps::Step::display_name).collect();
        let step = match (names.get(done), self.step_clock[kind]) {
            (Some(name), Some(started)) => Some(termination::RunningStep {
                index: done + 1,
                total: names.len(),
                name,
                started,
            }),
            _ => None,
        };
        let budget_ends = match stage {
            Stage::Drain => self.machine.drain_budget_end(),
            Stage::OnExit => self.on_exit_end,
            _ => None,
        };
        let kill_due = self
            .machine
            .kill_deadline()
            .filter(|_| self.app.is_some() && !self.machine.kill_sent());
        let trigger = self.first_trigger.map(|s| s.to_string());
        let stop = self.stop_sent_at.map(|(sig, at)| (sig.to_string(), at));
        let text = termination::render_in_progress(&termination::InProgress {
            stage,
            step,
            cause: self.stop_cause(),
            trigger_signal: trigger.as_deref(),
            budget_ends: budget_ends.map(wall),
            stop_sent: stop.as_ref().map(|(sig, at)| (sig.as_str(), *at)),
            kill_due: kill_due.map(wall),
            killed: self.machine.kill_sent(),
            exit: if self.app.is_none() {
                self.last_status
            } else {
                None
            },
            written: SystemTime::now(),
            poststart: self.status.poststart.steps(),
            drain: self.status.drain.steps(),
            on_exit: self.status.on_exit.steps(),
        });
        if let Err(e) = self.recorder.write(&path, &text) {
            if self.record_warned {
                debug!(path = %path.display(), "cannot write the termination message: {e}");
            } else {
                self.record_warned = true;
                warn!(path = %path.display(), "cannot write the termination message: {e}");
            }
        }
    }

    /// Empties the termination file again once the app simply runs.
    pub(super) fn clear_record(&mut self) {
        let Some(path) = self.record_path() else {
            return;
        };
        if let Err(e) = self.recorder.clear(&path) {
            warn!(path = %path.display(), "cannot empty the termination message: {e}");
        }
    }

    pub(super) fn write_termination_record(&mut self) {
        let Some(path) = self.record_path() else {
            return;
        };
        let Some(exit) = self.last_status else { return };
        if self.crash_left_to_logs() {
            info!("the app crashed: termination message left empty for the kubelet's log fallback (termination_message.on_crash = \"logs\")");
            self.clear_record();
            return;
        }
        let trigger = self.first_trigger.map(|s| s.to_string());
        let cause = self.stop_cause();
        let record = termination::Record {
            exit,
            exit_code: self.exit_code(),
            oom_killed: self.oom.fired(),
            cause,
            trigger_signal: trigger.as_deref(),
            killed: self.machine.kill_sent(),
            restart_cancelled: self.restart_cancelled,
            poststart: self.status.poststart.steps(),
            drain: self.status.drain.steps(),
            on_exit: self.status.on_exit.steps(),
        };
        let text = termination::render(&record);
        if let Err(e) = self.recorder.write(&path, &text) {
            warn!(path = %path.display(), "cannot write the termination message: {e}");
        }
    }
}

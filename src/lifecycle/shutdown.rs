//! The shutdown sequence of SPEC section 5, as one state machine.
//!
//! Every start of a shutdown — `GET /prestop`, a trigger signal, `POST
//! /drain` — is an [`Event`] fed to the one [`Machine`], which answers with
//! the [`Action`]s to take and the next deadline to wake it at. It runs at
//! most once; later starts join it. It is pure: it reads no clock and sends
//! no signal, so its rules are unit-tested here without waiting, and the
//! driver only executes what it says.
//!
//! Read top to bottom, it is the spec:
//! 1. readiness flips at the first start ([`Machine::started`]); `t0`, the
//!    kubelet's grace clock, starts at the first `/prestop` or trigger;
//! 2. the drain runs, cut off at `t0 + grace_period - stop_timeout`;
//! 3. the stop signal goes out when the drain is done *and* a trigger has
//!    arrived (or `/prestop` with `prestop_stops_app`); a trigger while
//!    `/prestop` waits on the drain cuts it and stops now (the kubelet gave
//!    up on the hook), while after `POST /drain` it starts the clock;
//! 4. SIGKILL at `t0 + grace_period - kill_margin`, never earlier than
//!    `2s - kill_margin` after the first trigger; a third trigger kills now.

use std::time::{Duration, Instant};

/// The cause the machine settles on; config owns the enum, since steps'
/// `when` names causes.
pub use crate::config::Cause;

/// What can start or advance the shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A `shutdown.triggers` signal arrived.
    Trigger,
    /// `GET /prestop` was called.
    Prestop,
    /// `POST /drain` was called.
    DrainRequest,
    /// The drain steps finished (or were cut off).
    DrainFinished,
    /// The app exited; nothing more to stop.
    AppExited,
}

/// What the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run the drain steps; report [`Event::DrainFinished`] when done.
    StartDrain,
    /// Cut the running drain short (budget over, or the kubelet gave up).
    CutDrain,
    /// Send the stop signal to the app.
    Stop,
    /// SIGKILL the app's process group.
    Kill,
}

/// The budgets from `[shutdown]`.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub grace_period: Duration,
    pub stop_timeout: Duration,
    pub kill_margin: Duration,
    pub prestop_stops_app: bool,
}

/// The kubelet gives the stop signal at least this long before SIGKILL,
/// even when the preStop hook used up the grace period.
const KUBELET_MIN_STOP: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    NotStarted,
    Running,
    Done,
}

/// The shutdown state machine. See the module docs.
#[derive(Debug)]
pub struct Machine {
    budget: Budget,
    cause: Option<Cause>,
    t0: Option<Instant>,
    first_trigger: Option<Instant>,
    triggers: u32,
    prestop: bool,
    drain: Drain,
    stop_sent: bool,
    kill_sent: bool,
    app_exited: bool,
}

impl Machine {
    pub fn new(budget: Budget) -> Machine {
        Machine {
            budget,
            cause: None,
            t0: None,
            first_trigger: None,
            triggers: 0,
            prestop: false,
            drain: Drain::NotStarted,
            stop_sent: false,
            kill_sent: false,
            app_exited: false,
        }
    }

    /// Replaces the budgets (config reload). Deadlines already passed stay
    /// passed; the next [`Machine::deadline`] uses the new values.
    pub fn set_budget(&mut self, budget: Budget) {
        self.budget = budget;
    }

    /// Whether any shutdown start has happened: readiness is 503 from here.
    pub fn started(&self) -> bool {
        self.cause.is_some()
    }

    pub fn cause(&self) -> Option<Cause> {
        self.cause
    }

    pub fn draining(&self) -> bool {
        self.drain == Drain::Running
    }

    pub fn drain_done(&self) -> bool {
        self.drain == Drain::Done
    }

    pub fn stop_sent(&self) -> bool {
        self.stop_sent
    }

    pub fn kill_sent(&self) -> bool {
        self.kill_sent
    }

    /// The PID-1 core sent the stop signal itself, on a trigger with no
    /// drain step (`init::forward::Rules::direct_stop`): the drain's end
    /// must not send it again; a repeated trigger still repeats it.
    pub fn stopped_by_core(&mut self) {
        self.stop_sent = true;
    }

    /// Feeds an event that starts the shutdown for a known `cause` (a
    /// failed poststart, a liveness failure): the cause is taken only if no
    /// shutdown has started yet, then the event runs as [`Machine::handle`].
    pub fn handle_as(&mut self, event: Event, cause: Cause, now: Instant) -> Vec<Action> {
        if !self.app_exited {
            self.cause.get_or_insert(cause);
        }
        self.handle(event, now)
    }

    /// When the drain's budget ends (`t0 + grace_period - stop_timeout`),
    /// once the clock has started; for exec steps and the record.
    pub fn drain_budget_end(&self) -> Option<Instant> {
        self.t0.map(|t0| self.drain_deadline(t0))
    }

    /// Feeds one event; returns what to do now.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.app_exited {
            return actions;
        }
        match event {
            Event::Trigger => {
                self.triggers += 1;
                self.first_trigger.get_or_insert(now);
                self.t0.get_or_insert(now);
                self.cause.get_or_insert(Cause::Signal);
                if self.triggers >= 3 {
                    self.kill(&mut actions);
                    return actions;
                }
                match self.drain {
                    Drain::NotStarted => {
                        self.drain = Drain::Running;
                        actions.push(Action::StartDrain);
                    }
                    Drain::Running => {
                        // A trigger while `/prestop` waits on the drain means
                        // the kubelet gave up on the hook; a drain started by
                        // a signal is hurried by the second. Either way: cut
                        // it and stop now. A drain started by `POST /drain`
                        // is no hook: the first trigger only starts the
                        // clock, and the drain goes on within its budget.
                        if self.triggers > 1 || self.prestop {
                            actions.push(Action::CutDrain);
                            self.drain = Drain::Done;
                            self.stop(&mut actions, true);
                        }
                    }
                    // Drain over: the trigger is the go-ahead to stop; a
                    // repeated one repeats the stop signal.
                    Drain::Done => self.stop(&mut actions, true),
                }
            }
            Event::Prestop => {
                self.prestop = true;
                self.t0.get_or_insert(now);
                self.cause.get_or_insert(Cause::Prestop);
                match self.drain {
                    Drain::NotStarted => {
                        self.drain = Drain::Running;
                        actions.push(Action::StartDrain);
                    }
                    Drain::Running => {}
                    Drain::Done => {
                        if self.budget.prestop_stops_app {
                            self.stop(&mut actions, false);
                        }
                    }
                }
            }
            Event::DrainRequest => {
                self.cause.get_or_insert(Cause::DrainRequest);
                if self.drain == Drain::NotStarted {
                    self.drain = Drain::Running;
                    actions.push(Action::StartDrain);
                }
            }
            Event::DrainFinished => {
                if self.drain == Drain::Running {
                    self.drain = Drain::Done;
                }
                if self.triggers > 0 || (self.prestop && self.budget.prestop_stops_app) {
                    self.stop(&mut actions, false);
                }
            }
            Event::AppExited => {
                self.app_exited = true;
                if self.drain == Drain::Running {
                    actions.push(Action::CutDrain);
                    self.drain = Drain::Done;
                }
            }
        }
        actions
    }

    /// The next moment [`Machine::on_deadline`] must be called, if any.
    pub fn deadline(&self) -> Option<Instant> {
        if self.app_exited {
            return None;
        }
        let drain_budget = match (self.drain, self.t0) {
            (Drain::Running, Some(t0)) => Some(self.drain_deadline(t0)),
            _ => None,
        };
        let kill = if self.kill_sent {
            None
        } else {
            self.kill_deadline()
        };
        match (drain_budget, kill) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Called when [`Machine::deadline`] has passed.
    pub fn on_deadline(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.app_exited {
            return actions;
        }
        if let (Drain::Running, Some(t0)) = (self.drain, self.t0) {
            if now >= self.drain_deadline(t0) {
                actions.push(Action::CutDrain);
                self.drain = Drain::Done;
                if self.triggers > 0 || (self.prestop && self.budget.prestop_stops_app) {
                    self.stop(&mut actions, false);
                }
            }
        }
        if let Some(kill_at) = self.kill_deadline() {
            if now >= kill_at {
                self.kill(&mut actions);
            }
        }
        actions
    }

    /// `t0 + grace_period - stop_timeout`.
    fn drain_deadline(&self, t0: Instant) -> Instant {
        t0 + self
            .budget
            .grace_period
            .saturating_sub(self.budget.stop_timeout)
    }

    /// `t0 + grace_period - kill_margin`, not before `first trigger + 2s -
    /// kill_margin`. None until `t0` exists.
    pub fn kill_deadline(&self) -> Option<Instant> {
        let t0 = self.t0?;
        let by_grace = t0
            + self
                .budget
                .grace_period
                .saturating_sub(self.budget.kill_margin);
        Some(match self.first_trigger {
            Some(first) => {
                by_grace.max(first + KUBELET_MIN_STOP.saturating_sub(self.budget.kill_margin))
            }
            None => by_grace,
        })
    }

    fn stop(&mut self, actions: &mut Vec<Action>, repeat: bool) {
        if !self.stop_sent || repeat {
            self.stop_sent = true;
            actions.push(Action::Stop);
        }
    }

    fn kill(&mut self, actions: &mut Vec<Action>) {
        if !self.kill_sent {
            self.kill_sent = true;
            actions.push(Action::Kill);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget {
            grace_period: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            kill_margin: Duration::from_secs(1),
            prestop_stops_app: false,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_stop_sent_by_the_core_is_not_sent_again_unless_repeated() {
        let t = Instant::now();
        let mut m = Machine::new(budget());
        assert_eq!(m.handle(Event::Trigger, t), vec![Action::StartDrain]);
        m.stopped_by_core();
        assert!(m.stop_sent());
        assert_eq!(m.handle(Event::DrainFinished, t), vec![]);
        assert_eq!(m.deadline(), Some(t + secs(29)), "the kill deadline stands");
        assert_eq!(m.handle(Event::Trigger, t + secs(1)), vec![Action::Stop]);
        assert_eq!(m.handle(Event::Trigger, t + secs(2)), vec![Action::Kill]);
    }

    #[test]
    fn signal_drains_then_stops_then_kills_at_the_deadline() {
        let t = Instant::now();
        let mut m = Machine::new(budget());
        assert!(!m.started());
        assert_eq!(m.handle(Event::Trigger, t), vec![Action::StartDrain]);
        assert!(m.started());
        assert_eq!(m.deadline(), Some(t + secs(20)), "drain budget first");
        assert_eq!(
            m.handle(Event::DrainFinished, t + secs(1)),
            vec![Action::Stop]
        );
        assert_eq!(m.deadline(), Some(t + secs(29)), "kill deadline next");
        assert_eq!(m.on_deadline(t + secs(29)), vec![Action::Kill]);
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn prestop_drains_but_waits_for_the_trigger_to_stop() {
        let t = Instant::now();
        let mut m = Machine::new(budget());
        assert_eq!(m.handle(Event::Prestop, t), vec![Action::StartDrain]);
        assert_eq!(m.handle(Event::Prestop, t), vec![], "repeated calls join");
        assert_eq!(m.handle(Event::DrainFinished, t + secs(5)), vec![]);
        assert!(!m.stop_sent());
        assert_eq!(m.handle(Event::Trigger, t + secs(5)), vec![Action::Stop]);
        // Kill deadline by grace (t0+29s) beats the 2s floor (t+5+1s).
        assert_eq!(m.kill_deadline(), Some(t + secs(29)));
    }

    #[test]
    fn trigger_during_http_drain_cuts_it_and_stops_now() {
        let t = Instant::now();
        let mut m = Machine::new(budget());
        m.handle(Event::Prestop, t);
        assert_eq!(
            m.handle(Event::Trigger, t + secs(3)),
            vec![Action::CutDrain, Action::Stop]
        );
        assert_eq!(
            m.handle(Event::DrainFinished, t + secs(3)),
            vec![],
            "no second stop"
        );
    }

    #[test]
    fn second_trigger_hurries_third_kills() {
        let t = Instant::now();
        let mut m = Machine::new(budget());
        m.handle(Event::Trigger, t);
        assert_eq!(
            m.handle(Event::Trigger, t + secs(1)),
            vec![Action::CutDrain, Action::Stop]
        );
        assert_eq!(m.handle(Event::Trigger, t + secs(2)), vec![Action::Kill]);
        assert_eq!(m.handle(Event::Trigger, t + secs(3)), vec![], "killed once");
    }

    #[test]
    fn drain_budget_cuts_a_long_step_then_stops() {
        let t = Instant::now();
        let mut m = Machine::new(budget());
        m.handle(Event::Trigger, t);
        assert_eq!(
            m.on_deadline(t + secs(20)),
            vec![Action::CutDrain, Action::Stop]
        );
    }

    #[test]
    fn hook_that_outlasts_the_grace_period_gets_the_two_second_floor() {
        let t = Instant::now();
        let mut m = Machine::new(budget());
        m.handle(Event::Prestop, t);
        // The kubelet abandons the hook at t+30s and sends SIGTERM.
        assert_eq!(
            m.handle(Event::Trigger, t + secs(30)),
            vec![Action::CutDrain, Action::Stop]
        );
        assert_eq!(
            m.kill_deadline(),
            Some(t + secs(31)),
            "2s - kill_margin after the trigger"
        );
    }

    #[test]
    fn drain_request_starts_the_drain_but_no_clock_and_no_stop() {
        let t = Instant::now();
        let mut m = Machine::new(budget());
        assert_eq!(m.handle(Event::DrainRequest, t), vec![Action::StartDrain]);
        assert_eq!(m.deadline(), None, "no t0, no deadline");
        assert_eq!(m.handle(Event::DrainFinished, t + secs(100)), vec![]);
        assert!(m.drain_done() && !m.stop_sent());
        assert_eq!(m.handle(Event::Trigger, t + secs(200)), vec![Action::Stop]);
    }

    #[test]
    fn trigger_after_drain_request_starts_the_clock_and_lets_the_drain_run() {
        let t = Instant::now();
        let mut m = Machine::new(budget());
        m.handle(Event::DrainRequest, t);
        assert_eq!(
            m.handle(Event::Trigger, t + secs(5)),
            vec![],
            "no cut, no stop while the drain runs"
        );
        assert!(m.draining() && !m.stop_sent());
        assert_eq!(m.cause(), Some(Cause::DrainRequest));
        // The trigger is t0: drain budget t0+20s, kill t0+29s.
        assert_eq!(m.deadline(), Some(t + secs(25)));
        assert_eq!(m.kill_deadline(), Some(t + secs(34)));
        assert_eq!(
            m.handle(Event::DrainFinished, t + secs(8)),
            vec![Action::Stop],
            "the stop follows the drain"
        );
    }

    #[test]
    fn drain_request_then_trigger_is_cut_by_the_budget_then_stops() {
        let t = Instant::now();
        let mut m = Machine::new(budget());
        m.handle(Event::DrainRequest, t);
        m.handle(Event::Trigger, t + secs(5));
        assert_eq!(m.on_deadline(t + secs(24)), vec![]);
        assert_eq!(
            m.on_deadline(t + secs(25)),
            vec![Action::CutDrain, Action::Stop]
        );
    }

    #[test]
    fn second_trigger_after_drain_request_hurries() {
        let t = Instant::now();
        let mut m = Machine::new(budget());
        m.handle(Event::DrainRequest, t);
        m.handle(Event::Trigger, t + secs(1));
        assert_eq!(
            m.handle(Event::Trigger, t + secs(2)),
            vec![Action::CutDrain, Action::Stop]
        );
    }

    #[test]
    fn trigger_while_prestop_joined_a_requested_drain_means_the_kubelet_gave_up() {
        let t = Instant::now();
        let mut m = Machine::new(budget());
        m.handle(Event::DrainRequest, t);
        assert_eq!(m.handle(Event::Prestop, t + secs(1)), vec![]);
        assert_eq!(
            m.handle(Event::Trigger, t + secs(31)),
            vec![Action::CutDrain, Action::Stop]
        );
    }

    #[test]
    fn prestop_stops_app_when_configured() {
        let t = Instant::now();
        let mut m = Machine::new(Budget {
            prestop_stops_app: true,
            ..budget()
        });
        m.handle(Event::Prestop, t);
        assert_eq!(
            m.handle(Event::DrainFinished, t + secs(1)),
            vec![Action::Stop]
        );
    }

    #[test]
    fn a_known_cause_is_kept_and_the_rules_stay_those_of_the_event() {
        let t = Instant::now();
        let mut m = Machine::new(budget());
        // Liveness through /prestop: a hook, so SIGTERM cuts the drain.
        assert_eq!(
            m.handle_as(Event::Prestop, Cause::Liveness, t),
            vec![Action::StartDrain]
        );
        assert_eq!(m.cause(), Some(Cause::Liveness));
        assert_eq!(m.drain_budget_end(), Some(t + secs(20)));
        assert_eq!(
            m.handle(Event::Trigger, t + secs(1)),
            vec![Action::CutDrain, Action::Stop]
        );
        assert_eq!(m.cause(), Some(Cause::Liveness), "the first cause stays");

        // A failed poststart starts as a trigger does.
        let mut m = Machine::new(budget());
        assert_eq!(
            m.handle_as(Event::Trigger, Cause::PoststartFailure, t),
            vec![Action::StartDrain]
        );
        assert_eq!(
            m.handle(Event::DrainFinished, t + secs(1)),
            vec![Action::Stop]
        );
        assert_eq!(m.cause(), Some(Cause::PoststartFailure));
        // Joining a running shutdown never changes its cause.
        m.handle_as(Event::Prestop, Cause::Liveness, t + secs(2));
        assert_eq!(m.cause(), Some(Cause::PoststartFailure));
        assert_eq!(Cause::DrainRequest.to_string(), "drain_request");
    }

    #[test]
    fn app_exit_ends_everything() {
        let t = Instant::now();
        let mut m = Machine::new(budget());
        m.handle(Event::Trigger, t);
        assert_eq!(m.handle(Event::AppExited, t), vec![Action::CutDrain]);
        assert_eq!(m.deadline(), None);
        assert_eq!(m.handle(Event::Trigger, t), vec![]);
    }
}

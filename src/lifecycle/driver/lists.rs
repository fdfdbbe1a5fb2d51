//! The step lists in the driver: poststart and drain on their own tasks,
//! `[[on_exit]]` after the app, and the `[[keepalive]]` steps while the app
//! is ready (SPEC 6).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::{Events, Supervisor};
use crate::init::core;
use crate::lifecycle::shutdown::{Cause, Event};
use crate::lifecycle::state::{ListState, Metrics};
use crate::lifecycle::steps::{self, ListKind, ListResult, StepReport};

/// Results of step lists run on their own tasks.
pub(super) enum StepEvent {
    Progress(ListKind, Vec<StepReport>),
    Done(ListKind, ListResult),
}

/// Index of a list in per-list arrays.
pub(super) fn kind_index(kind: ListKind) -> usize {
    match kind {
        ListKind::Poststart => 0,
        ListKind::Drain => 1,
        ListKind::OnExit => 2,
    }
}

/// Runs one `[[keepalive]]` step every `interval`, the first time at once,
/// until its task is aborted (the shutdown started, the app exited). A
/// failure is logged and counted and never stops the app.
async fn keepalive(index: usize, step: steps::Step, ctx: steps::Context, metrics: Arc<Metrics>) {
    let Some(every) = step.interval else { return };
    let mut ticker = tokio::time::interval(every.0);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let report = steps::run_single(&step, &ctx).await;
        let ok = !report.outcome.is_failure();
        metrics.keepalive_run(index, &report.name, ok);
        if ok {
            debug!(step = %report.name, duration_ms = report.duration_ms, "keepalive step ok");
        } else {
            warn!(step = %report.name, outcome = report.outcome.as_str(), duration_ms = report.duration_ms, detail = %report.detail, "keepalive step failed; the app keeps running");
        }
    }
}

impl Supervisor {
    /// Starts the `[[keepalive]]` steps, each on its own task (SPEC 6).
    pub(super) fn start_keepalive(&mut self) {
        self.stop_keepalive();
        let ctx = self.step_context();
        for (index, step) in self.config.keepalive.iter().enumerate() {
            let task = keepalive(index, step.clone(), ctx.clone(), self.metrics.clone());
            self.keepalives.push(tokio::spawn(Box::pin(task)));
        }
    }

    /// Stops the keepalive tasks (an exec step's group is killed with its
    /// future).
    pub(super) fn stop_keepalive(&mut self) {
        if self.keepalives.is_empty() {
            return;
        }
        debug!("keepalive steps stopped");
        for task in self.keepalives.drain(..) {
            task.abort();
        }
    }

    /// Starts the poststart or drain list on its own task; its results
    /// come back as [`StepEvent`]s, and it is cut through a oneshot (the
    /// drain by its budget, poststart when the app exits). `on_exit` runs in
    /// [`Supervisor::run_on_exit`] instead.
    pub(super) fn start_list(&mut self, kind: ListKind) {
        let (cut_tx, cut_rx) = oneshot::channel::<()>();
        let steps = match kind {
            ListKind::Poststart => {
                self.poststart_cut = Some(cut_tx);
                self.config.poststart.clone()
            }
            ListKind::Drain => {
                self.drain_cut = Some(cut_tx);
                self.config.drain.clone()
            }
            ListKind::OnExit => return,
        };
        *self.list_mut(kind) = ListState::Running { steps: Vec::new() };
        self.step_clock[kind_index(kind)] = Some(SystemTime::now());
        let mut ctx = self.step_context();
        if kind == ListKind::Drain {
            ctx.cause = self.stop_cause();
            ctx.budget_end = self.drain_budget.clone();
            self.drain_budget
                .set(self.machine.drain_budget_end().map(Into::into));
        }
        let tx = self.step_tx.clone();
        let progress_tx = self.step_tx.clone();
        // Boxed: the list's future is built in place on the heap rather
        // than on this thread's stack (tens of KiB of stack otherwise, kept
        // as resident memory for the life of the thread).
        tokio::spawn(Box::pin(async move {
            let cut = async move {
                // A dropped sender (list no longer cut-able) means "never".
                if cut_rx.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let result = steps::run_list(kind, &steps, &ctx, cut, |reports: &[StepReport]| {
                let _ = progress_tx.send(StepEvent::Progress(kind, reports.to_vec()));
            })
            .await;
            let _ = tx.send(StepEvent::Done(kind, result));
        }));
        self.publish();
        self.flight_record();
    }

    pub(super) fn list_mut(&mut self, kind: ListKind) -> &mut ListState {
        match kind {
            ListKind::Poststart => &mut self.status.poststart,
            ListKind::Drain => &mut self.status.drain,
            ListKind::OnExit => &mut self.status.on_exit,
        }
    }

    pub(super) fn on_step_event(&mut self, event: StepEvent) {
        match event {
            StepEvent::Progress(kind, steps) => {
                let list = self.list_mut(kind);
                if !list.is_done() {
                    *list = ListState::Running { steps };
                    // A step ended; the next one starts now.
                    self.step_clock[kind_index(kind)] = Some(SystemTime::now());
                    self.flight_record();
                }
            }
            StepEvent::Done(kind, result) => {
                self.step_clock[kind_index(kind)] = None;
                *self.list_mut(kind) = ListState::Done {
                    ok: result.ok,
                    steps: result.steps,
                };
                match kind {
                    ListKind::Poststart => {
                        self.poststart_cut = None;
                        self.on_poststart_done(result.ok);
                    }
                    ListKind::Drain => {
                        self.drain_cut = None;
                        info!(ok = result.ok, "drain done");
                        let actions = self.machine.handle(Event::DrainFinished, Instant::now());
                        self.execute(actions);
                    }
                    ListKind::OnExit => {}
                }
            }
        }
        self.publish();
    }

    /// A failed poststart stops the app the way a failed exec hook would:
    /// the drain runs (it undoes what poststart registered), then the stop
    /// signal, then SIGKILL at the deadline.
    pub(super) fn on_poststart_done(&mut self, ok: bool) {
        if ok {
            info!("poststart done; ready");
            if self.app.is_some() && !self.machine.started() {
                self.clear_record();
                self.start_keepalive();
            }
            return;
        }
        if self.app.is_none() || self.machine.started() {
            return;
        }
        error!("poststart failed: stopping the app");
        self.poststart_failed = true;
        let actions =
            self.machine
                .handle_as(Event::Trigger, Cause::PoststartFailure, Instant::now());
        self.execute(actions);
    }

    /// An event from the core once the app is gone: reaping goes on (exec
    /// steps need their statuses); a trigger has nothing left to stop.
    pub(super) fn on_core_after(&mut self, event: core::Event) {
        if let core::Event::Reaped { done, children } = event {
            self.on_reaped(&done, children);
        }
    }

    /// A drain cut when the app exited still owes its report: collect it
    /// (bounded), reaping meanwhile so its exec steps can end.
    pub(super) async fn finish_drain(
        &mut self,
        events: &mut Events,
        step_events: &mut mpsc::UnboundedReceiver<StepEvent>,
    ) {
        if let Some(cut) = self.drain_cut.take() {
            let _ = cut.send(());
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(self.status.drain, ListState::Running { .. })
            || matches!(self.status.poststart, ListState::Running { .. })
        {
            tokio::select! {
                biased;
                event = events.next() => self.on_core_after(event),
                Some(event) = step_events.recv() => self.on_step_event(event),
                () = tokio::time::sleep_until(deadline.into()) => break,
            }
        }
    }

    /// Runs `[[on_exit]]`, bounded by `on_exit_timeout`, reaping meanwhile.
    pub(super) async fn run_on_exit(
        &mut self,
        events: &mut Events,
        step_events: &mut mpsc::UnboundedReceiver<StepEvent>,
    ) {
        if self.config.on_exit.is_empty() {
            return;
        }
        let timeout = self.config.shutdown.on_exit_timeout.0;
        let end = Instant::now() + timeout;
        let mut ctx = self.step_context();
        ctx.cause = self.stop_cause();
        ctx.budget_end = crate::lifecycle::steps::BudgetEnd::new(Some(end.into()));
        let steps = self.config.on_exit.clone();
        let progress_tx = self.step_tx.clone();
        let run = steps::run_list(
            ListKind::OnExit,
            &steps,
            &ctx,
            tokio::time::sleep_until(end.into()),
            |reports: &[StepReport]| {
                let _ = progress_tx.send(StepEvent::Progress(ListKind::OnExit, reports.to_vec()));
            },
        );
        tokio::pin!(run);
        self.status.on_exit = ListState::Running { steps: Vec::new() };
        self.on_exit_end = Some(end);
        self.step_clock[kind_index(ListKind::OnExit)] = Some(SystemTime::now());
        self.publish();
        self.flight_record();
        let result = loop {
            tokio::select! {
                biased;
                event = events.next() => self.on_core_after(event),
                Some(event) = step_events.recv() => self.on_step_event(event),
                result = &mut run => break result,
            }
        };
        info!(ok = result.ok, "on_exit done");
        self.status.on_exit = ListState::Done {
            ok: result.ok,
            steps: result.steps,
        };
        self.publish();
    }
}

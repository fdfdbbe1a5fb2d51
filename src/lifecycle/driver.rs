//! The lifecycle's loop, on the runtime's thread: wait for an event from
//! the PID-1 core, a request, a step result or a deadline; act; repeat.
//!
//! This module runs the app's life around the core ([`crate::init::core`]),
//! which spawned the app, forwards its signals and reaps: it runs the
//! poststart steps, feeds shutdown starts (trigger signals the core hands
//! up, `/prestop`, `POST /drain`) to the one shutdown [`Machine`] and
//! carries out its actions (drain here; stop and kill as commands to the
//! core), restarts the app per `app.restart` (the core spawns it), swaps in
//! reloaded configs (and gives the core its new [`Rules`]), runs the
//! `[[keepalive]]` steps while the app is ready, keeps the termination file
//! holding the record as it stands while a stop is in progress (rewritten
//! at each step and phase, never on a timer), and, once the app is gone,
//! runs `on_exit`, writes the final termination record and cleans up the
//! rest of the process tree before telling the core the exit code. It
//! hands exec steps their statuses from the core's reaping passes
//! ([`Claims`]) and is the only writer of the published [`state::Status`].
//! It sleeps on a timer only while a deadline is pending, so an idle
//! drainit makes no wake-ups.
//!
//! Split by concern: [`app`] (the app's runs, reaping passes, restarts and
//! the sweep), [`lists`] (the step lists and keepalive), [`record`] (the
//! termination record), [`reconfig`] (config reloads) and [`thread`]
//! (what the lifecycle's thread starts from, and the core's events).

mod app;
mod lists;
mod reconfig;
mod record;
mod thread;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::init::backoff::Backoff;
use crate::init::child;
use crate::init::core::{self, Command, Rules};
use crate::init::exit;
use crate::init::mailbox::Mailbox;
use crate::init::reaper::{Children, Status};
use crate::init::sweep::Sweep;
use crate::lifecycle::claims::Claims;
use crate::lifecycle::shutdown::{self, Action, Cause, Event, Machine};
use crate::lifecycle::state::{self, Metrics, Phase, Request, Shared};
use crate::lifecycle::steps::{self, ListKind};
use crate::lifecycle::termination;

use lists::StepEvent;
use reconfig::{load_on_change, recv_opt, Reloaded};
pub use reconfig::{Loader, Reload};
pub use thread::{first_rules, run_thread, Serve, Start, Task};
use thread::{nothing_after_the_app, Events};

/// The app while it runs.
#[derive(Debug, Clone, Copy)]
struct Running {
    pid: Pid,
    started: Instant,
}

struct Supervisor {
    config: Arc<Config>,
    spec: child::Spec,
    /// Commands to the PID-1 core.
    core: Arc<Mailbox<Command>>,
    /// The rules the core has, as last sent.
    rules: Rules,
    /// The core sent the stop signal itself on a trigger.
    core_stopped: bool,
    /// Exec steps' statuses, from the core's reaping passes.
    claims: Claims,
    machine: Machine,
    /// Whether the last reaping pass left any child.
    children: Children,
    is_pid1: bool,
    app: Option<Running>,
    /// A restart's spawn was asked of the core; its answer is pending.
    spawning: bool,
    /// The app's process group, kept after it exits for cleanup.
    app_pgid: Option<Pid>,
    last_status: Option<Status>,
    restart_at: Option<Instant>,
    /// A shutdown started during a back-off wait: no restart, and the
    /// drain runs with no app (SPEC 2).
    restart_cancelled: bool,
    /// The last run's leftovers are being cleaned up; no restart until done.
    sweep: Option<Sweep>,
    /// The delay before the next restart.
    backoff: Backoff,
    status: state::Status,
    status_tx: watch::Sender<state::Status>,
    config_tx: watch::Sender<Arc<Config>>,
    metrics: Arc<Metrics>,
    step_tx: mpsc::UnboundedSender<StepEvent>,
    drain_cut: Option<oneshot::Sender<()>>,
    poststart_cut: Option<oneshot::Sender<()>>,
    poststart_failed: bool,
    first_trigger: Option<crate::config::Signal>,
    oom: termination::OomWatch,
    /// The termination file, rewritten as the stop goes (the flight record).
    recorder: termination::Recorder,
    /// The termination file's path, resolved once (reset on reload).
    record_path: Option<Option<PathBuf>>,
    /// Wall-clock start of the running step of each list (poststart, drain,
    /// on_exit), for the flight record.
    step_clock: [Option<SystemTime>; 3],
    /// The stop signal and when it went out.
    stop_sent_at: Option<(crate::config::Signal, SystemTime)>,
    /// When `on_exit_timeout` ends, while `[[on_exit]]` runs.
    on_exit_end: Option<Instant>,
    /// The `[[keepalive]]` tasks, while the app is ready.
    keepalives: Vec<tokio::task::JoinHandle<()>>,
    /// Whether a failed rewrite of the termination file was logged as a
    /// warning already (the next ones are logged at debug level).
    record_warned: bool,
    /// When the drain's budget ends, as its exec steps see it: set when
    /// the drain starts, and again when a trigger starts the clock of a
    /// drain started by `POST /drain`.
    drain_budget: crate::lifecycle::steps::BudgetEnd,
}

/// Runs the app's life around the core: serves the lifecycle endpoints,
/// runs the steps, drives the shutdown, and returns the exit code to exit
/// with (the app's).
pub async fn run(start: Start) -> i32 {
    let Start {
        config,
        spec,
        serve,
        reload,
        link,
        is_pid1,
        rules,
        record_path,
    } = start;
    // SAFETY: the eventfd is owned by the mailbox, which the AsyncFd keeps
    // alive through its Arc: it is open for as long as it is registered.
    let events = match unsafe { AsyncFd::register(Arc::clone(&link.events)) } {
        Ok(fd) => fd,
        Err(e) => {
            error!("cannot wait for the core's events: {e}; killing the app");
            link.commands.send(Command::Kill);
            return exit::INTERNAL;
        }
    };
    let mut events = Events {
        fd: events,
        pending: VecDeque::new(),
    };
    let config = Arc::new(config);
    let (status_tx, status_rx) = watch::channel(state::Status::new());
    let (config_tx, config_rx) = watch::channel(config.clone());
    let (request_tx, mut request_rx) = mpsc::unbounded_channel();
    let (step_tx, mut step_rx) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics {
        core: Arc::clone(&link.counts),
        ..Metrics::default()
    });
    let mut sup = Supervisor {
        backoff: Backoff::new(&config.app.restart_backoff),
        machine: Machine::new(budget(&config)),
        rules,
        core_stopped: false,
        config,
        spec,
        core: Arc::clone(&link.commands),
        claims: Claims::default(),
        children: Children::Some,
        is_pid1,
        app: None,
        spawning: false,
        app_pgid: None,
        last_status: None,
        restart_at: None,
        restart_cancelled: false,
        sweep: None,
        status: state::Status::new(),
        status_tx,
        config_tx,
        metrics: metrics.clone(),
        step_tx,
        drain_cut: None,
        poststart_cut: None,
        poststart_failed: false,
        first_trigger: None,
        oom: termination::OomWatch::default(),
        recorder: termination::Recorder::default(),
        record_path: Some(record_path),
        step_clock: [None; 3],
        stop_sent_at: None,
        on_exit_end: None,
        keepalives: Vec::new(),
        record_warned: false,
        drain_budget: crate::lifecycle::steps::BudgetEnd::default(),
    };
    sup.on_app_started(link.app);
    sup.sync_rules();
    // After the spawn: reading the cgroup is not on the app's start path.
    sup.oom = termination::OomWatch::start(std::path::Path::new("/sys/fs/cgroup"));

    let (server_stop_tx, server_stop_rx) = oneshot::channel::<()>();
    let server = serve.map(|serve| {
        let shared = Arc::new(Shared {
            status: status_rx,
            config: config_rx,
            requests: request_tx,
            metrics,
        });
        tokio::spawn(serve(
            shared,
            Box::pin(async move {
                let _ = server_stop_rx.await;
            }),
        ))
    });
    let mut reload_rx = match reload {
        Some(Reload { path, load }) => {
            match crate::lifecycle::reload::watch(&path, Duration::from_millis(250)) {
                Ok(changes) => Some(load_on_change(changes, load)),
                Err(e) => {
                    warn!(path = %path.display(), "cannot watch the config for changes: {e}");
                    None
                }
            }
        }
        None => None,
    };

    sup.supervise(&mut events, &mut request_rx, &mut step_rx, &mut reload_rx)
        .await;
    sup.finish_drain(&mut events, &mut step_rx).await;
    sup.run_on_exit(&mut events, &mut step_rx).await;
    sup.write_termination_record();
    sup.status.state = Phase::Exited;
    sup.publish();
    sup.clean_up_orphans(&mut events).await;
    // Answer the waiting hook calls (they saw `exited`), then stop serving;
    // idle keep-alive connections must not hold the exit.
    let _ = server_stop_tx.send(());
    if let Some(server) = server {
        let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    }
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

impl Supervisor {
    /// Publishes the status for the server; the phase is derived here.
    fn publish(&mut self) {
        if self.status.state != Phase::Exited {
            self.status.state = if !self.supervising() {
                Phase::Exited
            } else if self.machine.stop_sent() {
                Phase::Stopping
            } else if self.machine.started() {
                Phase::Draining
            } else if self.app.is_none() {
                // Waiting to restart: the next run starts over.
                Phase::Starting
            } else if self.status.poststart.succeeded() {
                Phase::Running
            } else {
                Phase::Starting
            };
        }
        self.status.app_alive = self.app.is_some();
        self.status.app_pid = self.app_pgid.map(Pid::as_raw);
        self.status.shutdown_started = self.machine.started();
        self.status.shutdown_cause = self.stop_cause();
        self.status_tx.send_replace(self.status.clone());
    }

    fn step_context(&self) -> steps::Context {
        steps::Context {
            claims: self.claims.clone(),
            app_pid: self.app.map(|a| a.pid),
            forward_to: self.config.signals.forward_to,
            exec_base: child::Spec {
                argv: Vec::new(),
                foreground: false,
                ..self.spec.clone()
            },
            cause: None,
            budget_end: crate::lifecycle::steps::BudgetEnd::default(),
        }
    }

    /// The cause of the stop (SPEC section 5): what started the shutdown,
    /// else `app_exit` once the app has exited for good.
    fn stop_cause(&self) -> Option<Cause> {
        self.machine
            .cause()
            .or_else(|| self.status.exit.is_some().then_some(Cause::AppExit))
    }

    /// Feeds a trigger or `/prestop` to the machine; a shutdown that
    /// starts while the last `/healthz` answer was not 200 has the cause
    /// `liveness` (the kubelet stops a container whose probe failed).
    fn start_or_join(&mut self, event: Event) -> Vec<Action> {
        let now = Instant::now();
        if !self.machine.started() && self.metrics.healthz_failing.load(Ordering::Relaxed) {
            self.machine.handle_as(event, Cause::Liveness, now)
        } else {
            self.machine.handle(event, now)
        }
    }

    /// The loop of the app's life: returns when the app has exited for good.
    async fn supervise(
        &mut self,
        events: &mut Events,
        requests: &mut mpsc::UnboundedReceiver<Request>,
        step_events: &mut mpsc::UnboundedReceiver<StepEvent>,
        reloads: &mut Option<mpsc::UnboundedReceiver<Reloaded>>,
    ) {
        // One timer for the whole loop, re-armed only when the deadline
        // changes: a new timer per turn cost a registration and a wake-up
        // of the runtime (an eventfd write) on every turn while a deadline
        // was pending, e.g. twice on the way from SIGTERM to exit.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        while self.supervising() {
            let deadline = [
                self.machine.deadline(),
                self.restart_at.filter(|_| self.sweep.is_none()),
                self.sweep.as_ref().and_then(Sweep::wake),
            ]
            .into_iter()
            .flatten()
            .min();
            if deadline != armed {
                if let Some(at) = deadline {
                    timer.as_mut().reset(at.into());
                }
                armed = deadline;
            }
            tokio::select! {
                biased;
                event = events.next() => if let Err(e) = self.on_core(event) {
                    error!("cannot read signals any longer: {e}; killing the app");
                    self.execute(vec![Action::Kill]);
                    return;
                },
                Some(event) = step_events.recv() => self.on_step_event(event),
                Some(request) = requests.recv() => self.on_request(request),
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.on_deadline();
                }
                reloaded = recv_opt(reloads) => self.on_reload(reloaded),
            }
        }
    }

    /// One event from the core; `Err`: the signalfd failed.
    fn on_core(&mut self, event: core::Event) -> Result<(), std::io::Error> {
        match event {
            core::Event::Reaped { done, children } => self.on_reaped(&done, children),
            core::Event::AppStarted(pid) => {
                self.spawning = false;
                self.on_app_started(pid);
            }
            core::Event::SpawnFailed(e) => {
                self.spawning = false;
                self.on_spawn_failed(&e);
            }
            core::Event::Trigger { sig, stopped } => {
                info!(signal = %sig, "trigger signal received");
                self.first_trigger.get_or_insert(sig);
                self.cancel_restart();
                let actions = self.start_or_join(Event::Trigger);
                if let Some(stop) = stopped {
                    info!(signal = %stop, "stopping the app (no drain step)");
                    // The core has cleared its direct stop: so does our
                    // copy of its rules, so that they are not sent again
                    // (a wake-up of the core while the app stops).
                    self.rules.direct_stop = None;
                    self.core_stopped = true;
                    self.machine.stopped_by_core();
                    self.stop_sent_at.get_or_insert((stop, SystemTime::now()));
                }
                self.execute(actions);
            }
            core::Event::SignalsFailed(e) => return Err(e),
        }
        Ok(())
    }

    fn on_request(&mut self, request: Request) {
        let event = match request {
            Request::Prestop => Event::Prestop,
            Request::Drain => Event::DrainRequest,
        };
        if !self.machine.started() {
            info!(request = ?request, "shutdown requested over HTTP");
        }
        self.cancel_restart();
        let actions = if event == Event::Prestop {
            self.start_or_join(event)
        } else {
            self.machine.handle(event, Instant::now())
        };
        self.execute(actions);
        // Always publish: the server waits for the status after a request.
        self.publish();
    }

    fn on_deadline(&mut self) {
        let now = Instant::now();
        if self
            .sweep
            .as_ref()
            .and_then(Sweep::wake)
            .is_some_and(|at| at <= now)
        {
            self.on_sweep_deadline(now);
        }
        if self.sweep.is_none() && self.restart_at.is_some_and(|at| at <= now) {
            self.restart_at = None;
            self.restart();
        }
        if self.machine.deadline().is_some_and(|at| at <= now) {
            let actions = self.machine.on_deadline(now);
            self.execute(actions);
        }
    }

    /// Carries out the machine's actions.
    fn execute(&mut self, actions: Vec<Action>) {
        if self.machine.started() {
            // The first moment of a shutdown: the app is no longer ready,
            // and a trigger is the machine's to read.
            self.stop_keepalive();
            self.sync_rules();
        }
        let any = !actions.is_empty();
        for action in actions {
            match action {
                Action::StartDrain => {
                    info!(
                        cause = self.machine.cause().map(Cause::as_str),
                        "shutdown started; readiness is off"
                    );
                    self.start_list(ListKind::Drain);
                }
                Action::CutDrain => {
                    if let Some(cut) = self.drain_cut.take() {
                        info!("drain cut short");
                        let _ = cut.send(());
                    }
                }
                Action::Stop => {
                    let sig = self.config.stop_signal();
                    info!(signal = %sig, "stopping the app");
                    self.core.send(Command::Signal(sig));
                    self.stop_sent_at.get_or_insert((sig, SystemTime::now()));
                }
                Action::Kill => {
                    if let Some(pgid) = self.app.map(|a| a.pid) {
                        warn!(
                            pgid = pgid.as_raw(),
                            "app did not stop in time: sending SIGKILL to its group"
                        );
                        self.core.send(Command::Kill);
                    }
                }
            }
        }
        // A trigger during a drain started by `POST /drain` starts the
        // clock: the drain's later steps get the budget.
        self.drain_budget
            .set(self.machine.drain_budget_end().map(Into::into));
        self.publish();
        if any {
            self.flight_record();
        }
    }

    /// Gives the core the rules for the current config and shutdown
    /// (at start, after a reload, once a shutdown has started: from then
    /// on a trigger is the machine's to read), if they changed.
    fn sync_rules(&mut self) {
        let mut rules = Rules::from_config(&self.config);
        if self.machine.started() {
            rules.direct_stop = None;
        }
        rules.exit_with_app = self.nothing_after_the_app();
        if rules != self.rules {
            self.rules = rules.clone();
            self.core.send(Command::Rules(Box::new(rules)));
        }
    }

    /// Whether nothing is left to do here once the app has exited, so the
    /// core may exit with it: [`nothing_after_the_app`] for the config,
    /// and no shutdown started by a hook call or a failed poststart (their
    /// answers and exit codes are made here).
    fn nothing_after_the_app(&mut self) -> bool {
        let record_path = self.record_path();
        nothing_after_the_app(&self.config, record_path.as_deref())
            && !self.poststart_failed
            && (!self.machine.started() || self.core_stopped)
    }
}

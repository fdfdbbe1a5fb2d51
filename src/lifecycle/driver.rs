//! The main loop: wait for a signal, a request, a step result or a
//! deadline; act; repeat.
//!
//! This module owns the running app: it spawns it, runs its poststart steps,
//! forwards signals to it, feeds shutdown starts (trigger signals, `/prestop`,
//! `POST /drain`) to the one shutdown [`Machine`] and carries out its
//! actions (drain, stop, kill), restarts the app per `app.restart`, swaps in
//! reloaded configs, runs the `[[keepalive]]` steps while the app is ready,
//! keeps the termination file holding the record as it stands while a stop
//! is in progress (rewritten at each step and phase, never on a timer),
//! and, once the app is gone, runs `on_exit`, writes the final
//! termination record and cleans up the rest of the process tree before
//! returning the exit code. It is the only caller of [`Reaper::reap`] and the
//! only writer of the published [`Status`]. It sleeps on a timer only while
//! a deadline is pending, so an idle drainit makes no wake-ups.

//!
//! The PID-1 parts it drives are in [`crate::init`] (forwarding decisions,
//! the back-off, the orphan sweep, exit codes); here is the loop that
//! ties them to the lifecycle, split by concern: [`app`] (the app's runs,
//! reaping, restarts and the sweep), [`lists`] (the step lists and
//! keepalive), [`record`] (the termination record) and [`reconfig`] (config
//! reloads).

mod app;
mod lists;
mod reconfig;
mod record;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::killpg;
use nix::unistd::{getpid, Pid};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::init::backoff::Backoff;
use crate::init::child;
use crate::init::forward::{self, Decision, FastPath};
use crate::init::reaper::{Reaper, Status};
use crate::init::signals::{self, Signal};
use crate::init::sweep::Sweep;
use crate::init::StartError;
use crate::lifecycle::shutdown::{self, Action, Cause, Event, Machine};
use crate::lifecycle::state::{self, Metrics, Phase, Request, Shared};
use crate::lifecycle::steps::{self, ListKind};
use crate::lifecycle::termination;

use lists::StepEvent;
use reconfig::{load_on_change, recv_opt, Reloaded};
pub use reconfig::{Loader, Reload};

/// The app while it runs.
#[derive(Debug, Clone, Copy)]
struct Running {
    pid: Pid,
    started: Instant,
}

struct Supervisor {
    config: Arc<Config>,
    spec: child::Spec,
    reaper: Reaper,
    machine: Machine,
    is_pid1: bool,
    app: Option<Running>,
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
    first_trigger: Option<Signal>,
    oom: termination::OomWatch,
    /// What the signal task forwards without waking the main loop.
    fast: Arc<FastPath>,
    /// The termination file, rewritten as the stop goes (the flight record).
    recorder: termination::Recorder,
    /// The termination file's path, resolved once (reset on reload).
    record_path: Option<Option<PathBuf>>,
    /// Wall-clock start of the running step of each list (poststart, drain,
    /// on_exit), for the flight record.
    step_clock: [Option<SystemTime>; 3],
    /// The stop signal and when it went out.
    stop_sent_at: Option<(Signal, SystemTime)>,
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

/// Reads the signalfd: forwards plain signals itself and hands the rest to
/// the main loop (`None`: the signalfd failed).
async fn pump_signals(
    mut signals: signals::Receiver,
    fast: Arc<FastPath>,
    metrics: Arc<Metrics>,
    tx: mpsc::UnboundedSender<Option<i32>>,
) {
    loop {
        let n = match signals.recv().await {
            Ok(n) => n,
            Err(_) => {
                let _ = tx.send(None);
                return;
            }
        };
        if fast.queued.load(Ordering::Relaxed) == 0 && fast.is_plain(n) {
            if let Ok(sig) = Signal::from_number(n) {
                if forward::send(fast.target.load(Ordering::Relaxed), sig) {
                    metrics.signal_forwarded(sig);
                }
                continue;
            }
        }
        fast.queued.fetch_add(1, Ordering::Relaxed);
        if tx.send(Some(n)).is_err() {
            return;
        }
    }
}

/// The signals the main loop gets from [`pump_signals`].
struct Signals {
    rx: mpsc::UnboundedReceiver<Option<i32>>,
    fast: Arc<FastPath>,
}

impl Signals {
    /// The next signal number; `None` if the signalfd failed.
    async fn next(&mut self) -> Option<i32> {
        let n = self.rx.recv().await??;
        self.fast.queued.fetch_sub(1, Ordering::Relaxed);
        Some(n)
    }
}

/// Runs drainit: installs signal handling, binds the lifecycle server,
/// spawns the app, supervises it, and returns the exit code to exit with
/// (the app's), or why the app could not be started.
pub async fn run(
    config: Config,
    options: crate::init::Options,
    reload: Option<Reload>,
) -> Result<i32, StartError> {
    let is_pid1 = getpid().as_raw() == 1;
    if let Err(e) = crate::init::become_init(is_pid1, options) {
        return Err(StartError::Init(e));
    }
    // Handlers go in before the app exists, so no signal sent to drainit
    // after it has a child can be lost.
    let receiver = match signals::Receiver::new() {
        Ok(signals) => signals,
        Err(e) => return Err(StartError::Signals(e)),
    };
    let ids = match config
        .app
        .user
        .as_deref()
        .map(|u| crate::init::user::resolve(u, std::path::Path::new("/")))
    {
        Some(Ok(ids)) => Some(ids),
        Some(Err(e)) => return Err(StartError::User(e)),
        None => None,
    };
    if let Err(e) = config.http.resolve_token() {
        return Err(StartError::Token(e));
    }
    // The kubelet fires postStart as soon as the container starts: the
    // listener must exist before the app does.
    let listener = match config.http.listen_addr() {
        Some(addr) => match crate::http::server::bind(addr) {
            Ok(listener) => Some(listener),
            Err(e) => return Err(StartError::Listen(addr, e)),
        },
        None => None,
    };

    let config = Arc::new(config);
    let (status_tx, status_rx) = watch::channel(state::Status::new());
    let (config_tx, config_rx) = watch::channel(config.clone());
    let (request_tx, mut request_rx) = mpsc::unbounded_channel();
    let (step_tx, mut step_rx) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::default());
    let reaper = Reaper::default();
    // The directory drainit was started in: the app's (and exec steps')
    // when app.workdir is not set, given explicitly because drainit leaves
    // it below. main made the config's relative paths absolute against it.
    let start_dir = std::env::current_dir()
        .ok()
        .and_then(|dir| dir.into_os_string().into_string().ok());
    let spec = child::Spec {
        argv: config.app.command.clone(),
        env: config.app.env.clone(),
        workdir: config.app.workdir.clone().or_else(|| start_dir.clone()),
        ids,
        foreground: child::stdin_is_tty(),
    };
    let mut sup = Supervisor {
        backoff: Backoff::new(&config.app.restart_backoff),
        machine: Machine::new(budget(&config)),
        config,
        spec,
        reaper: reaper.clone(),
        is_pid1,
        app: None,
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
        fast: Arc::new(FastPath::default()),
        recorder: termination::Recorder::default(),
        record_path: None,
        step_clock: [None; 3],
        stop_sent_at: None,
        on_exit_end: None,
        keepalives: Vec::new(),
        record_warned: false,
        drain_budget: crate::lifecycle::steps::BudgetEnd::default(),
    };
    if let Err(e) = sup.spawn() {
        return Err(StartError::Spawn(e));
    }
    // After the spawn, so signals that came before it go to the app.
    let (signal_tx, signal_rx) = mpsc::unbounded_channel();
    tokio::spawn(pump_signals(
        receiver,
        sup.fast.clone(),
        sup.metrics.clone(),
        signal_tx,
    ));
    let mut signals = Signals {
        rx: signal_rx,
        fast: sup.fast.clone(),
    };
    // After the spawn: reading the cgroup is not on the app's start path.
    sup.oom = termination::OomWatch::start(std::path::Path::new("/sys/fs/cgroup"));

    let (server_stop_tx, server_stop_rx) = oneshot::channel::<()>();
    let server = listener.map(|listener| {
        let shared = Arc::new(Shared {
            status: status_rx,
            config: config_rx,
            requests: request_tx,
            metrics,
            reaper,
        });
        tokio::spawn(crate::http::server::serve(listener, shared, async move {
            let _ = server_stop_rx.await;
        }))
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
    // As dumb-init: once the app runs, PID 1 holds no reference to the
    // directory it was started in (a volume mounted there can be
    // unmounted; /proc/1/cwd shows /). Nothing awaits between the spawn
    // and here, so no signal is forwarded and no request answered before.
    // Unknown start directory: stay, relative paths still need it.
    if start_dir.is_some() {
        if let Err(e) = std::env::set_current_dir("/") {
            warn!("cannot leave the start directory for /: {e}");
        }
    }

    sup.supervise(&mut signals, &mut request_rx, &mut step_rx, &mut reload_rx)
        .await;
    sup.finish_drain(&mut signals, &mut step_rx).await;
    sup.run_on_exit(&mut signals, &mut step_rx).await;
    sup.write_termination_record();
    sup.status.state = Phase::Exited;
    sup.publish();
    sup.clean_up_orphans(&mut signals).await;
    // Answer the waiting hook calls (they saw `exited`), then stop serving;
    // idle keep-alive connections must not hold the exit.
    let _ = server_stop_tx.send(());
    if let Some(server) = server {
        let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    }
    let code = sup.exit_code();
    info!(code, "exiting");
    Ok(code)
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
            reaper: self.reaper.clone(),
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
        signals: &mut Signals,
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
                sig = signals.next() => match sig {
                    Some(sig) => self.on_signal(sig),
                    None => {
                        error!("cannot read signals any longer; killing the app");
                        self.execute(vec![Action::Kill]);
                        return;
                    }
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

    /// One signal from the signalfd, as [`forward::decide`] reads it.
    fn on_signal(&mut self, n: i32) {
        match forward::decide(n, &self.config.signals, &self.config.shutdown.triggers) {
            Decision::Reap => {
                self.reap();
            }
            Decision::Unknown => {}
            Decision::Ignore(sig) => debug!(signal = %sig, "ignored"),
            Decision::Trigger(sig) => {
                info!(signal = %sig, "trigger signal received");
                self.first_trigger.get_or_insert(sig);
                self.cancel_restart();
                let actions = self.start_or_join(Event::Trigger);
                self.execute(actions);
            }
            Decision::Forward(sig) => self.forward(sig),
        }
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
            // The first moment of a shutdown: the app is no longer ready.
            self.stop_keepalive();
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
                    self.forward(sig);
                    self.stop_sent_at.get_or_insert((sig, SystemTime::now()));
                }
                Action::Kill => {
                    if let Some(pgid) = self.app.map(|a| a.pid) {
                        warn!(
                            pgid = pgid.as_raw(),
                            "app did not stop in time: sending SIGKILL to its group"
                        );
                        let _ = killpg(pgid, nix::sys::signal::Signal::SIGKILL);
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

    /// Sends `sig` to the app's group or the app alone, per
    /// `signals.forward_to`.
    fn forward(&self, sig: Signal) {
        if forward::send(self.target(), sig) {
            self.metrics.signal_forwarded(sig);
        }
    }

    /// The `kill(2)` target for the app, 0 if none runs.
    fn target(&self) -> i32 {
        forward::target(self.app.map(|a| a.pid), self.config.signals.forward_to)
    }

    /// Tells the signal task the current target and which signals are
    /// plain; called whenever the app or the config changes.
    fn sync_fast_path(&self) {
        let plain = forward::plain_mask(&self.config.signals, &self.config.shutdown.triggers);
        self.fast.sync(self.target(), plain);
    }
}

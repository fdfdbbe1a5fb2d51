//! The main loop: wait for a signal, a request, a step result or a
//! deadline; act; repeat.
//!
//! This module owns the running app: it spawns it, runs its poststart steps,
//! forwards signals to it, feeds shutdown starts (trigger signals, `/prestop`,
//! `POST /drain`) to the one shutdown [`Machine`] and carries out its
//! actions (drain, stop, kill), restarts the app per `app.restart`, swaps in
//! reloaded configs, and, once the app is gone, runs `on_exit`, writes the
//! termination record and cleans up the rest of the process tree before
//! returning the exit code. It is the only caller of [`Reaper::reap`] and the
//! only writer of the published [`Status`]. It sleeps on a timer only while
//! a deadline is pending, so an idle drainit makes no wake-ups.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::killpg;
use nix::unistd::{getpid, Pid};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::child;
use crate::config::{self, Config, ForwardTo, Restart};
use crate::exit;
use crate::reaper::{Children, Reaper, Status};
use crate::shutdown::{self, Action, Event, Machine};
use crate::signals::{self, Signal};
use crate::state::{self, ListState, Metrics, Phase, Request, Shared};
use crate::steps::{self, ListKind, ListResult, StepReport};
use crate::termination;

/// Process-level options from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `-s`: become a child subreaper (automatic when not PID 1).
    pub subreaper: bool,
    /// `-p`: signal to get when drainit's parent dies.
    pub pdeathsig: Option<Signal>,
}

/// How long the exit waits for the termination record to be written.
const RECORD_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Re-reads the config (file plus command-line overrides) on reload; runs
/// on tokio's blocking pool.
pub type Loader = Box<dyn Fn() -> Result<Config, config::Error> + Send + Sync>;

/// Where the config came from, for reloads.
pub struct Reload {
    pub path: PathBuf,
    pub load: Loader,
}

/// The app while it runs.
#[derive(Debug, Clone, Copy)]
struct Running {
    pid: Pid,
    started: Instant,
}

/// Results of step lists run on their own tasks.
enum StepEvent {
    Progress(ListKind, Vec<StepReport>),
    Done(ListKind, ListResult),
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
    next_backoff: Duration,
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
}

/// The signal fast path, shared by the supervisor (the only writer of
/// `target` and `plain`) and the task that reads the signalfd
/// ([`pump_signals`]). A plain signal — one that is forwarded unchanged:
/// not SIGCHLD, not ignored, not a trigger, not rewritten — is sent by that
/// task at once; everything else goes to the main loop, which decides as
/// before. Both run on the one runtime thread, so the supervisor's updates
/// (spawn, reap, reload) are seen by the next signal the task reads: no
/// signal reaches a pid after the main loop has reaped the app.
#[derive(Default)]
struct FastPath {
    /// The `kill(2)` target: the app's pid (`forward_to = "child"`) or its
    /// negated process group (`"group"`); 0 while no app runs.
    target: AtomicI32,
    /// Bit n-1 set: signal n is plain.
    plain: AtomicU64,
    /// Signals handed to the main loop and not yet handled. While there
    /// are any, later signals take the same way, so they are handled in
    /// the order they were read, as when the main loop read them all.
    queued: AtomicUsize,
}

impl FastPath {
    fn is_plain(&self, n: i32) -> bool {
        (1..=64).contains(&n) && self.plain.load(Ordering::Relaxed) & (1u64 << (n - 1)) != 0
    }
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
                send_to_app(fast.target.load(Ordering::Relaxed), sig, &metrics);
                continue;
            }
        }
        fast.queued.fetch_add(1, Ordering::Relaxed);
        if tx.send(Some(n)).is_err() {
            return;
        }
    }
}

/// Sends `sig` to `target` (see [`FastPath::target`]; 0: no app, dropped).
fn send_to_app(target: i32, sig: Signal, metrics: &Metrics) {
    if target == 0 {
        debug!(signal = %sig, "no app running; signal dropped");
        return;
    }
    // SAFETY: kill(2) with plain integers; libc is used because nix's
    // Signal cannot name real-time signals.
    let rc = unsafe { libc::kill(target, sig.number()) };
    if rc == 0 {
        metrics.signal_forwarded(sig);
        debug!(signal = %sig, target, "forwarded");
    } else {
        debug!(signal = %sig, target, error = %nix::errno::Errno::last(), "forwarding failed");
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
/// spawns the app, supervises it, and returns the exit code to exit with.
pub async fn run(config: Config, options: Options, reload: Option<Reload>) -> i32 {
    let is_pid1 = getpid().as_raw() == 1;
    if let Err(e) = become_init(is_pid1, options) {
        error!("cannot set up process attributes: {e}");
        return exit::INTERNAL;
    }
    // Handlers go in before the app exists, so no signal sent to drainit
    // after it has a child can be lost.
    let receiver = match signals::Receiver::new() {
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
    if let Err(e) = config.http.resolve_token() {
        error!("http.token_file: {e}");
        return exit::USAGE;
    }
    // The kubelet fires postStart as soon as the container starts: the
    // listener must exist before the app does.
    let listener = match config.http.listen_addr() {
        Some(addr) => match crate::server::bind(addr) {
            Ok(listener) => Some(listener),
            Err(e) => {
                error!("http.listen {addr}: cannot listen: {e}");
                return exit::USAGE;
            }
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
    let spec = child::Spec {
        argv: config.app.command.clone(),
        env: config.app.env.clone(),
        workdir: config.app.workdir.clone(),
        ids,
        foreground: child::stdin_is_tty(),
    };
    let mut sup = Supervisor {
        next_backoff: config.app.restart_backoff.initial.0,
        machine: Machine::new(budget(&config)),
        config,
        spec,
        reaper: reaper.clone(),
        is_pid1,
        app: None,
        app_pgid: None,
        last_status: None,
        restart_at: None,
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
    };
    if let Err(e) = sup.spawn() {
        error!("{e}");
        return e.exit_code();
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
            started_wall: SystemTime::now(),
        });
        tokio::spawn(crate::server::serve(listener, shared, async move {
            let _ = server_stop_rx.await;
        }))
    });
    let mut reload_rx = match reload {
        Some(Reload { path, load }) => {
            match crate::reload::watch(&path, Duration::from_millis(250)) {
                Ok(changes) => Some(load_on_change(changes, load)),
                Err(e) => {
                    warn!(path = %path.display(), "cannot watch the config for changes: {e}");
                    None
                }
            }
        }
        None => None,
    };

    sup.supervise(&mut signals, &mut request_rx, &mut step_rx, &mut reload_rx)
        .await;
    sup.finish_drain(&mut signals, &mut step_rx).await;
    sup.run_on_exit(&mut signals, &mut step_rx).await;
    sup.write_termination_record().await;
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

/// Subreaper, parent-death signal, and SIG_IGN for SIGTTIN/SIGTTOU (see
/// [`signals::caught`]: they are also blocked, received and forwarded).
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

/// Receives from an optional channel; pending forever when there is none or
/// it closed (a closed channel must not spin the loop).
/// A config re-read after a change, or why it is rejected (the text that
/// follows "keeping the last good config:" in the log).
type Reloaded = Result<Config, String>;

/// Re-reads the config (and its `http.token_file`) after every change the
/// watcher reports, and hands the result to the supervisor.
///
/// The reads run on tokio's blocking pool, never on the thread that
/// forwards signals and answers probes: the file is refused unread if it is
/// not a regular file ([`crate::files`]), but even a regular file can hang
/// on a stalled network file system, and then only reloads wait. One read
/// at a time; changes reported while it runs make one more read.
fn load_on_change(
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

async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> T {
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
    fn spawn(&mut self) -> Result<(), child::Error> {
        let pid = child::spawn(&self.spec)?;
        info!(pid = pid.as_raw(), command = ?self.spec.argv, "app started");
        self.app = Some(Running {
            pid,
            started: Instant::now(),
        });
        self.app_pgid = Some(pid);
        self.sync_fast_path();
        self.start_list(ListKind::Poststart);
        Ok(())
    }

    /// Publishes the status for the server; the phase is derived here.
    fn publish(&mut self) {
        if self.status.state != Phase::Exited {
            self.status.state = if self.app.is_none() && self.restart_at.is_none() {
                Phase::Exited
            } else if self.machine.stop_sent() {
                Phase::Stopping
            } else if self.machine.started() {
                Phase::Draining
            } else if self.status.poststart.succeeded() {
                Phase::Running
            } else {
                Phase::Starting
            };
        }
        self.status.app_alive = self.app.is_some();
        self.status.app_pid = self.app_pgid.map(Pid::as_raw);
        self.status.shutdown_started = self.machine.started();
        self.status.shutdown_cause = self.machine.cause().map(shutdown::Cause::as_str);
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
        }
    }

    /// Starts the poststart or drain list on its own task; its results
    /// come back as [`StepEvent`]s, and it is cut through a oneshot (the
    /// drain by its budget, poststart when the app exits). `on_exit` runs in
    /// [`Supervisor::run_on_exit`] instead.
    fn start_list(&mut self, kind: ListKind) {
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
        let ctx = self.step_context();
        let tx = self.step_tx.clone();
        let progress_tx = self.step_tx.clone();
        tokio::spawn(async move {
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
        });
        self.publish();
    }

    fn list_mut(&mut self, kind: ListKind) -> &mut ListState {
        match kind {
            ListKind::Poststart => &mut self.status.poststart,
            ListKind::Drain => &mut self.status.drain,
            ListKind::OnExit => &mut self.status.on_exit,
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
        while self.app.is_some() || self.restart_at.is_some() {
            let deadline = match (self.machine.deadline(), self.restart_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
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
            self.first_trigger.get_or_insert(sig);
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

    fn on_request(&mut self, request: Request) {
        let event = match request {
            Request::Prestop => Event::Prestop,
            Request::Drain => Event::DrainRequest,
        };
        if !self.machine.started() {
            info!(request = ?request, "shutdown requested over HTTP");
        }
        if self.app.is_some() {
            let actions = self.machine.handle(event, Instant::now());
            self.execute(actions);
        }
        // Always publish: the server waits for the status after a request.
        self.publish();
    }

    fn on_step_event(&mut self, event: StepEvent) {
        match event {
            StepEvent::Progress(kind, steps) => {
                let list = self.list_mut(kind);
                if !list.is_done() {
                    *list = ListState::Running { steps };
                }
            }
            StepEvent::Done(kind, result) => {
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
    fn on_poststart_done(&mut self, ok: bool) {
        if ok {
            info!("poststart done; ready");
            return;
        }
        if self.app.is_none() || self.machine.started() {
            return;
        }
        error!("poststart failed: stopping the app");
        self.poststart_failed = true;
        let actions = self.machine.handle(Event::Trigger, Instant::now());
        self.execute(actions);
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

    /// Swaps in what can change at run time from a config re-read after the
    /// watcher saw a change ([`load_on_change`]), or logs why it was
    /// rejected.
    fn on_reload(&mut self, reloaded: Reloaded) {
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
        let new = Arc::new(new);
        self.config = new.clone();
        self.config_tx.send_replace(new);
        self.sync_fast_path();
        self.metrics.reload(true);
        info!("config reloaded");
    }

    /// Carries out the machine's actions.
    fn execute(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::StartDrain => {
                    info!(
                        cause = self.machine.cause().map(|c| c.as_str()),
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
        self.publish();
    }

    /// Sends `sig` to the app's group or the app alone, per
    /// `signals.forward_to`.
    fn forward(&self, sig: Signal) {
        send_to_app(self.target(), sig, &self.metrics);
    }

    /// The `kill(2)` target for the app, 0 if none runs.
    fn target(&self) -> i32 {
        match (self.app, self.config.signals.forward_to) {
            (None, _) => 0,
            (Some(app), ForwardTo::Group) => -app.pid.as_raw(),
            (Some(app), ForwardTo::Child) => app.pid.as_raw(),
        }
    }

    /// Tells the signal task the current target and which signals are
    /// plain; called whenever the app or the config changes.
    fn sync_fast_path(&self) {
        let signals = &self.config.signals;
        let triggers = &self.config.shutdown.triggers;
        let plain = signals::caught()
            .into_iter()
            .filter_map(|n| Signal::from_number(n).ok())
            .filter(|&sig| {
                sig != Signal::CHLD
                    && !signals.ignore.contains(&sig)
                    && !triggers.contains(&sig)
                    && signals::rewrite(&signals.rewrite, sig) == sig
            })
            .filter(|sig| (1..=64).contains(&sig.number()))
            .fold(0u64, |mask, sig| mask | 1u64 << (sig.number() - 1));
        self.fast.plain.store(plain, Ordering::Relaxed);
        self.fast.target.store(self.target(), Ordering::Relaxed);
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
        self.sync_fast_path();
        self.last_status = Some(status);
        if let Some(cut) = self.poststart_cut.take() {
            let _ = cut.send(());
        }
        let actions = self.machine.handle(Event::AppExited, Instant::now());
        self.execute(actions);
        let restart = match self.config.app.restart {
            Restart::Never => false,
            Restart::Always => true,
            Restart::OnFailure => !status.success(),
        };
        if restart && !self.machine.started() && !self.poststart_failed {
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
            // The machine has seen AppExited and would ignore every later
            // event, so a trigger could never stop the next app. No shutdown
            // has started (checked above): a fresh machine loses nothing.
            self.machine = Machine::new(budget(&self.config));
            self.restart_at = Some(Instant::now() + delay);
        } else {
            self.status.exit = Some(status.to_string());
        }
        self.publish();
    }

    fn restart(&mut self) {
        self.status.restarts += 1;
        self.status.poststart = ListState::NotStarted;
        if let Err(e) = self.spawn() {
            error!(restarts = self.status.restarts, "restart failed: {e}");
            self.last_status = Some(Status::Exited(e.exit_code()));
            // Keep trying with back-off: a restart policy that gives up on a
            // transient error would be worse than the crash it supervises.
            let delay = self.next_backoff;
            self.next_backoff = (delay * 2).min(self.config.app.restart_backoff.max.0);
            self.restart_at = Some(Instant::now() + delay);
        }
        self.publish();
    }

    /// A drain cut when the app exited still owes its report: collect it
    /// (bounded), reaping meanwhile so its exec steps can end.
    async fn finish_drain(
        &mut self,
        signals: &mut Signals,
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
                sig = signals.next() => if sig == Some(libc::SIGCHLD) { self.reap(); },
                Some(event) = step_events.recv() => self.on_step_event(event),
                () = tokio::time::sleep_until(deadline.into()) => break,
            }
        }
    }

    /// Runs `[[on_exit]]`, bounded by `on_exit_timeout`, reaping meanwhile.
    async fn run_on_exit(
        &mut self,
        signals: &mut Signals,
        step_events: &mut mpsc::UnboundedReceiver<StepEvent>,
    ) {
        if self.config.on_exit.is_empty() {
            return;
        }
        let ctx = self.step_context();
        let steps = self.config.on_exit.clone();
        let timeout = self.config.shutdown.on_exit_timeout.0;
        let run = steps::run_list(
            ListKind::OnExit,
            &steps,
            &ctx,
            tokio::time::sleep(timeout),
            |_: &[StepReport]| {},
        );
        tokio::pin!(run);
        self.status.on_exit = ListState::Running { steps: Vec::new() };
        self.publish();
        let result = loop {
            tokio::select! {
                biased;
                sig = signals.next() => if sig == Some(libc::SIGCHLD) { self.reap(); },
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

    /// Writes the record of the stop on tokio's blocking pool, waiting at
    /// most [`RECORD_WRITE_TIMEOUT`]: a path that is not a regular file is
    /// refused unopened, and a write stuck on a stalled file system must
    /// not hold the exit (the app's exit code would be lost to the
    /// kubelet's SIGKILL).
    async fn write_termination_record(&self) {
        let Some(path) = termination::path(self.config.termination_message.path.as_deref()) else {
            return;
        };
        let Some(exit) = self.last_status else { return };
        let trigger = self.first_trigger.map(|s| s.to_string());
        let cause = if self.poststart_failed {
            Some("poststart-failed")
        } else {
            self.machine.cause().map(shutdown::Cause::as_str)
        };
        let record = termination::Record {
            exit,
            exit_code: self.exit_code(),
            oom_killed: self.oom.fired(),
            cause,
            trigger_signal: trigger.as_deref(),
            killed: self.machine.kill_sent(),
            poststart: self.status.poststart.steps(),
            drain: self.status.drain.steps(),
            on_exit: self.status.on_exit.steps(),
        };
        let text = termination::render(&record);
        let target = path.clone();
        let write = tokio::task::spawn_blocking(move || termination::write(&target, &text));
        let failure = match tokio::time::timeout(RECORD_WRITE_TIMEOUT, write).await {
            Ok(Ok(Ok(()))) => return,
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {RECORD_WRITE_TIMEOUT:?}; exiting without it"),
        };
        warn!(path = %path.display(), "cannot write the termination message: {failure}");
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
    /// Other signals arriving meanwhile go to nobody: the app is gone.
    async fn wait_for_no_children(&mut self, signals: &mut Signals, deadline: Instant) -> bool {
        loop {
            if self.reap() == Children::None {
                return true;
            }
            tokio::select! {
                biased;
                sig = signals.next() => if sig.is_none() { return false },
                () = tokio::time::sleep_until(deadline.into()) => return self.reap() == Children::None,
            }
        }
    }

    fn exit_code(&self) -> i32 {
        let code = self.last_status.map_or(exit::INTERNAL, Status::code);
        let code = self.config.map_exit_code(code);
        if self.poststart_failed && code == 0 {
            1
        } else {
            code
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

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

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

use std::collections::HashSet;
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
use crate::lifecycle::shutdown::{self, Action, Cause, Event, Machine};
use crate::lifecycle::state::{self, ListState, Metrics, Phase, Request, Shared};
use crate::lifecycle::steps::{self, ListKind, ListResult, StepReport};
use crate::lifecycle::termination;
use crate::reaper::{Children, Reaper, Status};
use crate::signals::{self, Signal};

/// Process-level options from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `-s`: become a child subreaper (automatic when not PID 1).
    pub subreaper: bool,
    /// `-p`: signal to get when drainit's parent dies.
    pub pdeathsig: Option<Signal>,
}

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

/// The cleanup of what the app left behind, at exit and before each
/// restart (SPEC 2): SIGTERM to every remaining process, SIGKILL after
/// `orphan_grace`, over when no child is left (or 1s after the SIGKILL).
/// It advances on reaping passes and deadlines, so the main loop keeps
/// answering signals and requests meanwhile.
///
/// At exit as PID 1 each round is one `kill(-1)`. Otherwise — not PID 1,
/// or before a restart, which must spare what is not the app's (a `kubectl
/// exec` shell) — a round signals the app's group and every process below
/// drainit, from /proc, and is repeated for newcomers after each reaping
/// pass (a dead child's children are ours now) and every [`SWEEP_RESCAN`]
/// until the round ends, so processes reparented after the first signal
/// are not missed.
#[derive(Debug)]
struct Sweep {
    /// The signal of the current round; 0 until the first reaping pass
    /// after the app's exit says whether anything is left at all.
    sig: i32,
    /// When the current round is over.
    until: Instant,
    /// Signal the tree below drainit, not `kill(-1)`.
    tree: bool,
    /// Tree: when to look for newcomers next.
    rescan_at: Option<Instant>,
    /// Tree: the processes sent `sig` already, by (pid, start time), so a
    /// rescan signals newcomers only.
    signalled: HashSet<(i32, u64)>,
    /// Tree: whether the app's group got `sig` already.
    group_signalled: bool,
}

/// How often a tree sweep looks for newly reparented processes.
const SWEEP_RESCAN: Duration = Duration::from_millis(100);

impl Sweep {
    fn pending(tree: bool) -> Sweep {
        Sweep {
            sig: 0,
            until: Instant::now(),
            tree,
            rescan_at: None,
            signalled: HashSet::new(),
            group_signalled: false,
        }
    }

    /// When the sweep needs the loop's attention, if it started.
    fn wake(&self) -> Option<Instant> {
        (self.sig != 0).then(|| self.rescan_at.map_or(self.until, |r| r.min(self.until)))
    }
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
    /// A shutdown started during a back-off wait: no restart, and the
    /// drain runs with no app (SPEC 2).
    restart_cancelled: bool,
    /// The last run's leftovers are being cleaned up; no restart until done.
    sweep: Option<Sweep>,
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
        Some(addr) => match crate::http::server::bind(addr) {
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
    code
}

/// Index of a list in per-list arrays.
fn kind_index(kind: ListKind) -> usize {
    match kind {
        ListKind::Poststart => 0,
        ListKind::Drain => 1,
        ListKind::OnExit => 2,
    }
}

/// The wall-clock time of a monotonic instant, for records read after
/// drainit is gone.
fn wall(at: Instant) -> SystemTime {
    let (now, wall_now) = (Instant::now(), SystemTime::now());
    if at >= now {
        wall_now + (at - now)
    } else {
        wall_now - (now - at)
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

fn budget(config: &Config) -> shutdown::Budget {
    shutdown::Budget {
        grace_period: config.shutdown.grace_period.0,
        stop_timeout: config.shutdown.stop_timeout.0,
        kill_margin: config.shutdown.kill_margin.0,
        prestop_stops_app: config.shutdown.prestop_stops_app,
    }
}

/// Subreaper, parent-death signal, and SIG_IGN for SIGTTIN/SIGTTOU/SIGPIPE
/// (see [`signals::OWN_IGNORES`]: they are also blocked, received and
/// forwarded).
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
    for sig in signals::OWN_IGNORES {
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
        // The program only: its arguments may hold a secret from `${VAR}`
        // (SPEC section 4), and the log is no place for them.
        let program = self.spec.argv.first().map(|p| p.to_string_lossy());
        info!(pid = pid.as_raw(), program = ?program.unwrap_or_default(), "app started");
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
            budget_end: None,
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

    /// Whether the app crashed outside a shutdown and `on_crash = "logs"`
    /// leaves the file empty for the kubelet's FallbackToLogsOnError. An
    /// exit that `exit_code_map` turns into 0 is no crash to the kubelet.
    fn crash_left_to_logs(&self) -> bool {
        self.config.termination_message.on_crash == config::OnCrash::Logs
            && self.machine.cause().is_none()
            && self.last_status.is_some_and(|s| !s.success())
            && self.exit_code() != 0
    }

    /// The termination file's path, looked up once.
    fn record_path(&mut self) -> Option<PathBuf> {
        let configured = self.config.termination_message.path.as_deref();
        self.record_path
            .get_or_insert_with(|| termination::path(configured))
            .clone()
    }

    /// What part of a stop is in progress, for the flight record; `None`
    /// while the app simply runs.
    fn stage(&self) -> Option<termination::Stage> {
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
        } else if running(&self.status.poststart) && !self.config.poststart.is_empty() {
            Some(Stage::Poststart)
        } else {
            None
        }
    }

    /// Rewrites the termination file with the record as it stands (SPEC
    /// section 8), so that a SIGKILL to drainit leaves it saying where the
    /// stop was. Called at each step start and end and phase change, never
    /// on a timer; a no-op without a termination file.
    fn flight_record(&mut self) {
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
    fn clear_record(&mut self) {
        let Some(path) = self.record_path() else {
            return;
        };
        if let Err(e) = self.recorder.clear(&path) {
            warn!(path = %path.display(), "cannot empty the termination message: {e}");
        }
    }

    /// Starts the `[[keepalive]]` steps, each on its own task (SPEC 6).
    fn start_keepalive(&mut self) {
        self.stop_keepalive();
        let ctx = self.step_context();
        for (index, step) in self.config.keepalive.iter().enumerate() {
            let task = keepalive(index, step.clone(), ctx.clone(), self.metrics.clone());
            self.keepalives.push(tokio::spawn(task));
        }
    }

    /// Stops the keepalive tasks (an exec step's group is killed with its
    /// future).
    fn stop_keepalive(&mut self) {
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
        self.step_clock[kind_index(kind)] = Some(SystemTime::now());
        let mut ctx = self.step_context();
        if kind == ListKind::Drain {
            ctx.cause = self.stop_cause();
            ctx.budget_end = self.machine.drain_budget_end().map(Into::into);
        }
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
        self.flight_record();
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
            self.cancel_restart();
            let actions = self.start_or_join(Event::Trigger);
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

    fn on_step_event(&mut self, event: StepEvent) {
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
    fn on_poststart_done(&mut self, ok: bool) {
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
        self.record_path = None;
        let new = Arc::new(new);
        self.config = new.clone();
        self.config_tx.send_replace(new);
        self.sync_fast_path();
        self.metrics.reload(true);
        info!("config reloaded");
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
        self.publish();
        if any {
            self.flight_record();
        }
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
        self.advance_sweep(children);
        children
    }

    /// After a reaping pass: ends the sweep when no child is left, starts
    /// it (SIGTERM) when the pass that saw the app exit finds some, and
    /// otherwise, in a tree sweep, signals the dead children's orphans.
    fn advance_sweep(&mut self, children: Children) {
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
    fn on_sweep_deadline(&mut self, now: Instant) {
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

    fn start_round(&mut self, sig: i32, until: Instant) {
        let Some(sweep) = &mut self.sweep else { return };
        sweep.sig = sig;
        sweep.until = until;
        sweep.signalled.clear();
        sweep.group_signalled = false;
        if !sweep.tree {
            // SAFETY: kill(2) with plain integers. As PID 1, -1 means every
            // process in our namespace but ourselves; it also reaches those
            // that left the app's group with setsid.
            unsafe { libc::kill(-1, sig) };
        } else {
            self.signal_newcomers();
        }
    }

    /// A tree round (`kill(-1)` would reach more than the app's tree):
    /// sends the round's signal to every process below drainit that has not
    /// had it, and to the app's group while it has a member there (never
    /// to a group with no member left: its number may be a new process's).
    fn signal_newcomers(&mut self) {
        let group = self.app_pgid.map(Pid::as_raw);
        let Some(sweep) = &mut self.sweep else { return };
        let group = group.filter(|_| !sweep.group_signalled);
        let round = plan_round(&scan_procs(), getpid().as_raw(), group, &sweep.signalled);
        if let Some(pgid) = round.group {
            // SAFETY: kill(2) with plain integers.
            unsafe { libc::kill(-pgid, sweep.sig) };
            sweep.group_signalled = true;
        }
        for p in &round.each {
            // SAFETY: as above.
            unsafe { libc::kill(p.pid, sweep.sig) };
        }
        sweep
            .signalled
            .extend(round.fresh.iter().map(|p| (p.pid, p.start)));
        sweep.rescan_at = Some(Instant::now() + SWEEP_RESCAN);
    }

    fn on_app_exit(&mut self, app: Running, status: Status) {
        let ran = app.started.elapsed();
        info!(pid = app.pid.as_raw(), %status, ran_ms = ran.as_millis() as u64, "app exited");
        self.app = None;
        self.sync_fast_path();
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
            let delay = backoff(
                &mut self.next_backoff,
                &self.config.app.restart_backoff,
                Some(ran),
            );
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
        } else {
            self.status.exit = Some(status.to_string());
            let actions = self.machine.handle(Event::AppExited, Instant::now());
            self.execute(actions);
        }
        self.publish();
    }

    /// Whether the main loop goes on: the app runs, a restart is pending,
    /// or the drain of a cancelled restart still runs.
    fn supervising(&self) -> bool {
        self.app.is_some()
            || self.restart_at.is_some()
            || (self.restart_cancelled && self.machine.draining())
    }

    /// A shutdown start during a back-off wait: the restart is off, but the
    /// shutdown goes on (the machine is fresh, so it runs the drain, which
    /// must undo what the last poststart registered); once the drain is
    /// done drainit exits with the last run's code.
    fn cancel_restart(&mut self) {
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

    fn restart(&mut self) {
        self.status.restarts += 1;
        self.status.poststart = ListState::NotStarted;
        if let Err(e) = self.spawn() {
            error!(restarts = self.status.restarts, "restart failed: {e}");
            self.last_status = Some(Status::Exited(e.exit_code()));
            // Keep trying with back-off: a restart policy that gives up on a
            // transient error would be worse than the crash it supervises.
            let delay = backoff(
                &mut self.next_backoff,
                &self.config.app.restart_backoff,
                None,
            );
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
        let timeout = self.config.shutdown.on_exit_timeout.0;
        let end = Instant::now() + timeout;
        let mut ctx = self.step_context();
        ctx.cause = self.stop_cause();
        ctx.budget_end = Some(end.into());
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

    fn write_termination_record(&mut self) {
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
            poststart: self.status.poststart.steps(),
            drain: self.status.drain.steps(),
            on_exit: self.status.on_exit.steps(),
        };
        let text = termination::render(&record);
        if let Err(e) = self.recorder.write(&path, &text) {
            warn!(path = %path.display(), "cannot write the termination message: {e}");
        }
    }

    /// After the app has exited for good: the [`Sweep`] (SIGTERM to
    /// everything left, SIGKILL after `orphan_grace`), reaping meanwhile.
    /// Other signals arriving meanwhile go to nobody: the app is gone.
    async fn clean_up_orphans(&mut self, signals: &mut Signals) {
        self.sweep = Some(Sweep::pending(!self.is_pid1));
        self.reap();
        while let Some(wake) = self.sweep.as_ref().and_then(Sweep::wake) {
            tokio::select! {
                biased;
                sig = signals.next() => match sig {
                    Some(libc::SIGCHLD) => { self.reap(); }
                    Some(_) => {}
                    None => return,
                },
                () = tokio::time::sleep_until(wake.into()) => self.on_sweep_deadline(Instant::now()),
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

/// The delay before the next restart (SPEC 2): `next`, the delay due
/// (`initial` at first), or `initial` again after a run of at least
/// `reset_after`; `next` then doubles, up to `max`. `ran` is how long the
/// last run lasted, `None` when the app could not even start.
fn backoff(next: &mut Duration, policy: &config::Backoff, ran: Option<Duration>) -> Duration {
    if ran.is_some_and(|ran| ran >= policy.reset_after.0) {
        *next = policy.initial.0;
    }
    let delay = *next;
    *next = delay.saturating_mul(2).min(policy.max.0);
    delay
}

/// One process, as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    /// Start time (clock ticks after boot): with the pid, names one process
    /// even when its pid is reused.
    start: u64,
}

/// Parses `/proc/PID/stat`; the command name may hold spaces and `)`.
fn parse_stat(stat: &str) -> Option<Proc> {
    let (head, rest) = stat.rsplit_once(')')?;
    let pid = head.split_whitespace().next()?.parse().ok()?;
    // After the ")": field 3 (state), 4 (ppid), 5 (pgrp) ... 22 (starttime).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Proc {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Every process visible in /proc (those that vanish meanwhile are left out).
fn scan_procs() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?))
        .collect()
}

/// What one subreaper sweep round signals.
#[derive(Debug, PartialEq, Eq)]
struct Round {
    /// The app's group, when it still has a member below drainit.
    group: Option<i32>,
    /// The processes below drainit not signalled yet in this round.
    fresh: Vec<Proc>,
    /// Those of `fresh` the group signal does not reach: signalled one by one.
    each: Vec<Proc>,
}

/// Plans a round from one /proc scan: the processes below `root` not in
/// `signalled`, and `group` (the app's group, if it is still to be
/// signalled) only when a process below `root` is in it.
fn plan_round(
    procs: &[Proc],
    root: i32,
    group: Option<i32>,
    signalled: &HashSet<(i32, u64)>,
) -> Round {
    let below = descendants(procs, root);
    let group = group.filter(|&g| below.iter().any(|p| p.pgrp == g));
    let fresh: Vec<Proc> = below
        .into_iter()
        .filter(|p| !signalled.contains(&(p.pid, p.start)))
        .collect();
    let each = fresh
        .iter()
        .copied()
        .filter(|p| Some(p.pgrp) != group)
        .collect();
    Round { group, fresh, each }
}

/// The processes below `root` in the tree the ppids make (a snapshot read
/// piece by piece may hold a loop after pid reuse: each pid counts once).
fn descendants(procs: &[Proc], root: i32) -> Vec<Proc> {
    let mut seen = HashSet::from([root]);
    let mut out = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for p in procs.iter().filter(|p| p.ppid == parent) {
            if seen.insert(p.pid) {
                out.push(*p);
                parents.push(p.pid);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> config::Backoff {
        config::Backoff {
            initial: config::Duration(ms(100)),
            max: config::Duration(ms(1000)),
            reset_after: config::Duration(ms(60_000)),
        }
    }

    #[test]
    fn backoff_doubles_up_to_max() {
        let mut next = policy().initial.0;
        let delays: Vec<u128> = (0..6)
            .map(|_| backoff(&mut next, &policy(), Some(ms(10))).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn backoff_resets_after_a_long_run() {
        let mut next = policy().initial.0;
        for _ in 0..4 {
            backoff(&mut next, &policy(), Some(ms(10)));
        }
        assert_eq!(backoff(&mut next, &policy(), Some(ms(60_000))), ms(100));
        assert_eq!(backoff(&mut next, &policy(), Some(ms(59_999))), ms(200));
    }

    #[test]
    fn backoff_after_a_failed_start_keeps_growing() {
        let mut next = policy().initial.0;
        backoff(&mut next, &policy(), Some(ms(10)));
        assert_eq!(backoff(&mut next, &policy(), None), ms(200));
        assert_eq!(backoff(&mut next, &policy(), None), ms(400));
    }

    #[test]
    fn backoff_never_overflows() {
        let huge = config::Backoff {
            initial: config::Duration(Duration::MAX),
            max: config::Duration(Duration::MAX),
            reset_after: config::Duration(Duration::MAX),
        };
        let mut next = Duration::MAX;
        assert_eq!(backoff(&mut next, &huge, None), Duration::MAX);
        assert_eq!(next, Duration::MAX);
    }

    fn proc(pid: i32, ppid: i32, pgrp: i32) -> Proc {
        Proc {
            pid,
            ppid,
            pgrp,
            start: 1000 + pid as u64,
        }
    }

    #[test]
    fn parse_stat_reads_the_fields_after_the_command_name() {
        let stat = "4242 (a b) c) S 7 4240 4240 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1 2 3";
        assert_eq!(
            parse_stat(stat),
            Some(Proc {
                pid: 4242,
                ppid: 7,
                pgrp: 4240,
                start: 98765
            })
        );
        assert_eq!(parse_stat("12 (x) S 1"), None, "truncated");
    }

    #[test]
    fn a_round_reaches_grandchildren_not_strangers() {
        // 10 is drainit; 11 its child, 12 and 13 below it; 20 is not ours.
        let procs = [
            proc(11, 10, 11),
            proc(12, 11, 12),
            proc(13, 12, 12),
            proc(20, 1, 20),
        ];
        let round = plan_round(&procs, 10, None, &HashSet::new());
        let pids: Vec<i32> = round.each.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [11, 12, 13]);
    }

    #[test]
    fn a_rescan_signals_newcomers_only() {
        let procs = [proc(11, 10, 11), proc(12, 10, 12)];
        let signalled = HashSet::from([(11, 1011)]);
        let round = plan_round(&procs, 10, None, &signalled);
        assert_eq!(round.fresh, [proc(12, 10, 12)]);
        // The same pid with another start time is another process.
        let reused = HashSet::from([(11, 7)]);
        assert_eq!(plan_round(&procs, 10, None, &reused).fresh.len(), 2);
    }

    #[test]
    fn the_group_is_signalled_only_while_a_member_is_ours() {
        // The app (pid 11) is gone; its old group number 11 now belongs to
        // a stranger that reused the pid: never signal it.
        let procs = [proc(12, 10, 12), proc(11, 1, 11)];
        let round = plan_round(&procs, 10, Some(11), &HashSet::new());
        assert_eq!(round.group, None);
        assert_eq!(round.each, [proc(12, 10, 12)]);
        // A member of the app's group is still ours: one kill(-11) covers
        // it, and it is not signalled twice.
        let procs = [proc(12, 10, 11), proc(13, 12, 13)];
        let round = plan_round(&procs, 10, Some(11), &HashSet::new());
        assert_eq!(round.group, Some(11));
        assert_eq!(round.each, [proc(13, 12, 13)]);
        assert_eq!(round.fresh.len(), 2);
    }

    #[test]
    fn a_ppid_loop_from_a_torn_snapshot_ends() {
        let procs = [proc(11, 10, 11), proc(12, 11, 12), proc(11, 12, 11)];
        assert_eq!(descendants(&procs, 10).len(), 2);
    }

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

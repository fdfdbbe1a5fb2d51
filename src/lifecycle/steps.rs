//! Steps (SPEC section 6): `[[poststart]]`, `[[drain]]`, `[[on_exit]]`,
//! `[[keepalive]]`.
//!
//! This module owns how a list of steps runs (what a step *is*, its
//! config form checked at load, is [`crate::config::steps`]): in order,
//! each bounded by its timeout, retried as configured, the rest skipped after an `abort`, the running one cut off
//! when the caller's budget ends, a step whose `when` does not name the
//! cause reported `not_selected`. It never decides *when* a list runs (that
//! is `shutdown` and `driver`) and never waits for a process itself: exec
//! steps get their status from the core's reaper through [`Claims`].

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration as StdDuration;

use nix::sys::signal::{killpg, Signal as NixSignal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::time::Instant;
use tracing::{info, warn};

pub use crate::config::steps::Step;
use crate::config::steps::{
    Action, HttpAction, OnFailure, WaitConnections, WaitHttp, DEFAULT_RETRY_DELAY, DEFAULT_TIMEOUT,
};
use crate::config::ForwardTo;
use crate::config::Signal;
use crate::init::child::Spec;
use crate::lifecycle::claims::Claims;
use crate::lifecycle::client;
use crate::lifecycle::shutdown::Cause;

/// Which list a step belongs to; it sets the `on_failure` default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Poststart,
    Drain,
    OnExit,
}

impl ListKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Poststart => "poststart",
            ListKind::Drain => "drain",
            ListKind::OnExit => "on_exit",
        }
    }

    /// `abort` in poststart, `continue` elsewhere.
    pub fn default_on_failure(self) -> OnFailure {
        match self {
            ListKind::Poststart => OnFailure::Abort,
            ListKind::Drain | ListKind::OnExit => OnFailure::Continue,
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
    /// Past its own timeout.
    TimedOut,
    /// Cut off by the list's budget (the drain budget, `on_exit_timeout`).
    Cut,
    /// Not run: an earlier step aborted the list, or the budget ended.
    Skipped,
    /// Not run: its `when` does not list the cause of this stop.
    NotSelected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Cut => "cut",
            Outcome::Skipped => "skipped",
            Outcome::NotSelected => "not_selected",
        }
    }

    /// Whether this outcome makes `/prestop` or `/poststart` answer 500.
    /// A skipped step is not a failure in itself.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::TimedOut | Outcome::Cut)
    }
}

/// The record of one step run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    pub name: String,
    pub outcome: Outcome,
    /// Wall time spent, in milliseconds.
    pub duration_ms: u64,
    /// Why it failed, or what it saw (`status 503`, `exit code 1`), if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl StepReport {
    /// `name: outcome (1.234s) detail`.
    pub fn summary_line(&self) -> String {
        let secs = self.duration_ms as f64 / 1000.0;
        if self.detail.is_empty() {
            format!("{}: {} ({secs:.3}s)", self.name, self.outcome.as_str())
        } else {
            format!(
                "{}: {} ({secs:.3}s) {}",
                self.name,
                self.outcome.as_str(),
                self.detail
            )
        }
    }
}

// ---------------------------------------------------------------------------
// Running a list.

/// How often the `wait_*` steps look again.
const POLL_INTERVAL: StdDuration = StdDuration::from_millis(100);
/// Bound of one `wait_tcp` connect attempt, so that a black-holed address
/// is retried rather than waited on until the step's timeout.
const TCP_ATTEMPT_TIMEOUT: StdDuration = StdDuration::from_millis(500);
/// Bound of one `wait_http` request, for the same reason; generous enough
/// for an app that answers slowly while it starts.
const HTTP_ATTEMPT_TIMEOUT: StdDuration = StdDuration::from_secs(2);
/// "No bound of its own" for an `http` step's request: the step's timeout
/// ends it first.
const UNBOUNDED: StdDuration = StdDuration::from_secs(24 * 3600);

/// What a step may touch.
#[derive(Clone)]
pub struct Context {
    /// Exec steps get their exit status from here, never from `wait`.
    pub claims: Claims,
    /// The app's pid (its process group id too), if running; target of
    /// `signal` steps.
    pub app_pid: Option<Pid>,
    /// `group` sends `signal` steps to the app's process group, `child` to
    /// the app process alone (as for forwarded signals).
    pub forward_to: ForwardTo,
    /// Base spec for exec steps: `app.env`, `app.workdir`, the resolved
    /// `app.user` ids (argv empty, foreground false).
    pub exec_base: Spec,
    /// The cause of the stop, for `when` and `DRAINIT_STOP_CAUSE` (`None`
    /// in poststart).
    pub cause: Option<Cause>,
    /// When the list's budget ends, for `DRAINIT_BUDGET_LEFT_MS` (`None`:
    /// no budget yet, e.g. a drain started by `POST /drain`).
    pub budget_end: BudgetEnd,
}

/// When a list's budget ends, shared with the supervisor while the list
/// runs: a drain started by `POST /drain` has none until a trigger signal
/// starts the clock, and the steps that start after that must see it.
#[derive(Debug, Clone, Default)]
pub struct BudgetEnd(std::sync::Arc<std::sync::Mutex<Option<Instant>>>);

impl BudgetEnd {
    pub fn new(end: Option<Instant>) -> BudgetEnd {
        BudgetEnd(std::sync::Arc::new(std::sync::Mutex::new(end)))
    }

    pub fn get(&self) -> Option<Instant> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set(&self, end: Option<Instant>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = end;
    }
}

/// The outcome of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListResult {
    /// No step failed, timed out or was cut (skipped steps do not count).
    pub ok: bool,
    /// One report per configured step, in order.
    pub steps: Vec<StepReport>,
}

/// Runs `steps` in order and reports on every one of them.
///
/// - Each step is bounded by its `timeout` (default [`DEFAULT_TIMEOUT`]),
///   which covers the whole step, retries and the delays between them
///   included, so that a list's worst case is the sum of its timeouts and
///   the drain budget stays predictable. A `sleep` step without an explicit
///   `timeout` has no bound of its own: only `cut` ends it early.
/// - A failed step with `on_failure = "abort"` (the default in poststart,
///   [`ListKind::default_on_failure`]) makes the remaining steps `Skipped`.
/// - When `cut` resolves (the drain budget ended, a second trigger signal
///   came, `on_exit_timeout` passed), the running step is cancelled — an
///   exec step's process group is SIGKILLed — and reported `Cut`, the rest
///   `Skipped`. A `cut` that has already resolved when a step is due cuts
///   that step at once: the list did not finish, and says so.
/// - `progress` is called after each report with all reports so far, so
///   `/status` can show the list while it runs.
pub async fn run_list(
    kind: ListKind,
    steps: &[Step],
    ctx: &Context,
    cut: impl Future<Output = ()>,
    mut progress: impl FnMut(&[StepReport]),
) -> ListResult {
    let mut cut = std::pin::pin!(cut);
    let mut reports: Vec<StepReport> = Vec::with_capacity(steps.len());
    // Set once the rest of the list is not to run, with the reason.
    let mut skip_rest: Option<&'static str> = None;
    for step in steps {
        let name = step.display_name();
        if let Some(why) = skip_rest {
            info!(list = kind.as_str(), step = %name, outcome = "skipped", detail = why, "step skipped");
            reports.push(StepReport {
                name,
                outcome: Outcome::Skipped,
                duration_ms: 0,
                detail: why.to_string(),
            });
            progress(&reports);
            continue;
        }

        if let Some(when) = &step.when {
            if !ctx.cause.is_some_and(|c| when.contains(&c)) {
                let cause = ctx.cause.map_or("none", Cause::as_str);
                info!(list = kind.as_str(), step = %name, outcome = "not_selected", cause, "step not selected for this cause");
                reports.push(StepReport {
                    name,
                    outcome: Outcome::NotSelected,
                    duration_ms: 0,
                    detail: format!("cause {cause} not in when"),
                });
                progress(&reports);
                continue;
            }
        }

        info!(list = kind.as_str(), step = %name, "step started");
        let started = Instant::now();
        // The latest thing the step saw; it outlives the step's future, so
        // a timed-out or cut step can still say what it was waiting on.
        let mut seen = String::new();
        let outcome = tokio::select! {
            biased;
            () = &mut cut => None,
            outcome = run_step(step, ctx, &mut seen) => Some(outcome),
        };
        let duration = started.elapsed();
        let (outcome, detail) = match outcome {
            Some((outcome, detail)) => (outcome, detail),
            None => {
                skip_rest = Some("the list was cut off");
                (
                    Outcome::Cut,
                    with_last("cut off by the list's budget", &seen),
                )
            }
        };
        let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        if outcome.is_failure() {
            warn!(list = kind.as_str(), step = %name, outcome = outcome.as_str(), duration_ms, detail = %detail, "step failed");
            let on_failure = step.on_failure.unwrap_or(kind.default_on_failure());
            if on_failure == OnFailure::Abort && skip_rest.is_none() {
                skip_rest = Some("an earlier step failed with on_failure = abort");
            }
        } else {
            info!(list = kind.as_str(), step = %name, outcome = outcome.as_str(), duration_ms, detail = %detail, "step finished");
        }
        reports.push(StepReport {
            name,
            outcome,
            duration_ms,
            detail,
        });
        progress(&reports);
    }
    ListResult {
        ok: !reports.iter().any(|r| r.outcome.is_failure()),
        steps: reports,
    }
}

/// Runs one step on its own, bounded by its timeout, as a `[[keepalive]]`
/// run does: no list, no cut, and no log line (the caller logs).
pub async fn run_single(step: &Step, ctx: &Context) -> StepReport {
    let started = Instant::now();
    let mut seen = String::new();
    let (outcome, detail) = run_step(step, ctx, &mut seen).await;
    StepReport {
        name: step.display_name(),
        outcome,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        detail,
    }
}

/// `what; last: seen`, or just `what` when nothing was seen.
fn with_last(what: &str, seen: &str) -> String {
    if seen.is_empty() {
        what.to_string()
    } else {
        format!("{what}; last: {seen}")
    }
}

/// One step under its timeout: the outcome and the report's detail.
async fn run_step(step: &Step, ctx: &Context, seen: &mut String) -> (Outcome, String) {
    let timeout = step.effective_timeout();
    let attempts = with_retries(step, ctx, seen);
    let done = match timeout {
        None => Some(attempts.await),
        Some(t) => tokio::time::timeout(t, attempts).await.ok(),
    };
    match done {
        Some(true) => (Outcome::Ok, std::mem::take(seen)),
        Some(false) => (Outcome::Failed, std::mem::take(seen)),
        None => {
            let t = crate::config::Duration(timeout.unwrap_or(DEFAULT_TIMEOUT));
            (
                Outcome::TimedOut,
                with_last(&format!("timed out after {t}"), seen),
            )
        }
    }
}

/// Runs the action up to `retries + 1` times (http and exec only), with
/// `retry_delay` between attempts. `seen` holds the latest observation.
async fn with_retries(step: &Step, ctx: &Context, seen: &mut String) -> bool {
    let retries = if step.retriable() {
        step.retries.unwrap_or(0)
    } else {
        0
    };
    let delay = step.retry_delay.map_or(DEFAULT_RETRY_DELAY, |d| d.0);
    for attempt in 0..=retries {
        if attempt > 0 {
            tokio::time::sleep(delay).await;
        }
        if once(step, ctx, seen).await {
            return true;
        }
        if retries > 0 {
            // u64: `retries` comes from the config and may be u32::MAX.
            let (attempt, attempts) = (u64::from(attempt) + 1, u64::from(retries) + 1);
            let noted = format!("{seen} (attempt {attempt}/{attempts})");
            *seen = noted;
        }
    }
    false
}

/// One attempt of the step's action: whether it succeeded.
async fn once(step: &Step, ctx: &Context, seen: &mut String) -> bool {
    match &step.action {
        Action::Sleep(d) => {
            tokio::time::sleep(d.0).await;
            true
        }
        Action::Http(h) => http_once(h, seen).await,
        Action::Exec(argv) => exec_once(argv, step, ctx, seen).await,
        Action::Signal(sig) => signal_app(*sig, ctx, seen),
        Action::WaitTcp(addr) => wait_tcp(addr, seen).await,
        Action::WaitHttp(w) => wait_http(w, seen).await,
        Action::WaitConnections(w) => wait_connections(*w, seen).await,
        Action::WaitQuiet(w) => crate::lifecycle::quiet::wait_quiet(w, seen).await,
    }
}

async fn http_once(h: &HttpAction, seen: &mut String) -> bool {
    let req = client::Request {
        method: &h.method,
        url: &h.url,
        headers: &h.headers,
        body: h.body.as_deref(),
        // The step's timeout (an http step always has one) bounds the
        // attempts; a request bound of the same length would race it and
        // turn a timed-out step into a failed one.
        timeout: UNBOUNDED,
    };
    match client::send(&req).await {
        Ok(status) => {
            *seen = format!("status {status}");
            client::expected(status, &h.expect)
        }
        Err(e) => {
            *seen = e.to_string();
            false
        }
    }
}

/// Runs `argv` in its own process group and waits for its status from the
/// reaper. If this future is dropped first (timeout, cut), the group is
/// SIGKILLed.
async fn exec_once(argv: &[String], step: &Step, ctx: &Context, seen: &mut String) -> bool {
    let ids = match &step.user {
        Some(user) => match crate::init::user::resolve(user, Path::new("/")) {
            Ok(ids) => Some(ids),
            Err(e) => {
                *seen = e.to_string();
                return false;
            }
        },
        None => ctx.exec_base.ids.clone(),
    };
    let mut env = ctx.exec_base.env.clone();
    env.extend(step.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(drainit_env(ctx));
    let spec = Spec {
        argv: argv.iter().map(std::ffi::OsString::from).collect(),
        env,
        workdir: step
            .workdir
            .clone()
            .or_else(|| ctx.exec_base.workdir.clone()),
        ids,
        foreground: false,
    };
    let pid = match crate::init::child::spawn(&spec) {
        Ok(pid) => pid,
        Err(e) => {
            *seen = e.to_string();
            return false;
        }
    };
    // No await between the spawn and the claim: statuses are delivered on
    // this thread, so `pid`'s cannot come before it is claimed.
    let status = ctx.claims.claim(pid);
    let mut group = KillGroupOnDrop {
        pgid: pid,
        armed: true,
    };
    *seen = format!("running as pid {pid}");
    match status.await {
        Ok(status) => {
            // Reaped: the pid may be reused from now on; never signal it.
            group.armed = false;
            *seen = status.to_string();
            status.success()
        }
        Err(_) => {
            group.armed = false;
            *seen = format!("lost track of pid {pid}");
            false
        }
    }
}

/// What exec steps learn from drainit (SPEC section 6): the app's pid,
/// the cause of the stop and what is left of the list's budget, each
/// empty when there is none. They come last, over `app.env` and the
/// step's `env`, so a config cannot make a step lie to itself.
fn drainit_env(ctx: &Context) -> [(String, String); 3] {
    let pid = ctx.app_pid.map(|p| p.as_raw().to_string());
    let cause = ctx.cause.map(|c| c.as_str().to_string());
    let left = ctx.budget_end.get().map(|end| {
        end.saturating_duration_since(Instant::now())
            .as_millis()
            .to_string()
    });
    [
        ("DRAINIT_APP_PID".to_string(), pid.unwrap_or_default()),
        ("DRAINIT_STOP_CAUSE".to_string(), cause.unwrap_or_default()),
        (
            "DRAINIT_BUDGET_LEFT_MS".to_string(),
            left.unwrap_or_default(),
        ),
    ]
}

/// SIGKILLs an exec step's process group when dropped while armed, which is
/// what happens to a step future cut by its timeout or the list's budget.
/// Disarmed once the leader is reaped (its id may be reused then); until
/// then the group id cannot name anyone else, zombie leader or not.
struct KillGroupOnDrop {
    pgid: Pid,
    armed: bool,
}

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if self.armed {
            warn!(
                pgid = self.pgid.as_raw(),
                "killing the exec step's process group"
            );
            if let Err(e) = killpg(self.pgid, NixSignal::SIGKILL) {
                warn!(pgid = self.pgid.as_raw(), error = %e, "cannot kill the exec step's process group");
            }
        }
    }
}

fn signal_app(sig: Signal, ctx: &Context, seen: &mut String) -> bool {
    let Some(pid) = ctx.app_pid else {
        *seen = "no app running".to_string();
        return false;
    };
    let (target, whom) = match ctx.forward_to {
        ForwardTo::Group => (-pid.as_raw(), "process group"),
        ForwardTo::Child => (pid.as_raw(), "pid"),
    };
    // SAFETY: kill(2) with plain integers; libc is used because nix's
    // Signal cannot name real-time signals.
    let rc = unsafe { libc::kill(target, sig.number()) };
    if rc == 0 {
        *seen = format!("{sig} sent to {whom} {pid}");
        true
    } else {
        *seen = format!("{sig} to {whom} {pid}: {}", nix::errno::Errno::last());
        false
    }
}

/// Connects until a connection succeeds; only the step's timeout ends it.
async fn wait_tcp(addr: &str, seen: &mut String) -> bool {
    loop {
        match tokio::time::timeout(TCP_ATTEMPT_TIMEOUT, connect_once(addr)).await {
            Ok(Ok(())) => {
                *seen = "connected".to_string();
                return true;
            }
            Ok(Err(e)) => *seen = e,
            Err(_) => *seen = format!("no answer within {TCP_ATTEMPT_TIMEOUT:?}"),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn connect_once(addr: &str) -> Result<(), String> {
    let addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("resolve {addr}: {e}"))?;
    let mut last = format!("resolve {addr}: no address");
    for sa in addrs {
        match tokio::net::TcpStream::connect(sa).await {
            // Dropped at once: the port answers, that is all we wanted.
            Ok(_) => return Ok(()),
            Err(e) => last = format!("connect {sa}: {e}"),
        }
    }
    Err(last)
}

/// GETs the URL until it answers an expected status.
async fn wait_http(w: &WaitHttp, seen: &mut String) -> bool {
    let headers = BTreeMap::new();
    let req = client::Request {
        method: "GET",
        url: &w.url,
        headers: &headers,
        body: None,
        timeout: HTTP_ATTEMPT_TIMEOUT,
    };
    loop {
        match client::send(&req).await {
            Ok(status) => {
                *seen = format!("status {status}");
                if client::expected(status, &w.expect) {
                    return true;
                }
            }
            Err(e) => *seen = e.to_string(),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls the kernel's socket tables until at most `max` connections are
/// established on the local port.
async fn wait_connections(w: WaitConnections, seen: &mut String) -> bool {
    loop {
        match crate::lifecycle::netstat::established_on_port(w.port).await {
            Ok(n) => {
                *seen = format!("{n} connections");
                if n <= w.max {
                    return true;
                }
            }
            Err(e) => *seen = format!("reading the socket table (sock_diag): {e}"),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Unit tests that start child processes take turns on this lock, crate
/// wide: the exec-step tests run a reaper loop (`waitpid(-1)`), which would
/// steal the children of any test running beside them (a
/// `std::process::Command::status()` then fails with ECHILD). Synchronous
/// tests can take it with `blocking_lock()`.
#[cfg(test)]
pub(crate) static TEST_CHILDREN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use crate::init::reaper::Status;

    /// A step as a user writes it.
    fn step(toml_text: &str) -> Step {
        let step: Step = toml::from_str(toml_text).unwrap();
        assert_eq!(step.validate(), Vec::new(), "{toml_text}");
        step
    }

    fn ctx() -> Context {
        Context {
            claims: Claims::default(),
            app_pid: None,
            forward_to: ForwardTo::Group,
            exec_base: Spec::default(),
            cause: None,
            budget_end: BudgetEnd::default(),
        }
    }

    /// A reaper loop like the core's and the driver's together, on this
    /// test's runtime.
    fn start_reaper() -> Claims {
        let claims = Claims::default();
        let delivering = claims.clone();
        tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                done.clear();
                crate::init::reaper::reap(&mut done);
                delivering.deliver(&done);
                tokio::time::sleep(StdDuration::from_millis(10)).await;
            }
        });
        claims
    }

    async fn run(kind: ListKind, steps: &[Step], ctx: &Context) -> ListResult {
        run_list(kind, steps, ctx, std::future::pending(), |_| {}).await
    }

    async fn run_one(s: &Step, ctx: &Context) -> StepReport {
        let mut result = run(ListKind::Drain, std::slice::from_ref(s), ctx).await;
        assert_eq!(result.steps.len(), 1);
        result.steps.remove(0)
    }

    fn outcomes(result: &ListResult) -> Vec<Outcome> {
        result.steps.iter().map(|r| r.outcome).collect()
    }

    /// An HTTP server that answers the statuses in `script` in turn, then
    /// `then` forever, counting the requests.
    async fn server(script: &[u16], then: u16) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/ping", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let script = script.to_vec();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).await.unwrap() == 0 {
                        break;
                    }
                    head.push(byte[0]);
                }
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let status = script.get(n).copied().unwrap_or(then);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                // The client may have given up already.
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        (url, count)
    }

    /// A port nobody listens on (bound, then released).
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    /// Whether `pid` is gone or a zombie (dead, not yet reaped by whoever
    /// its parent is now).
    fn dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // `pid (comm) S ...`: the state follows the last `)`.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    /// Waits (5s safety net) until `pid` is dead.
    async fn wait_dead(pid: i32) {
        let deadline = Instant::now() + StdDuration::from_secs(5);
        while !dead(pid) {
            assert!(Instant::now() < deadline, "pid {pid} still alive");
            tokio::time::sleep(StdDuration::from_millis(10)).await;
        }
    }

    /// Waits (5s safety net) for a file with a pid in it.
    async fn read_pid(path: &Path) -> i32 {
        let deadline = Instant::now() + StdDuration::from_secs(5);
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Ok(pid) = text.trim().parse() {
                    return pid;
                }
            }
            assert!(Instant::now() < deadline, "no pid in {}", path.display());
            tokio::time::sleep(StdDuration::from_millis(10)).await;
        }
    }

    /// The pid an exec step reported as running (`... running as pid N`).
    fn running_pid(detail: &str) -> i32 {
        let (_, pid) = detail.rsplit_once("running as pid ").unwrap();
        pid.trim().parse().unwrap()
    }

    #[test]
    fn effective_timeouts() {
        assert_eq!(step("sleep = \"1h\"").effective_timeout(), None);
        assert_eq!(
            step("sleep = \"1h\"\ntimeout = \"2s\"").effective_timeout(),
            Some(StdDuration::from_secs(2))
        );
        assert_eq!(
            step("wait_tcp = \"127.0.0.1:1\"").effective_timeout(),
            Some(DEFAULT_TIMEOUT)
        );
        assert_eq!(
            step("exec = [\"true\"]\ntimeout = \"1500ms\"").effective_timeout(),
            Some(StdDuration::from_millis(1500))
        );
    }

    #[tokio::test]
    async fn empty_list_is_ok() {
        let mut calls = 0;
        let result = run_list(
            ListKind::Poststart,
            &[],
            &ctx(),
            std::future::pending(),
            |_| calls += 1,
        )
        .await;
        assert!(result.ok);
        assert!(result.steps.is_empty());
        assert_eq!(calls, 0);
    }

    #[tokio::test]
    async fn abort_in_poststart_skips_the_rest() {
        let (url, count) = server(&[], 500).await;
        let steps = [
            step(&format!("http = {{ url = \"{url}\" }}")),
            step("sleep = \"1ms\""),
            step("name = \"last\"\nsleep = \"1ms\""),
        ];
        let mut seen = Vec::new();
        let result = run_list(
            ListKind::Poststart,
            &steps,
            &ctx(),
            std::future::pending(),
            |r| seen.push(r.len()),
        )
        .await;
        assert!(!result.ok);
        assert_eq!(
            outcomes(&result),
            [Outcome::Failed, Outcome::Skipped, Outcome::Skipped]
        );
        assert_eq!(result.steps[0].detail, "status 500");
        assert_eq!(result.steps[0].name, format!("http GET {url}"));
        assert_eq!(result.steps[2].name, "last");
        assert_eq!(seen, [1, 2, 3], "progress after every report");
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn continue_in_drain_goes_on() {
        let (url, _) = server(&[], 500).await;
        let steps = [
            step(&format!("http = {{ url = \"{url}\" }}")),
            step("sleep = \"1ms\""),
        ];
        let result = run(ListKind::Drain, &steps, &ctx()).await;
        assert!(!result.ok, "a failed step fails the list");
        assert_eq!(outcomes(&result), [Outcome::Failed, Outcome::Ok]);
        let result = run(ListKind::OnExit, &steps, &ctx()).await;
        assert_eq!(outcomes(&result), [Outcome::Failed, Outcome::Ok]);
    }

    #[tokio::test]
    async fn explicit_on_failure_overrides_the_default() {
        let (url, _) = server(&[], 500).await;
        let rest = step("sleep = \"1ms\"");
        let cont = step(&format!(
            "http = {{ url = \"{url}\" }}\non_failure = \"continue\""
        ));
        let result = run(ListKind::Poststart, &[cont, rest.clone()], &ctx()).await;
        assert_eq!(outcomes(&result), [Outcome::Failed, Outcome::Ok]);
        let abort = step(&format!(
            "http = {{ url = \"{url}\" }}\non_failure = \"abort\""
        ));
        let result = run(ListKind::Drain, &[abort, rest], &ctx()).await;
        assert_eq!(outcomes(&result), [Outcome::Failed, Outcome::Skipped]);
    }

    // Paused time: tokio jumps to the next timer, so the budget and the
    // steps' lengths are exact and the test takes no wall-clock time.
    #[tokio::test(start_paused = true)]
    async fn cut_marks_the_running_step_and_skips_the_rest() {
        let steps = [
            step("sleep = \"1ms\""),
            step("sleep = \"1h\""),
            step("sleep = \"1ms\""),
        ];
        let cut = tokio::time::sleep(StdDuration::from_millis(100));
        let result = run_list(ListKind::Drain, &steps, &ctx(), cut, |_| {}).await;
        assert!(!result.ok);
        assert_eq!(
            outcomes(&result),
            [Outcome::Ok, Outcome::Cut, Outcome::Skipped]
        );
        // Cut at 100ms, 1ms of it taken by the first step.
        assert_eq!(result.steps[1].duration_ms, 99, "{:?}", result.steps[1]);
    }

    #[tokio::test]
    async fn cut_already_due_cuts_the_next_step() {
        let steps = [step("sleep = \"1ms\""), step("sleep = \"1ms\"")];
        let result = run_list(
            ListKind::Drain,
            &steps,
            &ctx(),
            std::future::ready(()),
            |_| {},
        )
        .await;
        assert!(!result.ok);
        assert_eq!(outcomes(&result), [Outcome::Cut, Outcome::Skipped]);
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_runs_its_length_and_explicit_timeout_cuts_it() {
        let r = run_one(&step("sleep = \"100ms\""), &ctx()).await;
        assert_eq!(r.outcome, Outcome::Ok);
        assert_eq!(r.duration_ms, 100, "{r:?}");
        let r = run_one(&step("sleep = \"1h\"\ntimeout = \"100ms\""), &ctx()).await;
        assert_eq!(r.outcome, Outcome::TimedOut);
        assert_eq!(r.duration_ms, 100, "{r:?}");
        assert_eq!(r.detail, "timed out after 100ms");
    }

    #[tokio::test]
    async fn http_expect() {
        let (url, _) = server(&[], 503).await;
        let r = run_one(&step(&format!("http = {{ url = \"{url}\" }}")), &ctx()).await;
        assert_eq!(
            (r.outcome, r.detail.as_str()),
            (Outcome::Failed, "status 503")
        );
        let r = run_one(
            &step(&format!("http = {{ url = \"{url}\", expect = [503] }}")),
            &ctx(),
        )
        .await;
        assert_eq!((r.outcome, r.detail.as_str()), (Outcome::Ok, "status 503"));
        let (url, _) = server(&[], 204).await;
        let r = run_one(
            &step(&format!(
                "http = {{ url = \"{url}\", method = \"DELETE\" }}"
            )),
            &ctx(),
        )
        .await;
        assert_eq!((r.outcome, r.detail.as_str()), (Outcome::Ok, "status 204"));
    }

    #[tokio::test]
    async fn http_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            loop {
                conns.push(listener.accept().await.unwrap());
            }
        });
        let r = run_one(
            &step(&format!(
                "http = {{ url = \"{url}\" }}\ntimeout = \"200ms\""
            )),
            &ctx(),
        )
        .await;
        assert_eq!(r.outcome, Outcome::TimedOut, "{r:?}");
        assert!(r.duration_ms >= 200, "{r:?}");
        held.abort();
    }

    #[tokio::test]
    async fn http_refused_fails() {
        let url = format!("http://127.0.0.1:{}/", closed_port());
        let r = run_one(&step(&format!("http = {{ url = \"{url}\" }}")), &ctx()).await;
        assert_eq!(r.outcome, Outcome::Failed);
        assert!(r.detail.starts_with("connect 127.0.0.1:"), "{r:?}");
    }

    #[tokio::test]
    async fn retries_count_attempts() {
        let (url, count) = server(&[], 500).await;
        let s = step(&format!(
            "http = {{ url = \"{url}\" }}\nretries = 2\nretry_delay = \"10ms\""
        ));
        let r = run_one(&s, &ctx()).await;
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(count.load(Ordering::SeqCst), 3);
        assert_eq!(r.detail, "status 500 (attempt 3/3)");

        let (url, count) = server(&[500, 502], 204).await;
        let s = step(&format!(
            "http = {{ url = \"{url}\" }}\nretries = 2\nretry_delay = \"10ms\""
        ));
        let r = run_one(&s, &ctx()).await;
        assert_eq!((r.outcome, r.detail.as_str()), (Outcome::Ok, "status 204"));
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn retries_stay_inside_the_step_timeout() {
        let (url, count) = server(&[], 500).await;
        let s = step(&format!(
            "http = {{ url = \"{url}\" }}\nretries = 1000\nretry_delay = \"20ms\"\ntimeout = \"300ms\""
        ));
        let r = run_one(&s, &ctx()).await;
        assert_eq!(r.outcome, Outcome::TimedOut);
        assert!(
            r.detail
                .starts_with("timed out after 300ms; last: status 500 (attempt "),
            "{r:?}"
        );
        let n = count.load(Ordering::SeqCst);
        assert!((2..1000).contains(&n), "{n} requests");
    }

    #[tokio::test]
    async fn wait_tcp_waits_for_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let r = run_one(&step(&format!("wait_tcp = \"{addr}\"")), &ctx()).await;
        assert_eq!((r.outcome, r.detail.as_str()), (Outcome::Ok, "connected"));
        drop(listener);

        let port = closed_port();
        let r = run_one(
            &step(&format!(
                "wait_tcp = \"127.0.0.1:{port}\"\ntimeout = \"300ms\""
            )),
            &ctx(),
        )
        .await;
        assert_eq!(r.outcome, Outcome::TimedOut);
        assert!(r.detail.contains("refused"), "{r:?}");

        // The port starts listening while the step waits.
        let port = closed_port();
        let opener = tokio::spawn(async move {
            tokio::time::sleep(StdDuration::from_millis(200)).await;
            let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
            let _ = l.accept().await;
        });
        let r = run_one(
            &step(&format!(
                "wait_tcp = \"localhost:{port}\"\ntimeout = \"5s\""
            )),
            &ctx(),
        )
        .await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert!(r.duration_ms >= 200, "{r:?}");
        opener.abort();
    }

    #[tokio::test]
    async fn wait_http_retries_until_expected() {
        let (url, count) = server(&[503, 503], 200).await;
        let r = run_one(&step(&format!("wait_http = {{ url = \"{url}\" }}")), &ctx()).await;
        assert_eq!((r.outcome, r.detail.as_str()), (Outcome::Ok, "status 200"));
        assert_eq!(count.load(Ordering::SeqCst), 3);

        let (url, _) = server(&[], 200).await;
        let r = run_one(
            &step(&format!(
                "wait_http = {{ url = \"{url}\", expect = [418] }}\ntimeout = \"300ms\""
            )),
            &ctx(),
        )
        .await;
        assert_eq!(r.outcome, Outcome::TimedOut);
        assert_eq!(r.detail, "timed out after 300ms; last: status 200");
    }

    #[tokio::test]
    async fn wait_connections_counts_the_local_port() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (server_end, _) = listener.accept().await.unwrap();

        let wait = |max: u32, timeout: &str| {
            step(&format!(
                "wait_connections = {{ port = {port}, max = {max} }}\ntimeout = \"{timeout}\""
            ))
        };
        let r = run_one(&wait(0, "300ms"), &ctx()).await;
        assert_eq!(r.outcome, Outcome::TimedOut);
        assert_eq!(r.detail, "timed out after 300ms; last: 1 connections");
        let r = run_one(&wait(1, "300ms"), &ctx()).await;
        assert_eq!(
            (r.outcome, r.detail.as_str()),
            (Outcome::Ok, "1 connections")
        );

        // The connection closes while the step waits.
        let closer = tokio::spawn(async move {
            tokio::time::sleep(StdDuration::from_millis(200)).await;
            drop(client);
            drop(server_end);
        });
        let r = run_one(&wait(0, "5s"), &ctx()).await;
        assert_eq!(
            (r.outcome, r.detail.as_str()),
            (Outcome::Ok, "0 connections")
        );
        assert!(r.duration_ms >= 200, "{r:?}");
        closer.await.unwrap();
    }

    #[tokio::test]
    async fn signal_without_app_fails() {
        let r = run_one(&step("signal = \"USR1\""), &ctx()).await;
        assert_eq!(
            (r.outcome, r.detail.as_str()),
            (Outcome::Failed, "no app running")
        );
    }

    #[tokio::test]
    async fn exec_steps_see_the_app_pid_the_cause_and_the_budget_left() {
        let _turn = TEST_CHILDREN.lock().await;
        let mut ctx = ctx();
        ctx.claims = start_reaper();
        ctx.app_pid = Some(Pid::from_raw(4242));
        ctx.cause = Some(Cause::Liveness);
        ctx.budget_end = BudgetEnd::new(Some(Instant::now() + StdDuration::from_secs(60)));
        // The step's own env cannot override what drainit says.
        let check = "test $DRAINIT_APP_PID = 4242 && test $DRAINIT_STOP_CAUSE = liveness && test $DRAINIT_BUDGET_LEFT_MS -gt 50000 && test $DRAINIT_BUDGET_LEFT_MS -le 60000";
        let r = run_one(
            &step(&format!(
                "exec = [\"/bin/sh\", \"-c\", \"{check}\"]\nenv = {{ DRAINIT_APP_PID = \"1\" }}"
            )),
            &ctx,
        )
        .await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        // Poststart: no cause, no budget; no app: empty pid.
        let (ctx_app, mut bare) = (ctx.clone(), ctx);
        bare.app_pid = None;
        bare.cause = None;
        bare.budget_end = BudgetEnd::default();
        let check = "test -z \\\"$DRAINIT_APP_PID$DRAINIT_STOP_CAUSE$DRAINIT_BUDGET_LEFT_MS\\\" && env | grep -q ^DRAINIT_STOP_CAUSE=$";
        let r = run_one(
            &step(&format!("exec = [\"/bin/sh\", \"-c\", \"{check}\"]")),
            &bare,
        )
        .await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        drop(ctx_app);
    }

    #[tokio::test]
    async fn when_runs_a_step_only_for_its_causes() {
        let steps = [
            step("name = \"dump\"\nsleep = \"1ms\"\nwhen = [\"liveness\"]"),
            step("name = \"deregister\"\nsleep = \"1ms\"\nwhen = [\"prestop\", \"signal\"]"),
            step("name = \"always\"\nsleep = \"1ms\""),
        ];
        let mut ctx = ctx();
        let outcomes = |r: &ListResult| r.steps.iter().map(|s| s.outcome).collect::<Vec<_>>();
        ctx.cause = Some(Cause::Prestop);
        let r = run_list(
            ListKind::Drain,
            &steps,
            &ctx,
            std::future::pending(),
            |_| {},
        )
        .await;
        assert!(r.ok);
        assert_eq!(
            outcomes(&r),
            [Outcome::NotSelected, Outcome::Ok, Outcome::Ok]
        );
        assert_eq!(
            r.steps[0].summary_line(),
            "dump: not_selected (0.000s) cause prestop not in when"
        );
        ctx.cause = Some(Cause::Liveness);
        let r = run_list(
            ListKind::Drain,
            &steps,
            &ctx,
            std::future::pending(),
            |_| {},
        )
        .await;
        assert_eq!(
            outcomes(&r),
            [Outcome::Ok, Outcome::NotSelected, Outcome::Ok]
        );
    }

    #[tokio::test]
    async fn exec_steps() {
        let _turn = TEST_CHILDREN.lock().await;
        let mut ctx = ctx();
        ctx.claims = start_reaper();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();

        // Exit codes.
        let r = run_one(&step("exec = [\"/bin/sh\", \"-c\", \"exit 0\"]"), &ctx).await;
        assert_eq!(
            (r.outcome, r.detail.as_str()),
            (Outcome::Ok, "exited with code 0")
        );
        let r = run_one(&step("exec = [\"/bin/sh\", \"-c\", \"exit 3\"]"), &ctx).await;
        assert_eq!(
            (r.outcome, r.detail.as_str()),
            (Outcome::Failed, "exited with code 3")
        );
        let r = run_one(
            &step("exec = [\"/bin/sh\", \"-c\", \"kill -USR1 $$\"]"),
            &ctx,
        )
        .await;
        assert_eq!(
            (r.outcome, r.detail.as_str()),
            (Outcome::Failed, "killed by SIGUSR1")
        );

        // Not found: a failure with the reason, not a panic or a hang.
        let r = run_one(&step("exec = [\"/nonexistent/drainit-test\"]"), &ctx).await;
        assert_eq!(r.outcome, Outcome::Failed);
        assert!(r.detail.contains("command not found"), "{r:?}");

        // Env: app.env plus the step's, the step winning; workdir from the
        // app, then from the step.
        ctx.exec_base.env.insert("FOO".into(), "app".into());
        ctx.exec_base.env.insert("BASE".into(), "1".into());
        ctx.exec_base.workdir = Some(dir.path().display().to_string());
        let check = format!(
            "test \\\"$FOO\\\" = step && test \\\"$BASE\\\" = 1 && test \\\"$(pwd)\\\" = {d}"
        );
        let r = run_one(
            &step(&format!(
                "exec = [\"/bin/sh\", \"-c\", \"{check}\"]\nenv = {{ FOO = \"step\" }}"
            )),
            &ctx,
        )
        .await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        let r = run_one(
            &step("exec = [\"/bin/sh\", \"-c\", \"test $(pwd) = /\"]\nworkdir = \"/\""),
            &ctx,
        )
        .await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        ctx.exec_base = Spec::default();

        // User: the step's own (we run as root in CI and here).
        if nix::unistd::geteuid().is_root() {
            let r = run_one(
                &step("exec = [\"/bin/sh\", \"-c\", \"test $(id -u):$(id -g) = 65534:65533\"]\nuser = \"65534:65533\""),
                &ctx,
            )
            .await;
            assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        }

        // Retries run the command again.
        let log = dir.path().join("attempts");
        let r = run_one(
            &step(&format!(
                "exec = [\"/bin/sh\", \"-c\", \"echo x >> {}; exit 1\"]\nretries = 2\nretry_delay = \"10ms\"",
                log.display()
            )),
            &ctx,
        )
        .await;
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(r.detail, "exited with code 1 (attempt 3/3)");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "x\nx\nx\n");

        // Timeout kills the whole process group, grandchildren included.
        let bg = dir.path().join("bg");
        let r = run_one(
            &step(&format!(
                "exec = [\"/bin/sh\", \"-c\", \"sleep 100 & echo $! > {}; sleep 100\"]\ntimeout = \"1s\"",
                bg.display()
            )),
            &ctx,
        )
        .await;
        assert_eq!(r.outcome, Outcome::TimedOut, "{r:?}");
        assert!(r.duration_ms >= 1000, "{r:?}");
        let shell = running_pid(&r.detail);
        let grandchild = read_pid(&bg).await;
        wait_dead(shell).await;
        wait_dead(grandchild).await;

        // So does a cut.
        let bg = dir.path().join("bg2");
        let steps = [step(&format!(
            "exec = [\"/bin/sh\", \"-c\", \"sleep 100 & echo $! > {}; sleep 100\"]",
            bg.display()
        ))];
        let marker = bg.clone();
        // Cut once the grandchild is known to run: an event, not a guess.
        let cut = async move {
            read_pid(&marker).await;
        };
        let result = run_list(ListKind::OnExit, &steps, &ctx, cut, |_| {}).await;
        assert_eq!(outcomes(&result), [Outcome::Cut]);
        let shell = running_pid(&result.steps[0].detail);
        wait_dead(shell).await;
        wait_dead(read_pid(&bg).await).await;
    }

    #[tokio::test]
    async fn signal_steps_reach_the_app() {
        let _turn = TEST_CHILDREN.lock().await;
        let mut ctx = ctx();
        ctx.claims = start_reaper();
        let dir = tempfile::tempdir().unwrap();

        // An app whose shell has a child in its group.
        let spawn_app = |marker: &Path| {
            let spec = Spec {
                argv: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!("sleep 100 & echo $! > {}; wait", marker.display()).into(),
                ],
                ..Spec::default()
            };
            let pid = crate::init::child::spawn(&spec).unwrap();
            (pid, ctx.claims.claim(pid))
        };

        // group: the shell and its child both get TERM.
        let marker = dir.path().join("group");
        let (pid, status) = spawn_app(&marker);
        let sleeper = read_pid(&marker).await;
        ctx.app_pid = Some(pid);
        ctx.forward_to = ForwardTo::Group;
        let r = run_one(&step("signal = \"TERM\""), &ctx).await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert_eq!(r.detail, format!("SIGTERM sent to process group {pid}"));
        let status = tokio::time::timeout(StdDuration::from_secs(5), status)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, Status::Signaled(libc::SIGTERM));
        wait_dead(sleeper).await;

        // child: only the shell does; its child lives on.
        let marker = dir.path().join("child");
        let (pid, status) = spawn_app(&marker);
        let sleeper = read_pid(&marker).await;
        ctx.app_pid = Some(pid);
        ctx.forward_to = ForwardTo::Child;
        let r = run_one(&step("signal = \"TERM\""), &ctx).await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        let status = tokio::time::timeout(StdDuration::from_secs(5), status)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, Status::Signaled(libc::SIGTERM));
        assert!(!dead(sleeper), "the app's child got the signal too");
        killpg(pid, NixSignal::SIGKILL).unwrap();
        wait_dead(sleeper).await;

        // A real-time signal (nix cannot name these).
        let spec = Spec {
            argv: vec!["sleep".into(), "100".into()],
            ..Spec::default()
        };
        let pid = crate::init::child::spawn(&spec).unwrap();
        let status = ctx.claims.claim(pid);
        ctx.app_pid = Some(pid);
        let r = run_one(&step("signal = \"RTMIN+2\""), &ctx).await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        let status = tokio::time::timeout(StdDuration::from_secs(5), status)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            status,
            Status::Signaled(crate::config::signal::sigrtmin() + 2)
        );

        // The app is gone: kill fails, the step says why.
        let r = run_one(&step("signal = \"TERM\""), &ctx).await;
        assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
        assert!(r.detail.contains("ESRCH"), "{r:?}");
    }
}

//! A kubelet emulator: what the kubelet does to a container when it kills a
//! pod, and how it probes it — against the real `drainit` as PID 1.
//!
//! It follows `killContainer` in `pkg/kubelet/kuberuntime/
//! kuberuntime_container.go`: the grace period comes from the pod; the
//! preStop hook runs bounded by that whole grace period (a hook that
//! outlasts it is abandoned — its goroutine keeps going, the kubelet does
//! not); the hook's time is subtracted, but never below
//! `minimumGracePeriodInSeconds = 2`; then the runtime's `StopContainer`
//! sends SIGTERM and SIGKILL when that time is up. Hooks are plain GETs
//! with the pod's `httpHeaders` and `User-Agent: kube-lifecycle/<ver>`,
//! no timeout (`pkg/kubelet/lifecycle/handlers.go`); probes come from
//! `pkg/probe/http/http.go` (see [`http::probe`]).
//!
//! Every phase is time-stamped in a [`KillReport`] so tests can assert the
//! order and the budgets.
//!
//! Two more things the kubelet does, so tests read what `kubectl describe
//! pod` would show:
//! - a liveness kill ([`Kubelet::liveness_kill`]): the prober's worker
//!   (`pkg/kubelet/prober/worker.go`, `doProbe`) probes every
//!   `periodSeconds` and turns the result to Failure only after
//!   `failureThreshold` failures in a row (a success resets the run);
//!   `computePodActions` (`pkg/kubelet/kuberuntime/kuberuntime_manager.go`)
//!   then kills the container "failed liveness probe" through the same
//!   `killContainer`: preStop, then the stop;
//! - the Last State message ([`last_state_message`]):
//!   `convertToKubeContainerStatus` and `getTerminationMessage` in
//!   `kuberuntime_container.go` read at most the last 4096 bytes of the
//!   termination file; with `terminationMessagePolicy:
//!   FallbackToLogsOnError`, an exit code other than 0 and an empty (or
//!   missing) file, the message is the log's last 80 lines, at most 2048
//!   bytes, keeping the end (`readLastStringFromContainerLogs`, with
//!   `MaxContainerTerminationMessageLogLines` and `...LogLength` from
//!   `pkg/kubelet/container/runtime.go`).
#![allow(dead_code)]

pub mod container;
pub mod http;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use container::{free_port, sh, wait_for, Container, Options};
pub use http::{Request, Response};

/// The kubelet's floor between SIGTERM and SIGKILL.
pub const MINIMUM_GRACE: Duration = Duration::from_secs(2);

/// `lifecycle.preStop.httpGet` (port: drainit's).
#[derive(Debug, Clone)]
pub struct HttpGet {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl HttpGet {
    pub fn new(path: &str) -> HttpGet {
        HttpGet {
            path: path.to_string(),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> HttpGet {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// The kubelet and the one container of the pod it runs.
pub struct Kubelet {
    pub pod: Container,
    pub pre_stop: Option<HttpGet>,
}

/// What happened to the preStop hook call.
#[derive(Debug)]
pub struct HookRun {
    pub start: Instant,
    /// When it answered; `None` if it was abandoned at the grace period.
    pub end: Option<Instant>,
    pub response: Option<Result<Response, String>>,
    /// The hook's connection, kept open and idle after the answer, as the
    /// kubelet's Go transport keeps it for reuse: it must not hold up
    /// drainit's exit.
    pub idle_conn: Option<std::net::TcpStream>,
    /// Where an abandoned call still delivers its outcome.
    late: Option<mpsc::Receiver<HookOutcome>>,
}

type HookOutcome = (
    Instant,
    Result<Response, String>,
    Option<std::net::TcpStream>,
);

impl HookRun {
    /// The answer, if the hook returned in time.
    pub fn answered(&self) -> &Response {
        match &self.response {
            Some(Ok(r)) => r,
            other => panic!("the preStop hook did not answer: {other:?}"),
        }
    }

    /// For an abandoned hook: waits up to `timeout` for its late outcome.
    pub fn late_outcome(&self, timeout: Duration) -> Option<(Instant, Result<Response, String>)> {
        let (at, outcome, _) = self.late.as_ref()?.recv_timeout(timeout).ok()?;
        Some((at, outcome))
    }
}

/// `livenessProbe` (httpGet on drainit's `/healthz`).
#[derive(Debug, Clone, Copy)]
pub struct LivenessProbe {
    pub period: Duration,
    pub failure_threshold: u32,
}

/// `kuberuntime_container.go`: `MaxContainerTerminationMessageLength`.
pub const MAX_TERMINATION_MESSAGE: usize = 4096;
/// `MaxContainerTerminationMessageLogLines`.
pub const MAX_LOG_LINES: usize = 80;
/// `MaxContainerTerminationMessageLogLength`.
pub const MAX_LOG_BYTES: usize = 2048;

/// The message `kubectl describe pod` shows under Last State for a
/// container that exited with `exit_code`, whose termination file is
/// `file` and whose log is `log` (see the module docs).
pub fn last_state_message(
    file: &std::path::Path,
    log: &str,
    exit_code: i32,
    fallback_to_logs_on_error: bool,
) -> String {
    let fallback = fallback_to_logs_on_error && exit_code != 0;
    let data = std::fs::read(file).unwrap_or_default();
    let data = &data[data.len().saturating_sub(MAX_TERMINATION_MESSAGE)..];
    if !(fallback && data.is_empty()) {
        return String::from_utf8_lossy(data).into_owned();
    }
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(MAX_LOG_LINES)..].join("\n") + "\n";
    let bytes = tail.as_bytes();
    String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(MAX_LOG_BYTES)..]).into_owned()
}

/// The time line of one `kill_pod`.
#[derive(Debug)]
pub struct KillReport {
    pub grace: Duration,
    /// `killContainer` starts: the grace clock starts here.
    pub t0: Instant,
    /// `t0` on the wall clock, to compare with `date +%s%N` in scripts.
    pub t0_wall: std::time::SystemTime,
    pub hook: Option<HookRun>,
    /// The time given to `StopContainer`: grace minus the hook's time, at
    /// least 2s.
    pub stop_timeout: Duration,
    pub sigterm: Instant,
    /// Set when the container had not exited when `stop_timeout` was up.
    pub sigkill: Option<Instant>,
    pub exited: Instant,
    pub status: std::process::ExitStatus,
    /// drainit's own exit code, when it exited before our SIGKILL.
    pub code: Option<i32>,
}

impl KillReport {
    /// Seconds from `t0` to `at`, for messages and figures.
    pub fn at(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.t0).as_secs_f64()
    }
}

impl Kubelet {
    pub fn new(pod: Container) -> Kubelet {
        Kubelet {
            pod,
            pre_stop: None,
        }
    }

    /// With a `preStop: httpGet: { path, port: drainit's, httpHeaders }`.
    pub fn with_pre_stop(mut self, hook: HttpGet) -> Kubelet {
        self.pre_stop = Some(hook);
        self
    }

    /// The request a lifecycle hook makes: no timeout, keep-alive allowed.
    pub fn hook_request<'a>(&self, hook: &'a HttpGet) -> Request<'a> {
        let mut req = Request::new(self.pod.port, "GET", &hook.path)
            .header(
                "User-Agent",
                &format!("kube-lifecycle/{}", http::KUBE_VERSION),
            )
            .header("Accept", "*/*")
            .timeout(None);
        for (n, v) in &hook.headers {
            req = req.header(n, v);
        }
        req
    }

    /// Calls a hook synchronously (as the kubelet would, without a timeout).
    pub fn call_hook(&self, hook: &HttpGet) -> Result<Response, String> {
        self.hook_request(hook).send().map_err(|e| e.to_string())
    }

    /// Calls a hook on an idle keep-alive connection from an earlier hook,
    /// as the kubelet's pooled Go transport does.
    pub fn call_hook_on(
        &self,
        conn: &std::net::TcpStream,
        hook: &HttpGet,
    ) -> Result<Response, String> {
        http::exchange_on(conn, &self.hook_request(hook), None).map_err(|e| e.to_string())
    }

    /// Calls a hook and keeps its connection open for reuse.
    pub fn call_hook_keep(
        &self,
        hook: &HttpGet,
    ) -> Result<(Response, std::net::TcpStream), String> {
        self.hook_request(hook)
            .send_keep()
            .map_err(|e| e.to_string())
    }

    /// A readiness/liveness probe against drainit: the status, or `None`.
    pub fn probe(&self, path: &str) -> Option<u16> {
        http::probe(self.pod.port, path)
    }

    /// Starts probing `path` every `every` in a thread.
    pub fn prober(&self, path: &str, every: Duration) -> Prober {
        Prober::start(self.pod.port, path, every)
    }

    /// The liveness worker, then the kill it leads to: probes `/healthz`
    /// every `probe.period` until `failure_threshold` failures in a row,
    /// then [`Kubelet::kill_pod`]. Returns how many probes ran and the
    /// kill's report.
    pub fn liveness_kill(&self, probe: LivenessProbe, grace: Duration) -> (u32, KillReport) {
        let (mut probes, mut failures) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while failures < probe.failure_threshold {
            assert!(Instant::now() < deadline, "the liveness probe never failed");
            probes += 1;
            match self.probe("/healthz") {
                // `pkg/probe/http`: 200-399 is Success.
                Some(code) if (200..400).contains(&code) => failures = 0,
                _ => failures += 1,
            }
            if failures < probe.failure_threshold {
                std::thread::sleep(probe.period);
            }
        }
        (probes, self.kill_pod(grace))
    }

    /// `killContainer`: preStop bounded by `grace`, SIGTERM, SIGKILL after
    /// what is left of `grace` (at least 2s). Waits for the exit.
    pub fn kill_pod(&self, grace: Duration) -> KillReport {
        let t0_wall = std::time::SystemTime::now();
        let t0 = Instant::now();
        let hook = self.pre_stop.as_ref().map(|hook| {
            let req = self.hook_request(hook);
            let (addr, path, headers) = (req.addr, req.path.to_string(), req.headers.clone());
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let req = Request {
                    addr,
                    method: "GET",
                    path: &path,
                    headers,
                    timeout: None,
                };
                let (outcome, conn) = match req.send_keep() {
                    Ok((response, conn)) => (Ok(response), Some(conn)),
                    Err(e) => (Err(e.to_string()), None),
                };
                let _ = tx.send((Instant::now(), outcome, conn));
            });
            match rx.recv_timeout(grace) {
                Ok((end, outcome, conn)) => HookRun {
                    start: t0,
                    end: Some(end),
                    response: Some(outcome),
                    idle_conn: conn,
                    late: None,
                },
                // Abandoned: the call goes on in its thread, unwatched.
                Err(_) => HookRun {
                    start: t0,
                    end: None,
                    response: None,
                    idle_conn: None,
                    late: Some(rx),
                },
            }
        });
        let stop_timeout = grace.saturating_sub(t0.elapsed()).max(MINIMUM_GRACE);
        let sigterm = Instant::now();
        self.pod.signal(libc::SIGTERM);
        let sigkill = match self.pod.wait_exit(stop_timeout) {
            Some(_) => None,
            None => {
                let at = Instant::now();
                self.pod.signal(libc::SIGKILL);
                Some(at)
            }
        };
        let (exited, status) = self
            .pod
            .wait_exit(Duration::from_secs(10))
            .expect("the container exits after SIGKILL");
        // After our SIGKILL unshare reports 1, not drainit's code.
        let code = match sigkill {
            Some(_) => None,
            None => self.pod.exit_code(),
        };
        KillReport {
            grace,
            t0,
            t0_wall,
            hook,
            stop_timeout,
            sigterm,
            sigkill,
            exited,
            status,
            code,
        }
    }
}

/// One probe: when it was sent, when it ended, what it got.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub start: Instant,
    pub end: Instant,
    pub status: Option<u16>,
}

/// Probes one path in a loop until stopped.
pub struct Prober {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: JoinHandle<()>,
}

impl Prober {
    pub fn start(port: u16, path: &str, every: Duration) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop2, samples2) = (Arc::clone(&stop), Arc::clone(&samples));
        let path = path.to_string();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let start = Instant::now();
                let status = http::probe(port, &path);
                samples2.lock().unwrap().push(Sample {
                    start,
                    end: Instant::now(),
                    status,
                });
                std::thread::sleep(every);
            }
        });
        Prober {
            stop,
            samples,
            thread,
        }
    }

    /// Waits until the prober itself has seen `status`.
    pub fn wait_for(&self, status: Option<u16>) {
        wait_for(
            &format!("the prober to see {status:?}"),
            Duration::from_secs(10),
            || {
                let samples = self.samples.lock().unwrap();
                samples.iter().any(|s| s.status == status).then_some(())
            },
        );
    }

    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("prober thread");
        let samples = self.samples.lock().unwrap();
        samples.clone()
    }
}

/// The first sample that ended after `after` with `status`.
pub fn first_with(samples: &[Sample], after: Instant, status: Option<u16>) -> Option<Sample> {
    samples
        .iter()
        .find(|s| s.end >= after && s.status == status)
        .copied()
}

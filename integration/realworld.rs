//! drainit in front of real software: HAProxy rolling termination, nginx.
//!
//! The headline scenario (issue 4): Debian's HAProxy balances two backends
//! (`examples/haproxy-rolling/app.py`, a Python HTTP server that simply dies
//! on SIGTERM) and health-checks each one; a load generator keeps requests
//! in flight through it; one backend is terminated the way the kubelet does
//! it (preStop `httpGet` on drainit's `/prestop`, SIGTERM, SIGKILL at the
//! grace period, see `kubelet/mod.rs`). HAProxy has `retries 0` and no
//! redispatch, so every request that reaches a dying backend comes back as a
//! 502/503 or a broken connection, and the load generator counts both.
//! Under plain `tini` the count is above zero in every run; under drainit,
//! whose drain (readiness flip, then `wait_quiet` until the traffic on the
//! app's port has stopped) lets HAProxy stop routing before SIGTERM, it is
//! zero in every run — with fast checks, and with slow checks and pooled
//! server-side keep-alive connections (`haproxy-slow.cfg`, the CI subset
//! of `examples/haproxy-rolling/matrix.sh`), where the drain also ends
//! within the balancer's notice time plus `quiet` plus 20%.
//!
//! The nginx scenario: a slow download is in flight when the pod is
//! terminated; under drainit with `TERM` rewritten to `QUIT` (nginx's
//! graceful shutdown) it completes byte for byte, under tini (SIGTERM, nginx's
//! fast shutdown) it is cut.
//!
//! The tests use the example files themselves (`examples/haproxy-rolling/`,
//! `examples/nginx/`), with the fixed example ports replaced by free ones.
//! Every process runs as PID 1 of its own PID namespace (`unshare`) or as a
//! child of the test, and dies with the value that owns it.

// The emulator is shared with lifecycle.rs, which uses all of it.
#[allow(unused_imports)]
#[path = "kubelet/mod.rs"]
mod kubelet;
mod util;

use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kubelet::container::children_of;
use kubelet::{free_port, wait_for, Container, HttpGet, Kubelet, Options};

const APP_PY: &str = include_str!("../examples/haproxy-rolling/app.py");
const HAPROXY_CFG: &str = include_str!("../examples/haproxy-rolling/haproxy.cfg");
const HAPROXY_SLOW_CFG: &str = include_str!("../examples/haproxy-rolling/haproxy-slow.cfg");
const BACKEND_TOML: &str = include_str!("../examples/haproxy-rolling/drainit.toml");
const NGINX_CONF: &str = include_str!("../examples/nginx/nginx.conf");
const NGINX_TOML: &str = include_str!("../examples/nginx/drainit.toml");

/// The example configs' fixed app port, replaced by a free one.
const EXAMPLE_PORT: &str = "8080";

const PYTHON: &str = "/usr/bin/python3";
const STARTUP: Duration = Duration::from_secs(15);

/// Runs of each rolling scenario per test.
const RUNS: usize = 5;
/// Connections the load generator keeps busy.
const CONCURRENCY: usize = 8;
/// The backend's time per request (ms): requests are in flight all along.
const APP_DELAY_MS: u32 = 20;
/// The pod's terminationGracePeriodSeconds.
const GRACE: Duration = Duration::from_secs(6);

// ---------------------------------------------------------------------------
// Processes

/// A process of the test (HAProxy, or `unshare ... tini ...`) whose whole
/// tree is SIGKILLed on drop; its stdout and stderr go to files.
struct Proc {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, dir: &Path, argv: &[&str]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        Proc {
            child,
            name: name.to_string(),
            log,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The host pid of the only child (PID 1 of the namespace `unshare`
    /// made).
    fn ns_init(&self) -> i32 {
        let top = self.pid();
        wait_for("unshare's child", STARTUP, || {
            children_of(top).first().copied()
        })
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.exited() {
            // Gathered before anything dies, so that no orphan escapes.
            let mut all = vec![self.pid()];
            let mut todo = children_of(self.pid());
            while let Some(p) = todo.pop() {
                all.push(p);
                todo.extend(children_of(p));
            }
            for pid in all {
                // SAFETY: kill(2) with plain integers.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log());
        }
    }
}

/// A directory the unprivileged nginx workers can read.
fn world_readable_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("drainit-realworld-")
        .tempdir()
        .expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
    dir
}

fn wait_tcp(port: u16, what: &str) {
    wait_for(what, STARTUP, || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
}

/// The kubelet's `killContainer` for a container without a preStop hook
/// (tini has no HTTP server): SIGTERM to PID 1, SIGKILL when `grace` is
/// up. Returns when SIGTERM was sent and whether SIGKILL was needed.
fn kill_plain_pod(pod: &mut Proc, grace: Duration) -> (Instant, bool) {
    let init = pod.ns_init();
    let sigterm = Instant::now();
    // SAFETY: kill(2) with plain integers.
    unsafe { libc::kill(init, libc::SIGTERM) };
    let deadline = sigterm + grace;
    while Instant::now() < deadline {
        if pod.exited() {
            return (sigterm, false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: as above.
    unsafe { libc::kill(init, libc::SIGKILL) };
    wait_for("the pod to exit after SIGKILL", STARTUP, || {
        pod.exited().then_some(())
    });
    (sigterm, true)
}

// ---------------------------------------------------------------------------
// The load generator

/// What one request through HAProxy got.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// 2xx from the named backend.
    Ok(String),
    /// Any other status (HAProxy's 502/503).
    Status(u16),
    /// Connect, write or read failed, or the answer was cut.
    Error(String),
}

/// `CONCURRENCY` keep-alive clients sending `GET /` back to back.
struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<Mutex<Vec<u64>>>,
    threads: Vec<JoinHandle<Vec<Outcome>>>,
    start: Instant,
}

impl Load {
    /// Starts the clients; `names` are the backends whose 2xx answers are
    /// counted live in [`Load::served`].
    fn start(port: u16, names: &[&str]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(Mutex::new(vec![0; names.len()]));
        let names: Arc<Vec<String>> = Arc::new(names.iter().map(|s| s.to_string()).collect());
        let threads = (0..CONCURRENCY)
            .map(|_| {
                let (stop, served, names) =
                    (Arc::clone(&stop), Arc::clone(&served), Arc::clone(&names));
                std::thread::spawn(move || {
                    let addr = SocketAddr::from(([127, 0, 0, 1], port));
                    let mut conn: Option<BufReader<TcpStream>> = None;
                    let mut records = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let (outcome, keep) = one_request(addr, &mut conn);
                        if let Outcome::Ok(name) = &outcome {
                            if let Some(i) = names.iter().position(|n| n == name) {
                                served.lock().unwrap()[i] += 1;
                            }
                        }
                        if !keep {
                            conn = None;
                        }
                        records.push(outcome);
                    }
                    records
                })
            })
            .collect();
        Load {
            stop,
            served,
            threads,
            start: Instant::now(),
        }
    }

    /// 2xx answers so far from backend `i`.
    fn served(&self, i: usize) -> u64 {
        self.served.lock().unwrap()[i]
    }

    /// Waits until backend `i` has answered `n` requests in all.
    fn wait_served(&self, i: usize, n: u64, what: &str) {
        wait_for(what, STARTUP, || (self.served(i) >= n).then_some(()));
    }

    /// Stops the clients; returns every outcome and the load's duration.
    fn finish(self) -> (Vec<Outcome>, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for t in self.threads {
            all.extend(t.join().expect("load thread"));
        }
        (all, self.start.elapsed())
    }
}

/// One `GET /` on the kept connection (or a new one). Returns the outcome
/// and whether the connection can be used again.
fn one_request(addr: SocketAddr, conn: &mut Option<BufReader<TcpStream>>) -> (Outcome, bool) {
    if conn.is_none() {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = s.set_nodelay(true);
                *conn = Some(BufReader::new(s));
            }
            Err(e) => return (Outcome::Error(format!("connect: {e}")), false),
        }
    }
    let Some(reader) = conn.as_mut() else {
        return (Outcome::Error("no connection".into()), false);
    };
    let req = b"GET / HTTP/1.1\r\nHost: rolling\r\nUser-Agent: drainit-realworld\r\n\r\n";
    if let Err(e) = reader.get_mut().write_all(req) {
        return (Outcome::Error(format!("write: {e}")), false);
    }
    match util::http::read_response(reader, false) {
        Ok(response) => {
            let outcome = if (200..300).contains(&response.status) {
                Outcome::Ok(response.body.trim().to_string())
            } else {
                Outcome::Status(response.status)
            };
            (outcome, !response.closes())
        }
        Err(e) => (Outcome::Error(format!("read: {e}")), false),
    }
}

// ---------------------------------------------------------------------------
// The rolling termination

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Init {
    Tini,
    Drainit,
}

/// One backend: the app under tini or drainit.
enum Backend {
    Tini(Proc),
    Drainit(Kubelet),
}

struct Pod {
    backend: Backend,
    app_port: u16,
    /// Where HAProxy checks /readyz: drainit's port, or the app's own.
    check_port: u16,
}

/// The app, logging the wall-clock time of each request it receives to
/// `dir/<name>.requests` (when the balancer stopped sending).
fn app_argv(dir: &Path, port: u16, name: &str) -> Vec<String> {
    vec![
        "/usr/bin/env".into(),
        format!(
            "REQUEST_LOG={}",
            dir.join(format!("{name}.requests")).display()
        ),
        PYTHON.into(),
        dir.join("app.py").display().to_string(),
        port.to_string(),
        name.into(),
        APP_DELAY_MS.to_string(),
    ]
}

fn start_pod(init: Init, dir: &Path, name: &str) -> Pod {
    let app_port = free_port();
    match init {
        Init::Tini => {
            let argv = app_argv(dir, app_port, name);
            let mut full: Vec<&str> = vec!["unshare", "--pid", "--fork", "--mount-proc", "tini"];
            full.push("--");
            full.extend(argv.iter().map(String::as_str));
            let proc = Proc::spawn(&format!("tini-{name}"), dir, &full);
            wait_tcp(app_port, &format!("backend {name} listening"));
            Pod {
                backend: Backend::Tini(proc),
                app_port,
                check_port: app_port,
            }
        }
        Init::Drainit => {
            let pod_dir = tempfile::tempdir().expect("tempdir");
            let config = BACKEND_TOML.replace(EXAMPLE_PORT, &app_port.to_string());
            let container = Container::start_in(
                pod_dir,
                Options {
                    config,
                    app: app_argv(dir, app_port, name),
                    ..Options::default()
                },
            );
            let k = Kubelet::new(container).with_pre_stop(HttpGet::new("/prestop"));
            wait_for(&format!("backend {name}: /readyz 200"), STARTUP, || {
                (k.probe("/readyz") == Some(200)).then_some(())
            });
            let check_port = k.pod.port;
            Pod {
                backend: Backend::Drainit(k),
                app_port,
                check_port,
            }
        }
    }
}

/// What one rolling termination counted.
#[derive(Debug)]
struct RunResult {
    requests: usize,
    failures: usize,
    /// Failures that were HAProxy's 502/503.
    statuses: usize,
    /// A few failures, for the message.
    sample: Vec<Outcome>,
    rate: f64,
    /// 2xx answers from the terminated backend (it carried load).
    victim_ok: usize,
    /// The drain's summary (/prestop's answer) under drainit.
    summary: String,
    /// How long the preStop hook took, under drainit.
    drain: Option<Duration>,
    /// From the start of the termination to the last request backend `a`
    /// received, under drainit: when the balancer stopped sending.
    notice: Option<f64>,
}

fn haproxy_config(template: &str, frontend: u16, a: &Pod, b: &Pod) -> String {
    template
        .replace("@FRONTEND_PORT@", &frontend.to_string())
        .replace("@A_PORT@", &a.app_port.to_string())
        .replace("@A_CHECK_PORT@", &a.check_port.to_string())
        .replace("@B_PORT@", &b.app_port.to_string())
        .replace("@B_CHECK_PORT@", &b.check_port.to_string())
}

/// Two backends behind HAProxy (`template`: fast or slow checks), load
/// through it, backend `a` terminated the kubelet's way; counts what failed.
fn rolling_run(init: Init, template: &str) -> RunResult {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("app.py"), APP_PY).expect("write app.py");
    let mut a = start_pod(init, dir.path(), "a");
    let b = start_pod(init, dir.path(), "b");

    let frontend = free_port();
    let cfg = dir.path().join("haproxy.cfg");
    fs::write(&cfg, haproxy_config(template, frontend, &a, &b)).expect("write haproxy.cfg");
    let cfg = cfg.display().to_string();
    let haproxy = Proc::spawn("haproxy", dir.path(), &["haproxy", "-db", "-f", &cfg]);
    wait_tcp(frontend, "HAProxy's frontend");

    // Both servers up and routed to, before anything is counted.
    let mut seen = [false, false];
    wait_for("HAProxy routing to both backends", STARTUP, || {
        let mut conn = None;
        if let (Outcome::Ok(name), _) =
            one_request(SocketAddr::from(([127, 0, 0, 1], frontend)), &mut conn)
        {
            match name.as_str() {
                "a" => seen[0] = true,
                "b" => seen[1] = true,
                _ => {}
            }
        }
        (seen[0] && seen[1]).then_some(())
    });

    let load = Load::start(frontend, &["a", "b"]);
    // Both carry load before the kill.
    load.wait_served(0, 30, "backend a to serve 30 requests");
    load.wait_served(1, 30, "backend b to serve 30 requests");

    let t_kill = std::time::SystemTime::now();
    let mut drain = None;
    let summary = match &mut a.backend {
        Backend::Drainit(k) => {
            let report = k.kill_pod(GRACE);
            assert!(
                report.sigkill.is_none(),
                "the drained backend needed SIGKILL: {report:?}"
            );
            // Killed by the SIGTERM after the drain: 143, mapped to 0.
            assert_eq!(report.code, Some(0), "drainit's exit code: {report:?}");
            let hook = report.hook.as_ref().expect("a preStop hook ran");
            drain = hook.end.map(|end| end.duration_since(hook.start));
            hook.answered().body.clone()
        }
        Backend::Tini(p) => {
            let (_, killed) = kill_plain_pod(p, GRACE);
            assert!(!killed, "the app under tini needed SIGKILL");
            String::new()
        }
    };
    // Past the moment HAProxy noticed: backend b alone serves a while.
    let after = load.served(1);
    load.wait_served(
        1,
        after + 100,
        "backend b to serve 100 requests after the kill",
    );
    let (records, took) = load.finish();
    drop(haproxy);

    let failures: Vec<&Outcome> = records
        .iter()
        .filter(|o| !matches!(o, Outcome::Ok(_)))
        .collect();
    let notice = drain
        .and(last_request(&dir.path().join("a.requests")))
        .map(|last| {
            let t_kill = t_kill
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs_f64();
            last - t_kill
        });
    let victim_ok = records
        .iter()
        .filter(|o| **o == Outcome::Ok("a".into()))
        .count();
    RunResult {
        requests: records.len(),
        failures: failures.len(),
        statuses: failures
            .iter()
            .filter(|o| matches!(o, Outcome::Status(_)))
            .count(),
        sample: failures.iter().take(5).map(|o| (*o).clone()).collect(),
        rate: records.len() as f64 / took.as_secs_f64(),
        victim_ok,
        summary,
        drain,
        notice,
    }
}

/// The latest wall-clock time in an app's request log.
fn last_request(log: &Path) -> Option<f64> {
    fs::read_to_string(log)
        .ok()?
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .reduce(f64::max)
}

fn rolling(init: Init, template: &str, runs: usize) -> Vec<RunResult> {
    (0..runs)
        .map(|run| {
            let r = rolling_run(init, template);
            println!(
                "{init:?} run {}: {} failed ({} HAProxy 502/503, {} connections closed or reset) of {} requests ({:.0} req/s, concurrency {CONCURRENCY}, {} answered by the terminated backend) {:?}",
                run + 1,
                r.failures,
                r.statuses,
                r.failures - r.statuses,
                r.requests,
                r.rate,
                r.victim_ok,
                r.sample
            );
            if !r.summary.is_empty() {
                println!(
                    "  drain: {:?}, notice {:?} s: {}",
                    r.drain,
                    r.notice,
                    r.summary.trim().replace('\n', "; ")
                );
            }
            assert!(r.victim_ok >= 30, "backend a carried no load: {r:?}");
            r
        })
        .collect()
}

/// Without a drain, requests fail: the app dies on SIGTERM while HAProxy
/// still routes to it (it has not run a failing check yet) and while
/// requests are in flight on it.
#[test]
fn haproxy_rolling_termination_under_tini_fails_requests() {
    for (run, r) in rolling(Init::Tini, HAPROXY_CFG, RUNS).iter().enumerate() {
        assert!(
            r.failures > 0,
            "run {}: no request failed under tini, so the scenario proves nothing: {r:?}",
            run + 1
        );
    }
}

/// With drainit's drain (readiness 503 at once, a sleep of a few check
/// intervals, then wait_connections), HAProxy stops routing to the backend
/// and its requests finish before SIGTERM: not one request fails.
#[test]
fn haproxy_rolling_termination_under_drainit_fails_none() {
    for (run, r) in rolling(Init::Drainit, HAPROXY_CFG, RUNS).iter().enumerate() {
        assert_eq!(
            r.failures,
            0,
            "run {}: requests failed under drainit: {r:?}",
            run + 1
        );
        assert_quiet_drain(run, r);
    }
}

/// The drain's one step, wait_quiet, succeeded (it saw the traffic stop,
/// it did not time out), and it lasted no longer than the balancer's notice
/// time plus `quiet` (1 s), plus 20%.
fn assert_quiet_drain(run: usize, r: &RunResult) {
    let steps: Vec<&str> = r.summary.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        steps.len() == 1 && steps[0].contains(": ok ("),
        "run {}: the drain did not finish cleanly:\n{}",
        run + 1,
        r.summary
    );
    let (drain, notice) = (r.drain.expect("drain time"), r.notice.expect("notice time"));
    let bound = (notice.max(0.0) + 1.0) * 1.2;
    assert!(
        drain.as_secs_f64() <= bound,
        "run {}: the drain took {drain:?}, more than (notice {notice:.3}s + quiet 1s) + 20%",
        run + 1
    );
}

/// HAProxy noticing slowly (a check every second, down after two) with
/// server-side keep-alive reuse: its pool's connections to the backend stay
/// open after it stopped sending. wait_quiet still ends the drain once the
/// traffic stopped, and not one request fails.
#[test]
fn haproxy_slow_checks_and_reuse_under_wait_quiet_fail_none() {
    for (run, r) in rolling(Init::Drainit, HAPROXY_SLOW_CFG, 2)
        .iter()
        .enumerate()
    {
        assert_eq!(
            r.failures,
            0,
            "run {}: requests failed under drainit: {r:?}",
            run + 1
        );
        assert_quiet_drain(run, r);
    }
}

// ---------------------------------------------------------------------------
// nginx: a download in flight when the pod is stopped

/// The size of the slow download: two seconds at the example's 512 KiB/s.
const BIG: usize = 1024 * 1024;

/// nginx's scratch directory with the example's config, `www/slow/big.bin`
/// and the argv that starts it in the foreground.
struct Nginx {
    dir: tempfile::TempDir,
    port: u16,
    body: Vec<u8>,
}

impl Nginx {
    fn prepare() -> Nginx {
        let dir = world_readable_dir();
        let port = free_port();
        let d = dir.path().display().to_string();
        fs::create_dir_all(dir.path().join("www/slow")).expect("mkdir www");
        fs::create_dir_all(dir.path().join("tmp")).expect("mkdir tmp");
        for sub in ["www", "www/slow"] {
            fs::set_permissions(dir.path().join(sub), fs::Permissions::from_mode(0o755))
                .expect("chmod www");
        }
        // Not compressible, not repetitive: a cut shows as a short count.
        let mut x: u32 = 0x9e37_79b9;
        let body: Vec<u8> = (0..BIG)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let file = dir.path().join("www/slow/big.bin");
        fs::write(&file, &body).expect("write big.bin");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod big.bin");
        let conf = NGINX_CONF
            .replace("@DIR@", &d)
            .replace("@PORT@", &port.to_string());
        fs::write(dir.path().join("nginx.conf"), conf).expect("write nginx.conf");
        Nginx { dir, port, body }
    }

    fn argv(&self) -> Vec<String> {
        let d = self.dir.path().display().to_string();
        [
            "/usr/sbin/nginx",
            "-g",
            "daemon off;",
            "-p",
            &d,
            "-e",
            &format!("{d}/error.log"),
            "-c",
            &format!("{d}/nginx.conf"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// A download of /slow/big.bin in a thread: bytes so far, and at the end
/// the body (as far as it came), how it ended, and when each read returned
/// (to know how far it was when SIGTERM came).
struct Download {
    progress: Arc<AtomicU64>,
    thread: JoinHandle<Fetched>,
}

struct Fetched {
    body: Vec<u8>,
    result: Result<(), String>,
    reads: Vec<(Instant, usize)>,
}

impl Fetched {
    /// Bytes received before `at`, from the reads' time line.
    fn bytes_at_in(reads: &[(Instant, usize)], at: Instant) -> usize {
        reads
            .iter()
            .take_while(|(t, _)| *t < at)
            .last()
            .map_or(0, |(_, n)| *n)
    }
}

impl Download {
    fn start(port: u16) -> Download {
        let progress = Arc::new(AtomicU64::new(0));
        let p = Arc::clone(&progress);
        let thread = std::thread::spawn(move || {
            let mut body = Vec::new();
            let mut reads = Vec::new();
            let result = (|| -> std::io::Result<()> {
                let s = TcpStream::connect(("127.0.0.1", port))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut r = BufReader::new(s);
                r.get_mut().write_all(
                    b"GET /slow/big.bin HTTP/1.1\r\nHost: nginx\r\nConnection: close\r\n\r\n",
                )?;
                let head = util::http::read_head(&mut r)?;
                let length = head
                    .header("content-length")
                    .and_then(|v| v.parse::<usize>().ok());
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = r.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&buf[..n]);
                    reads.push((Instant::now(), body.len()));
                    p.store(body.len() as u64, Ordering::SeqCst);
                }
                match length {
                    Some(n) if n != body.len() => Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("short read: {} of {n} bytes", body.len()),
                    )),
                    None => Err(std::io::Error::other("no Content-Length")),
                    _ => Ok(()),
                }
            })();
            Fetched {
                body,
                result: result.map_err(|e| e.to_string()),
                reads,
            }
        });
        Download { progress, thread }
    }

    fn bytes(&self) -> u64 {
        self.progress.load(Ordering::SeqCst)
    }

    /// Waits until the first 64 KiB have arrived: the download is in flight.
    fn wait_in_flight(&self) {
        wait_for("the download to be in flight", STARTUP, || {
            (self.bytes() >= 64 * 1024).then_some(())
        });
    }

    fn finish(self) -> Fetched {
        self.thread.join().expect("download thread")
    }
}

/// Under drainit (TERM rewritten to QUIT), nginx finishes the download in
/// flight before it exits: every byte arrives, and it exits 0 before the
/// grace period is up.
#[test]
fn nginx_under_drainit_finishes_a_download_in_flight() {
    let nginx = Nginx::prepare();
    let pod_dir = tempfile::tempdir().expect("tempdir");
    let config = NGINX_TOML.replace(EXAMPLE_PORT, &nginx.port.to_string());
    let k = Kubelet::new(Container::start_in(
        pod_dir,
        Options {
            config,
            app: nginx.argv(),
            ..Options::default()
        },
    ))
    .with_pre_stop(HttpGet::new("/prestop"));
    wait_for("nginx ready (/readyz 200)", STARTUP, || {
        (k.probe("/readyz") == Some(200)).then_some(())
    });

    let download = Download::start(nginx.port);
    download.wait_in_flight();
    let report = k.kill_pod(Duration::from_secs(8));
    let Fetched {
        body,
        result,
        reads,
    } = download.finish();
    let at_term = Fetched::bytes_at_in(&reads, report.sigterm);
    println!(
        "nginx under drainit: {} of {BIG} bytes when SIGTERM came ({:.2}s after the preStop hook), {} in the end, {result:?}, exit {:?}",
        at_term,
        report.at(report.sigterm),
        body.len(),
        report.code
    );
    assert!(
        at_term < BIG,
        "the download was over before SIGTERM: nothing was in flight"
    );
    assert_eq!(result, Ok(()), "the download was cut under drainit");
    assert!(body == nginx.body, "the body differs from the file");
    assert!(report.sigkill.is_none(), "nginx needed SIGKILL: {report:?}");
    assert_eq!(report.code, Some(0), "drainit's exit code: {report:?}");
    let log = nginx.error_log();
    assert!(
        log.contains("gracefully shutting down"),
        "nginx did not shut down gracefully:\n{log}"
    );
}

/// Under plain tini, SIGTERM reaches nginx as SIGTERM, its fast shutdown:
/// the download in flight is cut.
#[test]
fn nginx_under_tini_cuts_a_download_in_flight() {
    let nginx = Nginx::prepare();
    let argv = nginx.argv();
    let mut full: Vec<&str> = vec!["unshare", "--pid", "--fork", "--mount-proc", "tini", "--"];
    full.extend(argv.iter().map(String::as_str));
    let mut pod = Proc::spawn("tini-nginx", nginx.dir.path(), &full);
    wait_tcp(nginx.port, "nginx listening");

    let download = Download::start(nginx.port);
    download.wait_in_flight();
    let (sigterm, killed) = kill_plain_pod(&mut pod, Duration::from_secs(8));
    let Fetched {
        body,
        result,
        reads,
    } = download.finish();
    let at_term = Fetched::bytes_at_in(&reads, sigterm);
    println!(
        "nginx under tini: {at_term} of {BIG} bytes when SIGTERM came, {} in the end, {result:?}",
        body.len()
    );
    assert!(!killed, "nginx under tini needed SIGKILL");
    assert!(
        at_term < BIG,
        "the download was over before SIGTERM: nothing was in flight"
    );
    assert!(
        result.is_err() && body.len() < BIG,
        "the download was not cut under tini: {result:?}, {} bytes",
        body.len()
    );
}

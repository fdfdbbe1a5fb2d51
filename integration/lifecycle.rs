//! The lifecycle engine end to end, driven the way the kubelet drives it.
//!
//! Each test runs the release `drainit` as PID 1 of a fresh PID namespace
//! (see `kubelet/container.rs`) and plays the kubelet against it with the
//! emulator in `kubelet/mod.rs`: preStop `httpGet` hooks bounded by the
//! grace period, SIGTERM, SIGKILL after what is left of it (at least 2s),
//! and probes with the kubelet's headers and 1s timeout. Budgets are small
//! (grace periods of 3-6s) and every wait is on an event — a file the app or
//! a step writes, an HTTP answer, a port — with a generous safety timeout.

#[path = "kubelet/mod.rs"]
mod kubelet;
mod util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kubelet::container::{pids_with_cmdline, read};
use kubelet::http::{self, Request, Response};
use kubelet::{first_with, free_port, sh, wait_for, Container, HttpGet, Kubelet, Options};

const PY: &str = "/usr/bin/python3";

/// An app that logs `app-term <ns>` to `$DIR/log` on SIGTERM and exits 0.
fn term_logging_app() -> Vec<String> {
    sh(
        r#"trap 'echo "app-term $(date +%s%N)" >> "$DIR/log"; exit 0' TERM
echo up > "$DIR/up"
while :; do sleep 1000 & wait; done"#,
    )
}

/// An app that ignores SIGTERM (and so do its children).
fn term_ignoring_app() -> Vec<String> {
    sh(r#"trap '' TERM
echo up > "$DIR/up"
while :; do sleep 1000 & wait; done"#)
}

fn pod(config: &str, app: Vec<String>) -> Kubelet {
    Kubelet::new(Container::start(config, &app)).with_pre_stop(HttpGet::new("/prestop"))
}

/// Waits for `/readyz` 200 and for the app's `$DIR/up`, which every app
/// here writes once its traps are set.
fn wait_ready(k: &Kubelet) {
    wait_for("/readyz 200", Duration::from_secs(10), || {
        (k.probe("/readyz") == Some(200)).then_some(())
    });
    wait_up(k);
}

fn wait_up(k: &Kubelet) {
    wait_for("the app's traps", Duration::from_secs(10), || {
        k.pod.path("up").exists().then_some(())
    });
}

/// Seconds from `t0_wall` to a `date +%s%N` stamp.
fn since_wall(t0_wall: SystemTime, ns: &str) -> f64 {
    let t0 = t0_wall.duration_since(UNIX_EPOCH).unwrap().as_nanos() as f64;
    let at: f64 = ns
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("bad stamp {ns:?}"));
    (at - t0) / 1e9
}

/// The `<ns>` after `word` in a log of `word <ns>` lines.
fn stamp(log: &str, word: &str) -> String {
    log.lines()
        .find_map(|l| l.strip_prefix(word).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| panic!("no {word:?} in log:\n{log}"))
}

fn words(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// A one-request-at-a-time HTTP server answering `status`, or, for `None`,
/// accepting and never answering. Lives as long as the test process.
fn stub_server(status: Option<u16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            match status {
                None => held.push(conn),
                Some(code) => {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    kubelet::http::read_request_head(&mut conn);
                    let _ = conn.write_all(
                        format!(
                            "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                }
            }
        }
    });
    port
}

// 1. Readiness flips the moment a shutdown starts.

#[test]
fn readiness_flips_within_100ms_of_prestop() {
    let k = pod("[[drain]]\nsleep = \"1s\"\n", term_logging_app());
    wait_ready(&k);
    let prober = k.prober("/readyz", Duration::from_millis(10));
    prober.wait_for(Some(200));
    let report = k.kill_pod(Duration::from_secs(5));
    let samples = prober.stop();
    let hook = report.hook.as_ref().unwrap();
    assert_eq!(hook.answered().status, 200, "{:?}", hook.response);
    let before = samples.iter().rev().find(|s| s.end < report.t0);
    assert_eq!(before.and_then(|s| s.status), Some(200), "not ready before");
    let flip =
        first_with(&samples, report.t0, Some(503)).expect("/readyz answered 503 after /prestop");
    let took = flip.end.duration_since(report.t0);
    eprintln!("figure: /prestop -> /readyz 503 within {took:?}");
    assert!(
        took < Duration::from_millis(100),
        "/readyz still ready {took:?} after /prestop"
    );
    for s in samples.iter().filter(|s| s.start >= flip.end) {
        assert_ne!(s.status, Some(200), "ready again after the flip: {s:?}");
    }
    assert_eq!(report.code, Some(0));
}

#[test]
fn readiness_flips_within_100ms_of_sigterm() {
    // No preStop hook: the kubelet's SIGTERM starts the shutdown.
    let k = Kubelet::new(Container::start(
        "[[drain]]\nsleep = \"1s\"\n",
        &term_logging_app(),
    ));
    wait_ready(&k);
    let prober = k.prober("/readyz", Duration::from_millis(10));
    prober.wait_for(Some(200));
    let report = k.kill_pod(Duration::from_secs(5));
    let samples = prober.stop();
    let before = samples.iter().rev().find(|s| s.end < report.sigterm);
    assert_eq!(before.and_then(|s| s.status), Some(200), "not ready before");
    let flip = first_with(&samples, report.sigterm, Some(503))
        .expect("/readyz answered 503 after SIGTERM, during the 1s drain");
    let took = flip.end.duration_since(report.sigterm);
    eprintln!("figure: SIGTERM -> /readyz 503 within {took:?}");
    assert!(took < Duration::from_millis(100), "{took:?}");
    // The drain ran before the stop: the app lived through the 1s sleep.
    let term = since_wall(
        report.t0_wall,
        &stamp(&read(&k.pod.path("log")), "app-term"),
    );
    assert!(
        term > 0.9,
        "app stopped {term:.3}s after SIGTERM, before the drain ended"
    );
    assert_eq!(report.code, Some(0));
}

// 2. The app gets no stop signal before the drain ends.

#[test]
fn app_is_stopped_only_after_the_drain() {
    let config = r#"
[[drain]]
name = "drain-script"
exec = ["sh", "-c", "echo \"drain-start $(date +%s%N)\" >> \"$DIR/log\"; sleep 0.5; echo \"drain-end $(date +%s%N)\" >> \"$DIR/log\""]
"#;
    let k = pod(config, term_logging_app());
    wait_ready(&k);
    let report = k.kill_pod(Duration::from_secs(5));
    let log = read(&k.pod.path("log"));
    assert_eq!(
        words(&log),
        ["drain-start", "drain-end", "app-term"],
        "{log}"
    );
    let end = since_wall(report.t0_wall, &stamp(&log, "drain-end"));
    let term = since_wall(report.t0_wall, &stamp(&log, "app-term"));
    eprintln!(
        "figure: last drain step end -> app stop signal {:.1} ms (SIGTERM sent {:.1} ms after t0)",
        (term - end) * 1e3,
        report.at(report.sigterm) * 1e3
    );
    let hook = report.hook.as_ref().unwrap();
    assert_eq!(hook.answered().status, 200);
    assert_eq!(report.code, Some(0));
    // The hook's keep-alive connection stayed open and idle throughout:
    // it must not hold up the exit.
    assert!(hook.idle_conn.is_some());
    let exit = report.exited.duration_since(report.sigterm);
    eprintln!("figure: SIGTERM -> drainit exit {exit:?} with an idle keep-alive hook connection");
    assert!(exit < Duration::from_secs(1), "{exit:?}");
}

// 3. The drain budget cuts a long step.

#[test]
fn drain_budget_cuts_a_long_step() {
    let config = r#"
[shutdown]
grace_period = "4s"
stop_timeout = "2s"

[[drain]]
name = "long-sleep"
sleep = "30s"

[[drain]]
name = "after-the-cut"
exec = ["sh", "-c", "echo after-the-cut >> \"$DIR/log\""]
"#;
    let k = pod(config, term_logging_app());
    wait_ready(&k);
    let report = k.kill_pod(Duration::from_secs(4));
    let log = read(&k.pod.path("log"));
    let term = since_wall(report.t0_wall, &stamp(&log, "app-term"));
    eprintln!("figure: long drain step cut; app stopped at t0+{term:.3}s (budget t0+2s)");
    assert!(
        term > 1.5 && term < 3.0,
        "app stopped at t0+{term:.3}s, want about t0+2s"
    );
    assert!(!log.contains("after-the-cut"), "a skipped step ran:\n{log}");
    let hook = report.hook.as_ref().unwrap();
    let body = &hook.answered().body;
    assert_eq!(hook.answered().status, 500, "{body}");
    assert!(line_with(body, "long-sleep").contains("cut"), "{body}");
    assert!(
        line_with(body, "after-the-cut").contains("skipped"),
        "{body}"
    );
    assert_eq!(report.code, Some(0));
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

// 4. The kill deadline.

#[test]
fn app_that_ignores_term_is_killed_at_the_deadline() {
    let config = r#"
[shutdown]
grace_period = "3s"
stop_timeout = "1s"
kill_margin = "1s"
"#;
    let k = pod(config, term_ignoring_app());
    wait_ready(&k);
    let report = k.kill_pod(Duration::from_secs(3));
    let exit = report.at(report.exited);
    eprintln!("figure: drainit SIGKILLed the app and exited at t0+{exit:.3}s (deadline t0+2s)");
    assert!(
        report.sigkill.is_none(),
        "the kubelet had to SIGKILL drainit at t0+{:.3}s",
        report.at(report.sigkill.unwrap())
    );
    assert_eq!(report.code, Some(137), "128 + SIGKILL");
    assert!(exit > 1.8 && exit < 2.9, "exit at t0+{exit:.3}s");
}

// 5. A preStop hook that outlasts the grace period.

#[test]
fn hook_outlasting_the_grace_period_is_abandoned_and_term_stops_at_once() {
    let config = r#"
[shutdown]
grace_period = "30s"
stop_timeout = "2s"

[[drain]]
name = "endless"
sleep = "30s"
"#;
    let k = pod(config, term_logging_app());
    wait_ready(&k);
    let report = k.kill_pod(Duration::from_secs(3));
    let hook = report.hook.as_ref().unwrap();
    assert!(hook.end.is_none(), "the hook returned: {:?}", hook.response);
    let abandoned = report.at(report.sigterm);
    assert!(
        (2.9..3.5).contains(&abandoned),
        "SIGTERM at t0+{abandoned:.3}s"
    );
    let after = report.exited.duration_since(report.sigterm);
    eprintln!("figure: abandoned hook; drainit exited {after:?} after SIGTERM");
    assert!(report.sigkill.is_none(), "needed the kubelet's SIGKILL");
    assert!(after < Duration::from_secs(2), "{after:?}");
    let term = since_wall(
        report.t0_wall,
        &stamp(&read(&k.pod.path("log")), "app-term"),
    );
    assert!(
        term >= abandoned - 0.05,
        "app stopped before SIGTERM: {term:.3}s"
    );
    // The abandoned call still gets its answer: the drain it waited on was
    // cut by the SIGTERM.
    let (_, late) = hook
        .late_outcome(Duration::from_secs(2))
        .expect("the abandoned hook call ended");
    let late = late.expect("the abandoned hook call was answered");
    assert_eq!(late.status, 500, "{}", late.body);
    assert!(
        line_with(&late.body, "endless").contains("cut"),
        "{}",
        late.body
    );
    assert_eq!(report.code, Some(0));
}

// 6. Concurrent and repeated /prestop calls run the drain once.

#[test]
fn concurrent_and_repeated_prestop_run_the_drain_once() {
    let config = r#"
[[drain]]
name = "count-me"
exec = ["sh", "-c", "echo ran >> \"$DIR/drain.log\"; sleep 0.3"]
"#;
    let k = pod(config, term_logging_app());
    wait_ready(&k);
    let hook = HttpGet::new("/prestop");
    let barrier = std::sync::Barrier::new(5);
    let mut answers: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..5)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    k.call_hook(&hook)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    answers.push(k.call_hook(&hook));
    for a in &answers {
        let a = a.as_ref().expect("answered");
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(line_with(&a.body, "count-me").contains("ok"), "{}", a.body);
    }
    assert_eq!(read(&k.pod.path("drain.log")), "ran\n");
    assert_eq!(
        read(&k.pod.path("log")),
        "",
        "the app was stopped by /prestop"
    );
}

// 7. POST /drain drains but does not stop.

#[test]
fn post_drain_drains_without_stopping_the_app() {
    let config = r#"
[[drain]]
name = "until-go"
exec = ["sh", "-c", "while [ ! -e \"$DIR/go\" ]; do sleep 0.01; done"]
"#;
    let k = pod(config, term_logging_app());
    wait_ready(&k);
    let port = k.pod.port;
    let r = Request::new(port, "POST", "/drain").send().unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.json().is_object(), "{}", r.body);
    let r = wait_for(
        "GET /drain shows the drain running",
        Duration::from_secs(5),
        || {
            http::get(port, "/drain")
                .ok()
                .filter(|r| r.json()["drain"]["state"] == "running")
        },
    );
    assert_eq!(r.status, 409, "drain still running: {}", r.body);
    assert_eq!(k.probe("/readyz"), Some(503));
    std::fs::write(k.pod.path("go"), "").unwrap();
    let done = wait_for("GET /drain 200", Duration::from_secs(5), || {
        http::get(port, "/drain").ok().filter(|r| r.status == 200)
    });
    let status = done.json();
    assert_eq!(status["drain"]["state"], "done", "{}", done.body);
    assert_eq!(status["drain"]["steps"][0]["name"], "until-go");
    assert_eq!(status["drain"]["steps"][0]["outcome"], "ok");
    assert_eq!(status["app_alive"], true);
    assert_eq!(k.probe("/healthz"), Some(200), "the app must still run");
    assert_eq!(k.probe("/readyz"), Some(503));
    assert_eq!(read(&k.pod.path("log")), "", "POST /drain stopped the app");
    let app = k.pod.app_pid();
    assert!(std::path::Path::new(&format!("/proc/{app}")).exists());
    // The kubelet's preStop joins the finished drain; its SIGTERM stops.
    let report = k.kill_pod(Duration::from_secs(4));
    assert_eq!(report.hook.as_ref().unwrap().answered().status, 200);
    assert_eq!(report.code, Some(0));
}

/// SPEC 5: a drain started by `POST /drain` is no hook, so a trigger
/// during it is not "the kubelet gave up": it starts the clock, the drain
/// goes on within its budget, then the stop follows.
#[test]
fn sigterm_after_post_drain_lets_the_drain_finish_then_stops() {
    let config = r#"
[shutdown]
grace_period = "8s"
stop_timeout = "2s"
kill_margin = "500ms"

[[drain]]
name = "until-go"
exec = ["sh", "-c", "while [ ! -e \"$DIR/go\" ]; do sleep 0.01; done; echo \"drained $(date +%s%N)\" >> \"$DIR/log\""]
"#;
    let k = Kubelet::new(Container::start(config, &term_logging_app()));
    wait_ready(&k);
    let port = k.pod.port;
    let r = Request::new(port, "POST", "/drain").send().unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    wait_for("the drain to run", Duration::from_secs(5), || {
        http::get(port, "/drain")
            .ok()
            .filter(|r| r.json()["drain"]["state"] == "running")
    });
    k.pod.signal(libc::SIGTERM);
    wait_for("the trigger in the log", Duration::from_secs(5), || {
        k.pod
            .stderr()
            .contains("trigger signal received")
            .then_some(())
    });
    // Before the fix the trigger cut the drain and stopped the app: drainit
    // was gone by now.
    let status = http::get(port, "/status").map(|r| r.json());
    assert!(
        matches!(&status, Ok(s) if s["drain"]["state"] == "running"),
        "the trigger cut the drain: {status:?}"
    );
    assert_eq!(
        read(&k.pod.path("log")),
        "",
        "the app was stopped mid-drain"
    );
    std::fs::write(k.pod.path("go"), "").unwrap();
    let (_, exit) = k
        .pod
        .wait_exit(Duration::from_secs(10))
        .expect("drainit exits after the drain and the stop");
    assert_eq!(exit.code(), Some(0), "{}", k.pod.stderr());
    let log = read(&k.pod.path("log"));
    assert_eq!(words(&log), ["drained", "app-term"], "{log}");
}

/// Fails on its first start, then serves; restarted by `on-failure`.
fn app_failing_once() -> Vec<String> {
    sh(
        r#"if [ ! -e "$DIR/failed" ]; then echo x > "$DIR/failed"; exit 1; fi
trap 'echo "app-term $(date +%s%N)" >> "$DIR/log"; exit 0' TERM
echo up > "$DIR/up"
while :; do sleep 1000 & wait; done"#,
    )
}

const DRAIN_LOGS: &str = r#"
[[drain]]
name = "mark"
exec = ["sh", "-c", "echo \"drained $(date +%s%N)\" >> \"$DIR/log\""]
"#;

/// SPEC 2: a restarted app is a running app in every respect: `/status`,
/// `/metrics`, `/readyz`, and `/prestop` runs the drain before the stop.
#[test]
fn restarted_app_is_running_and_drained_like_the_first() {
    let config = format!(
        "[app]\nrestart = \"on-failure\"\nrestart_backoff = {{ initial = \"100ms\" }}\n[shutdown]\ngrace_period = \"6s\"\nstop_timeout = \"2s\"\n{DRAIN_LOGS}"
    );
    let k = pod(&config, app_failing_once());
    wait_for("the restart", Duration::from_secs(10), || {
        let status = http::get(k.pod.port, "/status").ok()?.json();
        (status["restarts"] == 1 && status["app_alive"] == true).then_some(())
    });
    wait_ready(&k);
    let status = http::get(k.pod.port, "/status").unwrap().json();
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(
        metric(&k, "drainit_state", r#"state="running""#),
        Some(1.0),
        "/metrics state"
    );
    assert_eq!(metric(&k, "drainit_state", r#"state="exited""#), Some(0.0));
    let report = k.kill_pod(Duration::from_secs(6));
    let hook = report.hook.as_ref().unwrap().answered();
    assert_eq!(hook.status, 200, "{}", hook.body);
    assert!(hook.body.contains("mark"), "{}", hook.body);
    assert_eq!(report.code, Some(0));
    let log = read(&k.pod.path("log"));
    assert_eq!(words(&log), ["drained", "app-term"], "{log}");
}

/// SPEC 2: `/prestop` during a back-off wait cancels the restart; the drain
/// still runs (the last poststart's registration must be undone), and
/// drainit exits with the last run's code.
#[test]
fn prestop_during_restart_backoff_drains_and_cancels_the_restart() {
    let config = format!(
        "[app]\nrestart = \"on-failure\"\nrestart_backoff = {{ initial = \"30s\" }}\n[shutdown]\ngrace_period = \"6s\"\nstop_timeout = \"2s\"\n{DRAIN_LOGS}{RECORD_PATH}"
    );
    let k = pod(&config, sh(r#"echo start >> "$DIR/starts"; exit 3"#));
    wait_for("the back-off wait", Duration::from_secs(10), || {
        let status = http::get(k.pod.port, "/status").ok()?.json();
        (status["state"] == "starting" && status["app_alive"] == false).then_some(())
    });
    assert_eq!(k.probe("/readyz"), Some(503));
    let report = k.kill_pod(Duration::from_secs(6));
    let hook = report.hook.as_ref().unwrap().answered();
    assert_eq!(hook.status, 200, "{}", hook.body);
    assert!(hook.body.contains("mark: ok"), "{}", hook.body);
    assert_eq!(report.code, Some(3), "the last run's code");
    assert_eq!(read(&k.pod.path("starts")), "start\n", "restarted");
    let log = read(&k.pod.path("log"));
    assert_eq!(words(&log), ["drained"], "{log}");
    // A stop with a cause, not a crash left to the logs (on_crash): the
    // drain ran, and the record says the exit came first.
    let record = read(&k.pod.path("termination-log"));
    assert!(
        record.starts_with(
            "exit 3 (exited with code 3) on its own before the shutdown, which cancelled its restart; drain ran after; stop triggered"
        ),
        "{record}"
    );
    assert!(record.contains("\ndrain: mark: ok ("), "{record}");
}

/// SPEC 2: `POST /drain` during a back-off wait cancels the restart too;
/// the drain runs and drainit exits with the last run's code.
#[test]
fn post_drain_during_restart_backoff_drains_and_exits() {
    let config = format!(
        "[app]\nrestart = \"on-failure\"\nrestart_backoff = {{ initial = \"30s\" }}\n{DRAIN_LOGS}"
    );
    let k = pod(&config, sh(r#"echo start >> "$DIR/starts"; exit 3"#));
    wait_for("the back-off wait", Duration::from_secs(10), || {
        let status = http::get(k.pod.port, "/status").ok()?.json();
        (status["state"] == "starting" && status["app_alive"] == false).then_some(())
    });
    let r = Request::new(k.pod.port, "POST", "/drain").send().unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["shutdown_started"], true, "{}", r.body);
    let exit = k.pod.wait_exit(Duration::from_secs(10));
    assert!(exit.is_some(), "still waiting to restart");
    assert_eq!(k.pod.exit_code(), Some(3), "the last run's code");
    assert_eq!(read(&k.pod.path("starts")), "start\n", "restarted");
    let log = read(&k.pod.path("log"));
    assert_eq!(words(&log), ["drained"], "{log}");
}

// The kubelet's Go transport pools hook connections: postStart's idle
// keep-alive connection may carry the preStop call.

#[test]
fn prestop_on_the_poststart_keep_alive_connection() {
    let config = "[[poststart]]\nname = \"warm-up\"\nsleep = \"10ms\"\n\n[[drain]]\nname = \"cool-down\"\nsleep = \"10ms\"\n";
    let k = pod(config, term_logging_app());
    let (answer, conn) = k.call_hook_keep(&HttpGet::new("/poststart")).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_ready(&k);
    let answer = k.call_hook_on(&conn, &HttpGet::new("/prestop")).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        line_with(&answer.body, "cool-down").contains("ok"),
        "{}",
        answer.body
    );
    assert_eq!(k.probe("/readyz"), Some(503));
    // And the connection, idle again, does not hold up the exit.
    k.pod.signal(libc::SIGTERM);
    let start = Instant::now();
    assert!(k.pod.wait_exit(Duration::from_secs(5)).is_some());
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(k.pod.exit_code(), Some(0));
    drop(conn);
}

// With `prestop_stops_app`, /prestop answers only after the app is gone.

#[test]
fn prestop_stops_app_answers_after_the_app_exited() {
    let config = r#"
[shutdown]
prestop_stops_app = true

[[drain]]
name = "brief"
sleep = "50ms"
"#;
    let k = pod(config, term_logging_app());
    wait_ready(&k);
    let t0 = SystemTime::now();
    let answer = k.call_hook(&HttpGet::new("/prestop")).unwrap();
    let answered = SystemTime::now();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let term = since_wall(t0, &stamp(&read(&k.pod.path("log")), "app-term"));
    let answered = answered.duration_since(t0).unwrap().as_secs_f64();
    assert!(
        term >= 0.04 && term <= answered,
        "app-term at {term:.3}s, answer at {answered:.3}s"
    );
    // No SIGTERM from the kubelet was needed: drainit exits on its own.
    assert!(k.pod.wait_exit(Duration::from_secs(5)).is_some());
    assert_eq!(k.pod.exit_code(), Some(0));
}

#[test]
fn post_drain_answers_with_the_started_drain() {
    let config = "[[drain]]\nname = \"pause\"\nsleep = \"2s\"\n";
    let k = pod(config, term_logging_app());
    wait_ready(&k);
    let r = Request::new(k.pod.port, "POST", "/drain").send().unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    let status = r.json();
    assert_eq!(status["shutdown_started"], true, "{}", r.body);
    assert_ne!(status["drain"]["state"], "not_started", "{}", r.body);
}

// 8. Auth on the hook and drain endpoints.

#[test]
fn token_guards_hooks_but_not_probes() {
    let config = "[http]\ntoken = \"s3cret-token\"\n\n[[drain]]\nsleep = \"10ms\"\n";
    let k = Kubelet::new(Container::start(config, &term_logging_app()))
        .with_pre_stop(HttpGet::new("/prestop").header("Authorization", "Bearer s3cret-token"));
    wait_ready(&k);
    let port = k.pod.port;
    let call = |auth: Option<&str>, method: &str, path: &str| {
        let mut req = Request::new(port, method, path).header("Connection", "close");
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send().unwrap().status
    };
    assert_eq!(call(None, "GET", "/prestop"), 401);
    assert_eq!(call(Some("Bearer wrong-token!"), "GET", "/prestop"), 401);
    assert_eq!(call(Some("Bearer s3cret-toke"), "GET", "/prestop"), 401);
    assert_eq!(call(None, "POST", "/drain"), 401);
    assert_eq!(call(None, "GET", "/drain"), 401);
    assert_eq!(call(None, "GET", "/poststart"), 401);
    assert_eq!(call(None, "GET", "/healthz"), 200);
    assert_eq!(
        call(None, "GET", "/readyz"),
        200,
        "a refused call started a shutdown"
    );
    assert_eq!(call(None, "GET", "/status"), 200);
    assert_eq!(call(None, "GET", "/metrics"), 200);
    let report = k.kill_pod(Duration::from_secs(4));
    let hook = report.hook.as_ref().unwrap();
    assert_eq!(hook.answered().status, 200, "{}", hook.answered().body);
    assert_eq!(report.code, Some(0));
}

#[test]
fn allow_list_refuses_other_sources() {
    let config = "[http]\nallow = [\"10.0.0.0/8\"]\n";
    let k = pod(config, term_logging_app());
    wait_ready(&k);
    let port = k.pod.port;
    assert_eq!(k.call_hook(&HttpGet::new("/prestop")).unwrap().status, 403);
    assert_eq!(
        Request::new(port, "POST", "/drain").send().unwrap().status,
        403
    );
    assert_eq!(k.probe("/healthz"), Some(200));
    assert_eq!(
        k.probe("/readyz"),
        Some(200),
        "a refused call started a shutdown"
    );
}

// 9. poststart gates readiness; a failed poststart stops the container.

#[test]
fn poststart_gates_readiness_until_the_app_listens() {
    let app_port = free_port();
    let config = format!(
        "[[poststart]]\nname = \"app listening\"\nwait_tcp = \"127.0.0.1:{app_port}\"\ntimeout = \"10s\"\n"
    );
    let app = sh(&format!(
        "while [ ! -e \"$DIR/go\" ]; do sleep 0.01; done; exec {PY} -m http.server {app_port} --bind 127.0.0.1"
    ));
    let k = Kubelet::new(Container::start(&config, &app));
    let prober = k.prober("/readyz", Duration::from_millis(10));
    let poststart = std::thread::scope(|s| {
        let hook = s.spawn(|| k.call_hook(&HttpGet::new("/poststart")));
        prober.wait_for(Some(503));
        let go = Instant::now();
        std::fs::write(k.pod.path("go"), "").unwrap();
        prober.wait_for(Some(200));
        assert!(
            TcpStream::connect(("127.0.0.1", app_port)).is_ok(),
            "ready but the app's port is closed"
        );
        (go, hook.join().unwrap())
    });
    let (go, answer) = poststart;
    let samples = prober.stop();
    for s in samples.iter().filter(|s| s.end < go) {
        assert_eq!(s.status, Some(503), "ready before the app listened: {s:?}");
    }
    let answer = answer.expect("/poststart answered");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("app listening"), "{}", answer.body);
}

#[test]
fn failed_poststart_stops_the_app_and_exits_non_zero() {
    let config = r#"
[[poststart]]
name = "must-fail"
exec = ["sh", "-c", "while [ ! -e \"$DIR/go\" ]; do sleep 0.01; done; exit 3"]
"#;
    // The app exits 0 on TERM: drainit must still exit non-zero (1).
    let k = Kubelet::new(Container::start(config, &term_logging_app()));
    let prober = k.prober("/readyz", Duration::from_millis(10));
    prober.wait_for(Some(503));
    wait_up(&k);
    std::fs::write(k.pod.path("go"), "").unwrap();
    let exit = k.pod.wait_exit(Duration::from_secs(10));
    let samples = prober.stop();
    assert!(
        exit.is_some(),
        "drainit did not stop after poststart failed"
    );
    assert_eq!(
        k.pod.exit_code(),
        Some(1),
        "the app exited 0; drainit must say 1"
    );
    assert!(
        read(&k.pod.path("log")).contains("app-term"),
        "the app got no stop signal"
    );
    assert!(!samples.is_empty());
    assert!(
        samples.iter().all(|s| s.status != Some(200)),
        "ready despite a failed poststart"
    );
}

// 10. Each step kind, including failures and timeouts.

#[test]
fn every_step_kind_reports_its_outcome() {
    let closed = free_port();
    let hanging = stub_server(None);
    let failing = stub_server(Some(500));
    let healthy = stub_server(Some(200));
    let marker = format!("{}", 700_000 + u32::from(closed));
    let config = r#"
[shutdown]
grace_period = "20s"
stop_timeout = "5s"

[[drain]]
name = "hang-exec"
exec = ["sh", "-c", "sleep @M@ & sleep @M@"]
timeout = "500ms"

[[drain]]
name = "closed-port"
http = { url = "http://127.0.0.1:@CLOSED@/deregister" }
timeout = "2s"

[[drain]]
name = "hanging-server"
http = { url = "http://127.0.0.1:@HANG@/deregister" }
timeout = "500ms"

[[drain]]
name = "server-500"
http = { url = "http://127.0.0.1:@FAIL@/deregister", method = "PUT" }
timeout = "2s"

[[drain]]
name = "usr1-to-app"
signal = "USR1"

[[drain]]
name = "tcp-up"
wait_tcp = "127.0.0.1:@OK@"
timeout = "2s"

[[drain]]
name = "http-up"
wait_http = { url = "http://127.0.0.1:@OK@/health", expect = [200] }
timeout = "2s"

[[drain]]
name = "short-pause"
sleep = "100ms"
"#
    .replace("@M@", &marker)
    .replace("@CLOSED@", &closed.to_string())
    .replace("@HANG@", &hanging.to_string())
    .replace("@FAIL@", &failing.to_string())
    .replace("@OK@", &healthy.to_string());
    let app = sh(r#"trap 'echo usr1 >> "$DIR/usr1"' USR1
trap 'exit 0' TERM
echo up > "$DIR/up"
while :; do sleep 1000 & wait; done"#);
    let k = pod(&config, app);
    wait_ready(&k);
    let answer = std::thread::scope(|s| {
        let hook = s.spawn(|| k.call_hook(&HttpGet::new("/prestop")));
        wait_for("the hanging exec step", Duration::from_secs(5), || {
            (!pids_with_cmdline(&format!("sleep {marker}")).is_empty()).then_some(())
        });
        hook.join().unwrap()
    });
    let answer = answer.expect("/prestop answered");
    let body = &answer.body;
    assert_eq!(answer.status, 500, "{body}");
    for (step, outcome) in [
        ("hang-exec", "timed_out"),
        ("closed-port", "failed"),
        ("hanging-server", "timed_out"),
        ("server-500", "failed"),
        ("usr1-to-app", "ok"),
        ("tcp-up", "ok"),
        ("http-up", "ok"),
        ("short-pause", "ok"),
    ] {
        let line = line_with(body, step);
        assert!(
            line.contains(outcome),
            "{step}: want {outcome}: {line:?}\n{body}"
        );
    }
    // The timed-out exec step was killed with its whole group.
    let left = pids_with_cmdline(&format!("sleep {marker}"));
    assert!(left.is_empty(), "exec step's processes survive: {left:?}");
    assert_eq!(read(&k.pod.path("usr1")), "usr1\n");
    assert_eq!(
        read(&k.pod.path("log")),
        "",
        "the app was stopped by /prestop"
    );
}

// 11. wait_connections with a real open connection.

/// A python TCP server on `port` that greets each client and holds the
/// connection until the client closes it.
fn holding_server(port: u16) -> Vec<String> {
    let script = format!(
        r#"
import os, signal, socket, sys, threading
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {port}))
s.listen(16)
open(os.environ["DIR"] + "/up", "w").close()
def hold(c):
    c.sendall(b"hi\n")
    while c.recv(100):
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=hold, args=(c,), daemon=True).start()
"#
    );
    vec![PY.to_string(), "-c".to_string(), script]
}

fn connections_pod(app_port: u16, timeout: &str) -> Kubelet {
    let config = format!(
        r#"
[[poststart]]
wait_tcp = "127.0.0.1:{app_port}"

[[drain]]
name = "in-flight"
wait_connections = {{ port = {app_port}, max = 0 }}
timeout = "{timeout}"
"#
    );
    pod(&config, holding_server(app_port))
}

fn connect_and_greet(port: u16) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut hi = [0u8; 3];
    c.read_exact(&mut hi).unwrap();
    assert_eq!(&hi, b"hi\n");
    c
}

fn drain_state(k: &Kubelet) -> Option<String> {
    let status = http::get(k.pod.port, "/status").ok()?.json();
    status["state"].as_str().map(str::to_string)
}

#[test]
fn wait_connections_waits_for_the_last_client() {
    let app_port = free_port();
    let k = connections_pod(app_port, "5s");
    wait_ready(&k);
    let client = connect_and_greet(app_port);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let answer = k.call_hook(&HttpGet::new("/prestop"));
            tx.send((Instant::now(), answer)).unwrap();
        });
        wait_for("the drain to run", Duration::from_secs(5), || {
            (drain_state(&k).as_deref() == Some("draining")).then_some(())
        });
        assert!(
            rx.try_recv().is_err(),
            "/prestop returned with a client connected"
        );
        let closed = Instant::now();
        drop(client);
        let (at, answer) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("/prestop returns");
        let answer = answer.expect("answered");
        let after = at.duration_since(closed);
        eprintln!("figure: last client closed -> /prestop returned in {after:?}");
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(
            line_with(&answer.body, "in-flight").contains("ok"),
            "{}",
            answer.body
        );
        assert!(after < Duration::from_millis(1500), "{after:?}");
    });
}

#[test]
fn wait_connections_times_out_while_a_client_stays() {
    let app_port = free_port();
    let k = connections_pod(app_port, "1s");
    wait_ready(&k);
    let _client = connect_and_greet(app_port);
    let start = Instant::now();
    let answer = k.call_hook(&HttpGet::new("/prestop")).unwrap();
    let took = start.elapsed();
    assert_eq!(answer.status, 500, "{}", answer.body);
    assert!(
        line_with(&answer.body, "in-flight").contains("timed_out"),
        "{}",
        answer.body
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

// 11b. wait_quiet: the traffic on the app's port, not its connections.

/// A stand-in app server owned by the test (drainit sees every socket of
/// the network namespace it shares): each line `N\n` from a client is
/// answered `ok\n` after N ms, on keep-alive connections; `never\n` is
/// never answered. The instant of each answer goes to the channel.
fn quiet_server(bind: &str) -> (u16, std::sync::mpsc::Receiver<Instant>) {
    let listener = TcpListener::bind(bind).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                let mut line = String::new();
                while std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) > 0 {
                    if let Ok(ms) = line.trim().parse::<u64>() {
                        std::thread::sleep(Duration::from_millis(ms));
                        if conn.write_all(b"ok\n").is_err() {
                            return;
                        }
                        let _ = tx.send(Instant::now());
                    }
                    line.clear();
                }
            });
        }
    });
    (port, rx)
}

/// One request on a keep-alive connection, waiting for its answer.
fn ask(conn: &mut TcpStream, ms: u64) {
    conn.write_all(format!("{ms}\n").as_bytes()).unwrap();
    let mut ok = [0u8; 3];
    conn.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok\n");
}

const QUIET: Duration = Duration::from_millis(600);

fn quiet_pod(port: u16, extra: &str) -> Kubelet {
    let config = format!(
        r#"
[[drain]]
name = "quiet"
wait_quiet = {{ port = {port}, quiet = "600ms"{extra} }}
timeout = "8s"
"#
    );
    let k = pod(&config, term_logging_app());
    wait_ready(&k);
    k
}

/// Calls /prestop in a thread once the test is ready; the instant it
/// returned and its answer come back on the channel.
fn prestop_in_thread<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    k: &'s Kubelet,
) -> std::sync::mpsc::Receiver<(Instant, Response)> {
    let (tx, rx) = std::sync::mpsc::channel();
    s.spawn(move || {
        let answer = k.call_hook(&HttpGet::new("/prestop")).expect("answered");
        tx.send((Instant::now(), answer)).unwrap();
    });
    wait_for("the drain to run", Duration::from_secs(5), || {
        (drain_state(k).as_deref() == Some("draining")).then_some(())
    });
    rx
}

/// Keep-alive traffic every 200 ms holds the step; it ends about `quiet`
/// after the last answer while the connection stays open.
fn keepalive_traffic_holds_then_ends(bind: &str) {
    let (port, _answers) = quiet_server(bind);
    let k = quiet_pod(port, "");
    let addr = (
        bind.rsplit_once(':').unwrap().0.trim_matches(['[', ']']),
        port,
    );
    let mut conn = TcpStream::connect(addr).unwrap();
    ask(&mut conn, 0);
    std::thread::scope(|s| {
        let done = prestop_in_thread(s, &k);
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(200));
            ask(&mut conn, 0);
            assert!(
                done.try_recv().is_err(),
                "/prestop returned while requests kept coming"
            );
        }
        let last = Instant::now();
        let (at, answer) = done
            .recv_timeout(Duration::from_secs(8))
            .expect("/prestop returns");
        let after = at.duration_since(last);
        eprintln!("figure: last answer -> /prestop returned in {after:?}");
        assert_eq!(answer.status, 200, "{}", answer.body);
        let line = line_with(&answer.body, "quiet");
        assert!(line.contains(": ok"), "{line}");
        assert!(
            line.contains("1 connections open, 0 waiting for an answer"),
            "{line}"
        );
        // At least `quiet` (the kernel counts whole milliseconds), at most
        // `quiet` plus two looks and a loaded machine's scheduling.
        assert!(after >= QUIET - Duration::from_millis(5), "{after:?}");
        assert!(after < QUIET + Duration::from_millis(700), "{after:?}");
        // The connection was never closed.
        ask(&mut conn, 0);
    });
}

#[test]
fn wait_quiet_keepalive_traffic_holds_it_and_it_ends_after_quiet() {
    keepalive_traffic_holds_then_ends("127.0.0.1:0");
}

#[test]
fn wait_quiet_counts_ipv6_listeners() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback on this host");
        return;
    }
    keepalive_traffic_holds_then_ends("[::1]:0");
}

#[test]
fn wait_quiet_holds_while_a_slow_request_is_in_flight() {
    let (port, answers) = quiet_server("127.0.0.1:0");
    let k = quiet_pod(port, "");
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    ask(&mut conn, 0);
    answers.recv().unwrap();
    std::thread::scope(|s| {
        let done = prestop_in_thread(s, &k);
        // A 1.5 s request, received at once and answered 1.5 s later.
        conn.write_all(b"1500\n").unwrap();
        let answered = answers
            .recv_timeout(Duration::from_secs(5))
            .expect("the answer");
        let (at, answer) = done
            .recv_timeout(Duration::from_secs(8))
            .expect("/prestop returns");
        assert!(
            at > answered,
            "/prestop returned before the answer was sent"
        );
        let after = at.duration_since(answered);
        eprintln!("figure: slow answer sent -> /prestop returned in {after:?}");
        assert!(after >= QUIET - Duration::from_millis(5), "{after:?}");
        assert!(after < QUIET + Duration::from_millis(700), "{after:?}");
        let line = line_with(&answer.body, "quiet");
        assert!(
            line.contains(": ok") && line.contains("(answer sent)"),
            "{line}"
        );
    });
}

#[test]
fn wait_quiet_without_traffic_ends_after_quiet_and_min() {
    let (port, _answers) = quiet_server("127.0.0.1:0");
    // An idle keep-alive connection stays open throughout: wait_connections
    // would wait for it until its timeout.
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    ask(&mut conn, 0);
    let k = quiet_pod(port, "");
    let start = Instant::now();
    let answer = k.call_hook(&HttpGet::new("/prestop")).unwrap();
    let took = start.elapsed();
    eprintln!("figure: no traffic -> /prestop returned in {took:?}");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        took >= QUIET && took < QUIET + Duration::from_millis(700),
        "{took:?}"
    );
    let line = line_with(&answer.body, "quiet");
    assert!(
        line.contains("1 connections open") && line.contains("no activity since the start"),
        "{line}"
    );

    // `min` holds it longer; an ignored peer's traffic does not.
    let k = quiet_pod(port, r#", min = "1500ms", ignore = ["127.0.0.0/8"]"#);
    let start = Instant::now();
    std::thread::scope(|s| {
        let talker = s.spawn(|| {
            while start.elapsed() < Duration::from_millis(1200) {
                ask(&mut conn, 0);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let answer = k.call_hook(&HttpGet::new("/prestop")).unwrap();
        let took = start.elapsed();
        talker.join().unwrap();
        eprintln!("figure: min 1.5s, ignored traffic -> /prestop returned in {took:?}");
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_millis(2200),
            "{took:?}"
        );
        let line = line_with(&answer.body, "quiet");
        assert!(line.contains("0 connections open"), "{line}");
    });
}

/// With thousands of connections on the port and the step looking at all
/// of them every 100 ms, probes and forwarded signals are answered as
/// fast as before the drain.
#[test]
fn wait_quiet_does_not_delay_probes_or_signals_with_thousands_of_sockets() {
    const N: usize = 2000;
    // The app's listener: accepts and holds, never reads.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::thread::spawn(move || {
        (0..N)
            .map(|_| listener.accept().unwrap().0)
            .collect::<Vec<_>>()
    });
    let config = format!(
        r#"
[[drain]]
name = "quiet"
wait_quiet = {{ port = {port}, quiet = "600ms" }}
timeout = "3s"
"#
    );
    let app = sh(r#"trap 'echo usr1 >> "$DIR/usr1"' USR1
trap 'exit 0' TERM
echo up > "$DIR/up"
while :; do sleep 1000 & wait; done"#);
    let k = pod(&config, app);
    wait_ready(&k);
    let mut held = Vec::with_capacity(N);
    for _ in 0..N {
        held.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    let _server_ends = accepted.join().unwrap();
    // One request never answered holds the step until its timeout.
    held[0].write_all(b"never\n").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let r = k.call_hook(&HttpGet::new("/prestop")).expect("answered");
            tx.send(r).unwrap();
        });
        wait_for("the drain to run", Duration::from_secs(5), || {
            (drain_state(&k).as_deref() == Some("draining")).then_some(())
        });
        let mut worst_probe = Duration::ZERO;
        let mut worst_signal = Duration::ZERO;
        for i in 1..=8 {
            let start = Instant::now();
            assert_eq!(k.probe("/healthz"), Some(200));
            worst_probe = worst_probe.max(start.elapsed());
            let start = Instant::now();
            k.pod.signal(libc::SIGUSR1);
            wait_for("USR1 forwarded", Duration::from_secs(2), || {
                (read(&k.pod.path("usr1")).lines().count() == i).then_some(())
            });
            worst_signal = worst_signal.max(start.elapsed());
            std::thread::sleep(Duration::from_millis(150));
        }
        eprintln!(
            "figure: {N} sockets: worst probe {worst_probe:?}, worst signal {worst_signal:?}"
        );
        assert!(worst_probe < Duration::from_millis(300), "{worst_probe:?}");
        assert!(
            worst_signal < Duration::from_millis(300),
            "{worst_signal:?}"
        );
        let r = rx
            .recv_timeout(Duration::from_secs(8))
            .expect("/prestop returns");
        let line = line_with(&r.body, "quiet");
        assert!(line.contains("timed_out"), "{line}");
        assert!(
            line.contains(&format!("{} connections open, 1 waiting for an answer", N)),
            "{line}"
        );
    });
}

// 12. A ConfigMap update (`..data` symlink swap) is picked up live.

/// Writes `config` as a new timestamped dir and swaps `..data` to it the way
/// the kubelet's AtomicWriter does.
fn configmap_write(dir: &std::path::Path, generation: u32, config: &str) {
    let ts = format!("..2026_01_01_00_00_0{generation}.{}", 100 + generation);
    std::fs::create_dir(dir.join(&ts)).unwrap();
    std::fs::write(dir.join(&ts).join("drainit.toml"), config).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    let _ = std::fs::remove_file(dir.join("..data_tmp"));
    std::os::unix::fs::symlink(&ts, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if !dir.join("drainit.toml").exists() {
        std::os::unix::fs::symlink("..data/drainit.toml", dir.join("drainit.toml")).unwrap();
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

fn step_writing(word: &str) -> String {
    format!(
        "[[drain]]\nname = \"step-{word}\"\nexec = [\"sh\", \"-c\", \"echo {word} >> \\\"$DIR/ran\\\"\"]\n"
    )
}

/// `name{labels} value` samples of one metric.
fn metric(k: &Kubelet, name: &str, labels: &str) -> Option<f64> {
    let text = http::get(k.pod.port, "/metrics").ok()?.body;
    parse_metrics(&text)
        .into_iter()
        .find(|s| s.name == name && labels.split(',').all(|l| s.labels.contains(l)))
        .map(|s| s.value)
}

fn configmap_pod() -> Kubelet {
    let dir = tempfile::tempdir().unwrap();
    let cm = dir.path().join("config");
    std::fs::create_dir(&cm).unwrap();
    configmap_write(&cm, 1, &step_writing("A"));
    let c = Container::start_in(
        dir,
        Options {
            app: term_logging_app(),
            config_path: Some(cm.join("drainit.toml")),
            ..Options::default()
        },
    );
    Kubelet::new(c).with_pre_stop(HttpGet::new("/prestop"))
}

#[test]
fn configmap_swap_is_picked_up_without_restart() {
    let k = configmap_pod();
    wait_ready(&k);
    let app = k.pod.app_pid();
    configmap_write(&k.pod.path("config"), 2, &step_writing("B"));
    wait_for("a successful reload", Duration::from_secs(10), || {
        (metric(&k, "drainit_config_reloads_total", "result=\"success\"") == Some(1.0))
            .then_some(())
    });
    assert_eq!(k.pod.app_pid(), app, "the app was restarted");
    let answer = k.call_hook(&HttpGet::new("/prestop")).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(read(&k.pod.path("ran")), "B\n");
}

#[test]
fn invalid_configmap_swap_keeps_the_old_config() {
    let k = configmap_pod();
    wait_ready(&k);
    let bad = format!("{}\n[shutdown]\ngrace_perod = \"10s\"\n", step_writing("B"));
    configmap_write(&k.pod.path("config"), 2, &bad);
    wait_for("a failed reload", Duration::from_secs(10), || {
        (metric(&k, "drainit_config_reloads_total", "result=\"failure\"") == Some(1.0))
            .then_some(())
    });
    assert_ne!(
        metric(&k, "drainit_config_reloads_total", "result=\"success\""),
        Some(1.0)
    );
    assert!(
        k.pod.stderr().contains("grace_perod"),
        "the error is not logged"
    );
    let answer = k.call_hook(&HttpGet::new("/prestop")).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(read(&k.pod.path("ran")), "A\n");
}

// 12b. drainit leaves its start directory once the app runs (SPEC 3); the
// relative paths it needs later still work.

#[test]
fn relative_paths_work_after_drainit_left_its_start_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = |word: &str| {
        format!(
            "[shutdown]\ngrace_period = \"3s\"\nstop_timeout = \"1s\"\nkill_margin = \"500ms\"\n\n[http]\ntoken_file = \"token\"\n\n[termination_message]\npath = \"termination-log\"\n\n{}",
            step_writing(word)
        )
    };
    std::fs::write(dir.path().join("drainit.toml"), config("A")).unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let c = Container::start_in(
        dir,
        Options {
            app: term_logging_app(),
            // Relative, as the container's working directory has it.
            config_path: Some("drainit.toml".into()),
            ..Options::default()
        },
    );
    let k = Kubelet::new(c)
        .with_pre_stop(HttpGet::new("/prestop").header("Authorization", "Bearer s3cret"));
    wait_ready(&k);
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", k.pod.pid)).unwrap();
    assert_eq!(cwd, std::path::Path::new("/"), "drainit's cwd");
    // A reload re-reads the relative config and its relative token_file.
    std::fs::write(k.pod.path("drainit.toml"), config("B")).unwrap();
    wait_for("a successful reload", Duration::from_secs(10), || {
        (metric(&k, "drainit_config_reloads_total", "result=\"success\"") == Some(1.0))
            .then_some(())
    });
    let report = k.kill_pod(Duration::from_secs(3));
    let hook = report.hook.as_ref().expect("a preStop hook ran");
    assert_eq!(hook.answered().status, 200, "{}", hook.answered().body);
    assert_eq!(report.code, Some(0));
    assert_eq!(read(&k.pod.path("ran")), "B\n");
    let record = read(&k.pod.path("termination-log"));
    assert!(
        record.to_lowercase().contains("step-b"),
        "no termination record in the start directory: {record:?}"
    );
}

// 13. The termination record.

#[test]
fn termination_record_tells_how_the_container_ended() {
    let closed = free_port();
    let config = format!(
        r#"
[shutdown]
grace_period = "3s"
stop_timeout = "1s"
kill_margin = "1s"

[termination_message]
path = "${{DIR}}/termination-log"

[[drain]]
name = "say-goodbye"
exec = ["true"]

[[drain]]
name = "deregister"
http = {{ url = "http://127.0.0.1:{closed}/x" }}
timeout = "500ms"
"#
    );
    let k = pod(&config, term_ignoring_app());
    wait_ready(&k);
    let report = k.kill_pod(Duration::from_secs(3));
    assert!(report.sigkill.is_none(), "the kubelet had to SIGKILL");
    assert_eq!(report.code, Some(137));
    let path = k.pod.path("termination-log");
    let record = read(&path);
    eprintln!("termination record:\n{record}");
    assert!(
        !record.is_empty(),
        "no termination record at {}",
        path.display()
    );
    assert!(record.len() <= 4096, "{} bytes", record.len());
    let lower = record.to_lowercase();
    let verdict = lower.lines().next().unwrap();
    assert!(
        verdict.contains("137") || verdict.contains("kill"),
        "verdict first: {verdict:?}"
    );
    assert!(lower.contains("prestop"), "who triggered the stop");
    assert!(line_with(&lower, "say-goodbye").contains("ok"));
    assert!(line_with(&lower, "deregister").contains("failed"));
    assert!(lower.contains("sigkill"), "whether SIGKILL was needed");
}

// 14. /metrics is Prometheus text.

#[derive(Debug)]
struct SampleLine {
    name: String,
    labels: String,
    value: f64,
}

/// Parses Prometheus text exposition; panics on any malformed line and on a
/// sample whose family has no `# TYPE`.
fn parse_metrics(text: &str) -> Vec<SampleLine> {
    try_parse_metrics(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn try_parse_metrics(text: &str) -> Result<Vec<SampleLine>, String> {
    let mut typed = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let bad = |what: &str| format!("{what} in {line:?}");
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().ok_or_else(|| bad("no name"))?;
            let kind = parts.next().ok_or_else(|| bad("no type"))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(bad("unknown type"));
            }
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, rest) = match line.find('{') {
            Some(_) => {
                let close = line.rfind('}').ok_or_else(|| bad("unclosed labels"))?;
                (&line[..close + 1], &line[close + 1..])
            }
            None => line.split_at(line.find(' ').ok_or_else(|| bad("no value"))?),
        };
        let (name, labels) = match series.find('{') {
            Some(open) => (&series[..open], &series[open + 1..series.len() - 1]),
            None => (series, ""),
        };
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        if !name_ok {
            return Err(bad("bad metric name"));
        }
        for pair in split_labels(labels) {
            let (k, v) = pair.split_once('=').ok_or_else(|| bad("bad label"))?;
            if k.is_empty() || !v.starts_with('"') || !v.ends_with('"') || v.len() < 2 {
                return Err(bad("bad label"));
            }
        }
        let value = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| bad("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| bad("bad value"))?,
        };
        let family = ["_bucket", "_sum", "_count", "_total", "_created"]
            .iter()
            .find_map(|suf| name.strip_suffix(suf).filter(|base| typed.contains(*base)))
            .unwrap_or(name);
        if !typed.contains(family) {
            return Err(bad(&format!("no # TYPE for {name}")));
        }
        out.push(SampleLine {
            name: name.to_string(),
            labels: labels.to_string(),
            value,
        });
    }
    Ok(out)
}

/// Splits `a="x",b="y,z"` on the commas between labels.
fn split_labels(labels: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        out.push(&labels[start..]);
    }
    out
}

#[test]
fn metrics_are_prometheus_text_with_the_core_counters() {
    // The app leaves an orphan behind for drainit (PID 1) to reap.
    let app = sh(r#"trap 'echo usr1 >> "$DIR/usr1"' USR1
trap 'exit 0' TERM
( sleep 0.01 & )
echo up > "$DIR/up"
while :; do sleep 1000 & wait; done"#);
    let k = pod("[[drain]]\nsleep = \"10ms\"\n", app);
    wait_ready(&k);
    k.pod.signal(libc::SIGUSR1);
    wait_for("the app's USR1 trap", Duration::from_secs(5), || {
        read(&k.pod.path("usr1")).contains("usr1").then_some(())
    });
    let samples = wait_for("zombies reaped counted", Duration::from_secs(5), || {
        let text = http::get(k.pod.port, "/metrics").ok()?.body;
        let samples = parse_metrics(&text);
        samples
            .iter()
            .any(|s| s.name == "drainit_zombies_reaped_total" && s.value >= 1.0)
            .then_some(samples)
    });
    let has = |name: &str| samples.iter().any(|s| s.name == name);
    for name in [
        "drainit_signals_forwarded_total",
        "drainit_zombies_reaped_total",
        "drainit_restarts_total",
        "drainit_state",
        "drainit_config_reloads_total",
    ] {
        assert!(has(name), "no {name} in /metrics");
    }
    assert!(
        samples
            .iter()
            .any(|s| s.name == "drainit_signals_forwarded_total"
                && s.labels.contains("USR1")
                && s.value >= 1.0),
        "USR1 forwarded not counted: {samples:?}"
    );
    assert!(samples
        .iter()
        .any(|s| s.name == "drainit_restarts_total" && s.value == 0.0));
}

// 15. Registration in a real registry: etcd.

/// etcd on loopback with a throw-away data dir; killed in Drop.
struct Etcd {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (port, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = std::process::Command::new("/usr/bin/etcd")
            .args(["--name", "drainit-test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("drainit-test={peer_url}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("etcd.log")).unwrap())
            .spawn()
            .expect("start /usr/bin/etcd");
        let etcd = Etcd {
            child,
            port,
            _dir: dir,
        };
        wait_for("etcd endpoint health", Duration::from_secs(20), || {
            etcd.ctl(&["endpoint", "health"])
                .filter(|out| out.contains("is healthy"))
                .map(|_| ())
        });
        etcd
    }

    /// `etcdctl <args>` output, or None when it failed.
    fn ctl(&self, args: &[&str]) -> Option<String> {
        let out = std::process::Command::new("/usr/bin/etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &format!("127.0.0.1:{}", self.port)])
            .args(["--dial-timeout", "1s", "--command-timeout", "2s"])
            .args(args)
            .output()
            .ok()?;
        out.status.success().then(|| {
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr)
        })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn registers_in_etcd_on_poststart_and_deregisters_on_prestop() {
    assert_eq!(
        base64(b"/services/web/pod-1"),
        "L3NlcnZpY2VzL3dlYi9wb2QtMQ=="
    );
    let etcd = Etcd::start();
    let key = base64(b"/services/web/pod-1");
    let value = base64(b"127.0.0.1:8080");
    let config = r#"
[[poststart]]
name = "register in etcd"
http = { method = "POST", url = "http://127.0.0.1:@P@/v3/kv/put", headers = { "Content-Type" = "application/json" }, body = '{"key":"@K@","value":"@V@"}' }
timeout = "3s"

[[drain]]
name = "deregister from etcd"
http = { method = "POST", url = "http://127.0.0.1:@P@/v3/kv/deleterange", headers = { "Content-Type" = "application/json" }, body = '{"key":"@K@"}' }
timeout = "3s"
"#
    .replace("@P@", &etcd.port.to_string())
    .replace("@K@", &key)
    .replace("@V@", &value);
    let k = pod(&config, term_logging_app());
    wait_ready(&k);
    let got = etcd.ctl(&["get", "/services/web/pod-1", "--print-value-only"]);
    assert_eq!(got.as_deref().map(str::trim), Some("127.0.0.1:8080"));
    let report = k.kill_pod(Duration::from_secs(5));
    let hook = report.hook.as_ref().unwrap();
    assert_eq!(hook.answered().status, 200, "{}", hook.answered().body);
    let got = etcd.ctl(&["get", "/services/web/pod-1"]);
    assert_eq!(
        got.as_deref().map(str::trim),
        Some(""),
        "key still registered"
    );
    assert_eq!(report.code, Some(0));
}

// The emulator itself: its HTTP client must read what drainit may send.

/// Answers every request with `raw` and, if `close`, closes the
/// connection; records each request head.
fn raw_server(raw: &'static str, close: bool) -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let got = kubelet::http::read_request_head(&mut conn);
            let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
            let _ = conn.write_all(raw.as_bytes());
            if !close {
                held.push(conn);
            }
        }
    });
    (port, rx)
}

#[test]
fn emulator_client_reads_length_chunked_and_eof_bodies() {
    let (port, heads) = raw_server("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false);
    let k_hook = HttpGet::new("/prestop").header("Authorization", "Bearer t");
    let req = Request::new(port, "GET", &k_hook.path)
        .header("User-Agent", "kube-lifecycle/1.31")
        .header("Authorization", "Bearer t")
        .timeout(None);
    let r = req.send().unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "hello"));
    let head = heads.recv().unwrap();
    assert!(head.starts_with("GET /prestop HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nAuthorization: Bearer t\r\n"), "{head}");
    let (port, _) = raw_server(
        "HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nstep\r\n6\r\n: ok\r\n\r\n0\r\n\r\n",
        false,
    );
    let r = http::get(port, "/x").unwrap();
    assert_eq!((r.status, r.body.as_str()), (500, "step: ok\r\n"));
    let (port, _) = raw_server("HTTP/1.0 503 No\r\n\r\nnot ready", true);
    let r = http::get(port, "/x").unwrap();
    assert_eq!((r.status, r.body.as_str()), (503, "not ready"));
    // A probe gets no answer from a server that never answers: None, at 1s.
    let (port, heads) = raw_server("", false);
    let start = Instant::now();
    assert_eq!(http::probe(port, "/readyz"), None);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let head = heads.recv().unwrap();
    assert!(head.contains("User-Agent: kube-probe/1.31\r\n"), "{head}");
    assert!(head.contains("Connection: close\r\n"), "{head}");
}

/// The one response reader: on a kept-alive connection each response ends
/// where it should (no byte of the next one taken), whatever the buffer's
/// size, and the body is delimited by length, chunks, nothing, or EOF.
#[test]
fn emulator_reader_stops_at_the_end_of_each_response() {
    let wire: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
        HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n\
        HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nhi\r\n0\r\nT: 1\r\n\r\n\
        HTTP/1.0 200 OK\r\n\r\nrest";
    for capacity in [1, 7, 64, 4096] {
        let mut r = std::io::BufReader::with_capacity(capacity, wire);
        let got: Vec<(u16, String, bool)> = (0..4)
            .map(|_| {
                let a = util::http::read_response(&mut r, false).unwrap();
                (a.status, a.body.clone(), a.closes())
            })
            .collect();
        assert_eq!(
            got,
            [
                (200, "ok".into(), false),
                (204, "".into(), false),
                (200, "hi".into(), false),
                (200, "rest".into(), true),
            ],
            "buffer of {capacity}"
        );
        assert!(util::http::read_response(&mut r, false).is_err());
    }
}

#[test]
fn emulator_parses_prometheus_text() {
    let text = "# HELP drainit_state State.\n# TYPE drainit_state gauge\ndrainit_state{state=\"running\"} 1\ndrainit_state{state=\"a,b\\\"c\"} 0\n# TYPE drainit_step_seconds histogram\ndrainit_step_seconds_bucket{le=\"+Inf\"} 3\ndrainit_step_seconds_sum 0.5\ndrainit_step_seconds_count 3\n# TYPE drainit_restarts_total counter\ndrainit_restarts_total 0\n";
    let samples = parse_metrics(text);
    assert_eq!(samples.len(), 6);
    assert_eq!(samples[1].labels, "state=\"a,b\\\"c\"");
    assert_eq!(samples[3].value, 0.5);
    let untyped = try_parse_metrics("drainit_x 1\n");
    assert!(untyped.is_err(), "a sample without # TYPE must be refused");
    assert!(try_parse_metrics("# TYPE a gauge\na{b=c} 1\n").is_err());
    assert!(try_parse_metrics("# TYPE a gauge\na one\n").is_err());
}

// 15. Hard deaths: the record survives drainit's own SIGKILL (SPEC 8).

/// Today's date as drainit's records write it, `2026-11-25T`.
fn today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT"])
        .output()
        .expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits for `$DIR/<name>` (a step's "I am running" marker).
fn wait_file(k: &Kubelet, name: &str) {
    wait_for(name, Duration::from_secs(10), || {
        k.pod.path(name).exists().then_some(())
    });
}

/// Waits until the flight record names `what` (e.g. `step 2/3`). A step's
/// "I am running" marker can come a moment before the record's rewrite:
/// the step runner starts the next step while the driver rewrites the
/// file on the progress event, so a test that kills on the marker alone
/// could catch the record one step behind.
fn wait_record(k: &Kubelet, what: &str) {
    wait_for(what, Duration::from_secs(10), || {
        std::fs::read_to_string(k.pod.path("termination-log"))
            .ok()
            .filter(|record| record.contains(what))
            .map(|_| ())
    });
}

/// SIGKILLs drainit (PID 1: the kernel then kills its whole namespace,
/// as a group OOM kill or the kubelet's SIGKILL at the end of the grace
/// period kills the container) and returns the record left.
fn sigkill_and_read_record(k: &Kubelet) -> String {
    k.pod.signal(libc::SIGKILL);
    k.pod
        .wait_exit(Duration::from_secs(10))
        .expect("the container dies with its PID 1");
    let record = read(&k.pod.path("termination-log"));
    eprintln!("record:\n{record}");
    assert!(record.len() <= 4096, "{} bytes", record.len());
    record
}

const RECORD_PATH: &str = "\n[termination_message]\npath = \"${DIR}/termination-log\"\n";

#[test]
fn sigkill_to_drainit_during_a_drain_step_leaves_a_record_saying_where() {
    let config = format!(
        r#"
[shutdown]
grace_period = "30s"
stop_timeout = "5s"
{RECORD_PATH}
[[drain]]
name = "stop accepting"
exec = ["true"]

[[drain]]
name = "deregister"
exec = ["sh", "-c", "touch $DIR/step; sleep 100"]
timeout = "60s"

[[drain]]
sleep = "1s"
"#
    );
    let k = pod(&config, term_logging_app());
    wait_ready(&k);
    assert!(
        !k.pod.path("termination-log").exists(),
        "nothing is written while the app simply runs"
    );
    let day = today();
    k.pod.signal(libc::SIGTERM);
    wait_file(&k, "step");
    wait_record(&k, "step 2/3");
    let record = sigkill_and_read_record(&k);
    let mut lines = record.lines();
    let first = lines.next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "killed during the drain: step 2/3 \"deregister\" started at {day}"
        )),
        "{record}"
    );
    assert!(
        first.contains(&format!("; cause signal; budget ends at {day}")),
        "{record}"
    );
    assert!(
        lines.next().is_some_and(
            |l| l.starts_with("drainit was alive at") && l.contains("app still running")
        ),
        "{record}"
    );
    assert!(record.contains("\ndrain: stop accepting: ok ("), "{record}");
}

#[test]
fn sigkill_to_drainit_during_poststart_leaves_a_record_saying_where() {
    let config = format!(
        r#"{RECORD_PATH}
[[poststart]]
name = "warm caches"
exec = ["sh", "-c", "touch $DIR/step; sleep 100"]
timeout = "60s"
"#
    );
    let k = pod(&config, term_logging_app());
    wait_up(&k);
    wait_file(&k, "step");
    wait_record(&k, "step 1/1");
    let day = today();
    let record = sigkill_and_read_record(&k);
    assert!(
        record.starts_with(&format!(
            "killed during poststart: step 1/1 \"warm caches\" started at {day}"
        )),
        "{record}"
    );
}

#[test]
fn grace_overrun_kills_drainit_during_the_stop_and_the_record_says_so() {
    // drainit thinks it has 30s; the pod gives 2s (a terminationGracePeriod
    // shorter than grace_period). The app ignores SIGTERM, so the kubelet's
    // SIGKILL ends drainit while it waits for the app.
    let config = format!(
        r#"
[shutdown]
grace_period = "30s"
stop_timeout = "5s"
{RECORD_PATH}"#
    );
    let k = pod(&config, term_ignoring_app());
    wait_ready(&k);
    let day = today();
    let report = k.kill_pod(Duration::from_secs(2));
    assert!(report.sigkill.is_some(), "the kubelet had to SIGKILL");
    let record = read(&k.pod.path("termination-log"));
    eprintln!("record:\n{record}");
    let first = record.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "killed during the stop: SIGTERM sent to the app at {day}"
        )),
        "{record}"
    );
    assert!(
        first.contains("; cause prestop (SIGTERM came); SIGKILL due at "),
        "{record}"
    );
}

/// An app that waits for `$DIR/go`, then prints a stack trace and exits 1.
fn crashing_app() -> Vec<String> {
    sh(r#"echo up > "$DIR/up"
while [ ! -e "$DIR/go" ]; do sleep 0.02; done
echo 'Exception in thread "main" java.lang.IllegalStateException: boom' >&2
echo '	at com.example.Main.main(Main.java:42)' >&2
exit 1"#)
}

fn crash_pod(on_crash: &str) -> (Kubelet, String) {
    let config = format!(
        r#"{RECORD_PATH}{on_crash}
[[on_exit]]
name = "flush"
exec = ["sh", "-c", "echo $DRAINIT_STOP_CAUSE > $DIR/on_exit"]
"#
    );
    let k = pod(&config, crashing_app());
    // The kubelet creates the file, empty, before the container starts.
    std::fs::write(k.pod.path("termination-log"), "").unwrap();
    wait_up(&k);
    std::fs::write(k.pod.path("go"), "").unwrap();
    let (_, status) = k
        .pod
        .wait_exit(Duration::from_secs(10))
        .expect("drainit exits with the app");
    assert_eq!(status.code(), Some(1), "{}", k.pod.stderr());
    let shown =
        kubelet::last_state_message(&k.pod.path("termination-log"), &k.pod.stderr(), 1, true);
    eprintln!("kubectl describe pod, Last State, Message:\n{shown}");
    (k, shown)
}

#[test]
fn a_crash_leaves_the_file_empty_so_the_kubelet_shows_the_stack_trace() {
    let (k, shown) = crash_pod("");
    assert_eq!(read(&k.pod.path("termination-log")), "");
    assert!(
        shown.contains("java.lang.IllegalStateException: boom\n\tat com.example.Main.main"),
        "{shown}"
    );
    assert_eq!(
        read(&k.pod.path("on_exit")),
        "app_exit\n",
        "on_exit still runs"
    );
}

#[test]
fn a_crash_with_on_crash_record_shows_drainits_record() {
    let (k, shown) = crash_pod("on_crash = \"record\"\n");
    assert!(
        shown.starts_with("exit 1 (exited with code 1) on its own, no stop requested\n"),
        "{shown}"
    );
    assert!(shown.contains("\non_exit: flush: ok ("), "{shown}");
    assert!(!shown.contains("IllegalStateException"), "{shown}");
    assert_eq!(read(&k.pod.path("on_exit")), "app_exit\n");
}

/// A pod whose drain takes a thread dump on a liveness kill only.
fn dump_pod(liveness: &str) -> Kubelet {
    let config = format!(
        r#"
[shutdown]
grace_period = "4s"
stop_timeout = "2s"
{RECORD_PATH}{liveness}
[[drain]]
name = "thread dump"
when = ["liveness"]
exec = ["sh", "-c", "echo $DRAINIT_STOP_CAUSE $DRAINIT_APP_PID > $DIR/dump"]

[[drain]]
name = "deregister"
exec = ["sh", "-c", "echo $DRAINIT_STOP_CAUSE $DRAINIT_APP_PID $DRAINIT_BUDGET_LEFT_MS > $DIR/deregister"]
"#
    );
    let app = sh(r#"trap 'exit 0' TERM
echo $$ > "$DIR/pid"
echo up > "$DIR/up"
while :; do sleep 1000 & wait; done"#);
    let k = pod(&config, app);
    wait_ready(&k);
    k
}

#[test]
fn a_liveness_kill_runs_the_liveness_steps_and_a_rollout_does_not() {
    let closed = free_port();
    let k = dump_pod(&format!(
        "\n[liveness]\ncheck = {{ tcp = \"127.0.0.1:{closed}\" }}\n"
    ));
    let app_pid = read(&k.pod.path("pid"));
    let (probes, report) = k.liveness_kill(
        kubelet::LivenessProbe {
            period: Duration::from_millis(100),
            failure_threshold: 3,
        },
        Duration::from_secs(4),
    );
    assert_eq!(probes, 3, "three failures in a row, then the kill");
    assert_eq!(report.hook.as_ref().unwrap().answered().status, 200);
    assert_eq!(report.code, Some(0), "{}", k.pod.stderr());
    assert_eq!(
        read(&k.pod.path("dump")),
        format!("liveness {app_pid}"),
        "the dump step ran, with the app's pid"
    );
    let dereg = read(&k.pod.path("deregister"));
    let fields: Vec<&str> = dereg.split_whitespace().collect();
    assert_eq!(fields[..2], ["liveness", app_pid.trim()], "{dereg}");
    let left: u64 = fields[2].parse().unwrap();
    assert!((1..=2000).contains(&left), "budget left {left} ms of 2000");
    let record = read(&k.pod.path("termination-log"));
    eprintln!("record:\n{record}");
    assert!(
        record.starts_with(
            "exit 0 (exited with code 0) after drain; stop triggered by SIGTERM via liveness;"
        ),
        "{record}"
    );
    assert!(k.pod.stderr().contains("cause=\"liveness\""), "logged");

    // The same pod, healthy: a rollout's /prestop skips the dump.
    let k = dump_pod("");
    let report = k.kill_pod(Duration::from_secs(4));
    assert_eq!(report.code, Some(0), "{}", k.pod.stderr());
    assert!(!k.pod.path("dump").exists(), "no dump on a rollout");
    assert!(read(&k.pod.path("deregister")).starts_with("prestop "));
    let record = read(&k.pod.path("termination-log"));
    eprintln!("record:\n{record}");
    assert!(
        record.contains("\ndrain: thread dump: not_selected (0.000s) cause prestop not in when\n"),
        "{record}"
    );
}

/// SPEC 2 and 5: a restarted app is a running app in every respect. The
/// 503 that `/healthz` answered while the crashed run waited out its
/// back-off was about a process that is gone: a rollout of the restarted,
/// healthy app is a `prestop`, not a liveness kill, and skips the dump.
#[test]
fn a_rollout_after_a_restart_is_no_liveness_kill() {
    let config = format!(
        r#"
[app]
restart = "on-failure"
restart_backoff = {{ initial = "2s" }}

[shutdown]
grace_period = "4s"
stop_timeout = "2s"
{RECORD_PATH}
[[drain]]
name = "thread dump"
when = ["liveness"]
exec = ["sh", "-c", "echo $DRAINIT_STOP_CAUSE > $DIR/dump"]
"#
    );
    let k = pod(&config, app_failing_once());
    wait_for("the back-off wait", Duration::from_secs(10), || {
        let status = http::get(k.pod.port, "/status").ok()?.json();
        (status["state"] == "starting" && status["app_alive"] == false).then_some(())
    });
    assert_eq!(k.probe("/healthz"), Some(503), "probed during the back-off");
    wait_for("the restart", Duration::from_secs(10), || {
        let status = http::get(k.pod.port, "/status").ok()?.json();
        (status["restarts"] == 1 && status["app_alive"] == true).then_some(())
    });
    wait_ready(&k);
    let report = k.kill_pod(Duration::from_secs(4));
    assert_eq!(report.hook.as_ref().unwrap().answered().status, 200);
    assert_eq!(report.code, Some(0), "{}", k.pod.stderr());
    assert!(
        !k.pod.path("dump").exists(),
        "dump ran for cause {}",
        read(&k.pod.path("dump"))
    );
    let record = read(&k.pod.path("termination-log"));
    assert!(record.contains(" via prestop;"), "{record}");
}

/// SPEC 5 and 6: a drain started by `POST /drain` has no budget until a
/// trigger signal starts the clock; the steps that start after it see
/// what is left of the budget in `DRAINIT_BUDGET_LEFT_MS`.
#[test]
fn a_trigger_during_a_post_drain_gives_the_later_steps_a_budget() {
    let config = r#"
[shutdown]
grace_period = "10s"
stop_timeout = "2s"

[[drain]]
name = "hold"
exec = ["sh", "-c", "echo \"[$DRAINIT_BUDGET_LEFT_MS]\" > $DIR/first; while [ ! -e $DIR/go ]; do sleep 0.02; done"]
timeout = "20s"

[[drain]]
name = "budget"
exec = ["sh", "-c", "echo \"[$DRAINIT_BUDGET_LEFT_MS]\" > $DIR/budget"]
"#;
    let k = pod(config, term_logging_app());
    wait_ready(&k);
    let r = Request::new(k.pod.port, "POST", "/drain").send().unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    wait_file(&k, "first");
    assert_eq!(read(&k.pod.path("first")).trim(), "[]", "no clock yet");
    k.pod.signal(libc::SIGTERM);
    wait_for("the trigger", Duration::from_secs(10), || {
        k.pod
            .stderr()
            .contains("trigger signal received")
            .then_some(())
    });
    std::fs::write(k.pod.path("go"), "").unwrap();
    wait_file(&k, "budget");
    let shown = read(&k.pod.path("budget"));
    let left: u64 = shown
        .trim()
        .trim_matches(['[', ']'])
        .parse()
        .unwrap_or_else(|_| panic!("DRAINIT_BUDGET_LEFT_MS was {shown:?}"));
    assert!((1..=8000).contains(&left), "{left} ms of 8000");
    assert!(k.pod.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn keepalive_beats_on_its_interval_while_ready_and_stops_when_the_shutdown_starts() {
    let config = r#"
[[keepalive]]
name = "ttl pass"
exec = ["sh", "-c", "date +%s%N >> $DIR/beats"]
interval = "200ms"
"#;
    let k = pod(config, term_logging_app());
    wait_ready(&k);
    let beats = || {
        read(&k.pod.path("beats"))
            .lines()
            .map(|l| l.parse::<u128>().unwrap())
            .collect::<Vec<_>>()
    };
    wait_for("4 beats", Duration::from_secs(10), || {
        (beats().len() >= 4).then_some(())
    });
    let answer = k.call_hook(&HttpGet::new("/prestop")).unwrap();
    assert_eq!(answer.status, 200);
    let at_prestop = beats();
    // On average (one late spawn must not fail it): the interval, not
    // faster, and not much slower.
    let span_ms = (at_prestop[at_prestop.len() - 1] - at_prestop[0]) / 1_000_000;
    let mean_ms = span_ms / (at_prestop.len() as u128 - 1);
    assert!(
        (150..1000).contains(&mean_ms),
        "beats {mean_ms} ms apart on average"
    );
    // Three intervals with no beat: the timer is gone.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(beats(), at_prestop, "a beat after the shutdown started");
    let metrics = http::get(k.pod.port, "/metrics").unwrap().body;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "drainit_keepalive_runs_total{index=\"0\",step=\"ttl pass\",result=\"success\"}",
            )
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    // A run in flight when the shutdown started (its line written, its
    // exit not yet reaped) is cancelled and counted as neither.
    let counted: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        (at_prestop.len() - 1..=at_prestop.len()).contains(&counted),
        "{line}, {} beats",
        at_prestop.len()
    );
    assert!(
        metrics.contains("drainit_shutdown_cause{cause=\"prestop\"} 1"),
        "{metrics}"
    );
}

/// SPEC 6 with SPEC 2: keepalive runs while the app is ready, so it stops
/// when the app crashes (no beat through the back-off wait) and starts
/// again once the restarted app's poststart succeeded.
#[test]
fn keepalive_stops_on_a_crash_and_beats_again_after_the_restart() {
    let config = r#"
[app]
restart = "on-failure"
restart_backoff = { initial = "1s" }

[[poststart]]
exec = ["sh", "-c", "date +%s%N > $DIR/ready-at"]

[[keepalive]]
name = "ttl pass"
exec = ["sh", "-c", "date +%s%N >> $DIR/beats"]
interval = "100ms"
"#;
    let app = sh(r#"if [ ! -e "$DIR/crashed" ]; then
  while [ "$(wc -l < "$DIR/beats" 2>/dev/null || echo 0)" -lt 3 ]; do sleep 0.02; done
  date +%s%N > "$DIR/crashed"; exit 1
fi
trap 'exit 0' TERM
while :; do sleep 1000 & wait; done"#);
    let k = pod(config, app);
    wait_for("the restart", Duration::from_secs(10), || {
        let status = http::get(k.pod.port, "/status").ok()?.json();
        (status["restarts"] == 1 && status["state"] == "running").then_some(())
    });
    let stamp = |name: &str| read(&k.pod.path(name)).trim().parse::<u128>().unwrap();
    let (crashed, ready_again) = (stamp("crashed"), stamp("ready-at"));
    let beats = || {
        read(&k.pod.path("beats"))
            .lines()
            .map(|l| l.parse::<u128>().unwrap())
            .collect::<Vec<_>>()
    };
    wait_for("beats after the restart", Duration::from_secs(10), || {
        (beats().iter().filter(|&&b| b > ready_again).count() >= 2).then_some(())
    });
    // A run that was starting when the app exited may still write its
    // line; none may come later in the back-off wait.
    let in_backoff: Vec<u128> = beats()
        .into_iter()
        .filter(|&b| b > crashed + 100_000_000 && b < ready_again)
        .collect();
    assert!(
        in_backoff.is_empty(),
        "beats during the back-off: {in_backoff:?}"
    );
    let report = k.kill_pod(Duration::from_secs(3));
    assert_eq!(report.code, Some(0), "{}", k.pod.stderr());
}

#[test]
fn python_faulthandler_recipe_dumps_the_threads_on_a_liveness_kill() {
    // The docs' recipe (configuration.md, "Diagnostics on a liveness
    // kill"), for real: the app registers faulthandler on SIGUSR1, writing
    // to a volume; a `when = ["liveness"]` step sends the signal and the
    // next one waits for the dump.
    let closed = free_port();
    let config = format!(
        r#"
[liveness]
check = {{ tcp = "127.0.0.1:{closed}" }}

[shutdown]
grace_period = "5s"
stop_timeout = "2s"

[[drain]]
name = "python thread dump"
when = ["liveness"]
signal = "USR1"

[[drain]]
name = "dump written"
when = ["liveness"]
exec = ["sh", "-c", "until grep -q 'most recent call first' $DIR/threads.txt 2>/dev/null; do sleep 0.02; done"]
timeout = "2s"
"#
    );
    let app = r#"
import faulthandler, os, signal, sys, threading, time
dump = open(os.path.join(os.environ["DIR"], "threads.txt"), "w")
faulthandler.register(signal.SIGUSR1, file=dump, all_threads=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
def worker_waiting_on_the_database():
    time.sleep(1000)
threading.Thread(target=worker_waiting_on_the_database, daemon=True).start()
open(os.path.join(os.environ["DIR"], "up"), "w").write("up\n")
while True:
    time.sleep(1000)
"#;
    let k = pod(&config, vec![PY.into(), "-c".into(), app.into()]);
    wait_ready(&k);
    let (_, report) = k.liveness_kill(
        kubelet::LivenessProbe {
            period: Duration::from_millis(100),
            failure_threshold: 3,
        },
        Duration::from_secs(5),
    );
    assert_eq!(report.hook.as_ref().unwrap().answered().status, 200);
    let dump = read(&k.pod.path("threads.txt"));
    eprintln!("dump:\n{dump}");
    assert!(dump.contains("in worker_waiting_on_the_database"), "{dump}");
}

// 16. A registration that expires by itself: the Consul example's TTL check.

/// A stand-in Consul agent: answers 200 to everything and records
/// (when, method, path, body).
type Calls = std::sync::Arc<std::sync::Mutex<Vec<(Instant, String, String, String)>>>;

fn consul_agent() -> (u16, Calls) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls: Calls = Default::default();
    let seen = calls.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let got = kubelet::http::read_request_head(&mut conn);
            let end = got
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(got.len(), |i| i + 4);
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let mut body = got[end..].to_vec();
            if body.len() < length {
                let mut rest = vec![0; length - body.len()];
                let _ = conn.read_exact(&mut rest);
                body.extend(rest);
            }
            let mut words = head.split_whitespace();
            let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            seen.lock().unwrap().push((
                Instant::now(),
                method.to_string(),
                path.to_string(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, calls)
}

#[test]
fn the_consul_example_registers_a_ttl_check_that_expires_when_the_pod_is_sigkilled() {
    let (agent, calls) = consul_agent();
    let app_port = free_port();
    // The example itself, with its fixed port free and its intervals short.
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/registry/consul/drainit.toml"
    ))
    .unwrap();
    assert!(example.contains("interval = \"5s\""), "the example changed");
    let config = example
        .replace("8080", &app_port.to_string())
        .replace("interval = \"5s\"", "interval = \"200ms\"")
        .replace("sleep = \"5s\"", "sleep = \"100ms\"");
    let app = vec![
        PY.to_string(),
        "-m".into(),
        "http.server".into(),
        "--bind".into(),
        "127.0.0.1".into(),
        app_port.to_string(),
    ];
    let pod = Container::start_with(Options {
        config,
        app,
        env: vec![
            ("CONSUL_URL".into(), format!("http://127.0.0.1:{agent}")),
            ("POD_NAME".into(), "web-0".into()),
            ("POD_NAMESPACE".into(), "default".into()),
            ("POD_IP".into(), "127.0.0.1".into()),
        ],
        ..Options::default()
    });
    let pass = "/v1/agent/check/pass/ttl-default-web-0";
    let passes = || {
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.2 == pass)
            .map(|c| c.0)
            .collect::<Vec<_>>()
    };
    wait_for("3 TTL passes", Duration::from_secs(10), || {
        (passes().len() >= 3).then_some(())
    });
    let register = calls.lock().unwrap()[0].clone();
    assert_eq!(
        (register.1.as_str(), register.2.as_str()),
        ("PUT", "/v1/agent/service/register")
    );
    assert!(
        register
            .3
            .contains("\"CheckID\": \"ttl-default-web-0\", \"TTL\": \"15s\"")
            && register
                .3
                .contains("\"DeregisterCriticalServiceAfter\": \"1m\""),
        "{}",
        register.3
    );

    // A group OOM kill: everything dies at once, no drain, no on_exit.
    pod.signal(libc::SIGKILL);
    let (died, _) = pod.wait_exit(Duration::from_secs(10)).expect("dies");
    let before = passes();
    std::thread::sleep(Duration::from_millis(600));
    let after = passes();
    assert_eq!(after, before, "passes after the pod died");
    let last = *after.last().unwrap();
    assert!(last <= died);
    let all = calls.lock().unwrap().clone();
    assert!(
        !all.iter().any(|c| c.2.contains("deregister")),
        "nothing deregistered: {all:?}"
    );
    // What Consul does next (its TTL check semantics): critical 15s after
    // the last pass, removed 1m later.
    eprintln!(
        "consul saw: register, {} TTL passes every 200ms, the last {:.3}s before the SIGKILL; \
         no deregister; the check turns critical 15s after the last pass and the agent \
         removes the instance 1m later",
        after.len(),
        died.saturating_duration_since(last).as_secs_f64()
    );
}

#[test]
fn the_record_stands_while_poststart_runs_and_the_file_is_empty_again_once_ready() {
    let config = format!(
        r#"{RECORD_PATH}
[[poststart]]
name = "warm caches"
exec = ["sh", "-c", "touch $DIR/step; while [ ! -e $DIR/go ]; do sleep 0.02; done"]
timeout = "30s"
"#
    );
    let k = pod(&config, term_logging_app());
    wait_file(&k, "step");
    wait_record(&k, "step 1/1");
    let record = read(&k.pod.path("termination-log"));
    assert!(
        record.starts_with("killed during poststart: step 1/1 \"warm caches\" started at "),
        "{record}"
    );
    std::fs::write(k.pod.path("go"), "").unwrap();
    wait_ready(&k);
    assert_eq!(
        read(&k.pod.path("termination-log")),
        "",
        "the app simply runs: the file is empty"
    );
    let report = k.kill_pod(Duration::from_secs(3));
    assert_eq!(report.code, Some(0));
    let record = read(&k.pod.path("termination-log"));
    assert!(record.starts_with("exit 0 (exited with code 0); stop triggered by SIGTERM via prestop; SIGKILL not needed\npoststart: warm caches: ok ("), "{record}");
}

/// An app that crashes while its poststart runs, restarted after a
/// back-off: the poststart is over (cut), no stop is in progress, so the
/// file is empty again during the wait (SPEC 8, `on_crash = "logs"`), and
/// a SIGKILL then must not leave a record saying drainit was killed during
/// a poststart that no longer runs.
#[test]
fn a_crash_during_poststart_leaves_no_stale_record_through_the_backoff() {
    let config = format!(
        r#"{RECORD_PATH}
[app]
restart = "on-failure"
restart_backoff = {{ initial = "30s" }}

[[poststart]]
name = "warm caches"
exec = ["sh", "-c", "touch $DIR/step; sleep 100"]
timeout = "60s"
"#
    );
    let k = pod(
        &config,
        sh(r#"while [ ! -e "$DIR/step" ]; do sleep 0.02; done; exit 3"#),
    );
    wait_for("the back-off wait", Duration::from_secs(10), || {
        let status = http::get(k.pod.port, "/status").ok()?.json();
        (status["app_alive"] == false && status["poststart"]["state"] != "running").then_some(())
    });
    let record = sigkill_and_read_record(&k);
    assert_eq!(
        record, "",
        "no stop was in progress: the crash is left to the logs"
    );
}

// Issue 9, defect 4: secrets never show; URL userinfo is sent.

#[test]
fn step_names_show_the_config_text_and_userinfo_goes_out_as_basic_auth() {
    let (port, heads) = raw_server(
        "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        true,
    );
    let (pass, token) = (format!("hunter2x{port}"), format!("realkey{port}"));
    let config = format!(
        r#"
[termination_message]
path = "${{DIR}}/termination-log"

[readiness]
check = {{ http = "http://admin:${{SECRET_PASS}}@127.0.0.1:{port}/ready?token=${{TOKEN}}" }}

[[poststart]]
wait_http = {{ url = "http://admin:${{SECRET_PASS}}@127.0.0.1:{port}/health" }}

[[drain]]
http = {{ url = "http://admin:${{SECRET_PASS}}@127.0.0.1:{port}/deregister?token=${{TOKEN}}", method = "PUT" }}

[[drain]]
exec = ["sh", "-c", "test -n \"$1\"", "-", "Bearer ${{TOKEN}}", "http://u:${{SECRET_PASS}}@h/x?t=${{TOKEN}}"]
"#
    );
    let pod = Container::start_with(Options {
        config,
        app: term_logging_app(),
        env: vec![
            ("SECRET_PASS".to_string(), pass.clone()),
            ("TOKEN".to_string(), token.clone()),
        ],
        ..Options::default()
    });
    let k = Kubelet::new(pod).with_pre_stop(HttpGet::new("/prestop"));
    wait_ready(&k);
    let answer = k
        .call_hook(&HttpGet::new("/prestop"))
        .expect("/prestop answered");
    assert_eq!(answer.status, 200, "{}", answer.body);
    // wait_http (poststart), the readiness check and the http step all
    // sent the URL's userinfo as Basic auth, and the path and query as is.
    let heads: Vec<String> = heads.try_iter().collect();
    let basic = base64(format!("admin:{pass}").as_bytes()).to_ascii_lowercase();
    for request_line in [
        "GET /health HTTP/1.1\r\n".to_string(),
        format!("GET /ready?token={token} HTTP/1.1\r\n"),
        format!("PUT /deregister?token={token} HTTP/1.1\r\n"),
    ] {
        let head = heads
            .iter()
            .find(|h| h.starts_with(&request_line))
            .unwrap_or_else(|| panic!("no {request_line:?} in {heads:#?}"));
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("authorization: basic {basic}\r\n")),
            "userinfo not sent as Basic auth:\n{head}"
        );
    }
    let status = http::get(k.pod.port, "/status").expect("/status").body;
    let metrics = http::get(k.pod.port, "/metrics").expect("/metrics").body;
    let http_name = format!("http PUT http://127.0.0.1:{port}/deregister");
    let exec_name = "exec sh -c test -n \"$1\" - Bearer ${TOKEN} http://h/x".to_string();
    assert!(status.contains(&http_name), "{status}");
    assert!(
        status.contains(&exec_name.replace('"', "\\\"")),
        "{exec_name}\n{status}"
    );
    let report = k.kill_pod(Duration::from_secs(5));
    assert_eq!(report.code, Some(0));
    let record = read(&k.pod.path("termination-log"));
    let log = k.pod.stderr();
    assert!(record.contains(&http_name), "{record}");
    for (what, text) in [
        ("/status", &status),
        ("/metrics", &metrics),
        ("the termination record", &record),
        ("the log", &log),
        ("/prestop's answer", &answer.body),
    ] {
        for secret in [&pass, &token, &"admin:".to_string()] {
            assert!(
                !text.contains(secret.as_str()),
                "{what} shows {secret:?}:\n{text}"
            );
        }
    }
}

// The core's shortcuts (docs/design.md, "The two threads"): with no drain
// step the core stops the app itself on SIGTERM, and exits with it only
// when nothing is left for the lifecycle. These guard the "only when".

/// An app with no child of its own (so nothing is left when it exits)
/// that exits 0 on SIGTERM.
fn childless_term_app() -> Vec<String> {
    vec![
        PY.to_string(),
        "-c".to_string(),
        r#"
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
open(os.environ["DIR"] + "/up", "w").close()
while True:
    time.sleep(1000)
"#
        .to_string(),
    ]
}

#[test]
fn sigterm_with_no_drain_step_still_writes_the_termination_record() {
    let k = pod(RECORD_PATH, childless_term_app());
    wait_ready(&k);
    k.pod.signal(libc::SIGTERM);
    assert!(k.pod.wait_exit(Duration::from_secs(10)).is_some());
    assert_eq!(k.pod.exit_code(), Some(0));
    let record = read(&k.pod.path("termination-log"));
    assert!(
        record.starts_with("exit 0 (exited with code 0)") && record.contains("SIGTERM"),
        "the lifecycle must write the record, not the core exit past it: {record:?}"
    );
}

#[test]
fn prestop_stops_app_with_no_drain_step_answers_before_drainit_exits() {
    let config = "[shutdown]\nprestop_stops_app = true\n";
    let k = pod(config, childless_term_app());
    wait_ready(&k);
    let answer = k.call_hook(&HttpGet::new("/prestop"));
    let answer = answer.expect("/prestop answered, not cut by drainit's exit");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(k.pod.wait_exit(Duration::from_secs(5)).is_some());
    assert_eq!(k.pod.exit_code(), Some(0));
}

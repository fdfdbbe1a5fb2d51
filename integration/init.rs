//! End-to-end tests of the PID-1 core (SPEC sections 1, 2, 3, 7, 8): the
//! real release binary runs as PID 1 of a fresh PID namespace, supervising
//! small `sh` (and one `python3`) apps that record what they receive into
//! files. See `util` for the helper that owns each run.

mod util;

use std::time::{Duration, Instant};

use util::{run, stat, wait_until, Drainit, Launch, Scenario};

/// Short budgets so that every shutdown in this file takes seconds at most.
const FAST: &str = r#"
[shutdown]
grace_period = "3s"
stop_timeout = "1s"
kill_margin = "500ms"
orphan_grace = "500ms"
"#;

/// An app that records each of `signals` (by name) as a line in `$D/got`,
/// then runs `extra`, says `ready`, and idles in short sleeps (dash runs
/// traps only between commands).
fn recorder(sc: &Scenario, signals: &[&str], extra: &str) -> String {
    let traps: String = signals
        .iter()
        .map(|s| format!("trap 'echo {s} >> \"$D/got\"' {s}\n"))
        .collect();
    sc.script(
        "app.sh",
        &format!("{traps}{extra}\necho ready > \"$D/ready\"\nwhile :; do sleep 0.05; done"),
    )
}

// ---- exit codes (SPEC 8) -------------------------------------------------

fn exit_code_of(script: &str) -> i32 {
    let sc = Scenario::new();
    run(&sc, &["--", "/bin/sh", "-c", script]).0
}

#[test]
fn exit_code_zero_passes_through() {
    assert_eq!(exit_code_of("exit 0"), 0);
}

#[test]
fn exit_code_seven_passes_through() {
    assert_eq!(exit_code_of("exit 7"), 7);
}

#[test]
fn death_by_sigkill_is_137() {
    assert_eq!(exit_code_of("kill -KILL $$"), 137);
}

#[test]
fn death_by_sigterm_is_143() {
    assert_eq!(exit_code_of("kill -TERM $$"), 143);
}

#[test]
fn exit_code_map_remaps_143() {
    let sc = Scenario::new();
    let config = sc.config("[shutdown]\nexit_code_map = { 143 = 0 }\n");
    let (code, _, _) = run(
        &sc,
        &["-c", &config, "--", "/bin/sh", "-c", "kill -TERM $$"],
    );
    assert_eq!(code, 0);
}

/// A script without `#!` runs with `/bin/sh`, as `execvp` (tini's, and
/// std's fork path) does it; drainit's posix_spawn path, which would
/// fail with ENOEXEC, falls back to the fork.
#[test]
fn a_script_without_a_shebang_runs_with_sh() {
    let sc = Scenario::new();
    let path = sc.path("no-shebang");
    std::fs::write(&path, "exit 7\n").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, _, err) = run(&sc, &["--", &sc.p("no-shebang")]);
    assert_eq!(code, 7, "{err}");
}

#[test]
fn not_executable_is_126() {
    let sc = Scenario::new();
    let path = sc.path("not-executable");
    std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
    let (code, _, err) = run(&sc, &["--", &sc.p("not-executable")]);
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("not-executable"), "{err}");
}

#[test]
fn missing_command_is_127() {
    let sc = Scenario::new();
    let (code, _, err) = run(&sc, &["--", "drainit-no-such-command"]);
    assert_eq!(code, 127);
    assert!(err.contains("drainit-no-such-command"), "{err}");
    let (code, _, _) = run(&sc, &["--", "/nonexistent/app"]);
    assert_eq!(code, 127);
}

// ---- command line and config (SPEC 1, 7) ---------------------------------

#[test]
fn no_command_is_a_usage_error() {
    let sc = Scenario::new();
    let (code, _, err) = run(&sc, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("no command"), "{err}");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let sc = Scenario::new();
    let (code, _, err) = run(&sc, &["--no-such-flag", "--", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
}

#[test]
fn command_without_double_dash_keeps_its_own_options() {
    let sc = Scenario::new();
    let (code, _, err) = run(&sc, &["/bin/sh", "-c", "exit 3"]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn config_errors_name_file_line_and_key() {
    let cases = [
        (
            "unknown key",
            "[shutdown]\ngrace_perod = \"3s\"\n",
            2,
            "shutdown.grace_perod",
        ),
        (
            "bad duration",
            "[shutdown]\ngrace_period = \"soon\"\n",
            2,
            "shutdown.grace_period",
        ),
        (
            "bad signal",
            "[signals]\nignore = [\"HUPP\"]\n",
            2,
            "signals.ignore",
        ),
        (
            "unset variable",
            "[app]\nenv = { A = \"1\" }\nworkdir = \"${DRAINIT_TEST_SURELY_UNSET}\"\n",
            3,
            "app.workdir",
        ),
        (
            "budgets that do not fit",
            "[shutdown]\ngrace_period = \"3s\"\nstop_timeout = \"3s\"\n",
            3,
            "shutdown.stop_timeout",
        ),
        (
            "TOML syntax",
            "[shutdown]\ngrace_period = \"3s\"\nkill_margin = \n",
            3,
            "shutdown",
        ),
    ];
    for (what, text, line, key) in cases {
        let sc = Scenario::new();
        let config = sc.config(text);
        let (code, out, err) = run(&sc, &["-c", &config, "--", "touch", "started"]);
        assert_eq!(code, 2, "{what}: {err}");
        assert!(
            err.contains(&format!("{config}:{line}:")),
            "{what}: no {config}:{line}: in {err}"
        );
        assert!(err.contains(key), "{what}: no key {key} in {err}");
        assert!(out.is_empty(), "{what}: {out}");
        assert!(!sc.path("started").exists(), "{what}: the app started");
    }
}

// Issue 9, defect 10: bytes and pipes.

#[test]
fn arguments_that_are_not_utf8_reach_the_app_byte_for_byte() {
    use std::os::unix::ffi::OsStrExt;
    let sc = Scenario::new();
    let arg = std::ffi::OsStr::from_bytes(b"caf\xe9 \xff\xfe/x");
    let out = std::process::Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            util::DRAINIT,
            "--listen",
            "off",
            "--",
        ])
        .args(["sh", "-c", "printf %s \"$1\" > \"$D/arg\"", "-"])
        .arg(arg)
        .env("D", sc.dir())
        .env_remove("DRAINIT_CONFIG")
        .output()
        .expect("run drainit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(std::fs::read(sc.path("arg")).unwrap(), arg.as_bytes());
}

#[test]
fn a_variable_that_is_not_utf8_is_an_error_naming_it_not_its_default() {
    use std::os::unix::ffi::OsStrExt;
    let sc = Scenario::new();
    let config = sc.config("[app]\nworkdir = \"${DRAINIT_TEST_LATIN1:-/}\"\n");
    let out = std::process::Command::new(util::DRAINIT)
        .args(["--check", "--listen", "off", "-c", &config, "--", "true"])
        .env(
            "DRAINIT_TEST_LATIN1",
            std::ffi::OsStr::from_bytes(b"/caf\xe9"),
        )
        .env_remove("DRAINIT_CONFIG")
        .output()
        .expect("run drainit --check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{config}:2:"))
            && err.contains("app.workdir")
            && err.contains("DRAINIT_TEST_LATIN1")
            && err.contains("UTF-8"),
        "{err}"
    );
}

#[test]
fn output_into_a_closed_pipe_is_no_panic() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let sc = Scenario::new();
    let config = sc.config(FAST);
    for args in [
        vec!["--check", "--listen", "off", "-c", &config, "--", "true"],
        vec!["--help"],
    ] {
        // A pipe whose reader is gone before drainit writes: every write
        // is EPIPE (drainit ignores SIGPIPE), as under `| head -c1` once
        // head has exited.
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills the two descriptors, owned from here on.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: fresh descriptors from pipe(2), each owned once.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(read);
        let out = std::process::Command::new(util::DRAINIT)
            .args(&args)
            .env_remove("DRAINIT_CONFIG")
            .stdout(std::process::Stdio::from(write))
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run drainit");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn missing_named_config_file_is_an_error() {
    let sc = Scenario::new();
    let missing = sc.p("nope.toml");
    let (code, _, err) = run(&sc, &["-c", &missing, "--", "true"]);
    assert_eq!(code, 2);
    assert!(err.contains(&missing), "{err}");
}

#[test]
fn check_prints_the_effective_config_and_starts_nothing() {
    let sc = Scenario::new();
    let config = sc.config(&format!(
        "{FAST}\n[signals]\nrewrite = {{ TERM = \"QUIT\" }}\n[app]\nenv = {{ WHERE = \"${{D}}\" }}\n"
    ));
    let (code, out, err) = run(&sc, &["--check", "-c", &config, "--", "touch", "started"]);
    assert_eq!(code, 0, "{err}");
    let printed: toml::Table = toml::from_str(&out).expect("--check prints TOML");
    let shutdown = printed["shutdown"].as_table().unwrap();
    assert_eq!(shutdown["grace_period"].as_str(), Some("3s"), "{out}");
    assert_eq!(shutdown["orphan_grace"].as_str(), Some("500ms"), "{out}");
    assert_eq!(printed["signals"]["rewrite"]["TERM"].as_str(), Some("QUIT"));
    assert_eq!(
        printed["app"]["env"]["WHERE"].as_str(),
        Some(sc.dir().to_str().unwrap()),
        "variables are expanded"
    );
    assert_eq!(printed["app"]["command"][0].as_str(), Some("touch"));
    assert!(!sc.path("started").exists(), "--check started the app");

    // What it prints is itself a valid config.
    let again = sc.config(&out);
    let (code, out2, err) = run(&sc, &["--check", "-c", &again]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out2, out);
}

// ---- signal forwarding (SPEC 3) ------------------------------------------

/// Sends `sig` to drainit (PID 1) and expects the app to record `name`.
fn forwards(name: &str, sig: i32) {
    let sc = Scenario::new();
    let app = recorder(&sc, &[name], "");
    let mut d = Drainit::start(&sc, &["--", &app]);
    sc.wait_for("ready");
    d.signal(sig);
    assert_eq!(sc.wait_for("got"), format!("{name}\n"));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(), 143);
}

#[test]
fn forwards_hup() {
    forwards("HUP", libc::SIGHUP);
}

#[test]
fn forwards_int() {
    forwards("INT", libc::SIGINT);
}

#[test]
fn forwards_quit() {
    forwards("QUIT", libc::SIGQUIT);
}

#[test]
fn forwards_usr1() {
    forwards("USR1", libc::SIGUSR1);
}

#[test]
fn forwards_usr2() {
    forwards("USR2", libc::SIGUSR2);
}

#[test]
fn forwards_winch() {
    forwards("WINCH", libc::SIGWINCH);
}

#[test]
fn forwards_a_real_time_signal() {
    let sc = Scenario::new();
    let app = sc.path("app.py");
    std::fs::write(
        &app,
        r#"
import os, signal, time
d = os.environ["D"]
def record(n, _frame):
    with open(d + "/got", "a") as f:
        f.write(f"{n}\n")
signal.signal(signal.SIGRTMIN + 2, record)
print("ready", flush=True)
while True:
    time.sleep(1)
"#,
    )
    .unwrap();
    let mut d = Drainit::start(&sc, &["--", "/usr/bin/python3", app.to_str().unwrap()]);
    d.wait_for_stdout("ready\n");
    let rtmin2 = libc::SIGRTMIN() + 2;
    d.signal(rtmin2);
    assert_eq!(sc.wait_for("got"), format!("{rtmin2}\n"));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(), 143);
}

/// SPEC 3: SIGTSTP/SIGTTIN/SIGTTOU are forwarded too (drainit blocks them
/// rather than ignoring them, so kill(2) still reaches it).
#[test]
fn forwards_job_control_signals() {
    let sc = Scenario::new();
    let app = sc.path("app.py");
    std::fs::write(
        &app,
        r#"
import os, signal, time
d = os.environ["D"]
def record(n, _frame):
    with open(d + "/got", "a") as f:
        f.write(f"{n}\n")
for s in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
    signal.signal(s, record)
print("ready", flush=True)
while True:
    time.sleep(1)
"#,
    )
    .unwrap();
    let mut d = Drainit::start(&sc, &["--", "/usr/bin/python3", app.to_str().unwrap()]);
    d.wait_for_stdout("ready\n");
    let mut expected = String::new();
    for sig in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        d.signal(sig);
        expected.push_str(&format!("{sig}\n"));
        // One at a time, so the record's order is the sending order.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(sc.path("got")).unwrap_or_default() != expected {
            assert!(std::time::Instant::now() < deadline, "{sig} did not arrive");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(), 143);
}

/// A python app that records each signal number in `signals` as a line in
/// `$D/got` and exits 0 after recording `exit_on`; `$D/ready` once its
/// handlers are in place.
fn number_recorder(sc: &Scenario, signals: &[i32], exit_on: i32) -> Vec<String> {
    let app = sc.path("app.py");
    std::fs::write(
        &app,
        format!(
            r#"
import os, signal, sys, time
d = os.environ["D"]
def record(n, _frame):
    with open(d + "/got", "a") as f:
        f.write(f"{{n}}\n")
    if n == {exit_on}:
        sys.exit(0)
for n in {signals:?}:
    signal.signal(n, record)
with open(d + "/ready", "w") as f:
    f.write("ready\n")
while True:
    time.sleep(1)
"#
        ),
    )
    .unwrap();
    vec!["/usr/bin/python3".into(), app.display().to_string()]
}

/// dumb-init's own `test_proxies_signals` (every signal 1-31 but KILL,
/// STOP and CHLD), in tini-like mode, one signal at a time, each
/// acknowledged by the app before the next (signals of one kind coalesce
/// while pending). SIGTSTP/SIGTTIN/SIGTTOU are forwarded too (dumb-init
/// also stops itself on them; drainit does not). SIGILL, SIGFPE, SIGSEGV
/// and SIGBUS sent with kill(2) are forwarded too (docs/design.md).
fn forwards_every_signal_dumb_init_forwards(launch: Launch) {
    let sc = Scenario::new();
    let signals: Vec<i32> = (1..=31)
        .filter(|n| ![libc::SIGKILL, libc::SIGSTOP, libc::SIGCHLD].contains(n))
        .collect();
    assert!(signals.contains(&libc::SIGPIPE));
    let last = *signals.last().unwrap();
    let app = number_recorder(&sc, &signals, last);
    let config = sc.config(&format!("{FAST}\ntriggers = []\n"));
    let mut args = vec!["-c", &config, "--"];
    args.extend(app.iter().map(String::as_str));
    let mut d = Drainit::launch(&sc, launch, &args);
    sc.wait_for("ready");
    for (i, &sig) in signals.iter().enumerate() {
        d.signal(sig);
        let got = sc.wait_for_lines("got", i + 1);
        assert_eq!(got[i], sig.to_string(), "sent {sig}, the app got {got:?}");
    }
    assert_eq!(d.wait(), 0);
    assert_eq!(
        sc.lines("got").len(),
        signals.len(),
        "{:?}",
        sc.lines("got")
    );
}

#[test]
fn forwards_every_signal_dumb_init_forwards_as_pid1() {
    forwards_every_signal_dumb_init_forwards(Launch::Pid1);
}

#[test]
fn forwards_every_signal_dumb_init_forwards_when_not_pid1() {
    forwards_every_signal_dumb_init_forwards(Launch::Direct);
}

/// drainit's log goes to a pipe whose reader is gone: every log line is an
/// EPIPE for drainit and makes the kernel raise SIGPIPE at drainit. None of
/// those may reach the app (it never wrote to that pipe), and drainit must
/// live on (a SIGPIPE with the default action would kill it).
fn own_sigpipe_is_not_forwarded(launch: Launch) {
    let sc = Scenario::new();
    let watched = [libc::SIGUSR1, libc::SIGUSR2, libc::SIGPIPE, libc::SIGTERM];
    let app = number_recorder(&sc, &watched, libc::SIGTERM);
    let config = sc.config(&format!("{FAST}\ntriggers = []\n"));
    let mut args = vec!["--log-level", "debug", "-c", &config, "--"];
    args.extend(app.iter().map(String::as_str));
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two descriptors, which are owned below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fresh descriptors from pipe(2), each owned once.
    let (reader, writer) = unsafe {
        use std::os::fd::{FromRawFd, OwnedFd};
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    drop(reader);
    let mut d = Drainit::launch_with_stderr(&sc, launch, &args, Some(writer.into()));
    sc.wait_for("ready");
    // Each forward logs a debug line: an own SIGPIPE is queued before
    // drainit reads the next signal, and read before it (the kernel hands
    // out a thread's own signals first), so it would be forwarded ahead of
    // the signal that follows, and recorded before the exit on TERM.
    for (i, sig) in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGTERM]
        .into_iter()
        .enumerate()
    {
        d.signal(sig);
        let got = sc.wait_for_lines("got", i + 1);
        assert_eq!(got[i], sig.to_string(), "sent {sig}, the app got {got:?}");
    }
    assert_eq!(d.wait(), 0);
    assert_eq!(
        sc.lines("got"),
        [libc::SIGUSR1, libc::SIGUSR2, libc::SIGTERM].map(|n| n.to_string()),
        "drainit forwarded its own SIGPIPE"
    );
}

#[test]
fn own_sigpipe_is_not_forwarded_as_pid1() {
    own_sigpipe_is_not_forwarded(Launch::Pid1);
}

#[test]
fn own_sigpipe_is_not_forwarded_when_not_pid1() {
    own_sigpipe_is_not_forwarded(Launch::Direct);
}

/// dumb-init's own `test_ignored_signals_are_not_proxied`, its flags
/// copied verbatim: `-r 15:3 -r 2:0 -r 28:0` rewrites TERM to QUIT and
/// drops INT and WINCH (tini-like mode, so TERM is forwarded at once).
fn rewrite_to_zero_drops(launch: Launch) {
    let sc = Scenario::new();
    let watched = [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTERM,
        libc::SIGWINCH,
        libc::SIGSYS,
    ];
    let app = number_recorder(&sc, &watched, libc::SIGSYS);
    let config = sc.config(&format!("{FAST}\ntriggers = []\n"));
    let mut args = vec!["-c", &config, "-r", "15:3", "-r", "2:0", "-r", "28:0", "--"];
    args.extend(app.iter().map(String::as_str));
    let mut d = Drainit::launch(&sc, launch, &args);
    sc.wait_for("ready");
    d.signal(libc::SIGTERM);
    d.signal(libc::SIGINT);
    assert_eq!(sc.wait_for_lines("got", 1), [libc::SIGQUIT.to_string()]);
    d.signal(libc::SIGWINCH);
    d.signal(libc::SIGHUP);
    assert_eq!(sc.wait_for_lines("got", 2)[1], libc::SIGHUP.to_string());
    // The end marker: sent after HUP was recorded, so after drainit had
    // forwarded anything it was going to forward of INT and WINCH; the app
    // handles pending signals lowest number first, and SYS (31) is last.
    d.signal(libc::SIGSYS);
    assert_eq!(d.wait(), 0);
    assert_eq!(
        sc.lines("got"),
        [libc::SIGQUIT, libc::SIGHUP, libc::SIGSYS].map(|n| n.to_string())
    );
}

#[test]
fn rewrite_to_zero_drops_as_pid1() {
    rewrite_to_zero_drops(Launch::Pid1);
}

#[test]
fn rewrite_to_zero_drops_when_not_pid1() {
    rewrite_to_zero_drops(Launch::Direct);
}

#[test]
fn check_prints_a_rewrite_to_zero_as_ignore_and_checks_again_the_same() {
    let sc = Scenario::new();
    let config = sc.config(&format!(
        "{FAST}\ntriggers = []\n[signals]\nrewrite = {{ USR1 = 0, HUP = \"0\", USR2 = \"HUP\" }}\n"
    ));
    let (code, out, err) = run(
        &sc,
        &["--check", "-c", &config, "-r", "2:0", "-r", "TERM:QUIT"],
    );
    assert_eq!(code, 0, "{err}");
    let printed: toml::Table = toml::from_str(&out).expect("--check prints TOML");
    let ignore: Vec<&str> = printed["signals"]["ignore"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ignore, ["HUP", "USR1", "INT"], "{out}");
    let rewrite = printed["signals"]["rewrite"].as_table().unwrap();
    assert_eq!(rewrite.len(), 2, "{out}");
    assert_eq!(rewrite["USR2"].as_str(), Some("HUP"), "{out}");
    assert_eq!(rewrite["TERM"].as_str(), Some("QUIT"), "{out}");
    let again = sc.config(&out);
    let (code, out2, err) = run(&sc, &["--check", "-c", &again]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out2, out);
}

#[test]
fn rewrite_term_to_quit_stops_the_app_with_quit() {
    let sc = Scenario::new();
    let app = sc.script(
        "app.sh",
        r#"trap 'echo TERM >> "$D/got"; exit 0' TERM
trap 'echo QUIT >> "$D/got"; exit 0' QUIT
echo ready > "$D/ready"
while :; do sleep 0.05; done"#,
    );
    let config = sc.config(FAST);
    let mut d = Drainit::start(&sc, &["-c", &config, "-r", "TERM:QUIT", "--", &app]);
    sc.wait_for("ready");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(), 0);
    assert_eq!(sc.read("got"), "QUIT\n");
}

#[test]
fn without_triggers_sigterm_is_forwarded_at_once() {
    let sc = Scenario::new();
    // Records TERM and keeps running: nothing but the forward happens.
    let app = recorder(&sc, &["TERM"], "");
    let config = sc.config(&format!("{FAST}\ntriggers = []\n"));
    let mut d = Drainit::start(&sc, &["-c", &config, "--", &app]);
    sc.wait_for("ready");
    d.signal(libc::SIGTERM);
    assert_eq!(sc.wait_for_lines("got", 1), ["TERM"]);
    assert!(
        !d.stderr().contains("trigger signal received"),
        "{}",
        d.stderr()
    );
    d.signal(libc::SIGUSR1);
    assert_eq!(d.wait(), 128 + libc::SIGUSR1);
}

#[test]
fn config_rewrite_usr1_to_usr2() {
    let sc = Scenario::new();
    let app = recorder(&sc, &["USR1", "USR2", "HUP"], "");
    let config = sc.config(&format!(
        "{FAST}\n[signals]\nrewrite = {{ USR1 = \"USR2\" }}\n"
    ));
    let mut d = Drainit::start(&sc, &["-c", &config, "--", &app]);
    sc.wait_for("ready");
    d.signal(libc::SIGUSR1);
    // Had USR1 been forwarded too, it would have been sent first, and dash
    // runs pending traps in signal-number order: it would be recorded first.
    assert_eq!(sc.wait_for_lines("got", 1), ["USR2"]);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(), 143);
    assert_eq!(sc.read("got"), "USR2\n");
}

#[test]
fn ignored_signal_is_not_forwarded() {
    let sc = Scenario::new();
    let app = recorder(&sc, &["HUP", "USR1"], "");
    let config = sc.config(&format!("{FAST}\n[signals]\nignore = [\"HUP\"]\n"));
    let mut d = Drainit::start(&sc, &["-c", &config, "--", &app]);
    sc.wait_for("ready");
    d.signal(libc::SIGHUP);
    d.signal(libc::SIGUSR1);
    // A forwarded HUP would have gone out before USR1 and been recorded
    // before it (lower number, handled first when both are pending).
    assert_eq!(sc.wait_for_lines("got", 1), ["USR1"]);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(), 143);
    assert_eq!(sc.read("got"), "USR1\n");
}

/// An app that starts a grandchild in its group; on USR1 the app records it
/// and then sends USR2 to the grandchild itself, as an ordering marker.
/// Returns the app's path; the grandchild records into `$D/gc-got`.
fn family(sc: &Scenario) -> String {
    sc.script(
        "grandchild.sh",
        r#"trap 'echo USR1 >> "$D/gc-got"' USR1
trap 'echo USR2 >> "$D/gc-got"' USR2
echo $$ > "$D/gc-pid"
while :; do sleep 0.05; done"#,
    );
    sc.script(
        "app.sh",
        r#""$D/grandchild.sh" &
gc=$!
trap 'echo USR1 >> "$D/got"; kill -USR2 $gc' USR1
while [ ! -s "$D/gc-pid" ]; do sleep 0.01; done
echo ready > "$D/ready"
while :; do sleep 0.05; done"#,
    )
}

#[test]
fn group_mode_reaches_the_grandchild() {
    let sc = Scenario::new();
    let app = family(&sc);
    let config = sc.config(FAST);
    let mut d = Drainit::start(&sc, &["-c", &config, "--", &app]);
    sc.wait_for("ready");
    d.signal(libc::SIGUSR1);
    assert_eq!(sc.wait_for_lines("got", 1), ["USR1"]);
    assert_eq!(sc.wait_for_lines("gc-got", 2), ["USR1", "USR2"]);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(), 143);
}

#[test]
fn child_mode_reaches_only_the_child() {
    let sc = Scenario::new();
    let app = family(&sc);
    let config = sc.config(&format!("{FAST}\n[signals]\nforward_to = \"child\"\n"));
    let mut d = Drainit::start(&sc, &["-c", &config, "--", &app]);
    sc.wait_for("ready");
    d.signal(libc::SIGUSR1);
    assert_eq!(sc.wait_for_lines("got", 1), ["USR1"]);
    // The marker USR2 arrives after any USR1 drainit could have sent.
    assert_eq!(sc.wait_for_lines("gc-got", 1), ["USR2"]);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(), 143);
    assert_eq!(sc.read("gc-got"), "USR2\n");
}

// ---- working directory (SPEC 3) ------------------------------------------

/// dumb-init's own `test_working_directories`, and then some: the app
/// starts in the caller's directory, drainit itself moves to `/` once the
/// app runs, and what still needs the start directory gets it explicitly:
/// a restart of a relative `./app.sh`, an exec step with a relative
/// `workdir`. The relative `-c drainit.toml` is read at start.
fn leaves_its_start_directory(launch: Launch) {
    let sc = Scenario::new();
    std::fs::create_dir(sc.path("sub")).unwrap();
    sc.script(
        "app.sh",
        r#"pwd -P >> "$D/pwds"
[ -e "$D/crashed" ] || { touch "$D/crashed"; exit 1; }
trap 'readlink /proc/$PPID/cwd > "$D/drainit-cwd"; echo USR1 >> "$D/got"' USR1
echo ready > "$D/ready"
while :; do sleep 0.05; done"#,
    );
    sc.config(&format!(
        "{FAST}\n[app]\nrestart = \"on-failure\"\nrestart_backoff = {{ initial = \"50ms\", max = \"50ms\" }}\n\n[[poststart]]\nexec = [\"sh\", \"-c\", \"pwd -P >> \\\"$D/step-pwd\\\"\"]\nworkdir = \"sub\"\n"
    ));
    let mut d = Drainit::launch(&sc, launch, &["-c", "drainit.toml", "--", "./app.sh"]);
    sc.wait_for("ready");
    // Acknowledged by the app: drainit forwards signals only once it has
    // left its start directory (it does that before its first wait).
    d.signal(libc::SIGUSR1);
    sc.wait_for_lines("got", 1);
    assert_eq!(
        sc.read("drainit-cwd"),
        "/\n",
        "drainit's cwd, seen by the app"
    );
    if launch == Launch::Direct {
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", d.pid())).unwrap();
        assert_eq!(cwd, std::path::Path::new("/"));
    }
    let start = sc.dir().canonicalize().unwrap().display().to_string();
    assert_eq!(
        sc.lines("pwds"),
        [start.clone(), start.clone()],
        "first run, restart"
    );
    let steps = sc.wait_for_lines("step-pwd", 1);
    assert!(
        steps.iter().all(|l| *l == format!("{start}/sub")),
        "{steps:?}"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(), 143);
}

#[test]
fn leaves_its_start_directory_as_pid1() {
    leaves_its_start_directory(Launch::Pid1);
}

#[test]
fn leaves_its_start_directory_when_not_pid1() {
    leaves_its_start_directory(Launch::Direct);
}

// ---- reaping and orphans (SPEC 2) ----------------------------------------

#[test]
fn hundreds_of_orphans_are_reaped() {
    let sc = Scenario::new();
    // Each `( ... & )` subshell exits at once, so its background child is
    // orphaned to PID 1. Then the app itself looks for zombies in the
    // namespace's /proc until none is left (or it gives up).
    let app = sc.script(
        "app.sh",
        r#"i=0
while [ $i -lt 300 ]; do
  ( sh -c 'echo x >> "$D/orphans"' & )
  i=$((i+1))
done
n=0
while [ "$(wc -l < "$D/orphans")" -lt 300 ] && [ $n -lt 1000 ]; do sleep 0.01; n=$((n+1)); done
n=0
while [ $n -lt 1000 ]; do
  z=0
  for f in /proc/[0-9]*/stat; do
    { read -r line < "$f"; } 2>/dev/null || continue
    case "$line" in *") Z "*) z=$((z+1));; esac
  done
  [ $z -eq 0 ] && break
  sleep 0.01; n=$((n+1))
done
echo "$z" > "$D/zombies""#,
    );
    let mut d = Drainit::start(&sc, &["--log-level", "debug", "--", &app]);
    assert_eq!(d.wait(), 0);
    assert_eq!(sc.lines("orphans").len(), 300, "not all orphans ran");
    assert_eq!(sc.read("zombies"), "0\n", "zombies left in the namespace");
    let reaped = d
        .stderr()
        .lines()
        .filter(|l| l.contains(" reaped "))
        .count();
    assert!(reaped >= 300, "drainit logged only {reaped} reaped orphans");
}

#[test]
fn subreaper_adopts_and_reaps_orphans_when_not_pid1() {
    let sc = Scenario::new();
    let app = sc.script(
        "app.sh",
        r#"( sh -c 'echo $$ > "$D/orphan-pid"; while [ ! -e "$D/release" ]; do sleep 0.02; done' & )
echo ready > "$D/ready"
while :; do sleep 0.05; done"#,
    );
    let mut d = Drainit::launch(&sc, Launch::Direct, &["--", &app]);
    sc.wait_for("ready");
    let orphan: i32 = sc.wait_for("orphan-pid").trim().parse().unwrap();
    let drainit = d.pid();
    assert_ne!(drainit, 1);
    wait_until("the orphan to be adopted by drainit", || {
        (stat(orphan).map(|(_, ppid)| ppid) == Some(drainit)).then_some(())
    });
    std::fs::write(sc.path("release"), "").unwrap();
    // Gone, not a zombie: drainit reaped it.
    wait_until("the orphan to be reaped", || {
        stat(orphan).is_none().then_some(())
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(), 143);
}

/// An app that starts `daemon.sh` in a new session (escaping its process
/// group), waits until the daemon is set up, and exits 0.
fn app_with_daemon(sc: &Scenario, daemon_traps: &str) -> String {
    sc.script(
        "daemon.sh",
        &format!("{daemon_traps}\necho $$ > \"$D/daemon-pid\"\nwhile :; do sleep 0.05; done"),
    );
    sc.script(
        "app.sh",
        r#"setsid "$D/daemon.sh" &
while [ ! -s "$D/daemon-pid" ]; do sleep 0.01; done
exit 0"#,
    )
}

#[test]
fn orphans_left_by_the_app_get_sigterm() {
    let sc = Scenario::new();
    let app = app_with_daemon(&sc, r#"trap 'echo TERM > "$D/daemon-term"; exit 0' TERM"#);
    let config = sc.config(FAST);
    let mut d = Drainit::start(&sc, &["-c", &config, "--", &app]);
    assert_eq!(d.wait(), 0);
    assert_eq!(sc.read("daemon-term"), "TERM\n", "the daemon was abandoned");
}

/// A daemon that ignores SIGTERM is SIGKILLed once `orphan_grace` is over,
/// and drainit exits only then.
fn daemon_ignoring_sigterm_is_killed(launch: Launch) {
    let sc = Scenario::new();
    let app = app_with_daemon(&sc, "trap '' TERM");
    let config = sc.config(FAST);
    let mut d = Drainit::launch(&sc, launch, &["-c", &config, "--", &app]);
    let daemon: i32 = sc.wait_for("daemon-pid").trim().parse().unwrap();
    let seen = Instant::now();
    assert_eq!(d.wait(), 0);
    let took = seen.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "drainit exited {took:?} after the app, before orphan_grace (500ms)"
    );
    assert!(
        d.stderr().contains("orphan_grace: sending SIGKILL"),
        "{}",
        d.stderr()
    );
    if launch == Launch::Direct {
        // Not PID 1: an abandoned daemon would outlive drainit.
        wait_until("the daemon to be gone", || {
            matches!(stat(daemon), None | Some(('Z', _))).then_some(())
        });
    }
}

#[test]
fn orphans_that_ignore_sigterm_are_killed_after_orphan_grace() {
    daemon_ignoring_sigterm_is_killed(Launch::Pid1);
}

#[test]
fn subreaper_kills_orphans_that_ignore_sigterm() {
    daemon_ignoring_sigterm_is_killed(Launch::Direct);
}

/// SPEC 2, subreaper mode: processes reparented to drainit *after* a
/// signal round (here when the TERM-ignoring session leader dies of the
/// SIGKILL) are signalled too, until the deadline; nothing outlives drainit.
#[test]
fn subreaper_cleanup_reaches_processes_reparented_late() {
    let sc = Scenario::new();
    let app = sc.script(
        "app.sh",
        r#"setsid sh -c 'trap "" TERM; sleep 1001 & echo $! >> "$D/sleeps"; sleep 1002 & echo $! >> "$D/sleeps"; wait' &
while [ "$(cat "$D/sleeps" 2>/dev/null | wc -l)" -lt 2 ]; do sleep 0.01; done
exit 0"#,
    );
    let config = sc.config(FAST);
    let mut d = Drainit::launch(&sc, Launch::Direct, &["-c", &config, "--", &app]);
    assert_eq!(d.wait(), 0);
    // Not PID 1: the test sees the same pids as the app.
    let sleeps: Vec<i32> = sc
        .lines("sleeps")
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    let alive: Vec<i32> = sleeps
        .iter()
        .copied()
        .filter(|&p| matches!(stat(p), Some((state, _)) if state != 'Z'))
        .collect();
    for &p in &alive {
        // SAFETY: kill(2) with plain integers; leaked by the run above.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    assert_eq!(
        alive,
        [0; 0],
        "outlived drainit: {sleeps:?}\n{}",
        d.stderr()
    );
    assert!(!d.stderr().contains("survived SIGKILL"), "{}", d.stderr());
}

// ---- shutdown (SPEC 3, 5) ------------------------------------------------

#[test]
fn app_that_ignores_sigterm_is_killed_at_the_deadline() {
    let sc = Scenario::new();
    let app = recorder(&sc, &[], "trap '' TERM");
    let config = sc.config(FAST);
    let mut d = Drainit::start(&sc, &["-c", &config, "--", &app]);
    sc.wait_for("ready");
    let sent = Instant::now();
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(), 137);
    let took = sent.elapsed();
    // grace_period 3s - kill_margin 500ms.
    assert!(
        took >= Duration::from_millis(2450),
        "killed after {took:?}, before the deadline of 2.5s"
    );
    assert!(
        took < Duration::from_millis(5500),
        "killed only after {took:?}"
    );
}

#[test]
fn third_trigger_kills_at_once() {
    let sc = Scenario::new();
    // Records TERM but keeps running.
    let app = recorder(&sc, &["TERM"], "");
    let config = sc.config(
        "[shutdown]\ngrace_period = \"60s\"\nstop_timeout = \"10s\"\nkill_margin = \"500ms\"\n",
    );
    let mut d = Drainit::start(&sc, &["-c", &config, "--", &app]);
    sc.wait_for("ready");
    // One at a time: signals of one kind coalesce while pending.
    d.signal(libc::SIGTERM);
    d.wait_for_log("trigger signal received", 1);
    assert_eq!(sc.wait_for_lines("got", 1), ["TERM"], "no stop signal");
    d.signal(libc::SIGTERM);
    d.wait_for_log("trigger signal received", 2);
    let third = Instant::now();
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_within(Duration::from_secs(10)), 137);
    assert!(
        third.elapsed() < Duration::from_secs(5),
        "SIGKILL came {:?} after the third trigger",
        third.elapsed()
    );
}

// ---- restart (SPEC 2) ----------------------------------------------------

#[test]
fn on_failure_restarts_with_growing_backoff() {
    let sc = Scenario::new();
    let app = sc.script("app.sh", r#"date +%s%N >> "$D/starts"; exit 1"#);
    let config = sc.config(&format!(
        "{FAST}\n[app]\nrestart = \"on-failure\"\nrestart_backoff = {{ initial = \"100ms\", max = \"250ms\" }}\n"
    ));
    let mut d = Drainit::start(&sc, &["-c", &config, "--", &app]);
    let starts: Vec<u128> = sc
        .wait_for_lines("starts", 5)
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    d.signal(libc::SIGTERM);
    let code = d.wait();
    assert!(code == 1 || code == 143, "exit code {code}");
    let gaps: Vec<u128> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    // Expected about 100, 200, 250, 250 ms (without the cap: 400, 800).
    // Lower bounds are causal; upper ones leave room for a loaded machine.
    assert!(gaps[0] >= 95, "first back-off {gaps:?} shorter than 100ms");
    for w in gaps.windows(2) {
        assert!(w[1] + 100 >= w[0], "back-off shrank: {gaps:?}");
    }
    assert!(gaps[1] >= 190, "back-off did not double: {gaps:?}");
    assert!(gaps[2] >= 240, "back-off did not reach max: {gaps:?}");
    assert!(gaps[3] < 600, "back-off went past max: {gaps:?}");
    // No restart once shutdown began (and drainit has exited).
    let after = sc.lines("starts").len();
    assert!(after <= 6, "{after} starts");
}

/// Also pins a bug: the shutdown machine used to outlive the first app, so
/// SIGTERM never stopped a restarted one and drainit never exited.
#[test]
fn always_restarts_but_not_after_shutdown() {
    let sc = Scenario::new();
    // Exits 0 twice, then stays up on the third start.
    let app = sc.script(
        "app.sh",
        r#"echo start >> "$D/starts"
[ "$(wc -l < "$D/starts")" -lt 3 ] && exit 0
echo ready > "$D/ready"
while :; do sleep 0.05; done"#,
    );
    let config = sc.config(&format!(
        "{FAST}\n[app]\nrestart = \"always\"\nrestart_backoff = {{ initial = \"50ms\", max = \"100ms\" }}\n"
    ));
    let mut d = Drainit::start(&sc, &["-c", &config, "--", &app]);
    sc.wait_for("ready");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(), 143);
    assert_eq!(sc.lines("starts").len(), 3);
}

/// SPEC 2: a trigger signal during a back-off wait cancels the restart,
/// the drain still runs, and drainit exits with the last run's code.
#[test]
fn trigger_during_backoff_drains_and_exits_without_restart() {
    let sc = Scenario::new();
    let app = sc.script("app.sh", r#"echo start >> "$D/starts"; exit 3"#);
    let config = sc.config(&format!(
        "{FAST}\n[app]\nrestart = \"on-failure\"\nrestart_backoff = {{ initial = \"30s\" }}\n\n[[drain]]\nexec = [\"sh\", \"-c\", \"echo drained >> \\\"$D/drained\\\"\"]\n"
    ));
    let mut d = Drainit::start(&sc, &["-c", &config, "--", &app]);
    d.wait_for_log("restarting the app after back-off", 1);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_within(Duration::from_secs(10)), 3);
    assert_eq!(sc.lines("starts"), ["start"]);
    assert_eq!(sc.lines("drained"), ["drained"], "the drain did not run");
}

/// Live (not zombie) descendants of `pid` whose command line is `argv`.
fn live_descendants_running(pid: i32, argv: &str) -> usize {
    util::descendants(pid)
        .into_iter()
        .filter(|p| {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .collect::<Vec<_>>()
                == argv.split(' ').map(str::as_bytes).collect::<Vec<_>>()
                && matches!(stat(*p), Some((state, _)) if state != 'Z')
        })
        .count()
}

/// SPEC 2: before each restart the crashed run's leftovers are cleaned up
/// as at exit (SIGTERM, `orphan_grace`, SIGKILL), so they never pile up.
#[test]
fn restart_cleans_up_the_last_runs_leftovers_first() {
    let sc = Scenario::new();
    // Each run leaves a worker that ignores SIGTERM, then crashes.
    let app = sc.script(
        "app.sh",
        r#"date +%s%N >> "$D/starts"
sh -c 'trap "" TERM; echo up >> "$D/workers"; exec sleep 1001' &
while [ "$(cat "$D/workers" 2>/dev/null | wc -l)" -lt "$(wc -l < "$D/starts")" ]; do sleep 0.01; done
exit 1"#,
    );
    let config = sc.config(&format!(
        "{FAST}\n[app]\nrestart = \"on-failure\"\nrestart_backoff = {{ initial = \"100ms\", max = \"100ms\" }}\n"
    ));
    let mut d = Drainit::start(&sc, &["-c", &config, "--", &app]);
    let starts: Vec<u128> = sc
        .wait_for_lines("starts", 4)
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    let workers = live_descendants_running(d.pid(), "sleep 1001");
    assert!(
        workers <= 1,
        "{workers} workers alive after 4 starts: the old ones piled up"
    );
    // The workers ignore SIGTERM: each restart waited for orphan_grace
    // (500ms) and the SIGKILL, not just the 100ms back-off.
    let gaps: Vec<u128> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    assert!(
        gaps.iter().all(|&g| g >= 450),
        "restarted before the cleanup: {gaps:?}"
    );
    assert!(d.stderr().contains("sending SIGKILL"), "{}", d.stderr());
    d.signal(libc::SIGTERM);
    d.wait_within(Duration::from_secs(10));
}

/// The cleanup before a restart takes the crashed run's tree (its group and
/// adopted orphans), not every process in the container: a shell that
/// entered it from outside (`kubectl exec`) is not drainit's to kill.
#[test]
fn restart_cleanup_spares_a_process_exec_ed_into_the_container() {
    let sc = Scenario::new();
    let app = sc.script(
        "app.sh",
        r#"echo start >> "$D/starts"
[ "$(wc -l < "$D/starts")" -gt 1 ] && exec sleep 1000
sleep 1000 &
echo ready > "$D/ready"
while [ ! -e "$D/go" ]; do sleep 0.01; done
exit 1"#,
    );
    let config = sc.config(&format!(
        "{FAST}\n[app]\nrestart = \"on-failure\"\nrestart_backoff = {{ initial = \"100ms\" }}\n"
    ));
    let mut d = Drainit::start(&sc, &["-c", &config, "--", &app]);
    sc.wait_for("ready");
    // In drainit's PID namespace, but its parent (nsenter) is outside.
    let mut exec = std::process::Command::new("nsenter")
        .args(["-t", &d.pid().to_string(), "-p", "--", "sh", "-c"])
        .arg(format!("echo up > {}/exec; exec sleep 1003", sc.p("")))
        .spawn()
        .expect("nsenter");
    sc.wait_for("exec");
    std::fs::write(sc.path("go"), "").unwrap();
    sc.wait_for_lines("starts", 2);
    let alive = exec.try_wait().unwrap().is_none();
    let _ = exec.kill();
    let _ = exec.wait();
    assert!(
        alive,
        "the restart's cleanup killed a process it does not own"
    );
    d.signal(libc::SIGTERM);
    d.wait_within(Duration::from_secs(10));
}

// ---- app settings (SPEC 2) -----------------------------------------------

fn ids_as(user: &str) -> String {
    let sc = Scenario::new();
    let app = sc.script("app.sh", r#"echo "$(id -u) $(id -g) $(id -G)" > "$D/ids""#);
    let config = sc.config(&format!("[app]\nuser = \"{user}\"\n"));
    let (code, _, err) = run(&sc, &["-c", &config, "--", &app]);
    assert_eq!(code, 0, "{err}");
    sc.read("ids")
}

#[test]
fn app_user_by_number_drops_privileges() {
    assert_eq!(ids_as("65534:65534"), "65534 65534 65534\n");
}

#[test]
fn app_user_by_name_drops_privileges() {
    assert_eq!(ids_as("nobody"), "65534 65534 65534\n");
}

#[test]
fn app_workdir_and_env_reach_the_app() {
    let sc = Scenario::new();
    std::fs::create_dir(sc.path("work")).unwrap();
    let app = sc.script("app.sh", r#"echo "$(pwd) $GREETING $FROM_VAR" > "$D/seen""#);
    let config = sc.config(&format!(
        "[app]\nworkdir = \"{}\"\nenv = {{ GREETING = \"hello\", FROM_VAR = \"${{D}}/x\" }}\n",
        sc.p("work")
    ));
    let (code, _, err) = run(&sc, &["-c", &config, "--", &app]);
    assert_eq!(code, 0, "{err}");
    let d = sc.dir().display();
    assert_eq!(sc.read("seen"), format!("{d}/work hello {d}/x\n"));
}

#[test]
fn ctrl_c_on_a_terminal_reaches_the_app() {
    let sc = Scenario::new();
    // Records its process group and the terminal's foreground group
    // (fields 5 and 8 of /proc/PID/stat).
    let app = sc.script(
        "app.sh",
        r#"trap 'echo INT >> "$D/got"; exit 5' INT
read -r stat < /proc/$$/stat
set -- $stat
echo "$5 $8" > "$D/groups"
echo ready > "$D/ready"
while :; do sleep 0.05; done"#,
    );
    let mut d = Drainit::launch(&sc, Launch::Tty, &["--", &app]);
    sc.wait_for("ready");
    let groups = sc.read("groups");
    let (pgrp, foreground) = groups.trim().split_once(' ').unwrap();
    assert_eq!(pgrp, foreground, "the app is not the foreground group");
    // The terminal, not drainit, sends SIGINT to the foreground group.
    d.type_keys(b"\x03");
    assert_eq!(d.wait(), 5);
    assert_eq!(sc.read("got"), "INT\n");
}

/// The app starts with default dispositions even when drainit itself was
/// started with signals ignored (`nohup`, a shell's `&`): brief, "PID 1 is
/// special".
#[test]
fn app_does_not_inherit_ignored_signals() {
    let drainit = env!("CARGO_BIN_EXE_drainit");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' HUP INT QUIT USR1; exec {drainit} --listen off -- sh -c 'grep SigIgn /proc/self/status; grep SigBlk /proc/self/status'"
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mask = |field: &str| {
        let line = stdout.lines().find(|l| l.starts_with(field)).unwrap();
        u64::from_str_radix(line[field.len()..].trim(), 16).unwrap()
    };
    // Every bit is 0, signals 32 and 33 (glibc's own) included: they are
    // at their default after a fork and exec, and drainit's posix_spawn
    // path (which glibc would leave them ignored in) resets them too.
    assert_eq!(mask("SigIgn:"), 0, "{stdout}");
    assert_eq!(mask("SigBlk:"), 0, "{stdout}");
}

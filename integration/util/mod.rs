//! Test helper: runs the real `drainit` binary and owns the process.
//!
//! A [`Scenario`] is a world-writable temporary directory holding the app's
//! scripts, the config and the files the apps write to record what happened
//! (the scripts find it as `$D`). A [`Drainit`] is one run of the binary,
//! normally as PID 1 of a fresh PID namespace (`unshare --pid --fork
//! --mount-proc`); it captures stdout and stderr to files, records the
//! moment and status of the exit from a waiter thread, kills the whole
//! process tree in `Drop`, and prints drainit's log when a test fails. The
//! kubelet emulator's `Container` is a [`Drainit`] with its HTTP server on.
//!
//! [`http`] is the tests' HTTP client and its one response reader.
//!
//! Waiting is always for an event (a file's content, the exit); the timeouts
//! are safety nets only.
#![allow(dead_code)]

pub mod http;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The binary under test: the static release build when run as documented.
pub const DRAINIT: &str = env!("CARGO_BIN_EXE_drainit");

/// Safety net for waits that normally end in milliseconds.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A directory for one test's scripts, config and records.
pub struct Scenario {
    dir: tempfile::TempDir,
}

impl Scenario {
    pub fn new() -> Scenario {
        let dir = tempfile::Builder::new()
            .prefix("drainit-test-")
            .tempdir()
            .expect("create a temp dir");
        // World-writable so an app running as nobody can record too.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))
            .expect("chmod the temp dir");
        Scenario { dir }
    }

    /// A scenario in a directory the test prepared (its mode as it is).
    pub fn adopt(dir: tempfile::TempDir) -> Scenario {
        Scenario { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The path of `name` as a string, for command lines and configs.
    pub fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Writes an executable `/bin/sh` script and returns its path.
    pub fn script(&self, name: &str, body: &str) -> String {
        let path = self.path(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod script");
        path.display().to_string()
    }

    /// Writes `drainit.toml` and returns its path.
    pub fn config(&self, text: &str) -> String {
        let path = self.path("drainit.toml");
        fs::write(&path, text).expect("write config");
        path.display().to_string()
    }

    /// The content of a record file, empty if it does not exist (yet).
    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// The complete lines of a record file.
    pub fn lines(&self, name: &str) -> Vec<String> {
        let text = self.read(name);
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        complete
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Waits until `name` holds at least one complete line; returns it all.
    pub fn wait_for(&self, name: &str) -> String {
        wait_until(&format!("a line in {name}"), || {
            let text = self.read(name);
            text.ends_with('\n').then_some(text)
        })
    }

    /// Waits until `name` has at least `n` complete lines; returns them.
    pub fn wait_for_lines(&self, name: &str, n: usize) -> Vec<String> {
        wait_until(&format!("{n} lines in {name}"), || {
            let lines = self.lines(name);
            (lines.len() >= n).then_some(lines)
        })
    }
}

/// Polls `f` every few milliseconds until it returns `Some`, or panics after
/// [`TIMEOUT`] naming `what`.
pub fn wait_until<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_for(what, TIMEOUT, f)
}

/// Polls `f` every 5ms until it returns `Some`, or panics after `timeout`
/// naming `what`. The timeout is a safety net, not a synchronisation.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to 0, read it,
/// let it go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local_addr")
        .port()
}

/// How to launch drainit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// As PID 1 of a new PID namespace, under `unshare --fork`.
    Pid1,
    /// As a plain child of the test (not PID 1: a subreaper).
    Direct,
    /// As PID 1, under `script`, so its stdin is a pseudo-terminal; the
    /// test writes to the terminal through [`Drainit::type_keys`].
    Tty,
}

/// When and how the process the test spawned (unshare, script or drainit
/// itself) exited, recorded by the thread that waits for it.
type Exit = Arc<(Mutex<Option<(Instant, ExitStatus)>>, Condvar)>;

/// One run of drainit; the process tree dies with it.
pub struct Drainit {
    /// The process the test spawned: `unshare`, `script` or drainit.
    top: i32,
    launch: Launch,
    /// drainit's own pid, once seen.
    pid: OnceLock<i32>,
    stdin: Option<ChildStdin>,
    out: PathBuf,
    err: PathBuf,
    exit: Exit,
}

/// The options of one launch beyond its arguments; [`Launcher::start`]
/// starts it.
pub struct Launcher<'a> {
    sc: &'a Scenario,
    launch: Launch,
    listen: String,
    env: Vec<(String, String)>,
    stderr: Option<Stdio>,
}

impl Launcher<'_> {
    /// `--listen ADDR` instead of `--listen off`.
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.to_string();
        self
    }

    /// One more variable in drainit's environment (and so the app's).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// drainit's stderr (its log) goes to `stderr` instead of a file, e.g.
    /// a pipe nobody reads.
    pub fn stderr(mut self, stderr: Stdio) -> Self {
        self.stderr = Some(stderr);
        self
    }

    /// Starts drainit with `args` (options, `--`, command) after the
    /// `--listen` option, in the scenario's directory, with `$D` naming it
    /// and none of drainit's own variables from the test's environment.
    pub fn start(self, args: &[&str]) -> Drainit {
        let Launcher {
            sc,
            launch,
            listen,
            env,
            stderr,
        } = self;
        let mut argv: Vec<String> = vec![DRAINIT.into(), "--listen".into(), listen];
        argv.extend(args.iter().map(|a| a.to_string()));
        let unshare = ["unshare", "--pid", "--fork", "--mount-proc"];
        let mut cmd = match launch {
            Launch::Direct => Command::new(&argv[0]),
            Launch::Pid1 => {
                let mut cmd = Command::new(unshare[0]);
                cmd.args(&unshare[1..]).arg(&argv[0]);
                cmd
            }
            Launch::Tty => {
                let line: Vec<String> = unshare
                    .iter()
                    .map(|s| s.to_string())
                    .chain(argv.iter().map(|a| shell_quote(a)))
                    .collect();
                let mut cmd = Command::new("script");
                cmd.args(["-qfec", &line.join(" "), "/dev/null"]);
                cmd
            }
        };
        if launch != Launch::Tty {
            cmd.args(&argv[1..]);
        }
        let out = sc.path("drainit.stdout");
        let err = sc.path("drainit.stderr");
        cmd.current_dir(sc.dir())
            .env("D", sc.dir())
            .env_remove("DRAINIT_CONFIG")
            .env_remove("DRAINIT_LISTEN")
            .env_remove("DRAINIT_LOG")
            .env_remove("DRAINIT_LOG_FORMAT")
            .envs(env)
            .stdin(if launch == Launch::Tty {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(fs::File::create(&out).expect("create stdout file"))
            .stderr(
                stderr
                    .unwrap_or_else(|| fs::File::create(&err).expect("create stderr file").into()),
            );
        let mut child = cmd.spawn().expect("spawn drainit");
        let top = child.id() as i32;
        let stdin = child.stdin.take();
        let exit: Exit = Arc::new((Mutex::new(None), Condvar::new()));
        let waiter = Arc::clone(&exit);
        std::thread::spawn(move || {
            let status = child.wait().expect("wait for drainit's launcher");
            let (lock, cvar) = &*waiter;
            *lock.lock().unwrap() = Some((Instant::now(), status));
            cvar.notify_all();
        });
        Drainit {
            top,
            launch,
            pid: OnceLock::new(),
            stdin,
            out,
            err,
            exit,
        }
    }
}

impl Drainit {
    /// Starts drainit as PID 1 with `args` (options, `--`, command).
    pub fn start(sc: &Scenario, args: &[&str]) -> Drainit {
        Drainit::launch(sc, Launch::Pid1, args)
    }

    /// Starts drainit the given way. `--listen off` goes first so parallel
    /// tests never compete for the HTTP port.
    pub fn launch(sc: &Scenario, launch: Launch, args: &[&str]) -> Drainit {
        Drainit::launcher(sc, launch).start(args)
    }

    /// [`Drainit::launch`] with drainit's stderr (its log) going to
    /// `stderr` instead of a file, e.g. a pipe nobody reads.
    pub fn launch_with_stderr(
        sc: &Scenario,
        launch: Launch,
        args: &[&str],
        stderr: Option<Stdio>,
    ) -> Drainit {
        let launcher = Drainit::launcher(sc, launch);
        match stderr {
            Some(stderr) => launcher.stderr(stderr),
            None => launcher,
        }
        .start(args)
    }

    /// A launch with more options (the listen address, the environment).
    pub fn launcher(sc: &Scenario, launch: Launch) -> Launcher<'_> {
        Launcher {
            sc,
            launch,
            listen: "off".into(),
            env: Vec::new(),
            stderr: None,
        }
    }

    /// drainit's pid as the test sees it (the child of `unshare` when it is
    /// PID 1 of its namespace).
    pub fn pid(&self) -> i32 {
        *self.pid.get_or_init(|| match self.launch {
            Launch::Direct => self.top,
            Launch::Pid1 => wait_until("drainit, the child of unshare", || {
                children(self.top).first().copied()
            }),
            Launch::Tty => panic!("signal a TTY run through the terminal"),
        })
    }

    /// Sends signal `sig` to drainit.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid();
        // SAFETY: kill(2) with plain integers.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Writes `bytes` to the terminal (TTY runs only).
    pub fn type_keys(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("a TTY run has a terminal");
        stdin.write_all(bytes).expect("write to script");
        stdin.flush().expect("flush to script");
    }

    /// When and how the launched process (for a PID-1 run: `unshare`, which
    /// exits with drainit) exited, if it has.
    pub fn exited(&self) -> Option<(Instant, ExitStatus)> {
        *self.exit.0.lock().unwrap()
    }

    /// Waits up to `timeout` for the exit; `None` if it did not come.
    pub fn wait_exit(&self, timeout: Duration) -> Option<(Instant, ExitStatus)> {
        let (lock, cvar) = &*self.exit;
        let guard = lock.lock().unwrap();
        let (guard, _) = cvar
            .wait_timeout_while(guard, timeout, |e| e.is_none())
            .unwrap();
        *guard
    }

    /// The exit code, if drainit has exited (a death by signal N is 128+N).
    pub fn try_code(&mut self) -> Option<i32> {
        self.exited().map(|(_, status)| code(status))
    }

    /// Waits for drainit to exit and returns its exit code.
    pub fn wait(&mut self) -> i32 {
        self.wait_within(TIMEOUT)
    }

    /// Waits at most `limit` for the exit; panics after that.
    pub fn wait_within(&mut self, limit: Duration) -> i32 {
        match self.wait_exit(limit) {
            Some((_, status)) => code(status),
            None => panic!("drainit did not exit within {limit:?}"),
        }
    }

    /// drainit's log so far (and the app's stderr).
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// What the app (or `--check`) printed on stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until the app's stdout contains `needle`.
    pub fn wait_for_stdout(&self, needle: &str) {
        wait_until(&format!("{needle:?} on stdout"), || {
            self.stdout().contains(needle).then_some(())
        })
    }

    /// Waits until drainit's log contains `needle` at least `n` times.
    pub fn wait_for_log(&self, needle: &str, n: usize) {
        wait_until(&format!("{n} x {needle:?} in drainit's log"), || {
            (self.stderr().matches(needle).count() >= n).then_some(())
        })
    }
}

/// An exit status as a shell reports it: the code, or 128+N for a death by
/// signal N.
fn code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .expect("exited or signalled")
}

impl Drop for Drainit {
    fn drop(&mut self) {
        if self.exited().is_none() {
            // Everything below us, gathered before anything dies so that no
            // orphan escapes to the host's init.
            let mut all = vec![self.top];
            all.extend(descendants(self.top));
            for pid in all {
                // SAFETY: kill(2) with plain integers.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if self.wait_exit(TIMEOUT).is_none() {
                eprintln!("---- drainit's launcher {} outlived SIGKILL", self.top);
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "---- drainit exit: {:?}\n---- stdout ({}):\n{}\n---- stderr ({}):\n{}",
                self.exited().map(|(_, status)| status),
                self.out.display(),
                self.stdout(),
                self.err.display(),
                self.stderr()
            );
        }
    }
}

/// Runs drainit as PID 1 to completion; returns (code, stdout, stderr).
pub fn run(sc: &Scenario, args: &[&str]) -> (i32, String, String) {
    let mut d = Drainit::start(sc, args);
    let code = d.wait();
    (code, d.stdout(), d.stderr())
}

/// Direct children of `pid`, from /proc.
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// All descendants of `pid`.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut all = Vec::new();
    let mut todo = children(pid);
    while let Some(p) = todo.pop() {
        all.push(p);
        todo.extend(children(p));
    }
    all
}

/// (state, ppid) of a process, from /proc/PID/stat; None if it is gone.
pub fn stat(pid: i32) -> Option<(char, i32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = text[text.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

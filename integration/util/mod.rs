//! Test helper: runs the real `drainit` binary and owns the process.
//!
//! A [`Scenario`] is a world-writable temporary directory holding the app's
//! scripts, the config and the files the apps write to record what happened
//! (the scripts find it as `$D`). A [`Drainit`] is one run of the binary,
//! normally as PID 1 of a fresh PID namespace (`unshare --pid --fork
//! --mount-proc`); it captures stdout and stderr to files, kills the whole
//! process tree in `Drop`, and prints drainit's log when a test fails.
//!
//! Waiting is always for an event (a file's content, the exit); the timeouts
//! are safety nets only.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
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
pub fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
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

/// One run of drainit; the process tree dies with it.
pub struct Drainit {
    child: Child,
    launch: Launch,
    stdin: Option<ChildStdin>,
    out: PathBuf,
    err: PathBuf,
    code: Option<i32>,
}

impl Drainit {
    /// Starts drainit as PID 1 with `args` (options, `--`, command).
    pub fn start(sc: &Scenario, args: &[&str]) -> Drainit {
        Drainit::launch(sc, Launch::Pid1, args)
    }

    /// Starts drainit the given way. `--listen off` goes first so parallel
    /// tests never compete for the HTTP port.
    pub fn launch(sc: &Scenario, launch: Launch, args: &[&str]) -> Drainit {
        Drainit::launch_with_stderr(sc, launch, args, None)
    }

    /// [`Drainit::launch`] with drainit's stderr (its log) going to
    /// `stderr` instead of a file, e.g. a pipe nobody reads.
    pub fn launch_with_stderr(
        sc: &Scenario,
        launch: Launch,
        args: &[&str],
        stderr: Option<Stdio>,
    ) -> Drainit {
        let mut argv: Vec<String> = vec![DRAINIT.into(), "--listen".into(), "off".into()];
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
        let stdin = child.stdin.take();
        Drainit {
            child,
            launch,
            stdin,
            out,
            err,
            code: None,
        }
    }

    /// drainit's pid as the test sees it (the child of `unshare` when it is
    /// PID 1 of its namespace).
    pub fn pid(&self) -> i32 {
        let top = self.child.id() as i32;
        match self.launch {
            Launch::Direct => top,
            Launch::Pid1 => wait_until("drainit, the child of unshare", || {
                children(top).first().copied()
            }),
            Launch::Tty => panic!("signal a TTY run through the terminal"),
        }
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

    /// The exit code, if drainit has exited (a death by signal N is 128+N).
    pub fn try_code(&mut self) -> Option<i32> {
        if self.code.is_none() {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.code = Some(
                    status
                        .code()
                        .or_else(|| status.signal().map(|s| 128 + s))
                        .expect("exited or signalled"),
                );
            }
        }
        self.code
    }

    /// Waits for drainit to exit and returns its exit code.
    pub fn wait(&mut self) -> i32 {
        self.wait_within(TIMEOUT)
    }

    /// Waits at most `limit` for the exit; panics after that.
    pub fn wait_within(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(code) = self.try_code() {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "drainit did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
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

impl Drop for Drainit {
    fn drop(&mut self) {
        if self.try_code().is_none() {
            // Everything below us, gathered before anything dies so that no
            // orphan escapes to the host's init.
            let top = self.child.id() as i32;
            let mut all = vec![top];
            all.extend(descendants(top));
            for pid in all {
                // SAFETY: kill(2) with plain integers.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- drainit exit code: {:?}\n---- stdout:\n{}\n---- stderr:\n{}",
                self.code,
                self.stdout(),
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

//! The container: the release `drainit` as PID 1 of a fresh PID namespace.
//!
//! [`Container`] owns `unshare --pid --fork --mount-proc drainit ...`, knows
//! drainit's host pid (unshare's only child), records the moment and status
//! of its exit from a waiter thread, kills the whole namespace in `Drop`, and
//! prints drainit's stderr when the test that owned it failed.
//!
//! unshare 2.38 cannot re-raise a child's fatal signal ("sigprocmask
//! unblock failed") and exits 1 instead, so an exit *code* seen here is
//! drainit's own only when drainit exited normally; who killed whom is
//! known from the emulator's own record of the SIGKILL it sent.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::http;

/// How drainit is started.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The TOML written to `<dir>/drainit.toml` and passed with `-c`.
    pub config: String,
    /// The app's argv, given after `--`.
    pub app: Vec<String>,
    /// Use this config path instead of writing `config` (the ConfigMap
    /// layout test builds its own).
    pub config_path: Option<PathBuf>,
    /// Extra environment for drainit (and so the app and exec steps).
    pub env: Vec<(String, String)>,
}

type Exit = Arc<(Mutex<Option<(Instant, ExitStatus)>>, Condvar)>;

/// drainit running as PID 1 of its own PID namespace.
pub struct Container {
    /// Scratch directory: config, logs, marker files; `$DIR` in the app's
    /// and steps' environment.
    pub dir: tempfile::TempDir,
    /// The port drainit's HTTP server listens on (127.0.0.1).
    pub port: u16,
    /// drainit's pid as seen from the host.
    pub pid: i32,
    unshare_pid: i32,
    exit: Exit,
    stderr: PathBuf,
}

/// A TCP port that was free a moment ago (bind to 0, read it, let it go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local_addr")
        .port()
}

/// Polls `f` every 5ms until it returns `Some`, or panics after `timeout`
/// naming `what`. The timeout is a safety net, not a synchronisation.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The argv for `sh -c script`.
pub fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

impl Container {
    /// Starts drainit with `config` (TOML) and `app`, and waits until its
    /// HTTP server answers.
    pub fn start(config: &str, app: &[String]) -> Container {
        Container::start_with(Options {
            config: config.to_string(),
            app: app.to_vec(),
            ..Options::default()
        })
    }

    pub fn start_with(opts: Options) -> Container {
        let dir = tempfile::tempdir().expect("tempdir");
        Container::start_in(dir, opts)
    }

    /// Like [`Container::start_with`] in a directory prepared by the test.
    pub fn start_in(dir: tempfile::TempDir, opts: Options) -> Container {
        let port = free_port();
        let config_path = match &opts.config_path {
            Some(p) => p.clone(),
            None => {
                let p = dir.path().join("drainit.toml");
                std::fs::write(&p, &opts.config).expect("write config");
                p
            }
        };
        let stderr = dir.path().join("drainit.stderr");
        let stdout = dir.path().join("drainit.stdout");
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--mount-proc"])
            .arg(env!("CARGO_BIN_EXE_drainit"))
            .arg("-c")
            .arg(&config_path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--")
            .args(&opts.app)
            .env("DIR", dir.path())
            .env_remove("DRAINIT_CONFIG")
            .env_remove("DRAINIT_LISTEN")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"))
            .current_dir(dir.path());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn unshare");
        let unshare_pid = child.id() as i32;
        let exit: Exit = Arc::new((Mutex::new(None), Condvar::new()));
        let exit2 = Arc::clone(&exit);
        std::thread::spawn(move || {
            let status = child.wait().expect("wait for unshare");
            let (lock, cvar) = &*exit2;
            *lock.lock().unwrap() = Some((Instant::now(), status));
            cvar.notify_all();
        });
        let mut c = Container {
            dir,
            port,
            pid: 0,
            unshare_pid,
            exit,
            stderr,
        };
        c.pid = wait_for("unshare to fork drainit", Duration::from_secs(5), || {
            let children =
                std::fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children"))
                    .unwrap_or_default();
            children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
        });
        let port = c.port;
        let exit = Arc::clone(&c.exit);
        wait_for("drainit's HTTP server", Duration::from_secs(5), || {
            // An early exit is for the test to judge (and Drop prints
            // stderr if it fails).
            if exit.0.lock().unwrap().is_some() {
                return Some(());
            }
            http::get(port, "/healthz").ok().map(|_| ())
        });
        c
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// drainit's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends `sig` to drainit (PID 1 in its namespace: only signals it
    /// handles, and SIGKILL, get through).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with plain integers.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// The exit, if drainit (and so unshare) has exited.
    pub fn exited(&self) -> Option<(Instant, ExitStatus)> {
        *self.exit.0.lock().unwrap()
    }

    /// Waits up to `timeout` for drainit to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<(Instant, ExitStatus)> {
        let (lock, cvar) = &*self.exit;
        let guard = lock.lock().unwrap();
        let (guard, _) = cvar
            .wait_timeout_while(guard, timeout, |e| e.is_none())
            .unwrap();
        *guard
    }

    /// drainit's exit code, when it exited normally (not by a signal).
    pub fn exit_code(&self) -> Option<i32> {
        self.exited()
            .and_then(|(_, s)| s.code().filter(|_| s.signal().is_none()))
    }

    /// Host pids of drainit's direct children (the app, exec steps).
    pub fn children(&self) -> Vec<i32> {
        children_of(self.pid)
    }

    /// Host pid of the app (drainit's first child), waiting for it.
    pub fn app_pid(&self) -> i32 {
        wait_for("the app to be spawned", Duration::from_secs(5), || {
            self.children().first().copied()
        })
    }
}

/// Direct children of `pid` (all threads' children).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let p = t.path().join("children");
            if let Ok(s) = std::fs::read_to_string(p) {
                out.extend(s.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// Host pids whose command line contains `needle` (to find a grandchild by
/// a marker argument), zombies excluded.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(needle) && !is_zombie(*pid)
        })
        .collect()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|st| st == "Z")
        })
        .unwrap_or(true)
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.exited().is_none() {
            // SIGKILL to PID 1 of the namespace ends every process in it.
            // SAFETY: kill(2) with plain integers.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                // SAFETY: as above.
                unsafe {
                    libc::kill(self.unshare_pid, libc::SIGKILL);
                }
                let _ = self.wait_exit(Duration::from_secs(2));
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "---- drainit stderr ({}) ----\n{}\n---- app stdout ----\n{}",
                self.stderr.display(),
                self.stderr(),
                std::fs::read_to_string(self.dir.path().join("drainit.stdout")).unwrap_or_default()
            );
        }
    }
}

/// Reads a file written by the app or a step ("" when it does not exist).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

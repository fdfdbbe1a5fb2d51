//! The container: the release `drainit` as PID 1 of a fresh PID namespace,
//! with its HTTP server on, as the kubelet sees it.
//!
//! [`Container`] is a [`Drainit`] run (`unshare --pid --fork --mount-proc
//! drainit ...`, which knows drainit's host pid, records the moment and
//! status of its exit, kills the whole namespace in `Drop` and prints
//! drainit's log when the test that owned it failed) plus what the kubelet
//! needs on top: a port of its own, the config file, `$DIR`, and a start
//! that returns once `/healthz` answers.
//!
//! unshare 2.38 cannot re-raise a child's fatal signal ("sigprocmask
//! unblock failed") and exits 1 instead, so an exit *code* seen here is
//! drainit's own only when drainit exited normally; who killed whom is
//! known from the emulator's own record of the SIGKILL it sent.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::http;
pub use crate::util::{children as children_of, free_port, wait_for};
use crate::util::{stat, Drainit, Launch, Scenario};

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

/// drainit running as PID 1 of its own PID namespace.
pub struct Container {
    /// The port drainit's HTTP server listens on (127.0.0.1).
    pub port: u16,
    /// drainit's pid as seen from the host.
    pub pid: i32,
    /// Declared before `sc`: the processes die before their directory goes.
    drainit: Drainit,
    /// Scratch directory: config, logs, marker files; `$DIR` in the app's
    /// and steps' environment.
    sc: Scenario,
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
        let sc = Scenario::adopt(dir);
        let port = free_port();
        let config_path = match &opts.config_path {
            Some(p) => p.clone(),
            None => {
                let p = sc.path("drainit.toml");
                std::fs::write(&p, &opts.config).expect("write config");
                p
            }
        };
        let config_path = config_path.display().to_string();
        let mut args = vec!["-c", &config_path, "--"];
        args.extend(opts.app.iter().map(String::as_str));
        let mut launcher = Drainit::launcher(&sc, Launch::Pid1)
            .listen(&format!("127.0.0.1:{port}"))
            .env("DIR", &sc.dir().display().to_string());
        for (k, v) in &opts.env {
            launcher = launcher.env(k, v);
        }
        let drainit = launcher.start(&args);
        let pid = drainit.pid();
        wait_for("drainit's HTTP server", Duration::from_secs(5), || {
            // An early exit is for the test to judge (and Drop prints
            // stderr if it fails).
            if drainit.exited().is_some() {
                return Some(());
            }
            http::get(port, "/healthz").ok().map(|_| ())
        });
        Container {
            port,
            pid,
            drainit,
            sc,
        }
    }

    /// The scratch directory (`$DIR`).
    pub fn dir(&self) -> &Path {
        self.sc.dir()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.sc.path(name)
    }

    /// drainit's stderr so far.
    pub fn stderr(&self) -> String {
        self.drainit.stderr()
    }

    /// Sends `sig` to drainit (PID 1 in its namespace: only signals it
    /// handles, and SIGKILL, get through). No check: the kubelet's SIGKILL
    /// may race drainit's own exit.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with plain integers.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// The exit, if drainit (and so unshare) has exited.
    pub fn exited(&self) -> Option<(Instant, ExitStatus)> {
        self.drainit.exited()
    }

    /// Waits up to `timeout` for drainit to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<(Instant, ExitStatus)> {
        self.drainit.wait_exit(timeout)
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
            // Gone, or a zombie: not running.
            cmd.contains(needle) && matches!(stat(*pid), Some((state, _)) if state != 'Z')
        })
        .collect()
}

/// Reads a file written by the app or a step ("" when it does not exist).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

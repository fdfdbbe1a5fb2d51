//! The one owner of `waitpid(-1)`.
//!
//! After every SIGCHLD the supervisor calls [`Reaper::reap`], which loops
//! `waitpid(-1, WNOHANG)` until nothing is left (SIGCHLDs coalesce, so one
//! signal may stand for many exits). Processes drainit starts itself (exec
//! steps) get their status through [`Reaper::claim`], never from a second
//! `wait`: a second waiter would race this loop and one of them would lose
//! the status. Nothing else in drainit may call `wait*`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    /// Killed by this signal number.
    Signaled(i32),
}

impl Status {
    /// The shell's convention: the exit code, or 128+N for signal N.
    pub fn code(self) -> i32 {
        match self {
            Status::Exited(code) => code,
            Status::Signaled(sig) => 128 + sig,
        }
    }

    pub fn success(self) -> bool {
        self == Status::Exited(0)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Exited(code) => write!(f, "exited with code {code}"),
            Status::Signaled(sig) => {
                let name = crate::init::signals::Signal::from_number(*sig)
                    .map_or_else(|_| sig.to_string(), |s| s.to_string());
                write!(f, "killed by {name}")
            }
        }
    }
}

/// Shared handle to the reaper's registry of claimed pids. Cloning is cheap.
#[derive(Clone, Default)]
pub struct Reaper {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    claims: HashMap<i32, oneshot::Sender<Status>>,
    reaped: u64,
}

/// Whether any child is left after a reaping pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Children {
    Some,
    None,
}

impl Reaper {
    /// Registers interest in `pid`'s exit status. Call it right after the
    /// fork, before yielding to the runtime: the reaper runs on the same
    /// thread, so it cannot reap `pid` in between.
    pub fn claim(&self, pid: Pid) -> oneshot::Receiver<Status> {
        let (tx, rx) = oneshot::channel();
        self.lock().claims.insert(pid.as_raw(), tx);
        rx
    }

    /// Reaps every child that has exited. Statuses of claimed pids go to
    /// their claimants; all are returned so the supervisor can spot the app.
    pub fn reap(&self) -> (Vec<(Pid, Status)>, Children) {
        let mut done = Vec::new();
        let children = loop {
            let mut raw = 0;
            // SAFETY: waitpid only writes the status int we own. libc is used
            // rather than nix because nix cannot represent a death by a
            // real-time signal and would turn it into an error.
            let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
            if pid > 0 {
                let status = if libc::WIFSIGNALED(raw) {
                    Status::Signaled(libc::WTERMSIG(raw))
                } else {
                    Status::Exited(libc::WEXITSTATUS(raw))
                };
                done.push((Pid::from_raw(pid), status));
            } else if pid == 0 {
                break Children::Some;
            } else if Errno::last() == Errno::EINTR {
                continue;
            } else {
                break Children::None; // ECHILD: nobody left.
            }
        };
        if !done.is_empty() {
            let mut inner = self.lock();
            inner.reaped += done.len() as u64;
            for (pid, status) in &done {
                if let Some(tx) = inner.claims.remove(&pid.as_raw()) {
                    // The claimant may have given up (timeout); that is fine.
                    let _ = tx.send(*status);
                }
            }
        }
        (done, children)
    }

    /// Processes reaped since start, for metrics.
    pub fn reaped(&self) -> u64 {
        self.lock().reaped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // map is still consistent (single inserts/removes).
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

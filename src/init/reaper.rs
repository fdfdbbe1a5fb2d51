//! The one owner of `waitpid(-1)`.
//!
//! After every SIGCHLD the core calls [`reap`], which loops
//! `waitpid(-1, WNOHANG)` until nothing is left (SIGCHLDs coalesce, so one
//! signal may stand for many exits), and hands every status up to the
//! lifecycle, which gives processes it started itself (exec steps) their
//! status. Nothing else in drainit may call `wait*`: a second waiter would
//! race this loop and one of them would lose the status.

use nix::errno::Errno;
use nix::unistd::Pid;

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
                let name = crate::config::Signal::from_number(*sig)
                    .map_or_else(|_| sig.to_string(), |s| s.to_string());
                write!(f, "killed by {name}")
            }
        }
    }
}

/// Whether any child is left after a reaping pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Children {
    Some,
    None,
}

/// Reaps every child that has exited, into `done`; says whether any is
/// left.
pub fn reap(done: &mut Vec<(Pid, Status)>) -> Children {
    loop {
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
            return Children::Some;
        } else if Errno::last() == Errno::EINTR {
            continue;
        } else {
            return Children::None; // ECHILD: nobody left.
        }
    }
}

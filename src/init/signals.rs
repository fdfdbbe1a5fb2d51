//! How drainit *receives* signals: it blocks every signal it catches
//! ([`crate::config::signal::caught`]) and reads them from a `signalfd` (as
//! tini waits with `sigtimedwait` and catatonit reads a signalfd), so a
//! signal costs one `read`, with no handler frame and no self-pipe. Blocked
//! signals are queued even for PID 1, whose default-action signals the
//! kernel would otherwise drop. The signals drainit keeps ignored for
//! itself ([`OWN_IGNORES`]) and its own SIGPIPEs are this module's too.
//!
//! Signal names, numbers and the rewrite table are config's
//! ([`crate::config::Signal`]): config owns names and syntax, init owns
//! what runs. This module never sends a signal and never decides what a
//! signal means for the shutdown sequence: that is `init::forward`
//! and the lifecycle's shutdown machine.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::config::signal::caught;
use crate::init::mailbox::Bell;

/// Signals drainit keeps at `SIG_IGN` for itself while it also receives
/// them (blocked, from the signalfd): SIGTTIN/SIGTTOU so that a terminal
/// write or `tcsetpgrp` never stops it, SIGPIPE so that a write to a closed
/// pipe is an EPIPE error and never the death of PID 1, even in a thread
/// that did not block it. The child gets the default back before `exec`.
///
/// Blocked and ignored at once works: the terminal treats a blocked or
/// ignored SIGTTOU alike (`is_ignored()` in drivers/tty/tty_jobctrl.c), so
/// drainit's own background log writes go through instead of stopping it;
/// a SIGPIPE the kernel raises for drainit's own write to a closed pipe is
/// queued, not acted on (the write fails with EPIPE), and [`Receiver`]
/// drops it; and the same signals sent with kill(2) are still queued
/// (blocked signals are never discarded) and forwarded.
pub const OWN_IGNORES: [i32; 3] = [libc::SIGTTIN, libc::SIGTTOU, libc::SIGPIPE];

/// The mask of ignored signals (`SigIgn:` in /proc/self/status; bit n-1
/// is signal n). Unreadable means none: nothing is reset then.
fn inherited_ignores() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("SigIgn:"))?;
            u64::from_str_radix(line["SigIgn:".len()..].trim(), 16).ok()
        })
        .unwrap_or(0)
}

/// Receives drainit's signals from a blocking `signalfd`: the core's
/// thread sleeps in its `read`, as tini sleeps in `sigtimedwait`.
pub struct Receiver {
    fd: OwnedFd,
    /// drainit's own pid, to tell its own SIGPIPEs (see [`own_pipe`]).
    pid: u32,
    /// Whether an own SIGPIPE was logged already (once at most: when the
    /// closed pipe is stderr, the log line raises the next one).
    own_pipe_logged: bool,
}

/// Whether `info` is a SIGPIPE the kernel raised for a write of drainit's
/// own (to a closed stdout, stderr or socket). The kernel sends it as
/// `send_sig(SIGPIPE, current, 0)`: `SI_USER`, like kill(2), with the
/// *writer's* pid as the sender, where a kill(2) from another process
/// carries that process's pid (or 0 from outside drainit's PID namespace).
/// So only the pid tells them apart (checked on Linux 6.18: a pipe write
/// and a socket send both give `si_code` 0 and the writer's own pid).
fn own_pipe(info: &libc::signalfd_siginfo, pid: u32) -> bool {
    info.ssi_signo == libc::SIGPIPE as u32 && info.ssi_pid == pid
}

/// How many signals one `read` of the signalfd takes at most.
const BATCH: usize = 16;

impl Receiver {
    /// Blocks every [`caught`] signal in the calling thread and opens the
    /// signalfd. Call it before any other thread exists (threads inherit the
    /// mask) and before the app is spawned, so no signal can be lost; the
    /// child gets an empty mask back in `child::spawn`. Signals that were
    /// ignored when drainit started (`nohup`, a careless parent) get their
    /// default action back, so the app does not inherit `SIG_IGN`.
    pub fn new() -> io::Result<Receiver> {
        // SAFETY: plain libc calls on a sigset_t we own; the fd returned by
        // signalfd is checked and then owned by OwnedFd.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            for n in caught() {
                libc::sigaddset(&mut mask, n);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            // One read of SigIgn instead of a sigaction query per signal.
            let ignored = inherited_ignores();
            for n in caught() {
                if !OWN_IGNORES.contains(&n) && ignored & (1u64 << (n - 1)) != 0 {
                    libc::signal(n, libc::SIG_DFL);
                }
            }
            let fd = libc::signalfd(-1, &mask, libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Receiver {
                fd: OwnedFd::from_raw_fd(fd),
                pid: std::process::id(),
                own_pipe_logged: false,
            })
        }
    }

    /// A bell that wakes the main thread from [`Receiver::read_into`]: a
    /// SIGCHLD sent to that thread alone (`tgkill`; the main thread's id is
    /// the pid). SIGCHLD because a spurious one costs only an empty reaping
    /// pass and is never forwarded, and because a standard signal is
    /// queued even when the kernel has no room left for a siginfo
    /// (`RLIMIT_SIGPENDING`), where a real-time one would be refused. Only
    /// for a receiver read on the main thread, as the core's is.
    pub fn bell(&self) -> Bell {
        // A pid fits a pid_t: the kernel's PID_MAX_LIMIT is 2^22.
        let pid = self.pid as libc::pid_t;
        Bell {
            pid,
            tid: pid,
            sig: libc::SIGCHLD,
        }
    }

    /// Waits for signals and reads those pending into `out`, in the order
    /// received. A SIGPIPE raised by drainit's own write is dropped here,
    /// never handed out: the app never wrote to that pipe.
    ///
    /// One blocking `read` takes up to [`BATCH`] signals; more pending
    /// are returned by the next call at once, without a wait. Nothing else
    /// wakes the thread: the lifecycle's commands ring a SIGCHLD at it
    /// ([`Receiver::bell`]).
    pub fn read_into(&mut self, out: &mut Vec<i32>) -> io::Result<()> {
        loop {
            let mut infos = std::mem::MaybeUninit::<[libc::signalfd_siginfo; BATCH]>::uninit();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reads at most BATCH * size bytes into `infos`, which we
            // own; no zeroing first (2 KiB per signal on the forwarding path).
            let n =
                unsafe { libc::read(self.fd.as_raw_fd(), infos.as_mut_ptr().cast(), BATCH * size) };
            if n > 0 {
                let count = n as usize / size;
                // SAFETY: the kernel wrote `count` whole records (signalfd
                // reads are multiples of the record size).
                let read = unsafe {
                    std::slice::from_raw_parts(
                        infos.as_ptr().cast::<libc::signalfd_siginfo>(),
                        count,
                    )
                };
                for info in read {
                    if own_pipe(info, self.pid) {
                        if !self.own_pipe_logged {
                            self.own_pipe_logged = true;
                            tracing::debug!("a write of drainit's own hit a closed pipe (EPIPE); its SIGPIPE is not forwarded");
                        }
                        continue;
                    }
                    out.push(info.ssi_signo as i32);
                }
                return Ok(());
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => {}
                _ => return Err(err),
            }
        }
    }
}

impl AsRawFd for Receiver {
    /// The signalfd.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sigpipe_from_drainit_itself_is_its_own() {
        // SAFETY: an all-zero signalfd_siginfo is a valid value.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        info.ssi_signo = libc::SIGPIPE as u32;
        info.ssi_pid = 1;
        assert!(own_pipe(&info, 1), "the kernel's SIGPIPE for our write");
        info.ssi_pid = 42;
        assert!(!own_pipe(&info, 1), "kill -PIPE from pid 42");
        info.ssi_pid = 0;
        assert!(!own_pipe(&info, 1), "kill -PIPE from outside the namespace");
        info.ssi_signo = libc::SIGTERM as u32;
        info.ssi_pid = 1;
        assert!(!own_pipe(&info, 1), "only SIGPIPE is ever dropped");
    }
}

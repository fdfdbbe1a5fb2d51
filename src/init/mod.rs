//! The PID-1 core: what tini does, in the order it does it.
//!
//! 1. Parse the command line and the config (`main`, `cli`, `config`):
//!    nothing has started yet, so a bad input exits [`exit::USAGE`] with
//!    nothing half-started. Every failure up to the spawn (step 5) is a
//!    [`StartError`], which says the exit code.
//! 2. Become init ([`become_init`]): child subreaper when not PID 1, the
//!    parent-death signal if asked, and ignore the signals drainit must
//!    survive ([`signals::OWN_IGNORES`]).
//! 3. Block every catchable signal and read them from one signalfd
//!    ([`signals::Receiver`]) *before* the app exists, so no signal sent
//!    after the app has started can be lost, and a blocked signal is queued
//!    even for PID 1, whose default-action signals the kernel drops.
//! 4. Resolve `app.user` from the image's own files ([`user`]).
//! 5. Spawn the app ([`child::spawn`]): its own process group, the TTY's
//!    foreground when stdin is one, dropped privileges, default signal
//!    dispositions and an empty mask in the child.
//! 6. Loop: wait for a signal; forward it to the app's group (or rewrite
//!    it, or start the drain for a trigger signal); on SIGCHLD reap
//!    everything with the one `waitpid(-1)` owner ([`reaper::Reaper`]).
//! 7. When the app is gone: signal and reap what is left of the process
//!    tree (the orphan sweep), then exit with the app's code or 128+signal
//!    ([`exit`]).
//!
//! The decision in step 6 is [`forward::decide`], the restart delay
//! [`backoff::Backoff`], step 7 [`sweep::Sweep`] and [`exit::of_app`].
//! The loop itself still runs in [`crate::lifecycle::driver`], on the
//! async runtime together with the lifecycle (and `signals` still reads
//! the signalfd through tokio's reactor, and `reaper` hands exec steps
//! their status over a tokio oneshot). These modules never decide what a
//! trigger signal means for the shutdown sequence: that is the shutdown
//! machine's job.

pub mod backoff;
pub mod child;
pub mod error;
pub mod exit;
pub mod forward;
pub mod reaper;
pub mod signals;
pub mod sweep;
pub mod user;

pub use crate::init::error::StartError;
use crate::init::signals::Signal;

/// Process-level options from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `-s`: become a child subreaper (automatic when not PID 1).
    pub subreaper: bool,
    /// `-p`: signal to get when drainit's parent dies.
    pub pdeathsig: Option<Signal>,
}

/// Subreaper, parent-death signal, and SIG_IGN for SIGTTIN/SIGTTOU/SIGPIPE
/// (see [`signals::OWN_IGNORES`]: they are also blocked, received and
/// forwarded).
pub fn become_init(is_pid1: bool, options: Options) -> nix::Result<()> {
    if !is_pid1 || options.subreaper {
        // As PID 1 every orphan comes to us anyway; otherwise ask for them.
        nix::sys::prctl::set_child_subreaper(true)?;
    }
    if let (Some(sig), false) = (options.pdeathsig, is_pid1) {
        // SAFETY: prctl with an integer argument; no memory is passed.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig.number() as libc::c_ulong) } != 0 {
            return Err(nix::errno::Errno::last());
        }
    }
    for sig in signals::OWN_IGNORES {
        // SAFETY: installing SIG_IGN has no handler code to be unsafe in.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    Ok(())
}

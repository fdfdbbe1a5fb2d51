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
//! 6. Hand the rest to the lifecycle on a second thread (`main`), which
//!    inherits the blocked mask, and loop ([`core::Core::run`]) on this
//!    one, blocked in `read` on the signalfd (the lifecycle's
//!    [`mailbox::Mailbox`] of commands rings a SIGCHLD at it): forward
//!    each signal to the app's group (or rewrite it, or drop it,
//!    [`forward::decide`]); on SIGCHLD reap everything, the one
//!    `waitpid(-1)` owner ([`reaper::reap`]); hand triggers and statuses
//!    up as [`core::Event`]s; carry out the lifecycle's
//!    [`core::Command`]s (stop, kill, restart, new rules).
//! 7. When the lifecycle says so ([`core::Command::Finish`]): exit with the
//!    app's code or 128+signal ([`exit::of_app`]), after the orphan sweep
//!    ([`sweep::Sweep`]) the lifecycle ran.
//!
//! No tokio and no hyper here: the core is synchronous, and an idle
//! drainit's main thread sleeps in the kernel. These modules never decide
//! what a trigger signal means for the shutdown sequence beyond stopping
//! the app when nothing is to be drained ([`core::Rules::direct_stop`]):
//! that is the shutdown machine's job.

pub(crate) mod backoff;
pub mod child;
pub mod core;
pub(crate) mod error;
pub mod exit;
pub(crate) mod forward;
pub mod mailbox;
pub mod reaper;
pub mod signals;
pub(crate) mod sweep;
pub mod user;

use crate::config::Signal;
pub use crate::init::error::StartError;

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

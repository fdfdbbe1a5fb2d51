//! The PID-1 core: what tini does, in the order it does it.
//!
//! 1. Parse the command line and the config (`main`, `cli`, `config`):
//!    nothing has started yet, so a bad input exits [`exit::USAGE`] with
//!    nothing half-started.
//! 2. Become init (`supervisor::become_init`): child subreaper
//!    when not PID 1, the parent-death signal if asked, and ignore the
//!    signals drainit must survive ([`signals::OWN_IGNORES`]).
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
//! The loop itself (steps 6 and 7) still lives in `crate::supervisor`,
//! which drives it from the async runtime together with the lifecycle.
//! These modules never decide what a signal means for the shutdown
//! sequence: that is the shutdown machine's job.

pub mod child;
pub mod exit;
pub mod reaper;
pub mod signals;
pub mod user;

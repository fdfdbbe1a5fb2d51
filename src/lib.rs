//! drainit: a PID-1 init for containers that drains before it stops.
//!
//! SPEC.md (shared design) is the contract these modules implement. The
//! house has four rooms, one job each:
//!
//! - [`init`], the PID-1 core, tini's job, synchronous (no tokio, no
//!   hyper): the signals (a signalfd), the one `waitpid(-1)` owner,
//!   spawning the app and exec steps' children, `app.user`, forwarding,
//!   the orphan sweep, the restart back-off and exit codes. Its loop
//!   ([`init::core`]) runs on the main thread.
//! - [`config`]: the TOML schema (steps included, [`config::steps`]),
//!   `${VAR}` expansion and errors located with toml's spans. It starts
//!   nothing.
//! - [`lifecycle`]: the driver of the app's life
//!   ([`lifecycle::driver::run`], on tokio's current-thread runtime on a
//!   second thread), the shutdown machine (pure), the step
//!   runner, checks and their HTTP client, reload, the termination record, and the
//!   [`lifecycle::state`] the HTTP side reads.
//! - [`http`]: the server (listener and connection registry, routes,
//!   auth) and metrics. (The client that http steps and checks use is
//!   the lifecycle's: `lifecycle::client`.)
//!
//! Arrows run one way, with no circle between the rooms: `main` → init,
//! lifecycle, http; lifecycle → init → config; http → lifecycle, config
//! (it reads the published status and sends requests, never signals nor
//! reaps). The lifecycle imports nothing of http: its steps' client is
//! its own (`lifecycle::client`), and `main` hands the driver the server
//! (`lifecycle::driver::Serve`).
//! Config imports none of the other rooms: what a step URL may be
//! (`config::url`), the stop [`config::Cause`], `wait_quiet`'s settings,
//! signal names and numbers ([`config::Signal`]) and the syntax of a user
//! spec ([`config::user`]) are config's, and the others use them from
//! there. Config owns names and syntax, init owns what runs: the signalfd
//! ([`init::signals`]) and the lookup of `app.user` in the image
//! ([`init::user`]). So no edge points against the grain between init and
//! config: init reads the config, and config imports nothing of init.
//!
//! Two threads, and only typed messages between them
//! ([`init::core::Event`] up, [`init::core::Command`] down, each through
//! an [`init::mailbox::Mailbox`]): `main` parses the command line
//! ([`cli`]) and the config, sets up [`logging`], does tini's part on the
//! main thread (become init, block the signals, bind the listener, spawn
//! the app), starts the lifecycle's thread ([`lifecycle::driver::run_thread`])
//! and runs the core's loop until the lifecycle (or the app's exit, when
//! nothing is left to do after it) says to exit.
#![deny(rust_2018_idioms)]
#![warn(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cli;
pub mod config;
pub mod http;
pub mod init;
pub mod lifecycle;
pub mod logging;

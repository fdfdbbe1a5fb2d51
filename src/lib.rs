//! drainit: a PID-1 init for containers that drains before it stops.
//!
//! SPEC.md (shared design) is the contract these modules implement. The
//! house has four rooms, one job each:
//!
//! - [`init`], the PID-1 core, tini's job: the signals (a signalfd), the
//!   one `waitpid(-1)` owner, spawning the app and exec steps' children,
//!   `app.user`, forwarding decisions, the orphan sweep, the restart
//!   back-off and exit codes.
//! - [`config`]: the TOML schema (steps included, [`config::steps`]),
//!   `${VAR}` expansion and errors located with toml's spans. It starts
//!   nothing.
//! - [`lifecycle`]: the driver of the app's life
//!   ([`lifecycle::driver::run`]), the shutdown machine (pure), the step
//!   runner, checks, reload, the termination record, and the
//!   [`lifecycle::state`] the HTTP side reads.
//! - [`http`]: the server (listener and connection registry, routes,
//!   auth), the client that http steps and checks use, and metrics.
//!
//! Arrows run one way: `main` → init, lifecycle → config; http →
//! lifecycle, config (it reads the published status and sends requests,
//! never signals nor reaps); nothing imports back up into `main` or init.
//! Config imports none of the other rooms: what a step URL may be
//! (`config::url`), the stop [`config::Cause`], `wait_quiet`'s settings,
//! signal names and numbers ([`config::Signal`]) and the syntax of a user
//! spec ([`config::user`]) are config's, and the others use them from
//! there. Config owns names and syntax, init owns what runs: the signalfd
//! ([`init::signals`]) and the lookup of `app.user` in the image
//! ([`init::user`]). So no edge points against the grain between init and
//! config: init reads the config, and config imports nothing of init.
//!
//! `main` parses the command line ([`cli`]) and the config, sets up
//! [`logging`], and calls [`lifecycle::driver::run`].
#![deny(rust_2018_idioms)]
#![warn(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cli;
pub mod config;
pub mod http;
pub mod init;
pub mod lifecycle;
pub mod logging;

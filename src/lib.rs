//! drainit: a PID-1 init for containers that drains before it stops.
//!
//! `main` parses the command line and the config and calls
//! [`lifecycle::driver::run`]; everything else lives in these modules, one per
//! concern. SPEC.md (shared design) is the contract they implement.
#![deny(rust_2018_idioms)]
#![warn(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod checks;
pub mod cli;
pub mod config;
pub mod files;
pub mod http_client;
pub mod init;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod netstat;
pub mod quiet;
pub mod reload;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod steps;
pub mod termination;

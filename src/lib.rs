//! drainit: a PID-1 init for containers that drains before it stops.
//!
//! `main` parses the command line and the config and calls
//! [`supervisor::run`]; everything else lives in these modules, one per
//! concern. SPEC.md (shared design) is the contract they implement.
#![deny(rust_2018_idioms)]
#![warn(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod child;
pub mod cli;
pub mod config;
pub mod exit;
pub mod http;
pub mod lifecycle;
pub mod logging;
pub mod reaper;
pub mod signals;
pub mod supervisor;
pub(crate) mod user;

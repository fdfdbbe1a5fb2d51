//! The HTTP side: the probe and admin server that serves the lifecycle's
//! state (`/healthz`, `/readyz`, `/status`, `/metrics`, `/prestop`,
//! `/drain`), the small client that http steps and checks use, and the
//! Prometheus rendering of the metrics. It reads the lifecycle's shared
//! state and sends it requests; it never signals nor reaps.

mod auth;
pub(crate) mod client;
pub(crate) mod metrics;
mod routes;
pub mod server;

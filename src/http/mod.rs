//! The HTTP side: the probe and admin server that serves the lifecycle's
//! state (`/healthz`, `/readyz`, `/status`, `/metrics`, `/prestop`,
//! `/drain`) and the Prometheus rendering of the metrics. The client that
//! http steps and checks use is the lifecycle's (`lifecycle::client`). It reads the lifecycle's shared
//! state and sends it requests; it never signals nor reaps.

mod auth;
pub(crate) mod metrics;
mod routes;
pub mod server;

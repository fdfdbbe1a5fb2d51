//! The lifecycle around the PID-1 core: the driver that runs the app's
//! life (poststart, the shutdown sequence of SPEC section 5, on_exit,
//! restarts, reloads, the termination record) on the async runtime, the
//! one shutdown machine (pure), the step runner, checks, the
//! connection-quiet waits and their `sock_diag` reader, config reload, the
//! shared state the HTTP side reads, and the termination record. It never
//! reaps nor signals on its own: the PID-1 core's modules do.

pub(crate) mod checks;
pub(crate) mod claims;
pub(crate) mod client;
pub mod driver;
pub(crate) mod netstat;
pub(crate) mod quiet;
pub(crate) mod reload;
pub(crate) mod shutdown;
pub mod state;
pub(crate) mod steps;
pub(crate) mod termination;

//! The lifecycle around the app: the one shutdown machine (pure), the step
//! runner, checks, the connection-quiet waits and their `sock_diag` reader,
//! config reload, the shared state the HTTP side reads, and the termination
//! record. It never reaps nor signals on its own: the PID-1 core does.

pub mod checks;
pub mod netstat;
pub mod quiet;
pub mod reload;
pub mod shutdown;
pub mod state;
pub mod steps;
pub mod termination;

//! The lifecycle around the PID-1 core: the driver that runs the app's
//! life (poststart, the shutdown sequence of SPEC section 5, on_exit,
//! restarts, reloads, the termination record) on the async runtime.

pub mod driver;

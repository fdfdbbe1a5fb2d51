//! The cause of a stop (SPEC section 5), as config names it.
//!
//! The `when` of `[[drain]]` and `[[on_exit]]` steps selects by cause, so
//! the names are config's: this module owns the enum and its text, and the
//! shutdown machine (`lifecycle::shutdown`) decides which one a stop has.

/// The cause of a stop (SPEC section 5): what started the shutdown, or
/// why the app ended without one. One value, carried from the shutdown
/// machine to `/status`, `/metrics`, the log, the termination record, the
/// `when` of steps and exec steps' `DRAINIT_STOP_CAUSE`, so no one matches
/// strings.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// `GET /prestop`: the kubelet's preStop hook (a rollout, a scale-down).
    Prestop,
    /// A trigger signal with no hook before it (`docker stop`, SIGTERM).
    Signal,
    /// `POST /drain`.
    DrainRequest,
    /// A `[[poststart]]` step failed, so drainit stops the app.
    PoststartFailure,
    /// The shutdown started while drainit's last `/healthz` answer was not
    /// 200: the kubelet runs preStop, then stops, a container whose
    /// liveness probe failed.
    Liveness,
    /// The app exited on its own, no shutdown requested.
    AppExit,
}

impl Cause {
    /// Every cause, for `/metrics`.
    pub const ALL: [Cause; 6] = [
        Cause::Prestop,
        Cause::Signal,
        Cause::DrainRequest,
        Cause::PoststartFailure,
        Cause::Liveness,
        Cause::AppExit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Prestop => "prestop",
            Cause::Signal => "signal",
            Cause::DrainRequest => "drain_request",
            Cause::PoststartFailure => "poststart_failure",
            Cause::Liveness => "liveness",
            Cause::AppExit => "app_exit",
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

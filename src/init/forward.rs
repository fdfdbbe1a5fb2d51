//! Forwarding: what a received signal means, and sending it to the app.
//!
//! This module owns the decision tini makes in its loop for each signal
//! (reap on SIGCHLD, else pass it on) with drainit's additions from SPEC
//! section 3: `signals.ignore` drops a signal, `shutdown.triggers` hands it
//! to the shutdown machine instead, `signals.rewrite` changes it on the
//! way. The decision is pure ([`decide`]); the core makes it for every
//! signal it reads, with the rules the lifecycle gives it
//! ([`crate::init::core::Rules`]). It never decides what a trigger does:
//! that is the shutdown machine's job.

use nix::unistd::Pid;
use tracing::debug;

use crate::config::signal::{self, Signal};
use crate::config::{self, ForwardTo};

/// What the core does with one signal it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// SIGCHLD: run the reaper (SIGCHLDs coalesce, so it loops).
    Reap,
    /// A number this system does not name: nothing to do.
    Unknown,
    /// In `signals.ignore`: dropped.
    Ignore(Signal),
    /// In `shutdown.triggers`: the shutdown machine decides.
    Trigger(Signal),
    /// Sent to the app, after `signals.rewrite` (the signal sent, which may
    /// differ from the one received).
    Forward(Signal),
}

/// Decides what signal `n` means under `signals` and `triggers` (SPEC 3):
/// SIGCHLD reaps; then ignore wins over trigger, and trigger over rewrite.
pub fn decide(n: i32, signals: &config::Signals, triggers: &[Signal]) -> Decision {
    if n == libc::SIGCHLD {
        return Decision::Reap;
    }
    let Ok(sig) = Signal::from_number(n) else {
        return Decision::Unknown;
    };
    if signals.ignore.contains(&sig) {
        Decision::Ignore(sig)
    } else if triggers.contains(&sig) {
        Decision::Trigger(sig)
    } else {
        Decision::Forward(signal::rewrite(&signals.rewrite, sig))
    }
}

/// The `kill(2)` target for the app: its pid (`forward_to = "child"`), its
/// negated process group (`"group"`), or 0 when no app runs.
pub fn target(app: Option<Pid>, forward_to: ForwardTo) -> i32 {
    match (app, forward_to) {
        (None, _) => 0,
        (Some(pid), ForwardTo::Group) => -pid.as_raw(),
        (Some(pid), ForwardTo::Child) => pid.as_raw(),
    }
}

/// Sends `sig` to `target` (see [`target`]; 0: no app, dropped). Returns
/// whether it was delivered, for the caller's count.
pub fn send(target: i32, sig: Signal) -> bool {
    if target == 0 {
        debug!(signal = %sig, "no app running; signal dropped");
        return false;
    }
    // SAFETY: kill(2) with plain integers; libc is used because nix's
    // Signal cannot name real-time signals.
    let rc = unsafe { libc::kill(target, sig.number()) };
    if rc == 0 {
        debug!(signal = %sig, target, "forwarded");
        true
    } else {
        debug!(signal = %sig, target, error = %nix::errno::Errno::last(), "forwarding failed");
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(n: i32) -> Signal {
        Signal::from_number(n).unwrap()
    }

    #[test]
    fn sigchld_always_reaps_even_when_listed_elsewhere() {
        let mut signals = config::Signals::default();
        signals.ignore.push(Signal::CHLD);
        assert_eq!(
            decide(libc::SIGCHLD, &signals, &[Signal::CHLD]),
            Decision::Reap
        );
    }

    #[test]
    fn an_ignored_signal_is_dropped_even_when_it_is_a_trigger() {
        let mut signals = config::Signals::default();
        signals.ignore.push(Signal::HUP);
        let decision = decide(libc::SIGHUP, &signals, &[Signal::HUP]);
        assert_eq!(decision, Decision::Ignore(Signal::HUP));
    }

    #[test]
    fn a_trigger_goes_to_the_machine_not_through_the_rewrite() {
        let mut signals = config::Signals::default();
        signals.rewrite.insert(Signal::TERM, Signal::INT);
        let decision = decide(libc::SIGTERM, &signals, &[Signal::TERM]);
        assert_eq!(decision, Decision::Trigger(Signal::TERM));
    }

    #[test]
    fn a_rewritten_signal_is_forwarded_as_its_target() {
        let mut signals = config::Signals::default();
        signals.rewrite.insert(Signal::TERM, sig(libc::SIGQUIT));
        let decision = decide(libc::SIGTERM, &signals, &[]);
        assert_eq!(decision, Decision::Forward(sig(libc::SIGQUIT)));
    }

    #[test]
    fn real_time_signals_are_forwarded_unchanged() {
        let n = signal::sigrtmin() + 3;
        let decision = decide(n, &config::Signals::default(), &[]);
        assert_eq!(decision, Decision::Forward(sig(n)));
    }

    #[test]
    fn the_target_is_the_group_or_the_child_and_none_without_an_app() {
        let pid = Some(Pid::from_raw(42));
        assert_eq!(target(pid, ForwardTo::Group), -42);
        assert_eq!(target(pid, ForwardTo::Child), 42);
        assert_eq!(target(None, ForwardTo::Group), 0);
    }
}

//! The restart back-off (SPEC 2), as a pure value: no clock, no timer.
//!
//! It owns only the delay due before the next restart; when the restart
//! happens is the caller's business (the deadline of its loop), so the
//! policy is tested with plain durations.

use std::time::Duration;

use crate::config;

/// The delay due before the next restart of the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay the next restart waits, unless the last run was long
    /// enough to start over from `initial`.
    next: Duration,
}

impl Backoff {
    /// A back-off that starts at `policy.initial`.
    pub fn new(policy: &config::Backoff) -> Backoff {
        Backoff {
            next: policy.initial.0,
        }
    }

    /// The delay before the next restart: the delay due (`initial` at
    /// first), or `initial` again after a run of at least `reset_after`;
    /// the delay due then doubles, up to `max`. `ran` is how long the last
    /// run lasted, `None` when the app could not even start (a failed start
    /// keeps the delay growing: retrying a broken command in a tight loop
    /// would be worse than the crash it supervises).
    pub fn next(&mut self, policy: &config::Backoff, ran: Option<Duration>) -> Duration {
        if ran.is_some_and(|ran| ran >= policy.reset_after.0) {
            self.next = policy.initial.0;
        }
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(policy.max.0);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> config::Backoff {
        config::Backoff {
            initial: config::Duration(ms(100)),
            max: config::Duration(ms(1000)),
            reset_after: config::Duration(ms(60_000)),
        }
    }

    #[test]
    fn backoff_doubles_up_to_max() {
        let mut backoff = Backoff::new(&policy());
        let delays: Vec<u128> = (0..6)
            .map(|_| backoff.next(&policy(), Some(ms(10))).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn backoff_resets_after_a_long_run() {
        let mut backoff = Backoff::new(&policy());
        for _ in 0..4 {
            backoff.next(&policy(), Some(ms(10)));
        }
        assert_eq!(backoff.next(&policy(), Some(ms(60_000))), ms(100));
        assert_eq!(backoff.next(&policy(), Some(ms(59_999))), ms(200));
    }

    #[test]
    fn backoff_after_a_failed_start_keeps_growing() {
        let mut backoff = Backoff::new(&policy());
        backoff.next(&policy(), Some(ms(10)));
        assert_eq!(backoff.next(&policy(), None), ms(200));
        assert_eq!(backoff.next(&policy(), None), ms(400));
    }

    #[test]
    fn backoff_never_overflows() {
        let huge = config::Backoff {
            initial: config::Duration(Duration::MAX),
            max: config::Duration(Duration::MAX),
            reset_after: config::Duration(Duration::MAX),
        };
        let mut backoff = Backoff::new(&huge);
        assert_eq!(backoff.next(&huge, None), Duration::MAX);
        assert_eq!(
            backoff,
            Backoff {
                next: Duration::MAX
            }
        );
    }
}

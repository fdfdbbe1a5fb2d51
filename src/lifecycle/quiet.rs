//! The `wait_quiet` step (SPEC section 6): ends a drain once the app's
//! traffic on a local port has actually stopped.
//!
//! This module owns the rule ([`Tracker`]) and the polling loop; the
//! step's settings ([`WaitQuiet`]) are config's: the step succeeds once, for `quiet` in a row, no new
//! connection was established on the port, no connection received data,
//! and no connection has a request still waiting for its answer (data
//! received after the last data sent). It looks at the socket table every
//! [`POLL_INTERVAL`] through the one `sock_diag` reader ([`crate::lifecycle::netstat`]);
//! the kernel's `tcp_info` says how long ago each connection last received
//! and sent data, so a keep-alive connection that stays open but idle is
//! quiet, and a slow request in flight is not.
//!
//! Between two looks a connection can open and close unseen. What is left of
//! it still counts: a TIME_WAIT socket (the app closed first) or any socket
//! not seen before is a new connection, and a connection that vanished since
//! the last look counts as activity (it may have received a last request
//! before it closed). A connection opened and closed by the client within
//! one interval, leaving no TIME_WAIT on the pod's side, is missed; any
//! traffic steadier than that is seen.

use std::collections::HashMap;
use std::time::Duration as StdDuration;

use tokio::time::Instant;

use crate::config::steps::WaitQuiet;
use crate::lifecycle::netstat::{Conn, TcpInfo, ESTABLISHED, STATES_CONNECTIONS, TIME_WAIT};

/// How often the step looks at the socket table.
pub const POLL_INTERVAL: StdDuration = StdDuration::from_millis(100);

/// What the tracker remembers of a connection between two looks.
#[derive(Debug, Clone, Copy)]
struct Known {
    state: u8,
    awaiting: bool,
    bytes_received: Option<u64>,
}

/// Whether a request waits for its answer on a connection. Data received
/// after the last data sent says so; when both fall in the same tick of
/// the kernel's clock (1 to 4 ms: a client that connects and sends at
/// once, a fast answer), the byte counters decide: nothing of ours ever
/// delivered (`bytes_acked` 0) while something came in, or data that came
/// in since the last look (`before`; `None` for a connection new since
/// then, `first` at the step's first look, when there is no "since"), count
/// as waiting. Later looks at an unchanged tie count it answered: an idle
/// keep-alive connection whose last request was answered within the tick
/// must not hold the step.
fn awaits_answer(info: &TcpInfo, before: Option<Known>, first: bool) -> bool {
    if info.awaits_answer() {
        return true;
    }
    if info.last_data_recv_ms != info.last_data_sent_ms || info.bytes_received == Some(0) {
        return false;
    }
    let nothing_delivered = info.bytes_acked == Some(0);
    let new_data = match before {
        None => !first,
        Some(k) => info.bytes_received.is_none() || k.bytes_received != info.bytes_received,
    };
    nothing_delivered || new_data
}

/// The quiet rule over successive looks at the socket table.
#[derive(Debug)]
pub struct Tracker {
    quiet: StdDuration,
    min: StdDuration,
    started: Instant,
    /// The latest activity seen; the step's start until something is.
    last_activity: Instant,
    last_cause: &'static str,
    known: HashMap<u64, Known>,
    looked: bool,
    /// Distinct connections seen since the start.
    seen: u64,
    /// From the latest look.
    open: usize,
    awaiting: usize,
}

impl Tracker {
    pub fn new(w: &WaitQuiet, started: Instant) -> Tracker {
        Tracker {
            quiet: w.quiet.0,
            min: w.min.0,
            started,
            last_activity: started,
            last_cause: "",
            known: HashMap::new(),
            looked: false,
            seen: 0,
            open: 0,
            awaiting: 0,
        }
    }

    fn activity(&mut self, at: Instant, cause: &'static str) {
        if at >= self.last_activity {
            self.last_activity = at;
            self.last_cause = cause;
        }
    }

    /// Takes in one look at the port's sockets, made at `now` (ignored
    /// peers already left out).
    pub fn observe(&mut self, now: Instant, conns: &[Conn]) {
        let mut known = HashMap::with_capacity(conns.len());
        self.open = 0;
        self.awaiting = 0;
        for c in conns {
            let before = self.known.get(&c.cookie).copied();
            if before.is_none() {
                self.seen += 1;
                // Not there at the last look: it connected since. At the
                // first look it may be old; its tcp_info says.
                if self.looked {
                    self.activity(now, "new connection");
                }
            }
            let mut awaiting = false;
            if let Some(info) = c.info {
                if c.state == ESTABLISHED {
                    self.open += 1;
                }
                if let Some(at) =
                    now.checked_sub(StdDuration::from_millis(info.last_data_recv_ms.into()))
                {
                    self.activity(at, "data received");
                }
                awaiting = awaits_answer(&info, before, !self.looked);
                if awaiting {
                    self.awaiting += 1;
                    self.activity(now, "request waiting for its answer");
                } else if before.is_some_and(|b| b.awaiting) {
                    if let Some(at) =
                        now.checked_sub(StdDuration::from_millis(info.last_data_sent_ms.into()))
                    {
                        self.activity(at, "answer sent");
                    }
                }
            }
            known.insert(
                c.cookie,
                Known {
                    state: c.state,
                    awaiting,
                    bytes_received: c.info.and_then(|i| i.bytes_received),
                },
            );
        }
        // A connection gone since the last look may have received a last
        // request before it closed; one that was already TIME_WAIT did not.
        let closed = self
            .known
            .iter()
            .any(|(cookie, k)| k.state != TIME_WAIT && !known.contains_key(cookie));
        if closed {
            self.activity(now, "connection closed");
        }
        self.known = known;
        self.looked = true;
    }

    /// The rule: nothing waiting, `quiet` since the last activity, `min`
    /// since the start.
    pub fn is_quiet(&self, now: Instant) -> bool {
        self.looked
            && self.awaiting == 0
            && now.saturating_duration_since(self.last_activity) >= self.quiet
            && now.saturating_duration_since(self.started) >= self.min
    }

    /// What the step saw, for its detail: `2 connections open, 0 waiting
    /// for an answer, 14 seen; last activity (data received) 1.004s ago,
    /// 3.210s into the step`.
    pub fn summary(&self, now: Instant) -> String {
        let last = if self.last_cause.is_empty() {
            "no activity since the start".to_string()
        } else {
            format!(
                "last activity ({}) {:.3}s ago",
                self.last_cause,
                now.saturating_duration_since(self.last_activity)
                    .as_secs_f64()
            )
        };
        format!(
            "{} connections open, {} waiting for an answer, {} seen; {last}, {:.3}s into the step",
            self.open,
            self.awaiting,
            self.seen,
            now.saturating_duration_since(self.started).as_secs_f64()
        )
    }
}

/// Runs the step: looks every [`POLL_INTERVAL`] until the port is quiet.
/// Only the step's timeout (or the list's budget) ends it otherwise. A look
/// that fails counts as not quiet, and says why.
pub async fn wait_quiet(w: &WaitQuiet, seen: &mut String) -> bool {
    let mut tracker = Tracker::new(w, Instant::now());
    loop {
        let now = Instant::now();
        match crate::lifecycle::netstat::connections(w.port, STATES_CONNECTIONS, true).await {
            Ok(mut conns) => {
                conns.retain(|c| !w.ignores(c.peer));
                tracker.observe(now, &conns);
                *seen = format!("quiet for {}: {}", w.quiet, tracker.summary(now));
                if tracker.is_quiet(now) {
                    return true;
                }
            }
            Err(e) => *seen = format!("reading the socket table (sock_diag): {e}"),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration;
    use std::net::{IpAddr, Ipv4Addr};

    fn ms(n: u64) -> StdDuration {
        StdDuration::from_millis(n)
    }

    fn cfg(quiet_ms: u64, min_ms: u64) -> WaitQuiet {
        WaitQuiet {
            port: 8080,
            quiet: Duration(ms(quiet_ms)),
            min: Duration(ms(min_ms)),
            ignore: Vec::new(),
        }
    }

    fn conn(cookie: u64, state: u8, recv_ago: u32, sent_ago: u32, bytes: u64) -> Conn {
        Conn {
            state,
            local_port: 8080,
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            peer_port: 40000,
            cookie,
            info: (state != TIME_WAIT).then_some(TcpInfo {
                last_data_sent_ms: sent_ago,
                last_data_recv_ms: recv_ago,
                // Answers as long as the requests: none waits on a tie.
                bytes_acked: Some(bytes),
                bytes_received: Some(bytes),
            }),
        }
    }

    #[test]
    fn nothing_at_all_is_quiet_after_quiet() {
        let t0 = Instant::now();
        let mut t = Tracker::new(&cfg(1000, 0), t0);
        assert!(!t.is_quiet(t0), "not before a look");
        t.observe(t0, &[]);
        assert!(!t.is_quiet(t0 + ms(999)));
        t.observe(t0 + ms(1000), &[]);
        assert!(t.is_quiet(t0 + ms(1000)));
        assert!(t
            .summary(t0 + ms(1000))
            .contains("no activity since the start"));
    }

    #[test]
    fn an_idle_keepalive_connection_is_quiet_and_data_restarts_the_clock() {
        let t0 = Instant::now();
        let mut t = Tracker::new(&cfg(1000, 0), t0);
        // Open since long before the step, idle: the clock starts at the
        // step's start, not before.
        t.observe(t0, &[conn(1, ESTABLISHED, 5000, 5000, 100)]);
        assert!(!t.is_quiet(t0 + ms(900)));
        // A request at t0+500 answered a millisecond later.
        t.observe(t0 + ms(600), &[conn(1, ESTABLISHED, 100, 99, 200)]);
        t.observe(t0 + ms(1400), &[conn(1, ESTABLISHED, 900, 899, 200)]);
        assert!(!t.is_quiet(t0 + ms(1400)));
        t.observe(t0 + ms(1500), &[conn(1, ESTABLISHED, 1000, 999, 200)]);
        assert!(t.is_quiet(t0 + ms(1500)));
        let s = t.summary(t0 + ms(1500));
        assert!(s.starts_with("1 connections open, 0 waiting for an answer, 1 seen; last activity (data received) 1.000s ago"), "{s}");
    }

    #[test]
    fn a_request_in_flight_holds_it_until_answered() {
        let t0 = Instant::now();
        let mut t = Tracker::new(&cfg(1000, 0), t0);
        // Received 3 s ago, nothing sent since.
        t.observe(t0, &[conn(1, ESTABLISHED, 3000, 3100, 100)]);
        t.observe(t0 + ms(2000), &[conn(1, ESTABLISHED, 5000, 5100, 100)]);
        assert!(!t.is_quiet(t0 + ms(2000)));
        assert!(t.summary(t0 + ms(2000)).contains("1 waiting for an answer"));
        // Answered at t0+2050.
        t.observe(t0 + ms(2100), &[conn(1, ESTABLISHED, 5100, 50, 100)]);
        assert!(!t.is_quiet(t0 + ms(2100)));
        t.observe(t0 + ms(3000), &[conn(1, ESTABLISHED, 6000, 950, 100)]);
        assert!(!t.is_quiet(t0 + ms(3000)));
        t.observe(t0 + ms(3050), &[conn(1, ESTABLISHED, 6050, 1000, 100)]);
        assert!(t.is_quiet(t0 + ms(3050)));
        assert!(t.summary(t0 + ms(3050)).contains("(answer sent)"));
    }

    #[test]
    fn new_closed_and_time_wait_connections_are_activity() {
        let t0 = Instant::now();
        let mut t = Tracker::new(&cfg(1000, 0), t0);
        t.observe(t0, &[conn(1, ESTABLISHED, 9000, 9000, 10)]);
        // A connection came and went between looks, leaving TIME_WAIT.
        t.observe(
            t0 + ms(800),
            &[
                conn(1, ESTABLISHED, 9800, 9800, 10),
                conn(2, TIME_WAIT, 0, 0, 0),
            ],
        );
        t.observe(
            t0 + ms(1700),
            &[
                conn(1, ESTABLISHED, 10700, 10700, 10),
                conn(2, TIME_WAIT, 0, 0, 0),
            ],
        );
        assert!(!t.is_quiet(t0 + ms(1700)));
        t.observe(
            t0 + ms(1800),
            &[
                conn(1, ESTABLISHED, 10800, 10800, 10),
                conn(2, TIME_WAIT, 0, 0, 0),
            ],
        );
        assert!(t.is_quiet(t0 + ms(1800)));
        // The TIME_WAIT expiring is not activity; connection 1 closing is.
        t.observe(t0 + ms(1900), &[conn(1, ESTABLISHED, 10900, 10900, 10)]);
        assert!(t.is_quiet(t0 + ms(1900)));
        t.observe(t0 + ms(2000), &[]);
        assert!(!t.is_quiet(t0 + ms(2000)));
        assert!(t.summary(t0 + ms(2000)).contains("(connection closed)"));
        // A new established connection with no data yet.
        t.observe(t0 + ms(3000), &[conn(3, ESTABLISHED, 0, 0, 0)]);
        assert!(!t.is_quiet(t0 + ms(3000)));
        assert_eq!(t.seen, 3);
    }

    #[test]
    fn a_tie_of_the_kernel_clock_is_decided_by_the_byte_counters() {
        let info = |bytes: u64, acked: u64| TcpInfo {
            last_data_sent_ms: 40,
            last_data_recv_ms: 40,
            bytes_acked: Some(acked),
            bytes_received: Some(bytes),
        };
        let known = |bytes: u64| Known {
            state: ESTABLISHED,
            awaiting: false,
            bytes_received: Some(bytes),
        };
        // Connected and sent at once: nothing answered yet.
        assert!(awaits_answer(&info(100, 0), None, false));
        assert!(awaits_answer(&info(100, 0), Some(known(100)), false));
        // A new request since the last look, in the tick of an answer.
        assert!(awaits_answer(&info(200, 50), Some(known(100)), false));
        // Unchanged since the last look: answered within the tick, idle.
        assert!(!awaits_answer(&info(200, 50), Some(known(200)), false));
        // New since the last look, or already there at the first.
        assert!(awaits_answer(&info(200, 50), None, false));
        assert!(!awaits_answer(&info(200, 50), None, true));
        assert!(awaits_answer(&info(200, 0), None, true));
        // Nothing received at all.
        assert!(!awaits_answer(&info(0, 0), None, false));
    }

    #[test]
    fn min_holds_it() {
        let t0 = Instant::now();
        let mut t = Tracker::new(&cfg(100, 2000), t0);
        t.observe(t0 + ms(1000), &[]);
        assert!(!t.is_quiet(t0 + ms(1000)));
        t.observe(t0 + ms(2000), &[]);
        assert!(t.is_quiet(t0 + ms(2000)));
    }
}

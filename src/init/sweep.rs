//! The orphan sweep (SPEC 2): what is left of the process tree after the
//! app, signalled and reaped before drainit exits or restarts the app.
//!
//! This module owns which processes a round signals and when the next
//! round is due, as tini's `-g`/subreaper cleanup and dumb-init's group
//! kill do, planned from a /proc scan by pure functions ([`plan_round`])
//! so the tree logic is tested without processes. It never reaps: the
//! reaper's passes tell the caller when nothing is left.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::unistd::getpid;

/// The cleanup of what the app left behind, at exit and before each
/// restart (SPEC 2): SIGTERM to every remaining process, SIGKILL after
/// `orphan_grace`, over when no child is left (or 1s after the SIGKILL).
/// It advances on reaping passes and deadlines, so the main loop keeps
/// answering signals and requests meanwhile.
///
/// At exit as PID 1 each round is one `kill(-1)`. Otherwise — not PID 1,
/// or before a restart, which must spare what is not the app's (a `kubectl
/// exec` shell) — a round signals the app's group and every process below
/// drainit, from /proc, and is repeated for newcomers after each reaping
/// pass (a dead child's children are ours now) and every [`SWEEP_RESCAN`]
/// until the round ends, so processes reparented after the first signal
/// are not missed.
#[derive(Debug)]
pub struct Sweep {
    /// The signal of the current round; 0 until the first reaping pass
    /// after the app's exit says whether anything is left at all.
    pub sig: i32,
    /// When the current round is over.
    pub until: Instant,
    /// Signal the tree below drainit, not `kill(-1)`.
    pub tree: bool,
    /// Tree: when to look for newcomers next.
    rescan_at: Option<Instant>,
    /// Tree: the processes sent `sig` already, by (pid, start time), so a
    /// rescan signals newcomers only.
    signalled: HashSet<(i32, u64)>,
    /// Tree: whether the app's group got `sig` already.
    group_signalled: bool,
}

/// How often a tree sweep looks for newly reparented processes.
pub const SWEEP_RESCAN: Duration = Duration::from_millis(100);

impl Sweep {
    pub fn pending(tree: bool) -> Sweep {
        Sweep {
            sig: 0,
            until: Instant::now(),
            tree,
            rescan_at: None,
            signalled: HashSet::new(),
            group_signalled: false,
        }
    }

    /// When the sweep needs the loop's attention, if it started.
    pub fn wake(&self) -> Option<Instant> {
        (self.sig != 0).then(|| self.rescan_at.map_or(self.until, |r| r.min(self.until)))
    }

    /// Starts a round: `sig` to everything left, over at `until`. At exit
    /// as PID 1 that is one `kill(-1)`; otherwise the tree below drainit
    /// and the app's group `group` (see [`Sweep::signal_newcomers`]).
    pub fn start_round(&mut self, sig: i32, until: Instant, group: Option<i32>) {
        self.sig = sig;
        self.until = until;
        self.signalled.clear();
        self.group_signalled = false;
        if !self.tree {
            // SAFETY: kill(2) with plain integers. As PID 1, -1 means every
            // process in our namespace but ourselves; it also reaches those
            // that left the app's group with setsid.
            unsafe { libc::kill(-1, sig) };
        } else {
            self.signal_newcomers(group);
        }
    }

    /// A tree round (`kill(-1)` would reach more than the app's tree):
    /// sends the round's signal to every process below drainit that has not
    /// had it, and to the app's group `group` while it has a member there
    /// (never to a group with no member left: its number may be a new
    /// process's).
    pub fn signal_newcomers(&mut self, group: Option<i32>) {
        let group = group.filter(|_| !self.group_signalled);
        let round = plan_round(&scan_procs(), getpid().as_raw(), group, &self.signalled);
        if let Some(pgid) = round.group {
            // SAFETY: kill(2) with plain integers.
            unsafe { libc::kill(-pgid, self.sig) };
            self.group_signalled = true;
        }
        for p in &round.each {
            // SAFETY: as above.
            unsafe { libc::kill(p.pid, self.sig) };
        }
        self.signalled
            .extend(round.fresh.iter().map(|p| (p.pid, p.start)));
        self.rescan_at = Some(Instant::now() + SWEEP_RESCAN);
    }
}

/// One process, as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    /// Start time (clock ticks after boot): with the pid, names one process
    /// even when its pid is reused.
    start: u64,
}

/// Parses `/proc/PID/stat`; the command name may hold spaces and `)`.
fn parse_stat(stat: &str) -> Option<Proc> {
    let (head, rest) = stat.rsplit_once(')')?;
    let pid = head.split_whitespace().next()?.parse().ok()?;
    // After the ")": field 3 (state), 4 (ppid), 5 (pgrp) ... 22 (starttime).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Proc {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Every process visible in /proc (those that vanish meanwhile are left out).
fn scan_procs() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?))
        .collect()
}

/// What one subreaper sweep round signals.
#[derive(Debug, PartialEq, Eq)]
struct Round {
    /// The app's group, when it still has a member below drainit.
    group: Option<i32>,
    /// The processes below drainit not signalled yet in this round.
    fresh: Vec<Proc>,
    /// Those of `fresh` the group signal does not reach: signalled one by one.
    each: Vec<Proc>,
}

/// Plans a round from one /proc scan: the processes below `root` not in
/// `signalled`, and `group` (the app's group, if it is still to be
/// signalled) only when a process below `root` is in it.
fn plan_round(
    procs: &[Proc],
    root: i32,
    group: Option<i32>,
    signalled: &HashSet<(i32, u64)>,
) -> Round {
    let below = descendants(procs, root);
    let group = group.filter(|&g| below.iter().any(|p| p.pgrp == g));
    let fresh: Vec<Proc> = below
        .into_iter()
        .filter(|p| !signalled.contains(&(p.pid, p.start)))
        .collect();
    let each = fresh
        .iter()
        .copied()
        .filter(|p| Some(p.pgrp) != group)
        .collect();
    Round { group, fresh, each }
}

/// The processes below `root` in the tree the ppids make (a snapshot read
/// piece by piece may hold a loop after pid reuse: each pid counts once).
fn descendants(procs: &[Proc], root: i32) -> Vec<Proc> {
    let mut seen = HashSet::from([root]);
    let mut out = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for p in procs.iter().filter(|p| p.ppid == parent) {
            if seen.insert(p.pid) {
                out.push(*p);
                parents.push(p.pid);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: i32, ppid: i32, pgrp: i32) -> Proc {
        Proc {
            pid,
            ppid,
            pgrp,
            start: 1000 + pid as u64,
        }
    }

    #[test]
    fn parse_stat_reads_the_fields_after_the_command_name() {
        let stat = "4242 (a b) c) S 7 4240 4240 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1 2 3";
        assert_eq!(
            parse_stat(stat),
            Some(Proc {
                pid: 4242,
                ppid: 7,
                pgrp: 4240,
                start: 98765
            })
        );
        assert_eq!(parse_stat("12 (x) S 1"), None, "truncated");
    }

    #[test]
    fn a_round_reaches_grandchildren_not_strangers() {
        // 10 is drainit; 11 its child, 12 and 13 below it; 20 is not ours.
        let procs = [
            proc(11, 10, 11),
            proc(12, 11, 12),
            proc(13, 12, 12),
            proc(20, 1, 20),
        ];
        let round = plan_round(&procs, 10, None, &HashSet::new());
        let pids: Vec<i32> = round.each.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [11, 12, 13]);
    }

    #[test]
    fn a_rescan_signals_newcomers_only() {
        let procs = [proc(11, 10, 11), proc(12, 10, 12)];
        let signalled = HashSet::from([(11, 1011)]);
        let round = plan_round(&procs, 10, None, &signalled);
        assert_eq!(round.fresh, [proc(12, 10, 12)]);
        // The same pid with another start time is another process.
        let reused = HashSet::from([(11, 7)]);
        assert_eq!(plan_round(&procs, 10, None, &reused).fresh.len(), 2);
    }

    #[test]
    fn the_group_is_signalled_only_while_a_member_is_ours() {
        // The app (pid 11) is gone; its old group number 11 now belongs to
        // a stranger that reused the pid: never signal it.
        let procs = [proc(12, 10, 12), proc(11, 1, 11)];
        let round = plan_round(&procs, 10, Some(11), &HashSet::new());
        assert_eq!(round.group, None);
        assert_eq!(round.each, [proc(12, 10, 12)]);
        // A member of the app's group is still ours: one kill(-11) covers
        // it, and it is not signalled twice.
        let procs = [proc(12, 10, 11), proc(13, 12, 13)];
        let round = plan_round(&procs, 10, Some(11), &HashSet::new());
        assert_eq!(round.group, Some(11));
        assert_eq!(round.each, [proc(13, 12, 13)]);
        assert_eq!(round.fresh.len(), 2);
    }

    #[test]
    fn a_ppid_loop_from_a_torn_snapshot_ends() {
        let procs = [proc(11, 10, 11), proc(12, 11, 12), proc(11, 12, 11)];
        assert_eq!(descendants(&procs, 10).len(), 2);
    }
}

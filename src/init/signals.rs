//! Signal names and numbers, the rewrite table, and the set of signals
//! drainit catches.
//!
//! This module owns how a signal is *named* (`"TERM"`, `"SIGTERM"`, `"15"`,
//! `"RTMIN+3"`) and how drainit *receives* signals: it blocks every catchable
//! signal and reads them from a `signalfd` (as tini waits with
//! `sigtimedwait` and catatonit reads a signalfd), so a signal costs one
//! `read`, with no handler frame and no self-pipe. Blocked signals are queued
//! even for PID 1, whose default-action signals the kernel would otherwise
//! drop. It never sends a signal and never decides what a signal means for
//! the shutdown sequence: that is [`crate::init::forward`] and the
//! lifecycle's shutdown machine.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A signal number that is known to exist on this system (1..=SIGRTMAX).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Signal(i32);

/// Classic signal names, in the order of their numbers on Linux.
const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Aliases accepted on input, never printed.
const ALIASES: &[(&str, i32)] = &[
    ("IOT", libc::SIGABRT),
    ("POLL", libc::SIGIO),
    ("CLD", libc::SIGCHLD),
];

/// Error for a string or number that names no signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal {0:?}: expected a name like \"TERM\" or \"SIGUSR1\", \"RTMIN+2\", or a number 1..={max}", max = sigrtmax())]
pub struct UnknownSignal(pub String);

/// The first real-time signal usable by applications (glibc reserves two).
pub fn sigrtmin() -> i32 {
    libc::SIGRTMIN()
}

/// The last real-time signal.
pub fn sigrtmax() -> i32 {
    libc::SIGRTMAX()
}

impl Signal {
    pub const HUP: Signal = Signal(libc::SIGHUP);
    pub const INT: Signal = Signal(libc::SIGINT);
    pub const QUIT: Signal = Signal(libc::SIGQUIT);
    pub const KILL: Signal = Signal(libc::SIGKILL);
    pub const TERM: Signal = Signal(libc::SIGTERM);
    pub const CHLD: Signal = Signal(libc::SIGCHLD);
    pub const STOP: Signal = Signal(libc::SIGSTOP);
    pub const TTIN: Signal = Signal(libc::SIGTTIN);
    pub const TTOU: Signal = Signal(libc::SIGTTOU);
    pub const PIPE: Signal = Signal(libc::SIGPIPE);

    /// Checks that `n` is a signal number on this system.
    pub fn from_number(n: i32) -> Result<Signal, UnknownSignal> {
        if (1..=sigrtmax()).contains(&n) {
            Ok(Signal(n))
        } else {
            Err(UnknownSignal(n.to_string()))
        }
    }

    /// Whether drainit receives this signal at all (see [`caught`]).
    pub fn received(self) -> bool {
        caught().contains(&self.0)
    }

    /// The raw number, for `kill(2)`.
    pub fn number(self) -> i32 {
        self.0
    }

    /// The conventional name without `SIG` (`TERM`, `RTMIN+3`), or the number
    /// for the two glibc-reserved real-time slots.
    pub fn name(self) -> String {
        if let Some((name, _)) = NAMES.iter().find(|(_, n)| *n == self.0) {
            return (*name).to_string();
        }
        let (min, max) = (sigrtmin(), sigrtmax());
        if self.0 == min {
            "RTMIN".to_string()
        } else if self.0 == max {
            "RTMAX".to_string()
        } else if self.0 > min && self.0 < max {
            format!("RTMIN+{}", self.0 - min)
        } else {
            self.0.to_string()
        }
    }

    /// Whether drainit can receive this signal to act on it: all but KILL
    /// and STOP, which never reach a process. ILL, FPE, SEGV and BUS are
    /// received too, as dumb-init forwards them: one sent with kill(2) is
    /// queued on the signalfd and forwarded, while a real fault of drainit
    /// itself still kills it, because the kernel unblocks a blocked fault
    /// signal and resets it to the default action before delivering it
    /// (`force_sig_info_to_task` in kernel/signal.c).
    pub fn catchable(self) -> bool {
        ![libc::SIGKILL, libc::SIGSTOP].contains(&self.0)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

impl std::str::FromStr for Signal {
    type Err = UnknownSignal;

    /// Parses `TERM`, `SIGTERM`, `sigterm`, `15`, `RTMIN`, `RTMIN+2`,
    /// `RTMAX-1`, `SIGRTMIN+2`.
    fn from_str(s: &str) -> Result<Signal, UnknownSignal> {
        let err = || UnknownSignal(s.to_string());
        let trimmed = s.trim();
        if let Ok(n) = trimmed.parse::<i32>() {
            return Signal::from_number(n).map_err(|_| err());
        }
        let upper = trimmed.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        // `SIG32`: how Display shows the glibc-reserved slots, which have no
        // name; it must read back.
        if let Ok(n) = bare.parse::<i32>() {
            return Signal::from_number(n).map_err(|_| err());
        }
        if let Some((_, n)) = NAMES.iter().chain(ALIASES).find(|(name, _)| *name == bare) {
            return Ok(Signal(*n));
        }
        let (min, max) = (sigrtmin(), sigrtmax());
        let rt = |base: i32, rest: &str, sign: i32| -> Result<Signal, UnknownSignal> {
            // Digits only (no second sign), and checked: the offset is
            // user input, `RTMIN+2147483647` must be an error, not overflow.
            if !rest.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            let offset: i32 = if rest.is_empty() {
                0
            } else {
                rest.parse().map_err(|_| err())?
            };
            match base.checked_add(sign * offset) {
                Some(n) if (min..=max).contains(&n) => Ok(Signal(n)),
                _ => Err(err()),
            }
        };
        if let Some(rest) = bare.strip_prefix("RTMIN") {
            return match rest.strip_prefix('+') {
                Some(off) => rt(min, off, 1),
                None if rest.is_empty() => rt(min, "", 1),
                None => Err(err()),
            };
        }
        if let Some(rest) = bare.strip_prefix("RTMAX") {
            return match rest.strip_prefix('-') {
                Some(off) => rt(max, off, -1),
                None if rest.is_empty() => rt(max, "", 1),
                None => Err(err()),
            };
        }
        Err(err())
    }
}

impl<'de> Deserialize<'de> for Signal {
    /// Accepts a string (`"TERM"`, `"SIGTERM"`, `"15"`) or an integer.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(i64),
            Str(String),
        }
        let parsed = match Raw::deserialize(d)? {
            Raw::Num(n) => i32::try_from(n)
                .map_err(|_| UnknownSignal(n.to_string()))
                .and_then(Signal::from_number),
            Raw::Str(s) => s.parse(),
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// Parses a `-r FROM:TO` command-line rewrite (`TERM:QUIT`, `15:3`); a TO
/// of `0` (`2:0`, as with dumb-init) is `None`: drop FROM.
pub fn parse_rewrite(spec: &str) -> Result<(Signal, Option<Signal>), String> {
    let (from, to) = spec.split_once(':').ok_or_else(|| {
        format!("invalid rewrite {spec:?}: expected FROM:TO, like TERM:QUIT, 15:3, or 2:0 to drop")
    })?;
    let from: Signal = from
        .parse()
        .map_err(|e: UnknownSignal| format!("invalid rewrite {spec:?}: {e}"))?;
    let to = parse_rewrite_target(to)
        .map_err(|e: UnknownSignal| format!("invalid rewrite {spec:?}: {e}, or 0 to drop"))?;
    Ok((from, to))
}

/// The TO of a rewrite: a signal, or `None` for `0` (drop the signal).
pub fn parse_rewrite_target(s: &str) -> Result<Option<Signal>, UnknownSignal> {
    if s.trim() == "0" {
        Ok(None)
    } else {
        s.parse().map(Some)
    }
}

/// Maps a received signal to the one to forward (`signals.rewrite`).
pub fn rewrite(table: &BTreeMap<Signal, Signal>, sig: Signal) -> Signal {
    table.get(&sig).copied().unwrap_or(sig)
}

/// Every signal drainit receives (and so forwards): all catchable signals,
/// real-time ones included, SIGTSTP/SIGTTIN/SIGTTOU and SIGPIPE too.
/// SIGTTIN/SIGTTOU/SIGPIPE are blocked *and* left at `SIG_IGN` (see
/// [`OWN_IGNORES`]). The terminal treats a blocked or ignored SIGTTOU alike
/// (`is_ignored()` in drivers/tty/tty_jobctrl.c), so drainit's own
/// background log writes go through instead of stopping it; a SIGPIPE the
/// kernel raises for drainit's own write to a closed pipe is queued, not
/// acted on (the write fails with EPIPE), and [`Receiver`] drops it; and
/// the same signals sent with kill(2) are still queued (blocked signals are
/// never discarded) and forwarded.
pub fn caught() -> Vec<i32> {
    // 32 and 33 belong to glibc's threading (sigaction refuses them).
    (1..libc::SIGRTMIN().min(32))
        .chain(sigrtmin()..=sigrtmax())
        .filter(|&n| Signal(n).catchable())
        .collect()
}

/// Signals drainit keeps at `SIG_IGN` for itself while it also receives
/// them (blocked, from the signalfd): SIGTTIN/SIGTTOU so that a terminal
/// write or `tcsetpgrp` never stops it, SIGPIPE so that a write to a closed
/// pipe is an EPIPE error and never the death of PID 1, even in a thread
/// that did not block it. The child gets the default back before `exec`.
pub const OWN_IGNORES: [i32; 3] = [libc::SIGTTIN, libc::SIGTTOU, libc::SIGPIPE];

#[cfg(test)]
mod received_tests {
    use super::*;

    #[test]
    fn glibc_reserved_signals_are_not_received() {
        for n in [32, 33] {
            assert!(!Signal(n).received(), "{n}");
        }
        assert!(Signal(libc::SIGTERM).received());
        assert!(Signal(sigrtmin()).received());
    }
}

/// The mask of ignored signals (`SigIgn:` in /proc/self/status; bit n-1
/// is signal n). Unreadable means none: nothing is reset then.
fn inherited_ignores() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("SigIgn:"))?;
            u64::from_str_radix(line["SigIgn:".len()..].trim(), 16).ok()
        })
        .unwrap_or(0)
}

/// Receives drainit's signals from a non-blocking `signalfd`.
pub struct Receiver {
    fd: OwnedFd,
    /// drainit's own pid, to tell its own SIGPIPEs (see [`own_pipe`]).
    pid: u32,
    /// Whether an own SIGPIPE was logged already (once at most: when the
    /// closed pipe is stderr, the log line raises the next one).
    own_pipe_logged: bool,
}

/// Whether `info` is a SIGPIPE the kernel raised for a write of drainit's
/// own (to a closed stdout, stderr or socket). The kernel sends it as
/// `send_sig(SIGPIPE, current, 0)`: `SI_USER`, like kill(2), with the
/// *writer's* pid as the sender, where a kill(2) from another process
/// carries that process's pid (or 0 from outside drainit's PID namespace).
/// So only the pid tells them apart (checked on Linux 6.18: a pipe write
/// and a socket send both give `si_code` 0 and the writer's own pid).
fn own_pipe(info: &libc::signalfd_siginfo, pid: u32) -> bool {
    info.ssi_signo == libc::SIGPIPE as u32 && info.ssi_pid == pid
}

/// How many signals one `read` of the signalfd takes at most.
const BATCH: usize = 16;

impl Receiver {
    /// Blocks every [`caught`] signal in the calling thread and opens the
    /// signalfd. Call it before any other thread exists (threads inherit the
    /// mask) and before the app is spawned, so no signal can be lost; the
    /// child gets an empty mask back in `child::spawn`. Signals that were
    /// ignored when drainit started (`nohup`, a careless parent) get their
    /// default action back, so the app does not inherit `SIG_IGN`.
    pub fn new() -> io::Result<Receiver> {
        // SAFETY: plain libc calls on a sigset_t we own; the fd returned by
        // signalfd is checked and then owned by OwnedFd.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            for n in caught() {
                libc::sigaddset(&mut mask, n);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            // One read of SigIgn instead of a sigaction query per signal.
            let ignored = inherited_ignores();
            for n in caught() {
                if !OWN_IGNORES.contains(&n) && ignored & (1u64 << (n - 1)) != 0 {
                    libc::signal(n, libc::SIG_DFL);
                }
            }
            let fd = libc::signalfd(-1, &mask, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Receiver {
                fd: OwnedFd::from_raw_fd(fd),
                pid: std::process::id(),
                own_pipe_logged: false,
            })
        }
    }

    /// Reads every pending signal into `out`, in the order received. A
    /// SIGPIPE raised by drainit's own write is dropped here, never handed
    /// out: the app never wrote to that pipe. The fd is non-blocking: the
    /// core waits for it in `poll`, and nothing pending is no error.
    ///
    /// One `read` takes up to [`BATCH`] signals; a short read means the fd
    /// is drained, so no second, empty read follows.
    pub fn read_into(&mut self, out: &mut Vec<i32>) -> io::Result<()> {
        loop {
            let mut infos = std::mem::MaybeUninit::<[libc::signalfd_siginfo; BATCH]>::uninit();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reads at most BATCH * size bytes into `infos`, which we
            // own; no zeroing first (2 KiB per signal on the forwarding path).
            let n =
                unsafe { libc::read(self.fd.as_raw_fd(), infos.as_mut_ptr().cast(), BATCH * size) };
            if n > 0 {
                let count = n as usize / size;
                // SAFETY: the kernel wrote `count` whole records (signalfd
                // reads are multiples of the record size).
                let read = unsafe {
                    std::slice::from_raw_parts(
                        infos.as_ptr().cast::<libc::signalfd_siginfo>(),
                        count,
                    )
                };
                for info in read {
                    if own_pipe(info, self.pid) {
                        if !self.own_pipe_logged {
                            self.own_pipe_logged = true;
                            tracing::debug!("a write of drainit's own hit a closed pipe (EPIPE); its SIGPIPE is not forwarded");
                        }
                        continue;
                    }
                    out.push(info.ssi_signo as i32);
                }
                if count < BATCH {
                    return Ok(());
                }
                continue;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => return Ok(()),
                io::ErrorKind::Interrupted => {}
                _ => return Err(err),
            }
        }
    }
}

impl AsRawFd for Receiver {
    /// The signalfd, for `poll`.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_numbers_and_prefixes() {
        assert_eq!("TERM".parse(), Ok(Signal::TERM));
        assert_eq!("SIGTERM".parse(), Ok(Signal::TERM));
        assert_eq!("sigterm".parse(), Ok(Signal::TERM));
        assert_eq!("15".parse(), Ok(Signal::TERM));
        assert_eq!("QUIT".parse(), Ok(Signal::QUIT));
        assert_eq!(
            "IOT".parse::<Signal>().map(Signal::number),
            Ok(libc::SIGABRT)
        );
        assert!("NOPE".parse::<Signal>().is_err());
        assert!("0".parse::<Signal>().is_err());
        assert!("65".parse::<Signal>().is_err());
        assert!("-1".parse::<Signal>().is_err());
        assert!("".parse::<Signal>().is_err());
    }

    #[test]
    fn parses_realtime_signals() {
        let min = sigrtmin();
        let max = sigrtmax();
        assert_eq!("RTMIN".parse::<Signal>().map(Signal::number), Ok(min));
        assert_eq!(
            "SIGRTMIN+3".parse::<Signal>().map(Signal::number),
            Ok(min + 3)
        );
        assert_eq!("RTMAX".parse::<Signal>().map(Signal::number), Ok(max));
        assert_eq!("RTMAX-1".parse::<Signal>().map(Signal::number), Ok(max - 1));
        assert!("RTMIN+99".parse::<Signal>().is_err());
        assert!("RTMIN3".parse::<Signal>().is_err());
        // Regression (hostile-input tests): offsets near i32::MAX overflowed
        // `base + offset` (a panic in debug builds, a wrap in release), and a
        // second sign was accepted (`RTMAX-+1`).
        for s in [
            "RTMIN+2147483647",
            "RTMAX-2147483647",
            "RTMAX--2147483648",
            "RTMIN+-1",
            "RTMAX-+1",
            "RTMIN+99999999999",
        ] {
            assert!(s.parse::<Signal>().is_err(), "{s}");
        }
        assert_eq!(Signal(min + 2).name(), "RTMIN+2");
        assert_eq!(
            "RTMIN+2".parse::<Signal>().map(Signal::name),
            Ok("RTMIN+2".into())
        );
    }

    #[test]
    fn names_round_trip() {
        for n in 1..=sigrtmax() {
            let sig = Signal(n);
            assert_eq!(sig.name().parse(), Ok(sig), "signal {n}");
            // Regression (hostile-input tests): Display showed SIG32 and
            // SIG33, which did not parse.
            assert_eq!(sig.to_string().parse(), Ok(sig), "signal {n}");
        }
    }

    #[test]
    fn rewrite_specs() {
        assert_eq!(
            parse_rewrite("TERM:QUIT"),
            Ok((Signal::TERM, Some(Signal::QUIT)))
        );
        assert_eq!(
            parse_rewrite("15:3"),
            Ok((Signal::TERM, Some(Signal::QUIT)))
        );
        assert_eq!(
            parse_rewrite("SIGTERM:sigquit"),
            Ok((Signal::TERM, Some(Signal::QUIT)))
        );
        // dumb-init's `-r 2:0`: drop SIGINT.
        assert_eq!(parse_rewrite("2:0"), Ok((Signal::INT, None)));
        assert_eq!(parse_rewrite("WINCH:0").map(|(_, to)| to), Ok(None));
        assert!(
            parse_rewrite("0:2").is_err(),
            "there is no signal 0 to rewrite"
        );
        assert!(parse_rewrite("TERM").unwrap_err().contains("FROM:TO"));
        let err = parse_rewrite("TERM:BOGUS").unwrap_err();
        assert!(err.contains("BOGUS") && err.contains("0 to drop"), "{err}");
        let table = BTreeMap::from([(Signal::TERM, Signal::QUIT)]);
        assert_eq!(rewrite(&table, Signal::TERM), Signal::QUIT);
        assert_eq!(rewrite(&table, Signal::HUP), Signal::HUP);
    }

    #[test]
    fn caught_excludes_uncatchable_only() {
        let caught = caught();
        for n in [libc::SIGKILL, libc::SIGSTOP] {
            assert!(!caught.contains(&n), "{n} must not be caught");
        }
        for n in [libc::SIGILL, libc::SIGFPE, libc::SIGSEGV, libc::SIGBUS] {
            assert!(caught.contains(&n), "{n} is forwarded, as dumb-init does");
        }
        for n in [
            libc::SIGTERM,
            libc::SIGCHLD,
            libc::SIGWINCH,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGPIPE,
            sigrtmin(),
            sigrtmax(),
        ] {
            assert!(caught.contains(&n), "{n} must be caught");
        }
    }

    #[test]
    fn only_a_sigpipe_from_drainit_itself_is_its_own() {
        // SAFETY: an all-zero signalfd_siginfo is a valid value.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        info.ssi_signo = libc::SIGPIPE as u32;
        info.ssi_pid = 1;
        assert!(own_pipe(&info, 1), "the kernel's SIGPIPE for our write");
        info.ssi_pid = 42;
        assert!(!own_pipe(&info, 1), "kill -PIPE from pid 42");
        info.ssi_pid = 0;
        assert!(!own_pipe(&info, 1), "kill -PIPE from outside the namespace");
        info.ssi_signo = libc::SIGTERM as u32;
        info.ssi_pid = 1;
        assert!(!own_pipe(&info, 1), "only SIGPIPE is ever dropped");
    }
}

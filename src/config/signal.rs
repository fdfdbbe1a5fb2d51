//! Signal names and numbers: the [`Signal`] value type, how a signal is
//! *named* on input and output (`"TERM"`, `"SIGTERM"`, `"15"`,
//! `"RTMIN+3"`), the `signals.rewrite` table and `-r FROM:TO` syntax, and
//! which signals drainit receives at all ([`caught`]).
//!
//! Config owns names and syntax, init owns what runs: this module is pure
//! (no syscall, no signal sent or blocked). Blocking the [`caught`] set and
//! reading it from a signalfd is `init::signals`; what a signal means for
//! the app (forward, rewrite, drop, trigger) is `init::forward` and the
//! lifecycle's shutdown machine.

use std::collections::BTreeMap;
use std::fmt;

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

/// A signal as a config writes it: an integer or a string (`"TERM"`,
/// `"SIGTERM"`, `"15"`). One reading for every place that takes a signal.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Written {
    Num(i64),
    Str(String),
}

impl Written {
    pub(crate) fn signal(self) -> Result<Signal, UnknownSignal> {
        match self {
            Written::Num(n) => i32::try_from(n)
                .map_err(|_| UnknownSignal(n.to_string()))
                .and_then(Signal::from_number),
            Written::Str(s) => s.parse(),
        }
    }

    /// As a rewrite target: `0` or `"0"` drops the signal.
    pub(crate) fn rewrite_target(self) -> Result<Option<Signal>, UnknownSignal> {
        match self {
            Written::Num(0) => Ok(None),
            Written::Str(s) => parse_rewrite_target(&s),
            written => written.signal().map(Some),
        }
    }
}

impl<'de> Deserialize<'de> for Signal {
    /// Accepts a string (`"TERM"`, `"SIGTERM"`, `"15"`) or an integer.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
        Written::deserialize(d)?
            .signal()
            .map_err(serde::de::Error::custom)
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
/// real-time ones included, SIGTSTP/SIGTTIN/SIGTTOU and SIGPIPE too. The
/// signalfd receiver in `init::signals` blocks exactly these; its
/// `OWN_IGNORES` says why SIGTTIN/SIGTTOU/SIGPIPE are also left at
/// `SIG_IGN` and how drainit's own SIGPIPE is told apart.
pub fn caught() -> Vec<i32> {
    // 32 and 33 belong to glibc's threading (sigaction refuses them).
    (1..libc::SIGRTMIN().min(32))
        .chain(sigrtmin()..=sigrtmax())
        .filter(|&n| Signal(n).catchable())
        .collect()
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
    fn glibc_reserved_signals_are_not_received() {
        for n in [32, 33] {
            assert!(!Signal(n).received(), "{n}");
        }
        assert!(Signal(libc::SIGTERM).received());
        assert!(Signal(sigrtmin()).received());
    }
}

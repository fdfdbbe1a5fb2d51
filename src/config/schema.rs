//! The sections of the config file and the typed values in them
//! (durations, exit codes, signals, checks), as serde reads and `--check`
//! prints them: unknown keys are refused, values are typed at load, and
//! defaults are SPEC's. Rules across fields live in [`super::Config`]'s
//! `validate`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::expand::{
    escape_map, escape_opt, escape_os_vec, expand_map, expand_opt, expand_os_vec, expand_string,
};
use crate::config::Signal;

/// `[app]`: what to run and how.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct App {
    /// argv of the app; the command after `--` on the command line wins,
    /// and is passed on byte for byte, UTF-8 or not (as tini does).
    #[serde(deserialize_with = "expand_os_vec", serialize_with = "escape_os_vec")]
    pub command: Vec<OsString>,
    /// `"uid[:gid]"` or `"name[:group]"`, resolved from /etc/passwd and
    /// /etc/group (never NSS: the binary is static).
    #[serde(
        deserialize_with = "expand_opt",
        serialize_with = "escape_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub user: Option<String>,
    #[serde(
        deserialize_with = "expand_opt",
        serialize_with = "escape_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub workdir: Option<String>,
    /// Added to (and overriding) drainit's own environment.
    #[serde(deserialize_with = "expand_map", serialize_with = "escape_map")]
    pub env: BTreeMap<String, String>,
    pub restart: Restart,
    pub restart_backoff: Backoff,
}

impl Default for App {
    fn default() -> Self {
        App {
            command: Vec::new(),
            user: None,
            workdir: None,
            env: BTreeMap::new(),
            restart: Restart::Never,
            restart_backoff: Backoff::default(),
        }
    }
}

/// `app.restart`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    Never,
    OnFailure,
    Always,
}

/// `app.restart_backoff`: exponential back-off between restarts.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A run at least this long resets the delay to `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::secs(1),
            max: Duration::secs(300),
            reset_after: Duration::secs(600),
        }
    }
}

/// `[signals]`: forwarding, rewriting, ignoring. A rewrite to `0` (as
/// dumb-init's `-r 2:0`) is read as a drop: it lands in `ignore`, which is
/// also where `--check` prints it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(from = "SignalsFile")]
pub struct Signals {
    pub forward_to: ForwardTo,
    pub rewrite: BTreeMap<Signal, Signal>,
    pub ignore: Vec<Signal>,
}

impl Signals {
    /// Applies a rewrite of `from` to `to`, `None` meaning "drop", over
    /// whatever was set for `from` before (a command-line `-r` over the
    /// file).
    pub fn set_rewrite(&mut self, from: Signal, to: Option<Signal>) {
        match to {
            Some(to) => {
                self.ignore.retain(|s| *s != from);
                self.rewrite.insert(from, to);
            }
            None => {
                self.rewrite.remove(&from);
                if !self.ignore.contains(&from) {
                    self.ignore.push(from);
                }
            }
        }
    }
}

/// `[signals]` as written in the file: rewrite targets may be `0`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SignalsFile {
    forward_to: ForwardTo,
    rewrite: BTreeMap<Signal, RewriteTo>,
    ignore: Vec<Signal>,
}

impl Default for SignalsFile {
    fn default() -> Self {
        let d = Signals::default();
        SignalsFile {
            forward_to: d.forward_to,
            rewrite: BTreeMap::new(),
            ignore: d.ignore,
        }
    }
}

impl From<SignalsFile> for Signals {
    fn from(file: SignalsFile) -> Signals {
        let mut signals = Signals {
            forward_to: file.forward_to,
            rewrite: BTreeMap::new(),
            ignore: file.ignore,
        };
        // Within one file `ignore` wins over a rewrite of the same signal,
        // as it always did; only the command line overrides it.
        for (from, to) in file.rewrite {
            match to.0 {
                Some(to) => {
                    signals.rewrite.insert(from, to);
                }
                None if signals.ignore.contains(&from) => {}
                None => signals.ignore.push(from),
            }
        }
        signals
    }
}

/// A rewrite target: a signal, or `0` / `"0"` for "drop it".
struct RewriteTo(Option<Signal>);

impl<'de> Deserialize<'de> for RewriteTo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RewriteTo, D::Error> {
        crate::config::signal::Written::deserialize(d)?
            .rewrite_target()
            .map(RewriteTo)
            .map_err(|e| serde::de::Error::custom(format!("{e}, or 0 to drop the signal")))
    }
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            forward_to: ForwardTo::Group,
            rewrite: BTreeMap::new(),
            ignore: Vec::new(),
        }
    }
}

/// `signals.forward_to`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardTo {
    /// The app's process group: reaches children behind `sh -c`.
    Group,
    /// The app process alone.
    Child,
}

/// `[shutdown]`: the stop sequence and its budgets.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    /// Signals that start the shutdown instead of being forwarded at once.
    pub triggers: Vec<Signal>,
    /// Default: what `signals.rewrite` maps TERM to, else TERM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<Signal>,
    pub grace_period: Duration,
    pub stop_timeout: Duration,
    pub kill_margin: Duration,
    pub orphan_grace: Duration,
    pub on_exit_timeout: Duration,
    pub prestop_stops_app: bool,
    pub exit_code_map: BTreeMap<ExitCode, ExitCode>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            triggers: vec![Signal::TERM],
            stop_signal: None,
            grace_period: Duration::secs(30),
            stop_timeout: Duration::secs(10),
            kill_margin: Duration::secs(1),
            orphan_grace: Duration::secs(2),
            on_exit_timeout: Duration::secs(5),
            prestop_stops_app: false,
            exit_code_map: BTreeMap::new(),
        }
    }
}

/// `[http]`: the lifecycle server.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// `host:port`, or `"off"`.
    pub listen: Listen,
    /// Bearer token required on hook and drain endpoints.
    #[serde(
        deserialize_with = "expand_opt",
        serialize_with = "escape_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub token: Option<String>,
    /// File holding the token (a mounted Secret); read at load and reload.
    #[serde(
        deserialize_with = "expand_opt",
        serialize_with = "escape_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub token_file: Option<String>,
    /// Source CIDRs allowed on hook and drain endpoints; empty allows all.
    pub allow: Vec<ipnet::IpNet>,
    pub max_connections: usize,
    pub header_timeout: Duration,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: Listen::Addr(SocketAddr::from(([0, 0, 0, 0], 7979))),
            token: None,
            token_file: None,
            allow: Vec::new(),
            max_connections: 1024,
            header_timeout: Duration::secs(5),
        }
    }
}

impl Http {
    /// The address to bind, or `None` for `"off"`.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        match self.listen {
            Listen::Off => None,
            Listen::Addr(addr) => Some(addr),
        }
    }

    /// The token in force: `token`, else the trimmed content of
    /// `token_file`.
    pub fn resolve_token(&self) -> Result<Option<String>, String> {
        if let Some(token) = &self.token {
            return Ok(Some(token.clone()));
        }
        match &self.token_file {
            Some(path) => {
                crate::config::files::read(Path::new(path), crate::config::files::MAX_BYTES)
                    .and_then(|bytes| {
                        String::from_utf8(bytes).map_err(|_| {
                            std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8")
                        })
                    })
                    .map(|t| Some(t.trim().to_string()))
                    .map_err(|e| format!("cannot read token_file {path:?}: {e}"))
            }
            None => Ok(None),
        }
    }
}

/// `http.listen` (and `--listen`): where the lifecycle server listens,
/// or `off` for no server. Parsed at load, so a typo fails `--check`
/// rather than the bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Off,
    Addr(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Listen, String> {
        if s == "off" {
            return Ok(Listen::Off);
        }
        s.parse().map(Listen::Addr).map_err(|_| {
            format!(
                "expected \"off\" or an address like \"0.0.0.0:7979\" or \"[::]:7979\", got {s:?}"
            )
        })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Off => f.write_str("off"),
            Listen::Addr(addr) => addr.fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Listen, D::Error> {
        expand_string(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Listen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `[readiness]` / `[liveness]`: an optional check against the app.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Probe {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
}

/// `check = { http = "http://127.0.0.1:8080/health" }` or `{ tcp = "127.0.0.1:8080" }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Check {
    #[serde(
        default,
        deserialize_with = "expand_opt",
        serialize_with = "escape_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub http: Option<String>,
    #[serde(
        default,
        deserialize_with = "expand_opt",
        serialize_with = "escape_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp: Option<String>,
    /// Per-check timeout; the kubelet's probe timeout is 1s by default.
    #[serde(default = "check_timeout")]
    pub timeout: Duration,
}

fn check_timeout() -> Duration {
    Duration(StdDuration::from_millis(800))
}

/// `[termination_message]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TerminationMessage {
    /// Default: `/dev/termination-log` when it exists.
    #[serde(
        deserialize_with = "expand_opt",
        serialize_with = "escape_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub path: Option<String>,
    /// What a crash outside a shutdown leaves in the file.
    pub on_crash: OnCrash,
}

/// `termination_message.on_crash`: what the file holds when the app exits
/// on its own with a non-zero code or a signal, outside a shutdown.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnCrash {
    /// Nothing: the file stays empty, so the kubelet's
    /// `terminationMessagePolicy: FallbackToLogsOnError` shows the app's
    /// last log lines (its stack trace), as without drainit.
    #[default]
    Logs,
    /// drainit's record.
    Record,
}

/// A duration written as a humane string (`"1500ms"`, `"30s"`, `"5m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub const fn secs(s: u64) -> Duration {
        Duration(StdDuration::from_secs(s))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// The longest duration the config accepts (100 years). Deadlines are
/// `now + duration` and back-off doubles, and `Instant` arithmetic panics
/// near 2^63 seconds: without a bound, `grace_period = "500000000000y"`
/// passed `--check` and made drainit panic at the first SIGTERM.
pub const MAX_DURATION: StdDuration = StdDuration::from_secs(100 * 31_557_600);

/// Parses `"1500ms"`, `"30s"`, `"1m 30s"`, `"5m"`; a bare number is refused
/// because its unit would be a guess, and so is anything over
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<StdDuration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}): expected a number with a unit, like \"1500ms\", \"30s\" or \"5m\""))?;
    if d > MAX_DURATION {
        return Err(format!(
            "duration {s:?} is too long: expected at most {}",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let raw = expand_string(d)?;
        parse_duration(&raw)
            .map(Duration)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An exit code 0..=255, written as a table key (`{ 143 = 0 }`) or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExitCode(pub u8);

impl<'de> Deserialize<'de> for ExitCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ExitCode, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(i64),
            Str(String),
        }
        let n = match Raw::deserialize(d)? {
            Raw::Num(n) => Some(n),
            Raw::Str(s) => s.trim().parse::<i64>().ok(),
        };
        n.and_then(|n| u8::try_from(n).ok())
            .map(ExitCode)
            .ok_or_else(|| serde::de::Error::custom("expected an exit code from 0 to 255"))
    }
}

impl Serialize for ExitCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // TOML table keys are strings; values print as strings too, which
        // parse back the same.
        s.collect_str(&self.0)
    }
}

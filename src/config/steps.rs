//! What a step *is* (SPEC section 6): the schema of `[[poststart]]`,
//! `[[drain]]`, `[[on_exit]]` and `[[keepalive]]` entries, their default
//! names (never showing what `${VAR}` expanded to), and the rules checked
//! at load. What each action takes is `steps::action`'s; how a list of steps
//! runs is `lifecycle::steps`.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};

use super::expand::{
    escape_map, escape_opt, escape_opt_vec, expand_map, expand_string, expand_vec,
};
use super::url;
use super::{Cause, Duration};
use crate::config::Signal;

mod action;
pub use action::{Action, HttpAction, WaitConnections, WaitHttp, WaitQuiet};

/// `on_failure`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    Continue,
    Abort,
}

/// One step: exactly one [`Action`] plus common keys. serde reads it
/// through [`RawStep`], so unknown keys are still refused and a table with
/// no action or several is refused with the list of what it has.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "RawStep", into = "RawStep")]
pub struct Step {
    pub name: Option<String>,
    pub timeout: Option<Duration>,
    pub on_failure: Option<OnFailure>,
    pub retries: Option<u32>,
    pub retry_delay: Option<Duration>,
    /// `[[drain]]` and `[[on_exit]]` only: run the step only for these
    /// causes of the stop (default: every cause); otherwise it is reported
    /// `not_selected`. A thread dump on a liveness kill, not on a rollout.
    pub when: Option<Vec<Cause>>,
    /// `[[keepalive]]` only, and required there: how often the step runs
    /// while the app is ready.
    pub interval: Option<Duration>,
    /// What the step does.
    pub action: Action,
    /// Exec-only overrides of `app.user`.
    pub user: Option<String>,
    /// Exec-only override of `app.workdir`.
    pub workdir: Option<String>,
    /// Exec-only additions to `app.env`.
    pub env: BTreeMap<String, String>,
    /// The default name as the config's text wrote the action, before
    /// `${VAR}` expansion ([`written_name`]); set by `Config::parse`.
    pub written: Written,
}

/// The action keys, in the order errors list them.
const ACTION_KEYS: [&str; 8] = [
    "sleep",
    "http",
    "exec",
    "signal",
    "wait_tcp",
    "wait_http",
    "wait_connections",
    "wait_quiet",
];

/// The step table as written: every action optional, so that serde
/// refuses unknown keys (`deny_unknown_fields` does not mix with enums
/// flattened into a struct) and the count of actions is checked here with
/// an error that lists them.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    #[serde(
        default,
        deserialize_with = "opt_string",
        serialize_with = "escape_opt",
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
    /// `[[drain]]` and `[[on_exit]]` only: run the step only for these
    /// causes of the stop (default: every cause); otherwise it is reported
    /// `not_selected`. A thread dump on a liveness kill, not on a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Vec<Cause>>,
    /// `[[keepalive]]` only, and required there: how often the step runs
    /// while the app is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,

    // Actions: exactly one must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpAction>,
    #[serde(
        default,
        deserialize_with = "opt_vec",
        serialize_with = "escape_opt_vec",
        skip_serializing_if = "Option::is_none"
    )]
    pub exec: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        serialize_with = "escape_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub wait_tcp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_http: Option<WaitHttp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_connections: Option<WaitConnections>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_quiet: Option<WaitQuiet>,

    // Exec-only overrides of app.user / app.workdir / app.env.
    #[serde(
        default,
        deserialize_with = "opt_string",
        serialize_with = "escape_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub user: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        serialize_with = "escape_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub workdir: Option<String>,
    #[serde(
        default,
        deserialize_with = "expand_map",
        serialize_with = "escape_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
}

/// Why a step table with `keys` (its action keys, in [`ACTION_KEYS`] order)
/// is not one step, if it is not.
fn action_count_problem(keys: &[&str]) -> Option<String> {
    match keys.len() {
        0 => Some("a step needs exactly one action, and this one has none: expected one of sleep, http, exec, signal, wait_tcp, wait_http, wait_connections, wait_quiet".to_string()),
        1 => None,
        n => Some(format!(
            "a step needs exactly one action, and this one has {n}: {}; split it into separate steps",
            keys.join(", ")
        )),
    }
}

/// Whether a serde error is `action_count_problem`'s.
pub fn is_action_count_error(message: &str) -> bool {
    message.starts_with("a step needs exactly one action")
}

/// The action-count problems of every step in the document, as (list,
/// position, message): serde stops at the first, the user gets them all.
pub fn action_count_problems(doc: &toml::de::DeTable<'_>) -> Vec<(&'static str, String, String)> {
    let mut problems = Vec::new();
    for list in ["poststart", "drain", "on_exit", "keepalive"] {
        let Some(items) = doc.get(list).and_then(|v| v.get_ref().as_array()) else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let Some(table) = item.get_ref().as_table() else {
                continue;
            };
            let keys: Vec<&str> = ACTION_KEYS
                .into_iter()
                .filter(|k| table.contains_key(*k))
                .collect();
            if let Some(message) = action_count_problem(&keys) {
                problems.push((list, i.to_string(), message));
            }
        }
    }
    problems
}

impl TryFrom<RawStep> for Step {
    type Error = String;

    fn try_from(raw: RawStep) -> Result<Step, String> {
        let keys: Vec<&str> = [
            raw.sleep.is_some(),
            raw.http.is_some(),
            raw.exec.is_some(),
            raw.signal.is_some(),
            raw.wait_tcp.is_some(),
            raw.wait_http.is_some(),
            raw.wait_connections.is_some(),
            raw.wait_quiet.is_some(),
        ]
        .into_iter()
        .zip(ACTION_KEYS)
        .filter_map(|(set, key)| set.then_some(key))
        .collect();
        if let Some(problem) = action_count_problem(&keys) {
            return Err(problem);
        }
        let action = if let Some(d) = raw.sleep {
            Action::Sleep(d)
        } else if let Some(h) = raw.http {
            Action::Http(h)
        } else if let Some(argv) = raw.exec {
            Action::Exec(argv)
        } else if let Some(sig) = raw.signal {
            Action::Signal(sig)
        } else if let Some(addr) = raw.wait_tcp {
            Action::WaitTcp(addr)
        } else if let Some(w) = raw.wait_http {
            Action::WaitHttp(w)
        } else if let Some(w) = raw.wait_connections {
            Action::WaitConnections(w)
        } else if let Some(w) = raw.wait_quiet {
            Action::WaitQuiet(w)
        } else {
            unreachable!("exactly one action is set: checked above")
        };
        Ok(Step {
            name: raw.name,
            timeout: raw.timeout,
            on_failure: raw.on_failure,
            retries: raw.retries,
            retry_delay: raw.retry_delay,
            when: raw.when,
            interval: raw.interval,
            action,
            user: raw.user,
            workdir: raw.workdir,
            env: raw.env,
            written: Written::default(),
        })
    }
}

impl From<Step> for RawStep {
    fn from(step: Step) -> RawStep {
        let mut raw = RawStep {
            name: step.name,
            timeout: step.timeout,
            on_failure: step.on_failure,
            retries: step.retries,
            retry_delay: step.retry_delay,
            when: step.when,
            interval: step.interval,
            user: step.user,
            workdir: step.workdir,
            env: step.env,
            ..RawStep::default()
        };
        match step.action {
            Action::Sleep(d) => raw.sleep = Some(d),
            Action::Http(h) => raw.http = Some(h),
            Action::Exec(argv) => raw.exec = Some(argv),
            Action::Signal(sig) => raw.signal = Some(sig),
            Action::WaitTcp(addr) => raw.wait_tcp = Some(addr),
            Action::WaitHttp(w) => raw.wait_http = Some(w),
            Action::WaitConnections(w) => raw.wait_connections = Some(w),
            Action::WaitQuiet(w) => raw.wait_quiet = Some(w),
        }
        raw
    }
}

/// A step's default name from the config's text (SPEC 4): `/status`,
/// `/metrics`, the log and the termination record show it, so it must not
/// carry what `${VAR}` expanded to (tokens, passwords). Not part of what a
/// step *is*: two steps that do the same are equal whatever their text, so
/// that `--check`'s output (expanded, escaped) reads back as the same config.
#[derive(Debug, Clone, Default)]
pub struct Written(pub Option<String>);

impl PartialEq for Written {
    fn eq(&self, _: &Written) -> bool {
        true
    }
}

fn opt_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    expand_string(d).map(Some)
}

fn opt_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    expand_vec(d).map(Some)
}

fn http_name(method: &str, url: &str) -> String {
    format!("http {method} {}", url::redact_url(url))
}

/// `exec` and the argv; an argument that holds a URL loses its userinfo
/// and query, like an `http` step's URL.
fn exec_name<'a>(argv: impl Iterator<Item = &'a str>) -> String {
    let mut name = "exec".to_string();
    for arg in argv {
        name.push(' ');
        if arg.contains("://") {
            name.push_str(&url::redact_url(arg));
        } else {
            name.push_str(arg);
        }
    }
    name
}

/// The default name of the step table `t` from its text before `${VAR}`
/// expansion, for the actions whose argument is text (http, exec,
/// wait_tcp, wait_http); `None` for the others (their name comes from the
/// typed value) and for a table that is not a valid step (it is refused).
pub fn written_name(t: &toml::de::DeTable<'_>) -> Option<String> {
    use toml::de::DeValue;
    let text = |v: &toml::Spanned<DeValue<'_>>| v.get_ref().as_str().map(str::to_string);
    let table = |key: &str| t.get(key).and_then(|v| v.get_ref().as_table());
    if let Some(h) = table("http") {
        let url = text(h.get("url")?)?;
        let method = match h.get("method") {
            Some(m) => text(m)?,
            None => action::get(),
        };
        Some(http_name(&method, &url))
    } else if let Some(argv) = t.get("exec") {
        let argv = argv.get_ref().as_array()?;
        let argv: Option<Vec<String>> = argv.iter().map(text).collect();
        Some(exec_name(argv?.iter().map(String::as_str)))
    } else if let Some(addr) = t.get("wait_tcp") {
        Some(format!("wait_tcp {}", text(addr)?))
    } else if let Some(w) = table("wait_http") {
        Some(format!(
            "wait_http {}",
            url::redact_url(&text(w.get("url")?)?)
        ))
    } else {
        None
    }
}

/// Default step timeout.
pub const DEFAULT_TIMEOUT: StdDuration = StdDuration::from_secs(10);
/// Default delay between retries.
pub const DEFAULT_RETRY_DELAY: StdDuration = StdDuration::from_secs(1);

impl Step {
    /// A step that does `action`, with every other key at its default
    /// (for tests: a config's steps come from its text).
    #[cfg(test)]
    pub fn new(action: Action) -> Step {
        Step {
            name: None,
            timeout: None,
            on_failure: None,
            retries: None,
            retry_delay: None,
            when: None,
            interval: None,
            action,
            user: None,
            workdir: None,
            env: BTreeMap::new(),
            written: Written::default(),
        }
    }

    /// The step's name: `name`, else the action and its argument as the
    /// config wrote them (`sleep 5s`, `exec nginx -s quit`,
    /// `http PUT http://${HOST}/deregister`): never a value `${VAR}`
    /// expanded to, URL userinfo or a query.
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        if let Some(written) = &self.written.0 {
            return written.clone();
        }
        // A step built in code, not read from a config text: its values
        // are all there is, still without userinfo and queries.
        match &self.action {
            Action::Sleep(d) => format!("sleep {d}"),
            Action::Http(h) => http_name(&h.method, &h.url),
            Action::Exec(argv) => exec_name(argv.iter().map(String::as_str)),
            Action::Signal(sig) => format!("signal {}", sig.name()),
            Action::WaitTcp(addr) => format!("wait_tcp {addr}"),
            Action::WaitHttp(w) => format!("wait_http {}", url::redact_url(&w.url)),
            Action::WaitConnections(w) => format!("wait_connections :{} <= {}", w.port, w.max),
            Action::WaitQuiet(w) => format!("wait_quiet :{} {}", w.port, w.quiet),
        }
    }

    /// The bound on the whole step, retries included: `timeout`, else
    /// [`DEFAULT_TIMEOUT`] — except a `sleep` without an explicit
    /// `timeout`, which has none (its length is its point; only the list's
    /// budget ends it early, SPEC 6).
    pub fn effective_timeout(&self) -> Option<StdDuration> {
        match (self.timeout, &self.action) {
            (Some(t), _) => Some(t.0),
            (None, Action::Sleep(_)) => None,
            (None, _) => Some(DEFAULT_TIMEOUT),
        }
    }

    /// Whether the step may be retried (`retries` applies to these only).
    pub fn retriable(&self) -> bool {
        matches!(self.action, Action::Http(_) | Action::Exec(_))
    }

    /// Rules serde cannot express, and what would only fail when the step
    /// runs (a URL that does not parse, a header HTTP forbids): each is
    /// (the key below the step's table, `""` for the table itself; the
    /// message), for `config` to locate. (That the step has exactly one
    /// action is checked as it is read.)
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.retries.is_some_and(|r| r > 0) && !self.retriable() {
            problems.push((
                "retries",
                "retries applies to http and exec steps only".to_string(),
            ));
        }
        match &self.action {
            Action::Exec(argv) if argv.is_empty() => {
                problems.push(("exec", "exec needs a command: expected a list like [\"/usr/sbin/nginx\", \"-s\", \"quit\"]".to_string()));
            }
            Action::Exec(_) => {}
            _ => {
                for (key, set) in [
                    ("user", self.user.is_some()),
                    ("workdir", self.workdir.is_some()),
                    ("env", !self.env.is_empty()),
                ] {
                    if set {
                        problems.push((
                            key,
                            "user, workdir and env apply to exec steps only".to_string(),
                        ));
                    }
                }
            }
        }
        if let Some(user) = &self.user {
            if let Err(e) = super::user::parse_spec(user) {
                problems.push(("user", e.to_string()));
            }
        }
        let (url_key, url, expect_key, expect) = match &self.action {
            Action::Http(h) => ("http.url", Some(&h.url), "http.expect", h.expect.as_slice()),
            Action::WaitHttp(w) => (
                "wait_http.url",
                Some(&w.url),
                "wait_http.expect",
                w.expect.as_slice(),
            ),
            _ => ("", None, "", &[][..]),
        };
        if let Some(url) = url {
            if let Err(e) = url::parse_url(url) {
                problems.push((
                    url_key,
                    format!("{e}: expected http://host[:port]/path or https://..."),
                ));
            } else if cfg!(not(feature = "https")) && url.starts_with("https://") {
                problems.push((
                    url_key,
                    format!("invalid url {:?}: {}", url::redact_url(url), url::NO_HTTPS),
                ));
            }
        }
        if let Action::Http(h) = &self.action {
            if hyper::Method::from_bytes(h.method.as_bytes()).is_err() {
                problems.push((
                    "http.method",
                    format!(
                        "invalid HTTP method {:?}: expected a token like GET, PUT or POST",
                        h.method
                    ),
                ));
            }
            for (name, value) in &h.headers {
                if let Err(e) = url::check_header(name, value) {
                    problems.push(("http.headers", e));
                }
            }
        }
        for code in expect {
            if !(100..=599).contains(code) {
                problems.push((
                    expect_key,
                    format!("invalid expected status {code}: expected 100..=599"),
                ));
            }
        }
        match &self.action {
            Action::WaitQuiet(w) => problems.extend(
                w.validate(self.effective_timeout())
                    .into_iter()
                    .map(|m| ("wait_quiet", m)),
            ),
            Action::WaitTcp(addr) if !addr.contains(':') => problems.push((
                "wait_tcp",
                format!("invalid wait_tcp address {addr:?}: expected host:port"),
            )),
            _ => {}
        }
        problems
    }
}

//! What a step *is* (SPEC section 6): the schema of `[[poststart]]`,
//! `[[drain]]`, `[[on_exit]]` and `[[keepalive]]` entries, their default
//! names (never showing what `${VAR}` expanded to), and the rules checked
//! at load. How a list of steps runs is [`crate::lifecycle::steps`].

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};

use super::expand::{
    escape_map, escape_opt, escape_opt_vec, escape_string, expand_map, expand_string, expand_vec,
};
use super::Duration;
use crate::http::client;
use crate::lifecycle::shutdown::Cause;
use crate::signals::Signal;

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
    pub wait_quiet: Option<crate::lifecycle::quiet::WaitQuiet>,

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

    /// The default name as the config's text wrote the action, before
    /// `${VAR}` expansion ([`written_name`]); set by `Config::parse`.
    #[serde(skip)]
    pub written: Written,
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

/// `http = { url, method, headers, body, expect }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpAction {
    #[serde(deserialize_with = "expand_string", serialize_with = "escape_string")]
    pub url: String,
    #[serde(
        default = "get",
        deserialize_with = "expand_string",
        serialize_with = "escape_string"
    )]
    pub method: String,
    #[serde(
        default,
        deserialize_with = "expand_map",
        serialize_with = "escape_map"
    )]
    pub headers: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        serialize_with = "escape_opt",
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
    #[serde(deserialize_with = "expand_string", serialize_with = "escape_string")]
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

fn http_name(method: &str, url: &str) -> String {
    format!("http {method} {}", client::redact_url(url))
}

/// `exec` and the argv; an argument that holds a URL loses its userinfo
/// and query, like an `http` step's URL.
fn exec_name<'a>(argv: impl Iterator<Item = &'a str>) -> String {
    let mut name = "exec".to_string();
    for arg in argv {
        name.push(' ');
        if arg.contains("://") {
            name.push_str(&client::redact_url(arg));
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
            None => get(),
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
            client::redact_url(&text(w.get("url")?)?)
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
        if self.wait_quiet.is_some() {
            set.push("wait_quiet");
        }
        set
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
        if let Some(d) = self.sleep {
            format!("sleep {d}")
        } else if let Some(h) = &self.http {
            http_name(&h.method, &h.url)
        } else if let Some(argv) = &self.exec {
            exec_name(argv.iter().map(String::as_str))
        } else if let Some(sig) = self.signal {
            format!("signal {}", sig.name())
        } else if let Some(addr) = &self.wait_tcp {
            format!("wait_tcp {addr}")
        } else if let Some(w) = &self.wait_http {
            format!("wait_http {}", client::redact_url(&w.url))
        } else if let Some(w) = self.wait_connections {
            format!("wait_connections :{} <= {}", w.port, w.max)
        } else if let Some(w) = &self.wait_quiet {
            format!("wait_quiet :{} {}", w.port, w.quiet)
        } else {
            "step".to_string()
        }
    }

    /// The bound on the whole step, retries included: `timeout`, else
    /// [`DEFAULT_TIMEOUT`] — except a `sleep` without an explicit
    /// `timeout`, which has none (its length is its point; only the list's
    /// budget ends it early, SPEC 6).
    pub fn effective_timeout(&self) -> Option<StdDuration> {
        match (self.timeout, self.sleep) {
            (Some(t), _) => Some(t.0),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TIMEOUT),
        }
    }

    /// Rules serde cannot express, and what would only fail when the step
    /// runs (a URL that does not parse, a header HTTP forbids): each is
    /// (the key below the step's table, `""` for the table itself; the
    /// message), for `config` to locate.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let actions = self.actions();
        match actions.len() {
            0 => problems.push(("",
                "a step needs exactly one action, and this one has none: expected one of sleep, http, exec, signal, wait_tcp, wait_http, wait_connections, wait_quiet".to_string()),
            ),
            1 => {}
            _ => problems.push(("", format!(
                "a step needs exactly one action, and this one has {}: {}; split it into separate steps",
                actions.len(),
                actions.join(", ")
            ))),
        }
        if self.retries.is_some_and(|r| r > 0) && self.http.is_none() && self.exec.is_none() {
            problems.push((
                "retries",
                "retries applies to http and exec steps only".to_string(),
            ));
        }
        if let Some(argv) = &self.exec {
            if argv.is_empty() {
                problems.push(("exec", "exec needs a command: expected a list like [\"/usr/sbin/nginx\", \"-s\", \"quit\"]".to_string()));
            }
        }
        if self.exec.is_none() {
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
        if let Some(user) = &self.user {
            if let Err(e) = crate::user::parse_spec(user) {
                problems.push(("user", e.to_string()));
            }
        }
        for (key, url) in [
            ("http.url", self.http.as_ref().map(|h| &h.url)),
            ("wait_http.url", self.wait_http.as_ref().map(|w| &w.url)),
        ] {
            let Some(url) = url else { continue };
            if let Err(e) = client::parse_url(url) {
                problems.push((
                    key,
                    format!("{e}: expected http://host[:port]/path or https://..."),
                ));
            } else if cfg!(not(feature = "https")) && url.starts_with("https://") {
                problems.push((
                    key,
                    format!(
                        "invalid url {:?}: {}",
                        client::redact_url(url),
                        client::NO_HTTPS
                    ),
                ));
            }
        }
        if let Some(h) = &self.http {
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
                if let Err(e) = client::check_header(name, value) {
                    problems.push(("http.headers", e));
                }
            }
        }
        for (key, code) in self
            .http
            .iter()
            .flat_map(|h| h.expect.iter().map(|c| ("http.expect", c)))
            .chain(
                self.wait_http
                    .iter()
                    .flat_map(|w| w.expect.iter().map(|c| ("wait_http.expect", c))),
            )
        {
            if !(100..=599).contains(code) {
                problems.push((
                    key,
                    format!("invalid expected status {code}: expected 100..=599"),
                ));
            }
        }
        if let Some(w) = &self.wait_quiet {
            problems.extend(
                w.validate(self.effective_timeout())
                    .into_iter()
                    .map(|m| ("wait_quiet", m)),
            );
        }
        if let Some(addr) = &self.wait_tcp {
            if !addr.contains(':') {
                problems.push((
                    "wait_tcp",
                    format!("invalid wait_tcp address {addr:?}: expected host:port"),
                ));
            }
        }
        problems
    }
}

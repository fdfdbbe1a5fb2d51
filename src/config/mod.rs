//! The TOML configuration: its types, defaults, `${VAR}` expansion, and the
//! errors that name file, line, column and key.
//!
//! This module owns turning text into a checked [`Config`]: every value is
//! typed at load (durations, signals, exit codes), unknown keys are errors,
//! and cross-field rules live in [`Config::validate`]. It never starts
//! anything and never reads the environment except for `${VAR}` expansion.

use std::path::Path;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};

use steps::Step;

mod cause;
mod error;
pub mod expand;
pub(crate) mod files;
mod schema;
pub mod signal;
pub mod steps;
pub(crate) mod url;
pub mod user;

pub use cause::Cause;
pub use error::{Error, Problem};
use error::{Nodes, WrittenNames};
pub use schema::{
    parse_duration, App, Backoff, Check, Duration, ExitCode, ForwardTo, Http, Listen, OnCrash,
    Probe, Restart, Shutdown, Signals, TerminationMessage, MAX_DURATION,
};
pub use signal::{Signal, UnknownSignal};

/// Where drainit looks for a config when neither `--config` nor
/// `DRAINIT_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/drainit/drainit.toml";

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub app: App,
    pub signals: Signals,
    pub shutdown: Shutdown,
    pub http: Http,
    pub readiness: Probe,
    pub liveness: Probe,
    pub termination_message: TerminationMessage,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub poststart: Vec<Step>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drain: Vec<Step>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_exit: Vec<Step>,
    /// Steps that run every `interval` while the app is ready (SPEC 6).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keepalive: Vec<Step>,
}

/// Applies an `exit_code_map` to a final exit code.
pub fn map_exit_code(map: &std::collections::BTreeMap<ExitCode, ExitCode>, code: i32) -> i32 {
    u8::try_from(code)
        .ok()
        .and_then(|c| map.get(&ExitCode(c)))
        .map_or(code, |mapped| i32::from(mapped.0))
}

impl Config {
    /// The signal that asks the app to stop: `shutdown.stop_signal`, else the
    /// rewrite of TERM, else TERM.
    pub fn stop_signal(&self) -> Signal {
        self.shutdown
            .stop_signal
            .unwrap_or_else(|| signal::rewrite(&self.signals.rewrite, Signal::TERM))
    }

    /// Applies `shutdown.exit_code_map` to a final exit code.
    pub fn map_exit_code(&self, code: i32) -> i32 {
        map_exit_code(&self.shutdown.exit_code_map, code)
    }

    /// Parses and validates `text`, read from `path` (used in messages only).
    /// Every problem is located with toml's own spans: the text is parsed
    /// once into a [`toml::de::DeTable`], which both feeds serde and tells
    /// where each key and value is.
    pub fn parse(text: &str, path: &Path) -> Result<Config, Error> {
        // A syntax error still leaves the tables before it, to name its key.
        let (doc, errors) = toml::de::DeTable::parse_recoverable(text);
        if let Some(e) = errors.first() {
            return Err(Error::from_toml(path, text, &Nodes::of(&doc), e));
        }
        let written = WrittenNames::of(doc.get_ref());
        // serde stops at the first step without exactly one action; the
        // user gets every such step at once.
        let action_counts = steps::action_count_problems(doc.get_ref());
        // serde consumes the document; an error parses the text again for
        // the spans (no copy of the document on the way that succeeds).
        let mut config = Config::deserialize(toml::de::Deserializer::from(doc)).map_err(|e| {
            let nodes = Nodes::parse(text);
            if steps::is_action_count_error(e.message()) && !action_counts.is_empty() {
                Error {
                    path: path.to_path_buf(),
                    problems: action_counts
                        .into_iter()
                        .map(|(section, key, message)| nodes.locate(text, section, &key, message))
                        .collect(),
                }
            } else {
                Error::from_toml(path, text, &nodes, &e)
            }
        })?;
        written.apply(&mut config);
        config.validate().map_err(|problems| {
            let nodes = Nodes::parse(text);
            Error {
                path: path.to_path_buf(),
                problems: problems
                    .into_iter()
                    .map(|(section, key, message)| nodes.locate(text, section, &key, message))
                    .collect(),
            }
        })?;
        Ok(config)
    }

    /// Reads and parses the file at `path`: a regular file of at most
    /// `files::MAX_BYTES`; a FIFO, a
    /// device or a larger file is refused unread (`files::read`).
    pub fn load(path: &Path) -> Result<Config, Error> {
        let unreadable = |why: String| Error {
            path: path.to_path_buf(),
            problems: vec![Problem {
                line: None,
                column: None,
                key: None,
                message: format!("cannot read the config file: {why}"),
            }],
        };
        let bytes = crate::config::files::read(path, crate::config::files::MAX_BYTES)
            .map_err(|e| unreadable(e.to_string()))?;
        let text =
            String::from_utf8(bytes).map_err(|_| unreadable("it is not UTF-8 text".to_string()))?;
        Config::parse(&text, path)
    }

    /// Makes the relative paths drainit still uses once the app runs
    /// absolute against `base`, the directory drainit was started in, which
    /// it then leaves (`lifecycle::driver::run`): `app.workdir` and exec steps'
    /// `workdir` (restarts and steps start later), `http.token_file` (read
    /// again on reload) and `termination_message.path` (written at exit; an
    /// empty one still means "nowhere"). Not for `--check`, which prints
    /// what was written.
    pub fn resolve_paths(&mut self, base: &str) {
        let absolute = |path: &mut Option<String>| {
            if let Some(p) = path.as_mut() {
                if !p.is_empty() && Path::new(p.as_str()).is_relative() {
                    *p = format!("{}/{p}", base.trim_end_matches('/'));
                }
            }
        };
        absolute(&mut self.app.workdir);
        absolute(&mut self.http.token_file);
        absolute(&mut self.termination_message.path);
        for step in self
            .poststart
            .iter_mut()
            .chain(&mut self.drain)
            .chain(&mut self.on_exit)
            .chain(&mut self.keepalive)
        {
            absolute(&mut step.workdir);
        }
    }

    /// Cross-field rules; each problem is (section, key, message). The key
    /// is a dotted path below the section, where a number is a position in
    /// an array (`"1.http.url"` is the second step's URL); `""` is the
    /// section itself.
    pub fn validate(&self) -> Result<(), Vec<(&'static str, String, String)>> {
        let mut problems = Vec::new();
        let s = &self.shutdown;
        if s.stop_timeout.0.saturating_add(s.kill_margin.0) >= s.grace_period.0 {
            problems.push((
                "shutdown",
                "stop_timeout".into(),
                format!(
                    "the budget does not fit: stop_timeout ({}) + kill_margin ({}) must be less than grace_period ({})",
                    s.stop_timeout, s.kill_margin, s.grace_period
                ),
            ));
        }
        if s.kill_margin.0 >= StdDuration::from_secs(2) {
            problems.push((
                "shutdown",
                "kill_margin".into(),
                format!(
                    "expected less than 2s (the kubelet gives the stop signal only 2s before SIGKILL), got {}",
                    s.kill_margin
                ),
            ));
        }
        for sig in &s.triggers {
            if !sig.received() || *sig == Signal::CHLD {
                problems.push((
                    "shutdown",
                    "triggers".into(),
                    format!("{sig} cannot be a trigger: drainit cannot or must not catch it"),
                ));
            }
        }
        if let Some(sig) = s.stop_signal {
            if sig == Signal::CHLD {
                problems.push((
                    "shutdown",
                    "stop_signal".into(),
                    "SIGCHLD cannot stop anything: expected a signal like TERM, QUIT or INT".into(),
                ));
            }
        }
        for from in self.signals.rewrite.keys() {
            if !from.received() || *from == Signal::CHLD {
                problems.push((
                    "signals",
                    "rewrite".into(),
                    format!("{from} cannot be rewritten: drainit never receives it"),
                ));
            }
        }
        for sig in &self.signals.ignore {
            if !sig.received() || *sig == Signal::CHLD {
                problems.push((
                    "signals",
                    "ignore".into(),
                    if *sig == Signal::CHLD {
                        "SIGCHLD cannot be ignored: drainit must reap on it".to_string()
                    } else {
                        format!("{sig} cannot be ignored here: drainit never receives it")
                    },
                ));
            }
            if s.triggers.contains(sig) {
                problems.push((
                    "signals",
                    "ignore".into(),
                    format!(
                        "{sig} is both ignored (signals.ignore, or a rewrite to 0) and a shutdown trigger: expected one or the other"
                    ),
                ));
            }
        }
        let b = &self.app.restart_backoff;
        if b.initial.0.is_zero() || b.initial.0 > b.max.0 {
            problems.push((
                "app",
                "restart_backoff".into(),
                format!("expected 0 < initial ({}) <= max ({})", b.initial, b.max),
            ));
        }
        if let Some(user) = &self.app.user {
            if let Err(e) = user::parse_spec(user) {
                problems.push(("app", "user".into(), e.to_string()));
            }
        }
        for (name, probe) in [("readiness", &self.readiness), ("liveness", &self.liveness)] {
            if let Some(check) = &probe.check {
                if let Some(url) = &check.http {
                    if let Err(e) = url::parse_url(url) {
                        problems.push((
                            name,
                            "check.http".into(),
                            format!("{e}: expected http://host[:port]/path or https://..."),
                        ));
                    }
                }
                if check.http.is_some() == check.tcp.is_some() {
                    problems.push((
                        name,
                        "check".into(),
                        "expected exactly one of http = \"http://...\" or tcp = \"host:port\""
                            .to_string(),
                    ));
                }
            }
        }
        if self.http.token.is_some() && self.http.token_file.is_some() {
            problems.push((
                "http",
                "token".into(),
                "expected token or token_file, not both".to_string(),
            ));
        }
        if self.http.max_connections == 0 {
            problems.push((
                "http",
                "max_connections".into(),
                "expected at least 1".to_string(),
            ));
        }
        for (list, steps) in [
            ("poststart", &self.poststart),
            ("drain", &self.drain),
            ("on_exit", &self.on_exit),
            ("keepalive", &self.keepalive),
        ] {
            for (i, step) in steps.iter().enumerate() {
                for (field, message) in step.validate() {
                    let key = if field.is_empty() {
                        i.to_string()
                    } else {
                        format!("{i}.{field}")
                    };
                    problems.push((list, key, message));
                }
                for (field, message) in list_rules(list, step) {
                    let key = if field.is_empty() {
                        i.to_string()
                    } else {
                        format!("{i}.{field}")
                    };
                    problems.push((list, key, message));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The effective config as TOML, for `--check`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self)
            .unwrap_or_else(|e| format!("# cannot print the config as TOML: {e}\n"))
    }
}

/// The rules of a step that depend on its list: `when` only where a stop
/// has a cause (`drain`, `on_exit`), `interval` required in `keepalive`
/// and meaningless elsewhere.
fn list_rules(list: &str, step: &Step) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    match (&step.when, list) {
        (Some(_), "poststart" | "keepalive") => problems.push(("when", format!(
            "when applies to drain and on_exit steps only: a {list} step runs before any stop has a cause"
        ))),
        (Some(causes), _) if causes.is_empty() => problems.push(("when",
            "when = [] would never run the step: expected causes like [\"liveness\"], or no when".to_string(),
        )),
        _ => {}
    }
    match (step.interval, list) {
        (None, "keepalive") => problems.push((
            "",
            "a keepalive step needs interval = \"10s\" (how often it runs while the app is ready)"
                .to_string(),
        )),
        (Some(d), "keepalive") if d.0.is_zero() => {
            problems.push(("interval", "interval must be more than 0s".to_string()));
        }
        (Some(_), "keepalive") => {}
        (Some(_), _) => problems.push((
            "interval",
            format!("interval applies to keepalive steps only, not to {list} steps"),
        )),
        (None, _) => {}
    }
    problems
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use expand::{escape, expand};

    fn parse(text: &str) -> Result<Config, Error> {
        Config::parse(text, Path::new("/etc/drainit/drainit.toml"))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1500ms"), Ok(StdDuration::from_millis(1500)));
        assert_eq!(parse_duration("30s"), Ok(StdDuration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(StdDuration::from_secs(300)));
        assert_eq!(parse_duration("1m 30s"), Ok(StdDuration::from_secs(90)));
        assert!(parse_duration("30")
            .unwrap_err()
            .contains("expected a number with a unit"));
        assert!(parse_duration("soon").is_err());
        assert_eq!(
            Duration(StdDuration::from_millis(1500)).to_string(),
            "1s 500ms"
        );
    }

    #[test]
    fn defaults_are_the_spec() {
        let c = parse("").expect("empty config is valid");
        assert_eq!(c.shutdown.grace_period.0, StdDuration::from_secs(30));
        assert_eq!(c.shutdown.stop_timeout.0, StdDuration::from_secs(10));
        assert_eq!(c.shutdown.kill_margin.0, StdDuration::from_secs(1));
        assert_eq!(c.shutdown.orphan_grace.0, StdDuration::from_secs(2));
        assert_eq!(c.shutdown.triggers, vec![Signal::TERM]);
        assert_eq!(c.signals.forward_to, ForwardTo::Group);
        assert_eq!(c.app.restart, Restart::Never);
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:7979");
        assert_eq!(c.stop_signal(), Signal::TERM);
    }

    #[test]
    fn full_config_parses_and_round_trips() {
        let text = r#"
[app]
command = ["nginx", "-g", "daemon off;"]
user = "33:33"
workdir = "/srv"
env = { MODE = "prod" }
restart = "on-failure"
restart_backoff = { initial = "500ms", max = "10s", reset_after = "1m" }

[signals]
forward_to = "child"
rewrite = { TERM = "QUIT", 10 = "SIGUSR2" }
ignore = ["HUP"]

[shutdown]
triggers = ["TERM", "INT"]
grace_period = "45s"
stop_timeout = "20s"
exit_code_map = { 143 = 0 }
"#;
        let c = parse(text).expect("valid");
        assert_eq!(c.stop_signal(), Signal::QUIT);
        assert_eq!(c.map_exit_code(143), 0);
        assert_eq!(c.map_exit_code(1), 1);
        assert_eq!(
            c.app.restart_backoff.initial.0,
            StdDuration::from_millis(500)
        );
        let printed = c.to_toml();
        assert_eq!(
            parse(&printed).expect("printed config parses"),
            c,
            "{printed}"
        );
    }

    #[test]
    fn rewrite_to_zero_is_a_drop_printed_as_ignore() {
        let c = parse("[signals]\nrewrite = { INT = 0, WINCH = \"0\", TERM = \"QUIT\", HUP = 0 }\nignore = [\"HUP\", \"USR1\"]\n").unwrap();
        let names: Vec<String> = c.signals.ignore.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["HUP", "USR1", "INT", "WINCH"]);
        assert_eq!(
            c.signals.rewrite,
            BTreeMap::from([(Signal::TERM, Signal::QUIT)])
        );
        let printed = c.to_toml();
        let again = parse(&printed).expect("printed config parses");
        assert_eq!(again, c, "{printed}");
        assert_eq!(again.to_toml(), printed);
        // Within a file, ignore wins over a rewrite of the same signal.
        let c = parse("[signals]\nrewrite = { HUP = \"USR1\" }\nignore = [\"HUP\"]\n").unwrap();
        assert_eq!(c.signals.ignore, [Signal::HUP]);
    }

    #[test]
    fn bad_rewrite_targets_say_that_0_drops() {
        let msg = parse("[signals]\nrewrite = { INT = \"NOPE\" }\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(":2:") && msg.contains("signals.rewrite") && msg.contains("or 0 to drop"),
            "{msg}"
        );
        let msg = parse("[signals]\nrewrite = { INT = -1 }\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("\"-1\"") && msg.contains("or 0 to drop"),
            "{msg}"
        );
        // TERM dropped while it is the default trigger: one or the other.
        let msg = parse("[signals]\nrewrite = { TERM = 0 }\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("SIGTERM is both ignored (signals.ignore, or a rewrite to 0) and a shutdown trigger"),
            "{msg}"
        );
        assert!(parse("[signals]\nrewrite = { TERM = 0 }\n[shutdown]\ntriggers = []\n").is_ok());
    }

    #[test]
    fn relative_paths_resolve_against_the_start_directory() {
        let mut c = parse(
            "[app]\nworkdir = \"work\"\n[http]\ntoken_file = \"./secret\"\n[termination_message]\npath = \"log/term\"\n[[drain]]\nexec = [\"true\"]\nworkdir = \"../up\"\n[[on_exit]]\nexec = [\"true\"]\nworkdir = \"/abs\"\n",
        )
        .unwrap();
        c.resolve_paths("/start/");
        assert_eq!(c.app.workdir.as_deref(), Some("/start/work"));
        assert_eq!(c.http.token_file.as_deref(), Some("/start/./secret"));
        assert_eq!(
            c.termination_message.path.as_deref(),
            Some("/start/log/term")
        );
        assert_eq!(c.drain[0].workdir.as_deref(), Some("/start/../up"));
        assert_eq!(c.on_exit[0].workdir.as_deref(), Some("/abs"));
        let mut c = parse("[termination_message]\npath = \"\"\n").unwrap();
        c.resolve_paths("/start");
        assert_eq!(
            c.termination_message.path.as_deref(),
            Some(""),
            "empty: nowhere"
        );
        assert_eq!(c.app.workdir, None);
    }

    #[test]
    fn absurd_durations_are_refused_not_a_panic_later() {
        // Regression (hostile-input tests): these passed `--check`; the sum
        // in `validate` or `Instant + grace_period` at the first SIGTERM
        // then panicked.
        for text in [
            "[shutdown]\nstop_timeout = \"584542046090years\"\nkill_margin = \"1s\"\n",
            "[shutdown]\ngrace_period = \"300000000000years\"\n",
            "[app]\nrestart_backoff = { initial = \"200years\", max = \"200years\" }\n",
            "[http]\nheader_timeout = \"1000000years\"\n",
        ] {
            let msg = parse(text).unwrap_err().to_string();
            assert!(msg.contains("too long") && msg.contains(":2:"), "{msg}");
        }
        assert_eq!(parse_duration("100years"), Ok(MAX_DURATION));
        assert!(parse_duration("100years 1ns").is_err());
    }

    #[test]
    fn printed_strings_are_escaped_so_they_expand_to_themselves() {
        // Regression (hostile-input tests): `$${HOME}` loads as `${HOME}`,
        // which `--check` printed as is, so its output expanded HOME.
        let text = "[app]\ncommand = [\"sh\", \"-c\", \"echo $${HOME} $$${X}\"]\nenv = { A = \"$${B}\" }\n\n[[drain]]\nexec = [\"echo\", \"$${PATH}\"]\nenv = { C = \"$${D:-e}\" }\n";
        let c = parse(text).unwrap();
        assert_eq!(c.app.command[2], "echo ${HOME} $${X}");
        let printed = c.to_toml();
        assert_eq!(parse(&printed).unwrap(), c, "{printed}");
        for s in ["", "$", "${", "$${", "${A}", "$$${", "${${}}", "a$b${c"] {
            assert_eq!(expand(&escape(s), |_| None), Ok(s.to_string()), "{s:?}");
        }
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("[shutdown]\ngrace_period = \"30s\"\ngrace_perod = \"10s\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("/etc/drainit/drainit.toml:3:1: shutdown.grace_perod: "),
            "{msg}"
        );
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn bad_values_name_the_key_and_what_was_expected() {
        let msg = parse("[shutdown]\ngrace_period = \"thirty\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(":2:")
                && msg.contains("shutdown.grace_period")
                && msg.contains("expected a number with a unit"),
            "{msg}"
        );
        let msg = parse("[signals]\nignore = [\"HUPP\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(":2:") && msg.contains("signals.ignore") && msg.contains("HUPP"),
            "{msg}"
        );
        let msg = parse("[app]\nrestart = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("app.restart") && msg.contains("on-failure"),
            "{msg}"
        );
        let msg = parse("[shutdown]\nexit_code_map = { 143 = 300 }\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("0 to 255"), "{msg}");
        let msg = parse("[app]\ncommand = \"nginx\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("app.command") && msg.contains("sequence"),
            "{msg}"
        );
        let msg = parse("[app\n").unwrap_err().to_string();
        assert!(msg.contains(":1:"), "{msg}");
    }

    #[test]
    fn when_interval_and_keepalive_are_checked_per_list() {
        let c = parse("[[drain]]\nsleep = \"1s\"\nwhen = [\"liveness\", \"prestop\"]\n\n[[keepalive]]\nhttp = { url = \"http://127.0.0.1:8500/v1/agent/check/pass/x\", method = \"PUT\" }\ninterval = \"10s\"\n\n[termination_message]\non_crash = \"record\"\n").unwrap();
        assert_eq!(c.drain[0].when, Some(vec![Cause::Liveness, Cause::Prestop]));
        assert_eq!(c.keepalive[0].interval, Some(Duration::secs(10)));
        assert_eq!(c.termination_message.on_crash, OnCrash::Record);
        assert_eq!(
            Config::default().termination_message.on_crash,
            OnCrash::Logs
        );
        let printed = c.to_toml();
        assert!(printed.contains("on_crash = \"record\""), "{printed}");
        assert_eq!(parse(&printed).unwrap(), c, "--check output loads again");

        let msg = parse("[[poststart]]\nsleep = \"1s\"\nwhen = [\"liveness\"]\n\n[[keepalive]]\nsleep = \"1s\"\n\n[[drain]]\nsleep = \"1s\"\ninterval = \"1s\"\n").unwrap_err().to_string();
        assert!(
            msg.contains(":3:1: poststart[1].when: when applies to drain and on_exit steps only"),
            "{msg}"
        );
        assert!(
            msg.contains(":5:1: keepalive[1]: a keepalive step needs interval"),
            "{msg}"
        );
        assert!(
            msg.contains(":10:1: drain[1].interval: interval applies to keepalive steps only"),
            "{msg}"
        );
        let msg = parse("[[on_exit]]\nsleep = \"1s\"\nwhen = [\"rollout\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(":3:") && msg.contains("rollout") && msg.contains("liveness"),
            "{msg}"
        );
        let msg = parse("[termination_message]\non_crash = \"stderr\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(":2:") && msg.contains("logs") && msg.contains("record"),
            "{msg}"
        );
    }

    #[test]
    fn unset_variable_is_an_error_naming_it() {
        let msg = parse("[app]\ncommand = [\"echo\", \"${DRAINIT_TEST_SURELY_UNSET}\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(":2:")
                && msg.contains("DRAINIT_TEST_SURELY_UNSET")
                && msg.contains("app.command"),
            "{msg}"
        );
    }

    #[test]
    fn budgets_that_do_not_fit_are_rejected_with_every_problem() {
        let text =
            "[shutdown]\ngrace_period = \"10s\"\nstop_timeout = \"10s\"\ntriggers = [\"KILL\"]\n";
        let err = parse(text).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(":3:1: shutdown.stop_timeout: the budget does not fit"),
            "{msg}"
        );
        assert!(
            msg.contains(":4:1: shutdown.triggers: SIGKILL cannot be a trigger"),
            "{msg}"
        );
    }

    #[test]
    fn steps_need_exactly_one_action() {
        let text = "[[drain]]\nsleep = \"1s\"\n\n[[drain]]\nname = \"nothing\"\n\n[[drain]]\nsleep = \"1s\"\nexec = [\"true\"]\n";
        let err = parse(text).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.problems.len(), 2, "{msg}");
        assert!(
            msg.contains(":4:1: drain[2]: a step needs exactly one action, and this one has none"),
            "{msg}"
        );
        assert!(
            msg.contains(
                ":7:1: drain[3]: a step needs exactly one action, and this one has 2: sleep, exec"
            ),
            "{msg}"
        );
    }

    #[test]
    fn default_step_names_come_from_the_text_before_expansion() {
        // Regression (issue 9): names were built from expanded values, so
        // /status and /metrics showed passwords, tokens and queries.
        // PATH stands for a secret: it is set in every test environment.
        let path = std::env::var("PATH").unwrap();
        let text = r#"
[[drain]]
http = { url = "http://admin:${PATH}@svc/deregister?token=${PATH}", method = "PUT" }

[[drain]]
exec = ["curl", "-H", "Bearer ${PATH}", "http://u:p@h/x?t=1"]

[[drain]]
wait_http = { url = "http://u:${PATH}@h/health?k=v" }

[[drain]]
wait_tcp = "${PATH:-h}:80"

[[drain]]
name = "named"
exec = ["true"]
"#;
        let c = parse(text).unwrap();
        let names: Vec<String> = c.drain.iter().map(Step::display_name).collect();
        assert_eq!(
            names,
            [
                "http PUT http://svc/deregister",
                "exec curl -H Bearer ${PATH} http://h/x",
                "wait_http http://h/health",
                "wait_tcp ${PATH:-h}:80",
                "named",
            ]
        );
        let steps::Action::Http(http) = &c.drain[0].action else {
            panic!("an http step: {:?}", c.drain[0]);
        };
        assert_eq!(
            http.url,
            format!("http://admin:{path}@svc/deregister?token={path}")
        );
        // --check's output reads back as the same config.
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn errors_in_arrays_of_tables_and_inline_tables_have_their_place() {
        // Regression (issue 9): a `[[drain]]` header with a comment was
        // not found by scanning the text (wrong line), and errors inside
        // inline tables had no line at all.
        let text = "[[drain]]\nsleep = \"1s\"\n\n[[drain]] # deregister\nname = \"x\"\n\n[[drain]]\nname = \"y\"\n";
        let msg = parse(text).unwrap_err().to_string();
        assert!(
            msg.contains(":4:1: drain[2]: a step needs exactly one action")
                && msg.contains(":7:1: drain[3]: a step needs exactly one action"),
            "{msg}"
        );
        let text = "drain = [{ sleep = \"1s\" }, { name = \"n\" }]\n";
        let msg = parse(text).unwrap_err().to_string();
        assert!(
            msg.contains(":1:28: drain[2]: a step needs exactly one action"),
            "{msg}"
        );
        let text = "[[drain]]\nhttp = { url = \"http://h/\", methd = \"PUT\" }\n";
        let msg = parse(text).unwrap_err().to_string();
        assert!(
            msg.contains(":2:29: drain[1].http.methd: unknown field `methd`"),
            "{msg}"
        );
        let text = "[app]\nrestart_backoff = { initial = \"1s\", max = \"soon\" }\n";
        let msg = parse(text).unwrap_err().to_string();
        assert!(
            msg.contains(":2:43: app.restart_backoff.max: invalid duration"),
            "{msg}"
        );
    }

    #[test]
    fn what_fails_at_run_time_fails_at_load() {
        // Regression (issue 9): these passed --check and failed only when
        // the step or the check ran.
        let cases = [
            (
                "[[drain]]\nhttp = { url = \"http://admin:pw@[::1/x?token=t\" }\n",
                ":2:10: drain[1].http.url: invalid url",
            ),
            (
                "[[drain]]\nsleep = \"1s\"\n[[drain]]\nwait_http = { url = \"http://[::1\" }\n",
                ":4:15: drain[2].wait_http.url: invalid url",
            ),
            (
                "[readiness]\ncheck = { http = \"http://[::1\" }\n",
                ":2:11: readiness.check.http: invalid url",
            ),
            (
                "[[drain]]\nhttp = { url = \"http://h/\", headers = { \"X Token\" = \"v\" } }\n",
                ":2:29: drain[1].http.headers: invalid header name \"X Token\"",
            ),
            (
                "[[drain]]\nhttp = { url = \"http://h/\", headers = { X-Token = \"s3cr3t\\nX: y\" } }\n",
                ":2:29: drain[1].http.headers: invalid value for header \"X-Token\"",
            ),
        ];
        for (text, want) in cases {
            let msg = parse(text).unwrap_err().to_string();
            assert!(msg.contains(want), "{text}\n{msg}");
            for secret in ["s3cr3t", "pw@", "token="] {
                assert!(!msg.contains(secret), "{msg}");
            }
        }
    }

    #[test]
    fn step_keys_are_checked() {
        let msg = parse("[[poststart]]\nwait_tcp = \"127.0.0.1:80\"\ntimout = \"1s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(":3:1: poststart[1].timout: unknown field"),
            "{msg}"
        );
        let c = parse("[[drain]]\nhttp = { url = \"http://127.0.0.1:1/x\", method = \"PUT\", expect = [204] }\nretries = 2\n").unwrap();
        assert_eq!(c.drain[0].display_name(), "http PUT http://127.0.0.1:1/x");
        let printed = c.to_toml();
        assert_eq!(parse(&printed).unwrap(), c, "{printed}");
    }
}

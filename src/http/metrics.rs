//! `GET /metrics`: the Prometheus text exposition (format 0.0.4) of what
//! [`Shared`] holds.
//!
//! This module owns the metric names, their help texts and label escaping.
//! It only reads. Counters are bumped where things happen: the signal path
//! as it forwards, the reaper as it reaps, the keepalive runner as a step
//! ends, and the driver's reconfig (`lifecycle::driver`) as it applies or
//! refuses a reloaded config (the watcher, `lifecycle::reload`, only
//! notices that the file changed). The status is the one the driver
//! published. Rendering takes the locks for a moment and never waits.

use std::fmt::{Display, Write as _};
use std::sync::atomic::Ordering;

use crate::lifecycle::state::{ListState, Phase, Shared};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric, with `# HELP` and `# TYPE` lines.
pub fn render(shared: &Shared) -> String {
    let status = shared.status.borrow().clone();
    let mut out = Exposition::default();

    out.family(
        "drainit_uptime_seconds",
        "gauge",
        "Seconds since drainit started.",
    );
    out.sample(
        "drainit_uptime_seconds",
        &[],
        status.started_at.elapsed().as_secs_f64(),
    );

    out.family(
        "drainit_state",
        "gauge",
        "Lifecycle state: 1 for the current state, 0 for the others.",
    );
    for phase in Phase::ALL {
        out.sample(
            "drainit_state",
            &[("state", phase.as_str())],
            u8::from(phase == status.state),
        );
    }

    out.family(
        "drainit_app_alive",
        "gauge",
        "Whether the app process is alive (1) or not (0).",
    );
    out.sample("drainit_app_alive", &[], u8::from(status.app_alive));

    out.family(
        "drainit_ready",
        "gauge",
        "Whether poststart succeeded and no shutdown has started (readiness.check not included).",
    );
    out.sample("drainit_ready", &[], u8::from(status.ready().is_ok()));

    out.family(
        "drainit_shutdown_cause",
        "gauge",
        "The cause of the stop (prestop, signal, drain_request, poststart_failure, liveness, app_exit): 1 for the current one, 0 for the others; all 0 while no stop.",
    );
    for cause in crate::config::Cause::ALL {
        out.sample(
            "drainit_shutdown_cause",
            &[("cause", cause.as_str())],
            u8::from(status.shutdown_cause == Some(cause)),
        );
    }

    out.family(
        "drainit_signals_forwarded_total",
        "counter",
        "Signals forwarded to the app, by signal name.",
    );
    let signals = shared.metrics.signals_forwarded();
    for (signal, count) in &signals {
        out.sample(
            "drainit_signals_forwarded_total",
            &[("signal", signal)],
            count,
        );
    }

    out.family(
        "drainit_zombies_reaped_total",
        "counter",
        "Child processes reaped (the app, exec steps and orphans).",
    );
    out.sample(
        "drainit_zombies_reaped_total",
        &[],
        shared.metrics.core.reaped(),
    );

    out.family(
        "drainit_restarts_total",
        "counter",
        "Times the app was restarted in place (app.restart).",
    );
    out.sample("drainit_restarts_total", &[], status.restarts);

    out.family(
        "drainit_config_reloads_total",
        "counter",
        "Config file reloads, by result (a failed reload keeps the last good config).",
    );
    let reloads = &shared.metrics;
    out.sample(
        "drainit_config_reloads_total",
        &[("result", "success")],
        reloads.reloads_ok.load(Ordering::Relaxed),
    );
    out.sample(
        "drainit_config_reloads_total",
        &[("result", "failure")],
        reloads.reloads_failed.load(Ordering::Relaxed),
    );

    out.family(
        "drainit_keepalive_runs_total",
        "counter",
        "Runs of each [[keepalive]] step, by result (a failure never stops the app).",
    );
    let keepalive = shared
        .metrics
        .keepalive
        .lock()
        .map(|runs| runs.clone())
        .unwrap_or_default();
    for (index, (step, ok, failed)) in keepalive.iter().enumerate() {
        let index = index.to_string();
        for (result, count) in [("success", ok), ("failure", failed)] {
            out.sample(
                "drainit_keepalive_runs_total",
                &[("index", &index), ("step", step), ("result", result)],
                count,
            );
        }
    }

    let lists = [
        ("poststart", &status.poststart),
        ("drain", &status.drain),
        ("on_exit", &status.on_exit),
    ];
    out.family(
        "drainit_steps_state",
        "gauge",
        "State of each list of steps: 1 for the current state, 0 for the others.",
    );
    for (list, state) in lists {
        let current = list_state(state);
        for s in ["not_started", "running", "succeeded", "failed"] {
            out.sample(
                "drainit_steps_state",
                &[("list", list), ("state", s)],
                u8::from(s == current),
            );
        }
    }

    out.family(
        "drainit_step_duration_seconds",
        "gauge",
        "Duration of each step of the last run of its list, with its outcome (ok, failed, timed_out, cut, skipped).",
    );
    for (list, state) in lists {
        for (index, step) in state.steps().iter().enumerate() {
            // `index` keeps two steps with the same name apart.
            let index = index.to_string();
            out.sample(
                "drainit_step_duration_seconds",
                &[
                    ("list", list),
                    ("index", &index),
                    ("step", &step.name),
                    ("outcome", step.outcome.as_str()),
                ],
                step.duration_ms as f64 / 1000.0,
            );
        }
    }

    out.text
}

fn list_state(state: &ListState) -> &'static str {
    match state {
        ListState::NotStarted => "not_started",
        ListState::Running { .. } => "running",
        ListState::Done { ok: true, .. } => "succeeded",
        ListState::Done { ok: false, .. } => "failed",
    }
}

/// Text being built; writes to a `String` cannot fail.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                escape_label_value(&mut self.text, value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// Label values escape `\`, `"` and newlines (the format's only escapes).
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::lifecycle::steps::{Outcome, StepReport};

    /// One sample line: name, labels, value.
    pub(crate) type Sample = (String, BTreeMap<String, String>, f64);

    /// A strict little parser of the text format: every line is a `# HELP`,
    /// a `# TYPE` or `name{labels} value` with a float value; every sample
    /// belongs to a family declared with `# TYPE` before it; no series
    /// appears twice. Panics on anything else.
    pub(crate) fn parse(text: &str) -> Vec<Sample> {
        let mut types = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut samples = Vec::new();
        assert!(text.ends_with('\n'), "exposition must end with a newline");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let keyword = parts.next().unwrap();
                let name = parts.next().expect("comment names a metric");
                let arg = parts.next().expect("comment has text");
                assert!(valid_name(name), "bad name in {line:?}");
                match keyword {
                    "HELP" => {}
                    "TYPE" => {
                        assert!(
                            ["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg),
                            "bad type in {line:?}"
                        );
                        assert!(types.insert(name.to_string(), arg).is_none(), "{line:?}");
                    }
                    _ => panic!("unknown comment {line:?}"),
                }
                continue;
            }
            assert!(!line.starts_with('#'), "bad comment {line:?}");
            let name_end = line.find(['{', ' ']).expect("sample has a value");
            let name = &line[..name_end];
            assert!(valid_name(name), "bad name in {line:?}");
            assert!(types.contains_key(name), "no # TYPE before {line:?}");
            let mut labels = BTreeMap::new();
            let mut rest = &line[name_end..];
            if let Some(after) = rest.strip_prefix('{') {
                let mut chars = after.char_indices();
                loop {
                    let (start, c) = chars.next().expect("unterminated labels");
                    if c == '}' {
                        rest = &after[start + 1..];
                        break;
                    }
                    if c == ',' {
                        continue;
                    }
                    let eq = after[start..].find('=').expect("label has =") + start;
                    let label = &after[start..eq];
                    assert!(valid_name(label), "bad label name in {line:?}");
                    while chars.next().expect("label").0 < eq {}
                    assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line:?}");
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("unterminated label value").1 {
                            '"' => break,
                            '\\' => match chars.next().expect("escape").1 {
                                '\\' => value.push('\\'),
                                '"' => value.push('"'),
                                'n' => value.push('\n'),
                                other => panic!("bad escape \\{other} in {line:?}"),
                            },
                            '\n' => panic!("raw newline in {line:?}"),
                            c => value.push(c),
                        }
                    }
                    assert!(
                        labels.insert(label.to_string(), value).is_none(),
                        "duplicate label in {line:?}"
                    );
                }
            }
            let value = rest.strip_prefix(' ').expect("space before value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
            assert!(
                seen.insert((name.to_string(), labels.clone())),
                "duplicate series {line:?}"
            );
            samples.push((name.to_string(), labels, value));
        }
        samples
    }

    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// The value of the one sample named `name` with exactly `labels`.
    pub(crate) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
            .2
    }

    fn step(name: &str, outcome: Outcome, duration_ms: u64) -> StepReport {
        StepReport {
            name: name.to_string(),
            outcome,
            duration_ms,
            detail: String::new(),
        }
    }

    #[test]
    fn renders_every_metric_in_valid_text_format() {
        let fx = crate::http::server::tests::fixture(crate::config::Config::default());
        fx.shared
            .metrics
            .signal_forwarded(crate::config::Signal::TERM);
        fx.shared
            .metrics
            .signal_forwarded(crate::config::Signal::TERM);
        fx.shared
            .metrics
            .signal_forwarded(crate::config::Signal::from_number(libc::SIGUSR1).unwrap());
        fx.shared.metrics.reload(true);
        fx.shared.metrics.reload(false);
        fx.shared.metrics.reload(false);
        fx.shared.metrics.keepalive_run(0, "ttl pass", true);
        fx.shared.metrics.keepalive_run(0, "ttl pass", false);
        fx.shared.metrics.keepalive_run(0, "ttl pass", true);
        fx.status.send_modify(|s| {
            s.state = Phase::Draining;
            s.shutdown_cause = Some(crate::config::Cause::Liveness);
            s.app_alive = true;
            s.restarts = 3;
            s.poststart = ListState::Done {
                ok: true,
                steps: vec![step("app listening", Outcome::Ok, 1500)],
            };
            s.drain = ListState::Running {
                steps: vec![
                    step("deregister \"a\"\\b\nc", Outcome::Failed, 250),
                    step("sleep 5s", Outcome::Ok, 5000),
                    step("sleep 5s", Outcome::Skipped, 0),
                ],
            };
        });
        let text = render(&fx.shared);
        let samples = parse(&text);

        assert_eq!(
            value(
                &samples,
                "drainit_signals_forwarded_total",
                &[("signal", "TERM")]
            ),
            2.0
        );
        assert_eq!(
            value(
                &samples,
                "drainit_signals_forwarded_total",
                &[("signal", "USR1")]
            ),
            1.0
        );
        assert_eq!(value(&samples, "drainit_zombies_reaped_total", &[]), 0.0);
        assert_eq!(value(&samples, "drainit_restarts_total", &[]), 3.0);
        assert_eq!(
            value(
                &samples,
                "drainit_config_reloads_total",
                &[("result", "success")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &samples,
                "drainit_config_reloads_total",
                &[("result", "failure")]
            ),
            2.0
        );
        for phase in Phase::ALL {
            let want = if phase == Phase::Draining { 1.0 } else { 0.0 };
            assert_eq!(
                value(&samples, "drainit_state", &[("state", phase.as_str())]),
                want
            );
        }
        for cause in crate::config::Cause::ALL {
            let want = if cause == crate::config::Cause::Liveness {
                1.0
            } else {
                0.0
            };
            assert_eq!(
                value(
                    &samples,
                    "drainit_shutdown_cause",
                    &[("cause", cause.as_str())]
                ),
                want
            );
        }
        for (result, want) in [("success", 2.0), ("failure", 1.0)] {
            assert_eq!(
                value(
                    &samples,
                    "drainit_keepalive_runs_total",
                    &[("index", "0"), ("step", "ttl pass"), ("result", result)]
                ),
                want
            );
        }
        assert_eq!(value(&samples, "drainit_app_alive", &[]), 1.0);
        assert_eq!(value(&samples, "drainit_ready", &[]), 1.0);
        assert!(value(&samples, "drainit_uptime_seconds", &[]) >= 0.0);
        assert_eq!(
            value(
                &samples,
                "drainit_steps_state",
                &[("list", "drain"), ("state", "running")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &samples,
                "drainit_steps_state",
                &[("list", "on_exit"), ("state", "not_started")]
            ),
            1.0
        );
        // The escaped name round-trips through the parser.
        assert_eq!(
            value(
                &samples,
                "drainit_step_duration_seconds",
                &[
                    ("list", "drain"),
                    ("index", "0"),
                    ("step", "deregister \"a\"\\b\nc"),
                    ("outcome", "failed")
                ]
            ),
            0.25
        );
        assert_eq!(
            value(
                &samples,
                "drainit_step_duration_seconds",
                &[
                    ("list", "poststart"),
                    ("index", "0"),
                    ("step", "app listening"),
                    ("outcome", "ok")
                ]
            ),
            1.5
        );
        // Same-named steps are distinct series.
        assert_eq!(
            value(
                &samples,
                "drainit_step_duration_seconds",
                &[
                    ("list", "drain"),
                    ("index", "2"),
                    ("step", "sleep 5s"),
                    ("outcome", "skipped")
                ]
            ),
            0.0
        );
    }

    #[test]
    fn the_parser_rejects_what_prometheus_would() {
        for bad in [
            "x 1\n",                                   // no # TYPE
            "# TYPE x gauge\nx{a=\"b} 1\n",            // unterminated
            "# TYPE x gauge\nx{a=\"\\q\"} 1\n",        // bad escape
            "# TYPE x gauge\nx one\n",                 // not a float
            "# TYPE x gauge\nx 1\nx 2\n",              // duplicate series
            "# TYPE x gauge\nx{a=\"1\",a=\"2\"} 1\n",  // duplicate label
            "# TYPE x gauge\n# TYPE x counter\nx 1\n", // two types
        ] {
            let result = std::panic::catch_unwind(|| parse(bad));
            assert!(result.is_err(), "accepted {bad:?}");
        }
    }
}

//! The invariants of drainit's hostile-input tests, in one place for both
//! runners: the cargo-fuzz targets in `fuzz_targets/` (libFuzzer, run by
//! hand, see README.md) and the bounded, seeded proptest run in
//! `integration/hostile.rs` (run by `integration/test.sh`), which includes
//! this file as a module.
//!
//! Each `check_*` function takes one input and panics, with the input in the
//! message, when drainit breaks an invariant: a panic inside drainit's own
//! code, an error that names neither line nor key, a default step name that
//! shows URL userinfo or a query, a `--check` output that
//! does not read back as the same config, a signal or duration that does not
//! survive formatting and parsing, or an HTTP answer that is neither a
//! refusal (4xx) nor the endpoint's own answer.

use std::path::Path;
use std::time::Duration as StdDuration;

use drainit::config::signal::{self, Signal};
use drainit::config::steps::Action;
use drainit::config::{self, Config, Duration};

/// The path config errors are reported against.
pub const CONFIG_PATH: &str = "/etc/drainit/drainit.toml";

/// A config text: parsing never panics; an error names the file and, for
/// every problem, a line or a key; a valid config prints (as `--check`
/// does) to TOML that parses back to the same config. Returns whether the
/// text was a valid config.
pub fn check_config(text: &str) -> bool {
    let path = Path::new(CONFIG_PATH);
    match Config::parse(text, path) {
        Ok(config) => {
            check_default_names(&config, text);
            let printed = config.to_toml();
            match Config::parse(&printed, path) {
                Ok(again) => assert_eq!(
                    again, config,
                    "--check output reads back differently\n--- input:\n{text}\n--- printed:\n{printed}"
                ),
                Err(e) => panic!(
                    "--check output does not parse: {e}\n--- input:\n{text}\n--- printed:\n{printed}"
                ),
            }
            true
        }
        Err(e) => {
            assert!(
                !e.problems.is_empty(),
                "an error without problems: {text:?}"
            );
            let lines = text.lines().count() + 1;
            for p in &e.problems {
                assert!(
                    !p.message.trim().is_empty(),
                    "an empty message: {p:?}\n--- input:\n{text}"
                );
                assert!(
                    p.line.is_some() || p.key.is_some(),
                    "a problem that names neither line nor key: {p:?}\n--- input:\n{text}"
                );
                if let Some(line) = p.line {
                    assert!(
                        (1..=lines).contains(&line),
                        "line {line} is not in the text: {p:?}\n--- input:\n{text}"
                    );
                }
            }
            let shown = e.to_string();
            assert!(shown.starts_with(CONFIG_PATH), "{shown}");
            false
        }
    }
}

/// A step's default name never shows URL userinfo, a query or a fragment
/// (SPEC 4: `/status` and `/metrics` need no token), whatever the text.
fn check_default_names(config: &Config, text: &str) {
    for step in config
        .poststart
        .iter()
        .chain(&config.drain)
        .chain(&config.on_exit)
        .chain(&config.keepalive)
    {
        if step.name.is_some() || !matches!(step.action, Action::Http(_) | Action::WaitHttp(_)) {
            continue;
        }
        let name = step.display_name();
        let url = name.rsplit(' ').next().unwrap_or("");
        let authority = url
            .split_once("://")
            .map_or(url, |(_, rest)| rest.split('/').next().unwrap_or(""));
        assert!(
            !url.contains(['?', '#']) && !authority.contains('@'),
            "default name {name:?} shows userinfo, a query or a fragment\n--- input:\n{text}"
        );
    }
}

/// The environment `check_expand` expands from: a name of length 3n is set
/// to `<NAME>`, 3n+1 is set but empty, 3n+2 is unset.
pub fn env(name: &str) -> Option<String> {
    match name.len() % 3 {
        0 => Some(format!("<{name}>")),
        1 => Some(String::new()),
        _ => None,
    }
}

/// `${VAR}` expansion: never panics; an error quotes the string or names
/// the variable; what [`config::expand::escape`] prints expands back to itself.
pub fn check_expand(s: &str) {
    assert_eq!(
        config::expand::expand(&config::expand::escape(s), env),
        Ok(s.to_string()),
        "escape does not round-trip {s:?}"
    );
    match config::expand::expand(s, env) {
        Ok(out) => {
            if !s.contains('$') {
                assert_eq!(out, s);
            }
        }
        Err(e) => assert!(
            e.contains(&format!("{s:?}")) || e.contains("environment variable"),
            "{e}"
        ),
    }
}

/// A signal name or number (and a `-r FROM:TO` spec): never panics; a
/// parsed signal survives its name, its `SIG` form, its number and lower
/// case; an error quotes the input. Returns whether it named a signal.
pub fn check_signal(s: &str) -> bool {
    let valid = match s.parse::<Signal>() {
        Ok(sig) => {
            check_signal_round_trip(sig);
            true
        }
        Err(e) => {
            assert!(e.to_string().contains(&format!("{s:?}")), "{e}");
            false
        }
    };
    match signal::parse_rewrite(s) {
        Ok((from, to)) => assert_eq!(
            signal::parse_rewrite(&format!(
                "{}:{}",
                from.name(),
                to.map_or_else(|| "0".to_string(), Signal::name)
            )),
            Ok((from, to)),
            "{s:?}"
        ),
        Err(e) => assert!(e.contains(&format!("{s:?}")), "{e}"),
    }
    valid
}

/// A signal number: accepted exactly when it is 1..=SIGRTMAX, and then
/// round-trips.
pub fn check_signal_number(n: i64) {
    let valid = (1..=i64::from(signal::sigrtmax())).contains(&n);
    let parsed = n.to_string().parse::<Signal>();
    assert_eq!(parsed.is_ok(), valid, "{n}: {parsed:?}");
    if let Ok(sig) = parsed {
        assert_eq!(i64::from(sig.number()), n);
        check_signal_round_trip(sig);
    }
}

fn check_signal_round_trip(sig: Signal) {
    let name = sig.name();
    assert_eq!(name.parse(), Ok(sig), "name {name:?}");
    assert_eq!(name.to_ascii_lowercase().parse(), Ok(sig), "name {name:?}");
    assert_eq!(sig.to_string().parse(), Ok(sig), "{sig}");
    assert_eq!(sig.number().to_string().parse(), Ok(sig), "{sig}");
    assert_eq!(Signal::from_number(sig.number()), Ok(sig), "{sig}");
}

/// A duration string: never panics; a parsed duration is at most
/// [`config::MAX_DURATION`] and reads back from its printed form; an error
/// quotes the input. Returns whether it was a valid duration.
pub fn check_duration(s: &str) -> bool {
    match config::parse_duration(s) {
        Ok(d) => {
            assert!(d <= config::MAX_DURATION, "{s:?} gave {d:?}");
            check_duration_value(d);
            true
        }
        Err(e) => {
            assert!(e.contains(&format!("{s:?}")), "{e}");
            false
        }
    }
}

/// A duration value prints (as `--check` does) to a string that parses back
/// to it, or is refused when it is over the maximum.
pub fn check_duration_value(d: StdDuration) {
    let printed = Duration(d).to_string();
    match config::parse_duration(&printed) {
        Ok(again) => assert_eq!(again, d, "{printed:?}"),
        Err(e) => assert!(
            d > config::MAX_DURATION,
            "{d:?} printed as {printed:?}: {e}"
        ),
    }
}

/// One answer read back from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub head: String,
}

/// Splits what the server sent into complete answers; panics on bytes that
/// are not HTTP/1.1 answers (a torn or garbled answer is a server bug).
pub fn answers(bytes: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "not an HTTP answer ({other:?}): {:?}",
                String::from_utf8_lossy(rest)
            ),
        };
        // The answer to HEAD has a Content-Length but no body: nothing or
        // the next answer follows (drainit's bodies never start like one).
        let bodiless = rest.len() == head_len || rest[head_len..].starts_with(b"HTTP/1.");
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| {
                std::str::from_utf8(h.value)
                    .ok()?
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or(0);
        let length = if bodiless { 0 } else { length };
        assert!(
            rest.len() >= head_len + length,
            "a torn answer: {:?}",
            String::from_utf8_lossy(rest)
        );
        out.push(Answer {
            status: response.code.unwrap_or(0),
            head: String::from_utf8_lossy(&rest[..head_len]).into_owned(),
        });
        rest = &rest[head_len + length..];
    }
    out
}

/// What the first request in `sent` is, as a client-side parser sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Not a request at all: the server must refuse it or close.
    Malformed,
    /// The head is not complete: the server waits (until the header
    /// timeout or the client's EOF), then closes; it may refuse too.
    Partial,
    /// A complete head; the server may still refuse what httparse allows.
    Complete,
}

/// Classifies the first request in `sent`.
pub fn shape(sent: &[u8]) -> Shape {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(sent) {
        Ok(httparse::Status::Complete(_)) => Shape::Complete,
        Ok(httparse::Status::Partial) => Shape::Partial,
        Err(_) => Shape::Malformed,
    }
}

/// The server's answers to `sent` (written, then the write side closed):
/// every answer is well-formed; the answer to a malformed request is a
/// refusal (4xx, or 505 for an HTTP version it does not speak) and the
/// last one; no answer is a 5xx of drainit's own (the test server has a
/// token, so no request can start anything, and nothing in it can fail).
pub fn check_exchange(sent: &[u8], received: &[u8]) {
    let answers = answers(received);
    let refusal = |s: u16| (400..500).contains(&s) || s == 505;
    for a in &answers {
        assert!(
            a.status == 200 || refusal(a.status),
            "answer {} to {:?}:\n{}",
            a.status,
            String::from_utf8_lossy(sent),
            a.head
        );
    }
    if shape(sent) == Shape::Malformed {
        if let Some(first) = answers.first() {
            assert!(
                refusal(first.status) && answers.len() == 1,
                "a malformed request got {answers:?}: {:?}",
                String::from_utf8_lossy(sent)
            );
        }
    }
}

//! Hostile input: property tests of config, signal, duration and HTTP path parsing.
//!
//! The bounded, deterministic part of the hostile-input work (the unbounded
//! part is the cargo-fuzz crate in `integration/fuzz/`, run by hand). Every
//! property runs a fixed number of cases from a fixed seed, so a run is the
//! same on every machine and a failure reproduces; the invariants are the
//! fuzz crate's `src/lib.rs`, included here as `invariants`:
//!
//! - config text (arbitrary, mutated from the shipped examples and docs, and
//!   generated key by key): never a panic; errors name file and line or key;
//!   what `--check` prints reads back as the same config;
//! - `${VAR}` expansion and its escape; signal names, numbers and `-r` specs;
//!   durations: never a panic, and formatting then parsing gives the value
//!   back;
//! - the HTTP server of the real binary, as PID 1: garbage, oversized heads,
//!   invalid UTF-8, huge paths, pipelined junk; every answer is the
//!   endpoint's or a refusal (4xx), the connection closes, and drainit stays
//!   up and keeps answering `/healthz`.

#[path = "fuzz/src/lib.rs"]
mod invariants;
mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed, TestRunner};

use invariants::{answers, check_exchange};
use util::{wait_until, Drainit, Launch, Scenario, DRAINIT};

/// One seed for every property: a failure reproduces on any machine.
const SEED: u64 = 0x0064_7261_696e_6974;

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(SEED),
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })
}

/// Runs `check` on `cases` values of `strategy`; on a failure, panics with
/// the (shrunk) input and the broken invariant. `check` says whether the
/// input was valid; at least `min_valid` of the cases must be, so the
/// round-trip invariants are exercised, not just the error paths.
fn run<S: Strategy, R: Into<Valid>>(
    name: &str,
    cases: u32,
    min_valid: u32,
    strategy: S,
    check: impl Fn(S::Value) -> R,
) where
    S::Value: std::fmt::Debug,
{
    let started = Instant::now();
    let valid = std::cell::Cell::new(0u32);
    let result = runner(cases).run(&strategy, |value| {
        if matches!(check(value).into(), Valid(true)) {
            valid.set(valid.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    let valid = valid.get();
    eprintln!(
        "{name}: {cases} cases ({valid} valid) in {:?}",
        started.elapsed()
    );
    assert!(
        valid >= min_valid,
        "{name}: only {valid} of {cases} cases were valid inputs, expected at least {min_valid}"
    );
}

/// Whether a checked input was valid (`()` counts as valid).
struct Valid(bool);

impl From<bool> for Valid {
    fn from(valid: bool) -> Valid {
        Valid(valid)
    }
}

impl From<()> for Valid {
    fn from((): ()) -> Valid {
        Valid(true)
    }
}

// --- config -----------------------------------------------------------------

/// The config texts users start from: the shipped example, SPEC's example,
/// and every TOML block of the configuration reference.
fn seed_configs() -> Vec<String> {
    let mut seeds = vec![
        include_str!("../examples/drainit.toml").to_string(),
        SPEC_EXAMPLE.to_string(),
    ];
    let seeds_end = seeds.len();
    let docs = include_str!("../docs/configuration.md");
    let mut block: Option<String> = None;
    for line in docs.lines() {
        match (&mut block, line.trim_end()) {
            (None, "```toml") => block = Some(String::new()),
            (Some(text), "```") => {
                seeds.push(std::mem::take(text));
                block = None;
            }
            (Some(text), line) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    // The docs use ${REGISTRY} and ${POD_NAME}, which the pod sets; the
    // test process must not touch its environment, so they get defaults.
    for seed in &mut seeds[seeds_end..] {
        *seed = with_defaults(seed);
    }
    seeds
}

/// `${NAME}` written as `${NAME:-seed}`.
fn with_defaults(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let (head, tail) = rest.split_at(start + 2);
        out.push_str(head);
        match tail.find('}') {
            Some(end) if !tail[..end].contains(":-") => {
                out.push_str(&tail[..end]);
                out.push_str(":-seed}");
                rest = &tail[end + 1..];
            }
            _ => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// SPEC section 9, with defaults for its variables.
const SPEC_EXAMPLE: &str = r#"[app]
command = ["java", "-jar", "/app/app.jar"]

[shutdown]
grace_period = "45s"
stop_timeout = "20s"
exit_code_map = { 143 = 0 }

[http]
token_file = "/var/run/secrets/drainit/token"

[readiness]
check = { http = "http://127.0.0.1:8080/actuator/health/readiness" }

[[poststart]]
name = "app listening"
wait_tcp = "127.0.0.1:8080"
timeout = "90s"

[[drain]]
name = "deregister from registry"
http = { method = "PUT", url = "http://${REGISTRY:-127.0.0.1:8500}/v1/agent/service/deregister/${POD_NAME:-web-0}" }
timeout = "3s"

[[drain]]
name = "wait for endpoints to drop this pod"
sleep = "5s"

[[drain]]
name = "in-flight requests finish"
wait_connections = { port = 8080 }
timeout = "15s"
"#;

/// Fragments that break parsers: syntax, expansion, numbers and durations
/// at their limits, signals out of range, odd characters.
const FRAGMENTS: &[&str] = &[
    "${",
    "$${",
    "${HOME}",
    "${DRAINIT_HOSTILE_UNSET}",
    "${X:-",
    "${:-x}",
    "}",
    "\"",
    "'",
    "\"\"\"",
    "[",
    "]",
    "[[drain]]\n",
    "[shutdown]\n",
    "=",
    "\n",
    "\r\n",
    "#",
    ",",
    "{",
    "0",
    "-1",
    "1e400",
    "nan",
    "inf",
    "9223372036854775807",
    "18446744073709551616",
    "\"584542046090years\"",
    "\"100years 1ns\"",
    "\"0s\"",
    "\"1ms\"",
    "\"RTMIN+2147483647\"",
    "\"SIGKILL\"",
    "\"CHLD\"",
    "65",
    "\"32\"",
    "\u{0}",
    "\u{feff}",
    "ü",
    "\u{10ffff}",
    "true",
    "[]",
    "{}",
];

/// The keys of every section, to generate configs key by key.
const KEYS: &[(&str, &[&str])] = &[
    (
        "app",
        &[
            "command",
            "user",
            "workdir",
            "env",
            "restart",
            "restart_backoff",
        ],
    ),
    ("signals", &["forward_to", "rewrite", "ignore"]),
    (
        "shutdown",
        &[
            "triggers",
            "stop_signal",
            "grace_period",
            "stop_timeout",
            "kill_margin",
            "orphan_grace",
            "on_exit_timeout",
            "prestop_stops_app",
            "exit_code_map",
        ],
    ),
    (
        "http",
        &[
            "listen",
            "token",
            "token_file",
            "allow",
            "max_connections",
            "header_timeout",
        ],
    ),
    ("readiness", &["check"]),
    ("liveness", &["check"]),
    ("termination_message", &["path"]),
    (
        "[drain]",
        &[
            "name",
            "timeout",
            "on_failure",
            "retries",
            "retry_delay",
            "sleep",
            "http",
            "exec",
            "signal",
            "wait_tcp",
            "wait_http",
            "wait_connections",
            "wait_quiet",
            "user",
            "workdir",
            "env",
        ],
    ),
    (
        "[poststart]",
        &["exec", "wait_tcp", "timeout", "on_failure"],
    ),
    ("[on_exit]", &["exec", "http", "sleep"]),
];

/// A TOML value of the kinds the config has, plausible and hostile.
fn value() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("TERM".to_string()),
        Just("SIGQUIT".to_string()),
        Just("RTMIN+3".to_string()),
        Just("rtmax-1".to_string()),
        Just("15".to_string()),
        Just("KILL".to_string()),
        Just("33".to_string()),
        Just("30s".to_string()),
        Just("1m 30s".to_string()),
        Just("1500ms".to_string()),
        Just("0s".to_string()),
        Just("100years".to_string()),
        Just("group".to_string()),
        Just("on-failure".to_string()),
        Just("abort".to_string()),
        Just("127.0.0.1:7979".to_string()),
        Just("[::]:0".to_string()),
        Just("off".to_string()),
        Just("10.0.0.0/8".to_string()),
        Just("http://127.0.0.1:1/x".to_string()),
        Just("1000:1000".to_string()),
        Just("nobody".to_string()),
        Just("${HOME}".to_string()),
        Just("$${HOME}".to_string()),
        Just("${DRAINIT_HOSTILE_UNSET:-dflt}".to_string()),
        "[0-9]{1,22}(ns|us|ms|s|m|h|d|w|M|y)",
        "[a-zA-Z0-9_$:{}+-]{0,16}",
        any::<String>(),
    ];
    let quoted = word.prop_map(|w| toml_quote(&w));
    let leaf = prop_oneof![
        4 => quoted,
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => (0u32..300).prop_map(|n| n.to_string()),
        1 => any::<bool>().prop_map(|b| b.to_string()),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|items| format!("[{}]", items.join(", "))),
            vec(
                (
                    prop_oneof![
                        Just("TERM".to_string()),
                        Just("143".to_string()),
                        Just("url".to_string()),
                        Just("method".to_string()),
                        Just("initial".to_string()),
                        Just("max".to_string()),
                        Just("http".to_string()),
                        Just("tcp".to_string()),
                        Just("timeout".to_string()),
                        Just("port".to_string()),
                        "[A-Za-z0-9_]{1,8}",
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|pairs| {
                let body: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{} = {v}", toml_quote(k)))
                    .collect();
                format!("{{ {} }}", body.join(", "))
            }),
        ]
    })
}

/// `s` as a TOML basic string.
fn toml_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A config generated section by section from the known keys (and some
/// unknown ones), with values from [`value`].
fn generated_config() -> impl Strategy<Value = String> {
    let section = (0..KEYS.len()).prop_flat_map(|i| {
        let (name, keys) = KEYS[i];
        let key = prop_oneof![
            9 => proptest::sample::select(keys.to_vec()).prop_map(str::to_string),
            1 => "[a-z_]{1,12}",
        ];
        (Just(name), vec((key, value()), 0..5))
    });
    vec(section, 0..6).prop_map(|sections| {
        let mut text = String::new();
        for (name, pairs) in sections {
            text.push_str(&format!("[{name}]\n"));
            for (key, value) in pairs {
                text.push_str(&format!("{key} = {value}\n"));
            }
            text.push('\n');
        }
        text
    })
}

/// One edit of a seed text.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    /// Replaces the value on the line at this position.
    Value(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let fragment = prop_oneof![
        3 => proptest::sample::select(FRAGMENTS.to_vec()).prop_map(str::to_string),
        1 => any::<String>(),
    ];
    prop_oneof![
        (any::<usize>(), fragment.clone()).prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), prop_oneof![fragment, value()]).prop_map(|(at, v)| Edit::Value(at, v)),
    ]
}

/// The largest char boundary of `s` at or below `at % (len + 1)`.
fn boundary(s: &str, at: usize) -> usize {
    let mut at = at % (s.len() + 1);
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(mut text: String, edits: &[Edit]) -> String {
    for e in edits {
        match e {
            Edit::Insert(at, s) => {
                let at = boundary(&text, *at);
                text.insert_str(at, s);
            }
            Edit::Delete(at, n) => {
                let start = boundary(&text, *at);
                let end = boundary(&text, start.saturating_add(*n).min(text.len()));
                text.replace_range(start..end.max(start), "");
            }
            Edit::Value(at, v) => {
                let at = boundary(&text, *at);
                let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
                if let Some(eq) = text[line_start..line_end].find('=') {
                    text.replace_range(line_start + eq + 1..line_end, &format!(" {v}"));
                }
            }
        }
    }
    text
}

#[test]
fn config_text_never_panics_and_errors_name_line_or_key() {
    run("arbitrary config text", 15000, 0, any::<String>(), |text| {
        invariants::check_config(&text)
    });
    run(
        "config-like text",
        15000,
        500,
        "([a-z_\\[\\]]{0,12} ?= ?[\"0-9a-z${}:\\[\\],-]{0,20}\n){0,6}",
        |text| invariants::check_config(&text),
    );
}

#[test]
fn mutated_examples_never_panic_and_round_trip_through_check() {
    let seeds = seed_configs();
    assert!(seeds.len() >= 3, "seed configs: {}", seeds.len());
    // The shipped example and SPEC's are valid configs; a docs block may be
    // a fragment, and is a seed either way.
    for (i, seed) in seeds.iter().enumerate() {
        let valid = invariants::check_config(seed);
        assert!(valid || i >= 2, "seed {i} is not a valid config:\n{seed}");
    }
    let strategy = (0..seeds.len(), vec(edit(), 1..6));
    run(
        "mutated example configs",
        20000,
        1000,
        strategy,
        |(i, edits)| invariants::check_config(&apply(seeds[i].clone(), &edits)),
    );
}

#[test]
fn generated_configs_never_panic_and_round_trip_through_check() {
    run(
        "generated configs",
        20000,
        2000,
        generated_config(),
        |text| invariants::check_config(&text),
    );
}

#[test]
fn env_expansion_never_panics_and_escape_round_trips() {
    run("arbitrary expansions", 20000, 20000, any::<String>(), |s| {
        invariants::check_expand(&s)
    });
    run(
        "dense expansions",
        20000,
        20000,
        "[$${}:\\-_a-zA-Z0-9 ]{0,40}",
        |s| invariants::check_expand(&s),
    );
}

// --- signals and durations ---------------------------------------------------

#[test]
fn signal_names_numbers_and_rewrite_specs_round_trip() {
    for n in -2..=70 {
        invariants::check_signal_number(n);
    }
    run("arbitrary signal names", 20000, 0, any::<String>(), |s| {
        invariants::check_signal(&s)
    });
    run(
        "signal-like names",
        20000,
        2000,
        "(?i) ?(sig)?(rt(min|max)[-+]{0,2}[0-9+-]{0,12}|hup|term|quit|kill|usr1|iot|cld|[0-9]{1,12}) ?(:(sig)?[a-z0-9+-]{0,10})?",
        |s| invariants::check_signal(&s),
    );
    run(
        "signal numbers",
        20000,
        20000,
        any::<i64>(),
        invariants::check_signal_number,
    );
}

#[test]
fn durations_never_panic_and_round_trip() {
    run("arbitrary durations", 20000, 0, any::<String>(), |s| {
        invariants::check_duration(&s)
    });
    run(
        "duration-like strings",
        20000,
        300,
        "[0-9]{1,25} ?(ns|us|ms|msec|s|sec|m|min|h|hr|d|days|w|M|months|y|years)( ?[0-9]{1,22}[a-z]{1,6}){0,4}",
        |s| invariants::check_duration(&s),
    );
    run(
        "duration values",
        20000,
        20000,
        (any::<u64>(), 0u32..1_000_000_000),
        |(secs, nanos)| invariants::check_duration_value(Duration::new(secs, nanos)),
    );
    let max = drainit::config::MAX_DURATION.as_secs();
    run(
        "durations near the maximum",
        2000,
        2000,
        (max - 1000..max + 1000, 0u32..1_000_000_000),
        |(secs, nanos)| invariants::check_duration_value(Duration::new(secs, nanos)),
    );
}

// --- the HTTP server of the real binary -------------------------------------

/// The token of the test server: no generated request carries it, so none
/// can start the drain.
const TOKEN: &str = "hostile-token-3f9a";

/// drainit as PID 1 of a PID namespace, serving on a free port, running
/// `sleep`; killed on drop.
struct Server {
    /// Declared before `_sc`: drainit dies before its directory goes.
    drainit: Drainit,
    port: u16,
    _sc: Scenario,
}

impl Server {
    fn start() -> Server {
        let sc = Scenario::new();
        let port = util::free_port();
        let config = sc.config(&format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\nheader_timeout = \"2s\"\n"
        ));
        let drainit = Drainit::launcher(&sc, Launch::Pid1)
            .listen(&format!("127.0.0.1:{port}"))
            .start(&["-c", &config, "--", "sleep", "600"]);
        let server = Server {
            drainit,
            port,
            _sc: sc,
        };
        wait_until("drainit's /healthz to answer 200", || {
            let statuses = server.try_statuses(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")?;
            (statuses == [200]).then_some(())
        });
        server
    }

    fn log(&self) -> String {
        self.drainit.stderr()
    }

    /// Panics if drainit (and so its `unshare` parent) has exited.
    fn assert_alive(&mut self, after: &[u8]) {
        if let Some((_, status)) = self.drainit.exited() {
            panic!(
                "drainit exited ({status}) after {:?}\n--- log:\n{}",
                String::from_utf8_lossy(after),
                self.log()
            );
        }
    }

    /// Sends `bytes` on a fresh connection, closes the write side, and
    /// returns what came back before the server closed.
    fn exchange(&self, bytes: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to drainit");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        // drainit may refuse and close before reading everything.
        let _ = stream.write_all(bytes);
        let _ = stream.shutdown(Shutdown::Write);
        let mut received = Vec::new();
        match stream.read_to_end(&mut received) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!(
                "drainit neither answered nor closed within 10s ({e}) after {:?}",
                String::from_utf8_lossy(bytes)
            ),
        }
        received
    }

    fn try_statuses(&self, bytes: &[u8]) -> Option<Vec<u16>> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.write_all(bytes).ok()?;
        stream.shutdown(Shutdown::Write).ok()?;
        let mut received = Vec::new();
        stream.read_to_end(&mut received).ok()?;
        Some(answers(&received).iter().map(|a| a.status).collect())
    }

    fn statuses(&self, bytes: &[u8]) -> Vec<u16> {
        let statuses = answers(&self.exchange(bytes))
            .iter()
            .map(|a| a.status)
            .collect();
        statuses
    }

    /// drainit is up, serving, ready and not draining.
    fn assert_healthy(&mut self, after: &[u8]) {
        self.assert_alive(after);
        assert_eq!(
            self.statuses(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
            [200],
            "/healthz after {:?}",
            String::from_utf8_lossy(after)
        );
    }
}

/// Bytes of one request line or header, plausible and hostile.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just(b"GET".to_vec()),
        Just(b"POST".to_vec()),
        Just(b"HEAD".to_vec()),
        Just(b"PUT".to_vec()),
        Just(b"DELETE".to_vec()),
        Just(b"OPTIONS".to_vec()),
        Just(b"CONNECT".to_vec()),
        Just(b"PRI".to_vec()),
        Just(b"get".to_vec()),
        Just(b"G\0T".to_vec()),
        Just(Vec::new()),
        "[A-Z]{1,12}".prop_map(String::into_bytes),
        vec(any::<u8>(), 1..8),
    ];
    let target = prop_oneof![
        Just(b"/healthz".to_vec()),
        Just(b"/readyz".to_vec()),
        Just(b"/status".to_vec()),
        Just(b"/metrics".to_vec()),
        Just(b"/prestop".to_vec()),
        Just(b"/poststart".to_vec()),
        Just(b"/drain".to_vec()),
        Just(b"*".to_vec()),
        Just(b"http://x/healthz".to_vec()),
        Just(b"//healthz".to_vec()),
        Just(b"/healthz?probe=1&x=%zz".to_vec()),
        Just(b"/%2e%2e/%00".to_vec()),
        Just(b"/\xff\xfe\xc3(".to_vec()),
        Just(b"/a b".to_vec()),
        Just(Vec::new()),
        (1usize..70_000).prop_map(|n| {
            let mut p = b"/".to_vec();
            p.resize(n, b'a');
            p
        }),
        "/[a-z/?#%.]{0,30}".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..40),
    ];
    let version = prop_oneof![
        4 => Just(b" HTTP/1.1".to_vec()),
        1 => Just(b" HTTP/1.0".to_vec()),
        1 => Just(b" HTTP/2.0".to_vec()),
        1 => Just(b" HTTP/0.9".to_vec()),
        1 => Just(b" http/1.1".to_vec()),
        1 => Just(b" HTTP/1.1 extra".to_vec()),
        1 => Just(b"".to_vec()),
        1 => Just(b" HTTP/1.1\0".to_vec()),
    ];
    let name = prop_oneof![
        Just(b"Host".to_vec()),
        Just(b"Authorization".to_vec()),
        Just(b"Content-Length".to_vec()),
        Just(b"Transfer-Encoding".to_vec()),
        Just(b"Connection".to_vec()),
        Just(b"Expect".to_vec()),
        Just(b"Upgrade".to_vec()),
        Just(b"Bad Name".to_vec()),
        Just(b"".to_vec()),
        "[A-Za-z-]{1,20}".prop_map(String::into_bytes),
        vec(any::<u8>(), 1..10),
    ];
    let header_value = prop_oneof![
        Just(b"Bearer nope".to_vec()),
        Just(b"Bearer ".to_vec()),
        Just(b"bearer\t\t".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"18446744073709551616".to_vec()),
        Just(b"5".to_vec()),
        Just(b"chunked".to_vec()),
        Just(b"gzip, chunked".to_vec()),
        Just(b"close".to_vec()),
        Just(b"keep-alive".to_vec()),
        Just(b"100-continue".to_vec()),
        Just(b"h2c".to_vec()),
        Just(b"x\r\n folded".to_vec()),
        (1usize..40_000).prop_map(|n| vec![b'v'; n]),
        vec(any::<u8>(), 0..30),
    ];
    let eol = prop_oneof![
        6 => Just(b"\r\n".to_vec()),
        1 => Just(b"\n".to_vec()),
        1 => Just(b"\r".to_vec()),
    ];
    let headers = prop_oneof![
        8 => vec((name, header_value), 0..6),
        1 => (100usize..200).prop_map(|n| (0..n)
            .map(|i| (format!("X-H{i}").into_bytes(), b"v".to_vec()))
            .collect()),
    ];
    let body = prop_oneof![
        3 => Just(Vec::new()),
        1 => vec(any::<u8>(), 0..64),
        1 => Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        1 => Just(b"zz\r\n".to_vec()),
    ];
    (method, target, version, headers, eol, body).prop_map(
        |(method, target, version, headers, eol, body)| {
            let mut r = method;
            r.push(b' ');
            r.extend(target);
            r.extend(version);
            r.extend(&eol);
            r.extend(b"Host: drainit\r\n");
            for (name, value) in headers {
                r.extend(name);
                r.extend(b": ");
                r.extend(value);
                r.extend(&eol);
            }
            r.extend(&eol);
            r.extend(body);
            r
        },
    )
}

/// What one connection sends: requests (pipelined), junk, or both.
fn connection() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(request(), 1..4).prop_map(|rs| rs.concat()),
        2 => (vec(request(), 1..3), vec(any::<u8>(), 1..200)).prop_map(|(rs, junk)| {
            let mut all = rs.concat();
            all.extend(junk);
            all
        }),
        2 => vec(any::<u8>(), 0..2048),
        1 => Just(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        1 => Just(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec()),
    ]
}

#[test]
fn the_server_refuses_or_closes_on_hostile_requests_and_stays_up() {
    let server = std::cell::RefCell::new(Server::start());
    let n = std::cell::Cell::new(0u32);
    let started = Instant::now();
    let cases = 2000;
    let result = runner(cases).run(&connection(), |sent| {
        let mut server = server.borrow_mut();
        let received = server.exchange(&sent);
        check_exchange(&sent, &received);
        n.set(n.get() + 1);
        if n.get() % 50 == 0 {
            server.assert_healthy(&sent);
        } else {
            server.assert_alive(&sent);
        }
        Ok(())
    });
    let mut server = server.into_inner();
    if let Err(e) = result {
        panic!(
            "hostile requests: {e}\n--- drainit's log:\n{}",
            server.log()
        );
    }
    eprintln!(
        "hostile requests: {cases} connections in {:?}",
        started.elapsed()
    );
    server.assert_healthy(b"(the end)");
    assert_eq!(
        server.statuses(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"),
        [200],
        "a hostile request started a shutdown\n{}",
        server.log()
    );
    let log = server.log();
    assert!(
        !log.contains("panicked") && !log.contains("drainit bug"),
        "{log}"
    );
}

#[test]
fn named_hostile_requests_get_the_expected_refusals() {
    let mut server = Server::start();
    let big = |n: usize| vec![b'a'; n];
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "pipelined probes then junk",
            [
                &b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
                b"\x00\x01junk\r\n\r\n",
            ]
            .concat(),
            &[200, 200, 404, 400],
        ),
        (
            "a head over the buffer limit",
            [
                &b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "[..],
                &big(64 * 1024),
                b"\r\n\r\n",
            ]
            .concat(),
            &[431],
        ),
        (
            "a path of 100 KiB",
            [
                &b"GET /"[..],
                &big(100 * 1024),
                b" HTTP/1.1\r\nHost: x\r\n\r\n",
            ]
            .concat(),
            &[431],
        ),
        (
            "invalid UTF-8 in the path",
            b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "a NUL in a header value",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "conflicting lengths",
            b"POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
            &[400],
        ),
        (
            "a wrong token on /prestop",
            format!("GET /prestop HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}x\r\n\r\n")
                .into_bytes(),
            &[401],
        ),
        (
            "HTTP/2 prior knowledge (closed without an answer)",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            &[],
        ),
        ("nothing at all", Vec::new(), &[]),
        ("half a request line", b"GET /heal".to_vec(), &[]),
    ];
    for (what, sent, expected) in cases {
        let received = server.exchange(&sent);
        check_exchange(&sent, &received);
        let statuses: Vec<u16> = answers(&received).iter().map(|a| a.status).collect();
        assert_eq!(statuses, expected, "{what}");
        server.assert_healthy(&sent);
    }
}

#[test]
fn a_request_followed_by_a_half_close_is_answered() {
    // Regression (found by the hostile-request property): a client that
    // sends its request and shuts down its write side got no answer at
    // random (about one in five), because hyper dropped the request on
    // reading that EOF before the answer was ready.
    let mut server = Server::start();
    for i in 0..200 {
        assert_eq!(
            server.statuses(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
            [200],
            "request {i}"
        );
    }
    server.assert_alive(b"200 half-closed requests");
}

#[test]
fn a_head_that_never_ends_is_closed_at_the_header_timeout() {
    let mut server = Server::start();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .expect("write half a head");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("set a read timeout");
    // header_timeout is 2s; the read returns when drainit closes (or the
    // safety net fails the test).
    let mut received = Vec::new();
    let closed = stream.read_to_end(&mut received);
    assert!(
        closed.is_ok()
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "not closed: {closed:?}"
    );
    assert!(
        received.is_empty() || answers(&received).iter().all(|a| a.status == 408),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    server.assert_healthy(b"a slow head");
}

// --- secrets never show --------------------------------------------------------

/// Step templates for [`default_names_status_and_metrics_never_show_secrets`]:
/// `@P@` and `@T@` are `${DRAINIT_SECRET_P}` and `${DRAINIT_SECRET_T}`,
/// `@L@` a password written literally in URL userinfo or a query, `@C@` a
/// closed port (every request fails at once).
const SECRET_STEPS: &[&str] = &[
    "http = { url = \"http://u:@P@@127.0.0.1:@C@/a/@T@?token=@T@\", method = \"PUT\", headers = { X-Token = \"@T@\" }, body = \"@P@\" }\ntimeout = \"300ms\"",
    "http = { url = \"http://admin:@L@@127.0.0.1:@C@/x?k=@L@&t=@T@\" }\ntimeout = \"300ms\"",
    "exec = [\"true\", \"@T@\", \"--password=@P@\", \"http://a:@P@@h/?q=@T@\", \"https://@L@@h\"]",
    "wait_http = { url = \"http://@P@:@L@@127.0.0.1:@C@/h?t=@T@#@P@\" }\ntimeout = \"200ms\"",
    "http = { url = \"http://@P@@127.0.0.1:@C@/@P@\", method = \"POST\", headers = { Authorization = \"Bearer @T@\" } }\ntimeout = \"300ms\"",
    "wait_tcp = \"127.0.0.1:@C@\"\ntimeout = \"200ms\"",
];

/// One HTTP/1.1 request to drainit on `port`: (status, body).
fn http_call(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let response = util::http::call(port, method, path).ok()?;
    Some((response.status, response.body))
}

/// Runs the drain of `steps` (indexes into [`SECRET_STEPS`]) in the real
/// binary with the secrets in its environment and checks that no secret
/// shows in `/status`, `/metrics` or the log, and that each step's default
/// name is there, built from the unexpanded text.
fn check_secrets_never_show(steps: &[usize], p: &str, t: &str, l: &str) {
    let sc = Scenario::new();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        l.local_addr().expect("its address").port()
    };
    let port = util::free_port();
    let mut config = format!("[http]\nlisten = \"127.0.0.1:{port}\"\n");
    for &i in steps {
        let step = SECRET_STEPS[i]
            .replace("@P@", "${DRAINIT_SECRET_P}")
            .replace("@T@", "${DRAINIT_SECRET_T}")
            .replace("@L@", l)
            .replace("@C@", &closed.to_string());
        config.push_str(&format!("\n[[drain]]\n{step}\n"));
    }
    let path = sc.config(&config);
    let drainit = Drainit::launcher(&sc, Launch::Direct)
        .listen(&format!("127.0.0.1:{port}"))
        .env("DRAINIT_SECRET_P", p)
        .env("DRAINIT_SECRET_T", t)
        .start(&["-c", &path, "--", "sleep", "600"]);
    let started = wait_until("POST /drain to be accepted", || {
        http_call(port, "POST", "/drain").filter(|(status, _)| *status == 202)
    });
    drop(started);
    wait_until("the drain to finish", || {
        http_call(port, "GET", "/drain").filter(|(status, _)| *status == 200)
    });
    let (_, status) = http_call(port, "GET", "/status").expect("/status");
    let (_, metrics) = http_call(port, "GET", "/metrics").expect("/metrics");
    drainit.signal(libc::SIGTERM);
    let (_, exit) = drainit
        .wait_exit(util::TIMEOUT)
        .expect("drainit exits after SIGTERM");
    let log_text = drainit.stderr();
    let all =
        format!("{config}\n--- /status:\n{status}\n--- /metrics:\n{metrics}\n--- log:\n{log_text}");
    // The app's own code after the stop signal (143), not a crash.
    assert_eq!(exit.code(), Some(143), "drainit: {exit}\n{all}");
    for (what, text) in [
        ("/status", &status),
        ("/metrics", &metrics),
        ("the log", &log_text),
    ] {
        for secret in [p, t, l] {
            assert!(!text.contains(secret), "{what} shows {secret:?}\n{all}");
        }
    }
    for &i in steps {
        let expected = match i {
            0 => format!("http PUT http://127.0.0.1:{closed}/a/${{DRAINIT_SECRET_T}}"),
            1 => format!("http GET http://127.0.0.1:{closed}/x"),
            2 => "exec true ${DRAINIT_SECRET_T} --password=${DRAINIT_SECRET_P} http://h/ https://h"
                .to_string(),
            3 => format!("wait_http http://127.0.0.1:{closed}/h"),
            4 => format!("http POST http://127.0.0.1:{closed}/${{DRAINIT_SECRET_P}}"),
            _ => format!("wait_tcp 127.0.0.1:{closed}"),
        };
        assert!(
            status.contains(&expected),
            "no step named {expected:?}\n{all}"
        );
    }
}

#[test]
fn default_names_status_and_metrics_never_show_secrets() {
    // Regression (issue 9): default names were built after `${VAR}`
    // expansion and kept URL userinfo and queries, on endpoints that need
    // no token.
    run(
        "secrets in steps",
        8,
        8,
        (
            vec(0..SECRET_STEPS.len(), 1..5),
            "[a-z]{4}[0-9]{8}",
            "[A-Z]{4}[0-9]{8}",
            "[a-z]{3}[A-Z]{3}[0-9]{6}",
        ),
        |(steps, p, t, l)| check_secrets_never_show(&steps, &p, &t, &l),
    );
}

// --- the binary's --check -----------------------------------------------------

fn check(config: &str) -> (i32, String, String) {
    let out = Command::new(DRAINIT)
        .args(["--check", "--listen", "off", "-c", config])
        .env_remove("DRAINIT_CONFIG")
        .env_remove("DRAINIT_LISTEN")
        .output()
        .expect("run drainit --check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_output_checks_again_to_the_same_output() {
    // `$${` is a literal `${`: the printed config must keep it literal, or
    // the second --check expands HOME (regression).
    let sc = Scenario::new();
    let config = sc.config(
        "[app]\ncommand = [\"sh\", \"-c\", \"echo $${HOME} $$${X}\"]\nenv = { A = \"$${B:-c}\" }\n\n[shutdown]\ngrace_period = \"100years\"\n\n[[drain]]\nexec = [\"echo\", \"$${PATH}\"]\n",
    );
    let (code, first, err) = check(&config);
    assert_eq!(code, 0, "{err}");
    assert!(first.contains("$${HOME}"), "{first}");
    let again = sc.path("again.toml");
    std::fs::write(&again, &first).expect("write the printed config");
    let (code, second, err) = check(&again.display().to_string());
    assert_eq!(code, 0, "{err}");
    assert_eq!(second, first);
}

#[test]
fn absurd_values_exit_2_naming_file_line_and_key() {
    let sc = Scenario::new();
    for (text, line, key) in [
        (
            "[shutdown]\ngrace_period = \"300000000000years\"\n",
            2,
            "shutdown.grace_period",
        ),
        (
            "[app]\nrestart = \"always\"\nrestart_backoff = { initial = \"1s\", max = \"18446744073709551615s\" }\n",
            3,
            "app.restart_backoff",
        ),
        ("[signals]\nignore = [\"RTMIN+2147483647\"]\n", 2, "signals.ignore"),
        ("[[drain]]\nsleep = \"1s\"\n\n[[drain]]\nretries = 99999999999\n", 5, "drain[2].retries"),
    ] {
        let config = sc.config(text);
        let (code, out, err) = check(&config);
        assert_eq!(code, 2, "{text}\n{out}{err}");
        let at = format!("{config}:{line}:");
        assert!(err.contains(&at) && err.contains(key), "{text}\n{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn check_names_file_line_column_and_key_in_arrays_of_tables_and_inline_tables() {
    // Regression (issue 9): the second bad `[[drain]]` had no line, a
    // commented header the wrong one, inline tables none; a URL or header
    // that could not work passed `--check` and failed only at run time.
    let sc = Scenario::new();
    for (text, at) in [
        (
            "[[drain]] # deregister\nname = \"a\"\n\n[[drain]] # and again\nname = \"b\"\n",
            vec![":1:1: drain[1]: a step needs", ":4:1: drain[2]: a step needs"],
        ),
        (
            "[[poststart]]\nwait_tcp = \"127.0.0.1:1\"\n\n[[drain]]\nhttp = { url = \"http://[::1\", method = \"PUT\" }\n",
            vec![":5:10: drain[1].http.url: invalid url"],
        ),
        (
            "[[drain]]\nhttp = { url = \"http://h/\", headers = { \"X-Token\" = \"Bearer s3cr3t\\r\\nX: y\" } }\n",
            vec![":2:29: drain[1].http.headers: invalid value for header \"X-Token\""],
        ),
        (
            "on_exit = [{ exec = [\"true\"] }, { sleep = \"1s\", retries = 2 }]\n",
            vec![":1:49: on_exit[2].retries: retries applies to http and exec steps only"],
        ),
    ] {
        let config = sc.config(text);
        let (code, out, err) = check(&config);
        assert_eq!(code, 2, "{text}\n{out}{err}");
        for at in at {
            assert!(err.contains(&format!("{config}{at}")), "want {at:?}\n{text}\n{err}");
        }
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}

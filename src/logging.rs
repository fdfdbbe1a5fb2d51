//! drainit's own log lines on stderr, as text or JSON, with timestamps.
//!
//! Owns the `tracing` subscriber: one line per event, written with a single
//! `write` to stderr; never writes to stdout (that is the app's, and
//! `--check`'s). drainit has no spans, so this is a small subscriber of its
//! own instead of tracing-subscriber's fmt layer (which cost 115 KiB
//! of the static binary and 8 % of the start-up instructions; see
//! docs/performance.md). The lines are the ones that layer wrote:
//!
//! ```text
//! 2026-11-23T13:04:52.896128Z  INFO app started pid=4005 command=["sleep", "30"]
//! {"timestamp":"2026-11-23T13:04:52.896128Z","level":"INFO","message":"app started","pid":4005,"command":"[\"sleep\", \"30\"]"}
//! ```
//!
//! In text, `&str` fields are quoted (`list="drain"`), `%`-fields and the
//! message are not, and terminal control characters in values are escaped
//! (`\x1b`), so a hostile value cannot drive the terminal.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// `--log-format`: how drainit's own lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human line per event (tracing-subscriber's fmt layout).
    #[default]
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

impl LogFormat {
    /// Every format, by its command-line name.
    pub const ALL: [(&'static str, LogFormat); 2] =
        [("text", LogFormat::Text), ("json", LogFormat::Json)];
}

/// `--log-level` (`DRAINIT_LOG`): the most verbose level drainit writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// Every level, by its command-line name, least verbose first.
    pub const ALL: [(&'static str, LogLevel); 5] = [
        ("error", LogLevel::Error),
        ("warn", LogLevel::Warn),
        ("info", LogLevel::Info),
        ("debug", LogLevel::Debug),
        ("trace", LogLevel::Trace),
    ];

    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

/// Installs the global subscriber.
pub fn init(format: LogFormat, level: LogLevel) {
    let logger = Logger {
        max: level.filter(),
        json: format == LogFormat::Json,
    };
    if let Err(e) = tracing::subscriber::set_global_default(logger) {
        eprintln!("drainit: cannot set up logging: {e}");
    }
}

/// The subscriber: a level filter and a line format.
struct Logger {
    max: LevelFilter,
    json: bool,
}

impl Subscriber for Logger {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.max >= *metadata.level()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    // drainit opens no spans; these keep the trait's contract cheaply.
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let line = format_line(
            SystemTime::now(),
            *event.metadata().level(),
            self.json,
            |visit| event.record(visit),
        );
        // One write per line, so concurrent lines (exec steps share stderr)
        // do not interleave; a closed stderr is not worth dying for.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// The whole line for one event, newline included. `record` feeds the
/// event's fields to the visitor.
fn format_line(
    now: SystemTime,
    level: Level,
    json: bool,
    record: impl FnOnce(&mut dyn Visit),
) -> String {
    let stamp = timestamp(now);
    if json {
        let mut v = JsonFields {
            message: None,
            fields: String::new(),
        };
        record(&mut v);
        let mut line = String::with_capacity(96 + v.fields.len());
        let _ = write!(line, "{{\"timestamp\":\"{stamp}\",\"level\":\"{level}\"");
        if let Some(message) = v.message {
            line.push_str(",\"message\":");
            json_string(&mut line, &message);
        }
        line.push_str(&v.fields);
        line.push_str("}\n");
        line
    } else {
        let mut v = TextFields {
            message: None,
            fields: String::new(),
        };
        record(&mut v);
        let mut line = String::with_capacity(64 + v.fields.len());
        let _ = write!(line, "{stamp} {level:>5}");
        if let Some(message) = v.message {
            line.push(' ');
            line.push_str(&message);
        }
        line.push_str(&v.fields);
        line.push('\n');
        line
    }
}

/// RFC 3339 in UTC with microseconds: `2026-11-23T13:04:52.896128Z`.
pub(crate) fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Text fields: the message, then ` name=value` each.
struct TextFields {
    message: Option<String>,
    fields: String,
}

impl Visit for TextFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut out = String::new();
        let _ = write!(Escaping(&mut out), "{value:?}");
        if field.name() == "message" {
            self.message = Some(out);
        } else {
            let _ = write!(self.fields, " {}={out}", field.name());
        }
    }
}

/// Writes through, escaping the characters that drive a terminal (ESC,
/// BEL, BS, FF, DEL and the C1 controls), as tracing-subscriber does.
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '\x1b' => self.0.push_str("\\x1b"),
                '\x07' => self.0.push_str("\\x07"),
                '\x08' => self.0.push_str("\\x08"),
                '\x0c' => self.0.push_str("\\x0c"),
                '\x7f' => self.0.push_str("\\x7f"),
                '\u{80}'..='\u{9f}' => {
                    let _ = write!(self.0, "\\u{{{:x}}}", c as u32);
                }
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

/// JSON fields: the message apart, then `,"name":value` each (numbers and
/// booleans as such, everything else as a string).
struct JsonFields {
    message: Option<String>,
    fields: String,
}

impl JsonFields {
    fn key(&mut self, field: &Field) {
        self.fields.push(',');
        json_string(&mut self.fields, field.name());
        self.fields.push(':');
    }
}

impl Visit for JsonFields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.fields, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.fields, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        let _ = write!(self.fields, "{value}");
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.key(field);
            json_string(&mut self.fields, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.key(field);
            json_string(&mut self.fields, &text);
        }
    }
}

/// Appends `s` as a JSON string.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Formats one event the way `info!` would record it: the message
    /// first, then the fields in order.
    fn line(json: bool, fields: &[(&str, Value<'_>)]) -> String {
        let now = UNIX_EPOCH + Duration::from_micros(1_795_438_692_896_128);
        format_line(now, Level::INFO, json, |visit| {
            for (name, value) in fields {
                let field = field(name);
                match value {
                    Value::Str(s) => visit.record_str(&field, s),
                    Value::U64(n) => visit.record_u64(&field, *n),
                    Value::Debug(d) => visit.record_debug(&field, d),
                    Value::Display(d) => visit.record_debug(&field, &format_args!("{d}")),
                }
            }
        })
    }

    enum Value<'a> {
        Str(&'a str),
        U64(u64),
        Debug(&'a Vec<&'a str>),
        Display(&'a str),
    }

    /// A `Field` with the given name (fields only come from callsites).
    fn field(name: &str) -> Field {
        struct Cs;
        impl tracing::callsite::Callsite for Cs {
            fn set_interest(&self, _: Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                &META
            }
        }
        static CS: Cs = Cs;
        static META: Metadata<'static> = tracing::metadata!(
            name: "test",
            target: "drainit",
            level: Level::INFO,
            fields: &["message", "pid", "list", "step", "command"],
            callsite: &CS,
            kind: tracing::metadata::Kind::EVENT,
        );
        META.fields().field(name).expect("a known field name")
    }

    #[test]
    fn text_line_is_tracing_subscribers() {
        let argv = vec!["sleep", "30"];
        let got = line(
            false,
            &[
                ("message", Value::Display("app started")),
                ("pid", Value::U64(4005)),
                ("list", Value::Str("drain")),
                ("step", Value::Display("hold the drain")),
                ("command", Value::Debug(&argv)),
            ],
        );
        assert_eq!(
            got,
            "2026-11-23T12:58:12.896128Z  INFO app started pid=4005 list=\"drain\" \
             step=hold the drain command=[\"sleep\", \"30\"]\n"
        );
    }

    #[test]
    fn json_line_is_tracing_subscribers() {
        let argv = vec!["sleep", "30"];
        let got = line(
            true,
            &[
                ("message", Value::Display("app started")),
                ("pid", Value::U64(4005)),
                ("list", Value::Str("dr\"ain")),
                ("command", Value::Debug(&argv)),
            ],
        );
        assert_eq!(
            got,
            "{\"timestamp\":\"2026-11-23T12:58:12.896128Z\",\"level\":\"INFO\",\
             \"message\":\"app started\",\"pid\":4005,\"list\":\"dr\\\"ain\",\
             \"command\":\"[\\\"sleep\\\", \\\"30\\\"]\"}\n"
        );
    }

    #[test]
    fn terminal_controls_are_escaped_in_text() {
        let got = line(
            false,
            &[
                ("message", Value::Display("a\x1b[31mred\u{9b}")),
                ("step", Value::Display("\x07")),
            ],
        );
        assert!(got.contains("a\\x1b[31mred\\u{9b} step=\\x07\n"), "{got}");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }
}

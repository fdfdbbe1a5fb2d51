//! The command line of SPEC section 1, and how it overrides the config.
//!
//! This module owns parsing argv (by hand: the grammar is a dozen options,
//! and a hand parser costs a few KiB where clap cost 232 KiB of the static
//! binary and a quarter of the start-up instructions; see
//! docs/performance.md) and folding the options into a loaded [`Config`];
//! it never starts anything. Options follow the usual conventions:
//! `--opt VALUE`, `--opt=VALUE`, `-o VALUE`, `-oVALUE`, bundled short
//! flags (`-sc FILE`), `--` ends the options, and the first other argument
//! starts COMMAND, whose own options pass through untouched.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::config::{self, signal, Config, Listen, Signal};
use crate::logging::{LogFormat, LogLevel};

/// The parsed command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cli {
    /// TOML config [default: /etc/drainit/drainit.toml if it exists]
    pub config: Option<PathBuf>,
    /// Overrides http.listen; `off` disables the server
    pub listen: Option<Listen>,
    /// Validate the config (and the command), print the effective config, exit
    pub check: bool,
    /// Become a child subreaper (automatic when not PID 1)
    pub subreaper: bool,
    /// Rewrite signal FROM to TO before forwarding (TERM:QUIT, 15:3); TO 0
    /// drops FROM (2:0, as with dumb-init); repeatable
    pub rewrite: Vec<(Signal, Option<Signal>)>,
    /// Signal drainit gets when its own parent dies (when not PID 1)
    pub pdeathsig: Option<Signal>,
    /// Format of drainit's own log lines on stderr: text or json
    pub log_format: LogFormat,
    /// error, warn, info, debug, trace
    pub log_level: LogLevel,
    /// The command to run (wins over app.command), byte for byte: it need
    /// not be UTF-8 (tini passes such arguments through too)
    pub command: Vec<OsString>,
}

/// Why parsing stopped: help or version asked for (print on stdout, exit
/// 0), or a usage error (print on stderr, exit 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// `-h`/`--help` or `-V`/`--version`: the text to print.
    Info(String),
    /// A usage error, with the whole message to print.
    Usage(String),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Info(text) | Stop::Usage(text) => f.write_str(text),
        }
    }
}

const USAGE: &str = "Usage: drainit [OPTIONS] [COMMAND]...";
/// The names `--log-format` and `--log-level` take.
fn names<T>(all: &[(&'static str, T)]) -> String {
    all.iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The options: (short, long, value name, env). A value name of "" is a
/// flag.
const OPTIONS: [(Option<char>, &str, &str, Option<&str>); 8] = [
    (Some('c'), "config", "PATH", Some("DRAINIT_CONFIG")),
    (None, "listen", "ADDR", Some("DRAINIT_LISTEN")),
    (None, "check", "", None),
    (Some('s'), "subreaper", "", None),
    (Some('r'), "rewrite", "FROM:TO", None),
    (Some('p'), "pdeathsig", "SIG", None),
    (None, "log-format", "FORMAT", Some("DRAINIT_LOG_FORMAT")),
    (None, "log-level", "LEVEL", Some("DRAINIT_LOG")),
];

fn usage_error(message: String) -> Stop {
    Stop::Usage(format!(
        "error: {message}\n\n{USAGE}\n\nFor more information, try '--help'.\n"
    ))
}

/// The text of `--help`; `env` gives the current value of a variable.
fn help(env: &dyn Fn(&str) -> Option<String>) -> String {
    let shown = |var: &str| format!(" [env: {var}={}]", env(var).unwrap_or_default());
    format!(
        "{about}\n\n{USAGE}\n\n\
         Arguments:\n  \
         [COMMAND]...  The command to run (wins over app.command)\n\n\
         Options:\n  \
         -c, --config <PATH>        TOML config [default: /etc/drainit/drainit.toml if it exists]{config}\n      \
         --listen <ADDR>        Overrides http.listen; `off` disables the server{listen}\n      \
         --check                Validate the config (and the command), print the effective config, exit\n  \
         -s, --subreaper            Become a child subreaper (automatic when not PID 1)\n  \
         -r, --rewrite <FROM:TO>    Rewrite signal FROM to TO before forwarding (TERM:QUIT, 15:3); TO 0 drops FROM (2:0), like signals.ignore; repeatable\n  \
         -p, --pdeathsig <SIG>      Signal drainit gets when its own parent dies (when not PID 1)\n      \
         --log-format <FORMAT>  Format of drainit's own log lines on stderr{format} [default: text] [possible values: text, json]\n      \
         --log-level <LEVEL>    error, warn, info, debug, trace{level} [default: info] [possible values: error, warn, info, debug, trace]\n  \
         -h, --help                 Print help\n  \
         -V, --version              Print version\n",
        about = env!("CARGO_PKG_DESCRIPTION"),
        config = shown("DRAINIT_CONFIG"),
        listen = shown("DRAINIT_LISTEN"),
        format = shown("DRAINIT_LOG_FORMAT"),
        level = shown("DRAINIT_LOG"),
    )
}

impl Cli {
    /// Parses the process's own arguments and environment.
    pub fn from_env() -> Result<Cli, Stop> {
        Cli::parse(std::env::args_os().skip(1), &|var| {
            std::env::var_os(var).map(|v| v.to_string_lossy().into_owned())
        })
    }

    /// Parses `args` (without the program name); `env` looks up the
    /// variables that stand in for absent options.
    pub fn parse(
        args: impl IntoIterator<Item = OsString>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Cli, Stop> {
        let mut args = args.into_iter();
        let mut seen: Vec<&str> = Vec::new();
        let mut cli = Cli::default();
        let mut rest: Option<Vec<OsString>> = None;
        while let Some(arg) = args.next() {
            let bytes = arg.as_encoded_bytes();
            if bytes == b"--" || !bytes.starts_with(b"-") || bytes == b"-" {
                // The command starts here (after `--`, or at the first
                // argument that is no option); the rest is its own, passed
                // on as it is, UTF-8 or not.
                let mut command = if bytes == b"--" { vec![] } else { vec![arg] };
                command.extend(args.by_ref());
                rest = Some(command);
                break;
            }
            let arg = arg
                .into_string()
                .map_err(|a| usage_error(format!("invalid UTF-8 was detected in {a:?}")))?;
            // The options this argument holds, each with a value glued to
            // it (`--opt=VALUE`, `-oVALUE`), if any.
            let mut pending: Vec<(usize, Option<String>)> = Vec::new();
            if let Some(long) = arg.strip_prefix("--") {
                let (name, value) = match long.split_once('=') {
                    Some((name, value)) => (name, Some(value.to_string())),
                    None => (long, None),
                };
                match name {
                    "help" => return Err(Stop::Info(help(env))),
                    "version" => return Err(Stop::Info(version())),
                    _ => {}
                }
                let i = OPTIONS
                    .iter()
                    .position(|o| o.1 == name)
                    .ok_or_else(|| unexpected(&arg))?;
                pending.push((i, value));
            } else {
                for (at, c) in arg[1..].char_indices() {
                    match c {
                        'h' => return Err(Stop::Info(help(env))),
                        'V' => return Err(Stop::Info(version())),
                        _ => {}
                    }
                    let i = OPTIONS
                        .iter()
                        .position(|o| o.0 == Some(c))
                        .ok_or_else(|| unexpected(&format!("-{c}")))?;
                    if OPTIONS[i].2.is_empty() {
                        pending.push((i, None));
                        continue;
                    }
                    let glued = &arg[1 + at + c.len_utf8()..];
                    let glued = glued.strip_prefix('=').unwrap_or(glued);
                    pending.push((i, (!glued.is_empty()).then(|| glued.to_string())));
                    break;
                }
            }
            for (i, value) in pending {
                let (_, long, value_name, _) = OPTIONS[i];
                let value = if value_name.is_empty() {
                    if value.is_some() {
                        return Err(usage_error(format!(
                            "unexpected value for '--{long}': it takes none"
                        )));
                    }
                    None
                } else {
                    // Like clap: the next argument is the value unless it
                    // looks like an option (`--config --check`).
                    let value = value.or_else(|| {
                        args.next()
                            .and_then(|v| v.into_string().ok())
                            .filter(|v| v == "-" || !v.starts_with('-'))
                    });
                    match value {
                        Some(v) => Some(v),
                        None => return Err(missing_value(i)),
                    }
                };
                let repeatable = long == "rewrite";
                if !repeatable && seen.contains(&long) {
                    return Err(usage_error(format!(
                        "the argument '{}' cannot be used multiple times",
                        display(i)
                    )));
                }
                seen.push(long);
                cli.set(i, value)?;
            }
        }
        cli.command = rest.unwrap_or_default();
        // Environment variables stand in for options not given.
        for (i, (_, long, _, var)) in OPTIONS.iter().enumerate() {
            if let Some(var) = var {
                if !seen.contains(long) {
                    if let Some(value) = env(var) {
                        if value.is_empty() {
                            return Err(missing_value(i));
                        }
                        cli.set(i, Some(value))?;
                    }
                }
            }
        }
        Ok(cli)
    }

    /// Stores option `i` with its value (None for a flag).
    fn set(&mut self, i: usize, value: Option<String>) -> Result<(), Stop> {
        let value = value.unwrap_or_default();
        let invalid = |detail: String| {
            usage_error(format!(
                "invalid value '{value}' for '{}'{detail}",
                display(i)
            ))
        };
        match OPTIONS[i].1 {
            "config" => self.config = Some(PathBuf::from(&value)),
            "listen" => {
                let listen = value.parse().map_err(|e| invalid(format!(": {e}")))?;
                self.listen = Some(listen);
            }
            "check" => self.check = true,
            "subreaper" => self.subreaper = true,
            "rewrite" => {
                let pair = signal::parse_rewrite(&value).map_err(|e| invalid(format!(": {e}")))?;
                self.rewrite.push(pair);
            }
            "pdeathsig" => {
                let sig = value
                    .parse::<Signal>()
                    .map_err(|e| invalid(format!(": {e}")))?;
                self.pdeathsig = Some(sig);
            }
            "log-format" => {
                let Some((_, format)) = LogFormat::ALL.iter().find(|(name, _)| *name == value)
                else {
                    return Err(invalid(format!(
                        "\n  [possible values: {}]",
                        names(&LogFormat::ALL)
                    )));
                };
                self.log_format = *format;
            }
            "log-level" => {
                let Some((_, level)) = LogLevel::ALL.iter().find(|(name, _)| *name == value) else {
                    return Err(invalid(format!(
                        "\n  [possible values: {}]",
                        names(&LogLevel::ALL)
                    )));
                };
                self.log_level = *level;
            }
            other => unreachable!("option --{other} has no setter"),
        }
        Ok(())
    }
    /// The config file to read, if any: the named one (which must exist),
    /// else the default path when it exists.
    pub fn config_path(&self) -> Option<PathBuf> {
        match &self.config {
            Some(path) => Some(path.clone()),
            None => {
                let default = PathBuf::from(config::DEFAULT_PATH);
                default.exists().then_some(default)
            }
        }
    }

    /// Loads the config (or the defaults) and applies the command-line
    /// overrides, validating the result again.
    pub fn load_config(&self) -> Result<Config, config::Error> {
        let path = self.config_path();
        let mut config = match &path {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        self.apply(&mut config);
        let shown = path.unwrap_or_else(|| PathBuf::from("<command line>"));
        config.validate().map_err(|problems| config::Error {
            path: shown,
            problems: problems
                .into_iter()
                .map(|(section, key, message)| config::Problem {
                    line: None,
                    column: None,
                    key: Some(format!("{section}.{key}")),
                    message,
                })
                .collect(),
        })?;
        Ok(config)
    }

    /// Command-line options win over the file.
    pub fn apply(&self, config: &mut Config) {
        if !self.command.is_empty() {
            config.app.command = self.command.clone();
        }
        if let Some(listen) = &self.listen {
            config.http.listen = listen.clone();
        }
        for (from, to) in &self.rewrite {
            config.signals.set_rewrite(*from, *to);
        }
    }
}

fn version() -> String {
    format!("drainit {}\n", env!("CARGO_PKG_VERSION"))
}

/// `--config <PATH>`, as messages name an option.
fn display(i: usize) -> String {
    let (_, long, value_name, _) = OPTIONS[i];
    if value_name.is_empty() {
        format!("--{long}")
    } else {
        format!("--{long} <{value_name}>")
    }
}

fn unexpected(arg: &str) -> Stop {
    usage_error(format!(
        "unexpected argument '{arg}' found\n\n  tip: to pass '{arg}' as a value, use '-- {arg}'"
    ))
}

fn missing_value(i: usize) -> Stop {
    let possible = match OPTIONS[i].1 {
        "log-format" => format!("\n  [possible values: {}]", names(&LogFormat::ALL)),
        "log-level" => format!("\n  [possible values: {}]", names(&LogLevel::ALL)),
        _ => String::new(),
    };
    usage_error(format!(
        "a value is required for '{}' but none was supplied{possible}",
        display(i)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, Stop> {
        parse_env(args, &[])
    }

    fn parse_env(args: &[&str], vars: &[(&str, &str)]) -> Result<Cli, Stop> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Cli::parse(args.iter().map(OsString::from), &move |var| {
            vars.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
        })
    }

    fn usage(r: Result<Cli, Stop>) -> String {
        match r {
            Err(Stop::Usage(text)) => text,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Text);
        assert_eq!(cli.log_level, LogLevel::Info);
        assert!(cli.command.is_empty() && !cli.check && !cli.subreaper);
    }

    #[test]
    fn every_option_form() {
        let cli = parse(&[
            "-c",
            "a.toml",
            "--listen=off",
            "--check",
            "-s",
            "-rTERM:QUIT",
            "--rewrite",
            "HUP:USR1",
            "-p",
            "KILL",
            "--log-format",
            "json",
            "--log-level=debug",
            "--",
            "app",
            "--flag",
        ])
        .unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("a.toml")));
        assert_eq!(cli.listen, Some(Listen::Off));
        assert!(cli.check && cli.subreaper);
        assert_eq!(cli.rewrite.len(), 2);
        assert_eq!(cli.pdeathsig, Some("KILL".parse().unwrap()));
        assert_eq!(
            (cli.log_format, cli.log_level),
            (LogFormat::Json, LogLevel::Debug)
        );
        assert_eq!(cli.command, ["app", "--flag"]);
        let bundled = parse(&["-sc", "b.toml", "x"]).unwrap();
        assert!(bundled.subreaper);
        assert_eq!(bundled.config, Some(PathBuf::from("b.toml")));
        assert_eq!(
            parse(&["-cb.toml"]).unwrap().config,
            Some(PathBuf::from("b.toml"))
        );
    }

    #[test]
    fn command_keeps_its_own_options() {
        let cli = parse(&["-s", "/bin/sh", "-c", "exit 3", "--check"]).unwrap();
        assert!(!cli.check);
        assert_eq!(cli.command, ["/bin/sh", "-c", "exit 3", "--check"]);
        assert_eq!(parse(&["--", "--check"]).unwrap().command, ["--check"]);
        assert_eq!(parse(&["-", "x"]).unwrap().command, ["-", "x"]);
    }

    #[test]
    fn command_is_passed_byte_for_byte() {
        // Regression (issue 9): an argument that is not UTF-8 was a usage
        // error; tini passes it through.
        use std::os::unix::ffi::OsStrExt;
        let odd = std::ffi::OsStr::from_bytes(b"caf\xe9\xff").to_os_string();
        for args in [
            vec![OsString::from("--"), odd.clone(), odd.clone()],
            vec![OsString::from("-s"), odd.clone(), odd.clone()],
        ] {
            let cli = Cli::parse(args, &|_| None).unwrap();
            assert_eq!(cli.command, [odd.clone(), odd.clone()]);
        }
        // An option is text: a bad one is still a usage error.
        let bad = std::ffi::OsStr::from_bytes(b"--caf\xe9").to_os_string();
        assert!(Cli::parse([bad], &|_| None).is_err());
    }

    #[test]
    fn environment_stands_in_for_absent_options() {
        let vars = [
            ("DRAINIT_LOG", "warn"),
            ("DRAINIT_LISTEN", "off"),
            ("DRAINIT_CONFIG", "e.toml"),
        ];
        let cli = parse_env(&["--listen", "127.0.0.1:1"], &vars).unwrap();
        assert_eq!(cli.log_level, LogLevel::Warn);
        assert_eq!(cli.listen, Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(cli.config, Some(PathBuf::from("e.toml")));
        let err = usage(parse_env(&[], &[("DRAINIT_LOG_FORMAT", "xml")]));
        assert!(
            err.contains("invalid value 'xml' for '--log-format <FORMAT>'"),
            "{err}"
        );
        let err = usage(parse_env(&[], &[("DRAINIT_LOG", "")]));
        assert!(
            err.contains("a value is required for '--log-level <LEVEL>'"),
            "{err}"
        );
    }

    #[test]
    fn usage_errors_name_the_argument() {
        let err = usage(parse(&["--no-such-flag", "--", "true"]));
        assert!(
            err.starts_with("error: unexpected argument '--no-such-flag' found"),
            "{err}"
        );
        assert!(
            err.contains(USAGE) && err.ends_with("try '--help'.\n"),
            "{err}"
        );
        assert!(usage(parse(&["-x"])).contains("'-x'"));
        assert!(usage(parse(&["--config"])).contains("a value is required for '--config <PATH>'"));
        assert!(usage(parse(&["--check", "--check"])).contains("'--check' cannot be used multiple"));
        assert!(usage(parse(&["--check=yes"])).contains("takes none"));
        let err = usage(parse(&["-p", "BOGUS"]));
        assert!(
            err.contains("invalid value 'BOGUS' for '--pdeathsig <SIG>': unknown signal"),
            "{err}"
        );
        assert!(usage(parse(&["-r", "X"])).contains("invalid rewrite \"X\""));
        assert!(usage(parse(&["--log-level", "loud"])).contains("[possible values: error, warn"));
    }

    #[test]
    fn rewrite_to_zero_drops_the_signal_and_wins_over_the_file() {
        // dumb-init's ENTRYPOINT flags, copied verbatim.
        let cli = parse(&["-r", "15:3", "-r", "2:0", "-r", "28:0", "--", "app"]).unwrap();
        assert_eq!(cli.rewrite[1], ("INT".parse().unwrap(), None));
        let mut config = Config::parse(
            "[signals]\nrewrite = { INT = \"USR1\" }\nignore = [\"HUP\"]\n",
            std::path::Path::new("f.toml"),
        )
        .unwrap();
        Cli {
            rewrite: vec![
                ("HUP".parse().unwrap(), Some("USR2".parse().unwrap())),
                ("INT".parse().unwrap(), None),
            ],
            ..cli.clone()
        }
        .apply(&mut config);
        cli.apply(&mut config);
        let names = |sigs: &[Signal]| sigs.iter().map(|s| s.name()).collect::<Vec<_>>();
        assert_eq!(names(&config.signals.ignore), ["INT", "WINCH"]);
        let rewrite: Vec<(String, String)> = config
            .signals
            .rewrite
            .iter()
            .map(|(from, to)| (from.name(), to.name()))
            .collect();
        assert_eq!(
            rewrite,
            [
                ("HUP".into(), "USR2".into()),
                ("TERM".into(), "QUIT".into())
            ]
        );
        let help = help(&|_| None);
        assert!(help.contains("TO 0 drops FROM (2:0)"), "{help}");
    }

    #[test]
    fn help_and_version() {
        let Err(Stop::Info(help)) = parse(&["-s", "--help", "--bogus"]) else {
            panic!("no help");
        };
        assert!(
            help.contains(USAGE) && help.contains("--pdeathsig <SIG>"),
            "{help}"
        );
        assert!(help.contains("[env: DRAINIT_CONFIG=]"), "{help}");
        assert_eq!(
            parse(&["-V"]),
            Err(Stop::Info(format!(
                "drainit {}\n",
                env!("CARGO_PKG_VERSION")
            )))
        );
        assert!(matches!(parse(&["-h"]), Err(Stop::Info(_))));
    }
}

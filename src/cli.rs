//! The command line of SPEC section 1, and how it overrides the config.
//!
//! This module owns parsing argv (with clap) and folding the options into a
//! loaded [`Config`]; it never starts anything.

use std::path::PathBuf;

use clap::Parser;

use crate::config::{self, Config};
use crate::signals::{self, Signal};

/// A PID-1 init for containers that drains before it stops.
///
/// drainit runs COMMAND as its child, forwards signals to it, reaps zombies,
/// and exits with its exit code. On SIGTERM it runs the configured drain
/// first, then stops the app, and kills it only if it hangs.
#[derive(Debug, Clone, Parser)]
#[command(name = "drainit", version, about, long_about = None)]
pub struct Cli {
    /// TOML config [default: /etc/drainit/drainit.toml if it exists]
    #[arg(short = 'c', long, env = "DRAINIT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Overrides http.listen; `off` disables the server
    #[arg(long, env = "DRAINIT_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Validate the config (and the command), print the effective config, exit
    #[arg(long)]
    pub check: bool,

    /// Become a child subreaper (automatic when not PID 1)
    #[arg(short = 's', long)]
    pub subreaper: bool,

    /// Rewrite signal FROM to TO before forwarding (TERM:QUIT, 15:3); repeatable
    #[arg(short = 'r', long = "rewrite", value_name = "FROM:TO", value_parser = signals::parse_rewrite)]
    pub rewrite: Vec<(Signal, Signal)>,

    /// Signal drainit gets when its own parent dies (when not PID 1)
    #[arg(short = 'p', long, value_name = "SIG")]
    pub pdeathsig: Option<Signal>,

    /// Format of drainit's own log lines on stderr
    #[arg(long, env = "DRAINIT_LOG_FORMAT", value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// error, warn, info, debug, trace
    #[arg(long, env = "DRAINIT_LOG", value_name = "LEVEL", default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,

    /// The command to run (wins over app.command)
    // No `allow_hyphen_values`: it would take an unknown option such as
    // `--bogus` for the command (exit 127) instead of a usage error (2).
    // `trailing_var_arg` alone still passes `nginx -g ...` through whole.
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl Cli {
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
            config.signals.rewrite.insert(*from, *to);
        }
    }
}

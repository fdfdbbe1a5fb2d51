//! Why drainit could not start, and the exit code each reason gives.
//!
//! Everything that can stop drainit before its app runs ends as one
//! [`StartError`], so `main` maps a single `Result` to an exit code (as
//! ripgrep's `main` does): input errors are [`exit::USAGE`] with nothing
//! started, a command that cannot run is a shell's 126 or 127, and a
//! failure of the system under drainit is [`exit::INTERNAL`]. Once the app
//! has started, the exit code is the app's ([`exit::of_app`]), never one
//! of these.

use std::io;
use std::net::SocketAddr;

use crate::config;
use crate::init::{child, exit, user};

/// Why drainit did not start the app.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config file or the command line's overrides are invalid.
    #[error("invalid configuration:\n{0}")]
    Config(#[from] config::Error),
    /// `--check`: the command would not start.
    #[error("invalid command: {0}")]
    Command(child::Error),
    /// Neither the command line nor `app.command` names a program.
    #[error("no command to run: give one after `--` or set app.command (see drainit --help)")]
    NoCommand,
    /// The lifecycle's thread could not be started (out of memory or
    /// threads); the app, already running, was killed.
    #[error("cannot start the lifecycle's thread: {0}")]
    Runtime(io::Error),
    /// Subreaper, parent-death signal or SIG_IGN could not be set.
    #[error("cannot set up process attributes: {0}")]
    Init(nix::Error),
    /// The signals could not be blocked, or the signalfd or the core's
    /// eventfds not opened.
    #[error("cannot set up the signalfd: {0}")]
    Signals(io::Error),
    /// `app.user` names no user or group of the image.
    #[error("app.user: {0}")]
    User(user::Error),
    /// `http.token_file` cannot be read.
    #[error("http.token_file: {0}")]
    Token(String),
    /// `http.listen` cannot be bound (in use, not an address of ours).
    #[error("http.listen {0}: cannot listen: {1}")]
    Listen(SocketAddr, io::Error),
    /// The app could not be started.
    #[error("{0}")]
    Spawn(child::Error),
}

impl StartError {
    /// The exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_)
            | StartError::NoCommand
            | StartError::User(_)
            | StartError::Token(_)
            | StartError::Listen(..)
            | StartError::Command(_) => exit::USAGE,
            StartError::Spawn(e) => e.exit_code(),
            StartError::Runtime(_) | StartError::Init(_) | StartError::Signals(_) => exit::INTERNAL,
        }
    }

    /// Whether logging is set up when this error happens: then it goes to
    /// the log (which may be JSON for a collector), else plainly to stderr.
    pub fn is_logged(&self) -> bool {
        !matches!(
            self,
            StartError::Config(_) | StartError::Command(_) | StartError::NoCommand
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors_exit_2_and_a_missing_program_127() {
        let listen = StartError::Listen(
            "127.0.0.1:1".parse().unwrap(),
            io::Error::from(io::ErrorKind::AddrInUse),
        );
        assert_eq!(listen.exit_code(), exit::USAGE);
        assert_eq!(StartError::NoCommand.exit_code(), exit::USAGE);
        let missing = StartError::Spawn(child::Error::NotFound("nope".into()));
        assert_eq!(missing.exit_code(), exit::NOT_FOUND);
        let runtime = StartError::Runtime(io::Error::from(io::ErrorKind::OutOfMemory));
        assert_eq!(runtime.exit_code(), exit::INTERNAL);
    }
}

//! The PID-1 loop: what tini's main loop does, on drainit's main thread.
//!
//! The core sleeps in `read` on the signalfd, as tini sleeps in
//! `sigtimedwait`, and makes no other wake-up: an idle drainit sleeps in
//! the kernel, and a forwarded signal costs a `read` and a `kill`. The
//! lifecycle's [`Command`]s wake it the same way: their [`Mailbox`] rings
//! a SIGCHLD at the core's thread ([`signals::Receiver::bell`]), and after
//! each read the core takes the commands if any wait. For each signal it
//! reads it decides on its own ([`forward::decide`] with the lifecycle's
//! [`Rules`]):
//!
//! - SIGCHLD: reap everything ([`reaper::reap`]), the one `waitpid(-1)`
//!   owner; the statuses go up as one [`Event::Reaped`]. A reaped app is
//!   forgotten at once, so no later signal can reach its recycled pid.
//! - a plain or rewritten signal: sent to the app's group (or the app)
//!   at once, without waking the runtime;
//! - an ignored one: dropped;
//! - a trigger: handed up ([`Event::Trigger`]); with no drain step and no
//!   shutdown started ([`Rules::direct_stop`]) the core first sends the
//!   stop signal itself, so `docker stop` costs what it costs under tini.
//!
//! Commands come down from the lifecycle: a signal or SIGKILL for the app
//! (the shutdown machine's stop and kill), a restart's spawn, new rules
//! after a reload or a shutdown's start, and the exit code to finish with.
//! The core reads no file, resolves no name and never waits on the
//! runtime: if the runtime is busy, signals are still forwarded.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::unistd::Pid;
use tracing::{debug, error, info};

use crate::config::{self, Config, ExitCode, Signal};
use crate::init::forward::{self, Decision};
use crate::init::mailbox::Mailbox;
use crate::init::reaper::{self, Children, Status};
use crate::init::signals;
use crate::init::{child, exit};

/// What the core needs from the config and the lifecycle to act alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// `[signals]`: ignore, rewrite, forward_to.
    pub signals: config::Signals,
    /// `shutdown.triggers`.
    pub triggers: Vec<Signal>,
    /// The stop signal, when a trigger stops the app at once: no drain
    /// step is configured and no shutdown has started (no hook in use).
    /// The core sends it itself on the first trigger, then clears it; the
    /// lifecycle still hears of the trigger and keeps the books.
    pub direct_stop: Option<Signal>,
    /// Nothing is left for the lifecycle once the app has exited (no
    /// drain, `[[on_exit]]`, restart, termination file, hook call or failed
    /// poststart; the lifecycle decides): when the app is reaped with no
    /// other child left, the core exits at once with its code.
    pub exit_with_app: bool,
    /// `shutdown.exit_code_map`, for that exit.
    pub exit_code_map: BTreeMap<ExitCode, ExitCode>,
}

impl Rules {
    /// The rules `config` gives before the lifecycle has said more: the
    /// direct stop when no drain step is configured, no exit with the app.
    pub fn from_config(config: &Config) -> Rules {
        Rules {
            signals: config.signals.clone(),
            triggers: config.shutdown.triggers.clone(),
            direct_stop: config.drain.is_empty().then(|| config.stop_signal()),
            exit_with_app: false,
            exit_code_map: config.shutdown.exit_code_map.clone(),
        }
    }
}

/// What the lifecycle asks of the core.
#[derive(Debug)]
pub enum Command {
    /// Send this signal to the app (its group, or the app alone per
    /// `signals.forward_to`); dropped when no app runs.
    Signal(Signal),
    /// SIGKILL the app's process group.
    Kill,
    /// Start the app again (a restart); answered with
    /// [`Event::AppStarted`] or [`Event::SpawnFailed`].
    Spawn(Box<child::Spec>),
    /// Replace the rules (a reload, a shutdown that started).
    Rules(Box<Rules>),
    /// The lifecycle is done: exit with this code.
    Finish(i32),
}

/// What the core tells the lifecycle.
#[derive(Debug)]
pub enum Event {
    /// A `shutdown.triggers` signal; `stopped`: the core has already sent
    /// the app this stop signal ([`Rules::direct_stop`]).
    Trigger {
        sig: Signal,
        stopped: Option<Signal>,
    },
    /// A restart's spawn succeeded.
    AppStarted(Pid),
    /// A restart's spawn failed.
    SpawnFailed(child::Error),
    /// One reaping pass: who ended, and whether any child is left.
    Reaped {
        done: Vec<(Pid, Status)>,
        children: Children,
    },
    /// The signalfd failed: no signal can be received any longer.
    SignalsFailed(io::Error),
}

/// Counters the core keeps for `/metrics`: one relaxed add each.
#[derive(Debug)]
pub struct Counts {
    /// Forwarded signals, indexed by signal number.
    forwarded: [AtomicU64; 65],
    reaped: AtomicU64,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            forwarded: std::array::from_fn(|_| AtomicU64::new(0)),
            reaped: AtomicU64::new(0),
        }
    }
}

impl Counts {
    pub fn signal_forwarded(&self, sig: Signal) {
        if let Some(counter) = usize::try_from(sig.number())
            .ok()
            .and_then(|n| self.forwarded.get(n))
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forwarded signals by name (`TERM`, `USR1`, ...), those seen at least once.
    pub fn signals_forwarded(&self) -> BTreeMap<String, u64> {
        self.forwarded
            .iter()
            .enumerate()
            .filter_map(|(n, count)| {
                let count = count.load(Ordering::Relaxed);
                let sig = Signal::from_number(i32::try_from(n).ok()?).ok()?;
                (count > 0).then(|| (sig.name(), count))
            })
            .collect()
    }

    /// Processes reaped since start.
    pub fn reaped(&self) -> u64 {
        self.reaped.load(Ordering::Relaxed)
    }
}

/// The lifecycle's end of the core: given to the runtime's thread.
pub struct Link {
    pub events: Arc<Mailbox<Event>>,
    pub commands: Arc<Mailbox<Command>>,
    pub counts: Arc<Counts>,
    /// The app, started before the runtime existed.
    pub app: Pid,
}

/// The core. See the module docs.
pub struct Core {
    signals: Option<signals::Receiver>,
    events: Arc<Mailbox<Event>>,
    commands: Arc<Mailbox<Command>>,
    counts: Arc<Counts>,
    rules: Rules,
    app: Option<Pid>,
    /// Signal numbers of one read, reused.
    batch: Vec<i32>,
}

impl Core {
    /// Blocks every caught signal and opens the signalfd and the
    /// mailboxes. Call it before any other thread exists (threads inherit
    /// the mask) and before the app is spawned, so no signal is lost.
    pub fn new() -> io::Result<Core> {
        let signals = signals::Receiver::new()?;
        let bell = signals.bell();
        Ok(Core {
            signals: Some(signals),
            events: Arc::new(Mailbox::new()?),
            commands: Arc::new(Mailbox::new()?.with_bell(bell)),
            counts: Arc::default(),
            rules: Rules::default(),
            app: None,
            batch: Vec::with_capacity(16),
        })
    }

    /// Spawns the app; signals read from now on go to it.
    pub fn spawn_app(&mut self, spec: &child::Spec) -> Result<Pid, child::Error> {
        let pid = child::spawn(spec)?;
        // The program only: its arguments may hold a secret from `${VAR}`
        // (SPEC section 4), and the log is no place for them.
        let program = spec.argv.first().map(|p| p.to_string_lossy());
        info!(pid = pid.as_raw(), program = ?program.unwrap_or_default(), "app started");
        self.app = Some(pid);
        Ok(pid)
    }

    /// The lifecycle's end, for the app `app`.
    pub fn link(&self, app: Pid) -> Link {
        Link {
            events: Arc::clone(&self.events),
            commands: Arc::clone(&self.commands),
            counts: Arc::clone(&self.counts),
            app,
        }
    }

    /// SIGKILLs the app's group: the lifecycle could not be started.
    pub fn kill_app(&self) {
        self.kill();
    }

    /// The loop, with `rules` until the lifecycle sends others, until the
    /// lifecycle says [`Command::Finish`] (or the app exits, with
    /// [`Rules::exit_with_app`]); returns the code to exit with. Signals
    /// that came before it are waiting in the signalfd.
    pub fn run(&mut self, rules: Rules) -> i32 {
        self.rules = rules;
        loop {
            if let Some(code) = self.on_signals() {
                return code;
            }
            if self.commands.pending() {
                if let Some(code) = self.on_commands() {
                    return code;
                }
            }
        }
    }

    /// The signalfd failed (the lifecycle was told and will finish): the
    /// commands' eventfd is all that is left to wait on.
    fn wait_for_commands(&self) -> Option<i32> {
        let mut fd = libc::pollfd {
            fd: self.commands.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd we own.
        if unsafe { libc::poll(&mut fd, 1, -1) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                error!("cannot wait for commands: {e}; killing the app");
                self.kill();
                return Some(exit::INTERNAL);
            }
        }
        None
    }

    fn on_commands(&mut self) -> Option<i32> {
        for command in self.commands.take() {
            if let Some(code) = self.on_command(command) {
                return Some(code);
            }
        }
        None
    }

    /// Waits for signals and handles those read; `Some`: exit with this
    /// code.
    fn on_signals(&mut self) -> Option<i32> {
        let Some(receiver) = &mut self.signals else {
            return self.wait_for_commands();
        };
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        if let Err(e) = receiver.read_into(&mut batch) {
            // Told once; the lifecycle kills the app and ends.
            self.signals = None;
            self.events.send(Event::SignalsFailed(e));
        }
        let mut exit = None;
        for &n in &batch {
            match forward::decide(n, &self.rules.signals, &self.rules.triggers) {
                Decision::Reap => {
                    exit = self.reap();
                    if exit.is_some() {
                        break;
                    }
                }
                Decision::Unknown => {}
                Decision::Ignore(sig) => debug!(signal = %sig, "ignored"),
                Decision::Forward(sig) => self.forward(sig),
                Decision::Trigger(sig) => {
                    let stopped = match (self.rules.direct_stop, self.app) {
                        (Some(stop), Some(_)) => {
                            self.rules.direct_stop = None;
                            self.forward(stop);
                            Some(stop)
                        }
                        _ => None,
                    };
                    self.events.send(Event::Trigger { sig, stopped });
                }
            }
        }
        self.batch = batch;
        exit
    }

    fn on_command(&mut self, command: Command) -> Option<i32> {
        match command {
            Command::Signal(sig) => self.forward(sig),
            Command::Kill => self.kill(),
            Command::Spawn(spec) => {
                let event = match self.spawn_app(&spec) {
                    Ok(pid) => Event::AppStarted(pid),
                    Err(e) => Event::SpawnFailed(e),
                };
                self.events.send(event);
            }
            Command::Rules(rules) => self.rules = *rules,
            Command::Finish(code) => return Some(code),
        }
        None
    }

    /// One reaping pass; the app, if reaped, is forgotten before anything
    /// else is read. Returns the exit code when the core exits with the
    /// app ([`Rules::exit_with_app`]).
    fn reap(&mut self) -> Option<i32> {
        let mut done = Vec::new();
        let children = reaper::reap(&mut done);
        if done.is_empty() {
            return None;
        }
        self.counts
            .reaped
            .fetch_add(done.len() as u64, Ordering::Relaxed);
        let app = self
            .app
            .and_then(|app| done.iter().find(|(pid, _)| *pid == app));
        if let Some(&(pid, status)) = app {
            self.app = None;
            if self.rules.exit_with_app && children == Children::None {
                let code = exit::of_app(
                    Some(status),
                    |c| config::map_exit_code(&self.rules.exit_code_map, c),
                    false,
                );
                info!(pid = pid.as_raw(), %status, "app exited");
                info!(code, "exiting");
                return Some(code);
            }
        }
        self.events.send(Event::Reaped { done, children });
        None
    }

    fn forward(&self, sig: Signal) {
        let target = forward::target(self.app, self.rules.signals.forward_to);
        if forward::send(target, sig) {
            self.counts.signal_forwarded(sig);
        }
    }

    fn kill(&self) {
        if let Some(pgid) = self.app {
            // SAFETY: kill(2) with plain integers.
            unsafe { libc::kill(-pgid.as_raw(), libc::SIGKILL) };
        }
    }
}

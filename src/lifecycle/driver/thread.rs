//! The lifecycle's thread and what it starts from: what `main` hands it
//! ([`Start`], with the server as [`Serve`] and the core's first
//! [`Rules`] from [`first_rules`]), the runtime it builds
//! ([`run_thread`]), and the core's events as the driver reads them
//! ([`Events`], the mailbox's eventfd registered with the reactor).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tracing::error;

use super::{run, Reload};
use crate::config::Config;
use crate::init::child;
use crate::init::core::{self, Command, Link, Rules};
use crate::init::exit;
use crate::init::mailbox::Mailbox;
use crate::lifecycle::state::Shared;
use crate::lifecycle::termination;

/// The core's events, read on the runtime: the mailbox's eventfd is
/// registered with the reactor.
pub(super) struct Events {
    pub(super) fd: AsyncFd<Arc<Mailbox<core::Event>>>,
    pub(super) pending: VecDeque<core::Event>,
}

impl Events {
    /// The next event from the core.
    pub(super) async fn next(&mut self) -> core::Event {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            match self.fd.readable().await {
                Ok(mut guard) => {
                    // The mailbox clears its eventfd before taking, so a
                    // message sent after this take raises a new edge.
                    self.pending = guard.get_inner().take();
                    guard.clear_ready();
                }
                // The reactor failed: as if signals could not be read.
                Err(e) => return core::Event::SignalsFailed(e),
            }
        }
    }
}

/// A future the server runs until, or that tells it to stop.
pub type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The server of the lifecycle endpoints (`http::server::serve` on the
/// listener bound before the app was spawned), as `main` wires it: it
/// gets the shared state and the future that says when to stop serving.
/// Given, not named here, so the lifecycle does not import the HTTP side
/// that reads it.
pub type Serve = Box<dyn FnOnce(Arc<Shared>, Task) -> Task + Send>;

/// What `main` hands the lifecycle once the core has started the app.
pub struct Start {
    pub config: Config,
    /// The app's spawn settings, for restarts and as exec steps' base.
    pub spec: child::Spec,
    /// The lifecycle endpoints' server, as `main` wires it; `None`:
    /// `http.listen = "off"`.
    pub serve: Option<Serve>,
    pub reload: Option<Reload>,
    pub link: Link,
    pub is_pid1: bool,
    /// The rules the core starts with ([`first_rules`]).
    pub rules: Rules,
    /// The termination file, looked up once ([`first_rules`]).
    pub record_path: Option<PathBuf>,
}

/// The rules the core starts with, before the lifecycle has run, and the
/// termination file they depend on (looked up here, once). With them the
/// core can stop the app and exit with it on a SIGTERM that comes while
/// the lifecycle is still starting.
pub fn first_rules(config: &Config) -> (Rules, Option<PathBuf>) {
    let record_path = termination::path(config.termination_message.path.as_deref());
    let mut rules = Rules::from_config(config);
    rules.exit_with_app = nothing_after_the_app(config, record_path.as_deref());
    (rules, record_path)
}

/// Whether `config` leaves nothing for the lifecycle to do once the app
/// has exited: no step list to run or finish, no restart, no termination
/// file to write.
pub(super) fn nothing_after_the_app(
    config: &Config,
    record_path: Option<&std::path::Path>,
) -> bool {
    config.drain.is_empty()
        && config.on_exit.is_empty()
        && config.app.restart == crate::config::Restart::Never
        && record_path.is_none()
}

/// The lifecycle's thread: builds the runtime, runs [`run`] on it, and
/// tells the core the exit code. Whatever happens here, the core hears
/// [`Command::Finish`]: a panic that escapes the runtime finishes with
/// [`exit::INTERNAL`] (after SIGKILL to the app: nothing would stop it).
pub fn run_thread(start: Start) {
    struct Finish {
        core: Arc<Mailbox<Command>>,
        code: Option<i32>,
    }
    impl Drop for Finish {
        fn drop(&mut self) {
            let code = self.code.unwrap_or_else(|| {
                self.core.send(Command::Kill);
                exit::INTERNAL
            });
            self.core.send(Command::Finish(code));
        }
    }
    let mut finish = Finish {
        core: Arc::clone(&start.link.commands),
        code: None,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("cannot start the runtime: {e}; killing the app");
            return;
        }
    };
    // The supervisor runs as a task, not as the `block_on` future: waking
    // a task from the runtime's own thread queues it, while waking the
    // `block_on` future writes the runtime's eventfd and costs a second
    // `epoll_wait`. A panic in it ends the task, not the thread. Boxed, so
    // that its future is not copied through this thread's stack (whose
    // pages, once touched, stay resident).
    let code = runtime.block_on(async { tokio::spawn(Box::pin(run(start))).await.ok() });
    finish.code = code.or(Some(exit::INTERNAL));
    // Drop the runtime only after the core has the code: its exit does not
    // wait for the runtime's teardown.
    drop(finish);
    std::mem::forget(runtime);
}

//! Exit statuses for the processes the lifecycle starts itself (exec
//! steps). The core reaps every child and hands the statuses up
//! ([`crate::init::core::Event::Reaped`]); the driver passes them here, and
//! a step waiting on its pid gets its status. A step claims its pid right
//! after the spawn, with no await between: the statuses are delivered on
//! this same thread, so none can come before its claim.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::init::reaper::Status;

/// Shared handle to the claimed pids. Cloning is cheap.
#[derive(Clone, Default)]
pub struct Claims {
    inner: Arc<Mutex<HashMap<i32, oneshot::Sender<Status>>>>,
}

impl Claims {
    /// Registers interest in `pid`'s exit status.
    pub fn claim(&self, pid: Pid) -> oneshot::Receiver<Status> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(pid.as_raw(), tx);
        rx
    }

    /// Gives the claimed ones among `done` their status.
    pub fn deliver(&self, done: &[(Pid, Status)]) {
        let mut claims = self.lock();
        for (pid, status) in done {
            if let Some(tx) = claims.remove(&pid.as_raw()) {
                // The claimant may have given up (timeout); that is fine.
                let _ = tx.send(*status);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<Status>>> {
        // Single inserts and removes: a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

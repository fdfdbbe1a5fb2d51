//! drainit's own exit codes. Everything else it exits with is the app's.

/// Usage or configuration error: nothing was started.
pub const USAGE: i32 = 2;
/// The command is not executable (a shell's 126).
pub const NOT_EXECUTABLE: i32 = 126;
/// The command was not found (a shell's 127).
pub const NOT_FOUND: i32 = 127;
/// drainit itself failed at run time (cannot open the signalfd, ...).
pub const INTERNAL: i32 = 1;

use crate::init::reaper::Status;

/// Exits the process with `code` (its low 8 bits) at once: `_exit(2)`,
/// without tearing anything down. The kernel closes the fds and frees the
/// memory; nothing is buffered (log lines are written when logged, and
/// drainit writes nothing else on stdout or stderr by then), and no
/// destructor or `atexit` handler has work to do. `std::process::exit`
/// would also unmap the main thread's signal stack and run libc's exit
/// handlers: a few system calls on the path from the app's exit to
/// drainit's (SIGTERM to exit, docs/performance.md).
pub fn now(code: i32) -> ! {
    use std::io::Write;
    // Nothing is expected there; a flush of an empty buffer is free.
    let _ = std::io::stdout().flush();
    // SAFETY: _exit(2) takes a plain integer and does not return.
    unsafe { libc::_exit(code & 0xff) }
}

/// The code drainit exits with once the app is gone for good: the app's
/// own (its exit code, or 128+N for signal N, as a shell reports it)
/// through `shutdown.exit_code_map` (`map`); [`INTERNAL`] when the app
/// never ran. A failed poststart turns an exit 0 into 1: the app was
/// stopped for a failure, and a 0 would hide it from a restart policy.
pub fn of_app(last: Option<Status>, map: impl Fn(i32) -> i32, poststart_failed: bool) -> i32 {
    let code = map(last.map_or(INTERNAL, Status::code));
    if poststart_failed && code == 0 {
        1
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_death_exits_128_plus_the_signal_through_the_map() {
        let code = of_app(Some(Status::Signaled(15)), |c| c, false);
        assert_eq!(code, 143);
        let mapped = of_app(
            Some(Status::Signaled(15)),
            |c| if c == 143 { 0 } else { c },
            false,
        );
        assert_eq!(mapped, 0);
    }

    #[test]
    fn a_failed_poststart_never_exits_0() {
        assert_eq!(of_app(Some(Status::Exited(0)), |c| c, true), 1);
        assert_eq!(of_app(Some(Status::Exited(3)), |c| c, true), 3);
        assert_eq!(of_app(None, |c| c, false), INTERNAL);
    }
}

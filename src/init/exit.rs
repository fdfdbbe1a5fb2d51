//! drainit's own exit codes. Everything else it exits with is the app's.

/// Usage or configuration error: nothing was started.
pub const USAGE: i32 = 2;
/// The command is not executable (a shell's 126).
pub const NOT_EXECUTABLE: i32 = 126;
/// The command was not found (a shell's 127).
pub const NOT_FOUND: i32 = 127;
/// drainit itself failed at run time (cannot install signal handlers, ...).
pub const INTERNAL: i32 = 1;

//! Starting processes: the app, and (later) exec steps.
//!
//! This module owns the fork/exec and what happens in the child between the
//! two: its own process group, the terminal's foreground group when stdin is
//! a TTY, dropped privileges, default signal dispositions and an empty signal
//! mask. It never waits for a child: the `reaper` owns `waitpid(-1)`, and
//! `std::process::Child` handles are dropped unwaited on purpose.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::unistd::Pid;

use crate::init::user::Ids;

/// What to run and with which settings.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Byte for byte: the command line may give arguments that are not
    /// UTF-8, and the app gets them as they were.
    pub argv: Vec<OsString>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub ids: Option<Ids>,
    /// Make the child's group the terminal's foreground group (app only,
    /// when stdin is a TTY).
    pub foreground: bool,
}

/// Why a process could not be started; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no command to run: give one after `--` or set app.command")]
    NoCommand,
    #[error("{0}: command not found")]
    NotFound(String),
    #[error("{0}: cannot execute: {1}")]
    NotExecutable(String, io::Error),
    #[error("{0}: cannot start: {1}")]
    Other(String, io::Error),
    #[error("app.workdir {0:?}: {1}")]
    Workdir(String, io::Error),
}

impl Error {
    /// The exit code a shell would give (127 not found, 126 not executable).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NoCommand | Error::Workdir(..) => crate::init::exit::USAGE,
            Error::NotFound(_) => crate::init::exit::NOT_FOUND,
            Error::NotExecutable(..) | Error::Other(..) => crate::init::exit::NOT_EXECUTABLE,
        }
    }
}

/// Forks and execs `spec`, returning the child's pid once the exec has
/// succeeded (std reports exec failures through a close-on-exec pipe, so an
/// `Ok` means the new program is running, in its own process group).
pub fn spawn(spec: &Spec) -> Result<Pid, Error> {
    let (program, args) = spec.argv.split_first().ok_or(Error::NoCommand)?;
    if let Some(spawned) = spawn_without_fork(spec, program) {
        return spawned;
    }
    let mut cmd = Command::new(program);
    cmd.args(args).envs(&spec.env);
    if let Some(dir) = &spec.workdir {
        // Checked here so that a missing directory is not reported as a
        // missing command (chdir's ENOENT looks like exec's).
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::Workdir(
                    dir.clone(),
                    io::Error::from_raw_os_error(libc::ENOTDIR),
                ))
            }
            Err(e) => return Err(Error::Workdir(dir.clone(), e)),
        }
        cmd.current_dir(dir);
    }
    let foreground = spec.foreground;
    let ids = spec.ids.clone();
    let groups: Vec<libc::gid_t> = ids.as_ref().map(|i| i.groups.clone()).unwrap_or_default();
    // SAFETY: the closure runs in the forked child before exec and only
    // calls async-signal-safe functions (setpgid, tcsetpgrp, setgroups,
    // setgid, setuid, signal, sigprocmask) on data prepared before the
    // fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if foreground {
                // As tini does, in the child: the parent cannot do this
                // without racing the exec. SIGTTOU is still ignored here
                // (inherited from drainit), so a background tcsetpgrp does
                // not stop us. No TTY (ENOTTY/ENXIO) is not an error.
                let _ = libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid());
            }
            if let Some(ids) = &ids {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(ids.gid) != 0
                    || libc::setuid(ids.uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            // Default dispositions for what drainit ignores itself
            // (SIGTTIN, SIGTTOU, SIGPIPE; std restores SIGPIPE too); caught
            // signals were blocked, not handled, and inherited SIG_IGNs were
            // reset at start (signals::Receiver::new). The mask is emptied
            // here (std does too, but this is the contract, so it is stated
            // where it matters).
            for sig in crate::init::signals::OWN_IGNORES {
                libc::signal(sig, libc::SIG_DFL);
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(child) => {
            let pid = Pid::from_raw(child.id() as i32);
            // Dropping a std Child neither kills nor waits; the reaper owns it.
            drop(child);
            Ok(pid)
        }
        Err(e) => Err(classify(program, e)),
    }
}

/// The common case without a `fork`: `posix_spawn`, which glibc runs as
/// `clone(CLONE_VM | CLONE_VFORK)`, so the parent's page tables are not
/// copied and neither side takes copy-on-write faults afterwards (a fork
/// of drainit was its most expensive system call at start-up). It does
/// what the `pre_exec` of [`spawn`] does where posix_spawn can: its own
/// process group, default dispositions for drainit's own ignores, an empty
/// mask, the working directory. `None`, and [`spawn`] forks instead, when
/// it cannot do the same: a user to switch to, the terminal's foreground
/// group to take, no executable file found on `PATH` (the fork path gives
/// the exact 126 or 127), a file the kernel cannot exec (`ENOEXEC`:
/// `execvp` runs it with `/bin/sh`, as tini's does), or a NUL byte.
fn spawn_without_fork(spec: &Spec, program: &OsStr) -> Option<Result<Pid, Error>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    if spec.ids.is_some() || spec.foreground {
        return None;
    }
    let path = if program.as_bytes().contains(&b'/') {
        std::path::PathBuf::from(program)
    } else {
        // Looked up as `Command` would: the app's PATH if it sets one.
        let path_var = match spec.env.get("PATH") {
            Some(path) => path.clone(),
            None => std::env::var("PATH").ok()?,
        };
        check_program(program, Some(&path_var)).ok()?
    };
    if let Some(dir) = &spec.workdir {
        if !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
            return None; // the fork path names the problem
        }
    }
    let cstr = |bytes: &[u8]| CString::new(bytes).ok();
    let file = cstr(path.as_os_str().as_bytes())?;
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Option<_>>()?;
    // The environment as `Command` builds it, drainit's with `spec.env`
    // over it: drainit's own entries are passed as they are (C strings
    // already), only the overrides are made here.
    let overrides: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<Option<_>>()?;
    let dir = match &spec.workdir {
        Some(dir) => Some(cstr(dir.as_bytes())?),
        None => None,
    };
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    extern "C" {
        static environ: *const *mut libc::c_char;
    }
    let mut envp_ptrs: Vec<*mut libc::c_char> = Vec::new();
    // SAFETY: `environ` is libc's NULL-terminated array of NUL-terminated
    // strings; drainit never changes its environment, so nothing writes
    // it while it is read here.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let bytes = std::ffi::CStr::from_ptr(*entry).to_bytes();
            let key = bytes.split(|b| *b == b'=').next().unwrap_or_default();
            let overridden = std::str::from_utf8(key).is_ok_and(|k| spec.env.contains_key(k));
            if !overridden {
                envp_ptrs.push(*entry);
            }
            entry = entry.add(1);
        }
    }
    envp_ptrs.extend(overrides.iter().map(|e| e.as_ptr().cast_mut()));
    envp_ptrs.push(std::ptr::null_mut());
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer passed lives until posix_spawn returns (the
    // CStrings and the pointer vectors above, the attr and actions on this
    // stack, destroyed below); the argv and envp arrays end with NULL.
    let rc = unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        libc::posix_spawnattr_init(&mut attr);
        libc::posix_spawn_file_actions_init(&mut actions);
        let mut defaults: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut defaults);
        for sig in crate::init::signals::OWN_IGNORES {
            libc::sigaddset(&mut defaults, sig);
        }
        // glibc's spawn child sets its two internal signals (32 and 33)
        // to SIG_IGN unless they are in this set, and its sigaddset
        // refuses them: their bits are set by hand (bit n-1 for signal n
        // in the kernel's layout, which sigset_t is), so the app gets them
        // at their default as after a fork.
        let words = (&mut defaults as *mut libc::sigset_t).cast::<libc::c_ulong>();
        *words |= (1 << 31) | (1 << 32);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::posix_spawnattr_setsigdefault(&mut attr, &defaults);
        libc::posix_spawnattr_setsigmask(&mut attr, &empty);
        libc::posix_spawnattr_setpgroup(&mut attr, 0);
        libc::posix_spawnattr_setflags(
            &mut attr,
            (libc::POSIX_SPAWN_SETPGROUP
                | libc::POSIX_SPAWN_SETSIGDEF
                | libc::POSIX_SPAWN_SETSIGMASK) as libc::c_short,
        );
        let mut rc = 0;
        if let Some(dir) = &dir {
            rc = libc::posix_spawn_file_actions_addchdir_np(&mut actions, dir.as_ptr());
        }
        if rc == 0 {
            rc = libc::posix_spawn(
                &mut pid,
                file.as_ptr(),
                &actions,
                &attr,
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
            );
        }
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        rc
    };
    match rc {
        0 => Some(Ok(Pid::from_raw(pid))),
        libc::ENOEXEC => None,
        errno => Some(Err(classify(program, io::Error::from_raw_os_error(errno)))),
    }
}

fn classify(program: &OsStr, e: io::Error) -> Error {
    let program = program.to_string_lossy();
    match e.raw_os_error() {
        Some(libc::ENOENT) => Error::NotFound(program.to_string()),
        Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EISDIR) | Some(libc::ETXTBSY) => {
            Error::NotExecutable(program.to_string(), e)
        }
        _ => Error::Other(program.to_string(), e),
    }
}

/// Finds `program` the way exec will (a name with a `/` as is, else on
/// `PATH`) and checks that it is an executable file, for `--check`.
pub fn check_program(program: &OsStr, path_var: Option<&str>) -> Result<std::path::PathBuf, Error> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<std::path::PathBuf> = if program.as_bytes().contains(&b'/') {
        vec![program.into()]
    } else {
        path_var
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .split(':')
            .map(|dir| std::path::Path::new(if dir.is_empty() { "." } else { dir }).join(program))
            .collect()
    };
    let mut found_unexecutable = None;
    for candidate in candidates {
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(candidate),
            Ok(_) => {
                found_unexecutable.get_or_insert(candidate);
            }
            Err(_) => {}
        }
    }
    match found_unexecutable {
        Some(path) => Err(Error::NotExecutable(
            path.display().to_string(),
            io::Error::from_raw_os_error(libc::EACCES),
        )),
        None => Err(Error::NotFound(program.to_string_lossy().into_owned())),
    }
}

/// Whether stdin is a terminal (then the app gets the foreground group).
pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

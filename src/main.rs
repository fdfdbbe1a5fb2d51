//! The `drainit` binary: parse, configure, run, exit with the right code.

use std::io::Write;
use std::process::ExitCode;

use std::path::Path;

use drainit::cli::{Cli, Stop};
use drainit::init::core::Core;
use drainit::init::{child, exit, StartError};
use drainit::lifecycle::driver;
use drainit::{http, init, logging};

fn main() -> ExitCode {
    let cli = match Cli::from_env() {
        Ok(cli) => cli,
        Err(Stop::Info(text)) => return code_of(emit(std::io::stdout(), &text, 0)),
        Err(Stop::Usage(text)) => return code_of(emit(std::io::stderr(), &text, exit::USAGE)),
    };
    match start(cli) {
        Ok(code) => code_of(code),
        Err(e) => {
            // Logging is set up by the time the core fails: its errors go
            // to the log (JSON for a collector), the earlier ones to stderr.
            if e.is_logged() {
                tracing::error!("{e}");
            } else {
                complain(&format!("drainit: {e}"));
            }
            code_of(e.exit_code())
        }
    }
}

/// Loads the config and runs the app under drainit; returns only for
/// `--check` and on a start error: once the app has run, drainit exits
/// from here with the app's code.
fn start(cli: Cli) -> Result<i32, StartError> {
    let config = cli.load_config()?;
    if cli.check {
        if let Some(program) = config.app.command.first() {
            let path_var = config
                .app
                .env
                .get("PATH")
                .cloned()
                .or_else(|| std::env::var("PATH").ok());
            child::check_program(program, path_var.as_deref()).map_err(StartError::Command)?;
        }
        return Ok(emit(std::io::stdout(), &config.to_toml(), 0));
    }
    if config.app.command.is_empty() {
        return Err(StartError::NoCommand);
    }
    // drainit leaves the directory it was started in once the app runs
    // (below, as dumb-init does): the relative paths it still
    // needs then, in the config and for reloads, are made absolute now.
    let start_dir = std::env::current_dir()
        .ok()
        .and_then(|dir| dir.into_os_string().into_string().ok());
    let mut config = config;
    if let Some(dir) = &start_dir {
        config.resolve_paths(dir);
    }
    logging::init(cli.log_format, cli.log_level);
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("drainit bug, please report: {info}");
    }));
    let reload = cli.config_path().map(|path| {
        let mut cli = cli.clone();
        let start_dir = start_dir.clone();
        let path = match &start_dir {
            Some(dir) => std::path::Path::new(dir).join(path),
            None => path,
        };
        if cli.config.is_some() {
            cli.config = Some(path.clone());
        }
        driver::Reload {
            path,
            load: Box::new(move || {
                let mut config = cli.load_config()?;
                if let Some(dir) = &start_dir {
                    config.resolve_paths(dir);
                }
                Ok(config)
            }),
        }
    });

    // The core, in tini's order, on this thread and before any other
    // exists: become init, block the signals, resolve the user, bind the
    // listener (the kubelet may call postStart as soon as the container
    // starts), spawn the app.
    let is_pid1 = nix::unistd::getpid().as_raw() == 1;
    let options = init::Options {
        subreaper: cli.subreaper,
        pdeathsig: cli.pdeathsig,
    };
    init::become_init(is_pid1, options).map_err(StartError::Init)?;
    let mut core = Core::new().map_err(StartError::Signals)?;
    let ids = match config.app.user.as_deref() {
        Some(user) => Some(init::user::resolve(user, Path::new("/")).map_err(StartError::User)?),
        None => None,
    };
    config.http.resolve_token().map_err(StartError::Token)?;
    let listener = match config.http.listen_addr() {
        Some(addr) => Some(http::server::bind(addr).map_err(|e| StartError::Listen(addr, e))?),
        None => None,
    };
    let spec = child::Spec {
        argv: config.app.command.clone(),
        env: config.app.env.clone(),
        // The directory drainit was started in, when app.workdir is not
        // set: given explicitly, because drainit leaves it below.
        workdir: config.app.workdir.clone().or_else(|| start_dir.clone()),
        ids,
        foreground: child::stdin_is_tty(),
    };
    let app = core.spawn_app(&spec).map_err(StartError::Spawn)?;
    // As dumb-init: once the app runs, PID 1 holds no reference to the
    // directory it was started in (a volume mounted there can be
    // unmounted; /proc/1/cwd shows /). Unknown start directory: stay,
    // relative paths still need it.
    if start_dir.is_some() {
        if let Err(e) = std::env::set_current_dir("/") {
            tracing::warn!("cannot leave the start directory for /: {e}");
        }
    }

    // After the spawn: the termination file's lookup is not on the app's
    // start path.
    let (rules, record_path) = driver::first_rules(&config);

    // Then the lifecycle, on a thread of its own (which inherits the
    // blocked signals): the runtime, the server, the steps.
    let serve = listener.map(|listener| -> driver::Serve {
        Box::new(move |shared, stop| Box::pin(http::server::serve(listener, shared, stop)))
    });
    let start = driver::Start {
        config,
        spec,
        serve,
        reload,
        link: core.link(app),
        is_pid1,
        rules: rules.clone(),
        record_path,
    };
    let thread = std::thread::Builder::new()
        .name("lifecycle".into())
        .spawn(move || driver::run_thread(start));
    if let Err(e) = thread {
        core.kill_app();
        return Err(StartError::Runtime(e));
    }
    let code = core.run(rules);
    drainit::init::exit::now(code)
}

/// Writes `text` (help, usage, `--check`'s config) and returns `code`, the
/// exit code for the text's own meaning. `print!` panics when the write
/// fails, and stdout may be a pipe its reader has closed (`drainit --check
/// | head -c1`): drainit ignores SIGPIPE, so that is EPIPE, and like a tool
/// killed by SIGPIPE it ends quietly, its code unchanged (the config was
/// valid or not whoever reads the text). Any other write error is one of
/// drainit's: said on stderr if possible, exit 1.
fn emit(mut out: impl Write, text: &str, code: i32) -> i32 {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => code,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "drainit: cannot write the output: {e}");
            exit::INTERNAL
        }
    }
}

/// A line on stderr; never a panic, whatever stderr is (see [`emit`]).
fn complain(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Exit codes are 0..=255; anything else wraps like the shell's.
fn code_of(code: i32) -> ExitCode {
    ExitCode::from((code & 0xff) as u8)
}

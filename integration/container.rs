//! drainit as PID 1 of a real OCI container, run by `runc`.
//!
//! Each test assembles a bundle in a temporary directory: a root filesystem
//! holding only a static busybox (from Debian's `busybox-static`) and the
//! static drainit binary at `/sbin/drainit`, and a `config.json` made by
//! `runc spec` (default namespaces: pid, mount, ipc, uts, network) with the
//! process and one bind mount edited in. A host directory is bind-mounted at
//! `/shared`, so the app inside can leave marker files the test waits on.
//!
//! Signals are sent the way container engines send them: `runc kill`, which
//! signals the container's PID 1 — drainit — from the parent PID namespace.
//! The kernel delivers such signals to a namespace's init only when it has a
//! handler installed, which is exactly what these tests exercise.
//!
//! Needs root, `runc` and `busybox-static` (integration/test.sh installs
//! them).

use std::fs::{self, File};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The static release binary under test (see integration/test.sh).
const DRAINIT: &str = env!("CARGO_BIN_EXE_drainit");

/// Debian's busybox-static: a static binary, so the rootfs needs no libc.
const BUSYBOX: &str = "/bin/busybox";

/// Safety net only: every wait below ends on an event long before this.
const TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// One OCI bundle and the container run from it. Dropping it force-deletes
/// the container, so a failed test leaves nothing running.
struct Container {
    id: String,
    bundle: tempfile::TempDir,
    /// Host side of the container's `/shared`.
    shared: PathBuf,
    runc: Option<Child>,
}

impl Container {
    /// A bundle whose process is `args`, with `files` (path inside the
    /// rootfs, contents) written into the rootfs.
    fn new(args: &[&str], files: &[(&str, &str)]) -> Container {
        let bundle = tempfile::Builder::new()
            .prefix("drainit-bundle-")
            .tempdir()
            .expect("create bundle dir");
        let rootfs = bundle.path().join("rootfs");
        let shared = bundle.path().join("shared");
        for dir in ["bin", "sbin", "proc", "sys", "dev", "tmp", "shared", "etc"] {
            fs::create_dir_all(rootfs.join(dir)).expect("create rootfs dir");
        }
        fs::create_dir_all(&shared).expect("create shared dir");
        install_busybox(&rootfs);
        fs::copy(DRAINIT, rootfs.join("sbin/drainit")).expect("copy drainit into rootfs");
        for (path, contents) in files {
            let dest = rootfs.join(path.trim_start_matches('/'));
            fs::create_dir_all(dest.parent().expect("file has a parent")).expect("mkdir");
            fs::write(dest, contents).expect("write rootfs file");
        }

        let status = Command::new("runc")
            .arg("spec")
            .current_dir(bundle.path())
            .status()
            .expect("run `runc spec` (is runc installed? integration/test.sh installs it)");
        assert!(status.success(), "runc spec failed: {status}");
        let spec_path = bundle.path().join("config.json");
        let spec = fs::read_to_string(&spec_path).expect("read config.json");
        fs::write(&spec_path, edit_spec(&spec, args, &shared)).expect("write config.json");

        let id = format!(
            "drainit-test-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::SeqCst)
        );
        Container {
            id,
            bundle,
            shared,
            runc: None,
        }
    }

    /// Starts `runc run` in the foreground (as an engine's shim does): its
    /// exit status is the container's, i.e. drainit's exit code.
    fn start(&mut self) {
        let out = File::create(self.bundle.path().join("stdout")).expect("stdout file");
        let err = File::create(self.bundle.path().join("stderr")).expect("stderr file");
        let child = Command::new("runc")
            .args(["run", "--bundle"])
            .arg(self.bundle.path())
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn runc run");
        self.runc = Some(child);
    }

    /// Runs the container to its end and returns its exit code.
    fn run(&mut self) -> i32 {
        self.start();
        self.wait()
    }

    /// Waits for the container to exit; returns its exit code.
    fn wait(&mut self) -> i32 {
        let deadline = Instant::now() + TIMEOUT;
        let runc = self.runc.as_mut().expect("container started");
        let status = loop {
            if let Some(status) = runc.try_wait().expect("wait for runc") {
                break status;
            }
            if Instant::now() > deadline {
                panic!(
                    "container {} still running after {TIMEOUT:?}\n{}",
                    self.id,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        status
            .code()
            .unwrap_or_else(|| panic!("runc died of a signal\n{}", self.output()))
    }

    /// `runc kill <id> <signal>`: signals the container's PID 1, drainit.
    fn kill(&self, signal: &str) {
        let status = Command::new("runc")
            .args(["kill", &self.id, signal])
            .status()
            .expect("run runc kill");
        assert!(
            status.success(),
            "runc kill {signal} failed\n{}",
            self.output()
        );
    }

    /// Waits until the app has created `/shared/<name>`; returns its
    /// contents.
    fn wait_for_file(&self, name: &str) -> String {
        let path = self.shared.join(name);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            // The app writes with `echo x > file`: the file can exist before
            // its line is in it, so wait for a complete line.
            if let Ok(text) = fs::read_to_string(&path) {
                if text.ends_with('\n') {
                    return text;
                }
            }
            if Instant::now() > deadline {
                panic!("/shared/{name} never appeared\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn shared_file(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.shared.join(name)).ok()
    }

    /// The container's stdout and stderr (drainit's log), for messages.
    fn output(&self) -> String {
        let read =
            |name: &str| fs::read_to_string(self.bundle.path().join(name)).unwrap_or_default();
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            read("stdout"),
            read("stderr")
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut runc) = self.runc.take() {
            let _ = Command::new("runc")
                .args(["delete", "--force", &self.id])
                .stderr(Stdio::null())
                .status();
            let _ = runc.kill();
            let _ = runc.wait();
        }
    }
}

/// Copies busybox into the rootfs and links every applet to it.
fn install_busybox(rootfs: &Path) {
    let busybox = rootfs.join("bin/busybox");
    fs::copy(BUSYBOX, &busybox)
        .expect("copy /bin/busybox (is busybox-static installed? integration/test.sh installs it)");
    // Ask the original, not the copy: exec'ing a file just written can fail
    // with ETXTBSY while another test thread's fork still holds the write fd.
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("busybox --list");
    assert!(list.status.success(), "busybox --list failed");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet.is_empty() || applet == "busybox" {
            continue;
        }
        symlink("busybox", rootfs.join("bin").join(applet)).expect("link busybox applet");
    }
}

/// Edits the default `runc spec` output: our process, no terminal, a
/// writable root, and `shared` bind-mounted at `/shared`. The edits are
/// textual (no JSON crate among the dev-dependencies) and each asserts that
/// what it replaces is there, so a changed `runc spec` fails loudly.
fn edit_spec(spec: &str, args: &[&str], shared: &Path) -> String {
    let spec = replace_once(spec, "\"terminal\": true", "\"terminal\": false");
    let spec = replace_once(&spec, "\"readonly\": true", "\"readonly\": false");
    let args_start = spec.find("\"args\": [").expect("spec has process.args");
    let args_end = args_start + spec[args_start..].find(']').expect("args closes");
    let args_json = args.iter().map(|a| json_string(a)).collect::<Vec<_>>();
    let spec = format!(
        "{}\"args\": [{}{}",
        &spec[..args_start],
        args_json.join(", "),
        &spec[args_end..]
    );
    let mount = format!(
        "\"mounts\": [\n\t\t{{\"destination\": \"/shared\", \"type\": \"bind\", \"source\": {}, \"options\": [\"rbind\", \"rw\"]}},",
        json_string(&shared.to_string_lossy())
    );
    replace_once(&spec, "\"mounts\": [", &mount)
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "expected exactly one {from:?} in the runc spec"
    );
    text.replacen(from, to, 1)
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `drainit -- /bin/sh -c SCRIPT`, with the default config (HTTP included).
fn sh(script: &str) -> Vec<&str> {
    vec!["/sbin/drainit", "--", "/bin/sh", "-c", script]
}

#[test]
fn exit_code_of_the_app_is_the_exit_code_of_the_container() {
    let mut c = Container::new(&sh("echo hello from the app; exit 7"), &[]);
    assert_eq!(c.run(), 7, "{}", c.output());
    assert!(
        c.output().contains("hello from the app"),
        "app stdout reaches the container's stdout\n{}",
        c.output()
    );
}

#[test]
fn default_config_file_in_the_image_is_used() {
    // An image that ships /etc/drainit/drainit.toml needs no --config; the
    // map turns the JVM-style 143 into success.
    let config = "[app]\ncommand = [\"/bin/sh\", \"-c\", \"exit 143\"]\n\n\
                  [shutdown]\nexit_code_map = { 143 = 0 }\n";
    let mut c = Container::new(&["/sbin/drainit"], &[("/etc/drainit/drainit.toml", config)]);
    assert_eq!(c.run(), 0, "{}", c.output());
}

#[test]
fn command_not_found_exits_127() {
    let mut c = Container::new(&["/sbin/drainit", "--", "/no/such/app"], &[]);
    assert_eq!(c.run(), 127, "{}", c.output());
}

#[test]
fn runc_kill_usr1_is_forwarded_and_term_stops_the_app() {
    let script = r#"
        trap 'echo usr1 >> /shared/usr1' USR1
        trap 'echo term > /shared/term; exit 42' TERM
        echo "$$" > /shared/ready
        while :; do sleep 1000 & wait $!; done
    "#;
    let mut c = Container::new(&sh(script), &[]);
    c.start();
    let pid = c.wait_for_file("ready");
    assert_ne!(pid.trim(), "1", "the app is drainit's child, not PID 1");
    c.kill("SIGUSR1");
    assert_eq!(c.wait_for_file("usr1"), "usr1\n", "{}", c.output());
    assert_eq!(c.shared_file("term"), None, "USR1 must not stop the app");
    c.kill("SIGTERM");
    assert_eq!(c.wait(), 42, "the app's own exit code\n{}", c.output());
    assert_eq!(c.shared_file("term").as_deref(), Some("term\n"));
}

#[test]
fn app_killed_by_term_gives_143() {
    // `exec` so that the app itself has SIGTERM's default action.
    let mut c = Container::new(&sh("echo up > /shared/ready; exec sleep 1000"), &[]);
    c.start();
    c.wait_for_file("ready");
    c.kill("SIGTERM");
    assert_eq!(c.wait(), 143, "128 + SIGTERM\n{}", c.output());
}

#[test]
fn orphaned_zombies_are_reaped_inside_the_container() {
    // Each inner `sh` starts a sleep, records its pid and exits at once, so
    // the sleeps are reparented to PID 1. An exited process that nobody
    // reaps keeps its /proc entry as a zombie, so the app's wait for those
    // entries to vanish ends only if drainit reaps all ten.
    let script = r#"
        for i in 1 2 3 4 5 6 7 8 9 10; do
            sh -c 'sleep 0.2 & echo $! >> /shared/orphans'
        done
        n=0
        for pid in $(cat /shared/orphans); do
            while [ -e /proc/$pid ]; do
                n=$((n + 1))
                if [ "$n" -gt 100 ]; then
                    cat /proc/$pid/stat > /shared/result
                    exit 1
                fi
                sleep 0.05
            done
        done
        echo reaped > /shared/result
    "#;
    let mut c = Container::new(&sh(script), &[]);
    let code = c.run();
    assert_eq!(
        c.shared_file("result").as_deref(),
        Some("reaped\n"),
        "a zombie's /proc/PID/stat is shown\n{}",
        c.output()
    );
    assert_eq!(code, 0, "{}", c.output());
    let orphans = c.shared_file("orphans").unwrap_or_default();
    assert_eq!(orphans.lines().count(), 10, "{orphans}");
}

#[test]
fn processes_left_after_the_app_exits_get_sigterm() {
    // A daemon that escaped the app's group and session with setsid. When
    // the app exits, drainit SIGTERMs what is left (kill(-1) as PID 1); only
    // a SIGTERM can run the trap — the kernel's teardown of the namespace
    // would be an untrappable SIGKILL.
    let script = r#"
        setsid sh -c '
            trap "echo term > /shared/orphan-term; exit 0" TERM
            echo up > /shared/orphan-up
            while :; do sleep 1000 & wait $!; done
        ' &
        while [ ! -e /shared/orphan-up ]; do sleep 0.01; done
        exit 3
    "#;
    let mut c = Container::new(&sh(script), &[]);
    assert_eq!(
        c.run(),
        3,
        "the app's code, not the orphan's\n{}",
        c.output()
    );
    assert_eq!(
        c.shared_file("orphan-term").as_deref(),
        Some("term\n"),
        "{}",
        c.output()
    );
}

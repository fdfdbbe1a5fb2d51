//! drainit as PID 1 of a real OCI container, run by `runc`.
//!
//! Each test assembles a bundle in a temporary directory: a root filesystem
//! holding only a static busybox (from Debian's `busybox-static`) and the
//! static drainit binary at `/sbin/drainit`, and a `config.json` made by
//! `runc spec` (default namespaces: pid, mount, ipc, uts, network) with the
//! process and one bind mount edited in. A host directory is bind-mounted at
//! `/shared`, so the app inside can leave marker files the test waits on.
//! A [`Setup`] can also drop the network namespace (the container shares the
//! host's, so the test reaches drainit's HTTP server over TCP on a port
//! picked at run time) and set a cgroup memory limit.
//!
//! Signals are sent the way container engines send them: `runc kill`, which
//! signals the container's PID 1 — drainit — from the parent PID namespace.
//! The kernel delivers such signals to a namespace's init only when it has a
//! handler installed, which is exactly what these tests exercise. Looking
//! inside a running container goes through `runc exec`, as `docker exec`
//! does.
//!
//! Needs root, `runc` and `busybox-static` (integration/test.sh installs
//! them).

// The HTTP client and free ports; the PID-1 helper is for unshare runs.
mod util;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use util::free_port;
use util::http::Request;

/// The static release binary under test (see integration/test.sh).
const DRAINIT: &str = env!("CARGO_BIN_EXE_drainit");

/// Debian's busybox-static: a static binary, so the rootfs needs no libc.
const BUSYBOX: &str = "/bin/busybox";

/// Safety net only: every wait below ends on an event long before this.
const TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// How the bundle differs from `runc spec`'s defaults, beyond the process.
#[derive(Debug, Default)]
struct Setup<'a> {
    /// Files (path inside the rootfs, contents) written into the rootfs.
    files: &'a [(&'a str, &'a str)],
    /// Share the host's network namespace (no `network` namespace), as
    /// `docker run --network host` does, so the test can call drainit's HTTP
    /// server on 127.0.0.1.
    host_network: bool,
    /// `linux.resources.memory.limit` in bytes, with swap equal to it (no
    /// swap on top of the limit).
    memory_limit: Option<u64>,
}

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
        Container::with(
            args,
            &Setup {
                files,
                ..Setup::default()
            },
        )
    }

    /// A bundle whose process is `args`, set up as `setup` says.
    fn with(args: &[&str], setup: &Setup<'_>) -> Container {
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
        for (path, contents) in setup.files {
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
        fs::write(&spec_path, edit_spec(&spec, args, &shared, setup)).expect("write config.json");

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

    /// `runc exec <id> ARGS...`: runs a process inside the running
    /// container (its namespaces and cgroup) and returns its stdout.
    fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("runc")
            .args(["exec", &self.id])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run runc exec");
        assert!(
            out.status.success(),
            "runc exec {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.output()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every process in the container's PID namespace, as the container's
    /// own /proc shows it (read through `runc exec`, whose `sh` and `cat`
    /// are on the list too).
    fn processes(&self) -> Vec<Proc> {
        // A process can exit between the glob and the read; cat skips it.
        let stats = self.exec(&["/bin/sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null; true"]);
        stats.lines().filter_map(Proc::parse).collect()
    }

    /// Creates `/shared/<name>` from the host.
    fn touch(&self, name: &str) {
        fs::write(self.shared.join(name), "").expect("create file in /shared");
    }

    /// The termination record drainit wrote to `/shared/termination-log`.
    fn record(&self) -> String {
        self.shared_file("termination-log")
            .unwrap_or_else(|| panic!("no termination record\n{}", self.output()))
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
/// writable root, `shared` bind-mounted at `/shared`, and what `setup` asks
/// for. Each edit asserts that what it changes is there, so a changed
/// `runc spec` fails loudly.
fn edit_spec(spec: &str, args: &[&str], shared: &Path, setup: &Setup<'_>) -> String {
    let mut spec: Value = serde_json::from_str(spec).expect("runc spec writes JSON");
    let process = &mut spec["process"];
    assert_eq!(
        process["terminal"],
        json!(true),
        "runc spec: process.terminal"
    );
    process["terminal"] = json!(false);
    process["args"] = json!(args);
    assert_eq!(
        spec["root"]["readonly"],
        json!(true),
        "runc spec: root.readonly"
    );
    spec["root"]["readonly"] = json!(false);
    spec["mounts"]
        .as_array_mut()
        .expect("runc spec: mounts is an array")
        .push(json!({
            "destination": "/shared",
            "type": "bind",
            "source": shared,
            "options": ["rbind", "rw"],
        }));
    let linux = &mut spec["linux"];
    if setup.host_network {
        let namespaces = linux["namespaces"]
            .as_array_mut()
            .expect("runc spec: linux.namespaces is an array");
        let before = namespaces.len();
        namespaces.retain(|ns| ns["type"] != json!("network"));
        assert_eq!(
            namespaces.len(),
            before - 1,
            "runc spec: a network namespace"
        );
    }
    if let Some(limit) = setup.memory_limit {
        let resources = linux["resources"]
            .as_object_mut()
            .expect("runc spec: linux.resources is an object");
        resources.insert("memory".into(), json!({ "limit": limit, "swap": limit }));
    }
    serde_json::to_string_pretty(&spec).expect("serialize config.json")
}

/// One line of `/proc/PID/stat`: `pid (comm) state ppid ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proc {
    pid: u32,
    comm: String,
    state: char,
    ppid: u32,
}

impl Proc {
    fn parse(line: &str) -> Option<Proc> {
        // comm may hold spaces and parentheses: it ends at the last ')'.
        let open = line.find(" (")?;
        let close = line.rfind(") ")?;
        let mut rest = line[close + 2..].split(' ');
        Some(Proc {
            pid: line[..open].parse().ok()?,
            comm: line[open + 2..close].to_string(),
            state: rest.next()?.chars().next()?,
            ppid: rest.next()?.parse().ok()?,
        })
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; returns the status code and
/// the body, or `None` when nothing answers.
fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let response = Request::new(port, method, path)
        .header("Connection", "close")
        .timeout(Some(TIMEOUT))
        .send()
        .ok()?;
    Some((response.status, response.body))
}

/// Polls `GET path` until it answers `want`; panics at the deadline.
fn wait_for_status(c: &Container, port: u16, path: &str, want: u16) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = http(port, "GET", path);
        match got {
            Some((code, body)) if code == want => return body,
            _ if Instant::now() > deadline => {
                panic!("GET {path} never answered {want}: {got:?}\n{}", c.output())
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A stand-in for a service registry on the host: answers every request
/// with 200 and sends its request line down the channel.
fn registry() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind registry");
    let port = listener.local_addr().expect("registry address").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(TIMEOUT));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let line = head.lines().next().unwrap_or_default().to_string();
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (port, rx)
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

/// An app that records a SIGTERM in `/shared/order` and exits 42 on it, and
/// says `/shared/up` once its trap is in place.
const APP_EXITS_42_ON_TERM: &str = r#"
    trap 'echo app-term >> /shared/order; exit 42' TERM
    echo up > /shared/up
    while :; do sleep 1000 & wait $!; done
"#;

/// `[app]` and `[http]` of a config for a host-network container: drainit
/// listens on 127.0.0.1:`port`, the record goes to `/shared`.
fn config_head(port: u16, app: &str) -> String {
    let command = serde_json::to_string(&["/bin/sh", "-c", app]).expect("serialize argv");
    format!(
        "[app]\ncommand = {command}\n\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [termination_message]\npath = \"/shared/termination-log\"\n"
    )
}

/// A host-network container running drainit with `config`.
fn host_network_container(config: &str) -> Container {
    Container::with(
        &["/sbin/drainit"],
        &Setup {
            files: &[("/etc/drainit/drainit.toml", config)],
            host_network: true,
            ..Setup::default()
        },
    )
}

#[test]
fn readyz_and_prestop_over_tcp_from_the_host() {
    let port = free_port();
    let config = format!(
        "{}\n[shutdown]\ngrace_period = \"20s\"\nstop_timeout = \"5s\"\n\n\
         [[drain]]\nname = \"mark drained\"\n\
         exec = [\"/bin/sh\", \"-c\", \"echo drained >> /shared/drained\"]\n",
        config_head(port, APP_EXITS_42_ON_TERM)
    );
    let mut c = host_network_container(&config);
    c.start();
    c.wait_for_file("up");
    wait_for_status(&c, port, "/readyz", 200);
    assert_eq!(
        http(port, "GET", "/healthz").map(|r| r.0),
        Some(200),
        "{}",
        c.output()
    );

    // The kubelet's preStop httpGet is a GET; any other method starts
    // nothing.
    assert_eq!(http(port, "POST", "/prestop").map(|r| r.0), Some(405));
    assert_eq!(http(port, "GET", "/readyz").map(|r| r.0), Some(200));
    assert_eq!(c.shared_file("drained"), None);

    let (code, summary) = http(port, "GET", "/prestop").expect("GET /prestop answers");
    assert_eq!(code, 200, "{summary}\n{}", c.output());
    assert!(summary.contains("mark drained: ok"), "{summary}");
    // /prestop answers only when the drain is done.
    assert_eq!(c.shared_file("drained").as_deref(), Some("drained\n"));
    assert_eq!(
        http(port, "GET", "/readyz"),
        Some((503, "shutting down\n".to_string()))
    );
    // A repeated hook joins the finished drain instead of running it again.
    assert_eq!(http(port, "GET", "/prestop").map(|r| r.0), Some(200));
    assert_eq!(c.shared_file("drained").as_deref(), Some("drained\n"));
    // The stop waits for the kubelet's SIGTERM.
    assert_eq!(c.shared_file("order"), None, "app stopped before SIGTERM");

    c.kill("SIGTERM");
    assert_eq!(c.wait(), 42, "the app's exit code\n{}", c.output());
    assert_eq!(c.shared_file("order").as_deref(), Some("app-term\n"));
    let record = c.record();
    assert!(
        record.starts_with(
            "exit 42 (exited with code 42) after drain; stop triggered by SIGTERM via prestop; SIGKILL not needed\n"
        ),
        "{record}"
    );
    assert!(record.contains("\ndrain: mark drained: ok ("), "{record}");
}

#[test]
fn runc_kill_term_drains_then_stops_the_app_and_passes_its_exit_code() {
    let port = free_port();
    let (registry_port, deregistered) = registry();
    // The second step holds the drain until the test has looked at /readyz.
    let config = format!(
        "{}\n[shutdown]\ngrace_period = \"20s\"\nstop_timeout = \"5s\"\n\n\
         [[drain]]\nname = \"deregister\"\n\
         http = {{ url = \"http://127.0.0.1:{registry_port}/deregister/app-1\" }}\n\n\
         [[drain]]\nname = \"in-flight\"\n\
         exec = [\"/bin/sh\", \"-c\", \"echo drain >> /shared/order; \
                  while [ ! -e /shared/release ]; do sleep 0.02; done; \
                  echo drained >> /shared/order\"]\n",
        config_head(port, APP_EXITS_42_ON_TERM)
    );
    let mut c = host_network_container(&config);
    c.start();
    c.wait_for_file("up");
    wait_for_status(&c, port, "/readyz", 200);

    c.kill("SIGTERM");
    let request = deregistered
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("the http step never came\n{}", c.output()));
    assert_eq!(request, "GET /deregister/app-1 HTTP/1.1");
    assert_eq!(c.wait_for_file("order"), "drain\n", "{}", c.output());
    assert_eq!(
        http(port, "GET", "/readyz"),
        Some((503, "shutting down\n".to_string())),
        "not ready during the drain"
    );
    assert_eq!(
        c.shared_file("order").as_deref(),
        Some("drain\n"),
        "the app got its stop signal before the drain was done"
    );

    c.touch("release");
    assert_eq!(
        c.wait(),
        42,
        "runc run exits with the app's code\n{}",
        c.output()
    );
    assert_eq!(
        c.shared_file("order").as_deref(),
        Some("drain\ndrained\napp-term\n"),
        "the drain, then the stop signal\n{}",
        c.output()
    );
    let record = c.record();
    assert!(
        record.starts_with(
            "exit 42 (exited with code 42) after drain; stop triggered by SIGTERM; SIGKILL not needed\n"
        ),
        "{record}"
    );
    assert!(record.contains("\ndrain: deregister: ok ("), "{record}");
    assert!(record.contains("\ndrain: in-flight: ok ("), "{record}");
}

#[test]
fn app_that_ignores_sigterm_is_sigkilled_at_the_deadline() {
    // The trap records the SIGTERM and carries on; its sleep children die of
    // it and the loop starts new ones. Kill deadline: t0 + grace_period -
    // kill_margin = 1.5s (also the floor, 2s - kill_margin).
    let app = r#"
        trap 'echo term-ignored >> /shared/term' TERM
        echo up > /shared/up
        while :; do sleep 1000 & wait $!; done
    "#;
    let port = free_port();
    let config = format!(
        "{}\n[shutdown]\ngrace_period = \"2s\"\nstop_timeout = \"1s\"\nkill_margin = \"500ms\"\n",
        config_head(port, app)
    );
    let mut c = host_network_container(&config);
    c.start();
    c.wait_for_file("up");
    let t0 = Instant::now();
    c.kill("SIGTERM");
    assert_eq!(c.wait(), 137, "128 + SIGKILL\n{}", c.output());
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "SIGKILL before the deadline: {took:?}\n{}",
        c.output()
    );
    assert_eq!(
        c.shared_file("term").as_deref(),
        Some("term-ignored\n"),
        "the app got the stop signal first"
    );
    let record = c.record();
    let verdict = record.lines().next().unwrap_or_default();
    assert!(
        verdict.starts_with("exit 137 (killed by SIGKILL)"),
        "{record}"
    );
    assert!(verdict.ends_with("; SIGKILL needed"), "{record}");
    assert!(verdict.contains("stop triggered by SIGTERM"), "{record}");
}

#[test]
fn no_zombie_survives_in_a_running_container() {
    // Twenty daemons whose parent exits at once: reparented to PID 1. The
    // test kills them from inside the container (as `docker exec` would);
    // only PID 1 can reap them, and `ps` in the container must show
    // neither them nor any other zombie afterwards, while the app runs on.
    let script = r#"
        for i in $(seq 20); do
            sh -c 'sleep 1000 & echo $! >> /shared/orphans'
        done
        echo spawned > /shared/spawned
        while :; do sleep 1000 & wait $!; done
    "#;
    let mut c = Container::new(&sh(script), &[]);
    c.start();
    c.wait_for_file("spawned");
    let orphans: Vec<u32> = c
        .shared_file("orphans")
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().expect("a pid"))
        .collect();
    assert_eq!(orphans.len(), 20);

    let deadline = Instant::now() + TIMEOUT;
    loop {
        // The intermediate shells exit in their own time.
        let procs = c.processes();
        let adopted = orphans
            .iter()
            .all(|pid| procs.iter().any(|p| p.pid == *pid && p.ppid == 1));
        if adopted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphans not adopted by PID 1: {procs:?}\n{}",
            c.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let pids: Vec<String> = orphans.iter().map(u32::to_string).collect();
    let mut kill = vec!["/bin/kill", "-KILL"];
    kill.extend(pids.iter().map(String::as_str));
    c.exec(&kill);

    let deadline = Instant::now() + TIMEOUT;
    loop {
        let procs = c.processes();
        let zombies: Vec<&Proc> = procs.iter().filter(|p| p.state == 'Z').collect();
        let left: Vec<&Proc> = procs.iter().filter(|p| orphans.contains(&p.pid)).collect();
        if zombies.is_empty() && left.is_empty() {
            assert!(
                procs.iter().any(|p| p.pid == 1 && p.comm == "drainit"),
                "{procs:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "zombies {zombies:?}, orphans left {left:?}\n{}",
            c.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // drainit counts them (the server listens in the container's own
    // network namespace here, so ask from inside).
    let metrics = c.exec(&[
        "/bin/wget",
        "-q",
        "-O",
        "-",
        "http://127.0.0.1:7979/metrics",
    ]);
    let reaped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("drainit_zombies_reaped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no zombie counter in\n{metrics}"));
    assert!(reaped >= 20.0, "reaped {reaped}\n{metrics}");

    c.kill("SIGTERM");
    assert_eq!(c.wait(), 143, "{}", c.output());
}

#[test]
fn oom_killed_app_gives_137_and_the_record_says_oom_when_on_crash_is_record() {
    // One process grows alone: the app execs awk, which doubles a string
    // until the 32 MiB limit stops it, so the app itself is the biggest
    // process and the one the OOM killer picks. No pipeline: a writer still blocked on a pipe while
    // the victim's memory is being freed can call the OOM killer a second
    // time, and then the next biggest process, drainit, was picked (seen
    // about one run in six with `head | tr` into a command substitution).
    let app = r#"
        echo up > /shared/up
        exec awk 'BEGIN { s = "a"; while (1) s = s s }'
    "#;
    let command = serde_json::to_string(&["/bin/sh", "-c", app]).expect("serialize argv");
    let config = format!(
        "[app]\ncommand = {command}\n\n\
         [termination_message]\npath = \"/shared/termination-log\"\non_crash = \"record\"\n"
    );
    let mut c = Container::with(
        &["/sbin/drainit"],
        &Setup {
            files: &[("/etc/drainit/drainit.toml", &config)],
            memory_limit: Some(32 << 20),
            ..Setup::default()
        },
    );
    assert_eq!(c.run(), 137, "128 + SIGKILL\n{}", c.output());
    assert_eq!(c.shared_file("up").as_deref(), Some("up\n"));
    let record = c.record();
    assert!(
        record.starts_with("OOMKilled: exit 137 (killed by SIGKILL) on its own"),
        "{record}\n{}",
        c.output()
    );
}

#[test]
fn runc_kill_all_kill_during_the_drain_leaves_a_record_saying_where() {
    // `runc kill --all <id> KILL` SIGKILLs every process of the container
    // at once, drainit included: what a cgroup v2 group OOM kill
    // (`memory.oom.group = 1`, set by the kubelet since 1.28) does. drainit
    // gets no chance to write anything then: the record must already be
    // in the file.
    let app = r#"
        echo up > /shared/up
        while :; do sleep 1000 & wait $!; done
    "#;
    let command = serde_json::to_string(&["/bin/sh", "-c", app]).expect("serialize argv");
    let config = format!(
        "[app]\ncommand = {command}\n\n\
         [shutdown]\ngrace_period = \"30s\"\nstop_timeout = \"5s\"\n\n\
         [termination_message]\npath = \"/shared/termination-log\"\n\n\
         [[drain]]\nname = \"first\"\nexec = [\"/bin/true\"]\n\n\
         [[drain]]\nname = \"deregister\"\n\
         exec = [\"/bin/sh\", \"-c\", \"echo started > /shared/step; sleep 100\"]\ntimeout = \"60s\"\n\n\
         [[drain]]\nsleep = \"1s\"\n"
    );
    let mut c = Container::new(
        &["/sbin/drainit"],
        &[("/etc/drainit/drainit.toml", &config)],
    );
    c.start();
    c.wait_for_file("up");
    assert_eq!(
        c.shared_file("termination-log"),
        None,
        "nothing written while the app simply runs"
    );
    c.kill("SIGTERM");
    c.wait_for_file("step");
    // The step's marker can come a moment before the record's rewrite (the
    // driver rewrites it on the runner's progress event): kill once the
    // record stands at step 2.
    let deadline = Instant::now() + TIMEOUT;
    while !c
        .shared_file("termination-log")
        .is_some_and(|record| record.contains("step 2/3"))
    {
        assert!(
            Instant::now() < deadline,
            "the record never reached step 2/3\n{}",
            c.output()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = Command::new("runc")
        .args(["kill", "--all", &c.id, "KILL"])
        .status()
        .expect("run runc kill --all");
    assert!(status.success(), "runc kill --all failed\n{}", c.output());
    c.wait();
    let record = c.record();
    eprintln!("record:\n{record}");
    let first = record.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("killed during the drain: step 2/3 \"deregister\" started at 20"),
        "{record}\n{}",
        c.output()
    );
    assert!(
        first.contains("; cause signal; budget ends at 20"),
        "{record}"
    );
    assert!(record.contains("\ndrain: first: ok ("), "{record}");
    assert!(record.len() <= 4096);
}

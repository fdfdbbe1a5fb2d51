//! The record of a stop (SPEC section 8): the short text Kubernetes shows in
//! `kubectl describe pod` under Last State.
//!
//! This module owns what the record says ([`render`]), where it goes
//! ([`path`], [`write`]) and one fact only the cgroup knows: whether the
//! kernel's OOM killer fired ([`OomWatch`]). It never decides the exit code
//! or the cause of a stop; the supervisor hands those in. It must never
//! panic or block the exit: every error is returned for the caller to log.
//!
//! The kubelet keeps only the last 4096 bytes of the file, so the record is
//! built to fit: the verdict comes first and the whole text stays within
//! [`MAX_BYTES`].

use std::path::{Path, PathBuf};

use crate::reaper::Status;
use crate::steps::StepReport;

/// The kubelet reads at most this much of the termination message file.
pub const MAX_BYTES: usize = 4096;

/// Where Kubernetes mounts the termination message file by default
/// (`terminationMessagePath`).
pub const DEFAULT_PATH: &str = "/dev/termination-log";

/// A single step line longer than this is shortened, so one chatty step
/// (an HTTP error body, say) cannot crowd out the others.
const MAX_STEP_LINE: usize = 256;

/// Room kept free for the `... N more steps` line.
const MORE_LINE_RESERVE: usize = 32;

/// Everything the record says about one stop.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// How the app ended.
    pub exit: Status,
    /// drainit's final exit code (after `shutdown.exit_code_map`).
    pub exit_code: i32,
    /// Whether the kernel's OOM killer fired in this container.
    pub oom_killed: bool,
    /// What started the shutdown: `"signal"`, `"prestop"`, `"drain-request"`,
    /// or `None` when the app exited on its own.
    pub cause: Option<&'a str>,
    /// The trigger signal that came, e.g. `"SIGTERM"`.
    pub trigger_signal: Option<&'a str>,
    /// Whether drainit had to SIGKILL the app.
    pub killed: bool,
    pub poststart: &'a [StepReport],
    pub drain: &'a [StepReport],
    pub on_exit: &'a [StepReport],
}

/// Renders the record: the verdict on the first line, e.g.
/// `exit 143 (killed by SIGTERM) after drain; stop triggered by SIGTERM via
/// prestop; SIGKILL not needed`, prefixed with `OOMKilled: ` when the OOM
/// killer fired; then one line per step, `drain: <summary line>`.
///
/// Never more than [`MAX_BYTES`]: long step lines are shortened, and when
/// the steps do not all fit the last line says `... N more steps`. The
/// verdict is always kept.
pub fn render(r: &Record<'_>) -> String {
    let mut out = truncate(&verdict(r), MAX_BYTES - MORE_LINE_RESERVE - 1).to_string();
    out.push('\n');

    let lists = [
        ("poststart", r.poststart),
        ("drain", r.drain),
        ("on_exit", r.on_exit),
    ];
    let total: usize = lists.iter().map(|(_, steps)| steps.len()).sum();
    let mut written = 0;
    'lists: for (list, steps) in lists {
        for step in steps {
            let line = format!("{list}: {}", step.summary_line());
            let line = shorten(&line, MAX_STEP_LINE);
            let left_after = total - written - 1;
            let reserve = if left_after > 0 { MORE_LINE_RESERVE } else { 0 };
            if out.len() + line.len() + 1 + reserve > MAX_BYTES {
                break 'lists;
            }
            out.push_str(&line);
            out.push('\n');
            written += 1;
        }
    }
    if written < total {
        out.push_str(&format!("... {} more steps\n", total - written));
    }
    out
}

/// The first line: exit, what stopped the app, whether SIGKILL was needed.
fn verdict(r: &Record<'_>) -> String {
    let mut v = String::new();
    if r.oom_killed {
        v.push_str("OOMKilled: ");
    }
    v.push_str(&format!("exit {} ({}", r.exit_code, r.exit));
    if r.exit_code != r.exit.code() {
        match r.exit {
            Status::Exited(_) => v.push_str(", mapped by exit_code_map"),
            Status::Signaled(_) => {
                v.push_str(&format!(", {} mapped by exit_code_map", r.exit.code()));
            }
        }
    }
    v.push(')');

    let failed = |steps: &[StepReport]| steps.iter().filter(|s| s.outcome.is_failure()).count();
    match r.cause {
        None => v.push_str(" on its own, no stop requested"),
        Some(cause) => {
            if !r.drain.is_empty() {
                v.push_str(" after drain");
                let n = failed(r.drain);
                if n > 0 {
                    v.push_str(&format!(" ({n} of {} steps failed)", r.drain.len()));
                }
            }
            match (cause, r.trigger_signal) {
                ("signal", Some(sig)) => v.push_str(&format!("; stop triggered by {sig}")),
                (cause, Some(sig)) => {
                    v.push_str(&format!("; stop triggered by {sig} via {cause}"));
                }
                ("drain-request", None) => v.push_str("; drain requested via POST /drain"),
                (cause, None) => v.push_str(&format!("; stop triggered via {cause}")),
            }
        }
    }
    if failed(r.poststart) > 0 {
        v.push_str("; poststart failed");
    }
    if r.killed {
        v.push_str("; SIGKILL needed");
    } else if r.cause.is_some() {
        v.push_str("; SIGKILL not needed");
    }
    v
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` cut to at most `max` bytes, ending in `...` when it was cut.
fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    format!("{}...", truncate(s, max - 3))
}

/// Where to write the record: the configured path; else
/// `/dev/termination-log` when it exists (Kubernetes mounts it in every
/// container); else nowhere. An empty configured path means "nowhere".
pub fn path(configured: Option<&str>) -> Option<PathBuf> {
    path_with_default(configured, Path::new(DEFAULT_PATH))
}

fn path_with_default(configured: Option<&str>, default: &Path) -> Option<PathBuf> {
    match configured {
        Some("") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => default.exists().then(|| default.to_path_buf()),
    }
}

/// Writes `text` to `path`, replacing what was there. The path must be a
/// regular file (or not exist yet): a FIFO or a device is refused without
/// being opened for writing ([`crate::files::write`]), so it cannot hold
/// the exit. Errors are returned for the caller to log; a missing record
/// must never change the exit.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    crate::files::write(path, text.as_bytes())
}

/// Remembers the cgroup's OOM-kill count at start, so that [`fired`]
/// answers "did the OOM killer fire while drainit ran", not "ever in this
/// cgroup" (a restarted container may reuse a cgroup on some runtimes).
///
/// cgroup v2: `memory.events`, line `oom_kill N` (counts this cgroup and its
/// descendants). cgroup v1: `memory.oom_control`, line `oom_kill N` (kernels
/// since 4.13), else `under_oom 1`. `memory.failcnt` is not used: it counts
/// every time usage hit the limit, which page-cache reclaim usually resolves
/// without killing anything, so it would report OOMs that never happened.
///
/// [`fired`]: OomWatch::fired
#[derive(Debug, Clone, Default)]
pub struct OomWatch {
    source: Option<Source>,
    baseline: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// cgroup v2 `memory.events`.
    V2(PathBuf),
    /// cgroup v1 `memory.oom_control`.
    V1(PathBuf),
}

impl OomWatch {
    /// Finds the container's memory cgroup under `root` (normally
    /// `/sys/fs/cgroup`) and remembers its current OOM-kill count.
    ///
    /// The cgroup is looked up through `/proc/self/cgroup` first
    /// (`0::/path` for v2, `N:memory:/path` for v1, joined under `root`);
    /// inside a cgroup namespace that path is `/` and `root` itself is the
    /// container's cgroup. When no memory controller is found, [`fired`]
    /// always answers `false`.
    ///
    /// [`fired`]: OomWatch::fired
    pub fn start(root: &Path) -> OomWatch {
        let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        OomWatch::start_with(root, &self_cgroup)
    }

    /// [`OomWatch::start`] with the text of `/proc/self/cgroup` given.
    fn start_with(root: &Path, self_cgroup: &str) -> OomWatch {
        let source = find_source(root, self_cgroup);
        let baseline = source
            .as_ref()
            .and_then(|s| read_count(s).ok().flatten())
            .unwrap_or(0);
        if source.is_none() {
            tracing::debug!(root = %root.display(), "no memory cgroup found; OOM kills will not be detected");
        }
        OomWatch { source, baseline }
    }

    /// Whether the kernel's OOM killer fired in this cgroup since [`start`].
    ///
    /// [`start`]: OomWatch::start
    pub fn fired(&self) -> bool {
        let Some(source) = &self.source else {
            return false;
        };
        match source {
            Source::V2(_) => {
                matches!(read_count(source), Ok(Some(n)) if n > self.baseline)
            }
            Source::V1(file) => match read_count(source) {
                Ok(Some(n)) => n > self.baseline,
                // Old v1 kernels have no counter: only "under OOM right now".
                Ok(None) => std::fs::read_to_string(file)
                    .is_ok_and(|text| field(&text, "under_oom") == Some(1)),
                Err(_) => false,
            },
        }
    }
}

/// The first memory-cgroup file that exists, in order: v2 at the path from
/// `/proc/self/cgroup`, v2 at `root`, v1 at the memory controller's path,
/// v1 at `root/memory`.
fn find_source(root: &Path, self_cgroup: &str) -> Option<Source> {
    let mut v2_dirs = Vec::new();
    let mut v1_dirs = Vec::new();
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        // `Path::join` with an absolute path would replace `root`.
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            v2_dirs.push(root.join(rel));
        } else if controllers.split(',').any(|c| c == "memory") {
            v1_dirs.push(root.join("memory").join(rel));
        }
    }
    v2_dirs.push(root.to_path_buf());
    v1_dirs.push(root.join("memory"));

    let v2 = v2_dirs
        .into_iter()
        .map(|d| d.join("memory.events"))
        .find(|f| f.is_file())
        .map(Source::V2);
    v2.or_else(|| {
        v1_dirs
            .into_iter()
            .map(|d| d.join("memory.oom_control"))
            .find(|f| f.is_file())
            .map(Source::V1)
    })
}

/// The `oom_kill` counter, or `None` when the file has no such line.
fn read_count(source: &Source) -> std::io::Result<Option<u64>> {
    let (Source::V2(file) | Source::V1(file)) = source;
    let text = std::fs::read_to_string(file)?;
    Ok(field(&text, "oom_kill"))
}

/// The value of a `key N` line in a cgroup flat-keyed file.
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::Outcome;

    fn step(name: &str, outcome: Outcome, ms: u64) -> StepReport {
        StepReport {
            name: name.to_string(),
            outcome,
            duration_ms: ms,
            detail: String::new(),
        }
    }

    fn record<'a>(exit: Status, drain: &'a [StepReport]) -> Record<'a> {
        Record {
            exit,
            exit_code: exit.code(),
            oom_killed: false,
            cause: None,
            trigger_signal: None,
            killed: false,
            poststart: &[],
            drain,
            on_exit: &[],
        }
    }

    fn first_line(s: &str) -> &str {
        s.lines().next().unwrap()
    }

    #[test]
    fn exited_zero_on_its_own() {
        let text = render(&record(Status::Exited(0), &[]));
        assert_eq!(
            text,
            "exit 0 (exited with code 0) on its own, no stop requested\n"
        );
    }

    #[test]
    fn sigterm_stop_after_drain_via_prestop() {
        let drain = [
            step("deregister", Outcome::Ok, 120),
            step("sleep 5s", Outcome::Ok, 5000),
        ];
        let r = Record {
            cause: Some("prestop"),
            trigger_signal: Some("SIGTERM"),
            ..record(Status::Signaled(15), &drain)
        };
        let text = render(&r);
        assert_eq!(
            text,
            "exit 143 (killed by SIGTERM) after drain; stop triggered by SIGTERM via prestop; SIGKILL not needed\n\
             drain: deregister: ok (0.120s)\n\
             drain: sleep 5s: ok (5.000s)\n"
        );
    }

    #[test]
    fn signal_stop_with_mapped_code_and_failed_drain_step() {
        let drain = [
            step("deregister", Outcome::Failed, 3000),
            step("wait", Outcome::Ok, 10),
        ];
        let r = Record {
            exit_code: 0,
            cause: Some("signal"),
            trigger_signal: Some("SIGTERM"),
            ..record(Status::Exited(143), &drain)
        };
        assert_eq!(
            first_line(&render(&r)),
            "exit 0 (exited with code 143, mapped by exit_code_map) after drain (1 of 2 steps failed); stop triggered by SIGTERM; SIGKILL not needed"
        );
    }

    #[test]
    fn sigkill_needed() {
        let drain = [step("in-flight", Outcome::Cut, 15000)];
        let r = Record {
            cause: Some("signal"),
            trigger_signal: Some("SIGTERM"),
            killed: true,
            ..record(Status::Signaled(9), &drain)
        };
        let verdict = first_line(&render(&r)).to_string();
        assert!(
            verdict.starts_with("exit 137 (killed by SIGKILL) after drain"),
            "{verdict}"
        );
        assert!(verdict.ends_with("; SIGKILL needed"), "{verdict}");
    }

    #[test]
    fn oom_killed_comes_first() {
        let r = Record {
            oom_killed: true,
            ..record(Status::Signaled(9), &[])
        };
        assert_eq!(
            first_line(&render(&r)),
            "OOMKilled: exit 137 (killed by SIGKILL) on its own, no stop requested"
        );
    }

    #[test]
    fn failed_poststart_is_in_the_verdict() {
        let poststart = [step("app listening", Outcome::TimedOut, 90000)];
        let r = Record {
            exit_code: 1,
            killed: false,
            poststart: &poststart,
            ..record(Status::Exited(0), &[])
        };
        let text = render(&r);
        assert!(first_line(&text).ends_with("; poststart failed"), "{text}");
        assert!(
            text.contains("\npoststart: app listening: timed_out (90.000s)\n"),
            "{text}"
        );
    }

    #[test]
    fn many_long_steps_stay_within_the_limit() {
        let long = "x".repeat(1000);
        let drain: Vec<StepReport> = (0..100)
            .map(|i| StepReport {
                detail: format!("détail {long}"),
                ..step(&format!("step {i}"), Outcome::Failed, 1000)
            })
            .collect();
        let r = Record {
            cause: Some("signal"),
            trigger_signal: Some("SIGTERM"),
            on_exit: &drain,
            ..record(Status::Signaled(15), &drain)
        };
        let text = render(&r);
        assert!(text.len() <= MAX_BYTES, "{} bytes", text.len());
        assert!(
            text.starts_with("exit 143 (killed by SIGTERM) after drain (100 of 100 steps failed)")
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("drain: step 0: failed (1.000s) détail xxx"));
        assert!(lines[1].ends_with("..."));
        assert!(lines[1].len() <= MAX_STEP_LINE);
        let shown = lines.len() - 2;
        assert!(shown >= 10, "only {shown} step lines fit");
        assert_eq!(
            *lines.last().unwrap(),
            format!("... {} more steps", 200 - shown)
        );
    }

    #[test]
    fn steps_that_fit_are_all_shown() {
        let drain: Vec<StepReport> = (0..10)
            .map(|i| step(&format!("s{i}"), Outcome::Ok, 1))
            .collect();
        let text = render(&Record {
            cause: Some("signal"),
            ..record(Status::Exited(0), &drain)
        });
        assert_eq!(text.lines().count(), 11);
        assert!(!text.contains("more steps"));
    }

    #[test]
    fn path_prefers_configured_then_default_if_present() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("termination-log");
        assert_eq!(path_with_default(None, &default), None);
        std::fs::write(&default, "").unwrap();
        assert_eq!(path_with_default(None, &default), Some(default.clone()));
        assert_eq!(
            path_with_default(Some("/tmp/x"), &default),
            Some(PathBuf::from("/tmp/x"))
        );
        assert_eq!(path_with_default(Some(""), &default), None);
    }

    #[test]
    fn write_replaces_the_previous_record() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("termination-log");
        write(&file, "a much longer first record\n").unwrap();
        write(&file, "short\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "short\n");
        assert!(write(&dir.path().join("no/such/dir"), "x").is_err());
    }

    const V2_EVENTS: &str = "low 0\nhigh 0\nmax 3\noom 0\noom_kill {}\noom_group_kill 0\n";

    #[test]
    fn oom_v2_counts_kills_after_start() {
        let root = tempfile::tempdir().unwrap();
        let events = root.path().join("memory.events");
        std::fs::write(&events, V2_EVENTS.replace("{}", "0")).unwrap();
        let watch = OomWatch::start_with(root.path(), "0::/\n");
        assert!(!watch.fired());
        std::fs::write(&events, V2_EVENTS.replace("{}", "1")).unwrap();
        assert!(watch.fired());
    }

    #[test]
    fn oom_v2_ignores_kills_before_start() {
        let root = tempfile::tempdir().unwrap();
        let events = root.path().join("memory.events");
        std::fs::write(&events, V2_EVENTS.replace("{}", "2")).unwrap();
        let watch = OomWatch::start_with(root.path(), "0::/\n");
        assert!(!watch.fired());
        std::fs::write(&events, V2_EVENTS.replace("{}", "3")).unwrap();
        assert!(watch.fired());
    }

    #[test]
    fn oom_v2_uses_the_path_from_proc_self_cgroup_first() {
        let root = tempfile::tempdir().unwrap();
        // The host-level file must not be read when our own cgroup exists.
        std::fs::write(
            root.path().join("memory.events"),
            V2_EVENTS.replace("{}", "0"),
        )
        .unwrap();
        let own = root.path().join("kubepods/pod1/ctr");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("memory.events"), V2_EVENTS.replace("{}", "0")).unwrap();
        let watch = OomWatch::start_with(root.path(), "0::/kubepods/pod1/ctr\n");
        assert_eq!(watch.source, Some(Source::V2(own.join("memory.events"))));
        std::fs::write(
            root.path().join("memory.events"),
            V2_EVENTS.replace("{}", "5"),
        )
        .unwrap();
        assert!(!watch.fired());
        std::fs::write(own.join("memory.events"), V2_EVENTS.replace("{}", "1")).unwrap();
        assert!(watch.fired());
    }

    #[test]
    fn oom_v1_oom_control_counter_and_under_oom() {
        let root = tempfile::tempdir().unwrap();
        let mem = root.path().join("memory/docker/abc");
        std::fs::create_dir_all(&mem).unwrap();
        let control = mem.join("memory.oom_control");
        // A hybrid host: the v2 line is there, but v2 has no memory controller.
        let self_cgroup = "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/docker/abc\n";

        std::fs::write(&control, "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n").unwrap();
        let watch = OomWatch::start_with(root.path(), self_cgroup);
        assert!(!watch.fired());
        std::fs::write(&control, "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n").unwrap();
        assert!(watch.fired());

        // An old kernel without the counter: only `under_oom` tells.
        std::fs::write(&control, "oom_kill_disable 0\nunder_oom 0\n").unwrap();
        let watch = OomWatch::start_with(root.path(), self_cgroup);
        assert!(!watch.fired());
        std::fs::write(&control, "oom_kill_disable 1\nunder_oom 1\n").unwrap();
        assert!(watch.fired());
    }

    #[test]
    fn oom_v1_at_namespace_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("memory")).unwrap();
        let control = root.path().join("memory/memory.oom_control");
        std::fs::write(&control, "under_oom 0\noom_kill 0\n").unwrap();
        let watch = OomWatch::start_with(root.path(), "");
        std::fs::write(&control, "under_oom 0\noom_kill 1\n").unwrap();
        assert!(watch.fired());
    }

    #[test]
    fn oom_without_memory_cgroup_never_fires() {
        let root = tempfile::tempdir().unwrap();
        let watch = OomWatch::start_with(root.path(), "0::/\n");
        assert!(!watch.fired());
    }
}

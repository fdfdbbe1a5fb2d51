//! The record of a stop (SPEC section 8): the short text Kubernetes shows in
//! `kubectl describe pod` under Last State.
//!
//! This module owns what the record says ([`render`], and
//! [`render_in_progress`] for the flight record that stands in the file
//! while a stop is in progress, so that a SIGKILL to drainit leaves it),
//! where it goes ([`path`], [`Recorder`]) and one fact only the cgroup knows: whether the
//! kernel's OOM killer fired ([`OomWatch`]). It never decides the exit code
//! or the cause of a stop; the driver hands those in. It must never
//! panic or block the exit: every error is returned for the caller to log.
//!
//! The kubelet keeps only the last 4096 bytes of the file, so the record is
//! built to fit: the verdict comes first and the whole text stays within
//! [`MAX_BYTES`].

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::Cause;
use crate::init::reaper::Status;
use crate::lifecycle::steps::StepReport;

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
    /// The cause of the stop; `None` (or [`Cause::AppExit`]) when the app
    /// exited on its own.
    pub cause: Option<Cause>,
    /// The trigger signal that came, e.g. `"SIGTERM"`.
    pub trigger_signal: Option<&'a str>,
    /// Whether drainit had to SIGKILL the app.
    pub killed: bool,
    /// The app had crashed and was waiting out its restart back-off when
    /// the stop started (SPEC 2): the stop cancelled the restart, so the
    /// exit came before the drain, and no stop signal reached the app.
    pub restart_cancelled: bool,
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
    push_steps(&mut out, r.poststart, r.drain, r.on_exit);
    out
}

/// Appends one line per step, `list: <summary line>`, as many as fit in
/// [`MAX_BYTES`], then `... N more steps` for the rest.
fn push_steps(
    out: &mut String,
    poststart: &[StepReport],
    drain: &[StepReport],
    on_exit: &[StepReport],
) {
    let lists = [
        ("poststart", poststart),
        ("drain", drain),
        ("on_exit", on_exit),
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
    let stopped = r.cause.filter(|&c| c != Cause::AppExit);
    match stopped {
        None => v.push_str(" on its own, no stop requested"),
        Some(cause) => {
            if r.restart_cancelled {
                v.push_str(" on its own before the shutdown, which cancelled its restart");
            }
            if !r.drain.is_empty() {
                v.push_str(if r.restart_cancelled {
                    "; drain ran after"
                } else {
                    " after drain"
                });
                let n = failed(r.drain);
                if n > 0 {
                    v.push_str(&format!(" ({n} of {} steps failed)", r.drain.len()));
                }
            }
            match (cause, r.trigger_signal) {
                (Cause::Signal, Some(sig)) => v.push_str(&format!("; stop triggered by {sig}")),
                (cause, Some(sig)) => {
                    v.push_str(&format!("; stop triggered by {sig} via {cause}"));
                }
                (Cause::DrainRequest, None) => v.push_str("; drain requested via POST /drain"),
                (cause, None) => v.push_str(&format!("; stop triggered via {cause}")),
            }
        }
    }
    if failed(r.poststart) > 0 {
        v.push_str("; poststart failed");
    }
    if r.killed {
        v.push_str("; SIGKILL needed");
    } else if stopped.is_some() && !r.restart_cancelled {
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

/// What was in progress when the flight record (SPEC section 8) was
/// written: the part of the stop that drainit was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `[[poststart]]` steps run.
    Poststart,
    /// `[[drain]]` steps run.
    Drain,
    /// The drain is over; no stop signal yet (the kubelet's SIGTERM follows
    /// `/prestop`'s answer).
    Drained,
    /// The stop signal went out; the app has not exited yet.
    Stop,
    /// The app has exited; `[[on_exit]]` steps run.
    OnExit,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Poststart => "poststart",
            Stage::Drain => "the drain",
            Stage::Drained => "the shutdown, after the drain",
            Stage::Stop => "the stop",
            Stage::OnExit => "on_exit",
        }
    }
}

/// The step running when the flight record was written.
#[derive(Debug, Clone, Copy)]
pub struct RunningStep<'a> {
    /// 1-based position in its list.
    pub index: usize,
    /// Steps in the list.
    pub total: usize,
    pub name: &'a str,
    /// Wall-clock start: "running for" is the reader's now (the kubelet's
    /// `Finished` time) minus this, true whenever the record is read.
    pub started: SystemTime,
}

/// The record as it stands while a stop is in progress: what the file
/// says if drainit is SIGKILLed before it writes the final [`Record`].
/// Every time in it is wall-clock and absolute, so it stays true after
/// drainit's death, whenever it is read.
#[derive(Debug, Clone, Copy)]
pub struct InProgress<'a> {
    pub stage: Stage,
    pub step: Option<RunningStep<'a>>,
    pub cause: Option<Cause>,
    /// The trigger signal that came, e.g. `"SIGTERM"`.
    pub trigger_signal: Option<&'a str>,
    /// When the running list's budget ends (drain, on_exit).
    pub budget_ends: Option<SystemTime>,
    /// The stop signal and when it was sent.
    pub stop_sent: Option<(&'a str, SystemTime)>,
    /// When drainit will SIGKILL the app's group if it has not exited.
    pub kill_due: Option<SystemTime>,
    /// Whether drainit has already SIGKILLed the app.
    pub killed: bool,
    /// The app's exit, once it exited.
    pub exit: Option<Status>,
    /// When this record was written: the last moment drainit is known to
    /// have been alive.
    pub written: SystemTime,
    pub poststart: &'a [StepReport],
    pub drain: &'a [StepReport],
    pub on_exit: &'a [StepReport],
}

/// Renders the flight record: the first line says drainit was killed and
/// during what, e.g. `killed during the drain: step 2/3 "deregister"
/// started at 2026-11-25T17:40:01.123456Z; cause prestop; budget ends at
/// 2026-11-25T17:40:21.000000Z`; the second when it was written and how
/// the app stood; then the steps so far, as in [`render`]. At most
/// [`MAX_BYTES`], valid UTF-8.
pub fn render_in_progress(r: &InProgress<'_>) -> String {
    let at = crate::logging::timestamp;
    let mut v = format!("killed during {}", r.stage.as_str());
    let mut parts: Vec<String> = Vec::new();
    if let Some(step) = r.step {
        parts.push(format!(
            "step {}/{} {:?} started at {}",
            step.index,
            step.total,
            step.name,
            at(step.started)
        ));
    }
    if let Some((sig, sent)) = r.stop_sent {
        parts.push(format!("{sig} sent to the app at {}", at(sent)));
    }
    if let Some(cause) = r.cause {
        match r.trigger_signal {
            Some(sig) if cause != Cause::Signal => {
                parts.push(format!("cause {cause} ({sig} came)"))
            }
            _ => parts.push(format!("cause {cause}")),
        }
    }
    if let Some(ends) = r.budget_ends {
        parts.push(format!("budget ends at {}", at(ends)));
    }
    if r.killed {
        parts.push("SIGKILL sent to the app".to_string());
    } else if let Some(due) = r.kill_due {
        parts.push(format!("SIGKILL due at {}", at(due)));
    }
    for (i, part) in parts.iter().enumerate() {
        v.push_str(if i == 0 { ": " } else { "; " });
        v.push_str(part);
    }
    let mut out = truncate(&v, MAX_BYTES / 2).to_string();
    out.push('\n');
    let app = match r.exit {
        Some(exit) => format!("app {exit}"),
        None => "app still running".to_string(),
    };
    out.push_str(&format!(
        "drainit was alive at {} ({app}); no later record\n",
        at(r.written)
    ));
    push_steps(&mut out, r.poststart, r.drain, r.on_exit);
    out
}

/// Keeps the termination file open and rewrites it in place: `pwrite` at
/// offset 0, then `ftruncate` to the new length. A rename would not do:
/// `/dev/termination-log` is a file bind-mounted by the runtime, and a
/// rename over a mount point fails (EBUSY). The file is opened once, with
/// `O_NONBLOCK` (a FIFO with no reader fails at once instead of blocking
/// the runtime thread) and refused unless it is a regular file; each
/// rewrite then costs two system calls on a page-cache file.
///
/// Between the two calls a SIGKILL leaves the new text followed by the
/// tail of a longer old one; the first line, the one that matters, is
/// always whole.
#[derive(Debug, Default)]
pub struct Recorder {
    file: Option<(PathBuf, std::fs::File)>,
    /// Whether anything was written (so that clearing an untouched file
    /// is not even an open).
    written: bool,
}

impl Recorder {
    /// Replaces the file's content with `text` (cut to [`MAX_BYTES`] on a
    /// character boundary).
    pub fn write(&mut self, path: &Path, text: &str) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let text = truncate(text, MAX_BYTES);
        if self.file.as_ref().map(|(p, _)| p.as_path()) != Some(path) {
            self.file = None;
            self.file = Some((
                path.to_path_buf(),
                crate::config::files::open_for_write(path)?,
            ));
        }
        let Some((_, file)) = &self.file else {
            unreachable!("opened above");
        };
        self.written = true;
        let result = file
            .write_all_at(text.as_bytes(), 0)
            .and_then(|()| file.set_len(text.len() as u64));
        if result.is_err() {
            self.file = None;
        }
        result
    }

    /// Empties the file if this recorder wrote to it ("while the app
    /// simply runs, the file is left empty").
    pub fn clear(&mut self, path: &Path) -> std::io::Result<()> {
        if !self.written {
            return Ok(());
        }
        self.write(path, "")?;
        self.written = false;
        Ok(())
    }
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
    use crate::lifecycle::steps::Outcome;
    use std::os::unix::fs::OpenOptionsExt;

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
            restart_cancelled: false,
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
            cause: Some(Cause::Prestop),
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

    /// A rollout while the crashed app waits out its back-off: the exit
    /// came first, the drain after it, and nothing was stopped.
    #[test]
    fn a_stop_that_cancelled_a_restart_says_the_crash_came_first() {
        let drain = [step("deregister", Outcome::Ok, 120)];
        let r = Record {
            cause: Some(Cause::Prestop),
            trigger_signal: Some("SIGTERM"),
            restart_cancelled: true,
            ..record(Status::Exited(3), &drain)
        };
        assert_eq!(
            first_line(&render(&r)),
            "exit 3 (exited with code 3) on its own before the shutdown, which cancelled its restart; drain ran after; stop triggered by SIGTERM via prestop"
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
            cause: Some(Cause::Signal),
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
            cause: Some(Cause::Signal),
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
            cause: Some(Cause::Signal),
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
            cause: Some(Cause::Signal),
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
    fn the_flight_record_says_killed_during_what_in_absolute_times() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        let drain = [step("stop accepting", Outcome::Ok, 1200)];
        let r = InProgress {
            stage: Stage::Drain,
            step: Some(RunningStep {
                index: 2,
                total: 3,
                name: "deregister",
                started: t,
            }),
            cause: Some(Cause::Prestop),
            trigger_signal: None,
            budget_ends: Some(t + std::time::Duration::from_millis(7700)),
            stop_sent: None,
            kill_due: None,
            killed: false,
            exit: None,
            written: t,
            poststart: &[],
            drain: &drain,
            on_exit: &[],
        };
        assert_eq!(
            render_in_progress(&r),
            "killed during the drain: step 2/3 \"deregister\" started at 2026-11-18T11:06:40.123000Z; cause prestop; budget ends at 2026-11-18T11:06:47.823000Z\n\
             drainit was alive at 2026-11-18T11:06:40.123000Z (app still running); no later record\n\
             drain: stop accepting: ok (1.200s)\n"
        );
        let r = InProgress {
            stage: Stage::Stop,
            step: None,
            cause: Some(Cause::Liveness),
            trigger_signal: Some("SIGTERM"),
            budget_ends: None,
            stop_sent: Some(("SIGTERM", t)),
            kill_due: Some(t + std::time::Duration::from_secs(2)),
            ..r
        };
        assert!(render_in_progress(&r).starts_with(
            "killed during the stop: SIGTERM sent to the app at 2026-11-18T11:06:40.123000Z; cause liveness (SIGTERM came); SIGKILL due at 2026-11-18T11:06:42.123000Z\n"
        ));
        // Long multi-byte names: within the limit and valid UTF-8 (a String).
        let long = "é".repeat(5000);
        let many: Vec<StepReport> = (0..50).map(|_| step(&long, Outcome::Ok, 1)).collect();
        let text = render_in_progress(&InProgress {
            step: Some(RunningStep {
                index: 1,
                total: 1,
                name: &long,
                started: t,
            }),
            drain: &many,
            ..r
        });
        assert!(text.len() <= MAX_BYTES, "{}", text.len());
        assert!(text.starts_with("killed during the stop: step 1/1"));
    }

    #[test]
    fn the_recorder_rewrites_in_place_and_refuses_a_fifo_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("termination-log");
        let mut rec = Recorder::default();
        rec.clear(&file).unwrap();
        assert!(
            !file.exists(),
            "clearing an untouched file does not create it"
        );
        rec.write(&file, "a much longer first record\n").unwrap();
        rec.write(&file, "short\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "short\n");
        let mut elsewhere = Recorder::default();
        assert!(elsewhere
            .write(&dir.path().join("no/such/dir"), "x")
            .is_err());
        let long = "ü".repeat(MAX_BYTES);
        rec.write(&file, &long).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.len(), MAX_BYTES, "cut on a character boundary");
        rec.clear(&file).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "");

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No reader: a blocking open would hang here; it is refused by
        // its type before any open.
        let err = Recorder::default().write(&fifo, "x").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        // With a reader: refused too.
        let _reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let err = Recorder::default().write(&fifo, "x").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
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

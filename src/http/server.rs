//! The lifecycle HTTP server (SPEC section 4), for the kubelet's `httpGet`
//! hooks and probes, operators and Prometheus.
//!
//! | endpoint          | auth | answer                                                 |
//! | ----------------- | ---- | ------------------------------------------------------ |
//! | `GET /prestop`    | yes  | starts the shutdown, waits for the drain: 200 / 500     |
//! | `GET /poststart`  | yes  | waits for the poststart steps: 200 / 500                |
//! | `GET /healthz`    | no   | 200 while the app is alive (and `liveness.check`), 503  |
//! | `GET /readyz`     | no   | 200 when ready (and `readiness.check`), else 503 + why  |
//! | `POST /drain`     | yes  | starts the drain only: 202 + status JSON                |
//! | `GET /drain`      | yes  | 200 when the drain is done, else 409; status JSON       |
//! | `GET /status`     | no   | status JSON                                             |
//! | `GET /metrics`    | no   | Prometheus text                                         |
//!
//! This module owns the listener and the registry of connections; the
//! answers are in `routes`, who may call them in `auth`. It never
//! decides anything about the shutdown: it sends [`Request`](crate::lifecycle::state::Request)s to the
//! driver and waits on the [`Status`](crate::lifecycle::state::Status) the driver publishes, so every
//! caller of `/prestop` waits on the same drain. It runs on the lifecycle's
//! thread with the driver and the steps, so it must never block (a
//! blocked probe would hold up the shutdown's steps; signals are
//! forwarded by the core on the main thread either way): every handler
//! is async, no request body is ever read, and connections are bounded in
//! number (`max_connections`, see [`admission`] for who gets in), in header
//! time (`header_timeout`) and in buffer size. Probes that come while a
//! `readiness.check` or `liveness.check` runs share that run
//! ([`SingleFlight`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, USER_AGENT};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::{debug, error, warn};

use super::auth::TokenCache;
use super::routes::text;
use crate::lifecycle::checks::SingleFlight;
use crate::lifecycle::state::Shared;

/// How long in-flight requests may still finish once `serve` is told to
/// stop; then their connections are dropped. drainit exits after `serve`
/// returns, so this bounds how long the server can hold up the exit.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Per-connection read buffer limit (hyper's minimum is 8 KiB): request
/// heads from the kubelet and probes are a few hundred bytes, and 1024
/// connections must not add up to much memory.
const MAX_BUF_SIZE: usize = 16 * 1024;

/// Pause after an accept error such as EMFILE, so a full fd table does not
/// turn the accept loop into a busy loop on the thread that forwards
/// signals.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Length of the accept queue: the default `max_connections` (and tokio's
/// own default). std's `bind` asks for 128; past that the kernel drops new
/// handshakes, and a probe caught in a burst waits for the client's 1s SYN
/// retransmit, past the kubelet's probe timeout. The kernel caps it at
/// `net.core.somaxconn` (4096 since Linux 5.4).
const LISTEN_BACKLOG: libc::c_int = 1024;

pub(super) type Body = Full<Bytes>;
pub(super) type Response = hyper::Response<Body>;

/// Binds the listener. Called before the app is spawned, so the kubelet's
/// first hook or probe finds the port open.
///
/// `std`'s `bind` sets `SO_REUSEADDR` on Unix before binding, so a restarted
/// drainit can rebind while old connections linger in `TIME_WAIT`. Calling
/// `listen(2)` again on the listening socket only raises its backlog to
/// [`LISTEN_BACKLOG`]. The listener is returned non-blocking, ready for
/// [`serve`].
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind(addr)?;
    // SAFETY: listen(2) on a socket descriptor owned by `listener`.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves until `shutdown` resolves. Then it stops accepting, closes idle
/// connections (those between or before requests) at once, lets in-flight
/// requests finish for at most [`SHUTDOWN_GRACE`], drops what is left, and
/// returns.
pub async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            error!("http server: cannot use the listener: {e}");
            return;
        }
    };
    let server = Arc::new(Server {
        shared,
        connections: Mutex::new(Connections::default()),
        token: Mutex::new(None),
        readiness: SingleFlight::default(),
        liveness: SingleFlight::default(),
    });
    // Every connection task holds a receiver: `closed()` on the sender
    // resolves when the last one is gone.
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    server.admit(stream, peer, stop_rx.clone());
                    // Let the new connection's task (and the tasks of the
                    // connections just evicted) run before the next accept.
                    // Without this a burst of connections, accepted many at a
                    // time, could evict a probe whose request was already
                    // waiting to be read: it is the oldest without a request
                    // once enough newer ones arrive, only because its task
                    // never ran. (Found by integration/robustness.rs.)
                    tokio::task::yield_now().await;
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted) => {}
                Err(e) => {
                    warn!("http server: accept failed: {e}");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(());
    server.drop_idle();
    if tokio::time::timeout(SHUTDOWN_GRACE, stop_tx.closed())
        .await
        .is_err()
    {
        let left = server.drop_all();
        warn!("http server: dropped {left} connection(s) still busy after {SHUTDOWN_GRACE:?}");
    }
    debug!("http server stopped");
}

/// What one connection is doing, for eviction and shutdown.
const NEW: u8 = 0; // accepted, no complete request yet
const BUSY: u8 = 1; // a request is being answered (perhaps a long /prestop)
const IDLE: u8 = 2; // keep-alive, between requests

pub(super) struct Server {
    pub(super) shared: Arc<Shared>,
    connections: Mutex<Connections>,
    /// The token resolved for one config version (kept alive by the `Arc`,
    /// so a new version can never be mistaken for it).
    pub(super) token: Mutex<Option<TokenCache>>,
    /// The `readiness.check` run that concurrent `/readyz` share.
    pub(super) readiness: SingleFlight,
    /// The `liveness.check` run that concurrent `/healthz` share.
    pub(super) liveness: SingleFlight,
}

/// The registry of open connections, oldest first.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: BTreeMap<u64, Connection>,
}

struct Connection {
    state: Arc<ConnState>,
    abort: AbortHandle,
}

/// What a connection's task tells the registry about it.
#[derive(Default)]
struct ConnState {
    /// [`NEW`], [`BUSY`] or [`IDLE`].
    phase: AtomicU8,
    /// Admitted into the reserve ([`admission`]): one request, answered
    /// only if it is a kubelet probe or a hook call.
    reserve: bool,
}

impl Connections {
    /// The connection to drop to admit a new one, if any: the oldest that
    /// has not sent a complete request, else the oldest idle keep-alive
    /// one. A busy connection is never dropped: it may be a kubelet waiting
    /// on `/prestop`, which is never retried. Nor is a reserve connection:
    /// it carries one request and closes, so it frees its room by itself,
    /// and it is where a kubelet probe waits while every other connection
    /// is busy — clients reconnecting in a tight loop would otherwise push
    /// the probe out before its request head was even read.
    fn victim(&self) -> Option<u64> {
        let oldest_in = |phase: u8| {
            self.open
                .iter()
                .find(|(_, c)| !c.state.reserve && c.state.phase.load(Ordering::Relaxed) == phase)
                .map(|(id, _)| *id)
        };
        oldest_in(NEW).or_else(|| oldest_in(IDLE))
    }
}

/// How a new connection gets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// In, after dropping `evict` if any; `reserve` when it is one of the
    /// [`PROBE_RESERVE`] beyond `max_connections`: it may carry one kubelet
    /// probe or hook call, and anything else gets 503.
    In { evict: Option<u64>, reserve: bool },
    /// Every connection is busy and the reserve is full too.
    Refuse,
}

/// Connections admitted beyond `max_connections` when every connection is
/// busy, for kubelet probes and hook calls only.
const PROBE_RESERVE: usize = 16;

/// How a new connection gets in when `open` connections are open, `max`
/// are allowed, and `victim` is the connection that could be dropped
/// ([`Connections::victim`]).
///
/// Admission is decided at `accept`, before the client has said who it
/// is. When every connection is busy (clients pipelining `/readyz` against
/// a slow `readiness.check`, say), the newcomer goes into a small reserve
/// instead of being refused; once its request head is in, a kubelet probe
/// or a hook call is answered and anything else gets 503
/// ([`Server::connection`]). A busy connection is never dropped, so busy
/// clients cannot make room by pushing each other, or a probe, out.
fn admission(open: usize, max: usize, victim: Option<u64>) -> Admission {
    if open < max {
        Admission::In {
            evict: None,
            reserve: false,
        }
    } else if let Some(id) = victim {
        Admission::In {
            evict: Some(id),
            reserve: open > max,
        }
    } else if open < max + PROBE_RESERVE {
        Admission::In {
            evict: None,
            reserve: true,
        }
    } else {
        Admission::Refuse
    }
}

/// Whether a request may use a reserve connection: a hook call (`/prestop`,
/// `/poststart`: the kubelet never retries them) or a kubelet probe
/// (`User-Agent: kube-probe/...`; the kubelet's prober sends one request
/// per connection, as the reserve allows).
fn may_use_reserve(request: &hyper::Request<Incoming>) -> bool {
    matches!(request.uri().path(), "/prestop" | "/poststart") || from_kube_probe(request.headers())
}

/// Whether a request is a kubelet probe's (`User-Agent: kube-probe/1.30`).
fn from_kube_probe(headers: &HeaderMap) -> bool {
    headers
        .get(USER_AGENT)
        .is_some_and(|ua| ua.as_bytes().starts_with(b"kube-probe/"))
}

/// Removes a connection from the registry when its task ends or is aborted.
struct Registered {
    server: Arc<Server>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.server.connections().open.remove(&self.id);
    }
}

/// Marks a connection idle again when its request's handler is done (or
/// dropped).
struct IdleOnDrop(Arc<ConnState>);

impl Drop for IdleOnDrop {
    fn drop(&mut self) {
        self.0.phase.store(IDLE, Ordering::Relaxed);
    }
}

impl Server {
    fn connections(&self) -> MutexGuard<'_, Connections> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers and spawns a connection, evicting one if the server is
    /// full, or into the reserve if every connection is busy, or refusing
    /// it if the reserve is full too ([`admission`]).
    fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, stop: watch::Receiver<()>) {
        let (max_connections, header_timeout) = {
            let config = self.shared.config.borrow();
            (config.http.max_connections, config.http.header_timeout.0)
        };
        let mut connections = self.connections();
        let open = connections.open.len();
        let victim = if open >= max_connections {
            connections.victim()
        } else {
            None
        };
        let reserve = match admission(open, max_connections, victim) {
            Admission::In { evict, reserve } => {
                if let Some(victim) = evict.and_then(|id| connections.open.remove(&id)) {
                    victim.abort.abort();
                    debug!(%peer, "http server: full; dropped the oldest idle connection");
                }
                reserve
            }
            Admission::Refuse => {
                debug!(%peer, "http server: full of busy connections, reserve too; refusing");
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = connections.next_id;
        connections.next_id += 1;
        let state = Arc::new(ConnState {
            reserve,
            ..ConnState::default()
        });
        let registered = Registered {
            server: Arc::clone(self),
            id,
        };
        // The task cannot run before the registry lock is released, so it
        // cannot deregister before it is registered.
        let task = tokio::spawn(Arc::clone(self).connection(
            stream,
            peer,
            Arc::clone(&state),
            header_timeout,
            stop,
            registered,
        ));
        connections.open.insert(
            id,
            Connection {
                state,
                abort: task.abort_handle(),
            },
        );
    }

    /// Serves one connection until the client closes it, it fails, or the
    /// server stops (then it finishes the request in flight, if any).
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        state: Arc<ConnState>,
        header_timeout: Duration,
        mut stop: watch::Receiver<()>,
        _registered: Registered,
    ) {
        let service = {
            let server = Arc::clone(&self);
            service_fn(move |request: hyper::Request<Incoming>| {
                // hyper calls this once the request head is complete, one
                // request at a time: a pipelining client's next request
                // waits in the connection's bounded buffer.
                let reserve = state.reserve;
                let refused = reserve && !may_use_reserve(&request);
                state.phase.store(BUSY, Ordering::Relaxed);
                let idle = IdleOnDrop(Arc::clone(&state));
                let server = Arc::clone(&server);
                async move {
                    let mut response = if refused {
                        debug!(%peer, "http server: busy; only kubelet probes and hooks get the reserve");
                        text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "busy: every connection is in use (http.max_connections)\n",
                        )
                    } else {
                        server.respond(&request, peer).await
                    };
                    if reserve {
                        // One request per reserve connection: the room is
                        // for the next probe.
                        response
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    drop(idle);
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true)
            // A client may send its request and shut down its write side
            // (`nc -N`, `curl` scripts, some probes); without this, hyper
            // drops the request when it reads that EOF before the answer is
            // ready, and the client gets no answer at random.
            .half_close(true)
            .max_buf_size(MAX_BUF_SIZE);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = stop.changed() => {
                // Finish the request in flight, then close instead of
                // keeping alive. (Idle ones were dropped by `serve`.)
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            debug!(%peer, "http connection ended: {e}");
        }
    }

    /// Drops every connection that is not answering a request.
    fn drop_idle(&self) {
        let mut connections = self.connections();
        connections.open.retain(|_, c| {
            let busy = c.state.phase.load(Ordering::Relaxed) == BUSY;
            if !busy {
                c.abort.abort();
            }
            busy
        });
    }

    /// Drops every connection; returns how many there were.
    fn drop_all(&self) -> usize {
        let mut connections = self.connections();
        let n = connections.open.len();
        for c in connections.open.values() {
            c.abort.abort();
        }
        connections.open.clear();
        n
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Config;
    use crate::lifecycle::state::{Metrics, Phase, Request, Status};
    use tokio::sync::mpsc;

    /// A `Shared` whose status and config the test drives.
    pub(crate) struct Fixture {
        pub shared: Arc<Shared>,
        pub status: watch::Sender<Status>,
        pub config: watch::Sender<Arc<Config>>,
        pub requests: mpsc::UnboundedReceiver<Request>,
    }

    pub(crate) fn fixture(config: Config) -> Fixture {
        let (status_tx, status_rx) = watch::channel(Status::new());
        let (config_tx, config_rx) = watch::channel(Arc::new(config));
        let (requests_tx, requests_rx) = mpsc::unbounded_channel();
        Fixture {
            shared: Arc::new(Shared {
                status: status_rx,
                config: config_rx,
                requests: requests_tx,
                metrics: Arc::new(Metrics::default()),
            }),
            status: status_tx,
            config: config_tx,
            requests: requests_rx,
        }
    }

    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use crate::config::steps::{Action, Step};
    use crate::config::Duration as ConfigDuration;
    use crate::lifecycle::state::ListState;
    use crate::lifecycle::steps::{Outcome, StepReport};

    /// A safety net for awaits that must complete; never a pass condition.
    const SAFETY: Duration = Duration::from_secs(10);

    /// The real server on 127.0.0.1:0.
    struct Running {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    fn start(fx: &Fixture) -> Running {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::clone(&fx.shared), async move {
            let _ = stopped.await;
        }));
        Running { addr, stop, task }
    }

    #[derive(Debug)]
    struct Reply {
        code: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> serde_json::Value {
            assert_eq!(self.header("content-type"), Some("application/json"));
            serde_json::from_str(&self.body).unwrap()
        }
    }

    /// A raw HTTP/1.1 request; `extra` is more header lines, each ending
    /// in `\r\n`.
    /// Opens a `/prestop` call and returns once the driver side has
    /// received its request: the call is then waiting on the drain.
    async fn waiting_prestop(addr: SocketAddr, fx: &mut Fixture) -> TcpStream {
        let mut hook = TcpStream::connect(addr).await.unwrap();
        hook.write_all(raw("GET", "/prestop", "").as_bytes())
            .await
            .unwrap();
        let got = tokio::time::timeout(SAFETY, fx.requests.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(Request::Prestop));
        hook
    }

    fn raw(method: &str, path: &str, extra: &str) -> String {
        format!("{method} {path} HTTP/1.1\r\nhost: drainit\r\nuser-agent: kube-lifecycle/1.30\r\n{extra}\r\n")
    }

    /// Reads exactly one response (the server always sends content-length).
    async fn read_reply(stream: &mut TcpStream) -> Reply {
        read_answer(stream, false).await
    }

    /// Reads one response; the answer to `HEAD` has no body.
    async fn read_answer(stream: &mut TcpStream, head_only: bool) -> Reply {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos;
            }
            let n = tokio::time::timeout(SAFETY, stream.read(&mut chunk))
                .await
                .expect("an answer within the safety timeout")
                .unwrap();
            assert!(n > 0, "connection closed before a complete answer: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let code = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .expect("content-length");
        let mut body = buf[head_end + 4..].to_vec();
        let length = if head_only { 0 } else { length };
        while body.len() < length {
            let n = tokio::time::timeout(SAFETY, stream.read(&mut chunk))
                .await
                .expect("the body within the safety timeout")
                .unwrap();
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(body.len(), length, "no more than one answer");
        Reply {
            code,
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    }

    /// Waits until the server closes `stream`; returns what it sent first.
    async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(SAFETY, async {
            let mut chunk = [0u8; 4096];
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .expect("the server closes the connection within the safety timeout");
        got
    }

    /// One request on a new connection.
    async fn call(addr: SocketAddr, method: &str, path: &str, extra: &str) -> Reply {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = raw(method, path, &format!("connection: close\r\n{extra}"));
        stream.write_all(request.as_bytes()).await.unwrap();
        read_answer(&mut stream, method == "HEAD").await
    }

    async fn get(addr: SocketAddr, path: &str) -> Reply {
        call(addr, "GET", path, "").await
    }

    fn step(name: &str, outcome: Outcome, duration_ms: u64) -> StepReport {
        StepReport {
            name: name.to_string(),
            outcome,
            duration_ms,
            detail: if outcome.is_failure() {
                "status 503".to_string()
            } else {
                String::new()
            },
        }
    }

    fn running(s: &mut Status) {
        s.state = Phase::Running;
        s.app_pid = Some(42);
        s.app_alive = true;
        s.poststart = ListState::Done {
            ok: true,
            steps: Vec::new(),
        };
    }

    fn draining(s: &mut Status) {
        s.state = Phase::Draining;
        s.shutdown_started = true;
        s.shutdown_cause = Some(crate::config::Cause::Prestop);
        s.drain = ListState::Running {
            steps: vec![step("deregister", Outcome::Ok, 120)],
        };
    }

    fn drained(ok: bool) -> impl FnOnce(&mut Status) {
        move |s| {
            s.state = Phase::Stopping;
            s.drain = ListState::Done {
                ok,
                steps: vec![
                    step(
                        "deregister",
                        if ok { Outcome::Ok } else { Outcome::Failed },
                        120,
                    ),
                    step("sleep 5s", Outcome::Ok, 5000),
                ],
            };
        }
    }

    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    fn tcp_check(addr: String) -> Option<crate::config::Check> {
        Some(crate::config::Check {
            http: None,
            tcp: Some(addr),
            timeout: ConfigDuration(Duration::from_secs(5)),
        })
    }

    fn with_token(token: &str) -> Config {
        let mut config = Config::default();
        config.http.token = Some(token.to_string());
        config
    }

    /// Asserts that none of `calls` finishes soon: they must be waiting.
    async fn assert_waiting<T>(calls: &[JoinHandle<T>]) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(calls.iter().all(|c| !c.is_finished()), "answered too early");
    }

    #[tokio::test]
    async fn readyz_follows_the_published_status() {
        let fx = fixture(Config::default());
        let srv = start(&fx);
        let r = get(srv.addr, "/readyz").await;
        assert_eq!((r.code, r.body.as_str()), (503, "app not running\n"));
        fx.status.send_modify(|s| {
            s.app_alive = true;
            s.poststart = ListState::Running { steps: Vec::new() };
        });
        let r = get(srv.addr, "/readyz").await;
        assert_eq!(
            (r.code, r.body.as_str()),
            (503, "poststart steps running\n")
        );
        fx.status.send_modify(running);
        let r = get(srv.addr, "/readyz").await;
        assert_eq!((r.code, r.body.as_str()), (200, "ready\n"));
        fx.status.send_modify(draining);
        let r = get(srv.addr, "/readyz").await;
        assert_eq!((r.code, r.body.as_str()), (503, "shutting down\n"));
    }

    #[tokio::test]
    async fn readyz_applies_the_readiness_check_of_the_live_config() {
        let mut config = Config::default();
        let port = closed_port();
        config.readiness.check = tcp_check(port.clone());
        let fx = fixture(config.clone());
        fx.status.send_modify(running);
        let srv = start(&fx);
        let r = get(srv.addr, "/readyz").await;
        assert_eq!(r.code, 503);
        assert!(
            r.body
                .starts_with(&format!("readiness check failed: tcp {port}: ")),
            "{}",
            r.body
        );
        // A reload points the check at something that listens.
        let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        config.readiness.check = tcp_check(app.local_addr().unwrap().to_string());
        fx.config.send_replace(Arc::new(config));
        let r = get(srv.addr, "/readyz").await;
        assert_eq!((r.code, r.body.as_str()), (200, "ready\n"));
    }

    #[tokio::test]
    async fn healthz_follows_the_app_and_the_liveness_check() {
        let mut config = Config::default();
        let fx = fixture(config.clone());
        let srv = start(&fx);
        let r = get(srv.addr, "/healthz").await;
        assert_eq!((r.code, r.body.as_str()), (503, "app not running\n"));
        fx.status.send_modify(|s| s.app_alive = true);
        let r = get(srv.addr, "/healthz").await;
        assert_eq!((r.code, r.body.as_str()), (200, "ok\n"));
        // Health does not care about the shutdown, only about the process.
        fx.status.send_modify(draining);
        assert_eq!(get(srv.addr, "/healthz").await.code, 200);
        config.liveness.check = tcp_check(closed_port());
        fx.config.send_replace(Arc::new(config));
        let r = get(srv.addr, "/healthz").await;
        assert_eq!(r.code, 503);
        assert!(
            r.body.starts_with("liveness check failed: tcp "),
            "{}",
            r.body
        );
    }

    #[tokio::test]
    async fn prestop_waits_for_the_drain_and_every_caller_gets_the_answer() {
        let mut fx = fixture(Config::default());
        fx.status.send_modify(running);
        let srv = start(&fx);
        let addr = srv.addr;
        let calls: Vec<_> = (0..3)
            .map(|_| tokio::spawn(async move { get(addr, "/prestop").await }))
            .collect();
        for _ in 0..3 {
            let got = tokio::time::timeout(SAFETY, fx.requests.recv())
                .await
                .unwrap();
            assert_eq!(got, Some(Request::Prestop));
        }
        assert_waiting(&calls).await;
        fx.status.send_modify(draining);
        assert_waiting(&calls).await;
        fx.status.send_modify(drained(true));
        let want = fx.status.borrow().drain.summary();
        assert!(want.contains("deregister: ok (0.120s)"), "{want}");
        for call in calls {
            let r = tokio::time::timeout(SAFETY, call).await.unwrap().unwrap();
            assert_eq!((r.code, r.body.as_str()), (200, want.as_str()));
            assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        }
        // A repeated call after the drain answers at once (at least once delivery).
        let r = get(addr, "/prestop").await;
        assert_eq!((r.code, r.body.as_str()), (200, want.as_str()));
    }

    #[tokio::test]
    async fn prestop_answers_500_with_the_summary_when_a_step_failed() {
        let fx = fixture(Config::default());
        fx.status.send_modify(running);
        fx.status.send_modify(draining);
        let srv = start(&fx);
        let addr = srv.addr;
        let call = tokio::spawn(async move { get(addr, "/prestop").await });
        assert_waiting(std::slice::from_ref(&call)).await;
        fx.status.send_modify(drained(false));
        let r = tokio::time::timeout(SAFETY, call).await.unwrap().unwrap();
        assert_eq!(r.code, 500);
        assert_eq!(
            r.body,
            "deregister: failed (0.120s) status 503\nsleep 5s: ok (5.000s)\n"
        );
    }

    #[tokio::test]
    async fn prestop_that_stops_the_app_waits_for_the_exit() {
        let mut config = Config::default();
        config.shutdown.prestop_stops_app = true;
        let fx = fixture(config);
        fx.status.send_modify(running);
        let srv = start(&fx);
        let addr = srv.addr;
        let call = tokio::spawn(async move { get(addr, "/prestop").await });
        fx.status.send_modify(draining);
        fx.status.send_modify(drained(true));
        assert_waiting(std::slice::from_ref(&call)).await;
        fx.status.send_modify(|s| {
            s.state = Phase::Exited;
            s.app_alive = false;
            s.exit = Some("exited with code 0".to_string());
        });
        let r = tokio::time::timeout(SAFETY, call).await.unwrap().unwrap();
        assert_eq!(r.code, 200);
        assert!(
            r.body
                .ends_with("sleep 5s: ok (5.000s)\napp exited with code 0\n"),
            "{}",
            r.body
        );
    }

    #[tokio::test]
    async fn prestop_answers_when_the_app_exited_before_any_drain() {
        let fx = fixture(Config::default());
        fx.status.send_modify(running);
        let srv = start(&fx);
        let addr = srv.addr;
        let call = tokio::spawn(async move { get(addr, "/prestop").await });
        assert_waiting(std::slice::from_ref(&call)).await;
        fx.status.send_modify(|s| {
            s.state = Phase::Exited;
            s.app_alive = false;
        });
        let r = tokio::time::timeout(SAFETY, call).await.unwrap().unwrap();
        assert_eq!(
            (r.code, r.body.as_str()),
            (500, "drain not run: the app exited first\n")
        );
    }

    #[tokio::test]
    async fn poststart_without_steps_answers_200_at_once() {
        let fx = fixture(Config::default());
        let srv = start(&fx);
        // Nothing published yet: the answer does not wait for the status.
        let r = get(srv.addr, "/poststart").await;
        assert_eq!((r.code, r.body.as_str()), (200, "no steps\n"));
    }

    #[tokio::test]
    async fn poststart_waits_for_the_steps_outcome() {
        let config = Config {
            poststart: vec![Step::new(Action::WaitTcp("127.0.0.1:8080".into()))],
            ..Config::default()
        };
        let fx = fixture(config);
        let srv = start(&fx);
        let addr = srv.addr;
        let call = tokio::spawn(async move { get(addr, "/poststart").await });
        fx.status.send_modify(|s| {
            s.poststart = ListState::Running { steps: Vec::new() };
        });
        assert_waiting(std::slice::from_ref(&call)).await;
        fx.status.send_modify(|s| {
            s.poststart = ListState::Done {
                ok: true,
                steps: vec![step("app listening", Outcome::Ok, 1500)],
            };
        });
        let r = tokio::time::timeout(SAFETY, call).await.unwrap().unwrap();
        assert_eq!(
            (r.code, r.body.as_str()),
            (200, "app listening: ok (1.500s)\n")
        );

        fx.status.send_modify(|s| {
            s.poststart = ListState::Done {
                ok: false,
                steps: vec![step("app listening", Outcome::TimedOut, 90000)],
            };
        });
        let r = get(addr, "/poststart").await;
        assert_eq!(r.code, 500);
        assert_eq!(r.body, "app listening: timed_out (90.000s) status 503\n");
    }

    #[tokio::test]
    async fn poststart_stops_waiting_when_drainit_is_done() {
        let config = Config {
            poststart: vec![Step::new(Action::WaitTcp("127.0.0.1:8080".into()))],
            ..Config::default()
        };
        let fx = fixture(config);
        let srv = start(&fx);
        let addr = srv.addr;
        let call = tokio::spawn(async move { get(addr, "/poststart").await });
        assert_waiting(std::slice::from_ref(&call)).await;
        fx.status.send_modify(|s| s.state = Phase::Exited);
        let r = tokio::time::timeout(SAFETY, call).await.unwrap().unwrap();
        assert_eq!((r.code, r.body.as_str()), (500, "no steps\n"));
    }

    #[tokio::test]
    async fn the_token_guards_the_hook_and_drain_endpoints() {
        let mut fx = fixture(with_token("s3cret"));
        let srv = start(&fx);
        let addr = srv.addr;
        for (method, path) in [
            ("GET", "/prestop"),
            ("GET", "/poststart"),
            ("GET", "/drain"),
            ("POST", "/drain"),
        ] {
            for header in [
                "",
                "authorization: Bearer nope\r\n",
                "authorization: Bearer s3cre\r\n",
                "authorization: Bearer s3cret-and-more\r\n",
                "authorization: Basic s3cret\r\n",
                "authorization: s3cret\r\n",
            ] {
                let r = call(addr, method, path, header).await;
                assert_eq!(r.code, 401, "{method} {path} with {header:?}");
                assert_eq!(
                    r.header("www-authenticate"),
                    Some("Bearer realm=\"drainit\"")
                );
            }
        }
        // Refused calls had no effect.
        assert!(fx.requests.try_recv().is_err());
        let r = call(addr, "GET", "/drain", "authorization: Bearer s3cret\r\n").await;
        assert_eq!(r.code, 409);
        let r = call(addr, "GET", "/drain", "authorization: bearer   s3cret \r\n").await;
        assert_eq!(r.code, 409);
        // Open endpoints stay open.
        for path in ["/status", "/metrics"] {
            assert_eq!(get(addr, path).await.code, 200, "{path}");
        }
        for path in ["/healthz", "/readyz"] {
            assert_eq!(get(addr, path).await.code, 503, "{path}");
        }
        // A reload changes the token.
        fx.config.send_replace(Arc::new(with_token("rotated")));
        let r = call(addr, "GET", "/drain", "authorization: Bearer s3cret\r\n").await;
        assert_eq!(r.code, 401);
        let r = call(addr, "GET", "/drain", "authorization: Bearer rotated\r\n").await;
        assert_eq!(r.code, 409);
    }

    #[tokio::test]
    async fn the_token_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let mut config = Config::default();
        config.http.token_file = Some(path.to_str().unwrap().to_string());
        let fx = fixture(config.clone());
        let srv = start(&fx);
        let r = call(
            srv.addr,
            "GET",
            "/drain",
            "authorization: Bearer from-file\r\n",
        )
        .await;
        assert_eq!(r.code, 409);
        assert_eq!(get(srv.addr, "/drain").await.code, 401);
        // An unreadable token file locks the endpoints instead of opening them.
        config.http.token_file = Some(dir.path().join("missing").to_str().unwrap().to_string());
        fx.config.send_replace(Arc::new(config.clone()));
        assert_eq!(get(srv.addr, "/drain").await.code, 500);
        // So does an empty one.
        std::fs::write(&path, "\n").unwrap();
        config.http.token_file = Some(path.to_str().unwrap().to_string());
        fx.config.send_replace(Arc::new(config));
        assert_eq!(get(srv.addr, "/drain").await.code, 500);
        let r = call(srv.addr, "GET", "/drain", "authorization: Bearer \r\n").await;
        assert_eq!(r.code, 500);
    }

    #[tokio::test]
    async fn allow_limits_the_hook_endpoints_to_source_networks() {
        let mut config = with_token("s3cret");
        config.http.allow = vec!["10.0.0.0/8".parse().unwrap()];
        let mut fx = fixture(config.clone());
        let srv = start(&fx);
        let auth = "authorization: Bearer s3cret\r\n";
        let r = call(srv.addr, "GET", "/prestop", auth).await;
        assert_eq!(r.code, 403, "{r:?}");
        // The source is checked before the token.
        assert_eq!(get(srv.addr, "/drain").await.code, 403);
        assert!(fx.requests.try_recv().is_err());
        assert_eq!(get(srv.addr, "/status").await.code, 200);
        config.http.allow = vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.0/8".parse().unwrap(),
        ];
        fx.config.send_replace(Arc::new(config));
        assert_eq!(call(srv.addr, "GET", "/drain", auth).await.code, 409);
        assert_eq!(get(srv.addr, "/drain").await.code, 401);
    }

    #[tokio::test]
    async fn unknown_paths_are_404_and_wrong_methods_405() {
        let mut fx = fixture(with_token("s3cret"));
        let srv = start(&fx);
        for path in ["/", "/nope", "/readyz/", "/prestopx", "/metrics/x"] {
            assert_eq!(get(srv.addr, path).await.code, 404, "{path}");
        }
        // A query string does not change the endpoint.
        assert_eq!(get(srv.addr, "/status?pretty=1").await.code, 200);
        for (method, path, allow) in [
            ("POST", "/readyz", "GET"),
            ("HEAD", "/healthz", "GET"),
            ("DELETE", "/prestop", "GET"),
            ("POST", "/poststart", "GET"),
            ("PUT", "/metrics", "GET"),
            ("POST", "/status", "GET"),
            ("PUT", "/drain", "GET, POST"),
            ("DELETE", "/drain", "GET, POST"),
        ] {
            let r = call(srv.addr, method, path, "").await;
            assert_eq!(r.code, 405, "{method} {path}");
            assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
        }
        assert!(fx.requests.try_recv().is_err());
    }

    #[tokio::test]
    async fn post_drain_starts_the_drain_without_reading_the_body() {
        let mut fx = fixture(Config::default());
        fx.status.send_modify(running);
        let srv = start(&fx);
        // Announce a body that never comes: the answer must not wait for it.
        let mut stream = TcpStream::connect(srv.addr).await.unwrap();
        let request = raw("POST", "/drain", "content-length: 1000000\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let r = read_reply(&mut stream).await;
        assert_eq!(r.code, 202);
        assert_eq!(r.json()["state"], "running");
        let got = tokio::time::timeout(SAFETY, fx.requests.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(Request::Drain));
    }

    #[tokio::test]
    async fn get_drain_is_409_until_the_drain_is_done() {
        let fx = fixture(Config::default());
        fx.status.send_modify(running);
        let srv = start(&fx);
        let r = get(srv.addr, "/drain").await;
        assert_eq!(
            (r.code, r.json()["drain"]["state"].as_str()),
            (409, Some("not_started"))
        );
        fx.status.send_modify(draining);
        let r = get(srv.addr, "/drain").await;
        assert_eq!(
            (r.code, r.json()["drain"]["state"].as_str()),
            (409, Some("running"))
        );
        fx.status.send_modify(drained(false));
        let r = get(srv.addr, "/drain").await;
        let json = r.json();
        assert_eq!(
            (r.code, json["drain"]["state"].as_str()),
            (200, Some("done"))
        );
        assert_eq!(json["drain"]["ok"], false);
    }

    #[tokio::test]
    async fn status_is_json_with_uptime_and_every_step() {
        let fx = fixture(Config::default());
        fx.status.send_modify(running);
        fx.status.send_modify(draining);
        fx.status.send_modify(drained(true));
        fx.status.send_modify(|s| s.restarts = 2);
        let srv = start(&fx);
        let r = get(srv.addr, "/status").await;
        assert_eq!(r.code, 200);
        let json = r.json();
        assert_eq!(json["state"], "stopping");
        assert_eq!(json["app_pid"], 42);
        assert_eq!(json["restarts"], 2);
        assert_eq!(json["shutdown_cause"], "prestop");
        assert_eq!(json["poststart"]["state"], "done");
        assert_eq!(json["on_exit"]["state"], "not_started");
        let steps = json["drain"]["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0]["name"], "deregister");
        assert_eq!(steps[0]["outcome"], "ok");
        assert_eq!(steps[0]["duration_ms"], 120);
        assert_eq!(steps[1]["duration_ms"], 5000);
        assert!(json["uptime_seconds"].as_f64().unwrap() >= 0.0);
        assert!(json.get("started_at").is_none());
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let fx = fixture(Config::default());
        fx.status.send_modify(running);
        fx.shared
            .metrics
            .signal_forwarded(crate::config::Signal::HUP);
        let srv = start(&fx);
        let r = get(srv.addr, "/metrics").await;
        assert_eq!(r.code, 200);
        assert_eq!(
            r.header("content-type"),
            Some(crate::http::metrics::CONTENT_TYPE)
        );
        let samples = crate::http::metrics::tests::parse(&r.body);
        let value = |name, labels| crate::http::metrics::tests::value(&samples, name, labels);
        assert_eq!(
            value("drainit_signals_forwarded_total", &[("signal", "HUP")]),
            1.0
        );
        assert_eq!(value("drainit_state", &[("state", "running")]), 1.0);
        assert_eq!(value("drainit_ready", &[]), 1.0);
    }

    fn limited(max_connections: usize) -> Config {
        let mut config = Config::default();
        config.http.max_connections = max_connections;
        config
    }

    #[tokio::test]
    async fn when_full_the_oldest_connection_without_a_request_is_dropped() {
        let fx = fixture(limited(2));
        let srv = start(&fx);
        let mut first = TcpStream::connect(srv.addr).await.unwrap();
        let mut second = TcpStream::connect(srv.addr).await.unwrap();
        // The third is admitted and served...
        let r = get(srv.addr, "/status").await;
        assert_eq!(r.code, 200);
        // ...at the expense of the oldest idle one, which is closed,
        assert_eq!(read_to_close(&mut first).await, b"");
        // while the second still works.
        let request = raw("GET", "/status", "");
        second.write_all(request.as_bytes()).await.unwrap();
        assert_eq!(read_reply(&mut second).await.code, 200);
    }

    #[tokio::test]
    async fn a_flood_of_slow_clients_does_not_keep_a_probe_out() {
        let fx = fixture(limited(20));
        fx.status.send_modify(running);
        let srv = start(&fx);
        let mut flood = Vec::new();
        for _ in 0..100 {
            let mut slow = TcpStream::connect(srv.addr).await.unwrap();
            slow.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\n")
                .await
                .unwrap();
            flood.push(slow);
        }
        let r = get(srv.addr, "/readyz").await;
        assert_eq!((r.code, r.body.as_str()), (200, "ready\n"));
        // At most `max_connections` stay open: the rest were dropped.
        let mut closed = 0;
        for slow in &mut flood {
            let mut byte = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(20), slow.read(&mut byte)).await
            {
                closed += 1;
            }
        }
        assert!(closed >= 100 + 1 - 20, "only {closed} of 100 closed");
    }

    #[tokio::test]
    async fn a_connection_waiting_on_prestop_is_never_dropped() {
        let mut fx = fixture(limited(2));
        fx.status.send_modify(running);
        let srv = start(&fx);
        let mut hook = waiting_prestop(srv.addr, &mut fx).await;
        let mut idle = TcpStream::connect(srv.addr).await.unwrap();
        // Full: the probe evicts the idle connection, not the waiting hook.
        assert_eq!(get(srv.addr, "/healthz").await.code, 200);
        assert_eq!(read_to_close(&mut idle).await, b"");
        fx.status.send_modify(draining);
        fx.status.send_modify(drained(true));
        assert_eq!(read_reply(&mut hook).await.code, 200);
    }

    #[test]
    fn a_full_server_evicts_a_connection_without_a_request_else_uses_the_reserve() {
        let room = Admission::In {
            evict: None,
            reserve: false,
        };
        assert_eq!(admission(0, 4, None), room);
        assert_eq!(admission(3, 4, Some(0)), room);
        // Full: the connection without a request (or idle) makes room.
        let evict = |id, reserve| Admission::In {
            evict: Some(id),
            reserve,
        };
        assert_eq!(admission(4, 4, Some(2)), evict(2, false));
        // Full and every connection busy: into the reserve...
        let reserve = Admission::In {
            evict: None,
            reserve: true,
        };
        assert_eq!(admission(4, 4, None), reserve);
        assert_eq!(admission(4 + PROBE_RESERVE - 1, 4, None), reserve);
        // ...where one without a request still makes room first...
        assert_eq!(admission(5, 4, Some(4)), evict(4, true));
        // ...until the reserve is full too.
        assert_eq!(admission(4 + PROBE_RESERVE, 4, None), Admission::Refuse);
        assert_eq!(
            admission(4 + PROBE_RESERVE, 4, Some(7)),
            evict(7, true),
            "the bound holds: one out, one in"
        );
    }

    /// Regression: reconnecting clients evicted a kubelet probe's reserve
    /// connection before its request head was read (1 run in 3 of
    /// `robustness::clients_pipelining_readyz_in_every_slot_...`).
    #[tokio::test]
    async fn a_reserve_connection_is_never_the_one_dropped() {
        fn add(connections: &mut Connections, phase: u8, reserve: bool) {
            let id = connections.next_id;
            connections.next_id += 1;
            let state = Arc::new(ConnState {
                reserve,
                ..ConnState::default()
            });
            state.phase.store(phase, Ordering::Relaxed);
            let abort = tokio::spawn(async {}).abort_handle();
            connections.open.insert(id, Connection { state, abort });
        }
        let mut connections = Connections::default();
        add(&mut connections, BUSY, false);
        add(&mut connections, NEW, true);
        add(&mut connections, IDLE, true);
        assert_eq!(connections.victim(), None, "busy, or in the reserve");
        add(&mut connections, IDLE, false);
        assert_eq!(connections.victim(), Some(3));
    }

    /// A `readiness.check` that takes `delay` to pass: a TCP check against
    /// a listener whose accept queue is full, so the connect hangs until the
    /// check's timeout... which is `delay`. Returns the check and what keeps
    /// the listener full.
    async fn slow_check(delay: Duration) -> (crate::config::Check, Vec<TcpStream>) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..2 {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await
            {
                fillers.push(s);
            }
        }
        std::mem::forget(listener);
        let check = crate::config::Check {
            http: None,
            tcp: Some(addr.to_string()),
            timeout: ConfigDuration(delay),
        };
        (check, fillers)
    }

    #[tokio::test]
    async fn clients_pipelining_readyz_in_every_slot_do_not_keep_a_kubelet_probe_out() {
        const SLOTS: usize = 4;
        let (check, _fillers) = slow_check(Duration::from_millis(600)).await;
        let mut config = limited(SLOTS);
        config.readiness.check = Some(check.clone());
        config.liveness.check = Some(check);
        let fx = fixture(config);
        fx.status.send_modify(running);
        let srv = start(&fx);
        // Every slot busy: each client pipelines many /readyz at once.
        let mut busy = Vec::new();
        for _ in 0..SLOTS {
            let mut stream = TcpStream::connect(srv.addr).await.unwrap();
            let burst = "GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n".repeat(50);
            stream.write_all(burst.as_bytes()).await.unwrap();
            busy.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let probe = |path: &'static str| async move {
            let mut stream = TcpStream::connect(srv.addr).await.unwrap();
            let request = format!(
                "GET {path} HTTP/1.1\r\nhost: x\r\nuser-agent: kube-probe/1.30\r\nconnection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let started = Instant::now();
            let reply = read_reply(&mut stream).await;
            (reply.code, started.elapsed())
        };
        // Both probes at once: they join the check run under way (or one
        // new run), so each answers within the check's timeout.
        let ((ready, ready_took), (live, live_took)) =
            tokio::join!(probe("/readyz"), probe("/healthz"));
        assert_eq!(
            (ready, live),
            (503, 503),
            "the slow check fails at its timeout"
        );
        assert!(
            ready_took < Duration::from_millis(950),
            "/readyz took {ready_took:?}"
        );
        assert!(
            live_took < Duration::from_millis(950),
            "/healthz took {live_took:?}"
        );
    }

    #[tokio::test]
    async fn when_every_connection_is_busy_only_probes_and_hooks_get_the_reserve() {
        let mut fx = fixture(limited(1));
        fx.status.send_modify(running);
        let srv = start(&fx);
        let mut hooks = vec![waiting_prestop(srv.addr, &mut fx).await];
        // Full of busy connections: a kubelet probe is answered from the
        // reserve, and its connection closed after it...
        let probe = "user-agent: kube-probe/1.30\r\n";
        let mut stream = TcpStream::connect(srv.addr).await.unwrap();
        let request = format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{probe}\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let r = read_reply(&mut stream).await;
        assert_eq!((r.code, r.header("connection")), (200, Some("close")));
        assert_eq!(read_to_close(&mut stream).await, b"");
        // ...anything else gets 503...
        let r = get(srv.addr, "/healthz").await;
        assert_eq!(r.code, 503, "{}", r.body);
        assert!(r.body.starts_with("busy: "), "{}", r.body);
        // ...and hook calls get in too, until the reserve is full of them.
        for _ in 0..PROBE_RESERVE {
            hooks.push(waiting_prestop(srv.addr, &mut fx).await);
        }
        let mut refused = TcpStream::connect(srv.addr).await.unwrap();
        let request = format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{probe}\r\n");
        let _ = refused.write_all(request.as_bytes()).await;
        assert_eq!(read_to_close(&mut refused).await, b"");
        fx.status.send_modify(drained(true));
        for hook in &mut hooks {
            assert_eq!(read_reply(hook).await.code, 200);
        }
    }

    #[tokio::test]
    async fn a_slow_client_is_closed_at_the_header_timeout() {
        let mut config = Config::default();
        config.http.header_timeout = ConfigDuration(Duration::from_millis(300));
        let fx = fixture(config);
        let srv = start(&fx);
        let mut slow = TcpStream::connect(srv.addr).await.unwrap();
        let started = Instant::now();
        slow.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let got = read_to_close(&mut slow).await;
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        // The server itself is fine.
        assert_eq!(get(srv.addr, "/status").await.code, 200);
    }

    #[tokio::test]
    async fn idle_keep_alive_connections_do_not_delay_the_shutdown() {
        let fx = fixture(Config::default());
        let srv = start(&fx);
        let mut kept = TcpStream::connect(srv.addr).await.unwrap();
        kept.write_all(raw("GET", "/status", "").as_bytes())
            .await
            .unwrap();
        assert_eq!(read_reply(&mut kept).await.code, 200);
        let mut silent = TcpStream::connect(srv.addr).await.unwrap();
        // A slow client in the middle of its request head: hyper's own
        // graceful shutdown would wait for the rest of it.
        let mut partial = TcpStream::connect(srv.addr).await.unwrap();
        partial
            .write_all(b"GET /status HTTP/1.1\r\n")
            .await
            .unwrap();
        // Both are accepted (and the head read) before this one is served:
        // the accept queue is FIFO and the runtime polls in order.
        assert_eq!(get(srv.addr, "/status").await.code, 200);
        let stopped_at = Instant::now();
        srv.stop.send(()).unwrap();
        // SHUTDOWN_GRACE is 1s: waiting on an idle connection would take it all.
        tokio::time::timeout(Duration::from_millis(500), srv.task)
            .await
            .expect("serve returns at once when only idle connections are open")
            .unwrap();
        assert!(stopped_at.elapsed() < SHUTDOWN_GRACE);
        assert_eq!(read_to_close(&mut kept).await, b"");
        assert_eq!(read_to_close(&mut silent).await, b"");
        assert_eq!(read_to_close(&mut partial).await, b"");
        // And nothing listens any more.
        assert!(TcpStream::connect(srv.addr).await.is_err());
    }

    #[tokio::test]
    async fn an_in_flight_request_may_finish_during_the_shutdown() {
        let mut fx = fixture(Config::default());
        fx.status.send_modify(running);
        let srv = start(&fx);
        let mut hook = waiting_prestop(srv.addr, &mut fx).await;
        srv.stop.send(()).unwrap();
        fx.status.send_modify(drained(true));
        let r = read_reply(&mut hook).await;
        assert_eq!(r.code, 200);
        // No keep-alive after the answer once the server stops.
        assert_eq!(read_to_close(&mut hook).await, b"");
        tokio::time::timeout(SAFETY, srv.task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_request_that_never_finishes_holds_the_shutdown_at_most_the_grace() {
        let mut fx = fixture(Config::default());
        fx.status.send_modify(running);
        let srv = start(&fx);
        let mut hook = waiting_prestop(srv.addr, &mut fx).await;
        let stopped_at = Instant::now();
        srv.stop.send(()).unwrap();
        tokio::time::timeout(SAFETY, srv.task)
            .await
            .unwrap()
            .unwrap();
        let took = stopped_at.elapsed();
        assert!(
            took >= SHUTDOWN_GRACE - Duration::from_millis(50),
            "{took:?}"
        );
        assert!(took < SHUTDOWN_GRACE * 3, "{took:?}");
        assert_eq!(read_to_close(&mut hook).await, b"");
    }

    #[test]
    fn bind_reuses_an_address_left_in_time_wait() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(false).unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        // The server side closes first, so its socket (on `addr`) ends in
        // TIME_WAIT; without SO_REUSEADDR the port could not be bound again.
        drop(accepted);
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut client, &mut rest).unwrap();
        drop(client);
        drop(listener);
        let again = bind(addr).expect("rebind while the old socket is in TIME_WAIT");
        assert_eq!(again.local_addr().unwrap(), addr);
    }

    #[test]
    fn serve_can_be_spawned() {
        fn assert_send<T: Send + 'static>(_: &T) {}
        let fx = fixture(Config::default());
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let serving = serve(listener, Arc::clone(&fx.shared), async {});
        assert_send(&serving);
    }
}

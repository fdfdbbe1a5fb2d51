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
//! This module owns the listener, the connections and the answers. It never
//! decides anything about the shutdown: it sends [`Request`]s to the
//! supervisor and waits on the [`Status`] the supervisor publishes, so every
//! caller of `/prestop` waits on the same drain. It runs on the same thread
//! as signal forwarding and reaping, so it must never block: every handler
//! is async, no request body is ever read, and connections are bounded in
//! number (`max_connections`, evicting the oldest that has not sent a
//! request), in header time (`header_timeout`) and in buffer size.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::state::{Phase, Request, Shared, Status};

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

type Body = Full<Bytes>;
type Response = hyper::Response<Body>;

/// Binds the listener. Called before the app is spawned, so the kubelet's
/// first hook or probe finds the port open.
///
/// `std`'s `bind` sets `SO_REUSEADDR` on Unix before binding, so a restarted
/// drainit can rebind while old connections linger in `TIME_WAIT`. The
/// listener is returned non-blocking, ready for [`serve`].
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
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
                Ok((stream, peer)) => server.admit(stream, peer, stop_rx.clone()),
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

struct Server {
    shared: Arc<Shared>,
    connections: Mutex<Connections>,
    /// The token resolved for one config version (kept alive by the `Arc`,
    /// so a new version can never be mistaken for it).
    token: Mutex<Option<(Arc<Config>, Option<Arc<str>>)>>,
}

/// The registry of open connections, oldest first.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: BTreeMap<u64, Connection>,
}

struct Connection {
    phase: Arc<AtomicU8>,
    abort: AbortHandle,
}

impl Connections {
    /// The connection to drop to admit a new one: the oldest that has not
    /// sent a request yet, else the oldest idle keep-alive one. A busy
    /// connection (a kubelet waiting on `/prestop`) is never a victim.
    fn victim(&self) -> Option<u64> {
        let oldest_in = |phase| {
            self.open
                .iter()
                .find(|(_, c)| c.phase.load(Ordering::Relaxed) == phase)
                .map(|(id, _)| *id)
        };
        oldest_in(NEW).or_else(|| oldest_in(IDLE))
    }
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
struct IdleOnDrop(Arc<AtomicU8>);

impl Drop for IdleOnDrop {
    fn drop(&mut self) {
        self.0.store(IDLE, Ordering::Relaxed);
    }
}

impl Server {
    fn connections(&self) -> MutexGuard<'_, Connections> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers and spawns a connection, evicting one if the server is
    /// full, or refusing this one if every slot is busy.
    fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, stop: watch::Receiver<()>) {
        let http = self.shared.config.borrow().http.clone();
        let mut connections = self.connections();
        if connections.open.len() >= http.max_connections {
            match connections.victim() {
                Some(id) => {
                    if let Some(victim) = connections.open.remove(&id) {
                        victim.abort.abort();
                    }
                    debug!(%peer, "http server: full; dropped the oldest idle connection");
                }
                None => {
                    debug!(%peer, "http server: full of busy connections; refusing");
                    return;
                }
            }
        }
        let _ = stream.set_nodelay(true);
        let id = connections.next_id;
        connections.next_id += 1;
        let phase = Arc::new(AtomicU8::new(NEW));
        let registered = Registered {
            server: Arc::clone(self),
            id,
        };
        // The task cannot run before the registry lock is released, so it
        // cannot deregister before it is registered.
        let task = tokio::spawn(Arc::clone(self).connection(
            stream,
            peer,
            Arc::clone(&phase),
            http.header_timeout.0,
            stop,
            registered,
        ));
        connections.open.insert(
            id,
            Connection {
                phase,
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
        phase: Arc<AtomicU8>,
        header_timeout: Duration,
        mut stop: watch::Receiver<()>,
        _registered: Registered,
    ) {
        let service = {
            let server = Arc::clone(&self);
            service_fn(move |request: hyper::Request<Incoming>| {
                // hyper calls this once the request head is complete.
                phase.store(BUSY, Ordering::Relaxed);
                let idle = IdleOnDrop(Arc::clone(&phase));
                let server = Arc::clone(&server);
                async move {
                    let response = server.respond(&request, peer).await;
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
            let busy = c.phase.load(Ordering::Relaxed) == BUSY;
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

    /// Routes one request. The body is never read.
    async fn respond(&self, request: &hyper::Request<Incoming>, peer: SocketAddr) -> Response {
        let endpoint = match Endpoint::route(request.method(), request.uri().path()) {
            Ok(endpoint) => endpoint,
            Err(response) => return response,
        };
        if endpoint.needs_auth() {
            if let Err(response) = self.authorize(request.headers(), peer.ip()) {
                return response;
            }
        }
        match endpoint {
            Endpoint::Prestop => self.prestop(peer).await,
            Endpoint::Poststart => self.poststart().await,
            Endpoint::Healthz => self.healthz().await,
            Endpoint::Readyz => self.readyz().await,
            Endpoint::DrainStart => {
                info!(%peer, "POST /drain: starting the drain");
                let _ = self.shared.requests.send(Request::Drain);
                status_json(StatusCode::ACCEPTED, &self.status())
            }
            Endpoint::DrainStatus => {
                let status = self.status();
                let code = if status.drain.is_done() {
                    StatusCode::OK
                } else {
                    StatusCode::CONFLICT
                };
                status_json(code, &status)
            }
            Endpoint::Status => status_json(StatusCode::OK, &self.status()),
            Endpoint::Metrics => {
                let mut response = text(StatusCode::OK, crate::metrics::render(&self.shared));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                );
                response
            }
        }
    }

    fn status(&self) -> Status {
        self.shared.status.borrow().clone()
    }

    fn config(&self) -> Arc<Config> {
        Arc::clone(&self.shared.config.borrow())
    }

    /// `GET /prestop`: asks for the shutdown (the supervisor joins repeated
    /// asks into one) and waits until the drain is done — and, with
    /// `prestop_stops_app`, until the app has exited — or drainit is done.
    async fn prestop(&self, peer: SocketAddr) -> Response {
        info!(%peer, "GET /prestop: starting the shutdown (or joining it)");
        // An error means the supervisor is gone; the status says the rest.
        let _ = self.shared.requests.send(Request::Prestop);
        let stops_app = self.config().shutdown.prestop_stops_app;
        let status = self
            .wait_until(|s| {
                s.state == Phase::Exited || (!stops_app && s.drain.is_done())
            })
            .await;
        let mut body = match &status.drain {
            crate::state::ListState::NotStarted => "drain not run: the app exited first\n".into(),
            drain if !drain.is_done() => {
                format!("{}drain not finished: the app exited first\n", drain.summary())
            }
            drain => drain.summary(),
        };
        if stops_app {
            if let Some(exit) = &status.exit {
                body.push_str(&format!("app {exit}\n"));
            }
        }
        text(list_code(status.drain.succeeded()), body)
    }

    /// `GET /poststart`: waits for the poststart steps (which run on their
    /// own as soon as the app is spawned).
    async fn poststart(&self) -> Response {
        if self.config().poststart.is_empty() {
            return text(StatusCode::OK, "no steps\n");
        }
        let status = self
            .wait_until(|s| s.poststart.is_done() || s.state == Phase::Exited)
            .await;
        text(
            list_code(status.poststart.succeeded()),
            status.poststart.summary(),
        )
    }

    /// `GET /healthz`.
    async fn healthz(&self) -> Response {
        if !self.shared.status.borrow().app_alive {
            return text(StatusCode::SERVICE_UNAVAILABLE, "app not running\n");
        }
        if let Some(check) = &self.config().liveness.check {
            if let Err(why) = crate::checks::run(check).await {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("liveness check failed: {why}\n"),
                );
            }
        }
        text(StatusCode::OK, "ok\n")
    }

    /// `GET /readyz`.
    async fn readyz(&self) -> Response {
        if let Err(why) = self.shared.status.borrow().ready() {
            return text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
        }
        if let Some(check) = &self.config().readiness.check {
            if let Err(why) = crate::checks::run(check).await {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("readiness check failed: {why}\n"),
                );
            }
            // A shutdown may have started while the check ran.
            if let Err(why) = self.shared.status.borrow().ready() {
                return text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
            }
        }
        text(StatusCode::OK, "ready\n")
    }

    /// Waits until the published status satisfies `done` and returns it; if
    /// the supervisor is gone, returns the last status.
    async fn wait_until(&self, done: impl Fn(&Status) -> bool) -> Status {
        let mut status = self.shared.status.clone();
        loop {
            {
                let current = status.borrow_and_update();
                if done(&current) {
                    return current.clone();
                }
            }
            if status.changed().await.is_err() {
                return status.borrow().clone();
            }
        }
    }

    /// Applies `http.allow`, then the token, to an endpoint marked "auth".
    fn authorize(&self, headers: &HeaderMap, peer: IpAddr) -> Result<(), Response> {
        let config = self.config();
        let source = source_ip(peer);
        if !config.http.allow.is_empty() && !config.http.allow.iter().any(|n| n.contains(&source))
        {
            debug!(%source, "http: source not in http.allow");
            return Err(text(
                StatusCode::FORBIDDEN,
                "forbidden: the source address is not in http.allow\n",
            ));
        }
        let Some(token) = self.token(&config)? else {
            return Ok(());
        };
        let given = headers.get(AUTHORIZATION).and_then(|v| bearer(v.as_bytes()));
        match given {
            Some(given) if bool::from(given.ct_eq(token.as_bytes())) => Ok(()),
            _ => {
                debug!(%source, "http: missing or wrong bearer token");
                let mut response = text(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized: expected Authorization: Bearer <http.token>\n",
                );
                response.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"drainit\""),
                );
                Err(response)
            }
        }
    }

    /// The token in force for this config version, read once per version.
    /// A token that cannot be read (or is empty) locks the endpoints: they
    /// answer 500 until a reload fixes it, and the read is retried.
    fn token(&self, config: &Arc<Config>) -> Result<Option<Arc<str>>, Response> {
        let mut cache = self.token.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((version, token)) = &*cache {
            if Arc::ptr_eq(version, config) {
                return Ok(token.clone());
            }
        }
        let resolved = match config.http.resolve_token() {
            Ok(Some(token)) if token.is_empty() => Err("the token is empty".to_string()),
            other => other,
        };
        match resolved {
            Ok(token) => {
                let token: Option<Arc<str>> = token.map(Arc::from);
                *cache = Some((Arc::clone(config), token.clone()));
                Ok(token)
            }
            Err(e) => {
                warn!("http: {e}; refusing the endpoints that need the token");
                Err(text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the http token cannot be read; see drainit's log\n",
                ))
            }
        }
    }
}

/// The endpoints of SPEC section 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Prestop,
    Poststart,
    Healthz,
    Readyz,
    DrainStart,
    DrainStatus,
    Status,
    Metrics,
}

impl Endpoint {
    /// The endpoint for `method` and `path`, or the 404 / 405 answer.
    fn route(method: &Method, path: &str) -> Result<Endpoint, Response> {
        let get = *method == Method::GET;
        let (endpoint, allow) = match path {
            "/prestop" => (get.then_some(Endpoint::Prestop), "GET"),
            "/poststart" => (get.then_some(Endpoint::Poststart), "GET"),
            "/healthz" => (get.then_some(Endpoint::Healthz), "GET"),
            "/readyz" => (get.then_some(Endpoint::Readyz), "GET"),
            "/status" => (get.then_some(Endpoint::Status), "GET"),
            "/metrics" => (get.then_some(Endpoint::Metrics), "GET"),
            "/drain" => match *method {
                Method::GET => (Some(Endpoint::DrainStatus), "GET, POST"),
                Method::POST => (Some(Endpoint::DrainStart), "GET, POST"),
                _ => (None, "GET, POST"),
            },
            _ => return Err(text(StatusCode::NOT_FOUND, "not found\n")),
        };
        endpoint.ok_or_else(|| {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            response
        })
    }

    fn needs_auth(self) -> bool {
        matches!(
            self,
            Endpoint::Prestop | Endpoint::Poststart | Endpoint::DrainStart | Endpoint::DrainStatus
        )
    }
}

/// The peer address as `http.allow` sees it: an IPv4 client of a dual-stack
/// `[::]` listener shows up as `::ffff:a.b.c.d`, which must match
/// `10.0.0.0/8`.
fn source_ip(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The credentials of an `Authorization: Bearer <token>` header (the
/// scheme is case-insensitive, RFC 7235).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ' && *b != b'\t')?;
    let end = rest.iter().rposition(|b| *b != b' ' && *b != b'\t')?;
    Some(&rest[start..=end])
}

fn list_code(succeeded: bool) -> StatusCode {
    if succeeded {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

fn text(code: StatusCode, body: impl Into<String>) -> Response {
    let mut response = Response::new(Full::new(Bytes::from(body.into())));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The `/status` document: the published [`Status`] plus the uptime.
#[derive(Serialize)]
struct StatusBody<'a> {
    #[serde(flatten)]
    status: &'a Status,
    uptime_seconds: f64,
}

fn status_json(code: StatusCode, status: &Status) -> Response {
    let body = StatusBody {
        status,
        uptime_seconds: status.started_at.elapsed().as_millis() as f64 / 1000.0,
    };
    match serde_json::to_string(&body) {
        Ok(mut json) => {
            json.push('\n');
            let mut response = text(code, json);
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the status: {e}\n"),
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::state::Metrics;
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
                reaper: crate::reaper::Reaper::default(),
                started_wall: std::time::SystemTime::now(),
            }),
            status: status_tx,
            config: config_tx,
            requests: requests_rx,
        }
    }
}

//! The answers: which endpoint a method and path name ([`Endpoint`], with
//! the 404 and 405 [`Refusal`]s), and what each endpoint says. Handlers
//! only read the published [`Status`] and send [`Request`]s; none blocks,
//! and none reads a request body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, StatusCode};
use serde::Serialize;
use tracing::info;

use super::server::{Response, Server};
use crate::config::Config;
use crate::lifecycle::state::{Phase, Request, Status};

impl Server {
    /// Routes one request. The body is never read.
    pub(super) async fn respond(
        &self,
        request: &hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> Response {
        let endpoint = match Endpoint::route(request.method(), request.uri().path()) {
            Ok(endpoint) => endpoint,
            Err(refusal) => return refusal.response(),
        };
        if endpoint.needs_auth() {
            if let Err(refusal) = self.authorize(request.headers(), peer.ip()).await {
                return refusal.response();
            }
        }
        match endpoint {
            Endpoint::Prestop => self.prestop(peer).await,
            Endpoint::Poststart => self.poststart().await,
            Endpoint::Healthz => self.healthz().await,
            Endpoint::Readyz => self.readyz().await,
            Endpoint::DrainStart => {
                info!(%peer, "POST /drain: starting the drain");
                // Answer with the status *after* the driver took the
                // request (bounded), not a snapshot from before it.
                let mut status = self.shared.status.clone();
                status.mark_unchanged();
                let _ = self.shared.requests.send(Request::Drain);
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    status.wait_for(|s| s.shutdown_started || s.state == Phase::Exited),
                )
                .await;
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
                let mut response = text(StatusCode::OK, crate::http::metrics::render(&self.shared));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(crate::http::metrics::CONTENT_TYPE),
                );
                response
            }
        }
    }

    fn status(&self) -> Status {
        self.shared.status.borrow().clone()
    }

    pub(super) fn config(&self) -> Arc<Config> {
        Arc::clone(&self.shared.config.borrow())
    }

    /// `GET /prestop`: asks for the shutdown (the driver joins repeated
    /// asks into one) and waits until the drain is done — and, with
    /// `prestop_stops_app`, until the app has exited — or drainit is done.
    async fn prestop(&self, peer: SocketAddr) -> Response {
        info!(%peer, "GET /prestop: starting the shutdown (or joining it)");
        // An error means the driver is gone; the status says the rest.
        let _ = self.shared.requests.send(Request::Prestop);
        let stops_app = self.config().shutdown.prestop_stops_app;
        let status = self
            .wait_until(|s| s.state == Phase::Exited || (!stops_app && s.drain.is_done()))
            .await;
        let mut body = match &status.drain {
            crate::lifecycle::state::ListState::NotStarted => {
                "drain not run: the app exited first\n".into()
            }
            drain if !drain.is_done() => {
                format!(
                    "{}drain not finished: the app exited first\n",
                    drain.summary()
                )
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
    /// Remembers whether the answer was 200, for the cause `liveness`.
    async fn healthz(&self) -> Response {
        let response = self.healthz_answer().await;
        self.shared.metrics.healthz_failing.store(
            response.status() != StatusCode::OK,
            std::sync::atomic::Ordering::Relaxed,
        );
        response
    }

    async fn healthz_answer(&self) -> Response {
        if !self.shared.status.borrow().app_alive {
            return text(StatusCode::SERVICE_UNAVAILABLE, "app not running\n");
        }
        if let Some(check) = &self.config().liveness.check {
            if let Err(why) = self.liveness.run(check).await {
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
            if let Err(why) = self.readiness.run(check).await {
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
    /// the driver is gone, returns the last status.
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
    fn route(method: &Method, path: &str) -> Result<Endpoint, Refusal> {
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
            _ => return Err(Refusal::NotFound),
        };
        endpoint.ok_or(Refusal::MethodNotAllowed { allow })
    }

    fn needs_auth(self) -> bool {
        matches!(
            self,
            Endpoint::Prestop | Endpoint::Poststart | Endpoint::DrainStart | Endpoint::DrainStatus
        )
    }
}

/// Why a request is not served; each has one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    /// The source is outside `http.allow`.
    Forbidden,
    /// No or a wrong bearer token.
    Unauthorized,
    /// The token cannot be read (or is empty): fail closed.
    NoToken,
}

impl Refusal {
    pub(super) fn response(self) -> Response {
        match self {
            Refusal::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
            Refusal::MethodNotAllowed { allow } => {
                let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
                response
            }
            Refusal::Forbidden => text(
                StatusCode::FORBIDDEN,
                "forbidden: the source address is not in http.allow\n",
            ),
            Refusal::Unauthorized => {
                let mut response = text(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized: expected Authorization: Bearer <http.token>\n",
                );
                response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"drainit\""),
                );
                response
            }
            Refusal::NoToken => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the http token cannot be read; see drainit's log\n",
            ),
        }
    }
}

fn list_code(succeeded: bool) -> StatusCode {
    if succeeded {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

pub(super) fn text(code: StatusCode, body: impl Into<String>) -> Response {
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

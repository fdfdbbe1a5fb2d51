//! The kubelet's two HTTP clients, on the tests' client (`util::http`).
//!
//! The kubelet's hook client (`pkg/kubelet/lifecycle/handlers.go`) sends a
//! GET with the pod's `httpHeaders`, `User-Agent: kube-lifecycle/<ver>`,
//! may keep the connection alive, and has no timeout. Its prober
//! (`pkg/probe/http/http.go`) sends `User-Agent: kube-probe/<ver>`, disables
//! keep-alive and gives up after the probe's timeout (1s by default). Both
//! are built from [`Request`], which owns one connection for one exchange
//! and reads the body by `Content-Length`, chunked encoding, or until EOF.

use std::time::Duration;

pub use crate::util::http::{exchange_on, get, read_request_head, Request, Response};

/// The Kubernetes version the emulator claims to be.
pub const KUBE_VERSION: &str = "1.31";

/// What the kubelet's prober sends: `GET`, no keep-alive, 1s timeout.
/// Returns the status, or `None` when there was no answer in time (the
/// kubelet counts that as a failure).
pub fn probe(port: u16, path: &str) -> Option<u16> {
    Request::new(port, "GET", path)
        .header("User-Agent", &format!("kube-probe/{KUBE_VERSION}"))
        .header("Accept", "*/*")
        .header("Connection", "close")
        .timeout(Some(Duration::from_secs(1)))
        .send()
        .ok()
        .map(|r| r.status)
}

//! The optional `readiness.check` and `liveness.check` against the app.
//!
//! This module owns one run of a check: a TCP connect, or an HTTP GET that
//! must answer 2xx, bounded by the check's `timeout` (800ms by default, so
//! the answer beats the kubelet's 1s probe timeout). It never retries and
//! never caches a result: the kubelet probes again, and a stale "ready" is
//! worse than a slow one. It never blocks the thread: name lookups that
//! need the resolver run on tokio's blocking pool.
//!
//! It also owns [`SingleFlight`]: probes that arrive while a run is under
//! way wait for that run instead of starting their own, so a thousand
//! pipelined `/readyz` cost one connection to the app, not a thousand.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::url::redact_url;
use crate::config::Check;
use crate::lifecycle::client;

/// Runs `check` once: `Ok` when the app answered in time, else why not.
///
/// A check with neither `tcp` nor `http` passes; `Config::validate` makes
/// sure a configured check has exactly one of them.
pub async fn run(check: &Check) -> Result<(), String> {
    let timeout = check.timeout.0;
    if let Some(addr) = &check.tcp {
        tcp(addr, timeout).await
    } else if let Some(url) = &check.http {
        http(url, timeout).await
    } else {
        Ok(())
    }
}

/// The outcome of one run, once it is known.
type Outcome = Option<Result<(), String>>;

/// One run of a check at a time, shared by every caller that asks while it
/// runs (single flight). A caller that comes after the run finished starts
/// a new one: results are shared, never cached.
///
/// The run is a task of its own, so it finishes (within the check's
/// timeout) even when the caller that started it is gone (its connection
/// evicted, say), and the others still get their answer.
#[derive(Default)]
pub struct SingleFlight {
    current: Mutex<Option<Flight>>,
}

/// The run under way: which check, and where its outcome will appear.
struct Flight {
    check: Check,
    outcome: watch::Receiver<Outcome>,
}

impl Flight {
    /// Whether a new caller may still wait on this run: it is the same
    /// check (a reload may have changed it), has no outcome yet, and its
    /// task is alive.
    fn joinable(&self, check: &Check) -> bool {
        self.check == *check
            && self.outcome.borrow().is_none()
            && self.outcome.has_changed().is_ok()
    }
}

impl SingleFlight {
    /// Runs `check`, or waits for the run of the same check under way.
    pub async fn run(&self, check: &Check) -> Result<(), String> {
        self.run_with(check, |check| async move { run(&check).await })
            .await
    }

    /// [`SingleFlight::run`] with the run itself given (tests count runs).
    async fn run_with<F, Fut>(&self, check: &Check, start: F) -> Result<(), String>
    where
        F: FnOnce(Check) -> Fut,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let mut outcome = {
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            match current.as_ref() {
                Some(flight) if flight.joinable(check) => flight.outcome.clone(),
                _ => {
                    let (tx, rx) = watch::channel(None);
                    let run = start(check.clone());
                    tokio::spawn(async move {
                        let _ = tx.send(Some(run.await));
                    });
                    *current = Some(Flight {
                        check: check.clone(),
                        outcome: rx.clone(),
                    });
                    rx
                }
            }
        };
        let done = outcome
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|done| done.clone());
        // `None`: the run's task ended without an outcome (it panicked).
        done.unwrap_or_else(|| Err("the check did not finish".to_string()))
    }
}

/// Passes when a TCP connection to `addr` is established within `timeout`;
/// the connection is closed at once.
async fn tcp(addr: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(format!("tcp {addr}: {e}")),
        Err(_) => Err(format!(
            "tcp {addr}: no connection within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// Passes when `GET url` answers a 2xx status within `timeout`.
async fn http(url: &str, timeout: Duration) -> Result<(), String> {
    let headers = BTreeMap::new();
    let request = client::Request {
        method: "GET",
        url,
        headers: &headers,
        body: None,
        timeout,
    };
    // The reason reaches `/readyz` and the log: no userinfo, no query.
    let url = redact_url(url);
    // The client bounds itself by `timeout` too; this outer bound keeps the
    // probe's promise even if it did not.
    match tokio::time::timeout(timeout, client::send(&request)).await {
        Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(format!("GET {url}: status {status}")),
        Ok(Err(e)) => Err(format!("GET {url}: {e}")),
        Err(_) => Err(format!(
            "GET {url}: no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration as ConfigDuration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket};

    fn tcp_check(addr: String, timeout: Duration) -> Check {
        Check {
            http: None,
            tcp: Some(addr),
            timeout: ConfigDuration(timeout),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_run_and_a_later_caller_starts_another() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let flight = Arc::new(SingleFlight::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let check = tcp_check("127.0.0.1:1".to_string(), Duration::from_millis(800));
        let slow_run = |runs: Arc<AtomicUsize>| {
            move |_check: Check| async move {
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                Err(format!("run {n}"))
            }
        };
        let started = tokio::time::Instant::now();
        let mut callers = Vec::new();
        for i in 0..50u64 {
            let (flight, runs, check) = (Arc::clone(&flight), Arc::clone(&runs), check.clone());
            callers.push(tokio::spawn(async move {
                // Spread over the first run's 500ms.
                tokio::time::sleep(Duration::from_millis(i * 9)).await;
                flight.run_with(&check, slow_run(runs)).await
            }));
        }
        for caller in callers {
            assert_eq!(caller.await.unwrap(), Err("run 1".to_string()));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one run for 50 callers");
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        // After it finished, the next caller gets a fresh run, not a cache.
        let fresh = flight.run_with(&check, slow_run(Arc::clone(&runs))).await;
        assert_eq!(fresh, Err("run 2".to_string()));
        // A different check (a reload) does not join the run under way.
        let other = tcp_check("127.0.0.1:2".to_string(), Duration::from_millis(800));
        let (a, b) = tokio::join!(
            flight.run_with(&check, slow_run(Arc::clone(&runs))),
            flight.run_with(&other, slow_run(Arc::clone(&runs))),
        );
        assert_eq!((a, b), (Err("run 3".to_string()), Err("run 4".to_string())));
    }

    #[tokio::test(start_paused = true)]
    async fn the_run_finishes_for_the_others_when_its_starter_is_gone() {
        use std::sync::Arc;
        let flight = Arc::new(SingleFlight::default());
        let check = tcp_check("127.0.0.1:1".to_string(), Duration::from_millis(800));
        let slow = |_check: Check| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(())
        };
        let starter = {
            let (flight, check) = (Arc::clone(&flight), check.clone());
            tokio::spawn(async move { flight.run_with(&check, slow).await })
        };
        tokio::task::yield_now().await;
        let follower = {
            let (flight, check) = (Arc::clone(&flight), check.clone());
            tokio::spawn(async move {
                flight
                    .run_with(&check, |_| async { Err("a second run".to_string()) })
                    .await
            })
        };
        tokio::task::yield_now().await;
        starter.abort();
        assert_eq!(follower.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn tcp_passes_when_something_listens() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let check = tcp_check(addr.to_string(), Duration::from_secs(5));
        assert_eq!(run(&check).await, Ok(()));
    }

    #[tokio::test]
    async fn tcp_fails_when_nothing_listens() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let check = tcp_check(addr.to_string(), Duration::from_secs(5));
        let err = run(&check).await.unwrap_err();
        assert!(err.starts_with(&format!("tcp {addr}: ")), "{err}");
        assert!(!err.contains("within"), "refused, not timed out: {err}");
    }

    #[tokio::test]
    async fn tcp_fails_at_its_timeout_when_the_app_does_not_accept() {
        // A listener whose accept queue is full drops new SYNs (Linux), so
        // the connect hangs: exactly an app that is stuck.
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..2 {
            // Each filler connects (completes or hangs; either fills the queue).
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await
            {
                fillers.push(s);
            }
        }
        let check = tcp_check(addr.to_string(), Duration::from_millis(300));
        let started = std::time::Instant::now();
        let err = run(&check).await.unwrap_err();
        assert!(err.contains("no connection within 300ms"), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    #[tokio::test]
    async fn tcp_reports_a_bad_address() {
        let check = tcp_check("no-port-here".to_string(), Duration::from_secs(5));
        let err = run(&check).await.unwrap_err();
        assert!(err.starts_with("tcp no-port-here: "), "{err}");
    }

    /// A one-request HTTP server answering `status`.
    async fn http_server(status: u16) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = vec![0; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        addr
    }

    fn http_check(url: String) -> Check {
        Check {
            http: Some(url),
            tcp: None,
            timeout: ConfigDuration(Duration::from_secs(5)),
        }
    }

    #[tokio::test]
    async fn http_passes_on_2xx() {
        let addr = http_server(204).await;
        assert_eq!(
            run(&http_check(format!("http://{addr}/ready"))).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn http_fails_on_503() {
        let addr = http_server(503).await;
        let url = format!("http://{addr}/ready");
        let err = run(&http_check(url.clone())).await.unwrap_err();
        assert_eq!(err, format!("GET {url}: status 503"));
    }

    #[tokio::test]
    async fn http_fails_when_nothing_listens() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = format!("http://{addr}/ready");
        let err = run(&http_check(url.clone())).await.unwrap_err();
        assert!(err.starts_with(&format!("GET {url}: ")), "{err}");
    }
}

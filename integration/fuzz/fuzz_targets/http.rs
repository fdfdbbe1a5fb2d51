//! The lifecycle HTTP server, in process over loopback: each input is sent
//! as the bytes of one connection (then the write side is closed), and the
//! answers are checked. The server has a token, so no input can start the
//! drain; the app is "alive" and poststart done, so every endpoint answers
//! 200 or a refusal. Every 64 inputs `/healthz` must still answer 200.
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use drainit::config::{self, Config};
use drainit::lifecycle::state::{ListState, Metrics, Phase, Shared, Status};
use libfuzzer_sys::fuzz_target;
use tokio::sync::{mpsc, watch};

/// Starts the real `server::serve` once, on its own thread and runtime.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let mut config = Config::default();
        config.http.token = Some("fuzz-token".into());
        config.http.header_timeout = config::Duration(Duration::from_millis(500));
        let listener = drainit::http::server::bind("127.0.0.1:0".parse().expect("an address"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("the bound address");
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let mut status = Status::new();
                status.state = Phase::Running;
                status.app_pid = Some(1);
                status.app_alive = true;
                status.poststart = ListState::Done {
                    ok: true,
                    steps: Vec::new(),
                };
                let (_status_tx, status_rx) = watch::channel(status);
                let (_config_tx, config_rx) = watch::channel(Arc::new(config));
                let (requests_tx, _requests_rx) = mpsc::unbounded_channel();
                let shared = Arc::new(Shared {
                    status: status_rx,
                    config: config_rx,
                    requests: requests_tx,
                    metrics: Arc::new(Metrics::default()),
                });
                drainit::http::server::serve(listener, shared, std::future::pending()).await;
            });
        });
        addr
    })
}

/// Sends `bytes` on a fresh connection, closes the write side, and returns
/// everything the server sent until it closed.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    // The server may refuse and close before it read everything.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server neither answered nor closed: {e}"),
    }
    received
}

fuzz_target!(|data: &[u8]| {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let addr = server();
    let received = exchange(addr, data);
    drainit_fuzz::check_exchange(data, &received);
    if RUNS.fetch_add(1, Ordering::Relaxed).is_multiple_of(64) {
        let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let answers = drainit_fuzz::answers(&answer);
        assert_eq!(answers.first().map(|a| a.status), Some(200), "{answers:?}");
    }
});

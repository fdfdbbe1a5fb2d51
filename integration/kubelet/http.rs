//! A hand-written HTTP/1.1 client, just enough to play the kubelet.
//!
//! The kubelet's hook client (`pkg/kubelet/lifecycle/handlers.go`) sends a
//! GET with the pod's `httpHeaders`, `User-Agent: kube-lifecycle/<ver>`,
//! may keep the connection alive, and has no timeout. Its prober
//! (`pkg/probe/http/http.go`) sends `User-Agent: kube-probe/<ver>`, disables
//! keep-alive and gives up after the probe's timeout (1s by default). Both
//! are built from [`request`], which owns one connection for one exchange
//! and reads the body by `Content-Length`, chunked encoding, or until EOF.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The Kubernetes version the emulator claims to be.
pub const KUBE_VERSION: &str = "1.31";

/// One HTTP response, body read in full.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// A request to make against `127.0.0.1:port` (or any address).
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub addr: SocketAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(String, String)>,
    /// Overall deadline for connect, send and receive; `None` waits forever
    /// (the kubelet's hook calls).
    pub timeout: Option<Duration>,
}

impl<'a> Request<'a> {
    pub fn new(port: u16, method: &'a str, path: &'a str) -> Request<'a> {
        Request {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            method,
            path,
            headers: Vec::new(),
            timeout: Some(Duration::from_secs(5)),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn send(&self) -> io::Result<Response> {
        request(self)
    }

    /// Sends and keeps the connection (see [`exchange`]).
    pub fn send_keep(&self) -> io::Result<(Response, TcpStream)> {
        exchange(self)
    }
}

/// Sends one request on a fresh connection and reads the whole response.
pub fn request(req: &Request<'_>) -> io::Result<Response> {
    exchange(req).map(|(response, _)| response)
}

/// Like [`request`], and hands back the connection, open, for a caller that
/// keeps it alive the way Go's transport pools idle connections.
pub fn exchange(req: &Request<'_>) -> io::Result<(Response, TcpStream)> {
    let deadline = req.timeout.map(|t| Instant::now() + t);
    let left = |deadline: Option<Instant>| -> io::Result<Option<Duration>> {
        match deadline {
            None => Ok(None),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
                } else {
                    Ok(Some(d - now))
                }
            }
        }
    };
    let stream = match left(deadline)? {
        Some(t) => TcpStream::connect_timeout(&req.addr, t)?,
        None => TcpStream::connect(req.addr)?,
    };
    stream.set_nodelay(true)?;
    let response = exchange_on(&stream, req, deadline)?;
    Ok((response, stream))
}

/// Sends `req` on an open connection (a reused keep-alive one) and reads
/// the response.
pub fn exchange_on(
    stream: &TcpStream,
    req: &Request<'_>,
    deadline: Option<Instant>,
) -> io::Result<Response> {
    let left = |deadline: Option<Instant>| -> io::Result<Option<Duration>> {
        match deadline {
            None => Ok(None),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
                } else {
                    Ok(Some(d - now))
                }
            }
        }
    };
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        req.method, req.path, req.addr
    );
    for (name, value) in &req.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if req.method != "GET" && req.method != "HEAD" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    stream.set_write_timeout(left(deadline)?)?;
    let mut writer = stream;
    writer.write_all(head.as_bytes())?;

    let mut reader = BufReader::new(Timed { stream, deadline });
    let mut line = String::new();
    read_line(&mut reader, &mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        read_line(&mut reader, &mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {l:?}")))?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if req.method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
        // No body.
    } else if let Some(len) = find("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad content-length {len:?}")))?;
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            read_line(&mut reader, &mut line)?;
            let size_text = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    line.clear();
                    read_line(&mut reader, &mut line)?;
                    if line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            line.clear();
            read_line(&mut reader, &mut line)?;
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    if !reader.buffer().is_empty() {
        return Err(bad("bytes after the response".to_string()));
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn read_line(reader: &mut impl BufRead, line: &mut String) -> io::Result<()> {
    if reader.read_line(line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response",
        ));
    }
    Ok(())
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A reader that applies what is left of the deadline to every read.
struct Timed<'s> {
    stream: &'s TcpStream,
    deadline: Option<Instant>,
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = match self.deadline {
            None => None,
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
                }
                Some(d - now)
            }
        };
        self.stream.set_read_timeout(left)?;
        let mut s = self.stream;
        s.read(buf)
    }
}

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

/// A plain request for the test's own use (status pages, metrics), with a
/// 5s timeout.
pub fn get(port: u16, path: &str) -> io::Result<Response> {
    Request::new(port, "GET", path)
        .header("Connection", "close")
        .send()
}

/// The server side of the tests' stand-in peers: reads from `conn` until
/// the end of a request head (a blank line), EOF or an error, and returns
/// what arrived.
pub fn read_request_head(conn: &mut impl Read) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

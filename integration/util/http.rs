//! The tests' HTTP/1.1 client, and the one response reader every client in
//! the tests uses.
//!
//! [`read_head`] reads a response head with `httparse`, consuming no byte
//! past it, so a keep-alive connection stays usable; [`read_body`] reads
//! the body by `Content-Length`, chunked encoding, or until EOF, and
//! [`read_response`] does both. [`Request`] owns one connection for one
//! exchange (or hands it back open, as a pooling client keeps it); the
//! kubelet emulator's hook and probe clients are built on it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The most header lines a response may have.
const MAX_HEADERS: usize = 64;

/// A response's status line and headers.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

/// One HTTP response, body read in full.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The body ran to the end of the connection (no length, not chunked).
    pub to_eof: bool,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// The body parsed as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The server closes the connection after this response: it said so,
    /// or spoke HTTP/1.0 without a `Connection` header, or the body ran to
    /// EOF.
    pub fn closes(&self) -> bool {
        self.to_eof
            || match self.header("connection") {
                Some(v) => v.eq_ignore_ascii_case("close"),
                None => self.version == 0,
            }
    }
}

fn find<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads a response head from `r`, up to and including its blank line and
/// not a byte further.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Head> {
    let mut raw = Vec::new();
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                if raw.is_empty() {
                    "connection closed before the status line"
                } else {
                    "connection closed in the response head"
                },
            ));
        }
        let (seen, arrived) = (raw.len(), buf.len());
        raw.extend_from_slice(buf);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        match head.parse(&raw) {
            Ok(httparse::Status::Complete(len)) => {
                let parsed = Head {
                    status: head.code.ok_or_else(|| bad("no status code".into()))?,
                    version: head.version.unwrap_or(1),
                    headers: head
                        .headers
                        .iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value).trim().to_string();
                            (h.name.to_string(), value)
                        })
                        .collect(),
                };
                r.consume(len - seen);
                return Ok(parsed);
            }
            Ok(httparse::Status::Partial) => r.consume(arrived),
            Err(e) => {
                return Err(bad(format!(
                    "bad response head ({e}): {:?}",
                    String::from_utf8_lossy(&raw)
                )))
            }
        }
    }
}

/// Reads the body that follows `head`: none for the answer to a HEAD
/// (`head_request`) or a 1xx, 204 or 304; else by `Content-Length`, chunked
/// encoding (trailers skipped), or until EOF. Returns the body and whether
/// it ran to EOF.
pub fn read_body(
    r: &mut impl BufRead,
    head: &Head,
    head_request: bool,
) -> io::Result<(Vec<u8>, bool)> {
    let status = head.status;
    let mut body = Vec::new();
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok((body, false));
    }
    if let Some(len) = head.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad content-length {len:?}")))?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
        return Ok((body, false));
    }
    if !head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        r.read_to_end(&mut body)?;
        return Ok((body, true));
    }
    let mut line = Vec::new();
    loop {
        read_line(r, &mut line)?;
        let size = match httparse::parse_chunk_size(&line) {
            Ok(httparse::Status::Complete((_, size))) => {
                usize::try_from(size).map_err(|_| bad(format!("chunk too big: {size}")))?
            }
            _ => {
                return Err(bad(format!(
                    "bad chunk size {:?}",
                    String::from_utf8_lossy(&line)
                )))
            }
        };
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                read_line(r, &mut line)?;
                if line.trim_ascii().is_empty() {
                    return Ok((body, false));
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        read_line(r, &mut line)?;
    }
}

/// Reads one whole response (see [`read_head`] and [`read_body`]).
pub fn read_response(r: &mut impl BufRead, head_request: bool) -> io::Result<Response> {
    let head = read_head(r)?;
    let (body, to_eof) = read_body(r, &head, head_request)?;
    Ok(Response {
        status: head.status,
        version: head.version,
        headers: head.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        to_eof,
    })
}

/// Reads one line, `\n` included, into `line` (cleared first).
fn read_line(r: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<()> {
    line.clear();
    if r.read_until(b'\n', line)? == 0 {
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
    let response = read_response(&mut reader, req.method == "HEAD")?;
    if !reader.buffer().is_empty() {
        return Err(bad("bytes after the response".to_string()));
    }
    Ok(response)
}

/// What is left until `deadline` (`None`: no deadline); an error once it
/// has passed.
fn left(deadline: Option<Instant>) -> io::Result<Option<Duration>> {
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
}

/// A reader that applies what is left of the deadline to every read.
struct Timed<'s> {
    stream: &'s TcpStream,
    deadline: Option<Instant>,
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(left(self.deadline)?)?;
        let mut s = self.stream;
        s.read(buf)
    }
}

/// A plain request for the test's own use (status pages, metrics), with a
/// 5s timeout.
pub fn get(port: u16, path: &str) -> io::Result<Response> {
    call(port, "GET", path)
}

/// `method path` on a fresh connection that closes after the answer, with a
/// 5s timeout.
pub fn call(port: u16, method: &str, path: &str) -> io::Result<Response> {
    Request::new(port, method, path)
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

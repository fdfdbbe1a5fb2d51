//! A small HTTP/1.1 client for steps and checks (http and https).
//!
//! Owns one request/response exchange with a deadline: connect (DNS through
//! the resolver), optional TLS (rustls with the Mozilla roots), send, read
//! the status line and discard the body. It never retries: callers do. The
//! connection lives exactly as long as the call: it is driven inside
//! [`send`] rather than in a spawned task, so a timed-out or cancelled call
//! leaves nothing behind.
//!
//! URL userinfo is sent as HTTP Basic auth (as curl does), never shown.
//! What a URL may be and show ([`parse_url`],
//! [`redact_url`](crate::config::url::redact_url)) is config's
//! rule ([`crate::config::url`]), so a URL that loads is one this client
//! can use.

use std::collections::BTreeMap;
#[cfg(feature = "https")]
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::rt::{Read, Write};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::url::{parse_url, InvalidUrl, Target};

/// One request to make.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a BTreeMap<String, String>,
    pub body: Option<&'a str>,
    pub timeout: Duration,
}

/// Why a request got no status. No variant holds a header value, a body,
/// URL userinfo or a query: these texts reach `/status` and the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL refused, redacted, and why.
    #[error(transparent)]
    Url(#[from] InvalidUrl),
    #[error("connect {0}: {1}")]
    Connect(String, String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("http: {0}")]
    Http(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Whether `status` is one of `expect`, or any 2xx when `expect` is empty
/// (the rule of `http`, `wait_http` and the probes' checks).
pub fn expected(status: u16, expect: &[u16]) -> bool {
    if expect.is_empty() {
        (200..300).contains(&status)
    } else {
        expect.contains(&status)
    }
}

/// The `Authorization: Basic ...` value for the userinfo of `url`, if it
/// has any: percent-decoded `user[:password]`, as curl sends it.
pub fn basic_auth(url: &str) -> Option<HeaderValue> {
    let uri: Uri = url.parse().ok()?;
    let authority = uri.authority()?.as_str();
    let (userinfo, _) = authority.rsplit_once('@')?;
    let mut value = b"Basic ".to_vec();
    value.extend(base64(&percent_decode(userinfo)).into_bytes());
    let mut value = HeaderValue::from_bytes(&value).ok()?;
    // Kept out of hyper's Debug output and of HPACK tables.
    value.set_sensitive(true);
    Some(value)
}

/// `%XX` decoded; anything else (a lone `%` too) kept as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Standard base64 with padding (RFC 4648), for Basic auth.
fn base64(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Sends `req` and returns the response status code.
///
/// The whole exchange — DNS, connect, TLS handshake, request, status line —
/// is bounded by `req.timeout`. The body of the answer is not read.
pub async fn send(req: &Request<'_>) -> Result<u16, Error> {
    match tokio::time::timeout(req.timeout, exchange(req)).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(req.timeout)),
    }
}

async fn exchange(req: &Request<'_>) -> Result<u16, Error> {
    let target = parse_url(req.url)?;
    let request = build_request(req, &target)?;
    let addr = format!("{}:{}", target.host, target.port);
    let tcp = connect(&addr).await?;
    if target.tls {
        tls_roundtrip(tcp, &target, request).await
    } else {
        roundtrip(TokioIo::new(tcp), request).await
    }
}

/// The exchange over TLS: handshake (server name = the URL's host), then
/// the same round trip.
#[cfg(feature = "https")]
async fn tls_roundtrip(
    tcp: TcpStream,
    target: &Target,
    request: hyper::Request<Full<Bytes>>,
) -> Result<u16, Error> {
    let connector = tokio_rustls::TlsConnector::from(tls_config()?);
    let name = target
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name = rustls::pki_types::ServerName::try_from(name)
        .map_err(|e| Error::Tls(format!("server name {:?}: {e}", target.host)))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Tls(e.to_string()))?;
    roundtrip(TokioIo::new(tls), request).await
}

/// A build without the `https` feature refuses https URLs (config
/// validation already rejects them in steps; checks end up here).
#[cfg(not(feature = "https"))]
async fn tls_roundtrip(
    _tcp: TcpStream,
    _target: &Target,
    _request: hyper::Request<Full<Bytes>>,
) -> Result<u16, Error> {
    Err(Error::Tls(crate::config::url::NO_HTTPS.to_string()))
}

fn build_request(req: &Request<'_>, target: &Target) -> Result<hyper::Request<Full<Bytes>>, Error> {
    let method = hyper::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| Error::Http(format!("invalid method {:?}", req.method)))?;
    let body = req.body.unwrap_or("");
    let mut request = hyper::Request::new(Full::new(Bytes::from(body.to_string())));
    *request.method_mut() = method;
    *request.uri_mut() =
        target
            .path_and_query
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| {
                Error::Url(InvalidUrl::new(req.url, e.to_string()))
            })?;
    let headers = request.headers_mut();
    let host = HeaderValue::from_str(&target.authority)
        .map_err(|_| Error::Url(InvalidUrl::new(req.url, "invalid host")))?;
    headers.insert(hyper::header::HOST, host);
    // URL userinfo goes out as Basic auth, as curl sends it; an
    // Authorization header in the config wins (inserted below).
    if let Some(auth) = basic_auth(req.url) {
        headers.insert(hyper::header::AUTHORIZATION, auth);
    }
    headers.insert(
        hyper::header::USER_AGENT,
        HeaderValue::from_static(concat!("drainit/", env!("CARGO_PKG_VERSION"))),
    );
    headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    // The config's headers win over the defaults above (a virtual host, a
    // different User-Agent), except the body's length, which is ours.
    for (name, value) in req.headers {
        // Never the value in the error: it is often a token.
        let invalid = || Error::Http(format!("invalid header {name:?}"));
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let mut value = HeaderValue::from_str(value).map_err(|_| invalid())?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    // RFC 9110 8.6: send a length when the method gives content a meaning,
    // even an empty one (some servers answer 411 to a bare POST).
    let wants_length = matches!(
        *request.method(),
        hyper::Method::POST | hyper::Method::PUT | hyper::Method::PATCH
    );
    let headers = request.headers_mut();
    if req.body.is_some() || wants_length {
        headers.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    } else {
        headers.remove(hyper::header::CONTENT_LENGTH);
    }
    Ok(request)
}

async fn connect(addr: &str) -> Result<TcpStream, Error> {
    let fail = |e: &dyn std::fmt::Display| Error::Connect(addr.to_string(), e.to_string());
    let addrs = tokio::net::lookup_host(addr).await.map_err(|e| fail(&e))?;
    let mut last = None;
    for sa in addrs {
        match TcpStream::connect(sa).await {
            Ok(stream) => {
                // Requests are small; do not wait for more to coalesce.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => fail(&e),
        None => fail(&"no address found"),
    })
}

/// One request on a fresh connection; the connection is driven right here,
/// next to the response, and dropped with it.
async fn roundtrip<T>(io: T, request: hyper::Request<Full<Bytes>>) -> Result<u16, Error>
where
    T: Read + Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Error::Http(e.to_string()))?;
    let response = sender.send_request(request);
    tokio::pin!(conn, response);
    let response = tokio::select! {
        biased;
        r = &mut response => r,
        c = &mut conn => match c {
            Err(e) => return Err(Error::Http(e.to_string())),
            // The connection ended; the response (or the reason there is
            // none) is already in the channel.
            Ok(()) => response.await,
        },
    };
    let response = response.map_err(|e| Error::Http(e.to_string()))?;
    Ok(response.status().as_u16())
}

/// The TLS client config, built once: ring, TLS 1.2 and 1.3, Mozilla roots.
#[cfg(feature = "https")]
fn tls_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
            .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(Error::Tls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Answers every connection with `status` after reading the request
    /// head, and sends each request head it saw on the channel.
    async fn responder(status: u16) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    // Head, then as much body as Content-Length says.
                    loop {
                        let n = s.read(&mut chunk).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                            if buf.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    tx.send(String::from_utf8_lossy(&buf).to_string()).unwrap();
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
                    );
                    s.write_all(answer.as_bytes()).await.unwrap();
                });
            }
        });
        (format!("http://{addr}"), rx)
    }

    fn request<'a>(
        method: &'a str,
        url: &'a str,
        headers: &'a BTreeMap<String, String>,
    ) -> Request<'a> {
        Request {
            method,
            url,
            headers,
            body: None,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn basic_auth_is_curls() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        let value = basic_auth("http://Aladdin:open%20sesame@h/").unwrap();
        assert_eq!(value, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(value.is_sensitive());
        assert_eq!(basic_auth("http://u@h/").unwrap(), "Basic dQ==");
        assert!(basic_auth("http://h/x?u=a@b").is_none());
        assert_eq!(percent_decode("a%3Ab%zz%4"), b"a:b%zz%4");
    }

    #[tokio::test]
    async fn userinfo_is_sent_as_basic_auth_and_a_bad_header_is_not_shown() {
        let (base, mut seen) = responder(200).await;
        let url = base.replacen("http://", "http://admin:hunter2@", 1) + "/x?token=realkey";
        let headers = BTreeMap::new();
        assert_eq!(send(&request("GET", &url, &headers)).await.unwrap(), 200);
        let head = seen.recv().await.unwrap();
        assert!(
            head.starts_with("GET /x?token=realkey HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("authorization: basic ywrtaw46ahvudgvymg==\r\n"),
            "{head}"
        );
        assert!(!head.contains("admin:hunter2"), "{head}");
        // The config's own Authorization wins over userinfo.
        let mut headers = BTreeMap::new();
        headers.insert("Authorization".to_string(), "Bearer t".to_string());
        assert_eq!(send(&request("GET", &url, &headers)).await.unwrap(), 200);
        let head = seen.recv().await.unwrap().to_ascii_lowercase();
        assert!(head.contains("authorization: bearer t\r\n"), "{head}");
        assert!(!head.contains("basic"), "{head}");
        // A header value HTTP forbids: the error names the header only.
        let mut headers = BTreeMap::new();
        headers.insert("X-Token".to_string(), "Bearer s3cr3t\nX: y".to_string());
        let err = send(&request("GET", &base, &headers))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("X-Token") && !err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn expected_statuses() {
        assert!(expected(200, &[]));
        assert!(expected(204, &[]));
        assert!(!expected(302, &[]));
        assert!(!expected(503, &[]));
        assert!(expected(503, &[503]));
        assert!(!expected(200, &[503]));
    }

    #[tokio::test]
    async fn status_and_request_head() {
        let (base, mut seen) = responder(503).await;
        let url = format!("{base}/v1/deregister?id=x");
        let mut headers = BTreeMap::new();
        headers.insert("X-Token".to_string(), "abc".to_string());
        let mut req = request("PUT", &url, &headers);
        req.body = Some("{\"a\":1}");
        assert_eq!(send(&req).await.unwrap(), 503);
        let head = seen.recv().await.unwrap();
        let lower = head.to_ascii_lowercase();
        assert!(
            head.starts_with("PUT /v1/deregister?id=x HTTP/1.1\r\n"),
            "{head}"
        );
        let host = base.trim_start_matches("http://");
        assert!(lower.contains(&format!("host: {host}\r\n")), "{head}");
        assert!(lower.contains("x-token: abc\r\n"), "{head}");
        assert!(lower.contains("connection: close\r\n"), "{head}");
        assert!(lower.contains("content-length: 7\r\n"), "{head}");
        assert!(
            lower.contains(&format!(
                "user-agent: drainit/{}\r\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{head}"
        );
        assert!(head.ends_with("\r\n\r\n{\"a\":1}"), "{head}");
    }

    #[tokio::test]
    async fn get_without_body_has_no_length() {
        let (base, mut seen) = responder(204).await;
        let headers = BTreeMap::new();
        assert_eq!(send(&request("GET", &base, &headers)).await.unwrap(), 204);
        let head = seen.recv().await.unwrap();
        assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("content-length"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn put_without_body_says_length_zero() {
        let (base, mut seen) = responder(200).await;
        let headers = BTreeMap::new();
        assert_eq!(send(&request("PUT", &base, &headers)).await.unwrap(), 200);
        let head = seen.recv().await.unwrap();
        assert!(head.starts_with("PUT / HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("content-length: 0\r\n"),
            "{head}"
        );
        assert!(head.ends_with("\r\n\r\n"), "{head}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        // Accept and hold connections without ever answering.
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            loop {
                let (s, _) = listener.accept().await.unwrap();
                conns.push(s);
            }
        });
        let headers = BTreeMap::new();
        let mut req = request("GET", &url, &headers);
        req.timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let err = send(&req).await.unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        held.abort();
    }

    #[tokio::test]
    async fn refused_connection() {
        // Bind then drop to get a port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/");
        let headers = BTreeMap::new();
        let err = send(&request("GET", &url, &headers)).await.unwrap_err();
        assert!(matches!(err, Error::Connect(..)), "{err}");
    }

    #[tokio::test]
    async fn garbage_answer_is_an_http_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"SSH-2.0-OpenSSH\r\n").await.unwrap();
        });
        let headers = BTreeMap::new();
        let err = send(&request("GET", &url, &headers)).await.unwrap_err();
        assert!(matches!(err, Error::Http(_)), "{err}");
    }

    #[cfg(feature = "https")]
    #[tokio::test]
    async fn tls_handshake_against_plain_server_fails() {
        // A plain HTTP server that speaks first: its answer is no TLS record.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
        });
        let headers = BTreeMap::new();
        let err = send(&request("GET", &url, &headers)).await.unwrap_err();
        assert!(matches!(err, Error::Tls(_)), "{err}");
    }

    /// A self-signed end-entity certificate for 127.0.0.1 (P-256, valid
    /// 100 years) and its key, made with `openssl req -x509` for this test
    /// only (spawning openssl here would race the steps tests' reapers).
    #[cfg(feature = "https")]
    const TEST_CERT: &str = "\
-----BEGIN CERTIFICATE-----
MIIBjTCCATOgAwIBAgIUZd6KEoHDsXZM2KqpBejmUmXqKLEwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMzExMTIyNFoYDzIxMjYxMDMw
MTExMjI0WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAScOdLwVSuN8+sFWvnMa80lLZ7t6FnD3uzmwoHyq0dKGOtMtkrEG+hb
oNfc2p2m3j0WSQO3TzGFyrKFTNybAZJJo2EwXzAdBgNVHQ4EFgQU7LUfnSBIxavD
Y0HWANHKJeBuoAowHwYDVR0jBBgwFoAU7LUfnSBIxavDY0HWANHKJeBuoAowDwYD
VR0RBAgwBocEfwAAATAMBgNVHRMBAf8EAjAAMAoGCCqGSM49BAMCA0gAMEUCIQDv
vvGb2e/zksvXXZpU3U/UbOq5UoW7AE3CrT/uw0s7vQIgNqOAxyc0oEcbilMGincI
rZzSCfwI1Pf1WUl539566uw=
-----END CERTIFICATE-----
";
    #[cfg(feature = "https")]
    const TEST_KEY: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgrb47al2Er108KKLy
yc/bdyt0NTPNX6g4LXvDk+ovrRChRANCAAScOdLwVSuN8+sFWvnMa80lLZ7t6FnD
3uzmwoHyq0dKGOtMtkrEG+hboNfc2p2m3j0WSQO3TzGFyrKFTNybAZJJ
-----END PRIVATE KEY-----
";

    /// A TLS server with a self-signed certificate that answers 200: the
    /// client must refuse it, since only the Mozilla roots are trusted.
    #[cfg(feature = "https")]
    #[tokio::test]
    async fn tls_verifies_the_server_certificate() {
        use rustls::pki_types::pem::PemObject;
        let cert = rustls::pki_types::CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(TEST_KEY.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let mut buf = [0u8; 1024];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    let _ = tls.shutdown().await;
                }
            }
        });
        let headers = BTreeMap::new();
        let err = send(&request("GET", &url, &headers)).await.unwrap_err();
        assert!(matches!(err, Error::Tls(_)), "{err}");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    }

    #[cfg(feature = "https")]
    #[test]
    fn tls_config_builds() {
        let config = tls_config().unwrap();
        assert!(Arc::ptr_eq(&config, &tls_config().unwrap()));
    }
}

//! The pod's TCP socket table on one local port, read from the kernel's
//! `sock_diag` netlink interface, for the `wait_connections` and
//! `wait_quiet` steps.
//!
//! This module owns the one reader of that table: a dump request per
//! address family (`SOCK_DIAG_BY_FAMILY`, `inet_diag_req_v2`, see
//! `include/uapi/linux/inet_diag.h`), filtered in the kernel by local port
//! and TCP state, with `INET_DIAG_INFO` for each socket's `tcp_info` (what
//! `ss -ti` shows). It sees drainit's network namespace, which a container
//! shares with its app; nothing is installed in the image.
//!
//! It never blocks the runtime thread, whatever the size of the table: the
//! netlink socket is nonblocking and registered with tokio ([`AsyncFd`]),
//! each `recv` hands over at most [`CHUNK`] bytes (about a hundred sockets)
//! and the task yields after each one, so signal forwarding and probes run
//! between chunks. A blocking read, even bounded, would stall them for as
//! long as the kernel takes to walk a large table.
//!
//! IPv4-mapped connections on a dual-stack listener are AF_INET6 sockets,
//! so the two dumps never count one connection twice.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// `TCP_ESTABLISHED` (include/net/tcp_states.h).
pub const ESTABLISHED: u8 = 1;
/// `TCP_TIME_WAIT`.
pub const TIME_WAIT: u8 = 6;
/// `TCP_LISTEN`.
pub const LISTEN: u8 = 10;

/// The state mask of established connections only.
pub const STATES_ESTABLISHED: u32 = 1 << ESTABLISHED;
/// Every state of a connection (SYN_RECV to CLOSING, request sockets
/// included), not listeners.
pub const STATES_CONNECTIONS: u32 = 0x1ffe & !(1 << LISTEN);

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `INET_DIAG_INFO`: the attribute carrying `struct tcp_info`.
const INET_DIAG_INFO: u16 = 2;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDR: usize = 16;
/// `sizeof(struct inet_diag_req_v2)`.
const REQ_LEN: usize = 56;
/// `sizeof(struct inet_diag_msg)`.
const MSG_LEN: usize = 72;
/// Bytes handed over by one `recv`: the kernel fills it with whole
/// messages, about 350 bytes per socket with its `tcp_info`.
pub const CHUNK: usize = 32 * 1024;

/// What `tcp_info` says about one connection, as far as drainit needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    /// Milliseconds since the last data was sent (`tcpi_last_data_sent`).
    pub last_data_sent_ms: u32,
    /// Milliseconds since the last data was received
    /// (`tcpi_last_data_recv`); since the connection was set up if none.
    pub last_data_recv_ms: u32,
    /// `tcpi_bytes_acked`, if the kernel reports it (Linux 4.1 and later).
    pub bytes_acked: Option<u64>,
    /// `tcpi_bytes_received`, if the kernel reports it (Linux 4.1 and
    /// later).
    pub bytes_received: Option<u64>,
}

impl TcpInfo {
    /// Data came in after the last data went out: a request is waiting
    /// for its answer. Without `bytes_received` every connection that was
    /// sent nothing since its last data in counts, which errs on the side
    /// of waiting. The kernel's clock ticks every 1 to 4 ms: a receive in
    /// the same tick as the last send is not "after" here (the `wait_quiet`
    /// tracker looks at the byte counters for those).
    pub fn awaits_answer(&self) -> bool {
        self.bytes_received != Some(0) && self.last_data_recv_ms < self.last_data_sent_ms
    }
}

/// One socket on the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    /// The TCP state (`TCP_ESTABLISHED` = 1, ...).
    pub state: u8,
    pub local_port: u16,
    pub peer: IpAddr,
    pub peer_port: u16,
    /// The kernel's socket cookie: one connection's identity across dumps
    /// (a TIME_WAIT socket keeps the cookie of the connection it was).
    pub cookie: u64,
    /// `tcp_info`, for full sockets (not TIME_WAIT or request sockets).
    pub info: Option<TcpInfo>,
}

/// Counts the ESTABLISHED connections whose local port is `port`, over
/// IPv4 and IPv6. IPv6 missing from the kernel counts as none; IPv4 (or
/// `sock_diag` itself) missing is an error, since then nothing can be known.
pub async fn established_on_port(port: u16) -> io::Result<u32> {
    let conns = connections(port, STATES_ESTABLISHED, false).await?;
    Ok(u32::try_from(conns.len()).unwrap_or(u32::MAX))
}

/// The sockets in `states` (a mask of `1 << state`) whose local port is
/// `port`, IPv4 then IPv6, with their `tcp_info` when `info` is set.
pub async fn connections(port: u16, states: u32, info: bool) -> io::Result<Vec<Conn>> {
    let sock = DiagSocket::open()?;
    let mut out = Vec::new();
    sock.dump(libc::AF_INET as u8, port, states, info, 1, &mut out)
        .await?;
    match sock
        .dump(libc::AF_INET6 as u8, port, states, info, 2, &mut out)
        .await
    {
        Ok(()) => {}
        // No IPv6 in this kernel (no inet6 diag handler).
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EAFNOSUPPORT)) => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

/// A nonblocking `NETLINK_SOCK_DIAG` socket registered with the runtime.
struct DiagSocket {
    fd: AsyncFd<OwnedFd>,
}

impl DiagSocket {
    fn open() -> io::Result<DiagSocket> {
        // SAFETY: socket(2) with constant arguments; the fd is owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd nobody else owns; the OwnedFd keeps
        // it open, and the same fd, for as long as the AsyncFd lives.
        let fd = unsafe { AsyncFd::register(OwnedFd::from_raw_fd(raw))? };
        Ok(DiagSocket { fd })
    }

    /// One dump of `family`, its sockets appended to `out`.
    async fn dump(
        &self,
        family: u8,
        port: u16,
        states: u32,
        info: bool,
        seq: u32,
        out: &mut Vec<Conn>,
    ) -> io::Result<()> {
        let req = request(family, port, states, info, seq);
        self.send(&req).await?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = self.recv(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "sock_diag: the kernel closed the dump",
                ));
            }
            if parse_chunk(&buf[..n], seq, port, out)? {
                return Ok(());
            }
            // Let signal forwarding and probes run between chunks.
            tokio::task::yield_now().await;
        }
    }

    async fn send(&self, req: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_nl is "the kernel" (pid 0, no groups).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            let mut guard = self.fd.writable().await?;
            // SAFETY: `req` and `kernel` outlive the call; lengths match.
            let rc = unsafe {
                libc::sendto(
                    self.fd.get_ref().as_raw_fd(),
                    req.as_ptr().cast(),
                    req.len(),
                    0,
                    std::ptr::addr_of!(kernel).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if rc >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => guard.clear_ready(),
                io::ErrorKind::Interrupted => {}
                _ => return Err(e),
            }
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            // SAFETY: `buf` is valid for `buf.len()` bytes.
            let rc = unsafe {
                libc::recv(
                    self.fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                )
            };
            if let Ok(n) = usize::try_from(rc) {
                return Ok(n);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => guard.clear_ready(),
                io::ErrorKind::Interrupted => {}
                _ => return Err(e),
            }
        }
    }
}

/// The dump request: `nlmsghdr` + `inet_diag_req_v2` for TCP in `family`,
/// with `idiag_sport` set so that the kernel skips other ports itself.
fn request(family: u8, port: u16, states: u32, info: bool, seq: u32) -> Vec<u8> {
    let len = NLMSG_HDR + REQ_LEN;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // inet_diag_req_v2
    b.push(family);
    b.push(libc::IPPROTO_TCP as u8);
    b.push(if info { 1 << (INET_DIAG_INFO - 1) } else { 0 });
    b.push(0);
    b.extend_from_slice(&states.to_ne_bytes());
    // inet_diag_sockid: sport (big endian), then zeros.
    b.extend_from_slice(&port.to_be_bytes());
    b.resize(len, 0);
    b
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("sock_diag: malformed answer ({what})"),
    )
}

/// Parses one `recv`'s worth of netlink messages of dump `seq`, appending
/// the sockets on `port`. Returns whether the dump is done (`NLMSG_DONE`);
/// an `NLMSG_ERROR` becomes the error it carries.
pub fn parse_chunk(buf: &[u8], seq: u32, port: u16, out: &mut Vec<Conn>) -> io::Result<bool> {
    let mut at = 0;
    while at + NLMSG_HDR <= buf.len() {
        let len = u32_at(buf, at) as usize;
        if len < NLMSG_HDR || at + len > buf.len() {
            return Err(bad("message length"));
        }
        let kind = u16_at(buf, at + 4);
        let msg_seq = u32_at(buf, at + 8);
        let body = &buf[at + NLMSG_HDR..at + len];
        // NLMSG_ALIGN
        at += (len + 3) & !3;
        if msg_seq != seq {
            // A late answer to an earlier request on this socket.
            continue;
        }
        match i32::from(kind) {
            libc::NLMSG_DONE => return Ok(true),
            libc::NLMSG_ERROR => {
                if body.len() < 4 {
                    return Err(bad("error message"));
                }
                let code = u32_at(body, 0) as i32;
                if code == 0 {
                    return Ok(true);
                }
                // A negative errno; anything else is not one.
                return Err(io::Error::from_raw_os_error(
                    code.checked_neg().filter(|e| *e > 0).unwrap_or(libc::EIO),
                ));
            }
            _ if kind == SOCK_DIAG_BY_FAMILY => {
                if let Some(conn) = parse_socket(body)? {
                    if conn.local_port == port {
                        out.push(conn);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// One `inet_diag_msg` and its attributes.
fn parse_socket(body: &[u8]) -> io::Result<Option<Conn>> {
    if body.len() < MSG_LEN {
        return Err(bad("socket message"));
    }
    let family = i32::from(body[0]);
    let state = body[1];
    // inet_diag_sockid at 4: sport, dport (big endian), src[16], dst[16],
    // if, cookie[2].
    let local_port = u16::from_be_bytes([body[4], body[5]]);
    let peer_port = u16::from_be_bytes([body[6], body[7]]);
    let dst = &body[24..40];
    let peer = match family {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3])),
        libc::AF_INET6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(dst);
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return Ok(None),
    };
    let cookie = u64::from(u32_at(body, 44)) | (u64::from(u32_at(body, 48)) << 32);
    let mut info = None;
    let mut at = MSG_LEN;
    while at + 4 <= body.len() {
        let len = usize::from(u16_at(body, at));
        let kind = u16_at(body, at + 2);
        if len < 4 || at + len > body.len() {
            return Err(bad("attribute length"));
        }
        if kind == INET_DIAG_INFO {
            info = parse_info(&body[at + 4..at + len]);
        }
        at += (len + 3) & !3;
    }
    Ok(Some(Conn {
        state,
        local_port,
        peer,
        peer_port,
        cookie,
        info,
    }))
}

/// The fields of `struct tcp_info` drainit reads (offsets from
/// include/uapi/linux/tcp.h); older kernels send a shorter struct.
fn parse_info(b: &[u8]) -> Option<TcpInfo> {
    if b.len() < 56 {
        return None;
    }
    Some(TcpInfo {
        last_data_sent_ms: u32_at(b, 44),
        last_data_recv_ms: u32_at(b, 52),
        bytes_acked: (b.len() >= 128).then(|| u64_at(b, 120)),
        bytes_received: (b.len() >= 136).then(|| u64_at(b, 128)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    /// A netlink message of `kind` and `seq` around `body`.
    fn nlmsg(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDR + body.len();
        let mut b = Vec::new();
        b.extend_from_slice(&(len as u32).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&2u16.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(body);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    /// An `inet_diag_msg` for 127.0.0.1:`sport` <- 10.0.0.5:`dport`, with
    /// a `tcp_info` of `info_len` bytes if not 0.
    fn diag(state: u8, sport: u16, dport: u16, cookie: u64, info_len: usize) -> Vec<u8> {
        let mut b = vec![libc::AF_INET as u8, state, 0, 0];
        b.extend_from_slice(&sport.to_be_bytes());
        b.extend_from_slice(&dport.to_be_bytes());
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[10, 0, 0, 5]);
        b.extend_from_slice(&src);
        b.extend_from_slice(&dst);
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&(cookie as u32).to_ne_bytes());
        b.extend_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
        b.resize(MSG_LEN, 0);
        if info_len > 0 {
            let mut info = vec![0u8; info_len];
            info[44..48].copy_from_slice(&300u32.to_ne_bytes());
            info[52..56].copy_from_slice(&200u32.to_ne_bytes());
            if info_len >= 136 {
                info[120..128].copy_from_slice(&7u64.to_ne_bytes());
                info[128..136].copy_from_slice(&(1u64 << 40).to_ne_bytes());
            }
            b.extend_from_slice(&((info_len + 4) as u16).to_ne_bytes());
            b.extend_from_slice(&INET_DIAG_INFO.to_ne_bytes());
            b.extend_from_slice(&info);
            while b.len() % 4 != 0 {
                b.push(0);
            }
        }
        b
    }

    #[test]
    fn request_layout() {
        let r = request(libc::AF_INET6 as u8, 8080, STATES_ESTABLISHED, true, 9);
        assert_eq!(r.len(), 72);
        assert_eq!(u32_at(&r, 0), 72);
        assert_eq!(u16_at(&r, 4), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u32_at(&r, 8), 9);
        assert_eq!(&r[16..20], &[libc::AF_INET6 as u8, 6, 2, 0]);
        assert_eq!(u32_at(&r, 20), 2);
        assert_eq!(&r[24..26], &[0x1f, 0x90]);
        assert!(r[26..].iter().all(|&b| b == 0));
    }

    #[test]
    fn parses_sockets_info_and_done() {
        let mut buf = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &diag(1, 8080, 50000, 42, 232));
        // Another port (a kernel ignoring the filter), an old short
        // tcp_info, a TIME_WAIT without one, a stray sequence number.
        buf.extend(nlmsg(SOCK_DIAG_BY_FAMILY, 1, &diag(1, 80, 50001, 43, 232)));
        buf.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            1,
            &diag(1, 8080, 50002, 44, 104),
        ));
        buf.extend(nlmsg(SOCK_DIAG_BY_FAMILY, 1, &diag(6, 8080, 50003, 45, 0)));
        buf.extend(nlmsg(SOCK_DIAG_BY_FAMILY, 7, &diag(1, 8080, 50004, 46, 0)));
        let mut out = Vec::new();
        assert!(!parse_chunk(&buf, 1, 8080, &mut out).unwrap());
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].peer, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!((out[0].peer_port, out[0].cookie), (50000, 42));
        assert_eq!(
            out[0].info,
            Some(TcpInfo {
                last_data_sent_ms: 300,
                last_data_recv_ms: 200,
                bytes_acked: Some(7),
                bytes_received: Some(1 << 40),
            })
        );
        assert!(out[0].info.unwrap().awaits_answer());
        assert_eq!(out[1].info.unwrap().bytes_received, None);
        assert_eq!((out[2].state, out[2].info), (TIME_WAIT, None));
        let done = nlmsg(libc::NLMSG_DONE as u16, 1, &0u32.to_ne_bytes());
        assert!(parse_chunk(&done, 1, 8080, &mut out).unwrap());
    }

    #[test]
    fn errors_and_garbage() {
        let err = nlmsg(libc::NLMSG_ERROR as u16, 1, &(-libc::ENOENT).to_ne_bytes());
        let e = parse_chunk(&err, 1, 8080, &mut Vec::new()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let odd = nlmsg(libc::NLMSG_ERROR as u16, 1, &i32::MIN.to_ne_bytes());
        let e = parse_chunk(&odd, 1, 8080, &mut Vec::new()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        let mut cut = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &diag(1, 8080, 1, 1, 232));
        cut.truncate(100);
        assert!(parse_chunk(&cut, 1, 8080, &mut Vec::new()).is_err());
        let short = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &[0u8; 10]);
        assert!(parse_chunk(&short, 1, 8080, &mut Vec::new()).is_err());
        assert!(!parse_chunk(&[1, 2, 3], 1, 8080, &mut Vec::new()).unwrap());
    }

    #[test]
    fn awaits_answer() {
        let info = |sent, recv, bytes| TcpInfo {
            last_data_sent_ms: sent,
            last_data_recv_ms: recv,
            bytes_acked: None,
            bytes_received: bytes,
        };
        assert!(info(100, 5, Some(10)).awaits_answer());
        assert!(!info(5, 100, Some(10)).awaits_answer());
        assert!(!info(5, 5, Some(10)).awaits_answer());
        assert!(!info(100, 5, Some(0)).awaits_answer());
        assert!(info(100, 5, None).awaits_answer());
    }

    #[tokio::test]
    async fn a_table_larger_than_one_chunk() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut held = Vec::new();
        for _ in 0..400 {
            let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            held.push((c, listener.accept().unwrap().0));
        }
        // 400 sockets with tcp_info are several chunks.
        assert_eq!(established_on_port(port).await.unwrap(), 400);
        let conns = connections(port, STATES_CONNECTIONS, true).await.unwrap();
        assert_eq!(conns.len(), 400);
        let mut cookies: Vec<u64> = conns.iter().map(|c| c.cookie).collect();
        cookies.sort_unstable();
        cookies.dedup();
        assert_eq!(cookies.len(), 400);
    }

    #[tokio::test]
    async fn live_connections_v4_and_v6() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(established_on_port(port).await.unwrap(), 0);
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(established_on_port(port).await.unwrap(), 1);

        // A request waits for its answer until the server writes.
        client.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).unwrap();
        // The kernel's clocks tick in milliseconds: let one pass so the
        // receive is strictly later than the connection's set-up.
        std::thread::sleep(Duration::from_millis(5));
        let conns = connections(port, STATES_CONNECTIONS, true).await.unwrap();
        assert_eq!(conns.len(), 1, "{conns:?}");
        let info = conns[0].info.unwrap();
        assert_eq!(info.bytes_received, Some(4));
        // Received after the set-up (whose time the send clock starts at),
        // or in the same tick of the kernel's clock; nothing sent yet.
        assert!(info.last_data_recv_ms <= info.last_data_sent_ms, "{info:?}");
        assert_eq!(info.bytes_acked, Some(0));
        assert_eq!(conns[0].peer, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(conns[0].peer_port, client.local_addr().unwrap().port());
        std::thread::sleep(Duration::from_millis(5));
        server.write_all(b"pong").unwrap();
        let conns = connections(port, STATES_CONNECTIONS, true).await.unwrap();
        assert!(!conns[0].info.unwrap().awaits_answer(), "{conns:?}");

        // IPv6 counts too, if this host has it.
        if let Ok(l6) = std::net::TcpListener::bind("[::1]:0") {
            let p6 = l6.local_addr().unwrap().port();
            let _c6 = std::net::TcpStream::connect(("::1", p6)).unwrap();
            let _s6 = l6.accept().unwrap();
            assert_eq!(established_on_port(p6).await.unwrap(), 1);
        }

        // A closed connection no longer counts.
        drop(client);
        drop(server);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while established_on_port(port).await.unwrap() != 0 {
            assert!(std::time::Instant::now() < deadline, "still established");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

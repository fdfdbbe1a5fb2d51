//! Counting established TCP connections on a local port, for the
//! `wait_connections` step.
//!
//! Reads the kernel's socket tables `/proc/net/tcp` and `/proc/net/tcp6`
//! (see proc(5)) of drainit's network namespace, which a container shares
//! with its app. It only reads: no netlink, no `ss`, nothing to install in
//! the image. IPv4-mapped connections on a dual-stack listener appear in
//! `tcp6`, so the two tables never count one connection twice.

use std::io;
use std::path::Path;

/// The `st` column value of an established connection (`TCP_ESTABLISHED`).
const ESTABLISHED: &str = "01";

/// Counts the ESTABLISHED connections whose local port is `port`, over
/// IPv4 and IPv6. A missing `tcp6` (IPv6 disabled in the kernel) counts as
/// none; a missing `tcp` is an error, since then nothing can be known.
pub fn established_on_port(port: u16) -> io::Result<u32> {
    established_on_port_in(Path::new("/proc/net"), port)
}

/// [`established_on_port`] over the `tcp` and `tcp6` files in `dir`.
pub fn established_on_port_in(dir: &Path, port: u16) -> io::Result<u32> {
    let v4 = std::fs::read_to_string(dir.join("tcp"))?;
    let v6 = match std::fs::read_to_string(dir.join("tcp6")) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    Ok(count_established(&v4, port) + count_established(&v6, port))
}

/// Counts the ESTABLISHED entries with local port `port` in the text of one
/// `/proc/net/tcp`-style table. The header line and malformed lines are
/// skipped.
pub fn count_established(table: &str, port: u16) -> u32 {
    let mut count = 0;
    for line in table.lines() {
        let mut fields = line.split_whitespace();
        // sl, local_address, rem_address, st
        let (Some(_), Some(local), Some(_), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if state != ESTABLISHED {
            continue;
        }
        // The address is hex in the kernel's byte order, the port is hex
        // in host order as printed: `0100007F:1F90` is 127.0.0.1:8080.
        let local_port = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        if local_port == Some(port) {
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a Linux 6.1 host: a listener on :8080 (0A), two
    // established connections to it (one from 127.0.0.1, one from
    // 10.0.0.5), the client end of the loopback one (local port 0xD8F8,
    // remote 8080), a TIME_WAIT (06) on 8080, and an established
    // connection on another port.
    const TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1182 1 00000000b70a08fd 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D8F8 01 00000000:00000000 00:00000000 00000000     0        0 23001 1 000000001e9fcfc4 20 4 30 10 -1
   2: 0100007F:D8F8 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 23000 1 000000003a1b2c3d 20 4 30 10 -1
   3: 0A00000F:1F90 0500000A:C350 01 00000000:00000000 02:000AFC7E 00000000  1000        0 23100 2 0000000011223344 20 4 1 10 -1
   4: 0100007F:1F90 0100007F:D900 06 00000000:00000000 03:00001310 00000000     0        0 0 3 000000001e9fcfc4
   5: 0100007F:0050 0100007F:E000 01 00000000:00000000 00:00000000 00000000     0        0 23200 1 0000000055667788 20 4 30 10 -1
";

    // An IPv6 listener on :8080, a ::1 connection to it, and an IPv4-mapped
    // one (::ffff:10.0.0.5) that a dual-stack listener accepted.
    const TCP6: &str = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3001 1 00000000aabbccdd 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 3002 1 00000000aabbccee 20 4 30 10 -1
   2: 0000000000000000FFFF00000F00000A:1F90 0000000000000000FFFF00000500000A:C351 01 00000000:00000000 00:00000000 00000000     0        0 3003 1 00000000aabbccff 20 4 30 10 -1
";

    #[test]
    fn ipv4_counts_established_on_local_port_only() {
        assert_eq!(count_established(TCP, 8080), 2);
        // The client end of a loopback connection counts for its own port.
        assert_eq!(count_established(TCP, 0xD8F8), 1);
        assert_eq!(count_established(TCP, 80), 1);
        assert_eq!(count_established(TCP, 9090), 0);
    }

    #[test]
    fn ipv6_and_mapped() {
        assert_eq!(count_established(TCP6, 8080), 2);
        // A remote port is not a local one.
        assert_eq!(count_established(TCP6, 0xA1B2), 0);
    }

    #[test]
    fn header_only_empty_and_garbage() {
        assert_eq!(count_established("", 8080), 0);
        assert_eq!(count_established(TCP.lines().next().unwrap(), 8080), 0);
        assert_eq!(
            count_established("   0: nonsense\n   1: 0100007F:ZZZZ 0:0 01\n", 8080),
            0
        );
    }

    #[test]
    fn directory_with_and_without_tcp6() {
        let dir = tempfile::tempdir().unwrap();
        assert!(established_on_port_in(dir.path(), 8080).is_err());
        std::fs::write(dir.path().join("tcp"), TCP).unwrap();
        assert_eq!(established_on_port_in(dir.path(), 8080).unwrap(), 2);
        std::fs::write(dir.path().join("tcp6"), TCP6).unwrap();
        assert_eq!(established_on_port_in(dir.path(), 8080).unwrap(), 4);
    }

    #[test]
    fn live_connection_is_seen() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(established_on_port(port).unwrap(), 0);
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(established_on_port(port).unwrap(), 1);
        drop(client);
        drop(server);
        // Loopback FIN handling is synchronous in practice; the loop is a
        // safety net, not a wait.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while established_on_port(port).unwrap() != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "connection still established"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

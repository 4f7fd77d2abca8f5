//! Which user owns a socket on this host, from the kernel's socket tables (`/proc/net/tcp`,
//! `tcp6`, `udp`, `udp6`). The SOCKS5 UDP relay uses it to tell a client's own datagrams from
//! another local user's on loopback, where the source address alone says nothing about who
//! sent them.
//!
//! The tables describe the network namespace of the reading process, which is the one the
//! proxy's loopback clients are in. Each line gives a socket's local and remote address, its
//! state and its owner's uid. An address is hex: the port as a number, the IP as 32-bit words
//! (one for IPv4, four for IPv6), each printed as a number in host byte order, so the bytes of
//! each word in memory order are the address bytes in network order.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why no single owner was found.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: &'static str,
        source: io::Error,
    },
    #[error("no socket matches {0}")]
    NotFound(SocketAddr),
    #[error("sockets of more than one user match {0}")]
    Ambiguous(SocketAddr),
}

/// The state column of an established TCP connection.
const TCP_ESTABLISHED: u8 = 0x01;

/// One line of a socket table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    local: SocketAddr,
    remote: SocketAddr,
    state: u8,
    uid: u32,
}

/// The owner of the established TCP socket whose own address is `local` and whose peer is
/// `remote`: the client's end of a connection the proxy accepted, seen from the proxy as
/// (peer, local address).
pub async fn tcp_owner(local: SocketAddr, remote: SocketAddr) -> Result<u32, OwnerError> {
    let (local, remote) = (canonical(local), canonical(remote));
    let tables = [read("/proc/net/tcp").await?, read("/proc/net/tcp6").await?];
    owner(&tables, local, |e| {
        e.state == TCP_ESTABLISHED && e.local == local && e.remote == remote
    })
}

/// The owner of every UDP socket that could have sent a datagram from `from`: bound to that
/// address or to the wildcard address on its port. More than one user among them is an
/// error, so a second socket on the same port can never lend its owner to the other's
/// datagrams.
pub async fn udp_owner(from: SocketAddr) -> Result<u32, OwnerError> {
    let from = canonical(from);
    let tables = [read("/proc/net/udp").await?, read("/proc/net/udp6").await?];
    owner(&tables, from, |e| {
        e.local.port() == from.port() && may_send_from(e.local.ip(), from.ip())
    })
}

/// Whether a socket bound to `bound` can send from `from`.
fn may_send_from(bound: IpAddr, from: IpAddr) -> bool {
    bound == from
        || match bound {
            // `::` may be dual-stack: it can send IPv4 too.
            IpAddr::V6(b) => b.is_unspecified(),
            IpAddr::V4(b) => b.is_unspecified() && from.is_ipv4(),
        }
}

/// A table's text; a missing one (no IPv6 in this kernel) is empty.
async fn read(path: &'static str) -> Result<String, OwnerError> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(OwnerError::Read { path, source }),
    }
}

/// The one uid of every entry that `matches`.
fn owner(
    tables: &[String],
    addr: SocketAddr,
    matches: impl Fn(&Entry) -> bool,
) -> Result<u32, OwnerError> {
    let mut found = None;
    let entries = tables.iter().flat_map(|t| t.lines()).filter_map(parse_line);
    for entry in entries.filter(|e| matches(e)) {
        match found {
            None => found = Some(entry.uid),
            Some(uid) if uid == entry.uid => {}
            Some(_) => return Err(OwnerError::Ambiguous(addr)),
        }
    }
    found.ok_or(OwnerError::NotFound(addr))
}

/// `sl local rem st tx:rx tr:when retrnsmt uid …`; `None` for the header line.
fn parse_line(line: &str) -> Option<Entry> {
    let mut fields = line.split_ascii_whitespace();
    fields.next()?.strip_suffix(':')?;
    let local = parse_addr(fields.next()?)?;
    let remote = parse_addr(fields.next()?)?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    let uid = fields.nth(3)?.parse().ok()?;
    Some(Entry {
        local,
        remote,
        state,
        uid,
    })
}

/// `0100007F:0035`, or 32 hex digits before the colon for IPv6. IPv4-mapped addresses come
/// back as IPv4, as [`canonical`] makes them for comparison.
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    if !ip.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip.to_canonical(), port))
}

/// Eight hex digits: a word the kernel printed in host byte order, as its bytes in memory.
fn word(hex: &str) -> Option<[u8; 4]> {
    u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes)
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Lines copied from a little-endian machine, sockets of uid 65534: a UDP socket on
    /// 127.0.0.2:40001, UDP6 on [::1]:40002, [::]:40003 and [::ffff:127.0.0.1]:40004, the
    /// client end of a TCP connection 127.0.0.3:40008 → 127.0.0.1:40007, a TCP6 listener on
    /// [::1]:40005 and the client end of a connection to it; a TIME_WAIT line (no owner
    /// left: uid 0), and the headers.
    #[cfg(target_endian = "little")]
    #[test]
    fn parses_real_lines() {
        let entry = |local: &str, remote: &str, state: u8| Entry {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state,
            uid: 65534,
        };
        let (any4, any6) = ("0.0.0.0:0", "[::]:0");
        let time_wait = Entry {
            uid: 0,
            ..entry("127.0.0.1:59844", "127.0.0.1:39881", 0x06)
        };
        let cases = [
            (
                "1706: 0100007F:E9C4 0100007F:9BC9 06 00000000:00000000 03:0000025D 00000000     0        0 0 3 000000008a397ff4",
                Some(time_wait),
            ),
            (
                "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops",
                None,
            ),
            (
                "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
                None,
            ),
            (
                "12248: 0200007F:9C41 00000000:0000 07 00000000:00000000 00:00000000 00000000 65534        0 377798 2 00000000aa3a7354 0",
                Some(entry("127.0.0.2:40001", any4, 0x07)),
            ),
            (
                "12249: 00000000000000000000000001000000:9C42 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000 65534        0 377799 2 000000000b22e19a 0",
                Some(entry("[::1]:40002", any6, 0x07)),
            ),
            (
                "12250: 00000000000000000000000000000000:9C43 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000 65534        0 377800 2 000000003a603b0b 0",
                Some(entry("[::]:40003", any6, 0x07)),
            ),
            (
                "12251: 0000000000000000FFFF00000100007F:9C44 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000 65534        0 377801 2 00000000301c1b08 0",
                Some(entry("127.0.0.1:40004", any6, 0x07)),
            ),
            (
                " 927: 0300007F:9C48 0100007F:9C47 01 00000000:00000000 00:00000000 00000000 65534        0 377806 2 000000003861ba3f 20 0 0 10 -1",
                Some(entry("127.0.0.3:40008", "127.0.0.1:40007", 0x01)),
            ),
            (
                "   0: 00000000000000000000000001000000:9C45 00000000000000000000000000000000:0000 0A 00000000:00000001 00:00000000 00000000 65534        0 377803 2 0000000067d51fee 100 0 0 10 0",
                Some(entry("[::1]:40005", any6, 0x0A)),
            ),
            (
                "   2: 00000000000000000000000001000000:9C46 00000000000000000000000001000000:9C45 01 00000000:00000000 00:00000000 00000000 65534        0 377804 2 000000008b127737 20 0 0 10 -1",
                Some(entry("[::1]:40006", "[::1]:40005", 0x01)),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line), want, "{line}");
        }
        // Each IPv6 word is byte-swapped on its own: 2001:db8::1 as the kernel prints it.
        assert_eq!(
            parse_addr("B80D0120000000000000000001000000:01BB"),
            Some("[2001:db8::1]:443".parse().unwrap())
        );
    }

    #[test]
    fn rejects_malformed_fields() {
        for field in [
            "",
            "0100007F",
            "0100007F:",
            "0100007F:10000",
            "100007F:0035",
            "+100007F:0035",
            "0100007G:0035",
            "0100007F0:0035",
            "ä100007F:0035",
            "000000000000000000000000010000é0:0035",
        ] {
            assert_eq!(parse_addr(field), None, "{field:?}");
        }
        assert_eq!(parse_line("0: 0100007F:0035 00000000:0000 07"), None);
    }

    #[test]
    fn one_owner_or_none() {
        let table = "\
            1: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000 0 1 2 0 0\n\
            2: 00000000:1F91 00000000:0000 07 00000000:00000000 00:00000000 00000000  1001 0 2 2 0 0\n\
            3: 0100007F:1F91 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000 0 3 2 0 0\n"
            .to_string();
        let from = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let udp = |addr: SocketAddr| {
            owner(std::slice::from_ref(&table), addr, |e| {
                e.local.port() == addr.port() && may_send_from(e.local.ip(), addr.ip())
            })
        };
        assert_eq!(udp(from(8080)).unwrap(), 1000);
        // A wildcard socket of uid 1001 shares port 8081 with uid 1000's.
        assert!(matches!(udp(from(8081)), Err(OwnerError::Ambiguous(_))));
        assert!(matches!(udp(from(8082)), Err(OwnerError::NotFound(_))));
        assert!(may_send_from(
            "::".parse().unwrap(),
            "127.0.0.1".parse().unwrap()
        ));
        assert!(!may_send_from(
            "0.0.0.0".parse().unwrap(),
            "::1".parse().unwrap()
        ));
        assert!(!may_send_from(
            "127.0.0.2".parse().unwrap(),
            "127.0.0.1".parse().unwrap()
        ));
    }

    /// The byte order, checked against the live kernel: our own sockets, found by address.
    #[tokio::test]
    async fn finds_live_sockets_and_their_owner() {
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        for ip in ["127.0.0.2", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let udp = tokio::net::UdpSocket::bind((ip, 0)).await.unwrap();
            let addr = udp.local_addr().unwrap();
            assert_eq!(udp_owner(addr).await.unwrap(), me, "{addr}");

            let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
            let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (accepted, peer) = listener.accept().await.unwrap();
            let local = accepted.local_addr().unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            assert_eq!(tcp_owner(peer, local).await.unwrap(), me, "{peer}");
            let unused = SocketAddr::new(ip, 1);
            assert!(matches!(
                tcp_owner(unused, local).await,
                Err(OwnerError::NotFound(_))
            ));
        }
    }
}

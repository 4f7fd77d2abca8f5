//! RFC 1928 (and the RFC 1929 username/password sub-negotiation) on the wire: pure parsing
//! and encoding, no I/O, no allocation.
//!
//! Parsers take every byte received so far and answer `Incomplete` when they need more, so the
//! connection reads whatever the socket holds (often greeting and request together) instead of
//! one field per system call. Parsed addresses borrow the caller's buffer.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const VERSION: u8 = 0x05;
/// "NO AUTHENTICATION REQUIRED": the method offered without session credentials. The policy,
/// not a password, decides what a client may reach.
pub const METHOD_NO_AUTH: u8 = 0x00;
/// "USERNAME/PASSWORD" (RFC 1929): the only method offered with session credentials, which
/// keep other local users off one `run`'s listener.
pub const METHOD_USER_PASS: u8 = 0x02;
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;

/// VER of the RFC 1929 sub-negotiation (request and status).
pub const AUTH_VERSION: u8 = 0x01;
/// The status answering a username/password request: `0x00` succeeds, anything else fails
/// and the connection closes (RFC 1929).
pub const AUTH_SUCCEEDED: [u8; 2] = [AUTH_VERSION, 0x00];
pub const AUTH_FAILED: [u8; 2] = [AUTH_VERSION, 0x01];
/// The longest username/password request: VER ULEN UNAME(255) PLEN PASSWD(255).
pub const MAX_AUTH: usize = 1 + 1 + 255 + 1 + 255;

const ATYP_V4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_V6: u8 = 0x04;

/// The longest greeting: VER NMETHODS and 255 methods.
pub const MAX_GREETING: usize = 2 + 255;
/// The longest request: VER CMD RSV ATYP, a 255-octet name after its length octet, the port.
pub const MAX_REQUEST: usize = 4 + 1 + 255 + 2;
/// The longest UDP request header: RSV RSV FRAG ATYP, a 255-octet name with its length, port.
pub const MAX_UDP_HEADER: usize = 4 + 1 + 255 + 2;
/// RSV RSV FRAG: what precedes the address in a UDP header.
pub const UDP_PREFIX: usize = 3;

/// The client's opening message, once complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Greeting {
    /// Whether "no authentication" is among the offered methods.
    pub no_auth: bool,
    /// Whether "username/password" is among the offered methods.
    pub user_pass: bool,
    /// Octets the greeting occupied.
    pub len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GreetingError {
    #[error("incomplete greeting")]
    Incomplete,
    #[error("not SOCKS5 (version octet {0:#04x})")]
    Version(u8),
}

pub fn parse_greeting(buf: &[u8]) -> Result<Greeting, GreetingError> {
    let [version, count, ..] = *buf else {
        return match buf.first() {
            Some(&v) if v != VERSION => Err(GreetingError::Version(v)),
            _ => Err(GreetingError::Incomplete),
        };
    };
    if version != VERSION {
        return Err(GreetingError::Version(version));
    }
    let len = 2 + usize::from(count);
    let methods = buf.get(2..len).ok_or(GreetingError::Incomplete)?;
    Ok(Greeting {
        no_auth: methods.contains(&METHOD_NO_AUTH),
        user_pass: methods.contains(&METHOD_USER_PASS),
        len,
    })
}

/// An RFC 1929 username/password request, borrowing the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserPass<'a> {
    pub user: &'a [u8],
    pub password: &'a [u8],
    /// Octets the request occupied; the SOCKS5 request may follow.
    pub len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("incomplete username/password request")]
    Incomplete,
    #[error("not an RFC 1929 request (version octet {0:#04x})")]
    Version(u8),
}

/// Parses a username/password request. RFC 1929 gives ULEN and PLEN as 1 to 255; an empty
/// field is parsed all the same, so it is refused with the failure status like any other
/// wrong credentials rather than by cutting the connection.
pub fn parse_user_pass(buf: &[u8]) -> Result<UserPass<'_>, AuthError> {
    let Some((&version, rest)) = buf.split_first() else {
        return Err(AuthError::Incomplete);
    };
    if version != AUTH_VERSION {
        return Err(AuthError::Version(version));
    }
    let (user, rest) = length_prefixed(rest).ok_or(AuthError::Incomplete)?;
    let (password, _) = length_prefixed(rest).ok_or(AuthError::Incomplete)?;
    Ok(UserPass {
        user,
        password,
        len: 3 + user.len() + password.len(),
    })
}

/// A length octet and that many octets, and what follows them; `None` if incomplete.
fn length_prefixed(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&n, rest) = buf.split_first()?;
    let n = usize::from(n);
    Some((rest.get(..n)?, &rest[n..]))
}

/// CMD of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Connect,
    Bind,
    UdpAssociate,
    Other(u8),
}

impl From<u8> for Command {
    fn from(octet: u8) -> Self {
        match octet {
            0x01 => Command::Connect,
            0x02 => Command::Bind,
            0x03 => Command::UdpAssociate,
            other => Command::Other(other),
        }
    }
}

/// A destination as the client wrote it. A name is raw octets: it is only trusted after
/// canonicalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr<'a> {
    Ip(IpAddr),
    Domain(&'a [u8]),
}

impl fmt::Display for Addr<'_> {
    /// Names are escaped: they reach logs before anyone has validated them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Addr::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Addr::Domain(name) => write!(f, "{}", name.escape_ascii()),
        }
    }
}

/// A complete request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub command: Command,
    pub addr: Addr<'a>,
    pub port: u16,
    /// Octets the request occupied; anything after it is early client data.
    pub len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("incomplete request")]
    Incomplete,
    #[error("not SOCKS5 (version octet {0:#04x})")]
    Version(u8),
    #[error("unknown address type {0:#04x}")]
    AddressType(u8),
}

pub fn parse_request(buf: &[u8]) -> Result<Request<'_>, RequestError> {
    let [version, command, _reserved, atyp, ..] = *buf else {
        return match buf.first() {
            Some(&v) if v != VERSION => Err(RequestError::Version(v)),
            _ => Err(RequestError::Incomplete),
        };
    };
    if version != VERSION {
        return Err(RequestError::Version(version));
    }
    match parse_addr(atyp, &buf[4..]) {
        Ok(Some((addr, port, len))) => Ok(Request {
            command: Command::from(command),
            addr,
            port,
            len: 4 + len,
        }),
        Ok(None) => Err(RequestError::Incomplete),
        Err(atyp) => Err(RequestError::AddressType(atyp)),
    }
}

/// The header of a datagram from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpHeader<'a> {
    pub frag: u8,
    pub addr: Addr<'a>,
    pub port: u16,
    /// ATYP through DST.PORT exactly as sent: the key a destination is cached under, and what
    /// the header of a reply from it repeats.
    pub dest: &'a [u8],
    /// Octets the header occupied; the payload follows.
    pub len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UdpHeaderError {
    #[error("truncated UDP header")]
    Truncated,
    #[error("unknown address type {0:#04x}")]
    AddressType(u8),
}

pub fn parse_udp_header(datagram: &[u8]) -> Result<UdpHeader<'_>, UdpHeaderError> {
    // RSV is not checked: it carries nothing, and rejecting it would only break odd clients.
    let [_, _, frag, atyp, ..] = *datagram else {
        return Err(UdpHeaderError::Truncated);
    };
    match parse_addr(atyp, &datagram[4..]) {
        Ok(Some((addr, port, len))) => Ok(UdpHeader {
            frag,
            addr,
            port,
            dest: &datagram[UDP_PREFIX..4 + len],
            len: 4 + len,
        }),
        Ok(None) => Err(UdpHeaderError::Truncated),
        Err(atyp) => Err(UdpHeaderError::AddressType(atyp)),
    }
}

/// Writes the header of a datagram relayed back to the client so that it ends exactly at
/// `buf[end]`, where the payload already starts, and returns where the header begins. `dest`
/// is [`UdpHeader::dest`] of the datagram that opened the route.
pub fn write_udp_header(buf: &mut [u8], end: usize, dest: &[u8]) -> usize {
    let start = end - UDP_PREFIX - dest.len();
    buf[start..start + UDP_PREFIX].fill(0);
    buf[start + UDP_PREFIX..end].copy_from_slice(dest);
    start
}

/// The address and port of a destination as a UDP header carries it (ATYP..DST.PORT, the
/// [`UdpHeader::dest`] octets), if it is one.
pub fn parse_dest(dest: &[u8]) -> Option<(Addr<'_>, u16)> {
    let (&atyp, rest) = dest.split_first()?;
    match parse_addr(atyp, rest) {
        Ok(Some((addr, port, len))) if len == rest.len() => Some((addr, port)),
        _ => None,
    }
}

/// Parses ATYP's address and the port after it: `Ok(None)` if incomplete, `Err(atyp)` if the
/// type is unknown. Returns the octets consumed after ATYP.
fn parse_addr(atyp: u8, rest: &[u8]) -> Result<Option<(Addr<'_>, u16, usize)>, u8> {
    let (addr, len) = match atyp {
        ATYP_V4 => match rest.get(..4) {
            Some(&[a, b, c, d]) => (Addr::Ip(IpAddr::V4(Ipv4Addr::new(a, b, c, d))), 4),
            _ => return Ok(None),
        },
        ATYP_V6 => match rest.get(..16).and_then(|s| <[u8; 16]>::try_from(s).ok()) {
            Some(octets) => (Addr::Ip(IpAddr::V6(Ipv6Addr::from(octets))), 16),
            None => return Ok(None),
        },
        ATYP_DOMAIN => {
            let Some(&n) = rest.first() else {
                return Ok(None);
            };
            let n = usize::from(n);
            match rest.get(1..1 + n) {
                Some(name) => (Addr::Domain(name), 1 + n),
                None => return Ok(None),
            }
        }
        other => return Err(other),
    };
    match rest.get(len..len + 2) {
        Some(&[hi, lo]) => Ok(Some((addr, u16::from_be_bytes([hi, lo]), len + 2))),
        _ => Ok(None),
    }
}

/// A reply to a request, encoded on the stack.
#[derive(Clone, Copy, Debug)]
pub struct Reply {
    bytes: [u8; 22],
    len: usize,
}

impl Reply {
    /// VER REP RSV ATYP BND.ADDR BND.PORT.
    pub fn new(code: u8, bound: SocketAddr) -> Reply {
        let mut bytes = [0u8; 22];
        bytes[..3].copy_from_slice(&[VERSION, code, 0]);
        let len = match bound.ip() {
            IpAddr::V4(ip) => {
                bytes[3] = ATYP_V4;
                bytes[4..8].copy_from_slice(&ip.octets());
                8
            }
            IpAddr::V6(ip) => {
                bytes[3] = ATYP_V6;
                bytes[4..20].copy_from_slice(&ip.octets());
                20
            }
        };
        bytes[len..len + 2].copy_from_slice(&bound.port().to_be_bytes());
        Reply {
            bytes,
            len: len + 2,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting() {
        assert_eq!(
            parse_greeting(&[5, 2, 2, 0]),
            Ok(Greeting {
                no_auth: true,
                user_pass: true,
                len: 4
            })
        );
        assert_eq!(
            parse_greeting(&[5, 1, 2, 0xaa]),
            Ok(Greeting {
                no_auth: false,
                user_pass: true,
                len: 3
            })
        );
        assert_eq!(
            parse_greeting(&[5, 0]),
            Ok(Greeting {
                no_auth: false,
                user_pass: false,
                len: 2
            })
        );
        for prefix in [&[][..], &[5], &[5, 2], &[5, 2, 2]] {
            assert_eq!(
                parse_greeting(prefix),
                Err(GreetingError::Incomplete),
                "{prefix:?}"
            );
        }
        assert_eq!(parse_greeting(&[4]), Err(GreetingError::Version(4)));
        assert_eq!(
            parse_greeting(b"GET / HTTP/1.1"),
            Err(GreetingError::Version(b'G'))
        );
    }

    /// VER ULEN UNAME PLEN PASSWD with the given fields.
    fn user_pass(user: &[u8], password: &[u8]) -> Vec<u8> {
        let mut buf = vec![AUTH_VERSION, u8::try_from(user.len()).unwrap()];
        buf.extend_from_slice(user);
        buf.push(u8::try_from(password.len()).unwrap());
        buf.extend_from_slice(password);
        buf
    }

    #[test]
    fn username_password_requests() {
        let long = [b'p'; 255];
        let longest = user_pass(&[b'u'; 255], &long);
        assert_eq!(longest.len(), MAX_AUTH);
        let with_request = [&user_pass(b"egress", b"t0k")[..], &[5, 1, 0, 1]].concat();
        // (input, Ok((user, password, len)) or the error)
        type Want<'a> = Result<(&'a [u8], &'a [u8], usize), AuthError>;
        let cases: Vec<(Vec<u8>, Want<'_>)> = vec![
            (user_pass(b"egress", b"t0k"), Ok((b"egress", b"t0k", 12))),
            (with_request, Ok((b"egress", b"t0k", 12))),
            (user_pass(b"", b"t0k"), Ok((b"", b"t0k", 6))),
            (user_pass(b"egress", b""), Ok((b"egress", b"", 9))),
            (user_pass(b"", b""), Ok((b"", b"", 3))),
            (longest.clone(), Ok((&[b'u'; 255], &long, MAX_AUTH))),
            (vec![5, 6], Err(AuthError::Version(5))),
            (vec![0], Err(AuthError::Version(0))),
            (vec![0xff, 0, 0], Err(AuthError::Version(0xff))),
        ];
        for (input, want) in cases {
            let got = parse_user_pass(&input).map(|a| (a.user, a.password, a.len));
            assert_eq!(got, want, "{input:?}");
        }
        // Every strict prefix, including one that ends inside a 255-octet field.
        for full in [user_pass(b"egress", b"t0k"), longest, user_pass(b"", b"")] {
            for cut in 0..full.len() {
                assert_eq!(
                    parse_user_pass(&full[..cut]),
                    Err(AuthError::Incomplete),
                    "{:?}",
                    &full[..cut]
                );
            }
        }
        // A length octet that promises more than arrives stays incomplete.
        assert_eq!(parse_user_pass(&[1, 255, b'u']), Err(AuthError::Incomplete));
        assert_eq!(
            parse_user_pass(&[1, 1, b'u', 9, b'p']),
            Err(AuthError::Incomplete)
        );
    }

    #[test]
    fn requests_of_every_address_type() {
        let v4 = [5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];
        assert_eq!(
            parse_request(&v4),
            Ok(Request {
                command: Command::Connect,
                addr: Addr::Ip("127.0.0.1".parse().unwrap()),
                port: 8080,
                len: 10
            })
        );
        let mut v6 = vec![5, 3, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 53]);
        let req = parse_request(&v6).unwrap();
        assert_eq!(req.command, Command::UdpAssociate);
        assert_eq!(req.addr, Addr::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!((req.port, req.len), (53, 22));

        let mut name = vec![5, 2, 0, 3, 7];
        name.extend_from_slice(b"a.test!");
        name.extend_from_slice(&[1, 0, b'x', b'y']);
        let req = parse_request(&name).unwrap();
        assert_eq!(req.command, Command::Bind);
        assert_eq!(req.addr, Addr::Domain(b"a.test!"));
        assert_eq!((req.port, req.len), (256, 14));

        let empty = parse_request(&[5, 9, 0, 3, 0, 0, 80]).unwrap();
        assert_eq!(empty.command, Command::Other(9));
        assert_eq!(empty.addr, Addr::Domain(b""));
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let mut name = vec![5, 1, 0, 3, 4];
        name.extend_from_slice(b"a.te\x00\x50");
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&[0; 18]);
        for full in [&[5, 1, 0, 1, 1, 2, 3, 4, 0, 80][..], &name, &v6] {
            assert!(parse_request(full).is_ok());
            for cut in 0..full.len() {
                assert_eq!(
                    parse_request(&full[..cut]),
                    Err(RequestError::Incomplete),
                    "{:?}",
                    &full[..cut]
                );
            }
        }
    }

    #[test]
    fn bad_requests() {
        assert_eq!(parse_request(&[4, 1]), Err(RequestError::Version(4)));
        assert_eq!(
            parse_request(&[5, 1, 0, 9, 1, 2]),
            Err(RequestError::AddressType(9))
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 0]),
            Err(RequestError::AddressType(0))
        );
    }

    #[test]
    fn udp_headers() {
        let datagram = [0, 0, 0, 1, 127, 0, 0, 1, 0, 7, b'h', b'i'];
        let h = parse_udp_header(&datagram).unwrap();
        assert_eq!((h.frag, h.port, h.len), (0, 7, 10));
        assert_eq!(h.addr, Addr::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(h.dest, &datagram[3..10]);
        assert_eq!(&datagram[h.len..], b"hi");

        let mut named = vec![0, 0, 2, 3, 6];
        named.extend_from_slice(b"u.test\x00\x35");
        let h = parse_udp_header(&named).unwrap();
        assert_eq!((h.frag, h.port, h.len), (2, 53, named.len()));
        assert_eq!(h.addr, Addr::Domain(b"u.test"));
        for cut in 0..named.len() {
            assert_eq!(
                parse_udp_header(&named[..cut]),
                Err(UdpHeaderError::Truncated)
            );
        }
        assert_eq!(
            parse_udp_header(&[0, 0, 0, 2, 1, 1]),
            Err(UdpHeaderError::AddressType(2))
        );
    }

    #[test]
    fn reply_headers_repeat_the_destination_in_front_of_the_payload() {
        let mut named = vec![0, 0, 0, 3, 6];
        named.extend_from_slice(b"u.test\x00\x35");
        let dest = parse_udp_header(&named).unwrap().dest.to_vec();
        let mut buf = [0xEEu8; MAX_UDP_HEADER + 4];
        buf[MAX_UDP_HEADER..].copy_from_slice(b"pong");
        let start = write_udp_header(&mut buf, MAX_UDP_HEADER, &dest);
        let reply = &buf[start..];
        assert_eq!(&reply[..named.len()], &named[..]);
        assert_eq!(&reply[named.len()..], b"pong");

        let longest = [&[ATYP_DOMAIN, 255][..], &[b'a'; 255], &[0, 1]].concat();
        let start = write_udp_header(&mut buf, MAX_UDP_HEADER, &longest);
        assert_eq!(start, 0);
    }

    #[test]
    fn replies() {
        let r = Reply::new(0, "127.0.0.1:1080".parse().unwrap());
        assert_eq!(r.as_bytes(), [5, 0, 0, 1, 127, 0, 0, 1, 0x04, 0x38]);
        let r = Reply::new(2, "[::1]:80".parse().unwrap());
        let mut want = vec![5, 2, 0, 4];
        want.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        want.extend_from_slice(&[0, 80]);
        assert_eq!(r.as_bytes(), &want[..]);
    }

    #[test]
    fn names_are_escaped_for_logs() {
        assert_eq!(Addr::Domain(b"a\nb\xff").to_string(), "a\\nb\\xff");
        assert_eq!(Addr::Ip("::1".parse().unwrap()).to_string(), "[::1]");
    }
}

//! The SOCKS5 codec (RFC 1928, RFC 1929) on arbitrary bytes and on messages built from them: the input
//! goes through every parser as it is, then is read as a message to encode and parse back.
//!
//! Properties:
//! - the greeting, username/password, request and UDP header parsers never panic;
//! - a parsed message says how long it is, that many octets alone parse the same, and every
//!   strict prefix of them is `Incomplete` (`Truncated` for a datagram);
//! - parse(encode(x)) == x for requests, greetings, username/password requests, `Reply` and
//!   `write_udp_header`.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::{Arbitrary, Unstructured};
use egress_proxy::socks5_codec::{
    parse_greeting, parse_request, parse_udp_header, parse_user_pass, write_udp_header, Addr,
    AuthError, Command, Greeting, GreetingError, Reply, Request, RequestError, UdpHeaderError,
    UserPass, AUTH_VERSION, MAX_UDP_HEADER,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Request {
        version: u8,
        command: u8,
        reserved: u8,
        addr: WireAddr<'a>,
        port: u16,
        trailing: &'a [u8],
    },
    Greeting {
        methods: &'a [u8],
        trailing: &'a [u8],
    },
    UserPass {
        user: &'a [u8],
        password: &'a [u8],
        trailing: &'a [u8],
    },
    Reply {
        code: u8,
        v6: bool,
        ip: [u8; 16],
        port: u16,
    },
    Datagram {
        reserved: [u8; 2],
        frag: u8,
        addr: WireAddr<'a>,
        port: u16,
        payload: &'a [u8],
    },
}

#[derive(Arbitrary, Debug)]
enum WireAddr<'a> {
    V4([u8; 4]),
    V6([u8; 16]),
    Domain(&'a [u8]),
}

impl WireAddr<'_> {
    /// ATYP and the address, as a client writes them; a name longer than 255 is cut.
    fn encode(&self, out: &mut Vec<u8>) -> Addr<'_> {
        match self {
            WireAddr::V4(o) => {
                out.push(1);
                out.extend_from_slice(o);
                Addr::Ip(IpAddr::V4(Ipv4Addr::from(*o)))
            }
            WireAddr::V6(o) => {
                out.push(4);
                out.extend_from_slice(o);
                Addr::Ip(IpAddr::V6(Ipv6Addr::from(*o)))
            }
            WireAddr::Domain(name) => {
                let name = &name[..name.len().min(255)];
                out.push(3);
                out.push(name.len() as u8);
                out.extend_from_slice(name);
                Addr::Domain(name)
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    raw(data);
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    match input {
        Input::Request {
            version,
            command,
            reserved,
            addr,
            port,
            trailing,
        } => {
            let mut msg = vec![version, command, reserved];
            let want_addr = addr.encode(&mut msg);
            msg.extend_from_slice(&port.to_be_bytes());
            let len = msg.len();
            msg.extend_from_slice(trailing);
            let parsed = parse_request(&msg);
            if version != 5 {
                assert_eq!(parsed, Err(RequestError::Version(version)));
                return;
            }
            let want = Request {
                command: Command::from(command),
                addr: want_addr,
                port,
                len,
            };
            assert_eq!(parsed, Ok(want));
            raw(&msg);
        }
        Input::Greeting { methods, trailing } => {
            let methods = &methods[..methods.len().min(255)];
            let mut msg = vec![5, methods.len() as u8];
            msg.extend_from_slice(methods);
            let len = msg.len();
            msg.extend_from_slice(trailing);
            let want = Greeting {
                no_auth: methods.contains(&0),
                user_pass: methods.contains(&2),
                len,
            };
            assert_eq!(parse_greeting(&msg), Ok(want));
            raw(&msg);
        }
        Input::UserPass {
            user,
            password,
            trailing,
        } => {
            let user = &user[..user.len().min(255)];
            let password = &password[..password.len().min(255)];
            let mut msg = vec![AUTH_VERSION, user.len() as u8];
            msg.extend_from_slice(user);
            msg.push(password.len() as u8);
            msg.extend_from_slice(password);
            let len = msg.len();
            msg.extend_from_slice(trailing);
            let want = UserPass {
                user,
                password,
                len,
            };
            assert_eq!(parse_user_pass(&msg), Ok(want));
            raw(&msg);
        }
        Input::Reply { code, v6, ip, port } => {
            let ip = if v6 {
                IpAddr::V6(Ipv6Addr::from(ip))
            } else {
                IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))
            };
            let reply = Reply::new(code, SocketAddr::new(ip, port));
            let bytes = reply.as_bytes();
            // A reply has a request's layout, with REP where CMD is.
            let want = Request {
                command: Command::from(code),
                addr: Addr::Ip(ip),
                port,
                len: bytes.len(),
            };
            assert_eq!(parse_request(bytes), Ok(want));
            raw(bytes);
        }
        Input::Datagram {
            reserved,
            frag,
            addr,
            port,
            payload,
        } => {
            let mut msg = vec![reserved[0], reserved[1], frag];
            let want_addr = addr.encode(&mut msg);
            msg.extend_from_slice(&port.to_be_bytes());
            let len = msg.len();
            msg.extend_from_slice(payload);
            let h = parse_udp_header(&msg).expect("a well-formed datagram parses");
            assert_eq!(
                (h.frag, h.addr, h.port, h.len),
                (frag, want_addr, port, len)
            );
            assert_eq!(h.dest, &msg[3..len]);
            assert_eq!(&msg[h.len..], payload);

            // The relayed reply repeats the destination in front of the payload.
            let mut buf = vec![0xee; MAX_UDP_HEADER + payload.len()];
            buf[MAX_UDP_HEADER..].copy_from_slice(payload);
            let start = write_udp_header(&mut buf, MAX_UDP_HEADER, h.dest);
            let back = parse_udp_header(&buf[start..]).expect("the reply header parses");
            assert_eq!(
                (back.frag, back.addr, back.port, back.dest, back.len),
                (0, h.addr, h.port, h.dest, len)
            );
            assert_eq!(&buf[start + back.len..], payload);
            raw(&msg);
        }
    }
});

/// Arbitrary bytes through every parser: no panic, and a complete message is exactly as long
/// as it says, with every strict prefix incomplete.
fn raw(bytes: &[u8]) {
    if let Ok(g) = parse_greeting(bytes) {
        assert!(g.len <= bytes.len());
        assert_eq!(parse_greeting(&bytes[..g.len]), Ok(g));
        for cut in 0..g.len {
            assert_eq!(
                parse_greeting(&bytes[..cut]),
                Err(GreetingError::Incomplete),
                "{:?}",
                &bytes[..cut]
            );
        }
    }
    if let Ok(a) = parse_user_pass(bytes) {
        assert!(a.len <= bytes.len());
        assert_eq!(parse_user_pass(&bytes[..a.len]), Ok(a));
        for cut in 0..a.len {
            assert_eq!(
                parse_user_pass(&bytes[..cut]),
                Err(AuthError::Incomplete),
                "{:?}",
                &bytes[..cut]
            );
        }
    }
    if let Ok(r) = parse_request(bytes) {
        assert!(r.len <= bytes.len());
        assert_eq!(parse_request(&bytes[..r.len]), Ok(r));
        for cut in 0..r.len {
            assert_eq!(
                parse_request(&bytes[..cut]),
                Err(RequestError::Incomplete),
                "{:?}",
                &bytes[..cut]
            );
        }
    }
    if let Ok(h) = parse_udp_header(bytes) {
        assert!(h.len <= bytes.len());
        assert_eq!(parse_udp_header(&bytes[..h.len]), Ok(h));
        assert_eq!(h.dest, &bytes[3..h.len]);
        for cut in 0..h.len {
            assert_eq!(
                parse_udp_header(&bytes[..cut]),
                Err(UdpHeaderError::Truncated),
                "{:?}",
                &bytes[..cut]
            );
        }
    }
}

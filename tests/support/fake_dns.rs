//! A fake authoritative DNS server on 127.0.0.1 (UDP only) for tests.
//!
//! It runs on its own thread, so both sync tests that spawn the built binary and Tokio tests can
//! use it, and stops when dropped. It answers with whatever addresses a test asks for; nothing
//! ever connects to them, so tests still reach only loopback. Every answer has TTL 0, so a
//! resolver cache never hides a change of answer.
//!
//! ```ignore
//! let dns = FakeDns::start(vec![
//!     ("allowed.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
//!     ("gone.test", Answer::NxDomain),
//! ]);
//! // point `[dns] servers` (or `--dns-server`) at `dns.addr`
//! ```

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_REFUSED: u8 = 5;

/// What the server does for one name. A name that is not listed gets NXDOMAIN.
#[derive(Clone, Debug)]
pub enum Answer {
    /// A records; AAAA queries get an empty NOERROR. `A(vec![])` is a name with no records.
    A(Vec<Ipv4Addr>),
    /// AAAA records; A queries get an empty NOERROR.
    Aaaa(Vec<Ipv6Addr>),
    /// Both families.
    Mixed(Vec<Ipv4Addr>, Vec<Ipv6Addr>),
    NxDomain,
    ServFail,
    /// REFUSED: a resolver that does not serve this client or this zone.
    Refused,
    /// Never answers: the resolver times out.
    NoReply,
    /// A records, but AAAA queries are never answered (a broken server or middlebox).
    ASilentAaaa(Vec<Ipv4Addr>),
    /// The n-th query of each type gets the n-th answer; the last one repeats. One lookup sends
    /// one A and one AAAA query, so the n-th lookup sees the n-th answer.
    Sequence(Vec<Answer>),
}

/// A running fake server; stops on drop.
pub struct FakeDns {
    pub addr: SocketAddr,
    counters: Arc<Mutex<HashMap<(String, u16), Counter>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Queries seen for one (name, type), so a `Sequence` can advance and tests can count.
#[derive(Default)]
struct Counter {
    queries: usize,
    /// UDP retransmissions reuse the message id; they must not advance a `Sequence`.
    last_id: Option<u16>,
}

impl FakeDns {
    /// Binds 127.0.0.1:0 and serves `zone` until dropped. Names match case-insensitively.
    pub fn start<'a>(zone: impl IntoIterator<Item = (&'a str, Answer)>) -> FakeDns {
        let zone: HashMap<String, Answer> = zone
            .into_iter()
            .map(|(name, answer)| (name.trim_end_matches('.').to_ascii_lowercase(), answer))
            .collect();
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind fake DNS socket");
        // The thread polls `stop` between reads.
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("set read timeout");
        let addr = socket.local_addr().expect("fake DNS address");
        let counters = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let counters = Arc::clone(&counters);
            let stop = Arc::clone(&stop);
            move || serve(&socket, &zone, &counters, &stop)
        });
        FakeDns {
            addr,
            counters,
            stop,
            thread: Some(thread),
        }
    }

    /// How many questions (of any type, retransmissions not counted) arrived for `name`.
    /// A dual-stack lookup asks two: A and AAAA.
    pub fn queries(&self, name: &str) -> usize {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let counters = self.counters.lock().unwrap();
        counters
            .iter()
            .filter(|((n, _), _)| *n == name)
            .map(|(_, c)| c.queries)
            .sum()
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    socket: &UdpSocket,
    zone: &HashMap<String, Answer>,
    counters: &Mutex<HashMap<(String, u16), Counter>>,
    stop: &AtomicBool,
) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(query) = Query::parse(&buf[..len]) else {
            continue;
        };
        let nth = {
            let mut counters = counters.lock().unwrap();
            let counter = counters
                .entry((query.name.clone(), query.qtype))
                .or_default();
            if counter.last_id != Some(query.id) {
                counter.queries += 1;
                counter.last_id = Some(query.id);
            }
            counter.queries - 1
        };
        let answer = zone.get(&query.name).map(|a| a.nth(nth));
        if let Some(reply) = query.reply(answer.unwrap_or(&Answer::NxDomain)) {
            let _ = socket.send_to(&reply, peer);
        }
    }
}

impl Answer {
    fn nth(&self, n: usize) -> &Answer {
        match self {
            Answer::Sequence(steps) if !steps.is_empty() => steps[n.min(steps.len() - 1)].nth(n),
            _ => self,
        }
    }
}

/// The single question of a query, and the raw bytes needed to echo it.
struct Query<'a> {
    packet: &'a [u8],
    /// Offset just past the question section.
    question_end: usize,
    id: u16,
    name: String,
    qtype: u16,
}

impl<'a> Query<'a> {
    /// Accepts a standard query with exactly one question; anything else is ignored.
    fn parse(packet: &'a [u8]) -> Option<Query<'a>> {
        let header = packet.get(..12)?;
        let is_response = header[2] & 0x80 != 0;
        let qdcount = u16::from_be_bytes([header[4], header[5]]);
        if is_response || qdcount != 1 {
            return None;
        }
        let mut labels = Vec::new();
        let mut pos = 12;
        loop {
            let len = usize::from(*packet.get(pos)?);
            pos += 1;
            if len == 0 {
                break;
            }
            if len > 63 {
                return None;
            }
            let label = packet.get(pos..pos + len)?;
            labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
            pos += len;
        }
        let qtype = packet.get(pos..pos + 2)?;
        packet.get(pos + 2..pos + 4)?;
        Some(Query {
            packet,
            question_end: pos + 4,
            id: u16::from_be_bytes([header[0], header[1]]),
            name: labels.join("."),
            qtype: u16::from_be_bytes([qtype[0], qtype[1]]),
        })
    }

    /// The response to send, or `None` to stay silent.
    fn reply(&self, answer: &Answer) -> Option<Vec<u8>> {
        let mut rcode = 0;
        let mut records: Vec<Vec<u8>> = Vec::new();
        let v4 = |ips: &[Ipv4Addr]| ips.iter().map(|ip| ip.octets().to_vec()).collect();
        let v6 = |ips: &[Ipv6Addr]| ips.iter().map(|ip| ip.octets().to_vec()).collect();
        match (answer, self.qtype) {
            (Answer::NoReply, _) | (Answer::ASilentAaaa(_), TYPE_AAAA) => return None,
            (Answer::NxDomain, _) => rcode = RCODE_NXDOMAIN,
            (Answer::ServFail, _) => rcode = RCODE_SERVFAIL,
            (Answer::Refused, _) => rcode = RCODE_REFUSED,
            (Answer::A(ips) | Answer::Mixed(ips, _) | Answer::ASilentAaaa(ips), TYPE_A) => {
                records = v4(ips)
            }
            (Answer::Aaaa(ips) | Answer::Mixed(_, ips), TYPE_AAAA) => records = v6(ips),
            _ => {}
        }

        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(&self.id.to_be_bytes());
        // QR, the query's opcode and RD, AA; then RA and the response code.
        out.push(0x80 | (self.packet[2] & 0x79) | 0x04);
        out.push(0x80 | rcode);
        let ancount = u16::try_from(records.len()).expect("too many records");
        for count in [1, ancount, 0, 0] {
            out.extend_from_slice(&u16::to_be_bytes(count));
        }
        out.extend_from_slice(&self.packet[12..self.question_end]);
        for rdata in records {
            out.extend_from_slice(&[0xC0, 0x0C]); // pointer to the question's name
            out.extend_from_slice(&self.qtype.to_be_bytes());
            out.extend_from_slice(&1u16.to_be_bytes()); // class IN
            out.extend_from_slice(&0u32.to_be_bytes()); // TTL 0
            let rdlen = u16::try_from(rdata.len()).expect("rdata length");
            out.extend_from_slice(&rdlen.to_be_bytes());
            out.extend_from_slice(&rdata);
        }
        Some(out)
    }
}

//! The SOCKS5 UDP relay's per-datagram path: 64-byte datagrams to a known destination (an
//! echo on loopback) through a UDP association of the in-process proxy, against the same
//! datagrams straight to the echo. `pingpong` keeps one datagram in flight; `burst` sends 32
//! and then reads the 32 replies, so the relay can batch. The ratio of relayed to direct is
//! the relay's cost in time; `udp_proxy_cpu` reports, for the same exchanges, the CPU time the
//! proxy's runtime threads spent (Linux: their scheduler run time), which moves much less with
//! the machine's other load than wall time does.
//!
//! `cargo bench --bench udp`

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use egress_proxy::config::{load_texts, Sources};
use egress_proxy::server::Server;
use tokio::runtime::Builder;
use tokio::time::Instant;

const PAYLOAD: usize = 64;
const BURST: usize = 32;
/// The name of the proxy's runtime threads.
const THREADS: &str = "proxy";
const POLICY: &str =
    "enabled = true\nallow_local_binding = true\nallowed_domains = [\"127.0.0.1\"]\n";

/// An echo server on its own thread, for as long as the bench runs.
fn echo() -> SocketAddr {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

/// Opens an association for `client` (naming its port) on the SOCKS5 listener at `socks`;
/// returns the control connection, which must stay open, and the relay's address.
fn associate(socks: SocketAddr, client: &UdpSocket) -> (TcpStream, SocketAddr) {
    let mut control = TcpStream::connect(socks).unwrap();
    control.write_all(&[5, 1, 0]).unwrap();
    let mut method = [0u8; 2];
    control.read_exact(&mut method).unwrap();
    let port = client.local_addr().unwrap().port().to_be_bytes();
    control
        .write_all(&[5, 3, 0, 1, 0, 0, 0, 0, port[0], port[1]])
        .unwrap();
    let mut reply = [0u8; 10];
    control.read_exact(&mut reply).unwrap();
    assert_eq!(reply[..4], [5, 0, 0, 1], "UDP ASSOCIATE refused");
    let ip = Ipv4Addr::new(reply[4], reply[5], reply[6], reply[7]);
    (
        control,
        (ip, u16::from_be_bytes([reply[8], reply[9]])).into(),
    )
}

/// A client socket and the bytes it sends: the SOCKS header naming `echo` when `socks`, then
/// the payload.
fn client(socks: bool, echo: SocketAddr) -> (UdpSocket, Vec<u8>) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut datagram = Vec::new();
    if socks {
        datagram.extend_from_slice(&[0, 0, 0, 1, 127, 0, 0, 1]);
        datagram.extend_from_slice(&echo.port().to_be_bytes());
    }
    datagram.resize(datagram.len() + PAYLOAD, 7);
    (socket, datagram)
}

/// Sends `burst` datagrams, then reads as many replies; panics on a lost one.
fn exchange(socket: &UdpSocket, datagram: &[u8], burst: usize) {
    let mut buf = [0u8; 2048];
    for _ in 0..burst {
        socket.send(datagram).unwrap();
    }
    for _ in 0..burst {
        let n = socket.recv(&mut buf).expect("a reply within 2 s");
        assert!(n >= PAYLOAD);
    }
}

/// CPU time the proxy's runtime threads have used so far: the sum of their scheduler run
/// times (`/proc/self/task/*/schedstat`, in nanoseconds; zero where there is none).
fn proxy_cpu() -> Duration {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let read = |file| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        if read("comm").trim_end() != THREADS {
            continue;
        }
        let run: Option<u64> = read("schedstat")
            .split(' ')
            .next()
            .and_then(|ns| ns.parse().ok());
        total += run.unwrap_or(0);
    }
    Duration::from_nanos(total)
}

fn relay(c: &mut Criterion) {
    let rt = Builder::new_multi_thread()
        .thread_name(THREADS)
        .enable_all()
        .build()
        .unwrap();
    let config = load_texts(&[("bench.toml", POLICY)], None, &Sources::default()).unwrap();
    let server = rt
        .block_on(Server::builder(config).ephemeral().start())
        .unwrap();
    let socks = server.socks_addr.expect("SOCKS5 runs");
    let echo = echo();
    let direct = client(false, echo);
    direct.0.connect(echo).unwrap();
    let relayed = client(true, echo);
    let (_control, relay) = associate(socks, &relayed.0);
    relayed.0.connect(relay).unwrap();
    for (name, burst) in [("pingpong", 1), ("burst", BURST)] {
        let mut group = c.benchmark_group(format!("udp_{name}"));
        group.throughput(Throughput::Elements(burst as u64));
        for (side, (socket, datagram)) in [("direct", &direct), ("relayed", &relayed)] {
            exchange(socket, datagram, burst);
            group.bench_function(side, |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        exchange(socket, datagram, burst);
                    }
                    start.elapsed()
                })
            });
        }
        group.finish();
    }
    let mut group = c.benchmark_group("udp_proxy_cpu");
    for (name, burst) in [("pingpong", 1), ("burst", BURST)] {
        let (socket, datagram) = &relayed;
        group.throughput(Throughput::Elements(burst as u64));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = proxy_cpu();
                for _ in 0..iters {
                    exchange(socket, datagram, burst);
                }
                proxy_cpu() - start
            })
        });
    }
    group.finish();
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = relay
}
criterion_main!(benches);

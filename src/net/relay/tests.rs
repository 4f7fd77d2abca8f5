//! The relay by behaviour: exact bytes in order both ways, half-close, resets, idle and stop,
//! in the copy phase, across the switch to splice, and in the splice phase.

use super::short::{copy_until_bulk, Copied, BUF, SWITCH_AFTER};
use super::*;
use std::future::pending;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

/// The longest a step may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(10);

/// Two connected loopback pairs: (client, proxy's client side), (proxy's upstream side, origin).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (a.unwrap(), b.unwrap().0)
}

type Relay = tokio::task::JoinHandle<(TunnelStats, io::Result<()>)>;

/// A client and an origin socket with the relay between them.
async fn relayed() -> (TcpStream, TcpStream, Relay) {
    relayed_until(pending()).await
}

/// [`relayed`], with the relay stopped when `stop` completes (as a reload's revocation does).
async fn relayed_until(
    stop: impl Future<Output = ()> + Send + 'static,
) -> (TcpStream, TcpStream, Relay) {
    let (client, client_side) = pair().await;
    let (upstream_side, origin) = pair().await;
    let task = tokio::spawn(async move {
        relay_tcp(&client_side, &upstream_side, Duration::from_secs(30), stop).await
    });
    (client, origin, task)
}

/// A relay with the sender that stops it.
async fn stoppable() -> (
    TcpStream,
    TcpStream,
    Relay,
    tokio::sync::oneshot::Sender<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (client, origin, task) = relayed_until(async {
        let _ = stopped.await;
    })
    .await;
    (client, origin, task, stop)
}

#[tokio::test]
async fn bulk_both_ways_with_half_close() {
    let (mut client, mut origin, task) = relayed().await;
    let big = pattern(3 << 20, 3);
    let sent = big.clone();
    let writer = tokio::spawn(async move {
        client.write_all(&sent).await.unwrap();
        client.shutdown().await.unwrap();
        client
    });
    let mut got = Vec::new();
    origin.read_to_end(&mut got).await.unwrap();
    assert!(
        got == big,
        "{} bytes arrived, not the 3 MiB sent in order",
        got.len()
    );
    let mut client = writer.await.unwrap();
    origin.write_all(b"reply after half-close").await.unwrap();
    origin.shutdown().await.unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"reply after half-close");
    let (stats, result) = task.await.unwrap();
    result.unwrap();
    assert_eq!((stats.up, stats.down), (3 << 20, 22));
    assert!(!stats.idle_timeout);
}

/// A receiver that takes a few KiB at a time, with pauses, holds the bulk phase on its writes:
/// every byte still arrives once and in order, the other way too.
#[tokio::test]
async fn a_slow_receiver_in_the_bulk_phase_gets_every_byte_in_order() {
    let (mut client, mut origin, task) = relayed().await;
    let (up, down) = (pattern(2 << 20, 11), pattern(1 << 20, 13));
    let (to_send, back) = (up.clone(), down.clone());
    let writer = tokio::spawn(async move {
        client.write_all(&to_send).await.unwrap();
        client.shutdown().await.unwrap();
        let got = read_all(&mut client).await;
        assert!(got == back, "{} bytes down", got.len());
    });
    let mut got = Vec::with_capacity(up.len());
    let mut piece = [0u8; 3000];
    for reads in 1.. {
        let n = timeout(STEP, origin.read(&mut piece))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&piece[..n]);
        if reads % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert!(got == up, "{} bytes up", got.len());
    origin.write_all(&down).await.unwrap();
    origin.shutdown().await.unwrap();
    timeout(STEP, writer).await.unwrap().unwrap();
    let (stats, result) = timeout(STEP, task).await.unwrap().unwrap();
    result.unwrap();
    assert_eq!((stats.up, stats.down), (2 << 20, 1 << 20));
}

/// Past [`MAX_GROWN`] pipes stay at the default size, and a dropped pipe gives its place back.
#[test]
fn only_a_few_pipes_are_grown_at_once() {
    let pipes: Vec<Pipe> = (0..MAX_GROWN + 8).map(|_| Pipe::new().unwrap()).collect();
    let grown = pipes.iter().filter(|p| p.grown).count();
    assert!(grown <= MAX_GROWN, "{grown}");
    let size = |p: &Pipe| fcntl(&p.write, FcntlArg::F_GETPIPE_SZ).unwrap();
    assert!(pipes
        .iter()
        .filter(|p| !p.grown)
        .all(|p| size(p) <= 64 * 1024));
    drop(pipes);
    assert!(
        Pipe::new().unwrap().grown,
        "dropped pipes give their budget back"
    );
}

#[tokio::test]
async fn a_reset_ends_the_relay_with_its_counts() {
    let (mut client, mut origin, task) = relayed().await;
    client.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    origin.read_exact(&mut got).await.unwrap();
    // Linger 0: close sends RST, so the relay's next read fails.
    nix::sys::socket::setsockopt(
        &client,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    drop(client);
    let (stats, result) = task.await.unwrap();
    assert!(result.is_err(), "{stats:?}");
    assert_eq!(stats.up, 5);
}

#[tokio::test]
async fn stop_ends_the_relay_with_its_counts() {
    let (mut client, mut origin, task, stop) = stoppable().await;
    client.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    origin.read_exact(&mut got).await.unwrap();
    stop.send(()).unwrap();
    let (stats, result) = task.await.unwrap();
    result.unwrap();
    assert_eq!((stats.up, stats.down, stats.idle_timeout), (5, 0, false));
    // The relay's sockets are closed: both ends see EOF.
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
    assert_eq!(origin.read_to_end(&mut rest).await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn ends_when_idle() {
    let (_client, client_side) = pair().await;
    let (upstream_side, _origin) = pair().await;
    let (stats, result) = relay_tcp(
        &client_side,
        &upstream_side,
        Duration::from_secs(5),
        pending(),
    )
    .await;
    result.unwrap();
    assert!(stats.idle_timeout);
}

/// `len` bytes that differ from their neighbours, so a lost or reordered chunk shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(37))
        .collect()
}

async fn read_n(from: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut got = vec![0u8; len];
    timeout(STEP, from.read_exact(&mut got))
        .await
        .expect("the bytes arrive")
        .unwrap();
    got
}

async fn read_all(from: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    timeout(STEP, from.read_to_end(&mut got))
        .await
        .expect("EOF arrives")
        .unwrap();
    got
}

/// Sends `first` and waits until it is through (so the relay reads it on its own, in the
/// copy phase), then `rest` and EOF.
async fn send_in_two(
    mut from: TcpStream,
    to: &mut TcpStream,
    first: &[u8],
    rest: Vec<u8>,
) -> (TcpStream, Vec<u8>) {
    from.write_all(first).await.unwrap();
    assert_eq!(read_n(to, first.len()).await, first);
    let writer = tokio::spawn(async move {
        from.write_all(&rest).await.unwrap();
        from.shutdown().await.unwrap();
        from
    });
    let got = read_all(to).await;
    (writer.await.unwrap(), got)
}

#[tokio::test]
async fn crosses_the_switch_mid_stream_both_ways_with_half_close() {
    let (client, mut origin, task) = relayed().await;
    let (small_up, big_up) = (pattern(100, 1), pattern(3 << 20, 2));
    let (client, got) = send_in_two(client, &mut origin, &small_up, big_up.clone()).await;
    assert!(got == big_up, "upload bytes differ");
    // The client has half-closed; the origin answers the same way, small then bulk.
    let (small_down, big_down) = (pattern(50, 3), pattern(2 << 20, 4));
    let mut client = client;
    let (_origin, got) = send_in_two(origin, &mut client, &small_down, big_down.clone()).await;
    assert!(got == big_down, "download bytes differ");
    let (stats, result) = timeout(STEP, task).await.unwrap().unwrap();
    result.unwrap();
    assert_eq!((stats.up, stats.down), (100 + (3 << 20), 50 + (2 << 20)));
    assert!(!stats.idle_timeout);
}

/// The copy phase alone, from `from` to `to`: how it ended and what it counted.
fn copy_phase(
    from: TcpStream,
    to: TcpStream,
) -> tokio::task::JoinHandle<(io::Result<Copied>, u64, TcpStream)> {
    tokio::spawn(async move {
        let count = AtomicU64::new(0);
        let copied = copy_until_bulk(&from, &to, &count, &Clock::new()).await;
        (copied, count.load(Ordering::Relaxed), to)
    })
}

/// Waits until `len` bytes wait unread on `socket`.
async fn queued(socket: &TcpStream, len: usize) {
    let mut buf = vec![0u8; len + 1];
    while timeout(STEP, socket.peek(&mut buf)).await.unwrap().unwrap() < len {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A full buffer is the sign of bulk: the copy phase hands over right after it, one byte
/// less ends in the copy phase, one more leaves that byte for the bulk phase.
#[tokio::test]
async fn a_read_that_fills_the_buffer_switches_at_once() {
    for (len, ended, counted) in [
        (BUF - 1, Copied::Eof, BUF - 1),
        (BUF, Copied::Bulk, BUF),
        (BUF + 1, Copied::Bulk, BUF),
    ] {
        let (mut client, client_side) = pair().await;
        let (upstream_side, mut origin) = pair().await;
        let sent = pattern(len, 5);
        client.write_all(&sent).await.unwrap();
        client.shutdown().await.unwrap();
        queued(&client_side, len).await;
        let phase = copy_phase(client_side, upstream_side);
        let (copied, count, _upstream_side) = timeout(STEP, phase).await.unwrap().unwrap();
        assert_eq!(copied.unwrap(), ended, "{len} bytes");
        assert_eq!(count, counted as u64, "{len} bytes");
        assert!(read_n(&mut origin, counted).await == sent[..counted]);
    }
}

/// Exactly the buffer size, and one byte either side, through the whole relay both ways.
#[tokio::test]
async fn tunnels_of_the_buffer_size_and_either_side_are_exact() {
    for len in [BUF - 1, BUF, BUF + 1] {
        let (mut client, mut origin, task) = relayed().await;
        let (up, down) = (pattern(len, 6), pattern(len, 7));
        client.write_all(&up).await.unwrap();
        client.shutdown().await.unwrap();
        assert!(read_all(&mut origin).await == up, "{len} bytes up");
        origin.write_all(&down).await.unwrap();
        origin.shutdown().await.unwrap();
        assert!(read_all(&mut client).await == down, "{len} bytes down");
        let (stats, result) = timeout(STEP, task).await.unwrap().unwrap();
        result.unwrap();
        assert_eq!((stats.up, stats.down), (len as u64, len as u64));
    }
}

/// Sends `chunks` reads of 4 KiB through the copy phase, each taken by the origin before the
/// next, then EOF if `eof`; how the phase ended and what it counted.
async fn small_reads(chunks: usize, eof: bool) -> (Copied, u64) {
    let (mut client, client_side) = pair().await;
    let (upstream_side, mut origin) = pair().await;
    let phase = copy_phase(client_side, upstream_side);
    for i in 0..chunks {
        let sent = pattern(SMALL, i as u8);
        client.write_all(&sent).await.unwrap();
        assert!(read_n(&mut origin, SMALL).await == sent, "chunk {i}");
    }
    if eof {
        client.shutdown().await.unwrap();
    }
    let (copied, count, _upstream_side) = timeout(STEP, phase).await.unwrap().unwrap();
    (copied.unwrap(), count)
}

/// The read size of [`small_reads`].
const SMALL: usize = 4096;

/// Small reads stay in the copy phase up to EOF while they total no more than the limit.
#[tokio::test]
async fn small_reads_under_the_limit_stay_in_the_copy_phase() {
    let chunks = usize::try_from(SWITCH_AFTER).unwrap() / SMALL;
    assert_eq!(small_reads(chunks, true).await, (Copied::Eof, SWITCH_AFTER));
}

/// The read that takes the total past the limit is the last one copied.
#[tokio::test]
async fn small_reads_past_the_limit_switch() {
    let chunks = usize::try_from(SWITCH_AFTER).unwrap() / SMALL + 1;
    let total = (chunks * SMALL) as u64;
    assert_eq!(small_reads(chunks, false).await, (Copied::Bulk, total));
}

/// Sends `up` from the client and `down` from the origin through the relay, in the copy
/// phase (both are small).
async fn exchange(client: &mut TcpStream, origin: &mut TcpStream, up: &[u8], down: &[u8]) {
    client.write_all(up).await.unwrap();
    assert_eq!(read_n(origin, up.len()).await, up);
    origin.write_all(down).await.unwrap();
    assert_eq!(read_n(client, down.len()).await, down);
}

#[tokio::test]
async fn a_reset_in_the_copy_phase_keeps_both_counts() {
    let (mut client, mut origin, task) = relayed().await;
    exchange(&mut client, &mut origin, b"hello", b"goodbye").await;
    client.set_zero_linger().unwrap();
    drop(client);
    let (stats, result) = timeout(STEP, task).await.unwrap().unwrap();
    assert!(result.is_err(), "{stats:?}");
    assert_eq!((stats.up, stats.down), (5, 7));
}

#[tokio::test]
async fn stop_in_the_copy_phase_keeps_both_counts_and_closes() {
    let (mut client, mut origin, task, stop) = stoppable().await;
    exchange(&mut client, &mut origin, b"hello", b"goodbye").await;
    stop.send(()).unwrap();
    let (stats, result) = timeout(STEP, task).await.unwrap().unwrap();
    result.unwrap();
    assert_eq!((stats.up, stats.down, stats.idle_timeout), (5, 7, false));
    assert!(read_all(&mut client).await.is_empty());
    assert!(read_all(&mut origin).await.is_empty());
}

/// Bytes copied (in either direction) restart the idle clock; the relay ends `idle` after
/// the last of them. Real time: gaps of 40% of `idle` leave room for a loaded machine.
#[tokio::test]
async fn idle_in_the_copy_phase_counts_from_the_last_bytes() {
    let idle = Duration::from_secs(1);
    let (mut client, client_side) = pair().await;
    let (upstream_side, mut origin) = pair().await;
    let task =
        tokio::spawn(async move { relay_tcp(&client_side, &upstream_side, idle, pending()).await });
    let mut last = Instant::now();
    for _ in 0..3 {
        tokio::time::sleep(idle * 2 / 5).await;
        exchange(&mut client, &mut origin, b"ping", b"pong").await;
        last = Instant::now();
        assert!(!task.is_finished(), "ended while bytes were moving");
    }
    let (stats, result) = timeout(STEP, task).await.unwrap().unwrap();
    result.unwrap();
    assert!(last.elapsed() >= idle - Duration::from_millis(50));
    assert_eq!((stats.up, stats.down, stats.idle_timeout), (12, 12, true));
}

/// A receiver that does not read: what the copy phase could not write at once is kept and
/// sent, in order, once the receiver drains.
#[tokio::test]
async fn a_full_receiver_gets_the_copied_bytes_later_in_order() {
    let (mut client, client_side) = pair().await;
    let (upstream_side, mut origin) = pair().await;
    let mut filled = 0;
    upstream_side.writable().await.unwrap();
    loop {
        match upstream_side.try_write(&[1u8; 64 * 1024]) {
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    let phase = copy_phase(client_side, upstream_side);
    let sent = pattern(100, 8);
    client.write_all(&sent).await.unwrap();
    // Time for the copy phase to read the bytes and find the receiver full.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!phase.is_finished());
    let got = read_n(&mut origin, filled + sent.len()).await;
    assert!(got[..filled].iter().all(|&b| b == 1));
    assert_eq!(got[filled..], sent);
    client.shutdown().await.unwrap();
    let (copied, count, _upstream_side) = timeout(STEP, phase).await.unwrap().unwrap();
    assert_eq!((copied.unwrap(), count), (Copied::Eof, 100));
}

/// A download into a client that never reads, relayed with `idle` and `stop`: the origin
/// writes until every buffer on the way is full (the client's, the pipe, the proxy's send
/// buffer), so the splice phase waits on a write that never completes. Returns the client,
/// the relay and what the origin sends; the origin stays open, so the relay ends only by its
/// own timer or `stop`.
async fn a_download_nobody_reads(
    idle: Duration,
    stop: impl Future<Output = ()> + Send + 'static,
) -> (TcpStream, Relay, Vec<u8>) {
    let (client, client_side) = pair().await;
    let (upstream_side, mut origin) = pair().await;
    let task =
        tokio::spawn(async move { relay_tcp(&client_side, &upstream_side, idle, stop).await });
    let sent = pattern(32 << 20, 17);
    let to_send = sent.clone();
    tokio::spawn(async move {
        // Ends in an error once the relay is gone; what matters is that it never completes.
        // The task then waits forever, holding `origin` open.
        let _ = origin.write_all(&to_send).await;
        pending::<()>().await;
    });
    (client, task, sent)
}

/// A client that stops reading in the middle of a bulk download cannot hold the tunnel (its
/// slot, its pipe and the megabyte in it) past the idle timeout: nothing moved, so it ends,
/// having counted more than the copy phase takes; the client still gets an exact prefix.
#[tokio::test]
async fn a_client_that_stops_reading_in_the_splice_phase_ends_at_the_idle_timeout() {
    let idle = Duration::from_millis(700);
    let started = Instant::now();
    let (mut client, task, sent) = a_download_nobody_reads(idle, pending()).await;
    let (stats, result) = timeout(STEP, task).await.unwrap().unwrap();
    result.unwrap();
    assert!(stats.idle_timeout, "{stats:?}");
    assert!(started.elapsed() >= idle);
    let down = usize::try_from(stats.down).unwrap();
    assert!(down > BUF && down < sent.len(), "{stats:?}");
    let got = read_all(&mut client).await;
    assert!(
        got.len() <= down,
        "{} delivered of {down} counted",
        got.len()
    );
    assert!(
        got == sent[..got.len()],
        "{} bytes, not a prefix",
        got.len()
    );
}

/// A reload that revokes the tunnel ends it while the splice phase waits on a full receiver.
#[tokio::test]
async fn stop_ends_the_splice_phase_while_it_waits_on_a_full_receiver() {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (_client, task, _sent) = a_download_nobody_reads(Duration::from_secs(30), async {
        let _ = stopped.await;
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished());
    stop.send(()).unwrap();
    let (stats, result) = timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
    result.unwrap();
    assert!(!stats.idle_timeout);
    assert!(stats.down > BUF as u64, "{stats:?}");
}

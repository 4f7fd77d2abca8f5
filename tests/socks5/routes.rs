//! The UDP relay's routes as a hostile client or network sees them: replies from someone who
//! is not the destination, a reload that denies a destination mid-stream, and more
//! destinations than one association keeps.

use std::time::Duration;

use crate::support::origin::UdpEcho;
use crate::support::socks::{associate, datagram, within, Association, Dest};
use crate::support::socks_world::{rules_toml, start, strings, Setup};
use tokio::net::UdpSocket;
use tokio::time::timeout;

/// Routes one association keeps (the relay's bound).
const MAX_DESTINATIONS: usize = 256;

/// A destination we play: a socket on loopback.
async fn destination() -> (UdpSocket, u16) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// What `dest` receives next, and from where (the relay's socket for that route).
async fn arrival(dest: &UdpSocket) -> (Vec<u8>, std::net::SocketAddr) {
    let mut buf = [0u8; 256];
    let (n, from) = within("a relayed datagram", dest.recv_from(&mut buf))
        .await
        .unwrap();
    (buf[..n].to_vec(), from)
}

/// Whether `socket` stays silent for a while.
async fn silent(socket: &UdpSocket) -> bool {
    let mut buf = [0u8; 256];
    timeout(Duration::from_millis(300), socket.recv_from(&mut buf))
        .await
        .is_err()
}

/// The association's close line, once its control connection is gone.
async fn close_line(
    proxy: &crate::support::socks_world::Proxy,
    a: Association,
) -> serde_json::Value {
    drop(a);
    within("the association's close line", async {
        loop {
            if let Some(close) = proxy.audit.events("close").pop() {
                return close;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Another local socket learns the port the relay sends from and sends there first: only
/// the destination's own reply comes back, under the destination's header.
#[tokio::test]
async fn udp_replies_from_anyone_but_the_destination_are_not_relayed() {
    let proxy = start(Setup::default()).await;
    let (dest, port) = destination().await;
    let a = associate(proxy.addr, true).await;
    a.send(&datagram(0, Dest::Name(b"udp.test"), port, b"ask"))
        .await;
    let (got, upstream) = arrival(&dest).await;
    assert_eq!(got, b"ask");
    let spoofer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    spoofer.send_to(b"spoofed", upstream).await.unwrap();
    dest.send_to(b"real", upstream).await.unwrap();
    assert_eq!(
        a.recv().await,
        datagram(0, Dest::Name(b"udp.test"), port, b"real")
    );
    assert!(silent(&a.socket).await, "the spoofed reply was relayed");
}

/// A reload that denies a destination mid-stream: its next reply is not relayed, and the
/// client's next datagram to it is denied; both are counted.
#[tokio::test]
async fn udp_a_reload_that_denies_a_destination_stops_it_both_ways() {
    let echo = UdpEcho::start();
    let mut proxy = start(Setup::default()).await;
    let (dest, port) = destination().await;
    let a = associate(proxy.addr, true).await;
    a.send(&datagram(0, Dest::Name(b"udp.test"), port, b"one"))
        .await;
    let (_, upstream) = arrival(&dest).await;
    dest.send_to(b"allowed", upstream).await.unwrap();
    assert_eq!(
        a.recv().await,
        datagram(0, Dest::Name(b"udp.test"), port, b"allowed")
    );

    let deny = Setup::default().deny;
    proxy
        .proxy
        .rewrite(&rules_toml(&strings(&["allowed.test"]), &deny));
    dest.send_to(b"after the reload", upstream).await.unwrap();
    assert!(
        silent(&a.socket).await,
        "a reply of a denied route was relayed"
    );
    a.send(&datagram(0, Dest::Name(b"udp.test"), port, b"two"))
        .await;
    // Handled in order: once this echo is back, the denied datagram was seen.
    a.round_trip(Dest::Name(b"allowed.test"), echo.addr.port(), b"other")
        .await;
    assert!(silent(&dest).await, "a denied datagram was sent");

    let close = close_line(&proxy, a).await;
    assert_eq!(close["datagrams_up"], 2, "{close}");
    assert_eq!(close["datagrams_down"], 2, "{close}");
    assert_eq!(close["datagrams_denied"], 1, "{close}");
    assert_eq!(close["datagrams_dropped"], 1, "{close}");
}

/// One destination more than an association keeps: the least recently used route goes,
/// with its socket (its late reply is lost), the others stay, and the evicted destination
/// is decided afresh when the client comes back to it.
#[tokio::test]
async fn udp_destinations_past_the_bound_drop_the_least_recently_used() {
    let proxy = start(Setup {
        allow: strings(&["127.0.0.1"]),
        ..Setup::default()
    })
    .await;
    let a = associate(proxy.addr, true).await;
    let mut dests = Vec::new();
    for _ in 0..=MAX_DESTINATIONS {
        dests.push(destination().await);
    }
    let to = |i: usize, payload: &[u8]| datagram(0, Dest::V4([127, 0, 0, 1]), dests[i].1, payload);
    let mut upstreams = Vec::new();
    for (i, (dest, _)) in dests[..MAX_DESTINATIONS].iter().enumerate() {
        a.send(&to(i, b"hello")).await;
        upstreams.push(arrival(dest).await.1);
    }
    // The first is used again: the second is now the least recently used.
    a.send(&to(0, b"again")).await;
    assert_eq!(arrival(&dests[0].0).await.0, b"again");
    a.send(&to(MAX_DESTINATIONS, b"one more")).await;
    assert_eq!(arrival(&dests[MAX_DESTINATIONS].0).await.0, b"one more");

    dests[1].0.send_to(b"late", upstreams[1]).await.unwrap();
    dests[0].0.send_to(b"kept", upstreams[0]).await.unwrap();
    assert_eq!(a.recv().await, to(0, b"kept"));
    assert!(
        silent(&a.socket).await,
        "the evicted route's reply was relayed"
    );

    a.send(&to(1, b"back")).await;
    assert_eq!(arrival(&dests[1].0).await.0, b"back");
    let decisions = proxy.audit.events("decision");
    assert_eq!(
        decisions.len(),
        MAX_DESTINATIONS + 2,
        "one more for the evicted one"
    );
    let port = |d: &serde_json::Value| d["port"].as_u64().unwrap() as u16;
    let second = decisions.iter().filter(|d| port(d) == dests[1].1).count();
    assert_eq!(second, 2);
}

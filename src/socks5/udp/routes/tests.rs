use super::*;
use crate::socks5::udp::tests::{gate, policy};

const TO_ONE: &[u8] = b"\x01\x7f\x00\x00\x01\x00\x07";
const TO_TWO: &[u8] = b"\x01\x7f\x00\x00\x02\x00\x07";
const DENIED: &[u8] = b"\x01\x7f\x00\x00\x03\x00\x07";

async fn upstream(addr: &str) -> Upstream {
    Upstream {
        addr: addr.parse().unwrap(),
        socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    }
}

#[tokio::test]
async fn routes_are_found_by_the_destination_as_written() {
    let gate = gate(policy(&["127.0.0.1"]));
    let mut routes = Routes::new(gate.current());
    let one = routes.insert(TO_ONE, Some(upstream("127.0.0.1:7").await));
    let denied = routes.insert(DENIED, None);
    assert_ne!(one, denied);
    assert_eq!(routes.find(TO_ONE), Some(one));
    assert_eq!(routes.find(DENIED), Some(denied));
    assert_eq!(routes.find(TO_TWO), None);
    // The same address written as a name is another destination.
    assert_eq!(routes.find(b"\x03\x09127.0.0.1\x00\x07"), None);
    assert_eq!(routes.find(&TO_ONE[..6]), None);
    assert_eq!(
        routes.reply_header(one),
        Some(&b"\0\0\0\x01\x7f\x00\x00\x01\x00\x07"[..])
    );
    assert_eq!(routes.reply_header(denied), None);
    assert!(routes.upstream(denied).is_none());
    assert_eq!(
        routes.upstream(one).map(|u| u.addr),
        Some("127.0.0.1:7".parse().unwrap())
    );
    routes.remove(one);
    assert_eq!(routes.find(TO_ONE), None);
    assert_eq!(
        routes.insert(TO_TWO, None),
        one,
        "a forgotten route's place is reused"
    );
}

/// Past the bound the least recently used route goes, and only that one.
#[tokio::test]
async fn the_least_recently_used_route_makes_room() {
    let gate = gate(policy(&["127.0.0.1"]));
    let mut routes = Routes::new(gate.current());
    let dest = |i: u16| [&[1, 127, 0, 0, 1][..], &i.to_be_bytes()].concat();
    let first = routes.insert(&dest(0), Some(upstream("127.0.0.1:1").await));
    for i in 1..MAX_DESTINATIONS as u16 {
        routes.find(&dest(i));
        routes.insert(&dest(i), None);
    }
    // The first is used again, so the second is now the oldest.
    assert_eq!(routes.find(&dest(0)), Some(first));
    assert_eq!(routes.find(&dest(MAX_DESTINATIONS as u16)), None);
    routes.insert(&dest(MAX_DESTINATIONS as u16), None);
    assert_eq!(routes.find(&dest(1)), None, "the least recently used went");
    assert_eq!(routes.find(&dest(0)), Some(first));
    for i in 2..=MAX_DESTINATIONS as u16 {
        assert!(routes.find(&dest(i)).is_some(), "{i} stays");
    }
    assert!(routes.upstream(first).is_some());
    assert_eq!(routes.entries.len(), MAX_DESTINATIONS);
}

/// A reload keeps what the new policy still allows, so replies in flight reach the client;
/// what it denies, and every denial, is decided again.
#[tokio::test]
async fn a_reload_keeps_the_routes_it_still_allows() {
    let gate = gate(policy(&["127.0.0.1", "127.0.0.2"]));
    let mut routes = Routes::new(gate.current());
    let one = routes.insert(TO_ONE, Some(upstream("127.0.0.1:7").await));
    let two = routes.insert(TO_TWO, Some(upstream("127.0.0.2:7").await));
    routes.insert(DENIED, None);

    gate.policy()
        .store(Arc::new(policy(&["127.0.0.1", "127.0.0.2"])));
    routes.refresh(&gate);
    assert_eq!(routes.find(TO_ONE), Some(one));
    assert_eq!(routes.find(TO_TWO), Some(two));
    assert_eq!(routes.find(DENIED), None, "a denial is decided again");

    gate.policy().store(Arc::new(policy(&["127.0.0.1"])));
    routes.refresh(&gate);
    assert_eq!(routes.find(TO_ONE), Some(one), "its index is kept");
    assert!(routes.upstream(one).is_some());
    assert_eq!(routes.find(TO_TWO), None);
    assert!(routes.upstream(two).is_none());
    assert!(Arc::ptr_eq(&routes.generation, &gate.current()));
}

/// Readiness is polled from after the last route served, so a busy one cannot starve the
/// others.
#[tokio::test]
async fn readable_routes_take_turns() {
    let gate = gate(policy(&["127.0.0.1"]));
    let mut routes = Routes::new(gate.current());
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut indices = Vec::new();
    for dest in [TO_ONE, TO_TWO] {
        let upstream = upstream("127.0.0.1:7").await;
        sender
            .send_to(b"x", upstream.socket.local_addr().unwrap())
            .await
            .unwrap();
        upstream.socket.readable().await.unwrap();
        indices.push(routes.insert(dest, Some(upstream)));
    }
    let mut served = Vec::new();
    for _ in 0..4 {
        let index = tokio::time::timeout(std::time::Duration::from_secs(5), routes.readable())
            .await
            .expect("both have a datagram");
        served.push(index);
    }
    assert_eq!(served, [indices[0], indices[1], indices[0], indices[1]]);
}

use super::*;
use crate::config::{DnsConfig, Limits};
use crate::dns::Resolver;
use crate::gate::{policy_handle, Gate};
use crate::policy::{Action, Policy, PolicyOptions};

pub(super) fn policy(allow: &[&str]) -> Policy {
    let rules: Vec<(&str, Action)> = allow.iter().map(|&p| (p, Action::Allow)).collect();
    Policy::from_rules(&rules, PolicyOptions::default()).expect("test rules compile")
}

pub(super) fn gate(policy: Policy) -> Gate {
    // IP destinations only: the resolver is never asked.
    let dns = DnsConfig {
        servers: vec!["127.0.0.1:9".parse().unwrap()],
        ..DnsConfig::default()
    };
    Gate::new(policy_handle(policy), Resolver::new(&dns).unwrap())
}

/// A client datagram to `ip:port`.
fn to(ip: [u8; 4], port: u16, frag: u8, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0, 0, frag, 1];
    d.extend_from_slice(&ip);
    d.extend_from_slice(&port.to_be_bytes());
    d.extend_from_slice(payload);
    d
}

/// An association on a fresh relay socket whose source is not fixed yet.
async fn association<'a>(ctx: &'a Ctx, client: &UdpSocket) -> Association<'a> {
    let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bound = relay.local_addr().unwrap();
    Association::new(ctx, client.local_addr().unwrap(), None, None, relay, bound)
}

/// Lets the association handle what its relay socket received until `all` datagrams are
/// accounted for.
async fn handle(association: &mut Association<'_>, slots: &mut Slots, all: u64) {
    let handle = async {
        let mut handled = 0;
        while handled < all {
            association.relay.readable().await.unwrap();
            association.relay_outbound(slots).await.unwrap();
            let s = association.stats;
            handled = s.sent + s.denied + s.dropped;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("every datagram handled");
}

/// The next `n` payloads `socket` receives.
async fn payloads(socket: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..n {
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("a datagram")
            .unwrap();
        got.push(buf[..len].to_vec());
    }
    got
}

#[tokio::test]
async fn counts_denied_foreign_and_fragmented_datagrams() {
    let ctx = Ctx::new(gate(policy(&["127.0.0.1"])), Limits::default());
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let foreign = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut association = association(&ctx, &client).await;
    let relay_addr = association.relay.local_addr().unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    // The foreign one is queued behind the client's first, before the relay is connected.
    let datagrams = [
        (&client, to([127, 0, 0, 1], echo_port, 0, b"one")),
        (&foreign, to([127, 0, 0, 1], echo_port, 0, b"foreign")),
        (&client, to([127, 0, 0, 2], echo_port, 0, b"denied")),
        (&client, to([127, 0, 0, 2], echo_port, 0, b"denied again")),
        (&client, to([127, 0, 0, 1], echo_port, 1, b"fragment")),
        (&client, vec![0, 0, 0, 9, 1]),
        (&client, to([127, 0, 0, 1], echo_port, 0, b"two")),
    ];
    for (from, datagram) in &datagrams {
        from.send_to(datagram, relay_addr).await.unwrap();
    }
    let mut slots = Slots::new().unwrap();
    handle(&mut association, &mut slots, datagrams.len() as u64).await;
    assert_eq!(
        association.stats,
        UdpStats {
            sent: 2,
            received: 0,
            denied: 2,
            dropped: 3,
            bytes_up: 6,
            bytes_down: 0,
        }
    );
    assert_eq!(payloads(&echo, 2).await, [b"one".to_vec(), b"two".to_vec()]);
}

/// More than a batch, to two destinations in turn with denied and malformed datagrams
/// between: each destination gets its datagrams in order, and every one is counted once.
#[tokio::test]
async fn a_mixed_burst_keeps_order_and_counts() {
    let ctx = Ctx::new(gate(policy(&["127.0.0.1"])), Limits::default());
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (a, b) = (
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    );
    let (port_a, port_b) = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    let mut association = association(&ctx, &client).await;
    let relay_addr = association.relay.local_addr().unwrap();
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    let mut all = 0u64;
    for i in 0..50u8 {
        let datagram = match i % 5 {
            0 | 1 => {
                to_a.push(vec![b'a', i]);
                to([127, 0, 0, 1], port_a, 0, &[b'a', i])
            }
            2 => {
                to_b.push(vec![b'b', i]);
                to([127, 0, 0, 1], port_b, 0, &[b'b', i])
            }
            3 => to([127, 0, 0, 3], port_a, 0, b"denied"),
            _ => vec![0, 0, 0, 1, 127],
        };
        client.send_to(&datagram, relay_addr).await.unwrap();
        all += 1;
    }
    let mut slots = Slots::new().unwrap();
    handle(&mut association, &mut slots, all).await;
    assert_eq!(
        association.stats,
        UdpStats {
            sent: 30,
            received: 0,
            denied: 10,
            dropped: 10,
            bytes_up: 60,
            bytes_down: 0,
        }
    );
    assert_eq!(payloads(&a, 20).await, to_a);
    assert_eq!(payloads(&b, 10).await, to_b);
}

/// A reload between a datagram's decision and its group's send: the send checks the
/// generation again, and the datagram is denied, not sent.
#[tokio::test]
async fn a_reload_before_the_send_denies_what_was_grouped() {
    let ctx = Ctx::new(gate(policy(&["127.0.0.1"])), Limits::default());
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    let mut association = association(&ctx, &client).await;
    let relay_addr = association.relay.local_addr().unwrap();
    let datagram = to([127, 0, 0, 1], echo_port, 0, b"grouped");
    client.send_to(&datagram, relay_addr).await.unwrap();
    let mut slots = Slots::new().unwrap();
    association.relay.readable().await.unwrap();
    assert_eq!(
        batch::recv(&association.relay, &mut slots, false).unwrap(),
        1
    );

    let mut group = Group::new();
    association.forward(&slots, 0, &mut group).await;
    assert_eq!(group.len, 1, "allowed, and waiting for the send");
    ctx.gate.policy().store(Arc::new(policy(&["127.0.0.2"])));
    association.flush(&slots, &mut group).await;
    assert_eq!(
        association.stats,
        UdpStats {
            denied: 1,
            ..UdpStats::default()
        }
    );
    let mut buf = [0u8; 64];
    let late = tokio::time::timeout(Duration::from_millis(200), echo.recv_from(&mut buf)).await;
    assert!(late.is_err(), "a denied datagram was sent");
}

/// A reply that was already queued when a reload denied its route is not relayed.
#[tokio::test]
async fn a_reload_drops_replies_of_a_route_it_denies() {
    let ctx = Ctx::new(gate(policy(&["127.0.0.1"])), Limits::default());
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dest = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dest_port = dest.local_addr().unwrap().port();
    let mut association = association(&ctx, &client).await;
    let relay_addr = association.relay.local_addr().unwrap();
    client
        .send_to(&to([127, 0, 0, 1], dest_port, 0, b"ask"), relay_addr)
        .await
        .unwrap();
    let mut slots = Slots::new().unwrap();
    handle(&mut association, &mut slots, 1).await;
    let mut buf = [0u8; 64];
    let (_, upstream) = dest.recv_from(&mut buf).await.unwrap();
    dest.send_to(b"answer", upstream).await.unwrap();
    let route = tokio::time::timeout(Duration::from_secs(5), association.routes.readable())
        .await
        .expect("the reply is queued");
    ctx.gate.policy().store(Arc::new(policy(&["127.0.0.2"])));
    assert!(!association.relay_inbound(route, &mut slots).await);
    assert_eq!(association.stats.dropped, 1);
    assert_eq!(association.stats.received, 0);
    assert!(
        association.routes.upstream(route).is_none(),
        "route forgotten"
    );
    let late = tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buf)).await;
    assert!(late.is_err(), "a reply of a denied route was relayed");
}

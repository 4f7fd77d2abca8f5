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

#[tokio::test]
async fn counts_denied_foreign_and_fragmented_datagrams() {
    let ctx = Ctx::new(gate(policy(&["127.0.0.1"])), Limits::default());
    let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let foreign = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let mut association = Association::new(&ctx, client.local_addr().unwrap(), None, None, relay);
    let to = |ip: [u8; 4], port: u16, frag: u8, payload: &[u8]| {
        let mut d = vec![0, 0, frag, 1];
        d.extend_from_slice(&ip);
        d.extend_from_slice(&port.to_be_bytes());
        d.extend_from_slice(payload);
        d
    };
    let echo_port = echo.local_addr().unwrap().port();
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
    let mut buf = vec![0u8; BUF];
    let all = datagrams.len() as u64;
    let handle = async {
        let mut handled = 0;
        while handled < all {
            association.sockets.relay.readable().await.unwrap();
            association.relay_outbound(&mut buf).await.unwrap();
            let s = association.stats;
            handled = s.sent + s.denied + s.dropped;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("every datagram handled");
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
    let mut got = [0u8; 16];
    let (n, _) = echo.recv_from(&mut got).await.unwrap();
    assert_eq!(&got[..n], b"one");
    let (n, _) = echo.recv_from(&mut got).await.unwrap();
    assert_eq!(&got[..n], b"two");
}

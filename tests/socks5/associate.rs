//! SOCKS5 UDP ASSOCIATE through the real listener on 127.0.0.1: the relay, its policy
//! decisions, who may use an association, how associations end, and the listener's shutdown
//! waiting for tunnels and associations alike.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use crate::support::origin::{TcpEcho, UdpEcho};
use crate::support::socks::{
    ask, associate, datagram, echo_through, rest, within, Association, Dest, GENERAL_FAILURE, STEP,
};
use crate::support::socks_world::{rules_toml, start, strings, Proxy, Setup};
use egress_proxy::config::Limits;
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout, Instant};

#[tokio::test]
async fn udp_echo_to_an_allowed_address() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup {
        allow: strings(&["127.0.0.1"]),
        ..Setup::default()
    })
    .await;
    let a = associate(proxy.addr, true).await;
    a.round_trip(Dest::V4([127, 0, 0, 1]), port, b"ping").await;
    a.round_trip(Dest::V4([127, 0, 0, 1]), port, &[7u8; 8000])
        .await;
    // Written as IPv4-mapped IPv6, the reply names it the same way.
    let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped();
    a.round_trip(Dest::V6(mapped), port, b"mapped").await;
    assert_eq!(echo.datagrams(), 3);
}

#[tokio::test]
async fn a_closed_association_writes_one_audit_line_with_its_counts() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let a = associate(proxy.addr, true).await;
    a.round_trip(Dest::Name(b"udp.test"), port, b"12345").await;
    a.round_trip(Dest::Name(b"udp.test"), port, &[1u8; 100])
        .await;
    a.send(&datagram(0, Dest::Name(b"denied.test"), port, b"nope"))
        .await;
    a.send(&datagram(1, Dest::Name(b"udp.test"), port, b"fragment"))
        .await;
    // The relay handles datagrams in order: once this echo is back, the two above were seen.
    a.round_trip(Dest::Name(b"udp.test"), port, b"last").await;
    let relay = a.relay;
    drop(a);
    let closes = within("the association's close line", async {
        loop {
            let closes = proxy.audit.events("close");
            if !closes.is_empty() {
                return closes;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(closes.len(), 1, "{closes:?}");
    let close = &closes[0];
    assert_eq!(close["protocol"], "socks-udp");
    assert_eq!(close["relay"], relay.to_string());
    assert_eq!(close["datagrams_up"], 3);
    assert_eq!(close["datagrams_down"], 3);
    assert_eq!(close["datagrams_denied"], 1);
    assert_eq!(close["datagrams_dropped"], 1);
    assert_eq!(close["bytes_up"], 109);
    assert_eq!(close["bytes_down"], 109);
    assert_eq!(close["idle_timeout"], false);
    assert!(close["duration_ms"].is_u64(), "{close}");
}

#[tokio::test]
async fn udp_echo_to_an_allowed_name() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let a = associate(proxy.addr, false).await;
    for i in 0..20u8 {
        a.round_trip(Dest::Name(b"udp.test"), port, &[i; 64]).await;
    }
    // Another spelling of the same name is its own cache entry, and its replies say so.
    a.round_trip(Dest::Name(b"UDP.test."), port, b"spelling")
        .await;
    assert_eq!(echo.datagrams(), 21);
}

#[tokio::test]
async fn udp_through_an_independent_client_implementation() {
    use fast_socks5::client::Socks5Datagram;
    use fast_socks5::util::target_addr::TargetAddr;

    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let control = TcpStream::connect(proxy.addr).await.unwrap();
    let client = within(
        "fast-socks5 associate",
        Socks5Datagram::bind(control, "127.0.0.1:0"),
    )
    .await
    .expect("associate");
    client.send_to(b"hello", ("udp.test", port)).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = within("fast-socks5 recv", client.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from, TargetAddr::Domain("udp.test".to_string(), port));
}

#[tokio::test]
async fn udp_to_denied_destinations_never_arrives() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let a = associate(proxy.addr, true).await;
    for _ in 0..3 {
        for dest in [
            Dest::Name(b"denied.test"),
            Dest::Name(b"unlisted.test"),
            Dest::Name(b"gone.test"),
            Dest::Name(b"bad name"),
            Dest::V4([127, 0, 0, 1]),
        ] {
            a.send(&datagram(0, dest, port, b"must not arrive")).await;
        }
    }
    // Datagrams are handled in order: once this one is echoed the others were dropped.
    a.round_trip(Dest::Name(b"udp.test"), port, b"allowed")
        .await;
    assert_eq!(echo.datagrams(), 1);
    // Each destination was decided, and reported, once.
    assert_eq!(
        proxy.denials("socks-udp"),
        [
            ("denied.test".to_string(), "deny-rule"),
            ("unlisted.test".to_string(), "not-allowed"),
            ("gone.test".to_string(), "dns-failed"),
            (format!("bad name:{port}"), "invalid-host"),
            ("127.0.0.1".to_string(), "not-allowed"),
        ]
    );
    let decisions = proxy.audit.events("decision");
    assert_eq!(decisions.len(), 6);
    assert!(decisions.iter().all(|d| d["protocol"] == "socks-udp"));
    let allowed: Vec<_> = decisions
        .iter()
        .filter(|d| d["verdict"] == "allow")
        .collect();
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0]["host"], "udp.test");
}

#[tokio::test]
async fn udp_from_a_foreign_source_port_is_ignored() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let foreign = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let payload = datagram(0, Dest::Name(b"udp.test"), port, b"foreign");

    // The request named the client's port: nothing else is accepted, even first.
    let a = associate(proxy.addr, true).await;
    foreign.send_to(&payload, a.relay).await.unwrap();
    a.round_trip(Dest::Name(b"udp.test"), port, b"one").await;
    foreign.send_to(&payload, a.relay).await.unwrap();
    a.round_trip(Dest::Name(b"udp.test"), port, b"two").await;
    assert_eq!(echo.datagrams(), 2);

    // The request named no port: the first datagram fixes it.
    let b = associate(proxy.addr, false).await;
    b.round_trip(Dest::Name(b"udp.test"), port, b"three").await;
    foreign.send_to(&payload, b.relay).await.unwrap();
    b.round_trip(Dest::Name(b"udp.test"), port, b"four").await;
    assert_eq!(echo.datagrams(), 4);
    let mut buf = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(200), foreign.recv_from(&mut buf))
            .await
            .is_err(),
        "the foreign socket got a reply"
    );
}

/// Sends one datagram to the relay at argv[1] (hex in argv[2]) from a UDP socket created
/// after `setuid(65534)`, waits a second for an answer, and prints whether one came.
const SEND_AS_NOBODY: &str = r#"
import os, socket, sys
os.setuid(65534)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(1.0)
host, port = sys.argv[1].rsplit(":", 1)
s.sendto(bytes.fromhex(sys.argv[2]), (host, int(port)))
try:
    s.recvfrom(65536)
    print("answered")
except socket.timeout:
    print("ignored")
"#;

/// Issue 11 item 16: with no client port in the ASSOCIATE request, another local user's
/// socket cannot take the association over by sending first; the client (same uid as its
/// control connection) still gets its datagrams relayed.
#[tokio::test]
async fn udp_first_datagram_from_another_users_socket_does_not_take_over() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!("skipped: creating a socket of another uid needs root");
        return;
    }
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let a = associate(proxy.addr, false).await;
    let intruder = datagram(0, Dest::Name(b"udp.test"), port, b"intruder");
    let hex: String = intruder.iter().map(|b| format!("{b:02x}")).collect();
    let run = tokio::process::Command::new("python3")
        .args(["-c", SEND_AS_NOBODY, &a.relay.to_string(), &hex])
        .stdin(Stdio::null())
        .output();
    let out = within("the other user's datagram", run).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ignored");
    assert_eq!(echo.datagrams(), 0, "the other user's datagram was relayed");

    a.round_trip(Dest::Name(b"udp.test"), port, b"the client")
        .await;
    assert_eq!(echo.datagrams(), 1);
}

#[tokio::test]
async fn udp_fragments_and_malformed_headers_are_dropped() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let a = associate(proxy.addr, true).await;
    for frag in [1, 2, 0x81] {
        a.send(&datagram(frag, Dest::Name(b"udp.test"), port, b"fragment"))
            .await;
    }
    a.send(&[0, 0, 0, 9, 1, 2, 3]).await;
    a.send(&[0, 0, 0, 3, 200, b'x']).await;
    a.send(&[0, 0]).await;
    a.round_trip(Dest::Name(b"udp.test"), port, b"whole").await;
    assert_eq!(echo.datagrams(), 1);
}

/// Waits until the relay socket is gone: its port can be bound again.
async fn relay_released(relay: SocketAddr) {
    let deadline = Instant::now() + STEP;
    while UdpSocket::bind(relay).await.is_err() {
        assert!(Instant::now() < deadline, "relay socket {relay} still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn udp_association_ends_with_its_control_connection() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let a = associate(proxy.addr, true).await;
    a.round_trip(Dest::Name(b"udp.test"), port, b"alive").await;
    let Association {
        control,
        socket,
        relay,
    } = a;
    drop(control);
    relay_released(relay).await;
    let late = datagram(0, Dest::Name(b"udp.test"), port, b"late");
    let _ = socket.send_to(&late, relay).await;
    let mut buf = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(200), socket.recv_from(&mut buf))
            .await
            .map_or(true, |r| r.is_err())
    );
    assert_eq!(echo.datagrams(), 1);
}

#[tokio::test]
async fn udp_association_ends_when_idle() {
    let proxy = start(Setup {
        limits: Limits {
            idle_timeout: Duration::from_millis(300),
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    let mut a = associate(proxy.addr, true).await;
    assert_eq!(rest(&mut a.control).await, b"", "control connection closed");
    relay_released(a.relay).await;
}

#[tokio::test]
async fn udp_associations_are_limited() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup {
        limits: Limits {
            max_udp_associations: 1,
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    let a = associate(proxy.addr, true).await;
    let (code, _) = ask(proxy.addr, 3, Dest::V4([0, 0, 0, 0]), 0).await;
    assert_eq!(code, GENERAL_FAILURE);
    a.round_trip(Dest::Name(b"udp.test"), port, b"first still works")
        .await;
    drop(a);
    let deadline = Instant::now() + STEP;
    loop {
        let (code, _) = ask(proxy.addr, 3, Dest::V4([0, 0, 0, 0]), 0).await;
        if code == 0 {
            break;
        }
        assert_eq!(code, GENERAL_FAILURE);
        assert!(
            Instant::now() < deadline,
            "the association slot was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn udp_decisions_are_rechecked_after_a_reload() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = start(Setup::default()).await;
    let a = associate(proxy.addr, true).await;
    a.round_trip(Dest::Name(b"udp.test"), port, b"before").await;

    let mut proxy = proxy;
    let mut reload = |allow: &[&str]| {
        let deny = Setup::default().deny;
        proxy.proxy.rewrite(&rules_toml(&strings(allow), &deny));
    };
    reload(&["allowed.test"]);
    a.send(&datagram(0, Dest::Name(b"udp.test"), port, b"after"))
        .await;
    // Still allowed: proves the denied one above was handled before this one.
    a.round_trip(Dest::Name(b"allowed.test"), port, b"other")
        .await;
    assert_eq!(echo.datagrams(), 2);

    reload(&["udp.test"]);
    a.round_trip(Dest::Name(b"udp.test"), port, b"again").await;
    assert_eq!(echo.datagrams(), 3);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_waits_for_tunnels_and_associations() {
    let echo = TcpEcho::start();
    let proxy = start(Setup::default()).await;
    let (code, mut tunnel) =
        ask(proxy.addr, 1, Dest::Name(b"allowed.test"), echo.addr.port()).await;
    assert_eq!(code, 0);
    echo_through(&mut tunnel, b"twelve bytes").await;
    let association = associate(proxy.addr, true).await;

    let Proxy {
        addr,
        audit,
        proxy: server,
        _dns,
    } = proxy;
    let shutdown = tokio::spawn(server.shutdown(STEP));
    let deadline = Instant::now() + STEP;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown did not wait for the tunnel"
    );
    echo_through(&mut tunnel, b"still open").await;

    drop(tunnel);
    drop(association);
    assert_eq!(within("shutdown", shutdown).await.unwrap(), 0);
    let closes = audit.events("close");

    assert_eq!(closes.len(), 2, "{closes:?}");
    assert_eq!(
        closes
            .iter()
            .filter(|c| c["protocol"] == "socks-udp")
            .count(),
        1,
        "{closes:?}"
    );
    let closes: Vec<_> = closes
        .into_iter()
        .filter(|c| c["protocol"] == "socks-tcp")
        .collect();
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert_eq!(closes[0]["host"], "allowed.test");
    assert_eq!(closes[0]["port"], echo.addr.port());
    assert_eq!(closes[0]["bytes_up"], 22);
    assert_eq!(closes[0]["bytes_down"], 22);
}

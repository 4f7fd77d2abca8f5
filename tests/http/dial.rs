//! Dialling the destination: the address the policy checked is the one dialled (a rebinding
//! name cannot move it), and a name that does not resolve, a refused port and an unanswered
//! connect each get their own status and reason.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

use crate::support::curl::{self, Via};
use crate::support::fake_dns::{Answer, FakeDns};
use crate::support::harness::Proxy;
use crate::support::http::blocking::{connect_tunnel, get};
use crate::support::http_world::{
    assert_denial_body, assert_verdict, standard, zone, World, LOOPBACK,
};
use crate::support::origin::{HttpOrigin, TcpEcho};

/// A loopback listener whose accept queue is full drops new SYNs, so a connect to it hangs
/// until the proxy's connect timeout.
#[test]
fn unanswered_connect_is_504_connect_timeout() {
    let dns = FakeDns::start(zone());
    let proxy = standard(&dns)
        .limits(|l| l.connect_timeout = Duration::from_millis(500))
        .start_blocking();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((LOOPBACK, 0).into()).unwrap();
        socket.listen(0).unwrap()
    });
    let addr = listener.local_addr().unwrap();
    // Fill the accept queue until a connect hangs.
    let mut fillers = Vec::new();
    let full =
        (0..8).any(
            |_| match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(stream) => {
                    fillers.push(stream);
                    false
                }
                Err(_) => true,
            },
        );
    assert!(
        full,
        "could not fill the accept queue of a loopback listener"
    );

    let reply = get(proxy.addr, &format!("http://allowed.test:{}/", addr.port()));
    assert_eq!(
        (reply.status, reply.header("x-proxy-error")),
        (504, Some("connect-timeout")),
        "{reply:?}"
    );
    let (_, reply) = connect_tunnel(proxy.addr, &format!("allowed.test:{}", addr.port()));
    assert_eq!(
        (reply.status, reply.header("x-proxy-error")),
        (504, Some("connect-timeout")),
        "{reply:?}"
    );
    drop(listener);
}

#[test]
fn closed_port_is_502_connect_refused() {
    let w = World::start();
    let closed = TcpListener::bind((LOOPBACK, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let reply = get(
        w.proxy.addr,
        &format!("http://allowed.test:{}/", closed.port()),
    );
    assert_eq!(
        (reply.status, reply.header("x-proxy-error")),
        (502, Some("connect-refused")),
        "{reply:?}"
    );
    let (_, reply) = connect_tunnel(w.proxy.addr, &format!("allowed.test:{}", closed.port()));
    assert_eq!(
        (reply.status, reply.header("x-proxy-error")),
        (502, Some("connect-refused")),
        "{reply:?}"
    );
}

#[test]
fn nxdomain_is_502_dns_failed() {
    let w = World::start();
    let reply = get(w.proxy.addr, &w.url("gone.test", "/"));
    assert_verdict(&reply, 502, "blocked-by-policy", "dns-failed");
    assert_denial_body(&reply, &w.at_origin("gone.test"), "dns-failed", "nxdomain");
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("gone.test"));
    assert_verdict(&reply, 502, "blocked-by-policy", "dns-failed");
    w.assert_nothing_reached_upstream();
}

#[test]
fn dns_timeout_is_502_dns_failed() {
    let w = World::with(|b| b.dns_timeout(Duration::from_millis(300)));
    let reply = get(w.proxy.addr, &w.url("silent.test", "/"));
    assert_verdict(&reply, 502, "blocked-by-policy", "dns-failed");
    assert!(reply.body.contains("timed out"), "{reply:?}");
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("silent.test"));
    assert_verdict(&reply, 502, "blocked-by-policy", "dns-failed");
    w.assert_nothing_reached_upstream();
}

#[test]
fn allowed_name_resolving_to_loopback_is_refused_without_local_binding() {
    let w = World::with(|b| b.allow_local_binding(false));
    let reply = get(w.proxy.addr, &w.url("allowed.test", "/"));
    assert_verdict(&reply, 403, "blocked-by-policy", "dns-non-public:loopback");
    assert_denial_body(
        &reply,
        &w.at_origin("allowed.test"),
        "dns-non-public:loopback",
        "`allowed.test`",
    );
    let (_, reply) = connect_tunnel(w.proxy.addr, &w.at_echo("allowed.test"));
    assert_verdict(&reply, 403, "blocked-by-policy", "dns-non-public:loopback");
    let reply = curl::reply(Via::Proxy(&w.proxy.url()), &[&w.url("allowed.test", "/")]);
    assert_verdict(&reply, 403, "blocked-by-policy", "dns-non-public:loopback");
    w.assert_nothing_reached_upstream();
}

/// `rebind.test` answers 127.0.0.1 to the first lookup and 127.0.0.2 afterwards. The origin
/// listens on 127.0.0.1 only, so a dial to anything but the checked address is refused.
#[test]
fn rebinding_name_is_dialled_only_at_the_address_that_was_checked() {
    let dns = FakeDns::start(vec![(
        "rebind.test",
        Answer::Sequence(vec![
            Answer::A(vec![LOOPBACK]),
            Answer::A(vec![Ipv4Addr::new(127, 0, 0, 2)]),
        ]),
    )]);
    let origin = HttpOrigin::start();
    let proxy = Proxy::builder()
        .allow("rebind.test")
        .allow_local_binding(true)
        .dns(&dns)
        .start_blocking();
    let url = format!("http://rebind.test:{}/first", origin.addr.port());

    let first = curl::reply(Via::Proxy(&proxy.url()), &[&url]);
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(origin.request_count(), 1);
    // Exactly one lookup (A + AAAA) for that connection: the proxy did not resolve again
    // between checking and dialling.
    assert_eq!(dns.queries("rebind.test"), 2);

    let second = get(proxy.addr, &url);
    assert_eq!(
        (second.status, second.header("x-proxy-error")),
        (502, Some("connect-refused")),
        "{second:?}"
    );
    assert!(second.body.contains("rebind.test"), "{second:?}");
    assert!(
        dns.queries("rebind.test") > 2,
        "the second connection resolved again"
    );
    assert_eq!(
        origin.request_count(),
        1,
        "the second answer reached the origin"
    );
}

#[test]
fn rebinding_name_in_a_connect_tunnel_is_dialled_only_at_the_checked_address() {
    let dns = FakeDns::start(vec![(
        "rebind.test",
        Answer::Sequence(vec![
            Answer::A(vec![LOOPBACK]),
            Answer::A(vec![Ipv4Addr::new(127, 0, 0, 2)]),
        ]),
    )]);
    let echo = TcpEcho::start();
    let proxy = Proxy::builder()
        .allow("rebind.test")
        .allow_local_binding(true)
        .dns(&dns)
        .start_blocking();
    let target = format!("rebind.test:{}", echo.addr.port());

    let (mut stream, reply) = connect_tunnel(proxy.addr, &target);
    assert_eq!(reply.status, 200, "{reply:?}");
    stream.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    stream.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"ping");
    assert_eq!(dns.queries("rebind.test"), 2);

    let (_, reply) = connect_tunnel(proxy.addr, &target);
    assert_eq!(
        (reply.status, reply.header("x-proxy-error")),
        (502, Some("connect-refused")),
        "{reply:?}"
    );
    assert_eq!(echo.connections(), 1);
}

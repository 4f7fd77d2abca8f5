//! Session credentials on the SOCKS5 listener (`run`'s default): the greeting must offer
//! RFC 1929 username/password and the credentials must be `egress` and the token, before any
//! request is read. A client offering only "no authentication" gets method 0xFF; wrong
//! credentials get the RFC 1929 failure status and the connection closes. Nothing is decided
//! or resolved for a client that did not authenticate. A UDP association is authorised by its
//! control connection.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::curl::{self, Via};
use crate::support::origin::{HttpOrigin, TcpEcho, UdpEcho};
use crate::support::socks::{
    datagram, echo_through, read_reply, request, rest, within, Dest, CONNECT,
};
use crate::support::socks_world::{start, strings, Proxy, Setup};
use egress_proxy::session::SessionToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const TOKEN: &str = "50c55e55105050c55e55105050c55e55";

async fn proxy(allow: &[&str]) -> Proxy {
    start(Setup {
        allow: strings(allow),
        session: Some(SessionToken::parse(TOKEN).unwrap()),
        ..Setup::default()
    })
    .await
}

/// VER ULEN UNAME PLEN PASSWD.
fn user_pass(user: &[u8], password: &[u8]) -> Vec<u8> {
    let mut out = vec![1, u8::try_from(user.len()).unwrap()];
    out.extend_from_slice(user);
    out.push(u8::try_from(password.len()).unwrap());
    out.extend_from_slice(password);
    out
}

/// Sends `greeting`, returns the method the proxy chose and the stream.
async fn greet_with(addr: SocketAddr, greeting: &[u8]) -> ([u8; 2], TcpStream) {
    let mut stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    stream.write_all(greeting).await.unwrap();
    let mut method = [0u8; 2];
    within("method", stream.read_exact(&mut method))
        .await
        .unwrap();
    (method, stream)
}

/// Offers username/password, sends `auth` and returns the status and the stream.
async fn authenticate(addr: SocketAddr, auth: &[u8]) -> ([u8; 2], TcpStream) {
    let (method, mut stream) = greet_with(addr, &[5, 2, 0, 2]).await;
    assert_eq!(method, [5, 2], "username/password is chosen when offered");
    stream.write_all(auth).await.unwrap();
    let mut status = [0u8; 2];
    within("status", stream.read_exact(&mut status))
        .await
        .unwrap();
    (status, stream)
}

async fn good(addr: SocketAddr) -> TcpStream {
    let (status, stream) = authenticate(addr, &user_pass(b"egress", TOKEN.as_bytes())).await;
    assert_eq!(status, [1, 0]);
    stream
}

#[tokio::test]
async fn a_client_offering_only_no_authentication_gets_0xff() {
    let proxy = proxy(&["allowed.test"]).await;
    // With credentials the selection depends on the greeting: nothing is sent before it.
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(200), silent.read(&mut byte)).await;
    assert!(early.is_err(), "nothing before the greeting: {early:?}");
    for greeting in [&[5, 1, 0][..], &[5, 2, 0, 1], &[5, 0]] {
        let (method, mut stream) = greet_with(proxy.addr, greeting).await;
        assert_eq!(method, [5, 0xff], "{greeting:?}");
        // Whatever the client sends next is never read as a request.
        let _ = stream
            .write_all(&request(CONNECT, Dest::Name(b"allowed.test"), 80))
            .await;
        assert_eq!(rest(&mut stream).await, b"", "{greeting:?}");
    }
    assert_eq!(proxy._dns.queries("allowed.test"), 0);
    assert!(proxy.audit.events("decision").is_empty());
}

#[tokio::test]
async fn wrong_credentials_get_the_failure_status_and_the_connection_closes() {
    let proxy = proxy(&["allowed.test"]).await;
    let upper = TOKEN.to_uppercase();
    let long = [b'x'; 255];
    let cases: Vec<Vec<u8>> = vec![
        user_pass(b"egress", upper.as_bytes()),
        user_pass(b"egress", &TOKEN.as_bytes()[..31]),
        user_pass(b"egress", &TOKEN.as_bytes()[..1]),
        user_pass(b"egress", b""),
        user_pass(b"", TOKEN.as_bytes()),
        user_pass(b"", b""),
        user_pass(b"root", TOKEN.as_bytes()),
        user_pass(b"EGRESS", TOKEN.as_bytes()),
        user_pass(&long, &long),
        // The RFC 1928 version where RFC 1929's belongs.
        [&[5][..], &user_pass(b"egress", TOKEN.as_bytes())[1..]].concat(),
    ];
    for auth in &cases {
        let (status, mut stream) = authenticate(proxy.addr, auth).await;
        assert_eq!(status, [1, 1], "{auth:?}");
        let _ = stream
            .write_all(&request(CONNECT, Dest::Name(b"allowed.test"), 80))
            .await;
        assert_eq!(rest(&mut stream).await, b"", "{auth:?}");
    }
    assert_eq!(proxy._dns.queries("allowed.test"), 0);
    assert!(proxy.audit.events("decision").is_empty());
}

#[tokio::test]
async fn a_truncated_request_is_never_answered_success() {
    let proxy = proxy(&["allowed.test"]).await;
    // ULEN promises more than arrives before the client closes its side.
    let (method, mut stream) = greet_with(proxy.addr, &[5, 1, 2]).await;
    assert_eq!(method, [5, 2]);
    stream.write_all(&[1, 6, b'e', b'g']).await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(rest(&mut stream).await, b"");
}

#[tokio::test]
async fn with_credentials_connect_tunnels_and_the_policy_still_decides() {
    let echo = TcpEcho::start();
    let proxy = proxy(&["allowed.test"]).await;
    let mut stream = good(proxy.addr).await;
    stream
        .write_all(&request(
            CONNECT,
            Dest::Name(b"allowed.test"),
            echo.addr.port(),
        ))
        .await
        .unwrap();
    assert_eq!(read_reply(&mut stream).await.0, 0);
    echo_through(&mut stream, b"through").await;

    let mut stream = good(proxy.addr).await;
    stream
        .write_all(&request(CONNECT, Dest::Name(b"denied.test"), 80))
        .await
        .unwrap();
    assert_eq!(read_reply(&mut stream).await.0, 2);
}

/// Greeting, credentials and request in one write, as some clients pipeline them.
#[tokio::test]
async fn a_pipelined_handshake_works() {
    let echo = TcpEcho::start();
    let proxy = proxy(&["allowed.test"]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let port = echo.addr.port();
    let all = [
        &[5, 1, 2][..],
        &user_pass(b"egress", TOKEN.as_bytes()),
        &request(CONNECT, Dest::Name(b"allowed.test"), port),
        b"early",
    ]
    .concat();
    stream.write_all(&all).await.unwrap();
    let mut head = [0u8; 4];
    within("method and status", stream.read_exact(&mut head))
        .await
        .unwrap();
    assert_eq!(head, [5, 2, 1, 0]);
    assert_eq!(read_reply(&mut stream).await.0, 0);
    let mut early = [0u8; 5];
    within("early data echoed", stream.read_exact(&mut early))
        .await
        .unwrap();
    assert_eq!(&early, b"early");
}

#[tokio::test]
async fn curl_sends_the_credentials_from_a_socks5h_url() {
    let origin = HttpOrigin::start();
    let proxy = proxy(&["allowed.test"]).await;
    let url = format!("http://allowed.test:{}/s", origin.addr.port());
    let with = format!("socks5h://egress:{TOKEN}@{}", proxy.addr);
    curl::run_async(Via::Proxy(&with), &[&url])
        .await
        .assert_stdout("origin saw GET /s body=0");
    let without = curl::run_async(Via::Socks5Hostname(proxy.addr), &[&url]).await;
    assert_ne!(without.exit, Some(0), "{}", without.stderr);
    let wrong = format!("socks5h://egress:{}@{}", &TOKEN[..31], proxy.addr);
    let wrong = curl::run_async(Via::Proxy(&wrong), &[&url]).await;
    assert_ne!(wrong.exit, Some(0), "{}", wrong.stderr);
    assert_eq!(origin.request_count(), 1);
}

/// The association is authorised by its control connection's handshake; datagrams carry no
/// credentials. Without them there is no association at all.
#[tokio::test]
async fn udp_associate_after_authenticating() {
    let echo = UdpEcho::start();
    let port = echo.addr.port();
    let proxy = proxy(&["127.0.0.1"]).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut control = good(proxy.addr).await;
    let own = socket.local_addr().unwrap().port();
    control
        .write_all(&request(3, Dest::V4([0, 0, 0, 0]), own))
        .await
        .unwrap();
    let (code, relay) = read_reply(&mut control).await;
    assert_eq!(code, 0);
    let sent = datagram(0, Dest::V4([127, 0, 0, 1]), port, b"udp ping");
    socket.send_to(&sent, relay).await.unwrap();
    let mut buf = [0u8; 1024];
    let (n, _) = within("UDP echo", socket.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf[..n], &sent[..]);
    assert_eq!(echo.datagrams(), 1);

    let (method, _) = greet_with(proxy.addr, &[5, 1, 0]).await;
    assert_eq!(method, [5, 0xff]);
}

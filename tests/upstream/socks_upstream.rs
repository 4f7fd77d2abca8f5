//! `socks5://` (the checked address is sent) and `socks5h://` (the name is sent) upstreams,
//! with RFC 1929 authentication.

use crate::support::http::proxy_get;
use crate::support::socks;
use crate::support::upstream::SocksUpstream;
use crate::*;

#[tokio::test]
async fn socks5_sends_the_checked_address_and_socks5h_the_name() {
    let (dns, echo) = (dns(), echo());
    let rows = [
        ("socks5", "ip 127.0.0.1:443"),
        ("socks5h", "name allowed.test:443"),
    ];
    for (scheme, asked) in rows {
        let upstream = SocksUpstream::start(echo.addr, None);
        let url = format!("{scheme}://{}", upstream.addr);
        let proxy = proxy(&dns).env("ALL_PROXY", &url).start().await;
        let (reply, mut stream) = tunnel(proxy.addr, "allowed.test:443").await;
        assert_eq!(reply.status, 200, "{scheme}: {}", reply.body);
        assert_echoes(&mut stream).await;
        drop(stream);
        let (code, mut stream) = socks::ask(
            proxy.socks_addr(),
            socks::CONNECT,
            socks::Dest::Name(b"allowed.test"),
            443,
        )
        .await;
        assert_eq!(code, socks::SUCCEEDED, "{scheme}");
        socks::echo_through(&mut stream, b"socks over socks").await;
        drop(stream);
        assert_eq!(upstream.asked(), [asked, asked], "{scheme}");
        let closes = closed_tunnels(&proxy, 2).await;
        assert!(
            closes.iter().all(|c| c["upstream"] == url.as_str()),
            "{closes:?}"
        );
    }
}

#[tokio::test]
async fn plain_http_goes_through_a_socks_tunnel() {
    let dns = dns();
    let origin = crate::support::origin::HttpOrigin::start();
    let upstream = SocksUpstream::start(origin.addr, None);
    let proxy = proxy(&dns)
        .env("ALL_PROXY", &format!("socks5h://{}", upstream.addr))
        .start()
        .await;
    let reply = proxy_get(proxy.addr, "allowed.test:8080", "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "origin saw GET /path body=0");
    assert_eq!(upstream.asked(), ["name allowed.test:8080"]);
}

#[tokio::test]
async fn rfc_1929_credentials() {
    let (dns, echo) = (dns(), echo());
    let upstream = SocksUpstream::start(echo.addr, Some(("corp", SECRET)));
    let good = format!("socks5h://corp:{SECRET}@{}", upstream.addr);
    let proxy = proxy(&dns).toml(&upstream_toml(&good, "")).start().await;
    let (reply, mut stream) = tunnel(proxy.addr, "allowed.test:443").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_echoes(&mut stream).await;
    assert_eq!(upstream.asked(), ["name allowed.test:443"]);
    for url in [
        format!("socks5h://corp:wrong@{}", upstream.addr),
        format!("socks5h://{}", upstream.addr),
    ] {
        let proxy = crate::proxy(&dns)
            .toml(&upstream_toml(&url, ""))
            .start()
            .await;
        let (reply, _) = tunnel(proxy.addr, "allowed.test:443").await;
        assert_eq!(
            reply.verdict(),
            (502, Some("upstream-auth"), Some("upstream-auth")),
            "{url}: {}",
            reply.body
        );
        assert!(!reply.body.contains(SECRET));
    }
    assert_eq!(
        upstream.asked().len(),
        1,
        "no CONNECT without the right credentials"
    );
}

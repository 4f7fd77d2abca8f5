//! Which connections take which upstream, and what a SOCKS5 upstream is asked for.

use super::*;
use crate::config::{load_texts, ProxyEnv, Sources};

fn chain(text: &str, env: &[(&str, &str)]) -> Chain {
    let sources = Sources {
        env: ProxyEnv::from_vars(env.iter().copied()),
        ..Sources::default()
    };
    let config = load_texts(&[("p.toml", text)], None, &sources).unwrap();
    let own: [SocketAddr; 1] = ["127.0.0.1:3128".parse().unwrap()];
    Chain::new(&config.upstream, &own)
        .unwrap()
        .expect("an upstream applies")
}

fn via(chain: &Chain, protocol: Protocol, dest: &str) -> String {
    let target = Target::parse_authority(dest, Some(443)).unwrap();
    chain
        .for_target(protocol, &target)
        .map_or("direct".to_string(), |p| p.label().to_string())
}

#[test]
fn each_protocol_takes_its_upstream_and_exceptions_go_direct() {
    let env = [
        ("HTTPS_PROXY", "http://tunnel.test:1"),
        ("http_proxy", "http://u:hunter2@forward.test:2"),
        ("NO_PROXY", "internal.test,10.0.0.0/8"),
    ];
    let chain = chain("", &env);
    let rows = [
        (Protocol::Connect, "a.test", "http://tunnel.test:1"),
        (Protocol::SocksTcp, "a.test:22", "http://tunnel.test:1"),
        (Protocol::Http, "a.test:80", "http://u:***@forward.test:2"),
        (Protocol::SocksUdp, "a.test:53", "direct"),
        (Protocol::Unix, "a.test:80", "direct"),
        (Protocol::Connect, "api.internal.test", "direct"),
        (Protocol::Connect, "10.1.2.3", "direct"),
        (Protocol::Connect, "localhost", "direct"),
        (Protocol::Connect, "x.localhost", "direct"),
        (Protocol::Connect, "127.0.0.9", "direct"),
        (Protocol::Connect, "[::1]", "direct"),
        (Protocol::Connect, "[::ffff:127.0.0.1]", "direct"),
        (Protocol::Connect, "192.0.2.1", "http://tunnel.test:1"),
    ];
    for (protocol, dest, want) in rows {
        assert_eq!(via(&chain, protocol, dest), want, "{protocol} {dest}");
    }
    assert_eq!(
        chain.to_string(),
        "tunnels via http://tunnel.test:1, plain HTTP via http://u:***@forward.test:2, direct for no_proxy internal.test,10.0.0.0/8"
    );
    let only_tunnels = self::chain("", &[("HTTPS_PROXY", "tunnel.test:1")]);
    assert_eq!(via(&only_tunnels, Protocol::Http, "a.test:80"), "direct");
}

#[test]
fn credentials_become_a_sensitive_basic_header() {
    let chain = chain(
        "[upstream]\nurl = \"http://me%40corp:p%3Aw@corp.test:3128\"\n",
        &[],
    );
    let proxy = chain.tunnel.as_ref().unwrap();
    let value = proxy.authorization().unwrap();
    assert!(value.is_sensitive());
    // base64("me@corp:p:w")
    assert_eq!(value.to_str().unwrap(), "Basic bWVAY29ycDpwOnc=");
    assert!(
        Arc::ptr_eq(proxy, chain.forward.as_ref().unwrap()),
        "one proxy, shared"
    );
    assert_eq!(
        format!("{proxy:?}"),
        "Proxy(\"http://me%40corp:***@corp.test:3128\")"
    );
}

#[test]
fn own_listeners_are_recognised_on_every_spelling() {
    let own: [SocketAddr; 2] = [
        "127.0.0.1:3128".parse().unwrap(),
        "0.0.0.0:8081".parse().unwrap(),
    ];
    let rows = [
        ("127.0.0.1:3128", true),
        ("[::ffff:127.0.0.1]:3128", true),
        ("127.0.0.2:3128", false),
        ("127.0.0.1:3129", false),
        ("127.0.0.5:8081", true),
        ("[::1]:8081", true),
        ("192.0.2.1:8081", false),
    ];
    for (addr, want) in rows {
        assert_eq!(is_own(&own, addr.parse().unwrap()), want, "{addr}");
    }
}

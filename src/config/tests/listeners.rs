//! Listener addresses: URLs, flags, ports and the loopback rules.

use super::*;

#[test]
fn listen_flags_obey_the_loopback_rules_and_lose_to_requirements() {
    let sources = Sources {
        http_listen: Some(addr("127.0.0.1:0")),
        socks_listen: Some(addr("[::1]:0")),
        ..Sources::default()
    };
    let got = ok(
        &[("l.toml", "proxy_url = 'http://127.0.0.1:3000'")],
        None,
        &sources,
    );
    assert_eq!(
        (got.proxy_addr, got.socks_addr),
        (addr("127.0.0.1:0"), addr("[::1]:0"))
    );
    let exposed = Sources {
        http_listen: Some(addr("0.0.0.0:3128")),
        ..Sources::default()
    };
    assert_eq!(
        err(&[], None, &exposed),
        "--http-listen: `proxy_url` listens on non-loopback address 0.0.0.0:3128; set `dangerously_allow_non_loopback_proxy = true` to allow it"
    );
    let req = ("r.toml", "[experimental_network]\nhttp_port = 5000\n");
    assert_eq!(
        ok(&[], Some(req), &sources).proxy_addr,
        addr("127.0.0.1:5000")
    );
}

#[test]
fn listener_checks() {
    let unix = "unix_sockets = { '/run/docker.sock' = 'allow' }\n";
    let cases = [
        ("proxy_url = 'http://0.0.0.0:3128'", "l.toml:1:13: `proxy_url` listens on non-loopback address 0.0.0.0:3128; set `dangerously_allow_non_loopback_proxy = true` to allow it"),
        ("socks_url = 'socks5://[::]:1080'", "l.toml:1:13: `socks_url` listens on non-loopback address [::]:1080; set `dangerously_allow_non_loopback_proxy = true` to allow it"),
        ("admin_url = 'http://192.168.1.2:8080'\ndangerously_allow_non_loopback_proxy = true", "l.toml:1:13: `admin_url` listens on non-loopback address 192.168.1.2:8080; set `dangerously_allow_non_loopback_admin = true` to allow it"),
        ("proxy_url = 'http://'", "l.toml:1:13: `proxy_url` has no host: `http://` (write e.g. `http://127.0.0.1:3128`)"),
        ("socks_url = 'https://127.0.0.1:1'", "l.toml:1:13: `socks_url` must use `http://` or `socks5://` or `socks5h://`, got `https://`"),
        ("proxy_url = 'http://proxy.internal:3128'", "l.toml:1:13: `proxy_url` host must be an IP address or `localhost`, got `proxy.internal`"),
    ];
    for (text, want) in cases {
        assert_eq!(err(&[("l.toml", text)], None, &flags()), want, "{text}");
    }

    let exposed =
        "proxy_url = 'http://0.0.0.0:3128'\ndangerously_allow_non_loopback_proxy = true\n";
    let got = ok(&[("l.toml", exposed)], None, &flags());
    assert_eq!(got.proxy_addr, addr("0.0.0.0:3128"));
    let admin = "admin_url = 'http://0.0.0.0:9000'\ndangerously_allow_non_loopback_admin = true\n";
    assert_eq!(
        ok(&[("l.toml", admin)], None, &flags()).admin_addr,
        addr("0.0.0.0:9000")
    );
    // The admin listener is not a bridge to Unix sockets; only proxy listeners are forced.
    let admin_with_unix = format!("{admin}{unix}");
    assert_eq!(
        ok(&[("l.toml", &admin_with_unix)], None, &flags()).admin_addr,
        addr("0.0.0.0:9000")
    );

    let forced = "l.toml:1:13: `proxy_url` listens on non-loopback address 0.0.0.0:3128, but listeners stay on loopback while Unix sockets are allowed";
    assert_eq!(
        err(&[("l.toml", &format!("{exposed}{unix}"))], None, &flags()),
        forced
    );
    let all_unix = format!("{exposed}dangerously_allow_all_unix_sockets = true\n");
    assert_eq!(err(&[("l.toml", &all_unix)], None, &flags()), forced);
    // A socket allowed only by the requirements forces loopback just the same.
    let req = "experimental_network.unix_sockets = { '/run/x.sock' = 'allow' }\n";
    assert_eq!(
        err(&[("l.toml", exposed)], Some(("r.toml", req)), &flags()),
        forced
    );
    // Denied sockets open nothing, so they do not force loopback.
    let denied = format!("{exposed}unix_sockets = {{ '/run/x.sock' = 'deny' }}\n");
    assert_eq!(
        ok(&[("l.toml", &denied)], None, &flags()).proxy_addr,
        addr("0.0.0.0:3128")
    );
}

/// Codex's own parser takes listener URLs without a scheme or a port; so do we, with each
/// listener's documented default port.
#[test]
fn codex_listener_urls_without_scheme_or_port() {
    let codex = "[network]\nenabled = true\nproxy_url = '127.0.0.1:8080'\nsocks_url = 'localhost'\nadmin_url = 'http://127.0.0.1'\n";
    let got = ok(&[("config.toml", codex)], None, &flags());
    assert_eq!(got.proxy_addr, addr("127.0.0.1:8080"));
    assert_eq!(got.socks_addr, addr("127.0.0.1:8081"));
    assert_eq!(got.admin_addr, addr("127.0.0.1:8080"));
    let native = "proxy_url = 'localhost:3128'\nsocks_url = '[::1]'\n";
    let got = ok(&[("n.toml", native)], None, &flags());
    assert_eq!(
        (got.proxy_addr, got.socks_addr),
        (addr("127.0.0.1:3128"), addr("[::1]:8081"))
    );
    assert_eq!(
        err(
            &[("n.toml", "proxy_url = 'proxy.internal'")],
            None,
            &flags()
        ),
        "n.toml:1:13: `proxy_url` host must be an IP address or `localhost`, got `proxy.internal`"
    );
}

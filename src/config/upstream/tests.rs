//! The upstream settings through `load_texts`: the table, the environment, what turns them
//! off, and the errors, none of which may quote a password.

use crate::config::{load_texts, Config, ProxyEnv, ResolveAt, Sources};

fn with_env(vars: &[(&str, &str)]) -> Sources {
    Sources {
        env: ProxyEnv::from_vars(vars.iter().copied()),
        ..Sources::default()
    }
}

fn load(text: &str, sources: &Sources) -> Config {
    load_texts(&[("p.toml", text)], None, sources).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str, sources: &Sources) -> String {
    let err = load_texts(&[("p.toml", text)], None, sources)
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "a password in: {err}");
    err
}

/// (tunnel, forward) as shown, with where each came from.
fn chosen(config: &Config) -> (Option<String>, Option<String>) {
    let show =
        |c: &Option<crate::config::Chosen>| c.as_ref().map(|c| format!("{} ({})", c.url, c.from));
    (
        show(&config.upstream.tunnel),
        show(&config.upstream.forward),
    )
}

#[test]
fn the_environment_names_the_upstream_with_curls_precedence() {
    let sources = with_env(&[
        ("HTTPS_PROXY", "corp.test:8080"),
        ("http_proxy", "http://u:hunter2@plain.test:3128"),
        ("ALL_PROXY", "socks5h://socks.test"),
        ("NO_PROXY", ".internal.test,10.0.0.0/8"),
    ]);
    let config = load("", &sources);
    assert_eq!(
        chosen(&config),
        (
            Some("http://corp.test:8080 (HTTPS_PROXY)".into()),
            Some("http://u:***@plain.test:3128 (http_proxy)".into())
        )
    );
    assert_eq!(
        config.upstream.no_proxy.entries(),
        [".internal.test", "10.0.0.0/8"]
    );
    assert_eq!(config.upstream.resolve, ResolveAt::Local);
    assert!(!format!("{config:?}").contains("hunter2"));
    let only_all = load("", &with_env(&[("all_proxy", "socks5h://socks.test:1081")]));
    assert_eq!(
        chosen(&only_all),
        (
            Some("socks5h://socks.test:1081 (all_proxy)".into()),
            Some("socks5h://socks.test:1081 (all_proxy)".into())
        )
    );
    assert_eq!(chosen(&load("", &Sources::default())), (None, None));
}

#[test]
fn the_table_replaces_the_environment() {
    let sources = with_env(&[
        ("HTTPS_PROXY", "env.test:1"),
        ("NO_PROXY", "env-exception.test"),
    ]);
    let text = "[upstream]\nurl = \"https://u:hunter2@corp.test\"\nno_proxy = [\"a.test\", \"b.test,c.test\"]\nresolve = \"upstream\"\nca_file = \"/etc/corp-ca.pem\"\n";
    let config = load(text, &sources);
    let from = "https://u:***@corp.test:443 (`[upstream] url` at p.toml:2:7)".to_string();
    assert_eq!(chosen(&config), (Some(from.clone()), Some(from)));
    assert_eq!(
        config.upstream.no_proxy.entries(),
        ["a.test", "b.test", "c.test"]
    );
    assert_eq!(config.upstream.resolve, ResolveAt::Upstream);
    assert_eq!(
        config.upstream.ca_file.as_deref(),
        Some(std::path::Path::new("/etc/corp-ca.pem"))
    );
    // Without `url` the environment names the upstream, and the table's other keys apply.
    let config = load(
        "[upstream]\nno_proxy = \"*\"\nresolve = \"upstream\"\n",
        &sources,
    );
    assert_eq!(
        chosen(&config).0.as_deref(),
        Some("http://env.test:1 (HTTPS_PROXY)")
    );
    assert!(config.upstream.no_proxy.is_all());
    assert_eq!(config.upstream.resolve, ResolveAt::Upstream);
}

#[test]
fn allow_upstream_proxy_false_and_the_flag_dial_directly() {
    let env = [
        ("HTTPS_PROXY", "corp.test:8080"),
        ("http_proxy", "corp.test:8080"),
    ];
    let config = load(
        "allow_upstream_proxy = false\n[upstream]\nurl = \"corp.test:1\"\n",
        &with_env(&env),
    );
    assert!(!config.upstream.is_active());
    assert_eq!(
        config.upstream.off.as_deref(),
        Some("`allow_upstream_proxy = false` at p.toml:1:24")
    );
    let mut sources = with_env(&env);
    sources.no_upstream_proxy = true;
    let config = load("allow_upstream_proxy = true\n", &sources);
    assert!(!config.upstream.is_active());
    assert_eq!(config.upstream.off.as_deref(), Some("--no-upstream-proxy"));
    // A bad variable is not even read when chaining is off.
    let bad = with_env(&[("HTTPS_PROXY", "socks4://corp.test:1")]);
    assert!(!load("allow_upstream_proxy = false\n", &bad)
        .upstream
        .is_active());
}

#[test]
fn errors_name_the_key_or_variable() {
    let none = Sources::default();
    let rows = [
        ("[upstream]\nurl = \"socks4://u:hunter2@corp.test:1\"\n", "p.toml:2:7: `[upstream] url`: unsupported proxy scheme `socks4://` (expected http://, https://, socks5:// or socks5h://)"),
        ("[upstream]\nurl = \"\"\n", "p.toml:2:7: `[upstream] url` must not be empty (set `allow_upstream_proxy = false` to dial directly)"),
        ("[upstream]\nurl = \"http://corp.test:1/x\"\n", "p.toml:2:7: `[upstream] url`: a proxy URL has no path, query or fragment"),
        ("[upstream]\nresolve = \"remote\"\n", "p.toml:2:11: `resolve`: unknown variant `remote`, expected `local` or `upstream`"),
        ("[upstream]\nno_proxy = 3\n", "p.toml:2:12: `no_proxy`: invalid type: integer `3`, expected a string or a list of strings"),
        ("[upstream]\nport = 3\n", "p.toml:2:1: unknown key `port` in `[upstream]` (expected one of: `url`, `no_proxy`, `resolve`, `ca_file`)"),
        ("[upstream]\nurl = \"socks5://corp.test\"\nresolve = \"upstream\"\n", "p.toml:3:11: `resolve = \"upstream\"` needs an upstream that takes names, but socks5://corp.test:1080 (`[upstream] url` at p.toml:2:7) takes addresses: use socks5h://"),
        ("[upstream]\nurl = \"http://u:hunter2@127.0.0.1:3128\"\n", "the upstream proxy http://u:***@127.0.0.1:3128 (`[upstream] url` at p.toml:2:7) is this proxy's own listener 127.0.0.1:3128 (`proxy_url`): every connection would come back here; name another upstream, or dial directly with `allow_upstream_proxy = false` or --no-upstream-proxy"),
        ("admin_url = \"http://0.0.0.0:9000\"\ndangerously_allow_non_loopback_admin = true\n[upstream]\nurl = \"localhost:9000\"\n", "the upstream proxy http://localhost:9000 (`[upstream] url` at p.toml:4:7) is this proxy's own listener 0.0.0.0:9000 (`admin_url`): every connection would come back here; name another upstream, or dial directly with `allow_upstream_proxy = false` or --no-upstream-proxy"),
    ];
    for (text, want) in rows {
        assert_eq!(err(text, &none), want, "{text}");
    }
    let env = with_env(&[("https_proxy", "ftp://u:hunter2@corp.test")]);
    assert_eq!(
        err("", &env),
        "https_proxy (the proxy's environment): unsupported proxy scheme `ftp://` (expected http://, https://, socks5:// or socks5h://); fix it, or dial directly with `allow_upstream_proxy = false` or --no-upstream-proxy"
    );
    let env = with_env(&[("ALL_PROXY", "socks5://127.0.0.1:8081")]);
    assert!(err("", &env).contains("is this proxy's own listener 127.0.0.1:8081 (`socks_url`)"));
    // The SOCKS5 listener that is off is not this proxy; another port is another proxy.
    assert!(load("enable_socks5 = false\n", &env).upstream.is_active());
    let env = with_env(&[("HTTPS_PROXY", "127.0.0.1:3129")]);
    assert!(load("", &env).upstream.is_active());
}

#[test]
fn warnings_for_settings_that_do_nothing() {
    let env = with_env(&[
        ("HTTPS_PROXY", "corp.test:1"),
        ("no_proxy", "a.test:443,ok.test"),
    ]);
    let config = load("[upstream]\nca_file = \"/ca.pem\"\n", &env);
    assert_eq!(
        config.warnings,
        [
            "`a.test:443` in no_proxy never matches: entries are names, IP addresses or CIDR ranges without a port (as curl reads them)",
            "`[upstream] ca_file` at p.toml:2:11 has no effect: no https:// upstream applies",
        ]
    );
}

//! Defaults, every key set once, and value errors at the value.

use super::*;

#[test]
fn defaults_of_every_key() {
    assert_eq!(ok(&[], None, &flags()), defaults(true));
    assert_eq!(ok(&[("p.toml", "")], None, &flags()), defaults(true));
    assert_eq!(
        ok(
            &[("p.toml", "[dns]\n[limits]\n[admin]\n[log]\n[run]\n")],
            None,
            &flags()
        ),
        defaults(true)
    );
    // The documented defaults, spelled out once more so a changed default fails here.
    let d = DnsConfig::default();
    assert_eq!(
        (d.servers.len(), d.timeout, d.multi_answer),
        (
            0,
            Duration::from_millis(2000),
            MultiAnswer::BlockIfAnyNonPublic
        )
    );
    assert_eq!(LogFormat::default(), LogFormat::Text);

    let mut codex = defaults(false);
    codex.warnings = vec!["sandboxed networking is disabled: `enabled` defaults to false in Codex-shaped files and none of config.toml sets it; `serve` and `run` will refuse to start".to_string()];
    assert_eq!(
        ok(
            &[(
                "config.toml",
                "model = 'o3'\n[features]\nweb_search = true\n"
            )],
            None,
            &flags()
        ),
        codex
    );
    // A requirements file alone without `enabled` does not disable a flag-only run.
    assert_eq!(
        ok(&[], Some(("r.toml", "[experimental_network]\n")), &flags()),
        defaults(true)
    );
}

#[test]
fn native_file_with_every_key_set() {
    let text = r#"
enabled = true
mode = "limited"
domains = { "example.com" = "allow", "bad.example.com" = "deny" }
unix_sockets = { "/run/a.sock" = "allow", "/run/b.sock" = "deny", "/run/c.sock" = "none" }
allow_local_binding = true
enable_socks5 = false
enable_socks5_udp = false
allow_upstream_proxy = false
proxy_url = "http://localhost:3000"
socks_url = "socks5h://[::1]:3001"
admin_url = "http://10.0.0.1:3002"
dangerously_allow_non_loopback_proxy = true
dangerously_allow_non_loopback_admin = true
dangerously_allow_all_unix_sockets = false
public_ranges = ["198.18.0.0/15", "::ffff:192.0.2.0/120"]

[dns]
servers = ["127.0.0.1:5353", "10.0.0.53", "[::1]:53"]
timeout_ms = 150
multi_answer = "use-public-only"

[limits]
connect_timeout_ms = 1
idle_timeout_ms = 2
header_timeout_ms = 3
max_header_bytes = 4096
max_connections = 5
max_udp_associations = 6

[admin]
token_file = "/etc/egress/token"

[log]
format = "json"
audit = "-"

[run]
isolate = true
"#;
    let got = ok(&[("all.toml", text)], None, &flags());
    let f = |line: u32, col: u32| Origin::File {
        path: "all.toml".into(),
        line,
        col,
    };
    let want = Config {
        enabled: true,
        mode: Mode::Limited,
        managed_mode: None,
        rules: vec![
            RuleSpec { pattern: "example.com".into(), action: Action::Allow, origin: f(4, 13), managed: false },
            RuleSpec { pattern: "bad.example.com".into(), action: Action::Deny, origin: f(4, 38), managed: false },
        ],
        unix_sockets: vec![
            UnixSocketSpec { path: "/run/a.sock".into(), action: UnixAction::Allow, origin: f(5, 18) },
            UnixSocketSpec { path: "/run/b.sock".into(), action: UnixAction::Deny, origin: f(5, 43) },
        ],
        allow_local_binding: true,
        enable_socks5: false,
        enable_socks5_udp: false,
        allow_upstream_proxy: false,
        public_ranges: PublicRanges::new(
            ["198.18.0.0/15", "::ffff:192.0.2.0/120"].map(|r| r.parse().unwrap()),
        ),
        upstream: UpstreamConfig { off: Some("`allow_upstream_proxy = false` at all.toml:9:24".into()), ..UpstreamConfig::default() },
        proxy_addr: addr("127.0.0.1:3000"),
        socks_addr: addr("[::1]:3001"),
        admin_addr: addr("10.0.0.1:3002"),
        dangerously_allow_non_loopback_proxy: true,
        dangerously_allow_non_loopback_admin: true,
        dangerously_allow_all_unix_sockets: false,
        dns: DnsConfig {
            servers: vec![addr("127.0.0.1:5353"), addr("10.0.0.53:53"), addr("[::1]:53")],
            timeout: Duration::from_millis(150),
            multi_answer: MultiAnswer::UsePublicOnly,
        },
        limits: Limits {
            connect_timeout: Duration::from_millis(1),
            idle_timeout: Duration::from_millis(2),
            header_timeout: Duration::from_millis(3),
            max_header_bytes: 4096,
            max_connections: 5,
            max_udp_associations: 6,
        },
        admin: AdminConfig { token_file: Some("/etc/egress/token".into()) },
        log: LogConfig { format: LogFormat::Json, audit: Some("-".into()) },
        run: RunConfig { isolate: true },
        mitm: MitmConfig::default(),
        http_rules: Vec::new(),
        warnings: vec![
            "`dangerously_allow_non_loopback_proxy = true` at all.toml:13:40: the proxy listeners may be reachable from other hosts".to_string(),
            "`dangerously_allow_non_loopback_admin = true` at all.toml:14:40: the admin API may be reachable from other hosts".to_string(),
            "public ranges declared at all.toml:16:17 widen what \"public\" means: addresses in 198.18.0.0/15, 192.0.2.0/24 are reached like any public address by every allow rule that matches them (`*` included), and a name resolving into them is no longer refused as DNS rebinding".to_string(),
        ],
    };
    assert_eq!(got, want);
}

#[test]
fn value_errors_point_at_the_value() {
    let cases = [
        ("unix_sockets = { 'run/docker.sock' = 'allow' }", "v.toml:1:18: Unix socket path `run/docker.sock` must be absolute"),
        ("[dns]\nservers = ['127.0.0.1', 'dns.google']", "v.toml:2:25: invalid DNS server `dns.google` (expected `IP`, `IP:PORT` or `[IPv6]:PORT`)"),
        ("[dns]\ntimeout_ms = 0", "v.toml:2:14: `[dns] timeout_ms` must be 1-604800000"),
        ("[limits]\nmax_connections = 0", "v.toml:2:19: `[limits] max_connections` must be 1-1000000"),
        ("[limits]\nmax_connections = 18446744073709551615", "v.toml:2:19: `[limits] max_connections` must be 1-1000000"),
        ("[limits]\nmax_udp_associations = 1000001", "v.toml:2:24: `[limits] max_udp_associations` must be 1-1000000"),
        ("[limits]\nmax_header_bytes = 1023", "v.toml:2:20: `[limits] max_header_bytes` must be 1024-417792"),
        ("[limits]\nidle_timeout_ms = 604800001", "v.toml:2:19: `[limits] idle_timeout_ms` must be 1-604800000"),
        ("[admin]\ntoken_file = ''", "v.toml:2:14: `token_file` must not be empty"),
        ("enable_socks5 = 1", "v.toml:1:17: `enable_socks5`: invalid type: integer `1`, expected a boolean"),
        ("mode = 'half'", "v.toml:1:8: `mode`: unknown variant `half`, expected `full` or `limited`"),
        ("[domains]\n\"a.com\" = 'allow'\n\"b.com\" = 'maybe'", "v.toml:3:11: `domains` entry `b.com`: unknown variant `maybe`, expected `allow` or `deny`"),
        ("unix_sockets = { \"/a\" = 'sometimes' }", "v.toml:1:25: `unix_sockets` entry `/a`: unknown variant `sometimes`, expected one of `allow`, `deny`, `none`"),
        ("[dns]\nmulti_answer = 'first'", "v.toml:2:16: `multi_answer`: unknown variant `first`, expected `block-if-any-non-public` or `use-public-only`"),
        ("[log]\nformat = 'xml'", "v.toml:2:10: `format`: unknown variant `xml`, expected `text` or `json`"),
        ("[features.network_proxy]\ndomains = { 'a' = 'none' }", "v.toml:2:19: `domains` entry `a`: unknown variant `none`, expected `allow` or `deny`"),
    ];
    for (text, want) in cases {
        assert_eq!(err(&[("v.toml", text)], None, &flags()), want, "{text}");
    }
}

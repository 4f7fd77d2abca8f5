//! `egress-proxy validate` through the built binary (SPEC section 3): the effective policy in
//! text and JSON, its warnings, and the exact `file:line:col` of every rejected file.

use serde_json::Value;

use crate::cli::{validate_json, warning_lines, Files};
use crate::support::bin::run;

#[test]
fn validate_prints_the_effective_policy() {
    let files = Files::new();
    let p = files.write(
        "good.toml",
        "\
enabled = true
mode = \"limited\"
proxy_url = \"http://127.0.0.1:4128\"
enable_socks5_udp = false
allowed_domains = [\"**.github.com\", \"pypi.org:443\"]
denied_domains = [\"gist.github.com\"]
unix_sockets = { \"/run/docker.sock\" = \"deny\" }

[dns]
servers = [\"127.0.0.1:5353\"]
timeout_ms = 750
",
    );
    let (code, out, err) = run(&["validate", "--config", &p]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        format!(
            "\
policy OK: 3 rules (2 allow, 1 deny), mode limited, enabled
listeners: http 127.0.0.1:4128, socks5 127.0.0.1:8081 (TCP only), admin 127.0.0.1:8080
dns: 127.0.0.1:5353, timeout 750 ms, block-if-any-non-public
allow_local_binding: false
upstream: none (no `[upstream] url`, HTTPS_PROXY, HTTP_PROXY or ALL_PROXY); every connection is direct
rules:
  allow  **.github.com    {p}:5:20
  allow  pypi.org:443     {p}:5:37
  deny   gist.github.com  {p}:6:19
unix sockets:
  deny   /run/docker.sock  {p}:7:18
warning: mode `limited` without mitm: every HTTPS tunnel (CONNECT, SOCKS5) is refused with mitm-required
"
        )
    );
    // --dns-server overrides `[dns] servers`.
    let (code, out, _) = run(&["validate", "--config", &p, "--dns-server", "127.0.0.1:53"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l == "dns: 127.0.0.1:53, timeout 750 ms, block-if-any-non-public"),
        "{out}"
    );
}

#[test]
fn validate_defaults_with_flags_only() {
    let (code, out, err) = run(&[
        "validate",
        "--allow",
        "**.github.com",
        "--deny",
        "gist.github.com",
    ]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "\
policy OK: 2 rules (1 allow, 1 deny), mode full, enabled
listeners: http 127.0.0.1:3128, socks5 127.0.0.1:8081 (with UDP), admin 127.0.0.1:8080
dns: system resolver, timeout 2000 ms, block-if-any-non-public
allow_local_binding: false
upstream: none (no `[upstream] url`, HTTPS_PROXY, HTTP_PROXY or ALL_PROXY); every connection is direct
rules:
  allow  **.github.com    --allow
  deny   gist.github.com  --deny
"
    );
}

#[test]
fn validate_json_is_one_parseable_object() {
    let files = Files::new();
    let p = files.write(
        "j.toml",
        "allowed_domains = [\"a.test\"]\ndenied_domains = [\"b.test\"]\n",
    );
    let (code, out, err) = run(&["validate", "--json", "--config", &p]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["enabled"], true);
    assert_eq!(v["mode"], "full");
    assert_eq!(v["proxy_url"], "http://127.0.0.1:3128");
    assert_eq!(v["socks_url"], "socks5://127.0.0.1:8081");
    assert_eq!(v["admin_url"], "http://127.0.0.1:8080");
    assert_eq!(v["allow_local_binding"], false);
    assert_eq!(v["dns_timeout_ms"], 2000);
    assert_eq!(v["dns_multi_answer"], "block-if-any-non-public");
    assert_eq!(
        v["rules"],
        serde_json::json!([
            {"pattern": "a.test", "action": "allow", "origin": format!("{p}:1:20"), "managed": false},
            {"pattern": "b.test", "action": "deny", "origin": format!("{p}:2:19"), "managed": false},
        ])
    );
    assert_eq!(v["warnings"], serde_json::json!([]));
    assert_eq!(v["run"]["isolate"], false);
    let q = files.write("i.toml", "[run]\nisolate = true\n");
    let (_, out, _) = run(&["validate", "--json", "--config", &q]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["run"]["isolate"], true);
    let (_, out, _) = run(&["validate", "--config", &q]);
    assert!(out.contains("run: isolate"), "{out}");
}

#[test]
fn validate_warns_about_dangerous_and_useless_settings() {
    let files = Files::new();
    let p = files.write(
        "w.toml",
        "\
proxy_url = \"http://0.0.0.0:3128\"
dangerously_allow_non_loopback_proxy = true
allowed_domains = [\"*\", \"api.corp.test\"]
denied_domains = [\"**.corp.test\"]
",
    );
    let (code, out, err) = run(&["validate", "--config", &p]);
    assert_eq!((code, err.as_str()), (0, ""));
    let warnings = warning_lines(&out);
    assert_eq!(
        warnings,
        [
            format!("warning: `dangerously_allow_non_loopback_proxy = true` at {p}:2:40: the proxy listeners may be reachable from other hosts"),
            format!("warning: global `*` allow rule at {p}:3:20: every public host that is not denied is allowed"),
            format!("warning: allow rule `api.corp.test` ({p}:3:25) has no effect: deny rule `**.corp.test` ({p}:4:19) covers everything it allows"),
        ]
    );
    assert!(out.lines().any(|l| l == "listeners: http 0.0.0.0:3128, socks5 127.0.0.1:8081 (with UDP), admin 127.0.0.1:8080"), "{out}");

    let q = files.write(
        "none.toml",
        "denied_domains = [\"evil.test\"]\ndangerously_allow_all_unix_sockets = true\n",
    );
    let (code, out, _) = run(&["validate", "--config", &q]);
    assert_eq!(code, 0);
    let warnings = warning_lines(&out);
    assert_eq!(
        warnings,
        [
            format!("warning: `dangerously_allow_all_unix_sockets = true` at {q}:2:38: every Unix socket that is not denied is reachable"),
            "warning: no allow rule: every destination is blocked".to_string(),
        ]
    );
    // The same warnings in --json.
    let (_, out, _) = run(&["validate", "--json", "--config", &q]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["warnings"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["dangerously_allow_all_unix_sockets"], true);
}

#[test]
fn validate_rejects_bad_files_with_the_exact_line() {
    let native_keys = "`enabled`, `mode`, `domains`, `allowed_domains`, `denied_domains`, `unix_sockets`, `allow_local_binding`, `enable_socks5`, `enable_socks5_udp`, `allow_upstream_proxy`, `public_ranges`, `proxy_url`, `socks_url`, `admin_url`, `dangerously_allow_non_loopback_proxy`, `dangerously_allow_non_loopback_admin`, `dangerously_allow_all_unix_sockets`, `mitm`, `dns`, `limits`, `admin`, `log`, `upstream`, `run`, `http_rules`";
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "typo",
            "enabled = true\n\nallowd_domains = [\"a.test\"]\n",
            format!("3:1: unknown key `allowd_domains` in native policy file (expected one of: {native_keys})"),
        ),
        (
            "typo-dns",
            "[dns]\ntimeout = 300\n",
            "2:1: unknown key `timeout` in `[dns]` (expected one of: `servers`, `timeout_ms`, `multi_answer`)".into(),
        ),
        (
            "inner-wildcard",
            "allowed_domains = [\"ok.test\", \"api.*.com\"]\n",
            "1:31: invalid pattern `api.*.com`: a whole-label `*` is only allowed at the front (`*.example.com` or `**.example.com`)".into(),
        ),
        (
            "global-deny",
            "[domains]\n\"ok.test\" = \"allow\"\n\"*\" = \"deny\"\n",
            "3:1: invalid pattern `*`: `*` cannot be a deny rule: with no allow rule everything is already blocked".into(),
        ),
        (
            "tld-wildcard",
            "allowed_domains = [\"*.com\"]\n",
            "1:20: invalid pattern `*.com`: `*.com` would allow every name under a top-level label; name the domain (`*.example.com`)".into(),
        ),
        (
            "question-glob",
            "allowed_domains = [\"api?.test\"]\n",
            "1:20: invalid pattern `api?.test`: `?` and `[...]` globs are not supported; use `*.example.com`, `**.example.com` or `*` inside one label".into(),
        ),
        (
            "map-and-list",
            "allowed_domains = [\"a.test\"]\ndomains = { \"b.test\" = \"deny\" }\n",
            "2:1: use either `domains` or `allowed_domains`/`denied_domains` in one table, not both".into(),
        ),
        (
            "wrong-type",
            "enabled = \"yes\"\n",
            "1:11: `enabled`: invalid type: string \"yes\", expected a boolean".into(),
        ),
        (
            "wrong-action",
            "[domains]\n\"a.test\" = \"maybe\"\n",
            "2:12: `domains` entry `a.test`: unknown variant `maybe`, expected `allow` or `deny`".into(),
        ),
        (
            "syntax",
            "allowed_domains = [\"a.test\"\n",
            "1:28: unclosed array, expected `]`".into(),
        ),
        (
            "non-loopback",
            "allowed_domains = [\"a.test\"]\nproxy_url = \"http://0.0.0.0:3128\"\n",
            "2:13: `proxy_url` listens on non-loopback address 0.0.0.0:3128; set `dangerously_allow_non_loopback_proxy = true` to allow it".into(),
        ),
        (
            "non-loopback-admin",
            "admin_url = \"http://192.168.1.2:8080\"\n",
            "1:13: `admin_url` listens on non-loopback address 192.168.1.2:8080; set `dangerously_allow_non_loopback_admin = true` to allow it".into(),
        ),
    ];
    let files = Files::new();
    for (name, text, want) in cases {
        let p = files.write(&format!("{name}.toml"), text);
        let (code, out, err) = run(&["validate", "--config", &p]);
        assert_eq!(err, format!("{p}:{want}\n"), "{name}");
        assert_eq!((code, out.as_str()), (1, ""), "{name}");
    }
}

/// Every count and timeout is bounded where it is written: a huge value would otherwise pass
/// `validate` and make a listener panic at start (a semaphore's permit limit, `Instant`
/// overflow), and a zero one would refuse every connection.
#[test]
fn validate_and_check_bound_every_limit_at_its_value() {
    let cases = [
        (
            "[limits]\nmax_connections = 18446744073709551615\n",
            "2:19: `[limits] max_connections` must be 1-1000000",
        ),
        (
            "[limits]\nmax_connections = 0\n",
            "2:19: `[limits] max_connections` must be 1-1000000",
        ),
        (
            "[limits]\nmax_udp_associations = 2305843009213693952\n",
            "2:24: `[limits] max_udp_associations` must be 1-1000000",
        ),
        (
            "[limits]\nmax_header_bytes = 10000000000\n",
            "2:20: `[limits] max_header_bytes` must be 1024-417792",
        ),
        (
            "[limits]\nmax_header_bytes = 16\n",
            "2:20: `[limits] max_header_bytes` must be 1024-417792",
        ),
        (
            "[limits]\nconnect_timeout_ms = 18446744073709551615\n",
            "2:22: `[limits] connect_timeout_ms` must be 1-604800000",
        ),
        (
            "[limits]\nidle_timeout_ms = 604800001\n",
            "2:19: `[limits] idle_timeout_ms` must be 1-604800000",
        ),
        (
            "[limits]\nheader_timeout_ms = 18446744073709551615\n",
            "2:21: `[limits] header_timeout_ms` must be 1-604800000",
        ),
        (
            "[dns]\ntimeout_ms = 18446744073709551615\n",
            "2:14: `[dns] timeout_ms` must be 1-604800000",
        ),
    ];
    let files = Files::new();
    for (i, (text, want)) in cases.into_iter().enumerate() {
        let p = files.write(&format!("l{i}.toml"), text);
        let (code, out, err) = run(&["validate", "--config", &p]);
        assert_eq!(err, format!("{p}:{want}\n"), "{text}");
        assert_eq!((code, out.as_str()), (1, ""), "{text}");
        let (code, out, err) = run(&["check", "--no-dns", "--config", &p, "example.com"]);
        assert_eq!(err, format!("error: {p}:{want}\n"), "{text}");
        assert_eq!((code, out.as_str()), (2, ""), "{text}");
    }
    // The bounds themselves are accepted.
    let edges = "[limits]\nmax_connections = 1000000\nmax_udp_associations = 1\n\
                 max_header_bytes = 417792\nidle_timeout_ms = 604800000\n";
    let p = files.write("edges.toml", edges);
    let (code, _, err) = run(&["validate", "--config", &p]);
    assert_eq!((code, err.as_str()), (0, ""));
}

/// Whoever reads the admin token can loosen the policy, so a token file the group or others
/// can read is a warning in `validate` (text and JSON).
#[test]
fn validate_warns_about_a_token_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let files = Files::new();
    let token = files.write("token", "s3cret\n");
    let p = files.write(
        "p.toml",
        &format!(
            "enabled = true\nallowed_domains = [\"a.test\"]\n[admin]\ntoken_file = {token:?}\n"
        ),
    );
    let set_mode = |mode| {
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    set_mode(0o644);
    let (code, out, _) = run(&["validate", "--config", &p]);
    assert_eq!(code, 0);
    let warnings = warning_lines(&out);
    assert_eq!(
        warnings,
        [format!("warning: `[admin] token_file` {token} is readable by group or others (mode 0644); anyone who reads it can change the policy: `chmod 600` it")],
        "{out}"
    );
    let v = validate_json(&["--config", &p]);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1, "{v}");
    set_mode(0o600);
    let (_, out, _) = run(&["validate", "--config", &p]);
    assert!(!out.contains("warning: "), "{out}");
}

#[test]
fn validate_rejects_an_unknown_profile_and_a_missing_file() {
    let files = Files::new();
    let p = files.write(
        "codex.toml",
        "[permissions.dev.network]\nallowed_domains = [\"a.test\"]\n[permissions.ci.network]\n",
    );
    let (code, out, err) = run(&["validate", "--config", &p, "--profile", "prod"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        "unknown profile `prod` (--profile): defined profiles: `ci`, `dev`\n"
    );

    let missing = &files.path("nope.toml");
    let (code, out, err) = run(&["validate", "--config", missing]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!("cannot read {missing}: No such file or directory\n")
    );
    let (code, _, err) = run(&["validate", "--requirements", missing]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!("cannot read {missing}: No such file or directory\n")
    );
}

//! Identity, not spelling (SPEC section 5): every spelling of a destination meets every rule.
//! Regression tests for the outside review's policy findings, through the built binary's
//! `check` and `validate` and through a real HTTP listener with real requests.
//!
//! `check --no-dns` never connects and never resolves, so the public addresses in these tables
//! are only classified. The listener tests dial nothing but 127.0.0.1.

mod support;

use std::path::Path;

use serde_json::Value;
use support::bin::run;
use support::harness::Proxy;
use support::http::blocking::{connect_tunnel, raw_request};
use support::origin::HttpOrigin;

/// `verdict reason rule` of one target under `--no-dns` and `args`.
fn decide(args: &[&str], target: &str) -> String {
    let mut all = vec!["check", "--json", "--no-dns"];
    all.extend_from_slice(args);
    all.push(target);
    let (code, out, err) = run(&all);
    assert!(code == 0 || code == 1, "{all:?}: exit {code}: {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let rule = v["rule"].as_str().unwrap_or("-");
    format!(
        "{} {} {rule}",
        v["verdict"].as_str().unwrap(),
        v["reason"].as_str().unwrap()
    )
}

/// `(check arguments, target, what `decide` says)`.
type Case<'a> = (&'a [&'a str], &'a str, &'a str);

#[track_caller]
fn assert_decisions(cases: &[Case]) {
    for (args, target, want) in cases {
        assert_eq!(decide(args, target), *want, "{args:?} {target}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn localhost_stands_for_its_addresses_and_meets_ip_deny_rules() {
    let dir = tempfile::tempdir().unwrap();
    let local = write(dir.path(), "local.toml", "allow_local_binding = true\n");
    let managed = write(
        dir.path(),
        "requirements.toml",
        "[experimental_network]\ndenied_domains = ['127.0.0.0/8']\n",
    );
    let cases: &[Case] = &[
        (
            &["--allow", "localhost"],
            "localhost:8999",
            "allow allowed localhost",
        ),
        (
            &[
                "--allow",
                "localhost",
                "--deny",
                "127.0.0.0/8",
                "--deny",
                "::1/128",
            ],
            "localhost:8999",
            "block deny-rule 127.0.0.0/8",
        ),
        (
            &["--allow", "localhost", "--deny", "::1/128"],
            "localhost:8999",
            "block deny-rule ::1/128",
        ),
        (
            &["--allow", "localhost", "--deny", "127.0.0.1:22"],
            "localhost:22",
            "block deny-rule 127.0.0.1:22",
        ),
        (
            &["--allow", "localhost", "--deny", "127.0.0.1:22"],
            "localhost:80",
            "allow allowed localhost",
        ),
        (
            &["--allow", "localhost", "--requirements", &managed],
            "localhost:8999",
            "block deny-rule 127.0.0.0/8",
        ),
        (
            &[
                "--config",
                &local,
                "--allow",
                "app.localhost",
                "--deny",
                "127.0.0.0/8",
            ],
            "app.localhost:3000",
            "block deny-rule 127.0.0.0/8",
        ),
        (
            &["--config", &local, "--allow", "*", "--deny", "::1/128"],
            "app.localhost:3000",
            "block deny-rule ::1/128",
        ),
        (
            &["--config", &local, "--allow", "app.localhost"],
            "app.localhost:3000",
            "allow allowed app.localhost",
        ),
        (
            &["--allow", "app.localhost"],
            "app.localhost:3000",
            "block non-public-ip:loopback app.localhost",
        ),
    ];
    assert_decisions(cases);
}

#[test]
fn mapped_cidrs_match_the_ipv4_addresses_they_map() {
    let cases: &[Case] = &[
        (
            &["--allow", "127.0.0.1", "--deny", "::ffff:127.0.0.0/104"],
            "127.0.0.1:80",
            "block deny-rule 127.0.0.0/8",
        ),
        (
            &["--allow", "127.0.0.1", "--deny", "::ffff:127.0.0.0/104"],
            "[::ffff:127.0.0.1]:80",
            "block deny-rule 127.0.0.0/8",
        ),
        (
            &["--allow", "::ffff:10.0.0.0/104"],
            "10.1.2.3:80",
            "allow allowed 10.0.0.0/8",
        ),
        (
            &["--allow", "::ffff:10.0.0.0/104"],
            "[::ffff:10.1.2.3]:80",
            "allow allowed 10.0.0.0/8",
        ),
        (
            &["--allow", "8.8.8.8", "--deny", "::/0"],
            "8.8.8.8:53",
            "block deny-rule ::/0",
        ),
        (
            &["--allow", "8.8.8.8", "--deny", "2000::/3"],
            "8.8.8.8:53",
            "allow allowed 8.8.8.8",
        ),
    ];
    assert_decisions(cases);
}

#[test]
fn only_a_cidr_inside_one_local_class_is_a_local_exception() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "0.0.0.0/0",
            "127.0.0.1:22",
            "block non-public-ip:loopback 0.0.0.0/0",
        ),
        (
            "0.0.0.0/0",
            "169.254.169.254:80",
            "block non-public-ip:link-local 0.0.0.0/0",
        ),
        (
            "0.0.0.0/0",
            "[::ffff:169.254.169.254]:80",
            "block non-public-ip:link-local 0.0.0.0/0",
        ),
        (
            "0.0.0.0/0",
            "10.0.0.1:80",
            "block non-public-ip:private 0.0.0.0/0",
        ),
        ("0.0.0.0/0", "8.8.8.8:53", "allow allowed 0.0.0.0/0"),
        ("::/0", "[::1]:22", "block non-public-ip:loopback ::/0"),
        ("::/0", "127.0.0.1:22", "block non-public-ip:loopback ::/0"),
        ("::/0", "[fd00::1]:80", "block non-public-ip:ula ::/0"),
        ("::/0", "[2606:4700::1111]:443", "allow allowed ::/0"),
        (
            "169.0.0.0/8",
            "169.254.169.254:80",
            "block non-public-ip:link-local 169.0.0.0/8",
        ),
        (
            "126.0.0.0/7",
            "127.0.0.1:22",
            "block non-public-ip:loopback 126.0.0.0/7",
        ),
        ("10.1.0.0/16", "10.1.2.3:80", "allow allowed 10.1.0.0/16"),
        ("127.0.0.0/8", "127.0.0.1:22", "allow allowed 127.0.0.0/8"),
        ("fd00::/8", "[fd00::1]:80", "allow allowed fd00::/8"),
    ];
    for (rule, target, want) in cases {
        assert_eq!(decide(&["--allow", rule], target), *want, "{rule} {target}");
    }
}

#[test]
fn ipv4_translated_addresses_are_their_ipv4() {
    let cases: &[Case] = &[
        (
            &["--allow", "*"],
            "[::ffff:0:7f00:1]:80",
            "block non-public-ip:loopback *",
        ),
        (
            &["--allow", "*"],
            "[::ffff:0:169.254.169.254]:80",
            "block non-public-ip:link-local *",
        ),
        (
            &["--allow", "::ffff:0:7f00:1", "--deny", "127.0.0.0/8"],
            "[::ffff:0:7f00:1]:80",
            "block deny-rule 127.0.0.0/8",
        ),
        (
            &["--allow", "*"],
            "[::ffff:0:808:808]:53",
            "allow allowed *",
        ),
    ];
    assert_decisions(cases);
}

#[test]
fn a_trailing_dot_wildcard_is_not_the_global_rule() {
    for pattern in ["*.", "*.:443", " *. "] {
        let (code, out, err) = run(&["check", "--no-dns", "--allow", pattern, "example.com"]);
        assert_eq!(
            (code, out.as_str(), err.trim()),
            (
                2,
                "",
                format!("error: --allow: invalid pattern `{pattern}`: `*.` is not a pattern: write `*` for every host or `*.example.com` for subdomains").as_str()
            ),
            "{pattern:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "dot.toml",
        "allowed_domains = ['example.com', '*.']\n",
    );
    let (code, _, err) = run(&["validate", "--config", &file]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!("{file}:1:35: invalid pattern `*.`")),
        "{err}"
    );
}

fn warnings(args: &[&str]) -> Vec<String> {
    let mut all = vec!["validate"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .filter_map(|l| l.strip_prefix("warning: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn validate_warns_about_an_allow_and_a_deny_of_one_pattern_in_one_layer() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "both.toml",
        "allowed_domains = ['a.test', 'b.test']\ndenied_domains = ['a.test']\n",
    );
    assert_eq!(
        warnings(&["--config", &file]),
        [format!("`a.test` is both allowed ({file}:1:20) and denied ({file}:2:19) in one layer: the deny wins and the allow has no effect")]
    );
    assert_eq!(
        warnings(&["--allow", "x.test", "--deny", "x.test", "--allow", "y.test"]),
        ["`x.test` is both allowed (--allow) and denied (--deny) in one layer: the deny wins and the allow has no effect"]
    );
    // A later layer overriding an earlier one is layering, not a conflict.
    let allow = write(
        dir.path(),
        "allow.toml",
        "allowed_domains = ['a.test', 'b.test']\n",
    );
    assert!(warnings(&["--config", &allow, "--deny", "a.test"]).is_empty());
}

#[test]
fn validate_warns_about_rules_that_reach_further_than_they_read() {
    let cases: &[(&str, &str)] = &[
        ("0.0.0.0/0", "allow rule `0.0.0.0/0` (--allow) covers loopback and the cloud metadata address 169.254.169.254, but opens only public addresses: only a CIDR inside one local range is a local exception"),
        ("::/0", "allow rule `::/0` (--allow) covers loopback and the cloud metadata address 169.254.169.254, but opens only public addresses: only a CIDR inside one local range is a local exception"),
        ("127.0.0.0/8", "allow rule `127.0.0.0/8` (--allow) opens loopback: services on the proxy's own host (on every port)"),
        ("127.0.0.1:8080", "allow rule `127.0.0.1:8080` (--allow) opens loopback: services on the proxy's own host (on that port)"),
        ("169.254.169.254", "allow rule `169.254.169.254` (--allow) opens the cloud metadata address 169.254.169.254 (on every port)"),
        ("169.254.0.0/16", "allow rule `169.254.0.0/16` (--allow) opens the cloud metadata address 169.254.169.254 (on every port)"),
        ("localhost", "allow rule `localhost` (--allow) opens loopback (127.0.0.1, ::1): every service on the proxy's own host (on every port)"),
        ("*example.com", "allow rule `*example.com` (--allow) puts `*` in the registered name itself: `*example.com` also matches names like `evilexample.com` that anyone can register; put it in a subdomain label (`*.name.com`)"),
        ("shop-*.co.uk", "allow rule `shop-*.co.uk` (--allow) puts `*` in the registered name itself: `shop-*.co.uk` also matches names like `shop-evil.co.uk` that anyone can register; put it in a subdomain label (`*.name.co.uk`)"),
        ("*.co.uk", "allow rule `*.co.uk` (--allow) covers every site registered under the public suffix `co.uk`: name the domain (`*.example.co.uk`)"),
        ("**.github.io", "allow rule `**.github.io` (--allow) covers every site registered under the public suffix `github.io`: name the domain (`*.example.github.io`)"),
        ("::1:80", "allow rule `::1:80` (--allow) is the IPv6 address ::1:80, not port 80 of ::1: write `[::1]:80` for that"),
    ];
    for (rule, want) in cases {
        assert_eq!(warnings(&["--allow", rule]), [*want], "{rule}");
    }
    // Narrow rules are quiet.
    for quiet in [
        "10.1.0.0/16",
        "8.8.8.8",
        "api-*.example.com",
        "*.example.co.uk",
        "[2606:4700::1111]:443",
        "2001:db8::10",
        "*.example.com",
    ] {
        assert!(warnings(&["--allow", quiet]).is_empty(), "{quiet}");
    }
    // A deny rule on a public suffix only narrows; a port-like IPv6 deny still warns.
    assert!(warnings(&["--allow", "a.test", "--deny", "*.co.uk"]).is_empty());
    assert_eq!(
        warnings(&["--allow", "a.test", "--deny", "fe80::1:443"]),
        ["deny rule `fe80::1:443` (--deny) is the IPv6 address fe80::1:443, not port 443 of fe80::1: write `[fe80::1]:443` for that"]
    );
}

#[test]
fn a_blocked_literal_never_suggests_the_rule_that_is_already_there() {
    let mut all = vec!["check", "--no-dns", "--allow", "0.0.0.0", "0.0.0.0:80"];
    let (_, out, _) = run(&all);
    assert!(
        out.contains("non-public-ip:unspecified: the address is in a range the proxy never connects to, whatever the rules say"),
        "{out}"
    );
    all[3] = "*";
    all[4] = "127.0.0.1:22";
    let (_, out, _) = run(&all);
    assert!(out.contains("non-public-ip:loopback: the address is not public; only an allow rule naming it exactly"), "{out}");
}

/// The same holes through a real listener: forward requests and CONNECT tunnels to
/// `localhost` and to the mapped spelling of 127.0.0.1 never reach the origin. (The translated
/// spelling is judged by `check` only: if its classification regressed, a listener here would
/// dial it through the host's default route, off the machine.)
#[test]
fn the_listener_denies_every_spelling_of_a_denied_loopback_origin() {
    let origin = HttpOrigin::start();
    let port = origin.addr.port();
    let proxy = Proxy::builder()
        .allow("localhost")
        .allow("::ffff:127.0.0.0/104")
        .deny("::ffff:127.0.0.0/104")
        .start_blocking();
    let targets = [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
    ];
    for target in &targets {
        let get = raw_request(
            proxy.addr,
            format!("GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
        );
        let (_, tunnel) = connect_tunnel(proxy.addr, target);
        for reply in [get, tunnel] {
            assert_eq!(reply.status, 403, "{target}");
            assert_eq!(
                reply.header("x-proxy-reason"),
                Some("deny-rule"),
                "{target}"
            );
        }
    }
    assert_eq!(origin.connections(), 0);
    // The same origin is reachable when nothing denies it, so the zero above means something.
    let open = Proxy::builder().allow("localhost").start_blocking();
    let reply = raw_request(
        open.addr,
        format!("GET http://localhost:{port}/ HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(reply.status, 200);
}

/// Found by `fuzz/` (config): a pattern or value with a line break or carriage return in it
/// made a two-line error, which could forge a log line. Every error is one line.
#[test]
fn config_errors_quoting_the_file_stay_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "allowed_domains = [\"a\\nb.com\"]\n",
            "1:20: invalid pattern `a\\nb.com`: invalid host: control character, whitespace or `@` in host",
        ),
        (
            "[dns]\nmulti_answer = \"a\\rb\"\n",
            "2:16: `multi_answer`: unknown variant `a\\rb`",
        ),
    ];
    for (text, want) in cases {
        let file = write(dir.path(), "ctl.toml", text);
        let (code, out, err) = run(&["validate", "--config", &file]);
        assert_eq!((code, out.as_str()), (1, ""), "{text:?}");
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(!err.contains('\r'), "{err:?}");
        assert!(
            err.starts_with(&format!("{file}:{want}")),
            "{text:?}: {err:?}"
        );
    }
}

//! How `egress-proxy check` reads a TARGET (SPEC section 3): bare and bracketed IPv6, URLs,
//! legacy IPv4 spellings, invalid hosts, and which rule a target is judged by. No test here
//! needs a DNS answer: the fake server is only there so that nothing reaches a real one.

use serde_json::Value;

use crate::cli::{check, hosts, json_lines, owned, v4, verdicts};
use crate::support::bin::run;
use crate::support::fake_dns::{Answer, FakeDns};

/// A TARGET that parses whole as an IPv6 address is that address on port 443; `[v6]:port`
/// still names a port, and `::1:80` is the address `::1:80`, not `::1` port 80.
#[test]
fn check_takes_a_bare_ipv6_address() {
    let (code, out, err) = run(&[
        "check",
        "--json",
        "--no-dns",
        "--allow",
        "*",
        "2001:4860:4860::8888",
        "::1",
        "::1:80",
        "[::1]:8080",
        "::ffff:127.0.0.1",
        "fe80::1%eth0",
    ]);
    assert_eq!((code, err.as_str()), (1, ""));
    let got: Vec<(String, String, String)> = json_lines(&out)
        .iter()
        .map(|l| {
            (
                l["host"].as_str().unwrap_or("-").to_string(),
                l["port"].to_string(),
                l["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("2001:4860:4860::8888", "443", "allowed"),
        ("::1", "443", "non-public-ip:loopback"),
        ("::1:80", "443", "non-public-ip:unspecified"),
        ("::1", "8080", "non-public-ip:loopback"),
        ("::ffff:127.0.0.1", "443", "non-public-ip:loopback"),
        ("-", "null", "invalid-host"),
    ]
    .map(|(h, p, r)| (h.to_string(), p.to_string(), r.to_string()));
    assert_eq!(got, want);
    // An exact allow opens the loopback address.
    let (code, out, _) = run(&["check", "--no-dns", "--allow", "[::1]", "::1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ALLOW [::1]:443\n"), "{out}");
}

#[test]
fn check_url_targets_are_judged_by_their_real_host() {
    let dns = FakeDns::start(vec![("allowed.test", Answer::A(vec![v4("93.184.216.34")]))]);
    // The userinfo is not the destination: 127.0.0.1 is, and `allowed.test` does not cover it.
    let (code, out, _) = check(
        &dns,
        &[
            "--allow",
            "allowed.test",
            "--json",
            "http://allowed.test@127.0.0.1/",
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(
        json_lines(&out),
        [
            serde_json::json!({"target": "http://allowed.test@127.0.0.1/", "verdict": "block",
            "reason": "not-allowed", "rule": null, "host": "127.0.0.1", "port": 80, "ips": [],
            "method": "GET", "path": "/", "intercept": false})
        ]
    );
    assert_eq!(dns.queries("allowed.test"), 0);
    // An exact IP-literal allow rule opens it (the local exception), with its class shown.
    let (code, out, _) = check(
        &dns,
        &["--allow", "127.0.0.1", "http://allowed.test@127.0.0.1/"],
    );
    assert_eq!(
        out,
        "ALLOW 127.0.0.1:80\n\
         \x20 reason  allowed: an allow rule matches and no deny rule does\n\
         \x20 rule    allow 127.0.0.1 (--allow)\n\
         \x20 host    127.0.0.1  port 80\n\
         \x20 ip      127.0.0.1 (loopback)\n"
    );
    assert_eq!(code, 0);
    // URL default ports and explicit ones.
    let (_, out, _) = check(
        &dns,
        &[
            "--no-dns",
            "--json",
            "https://allowed.test/x?y",
            "http://allowed.test:8080/",
            "HTTPS://ALLOWED.TEST./",
        ],
    );
    assert_eq!(
        hosts(&out),
        [
            ("allowed.test".into(), 443.into()),
            ("allowed.test".into(), 8080.into()),
            ("allowed.test".into(), 443.into()),
        ]
    );
}

#[test]
fn check_bracketed_ipv6_targets_and_port_scoped_rules() {
    let dns = FakeDns::start(vec![]);
    let (code, out, _) = check(&dns, &["--allow", "[::1]:9090", "[::1]:9090", "[::1]:9091"]);
    assert_eq!(
        out,
        "ALLOW [::1]:9090\n\
         \x20 reason  allowed: an allow rule matches and no deny rule does\n\
         \x20 rule    allow [::1]:9090 (--allow)\n\
         \x20 host    [::1]  port 9090\n\
         \x20 ip      ::1 (loopback)\n\
         BLOCK [::1]:9091\n\
         \x20 reason  not-allowed: no allow rule matches\n\
         \x20 rule    none\n\
         \x20 host    [::1]  port 9091\n"
    );
    assert_eq!(code, 1);
    let (_, out, _) = check(&dns, &["--allow", "[::1]:9090", "--json", "[::1]:9090"]);
    assert_eq!(hosts(&out), [("::1".into(), 9090.into())]);
}

/// `check --allow * --json TARGETS`: the exit code, stderr and one JSON line per target.
fn judge_every(dns: &FakeDns, targets: &[&str]) -> (i32, String, Vec<Value>) {
    let (code, out, err) = check(dns, &[&["--allow", "*", "--json"][..], targets].concat());
    let lines = json_lines(&out);
    assert_eq!(lines.len(), targets.len(), "{out}");
    (code, err, lines)
}

#[test]
fn check_legacy_ipv4_forms_are_the_dotted_quad_and_wildcards_grant_no_local_exception() {
    let dns = FakeDns::start(vec![]);
    let forms = [
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "127.1",
        "0x7f000001",
        "http://0x7f.0.0.1/",
    ];
    let (code, err, lines) = judge_every(&dns, &forms);
    assert_eq!((code, err.as_str()), (1, ""));
    for (line, form) in lines.iter().zip(forms) {
        assert_eq!(line["target"], form);
        assert_eq!(line["host"], "127.0.0.1", "{form}");
        assert_eq!(line["verdict"], "block", "{form}");
        assert_eq!(line["reason"], "non-public-ip:loopback", "{form}");
        assert_eq!(line["rule"], "*", "{form}");
        assert_eq!(
            line["ips"],
            serde_json::json!([{"ip": "127.0.0.1", "class": "loopback"}]),
            "{form}"
        );
    }
    // An exact rule written as a dotted quad covers every spelling.
    let (code, _, _) = check(&dns, &["--allow", "127.0.0.1:443", "0x7f.1", "2130706433"]);
    assert_eq!(code, 0);
}

#[test]
fn check_invalid_hosts_are_invalid_host() {
    let dns = FakeDns::start(vec![]);
    let (code, out, err) = check(&dns, &["--allow", "*", "bad host"]);
    assert_eq!(
        out,
        "BLOCK bad host\n\
         \x20 reason  invalid-host: the host is not a valid name or address\n\
         \x20 rule    none\n\
         \x20 input   \"bad host\"\n\
         \x20 detail  control character, whitespace or `@` in host\n"
    );
    assert_eq!((code, err.as_str()), (1, ""));

    let bad = [
        "a..b",
        "127.0.0.1.5",
        "example.com:0",
        "example.com:65536",
        "[fe80::1%eth0]:80",
        "1::2::3",
        "fe80::1%eth0",
        "http://a b/",
        "exa%00mple.com",
        "example.com:",
        "user@example.com",
        "*.example.com",
        "",
    ];
    let (code, _, lines) = judge_every(&dns, &bad);
    assert_eq!(code, 1);
    for (line, input) in lines.iter().zip(bad) {
        assert_eq!(
            *line,
            serde_json::json!({"target": input, "verdict": "block", "reason": "invalid-host",
                "rule": null, "host": null, "port": null, "ips": []}),
        );
    }
}

#[test]
fn check_an_ipv4_mapped_cidr_deny_covers_every_spelling_of_the_ipv4_addresses_it_maps() {
    let dns = FakeDns::start(vec![]);
    let (code, out, err) = check(
        &dns,
        &[
            "--no-dns",
            "--allow",
            "10.0.0.0/8",
            "--deny",
            "::ffff:10.1.0.0/112",
            "--json",
            "10.1.2.3:443",
            "[::ffff:10.1.2.3]:443",
            "[64:ff9b::a01:203]:443",
            "10.2.0.1:443",
        ],
    );
    assert_eq!((code, err.as_str()), (1, ""));
    assert_eq!(
        verdicts(&out),
        owned(&[
            ("10.1.2.3:443", "block", "deny-rule"),
            ("[::ffff:10.1.2.3]:443", "block", "deny-rule"),
            ("[64:ff9b::a01:203]:443", "block", "deny-rule"),
            ("10.2.0.1:443", "allow", "allowed"),
        ])
    );
    for line in &json_lines(&out)[..3] {
        assert_eq!(line["rule"], "10.1.0.0/16", "{line}");
    }
}

#[test]
fn check_names_the_exact_rule_over_the_apex_of_a_double_star_rule() {
    let dns = FakeDns::start(vec![]);
    for rules in [
        ["--allow", "**.x.test", "--allow", "x.test:80"],
        ["--allow", "x.test:80", "--allow", "**.x.test"],
    ] {
        let args = [
            &["--no-dns", "--json"][..],
            &rules,
            &["x.test:80", "x.test:443"],
        ]
        .concat();
        let (code, out, err) = check(&dns, &args);
        assert_eq!((code, err.as_str()), (0, ""), "{rules:?}");
        let rules_named: Vec<Value> = json_lines(&out).iter().map(|l| l["rule"].clone()).collect();
        assert_eq!(rules_named, ["x.test:80", "**.x.test"], "{rules:?}");
    }
}

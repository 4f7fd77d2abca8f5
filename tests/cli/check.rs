//! `egress-proxy check` through the built binary (SPEC section 3): the verdict, reason, rule
//! and DNS detail of a target against a fake DNS server on loopback, the exit code, and usage
//! and configuration errors. How a TARGET is parsed is `check_targets.rs`.
//!
//! `check` never connects, so a fake answer of 10.0.0.1 or 93.184.216.34 is only classified,
//! never dialled.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::cli::{check, json_lines, owned, run_within, v4, verdicts, Files};
use crate::support::bin::run;
use crate::support::fake_dns::{Answer, FakeDns};

const ALLOWED_EXPLAIN: &str = "allowed: an allow rule matches and no deny rule does";
const REBIND_EXPLAIN: &str = "the name resolves to a non-public address (DNS-rebinding defence)";

// ---------------------------------------------------------------------------------------------
// check: DNS paths
// ---------------------------------------------------------------------------------------------

#[test]
fn check_allows_a_name_that_resolves_to_loopback_with_allow_local_binding() {
    let files = Files::new();
    let p = files.write(
        "local.toml",
        "allow_local_binding = true\nallowed_domains = [\"allowed.test\"]\n",
    );
    let dns = FakeDns::start(vec![("allowed.test", Answer::A(vec![Ipv4Addr::LOCALHOST]))]);
    let (code, out, err) = check(&dns, &["--config", &p, "allowed.test"]);
    assert_eq!(
        out,
        format!(
            "ALLOW allowed.test:443\n\
             \x20 reason  {ALLOWED_EXPLAIN}\n\
             \x20 rule    allow allowed.test ({p}:2:20)\n\
             \x20 host    allowed.test  port 443\n\
             \x20 ip      127.0.0.1 (loopback)\n"
        )
    );
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(dns.queries("allowed.test") >= 1, "the name was resolved");
}

#[test]
fn check_blocks_a_name_that_resolves_to_loopback_without_allow_local_binding() {
    let files = Files::new();
    let p = files.write("p.toml", "allowed_domains = [\"allowed.test\"]\n");
    let dns = FakeDns::start(vec![("allowed.test", Answer::A(vec![Ipv4Addr::LOCALHOST]))]);
    let (code, out, err) = check(&dns, &["--config", &p, "allowed.test"]);
    assert_eq!(
        out,
        format!(
            "BLOCK allowed.test:443\n\
             \x20 reason  dns-non-public:loopback: {REBIND_EXPLAIN}\n\
             \x20 rule    allow allowed.test ({p}:1:20)\n\
             \x20 host    allowed.test  port 443\n\
             \x20 ip      127.0.0.1 (loopback)\n"
        )
    );
    assert_eq!((code, err.as_str()), (1, ""));
}

#[test]
fn check_blocks_a_rebinding_answer_that_mixes_public_and_private() {
    let dns = FakeDns::start(vec![
        (
            "rebind.test",
            Answer::A(vec![v4("93.184.216.34"), v4("10.0.0.1")]),
        ),
        ("public.test", Answer::A(vec![v4("93.184.216.34")])),
        (
            "mapped.test",
            Answer::Aaaa(vec!["::ffff:169.254.169.254".parse::<Ipv6Addr>().unwrap()]),
        ),
    ]);
    let args = [
        "--allow",
        "rebind.test",
        "--allow",
        "public.test",
        "--allow",
        "mapped.test",
        "--json",
        "rebind.test",
        "public.test",
        "mapped.test",
    ];
    let (code, out, err) = check(&dns, &args);
    assert_eq!((code, err.as_str()), (1, ""));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0]["verdict"], "block");
    assert_eq!(lines[0]["reason"], "dns-non-public:private");
    assert_eq!(lines[0]["rule"], "rebind.test");
    let mut ips: Vec<(String, String)> = lines[0]["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["ip"].as_str().unwrap().into(),
                i["class"].as_str().unwrap().into(),
            )
        })
        .collect();
    ips.sort();
    assert_eq!(
        ips,
        [
            ("10.0.0.1".to_string(), "private".to_string()),
            ("93.184.216.34".to_string(), "public".to_string()),
        ]
    );
    // The same policy allows a name whose only answer is public: the block above is the
    // private answer, not the rule.
    assert_eq!(lines[1]["verdict"], "allow");
    assert_eq!(lines[1]["reason"], "allowed");
    assert_eq!(
        lines[1]["ips"],
        serde_json::json!([{"ip": "93.184.216.34", "class": "public"}])
    );
    // An IPv4-mapped AAAA answer is classified as the IPv4 it carries.
    assert_eq!(lines[2]["verdict"], "block");
    assert_eq!(lines[2]["reason"], "dns-non-public:link-local");
}

#[test]
fn check_rebinding_text_output_lists_every_answer_with_its_class() {
    let dns = FakeDns::start(vec![(
        "rebind.test",
        Answer::A(vec![v4("93.184.216.34"), v4("10.0.0.1")]),
    )]);
    let (code, out, _) = check(&dns, &["--allow", "rebind.test", "rebind.test"]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "BLOCK rebind.test:443");
    assert_eq!(
        lines[1],
        format!("  reason  dns-non-public:private: {REBIND_EXPLAIN}")
    );
    assert_eq!(lines[2], "  rule    allow rebind.test (--allow)");
    assert_eq!(lines[3], "  host    rebind.test  port 443");
    let mut ips = lines[4..].to_vec();
    ips.sort_unstable();
    assert_eq!(
        ips,
        [
            "  ip      10.0.0.1 (private)",
            "  ip      93.184.216.34 (public)"
        ]
    );
}

#[test]
fn check_reports_nxdomain_as_dns_failed_with_the_dns_detail() {
    let dns = FakeDns::start(vec![("gone.test", Answer::NxDomain)]);
    let (code, out, err) = check(&dns, &["--allow", "gone.test", "gone.test:8443"]);
    assert_eq!(
        out,
        "BLOCK gone.test:8443\n\
         \x20 reason  dns-failed: the name could not be resolved\n\
         \x20 rule    allow gone.test (--allow)\n\
         \x20 host    gone.test  port 8443\n\
         \x20 dns     nxdomain: no such name\n"
    );
    assert_eq!((code, err.as_str()), (1, ""));
    assert!(dns.queries("gone.test") >= 1);

    let (code, out, _) = check(&dns, &["--allow", "gone.test", "--json", "gone.test"]);
    assert_eq!(code, 1);
    assert_eq!(
        json_lines(&out),
        [serde_json::json!({
            "target": "gone.test", "verdict": "block", "reason": "dns-failed",
            "rule": "gone.test", "host": "gone.test", "port": 443, "ips": []
        })]
    );
}

#[test]
fn check_reports_servfail_and_empty_answers_as_dns_failed() {
    let dns = FakeDns::start(vec![
        ("broken.corp.test", Answer::ServFail),
        ("empty.corp.test", Answer::A(vec![])),
    ]);
    let args = [
        "--allow",
        "**.corp.test",
        "--json",
        "broken.corp.test",
        "empty.corp.test",
    ];
    let (code, out, _) = check(&dns, &args);
    assert_eq!(code, 1);
    assert_eq!(
        verdicts(&out),
        owned(&[
            ("broken.corp.test", "block", "dns-failed"),
            ("empty.corp.test", "block", "dns-failed"),
        ])
    );
    let (code, out, _) = check(&dns, &["--allow", "**.corp.test", "empty.corp.test"]);
    assert_eq!(code, 1);
    assert_eq!(
        out.lines().last(),
        Some("  dns     no-records: the name has no A or AAAA records")
    );
    let (code, out, _) = check(&dns, &["--allow", "**.corp.test", "broken.corp.test"]);
    assert_eq!(code, 1);
    let detail = out.lines().last().unwrap();
    assert!(
        detail.starts_with("  dns     ") && detail.contains("Server Failure"),
        "{out}"
    );
}

#[test]
fn check_times_out_on_a_silent_server_with_the_configured_timeout() {
    let files = Files::new();
    let p = files.write(
        "t.toml",
        "allowed_domains = [\"silent.test\"]\n[dns]\ntimeout_ms = 300\n",
    );
    let dns = FakeDns::start(vec![("silent.test", Answer::NoReply)]);
    let server = dns.addr.to_string();
    let args = [
        "check",
        "--dns-server",
        &server,
        "--config",
        &p,
        "silent.test",
    ];
    // A hang would be a bug; the bound is generous so a loaded machine never fails it.
    let (code, out, err, _elapsed) = run_within(&args, Duration::from_secs(20));
    assert_eq!(
        out,
        format!(
            "BLOCK silent.test:443\n\
             \x20 reason  dns-failed: the name could not be resolved\n\
             \x20 rule    allow silent.test ({p}:1:20)\n\
             \x20 host    silent.test  port 443\n\
             \x20 dns     timed out after 300 ms\n"
        )
    );
    assert_eq!((code, err.as_str()), (1, ""));
    assert!(
        dns.queries("silent.test") >= 1,
        "the query reached the server"
    );
}

// ---------------------------------------------------------------------------------------------
// check: rule paths (no DNS involved)
// ---------------------------------------------------------------------------------------------

#[test]
fn check_denied_name_names_the_deny_rule_and_where_it_was_written() {
    let files = Files::new();
    let p = files.write(
        "corp.toml",
        "allowed_domains = [\"**.corp.test\"]\ndenied_domains = [\"secret.corp.test\"]\n",
    );
    let dns = FakeDns::start(vec![(
        "secret.corp.test",
        Answer::A(vec![v4("93.184.216.34")]),
    )]);
    let (code, out, err) = check(&dns, &["--config", &p, "secret.corp.test"]);
    assert_eq!(
        out,
        format!(
            "BLOCK secret.corp.test:443\n\
             \x20 reason  deny-rule: a deny rule matches (deny beats allow)\n\
             \x20 rule    deny secret.corp.test ({p}:2:19)\n\
             \x20 host    secret.corp.test  port 443\n"
        )
    );
    assert_eq!((code, err.as_str()), (1, ""));
    // A denied name is never resolved.
    assert_eq!(dns.queries("secret.corp.test"), 0);
}

#[test]
fn check_unlisted_name_is_not_allowed_and_not_resolved() {
    let dns = FakeDns::start(vec![("other.test", Answer::A(vec![v4("93.184.216.34")]))]);
    let (code, out, err) = check(&dns, &["--allow", "allowed.test", "other.test:80"]);
    assert_eq!(
        out,
        "BLOCK other.test:80\n\
         \x20 reason  not-allowed: no allow rule matches\n\
         \x20 rule    none\n\
         \x20 host    other.test  port 80\n"
    );
    assert_eq!((code, err.as_str()), (1, ""));
    assert_eq!(dns.queries("other.test"), 0);
}

#[test]
fn check_json_has_exactly_the_documented_keys() {
    let dns = FakeDns::start(vec![("allowed.test", Answer::A(vec![v4("93.184.216.34")]))]);
    let args = [
        "--json",
        "--allow",
        "allowed.test",
        "--deny",
        "denied.test",
        "allowed.test",
        "denied.test:22",
        "unlisted.test",
        "bad host",
    ];
    let (code, out, err) = check(&dns, &args);
    assert_eq!((code, err.as_str()), (1, ""));
    assert!(out.ends_with('\n'));
    let lines = json_lines(&out);
    let keys: BTreeSet<&str> = ["target", "verdict", "reason", "rule", "host", "port", "ips"]
        .into_iter()
        .collect();
    for line in &lines {
        let got: BTreeSet<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(got, keys, "{line}");
    }
    assert_eq!(
        lines,
        [
            serde_json::json!({"target": "allowed.test", "verdict": "allow", "reason": "allowed",
                "rule": "allowed.test", "host": "allowed.test", "port": 443,
                "ips": [{"ip": "93.184.216.34", "class": "public"}]}),
            serde_json::json!({"target": "denied.test:22", "verdict": "block", "reason": "deny-rule",
                "rule": "denied.test", "host": "denied.test", "port": 22, "ips": []}),
            serde_json::json!({"target": "unlisted.test", "verdict": "block", "reason": "not-allowed",
                "rule": null, "host": "unlisted.test", "port": 443, "ips": []}),
            serde_json::json!({"target": "bad host", "verdict": "block", "reason": "invalid-host",
                "rule": null, "host": null, "port": null, "ips": []}),
        ]
    );
}

#[test]
fn check_no_dns_sends_no_query() {
    let dns = FakeDns::start(vec![("allowed.test", Answer::A(vec![v4("10.0.0.1")]))]);
    let (code, out, err) = check(
        &dns,
        &["--no-dns", "--allow", "allowed.test", "allowed.test"],
    );
    assert_eq!(
        out,
        "ALLOW allowed.test:443\n\
         \x20 reason  allowed: an allow rule matches and no deny rule does\n\
         \x20 rule    allow allowed.test (--allow)\n\
         \x20 host    allowed.test  port 443\n\
         \x20 dns     not resolved (--no-dns): every answer must still be public (or local with allow_local_binding)\n"
    );
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(dns.queries("allowed.test"), 0);
    // Without --no-dns the same call does reach the server (so the zero above means something).
    let (code, _, _) = check(&dns, &["--allow", "allowed.test", "allowed.test"]);
    assert_eq!(code, 1, "10.0.0.1 is private");
    assert!(dns.queries("allowed.test") >= 1);
}

#[test]
fn check_localhost_is_resolved_locally_never_through_dns() {
    let dns = FakeDns::start(vec![("localhost", Answer::A(vec![v4("93.184.216.34")]))]);
    let (code, out, err) = check(&dns, &["--allow", "localhost", "localhost:3000"]);
    assert_eq!(
        out,
        "ALLOW localhost:3000\n\
         \x20 reason  allowed: an allow rule matches and no deny rule does\n\
         \x20 rule    allow localhost (--allow)\n\
         \x20 host    localhost  port 3000\n\
         \x20 ip      127.0.0.1 (loopback)\n\
         \x20 ip      ::1 (loopback)\n"
    );
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(dns.queries("localhost"), 0);
}

#[test]
fn check_exit_code_is_one_if_any_target_is_blocked() {
    let dns = FakeDns::start(vec![
        ("a.test", Answer::A(vec![v4("93.184.216.34")])),
        ("b.test", Answer::A(vec![v4("93.184.216.35")])),
    ]);
    let allow = ["--allow", "a.test", "--allow", "b.test", "--json"];
    let (code, out, _) = check(&dns, &[&allow[..], &["a.test", "b.test"]].concat());
    assert_eq!(code, 0, "{out}");
    assert_eq!(json_lines(&out).len(), 2);
    let (code, out, _) = check(
        &dns,
        &[&allow[..], &["a.test", "c.test", "b.test"]].concat(),
    );
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        verdicts(&out),
        owned(&[
            ("a.test", "allow", "allowed"),
            ("c.test", "block", "not-allowed"),
            ("b.test", "allow", "allowed"),
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// check: usage and configuration errors
// ---------------------------------------------------------------------------------------------

#[test]
fn check_usage_errors_exit_two() {
    let cases: [&[&str]; 6] = [
        &["check"],
        &["validate", "--bogus"],
        &["check", "--bogus", "example.com"],
        &["check", "--dns-server", "nope", "example.com"],
        &["frobnicate"],
        &[],
    ];
    for args in cases {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert!(
            err.contains("Usage:") || err.contains("usage:") || err.contains("--help"),
            "{args:?}: {err}"
        );
    }
    let (_, _, err) = run(&["check"]);
    assert!(err.contains("<TARGET>"), "{err}");
    let (_, _, err) = run(&["check", "--bogus", "example.com"]);
    assert!(err.contains("'--bogus'"), "{err}");
}

#[test]
fn check_bad_config_exits_two_with_one_line_and_no_output() {
    let files = Files::new();
    let p = files.write(
        "bad.toml",
        "enabled = true\nallowed_domains = [\"api.*.com\"]\n",
    );
    let (code, out, err) = run(&["check", "--no-dns", "--config", &p, "example.com"]);
    assert_eq!(code, 2);
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!("error: {p}:2:20: invalid pattern `api.*.com`: a whole-label `*` is only allowed at the front (`*.example.com` or `**.example.com`)\n")
    );

    let missing = &files.path("missing.toml");
    let (code, out, err) = run(&["check", "--no-dns", "--config", missing, "example.com"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(
        err,
        format!("error: cannot read {missing}: No such file or directory\n")
    );

    let (code, out, err) = run(&["check", "--no-dns", "--deny", "*", "example.com"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(
        err,
        "error: --deny: invalid pattern `*`: `*` cannot be a deny rule: with no allow rule everything is already blocked\n"
    );
}

/// `check` judges as `serve` would: the configured listeners are never a destination.
#[test]
fn check_blocks_the_proxys_own_listeners() {
    let dns = FakeDns::start(Vec::<(&str, Answer)>::new());
    for port in ["3128", "8081", "8080"] {
        let target = format!("127.0.0.1:{port}");
        let (code, out, _) = check(&dns, &["--allow", "127.0.0.1", "--json", &target]);
        assert_eq!(code, 1, "{target}");
        assert!(out.contains(r#""reason":"self-connection""#), "{out}");
    }
}

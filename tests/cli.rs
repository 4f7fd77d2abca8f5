//! The built `egress-proxy` binary: `check` against a fake DNS server on loopback, and
//! `validate` on good and bad files (SPEC section 3).
//!
//! Every test runs the real executable with `std::process::Command` and asserts its exit code,
//! its stdout line by line (or JSON field by field) and its stderr. `check` never connects, so a
//! fake answer of 10.0.0.1 or 93.184.216.34 is only classified, never dialled.

mod support;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_dns::{Answer, FakeDns};

use support::bin::{run, BIN};

/// Writes `text` to `dir/name` and returns the path as the string the binary will print.
fn write(dir: &Path, name: &str, text: &str) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path.to_str().expect("UTF-8 temp path").to_string()
}

/// `check` with the fake server as the only nameserver.
fn check(dns: &FakeDns, args: &[&str]) -> (i32, String, String) {
    let server = dns.addr.to_string();
    let mut all = vec!["check", "--dns-server", &server];
    all.extend_from_slice(args);
    run(&all)
}

/// One parsed JSON object per stdout line.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `(target, verdict, reason)` of every `check --json` line.
fn verdicts(stdout: &str) -> Vec<(String, String, String)> {
    json_lines(stdout)
        .iter()
        .map(|v| {
            let s = |k: &str| {
                v[k].as_str()
                    .unwrap_or_else(|| panic!("{k} in {v}"))
                    .to_string()
            };
            (s("target"), s("verdict"), s("reason"))
        })
        .collect()
}

fn owned(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

const ALLOWED_EXPLAIN: &str = "allowed: an allow rule matches and no deny rule does";
const REBIND_EXPLAIN: &str = "the name resolves to a non-public address (DNS-rebinding defence)";

// ---------------------------------------------------------------------------------------------
// check: DNS paths
// ---------------------------------------------------------------------------------------------

#[test]
fn check_allows_a_name_that_resolves_to_loopback_with_allow_local_binding() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
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
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "p.toml",
        "allowed_domains = [\"allowed.test\"]\n",
    );
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

/// Runs the binary, killing it if it is still running after `limit`.
fn run_within(args: &[&str], limit: Duration) -> (i32, String, String, Duration) {
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn egress-proxy");
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`egress-proxy {}` still running after {limit:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = start.elapsed();
    let out = child.wait_with_output().expect("collect output");
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    let code = out.status.code().expect("exited, not killed by a signal");
    (code, text(out.stdout), text(out.stderr), elapsed)
}

#[test]
fn check_times_out_on_a_silent_server_with_the_configured_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
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
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
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

/// `(host, port)` of each `check --json` line.
fn hosts(stdout: &str) -> Vec<(Value, Value)> {
    json_lines(stdout)
        .into_iter()
        .map(|v| (v["host"].clone(), v["port"].clone()))
        .collect()
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
            "reason": "not-allowed", "rule": null, "host": "127.0.0.1", "port": 80, "ips": []})
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
    let mut args = vec!["--allow", "*", "--json"];
    args.extend_from_slice(&forms);
    let (code, out, err) = check(&dns, &args);
    assert_eq!((code, err.as_str()), (1, ""));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), forms.len());
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
    let mut args = vec!["--allow", "*", "--json"];
    args.extend_from_slice(&bad);
    let (code, out, _) = check(&dns, &args);
    assert_eq!(code, 1);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), bad.len());
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
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
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

    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
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

// ---------------------------------------------------------------------------------------------
// validate
// ---------------------------------------------------------------------------------------------

#[test]
fn validate_prints_the_effective_policy() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
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
rules:
  allow  **.github.com    {p}:5:20
  allow  pypi.org:443     {p}:5:37
  deny   gist.github.com  {p}:6:19
unix sockets:
  deny   /run/docker.sock  {p}:7:18
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
rules:
  allow  **.github.com    --allow
  deny   gist.github.com  --deny
"
    );
}

#[test]
fn validate_json_is_one_parseable_object() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
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
}

#[test]
fn validate_warns_about_dangerous_and_useless_settings() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
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
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(
        warnings,
        [
            format!("warning: `dangerously_allow_non_loopback_proxy = true` at {p}:2:40: the proxy listeners may be reachable from other hosts"),
            format!("warning: global `*` allow rule at {p}:3:20: every public host that is not denied is allowed"),
            format!("warning: allow rule `api.corp.test` ({p}:3:25) has no effect: deny rule `**.corp.test` ({p}:4:19) covers everything it allows"),
        ]
    );
    assert!(out.lines().any(|l| l == "listeners: http 0.0.0.0:3128, socks5 127.0.0.1:8081 (with UDP), admin 127.0.0.1:8080"), "{out}");

    let q = write(
        dir.path(),
        "none.toml",
        "denied_domains = [\"evil.test\"]\ndangerously_allow_all_unix_sockets = true\n",
    );
    let (code, out, _) = run(&["validate", "--config", &q]);
    assert_eq!(code, 0);
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning: ")).collect();
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
    let native_keys = "`enabled`, `mode`, `domains`, `allowed_domains`, `denied_domains`, `unix_sockets`, `allow_local_binding`, `enable_socks5`, `enable_socks5_udp`, `allow_upstream_proxy`, `proxy_url`, `socks_url`, `admin_url`, `dangerously_allow_non_loopback_proxy`, `dangerously_allow_non_loopback_admin`, `dangerously_allow_all_unix_sockets`, `dns`, `limits`, `admin`, `log`";
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
    let dir = tempfile::tempdir().unwrap();
    for (name, text, want) in cases {
        let p = write(dir.path(), &format!("{name}.toml"), text);
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
    let dir = tempfile::tempdir().unwrap();
    for (i, (text, want)) in cases.into_iter().enumerate() {
        let p = write(dir.path(), &format!("l{i}.toml"), text);
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
    let p = write(dir.path(), "edges.toml", edges);
    let (code, _, err) = run(&["validate", "--config", &p]);
    assert_eq!((code, err.as_str()), (0, ""));
}

/// Whoever reads the admin token can loosen the policy, so a token file the group or others
/// can read is a warning in `validate` (text and JSON).
#[test]
fn validate_warns_about_a_token_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "s3cret\n");
    let p = write(
        dir.path(),
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
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning: ")).collect();
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
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "codex.toml",
        "[permissions.dev.network]\nallowed_domains = [\"a.test\"]\n[permissions.ci.network]\n",
    );
    let (code, out, err) = run(&["validate", "--config", &p, "--profile", "prod"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        "unknown profile `prod` (--profile): defined profiles: `ci`, `dev`\n"
    );

    let missing = dir.path().join("nope.toml");
    let missing = missing.to_str().unwrap();
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

// ---------------------------------------------------------------------------------------------
// Codex shapes through the binary
// ---------------------------------------------------------------------------------------------

fn validate_json(args: &[&str]) -> Value {
    let mut all = vec!["validate", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn codex_network_proxy_shorthand_toggles_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let on = write(
        dir.path(),
        "on.toml",
        "model = \"o3\"\nfeatures.network_proxy = true\n",
    );
    let off = write(
        dir.path(),
        "off.toml",
        "model = \"o3\"\n[features]\nnetwork_proxy = false\n",
    );
    let bare = write(
        dir.path(),
        "bare.toml",
        "model = \"o3\"\n[network]\nallowed_domains = [\"a.test\"]\n",
    );
    assert_eq!(validate_json(&["--config", &on])["enabled"], true);
    assert_eq!(validate_json(&["--config", &off])["enabled"], false);
    // A Codex-shaped file is disabled unless it says otherwise.
    assert_eq!(validate_json(&["--config", &bare])["enabled"], false);
    let (code, out, _) = run(&["validate", "--config", &off]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().next(),
        Some("policy OK: 0 rules (0 allow, 0 deny), mode full, NOT enabled (serve and run refuse to start)")
    );
}

#[test]
fn codex_permissions_profile_by_default_permissions_and_by_flag() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "config.toml",
        "\
model = \"o3\"
default_permissions = \"dev\"
[features.network_proxy]
enabled = true
allowed_domains = [\"shared.test\"]
[permissions.dev.network]
allowed_domains = [\"dev.test\"]
[permissions.ci.network]
allowed_domains = [\"ci.test\"]
denied_domains = [\"shared.test\"]
",
    );
    let targets = ["shared.test", "dev.test", "ci.test"];
    let mut args = vec!["check", "--no-dns", "--json", "--config", &p];
    args.extend_from_slice(&targets);
    let (code, out, err) = run(&args);
    assert_eq!((code, err.as_str()), (1, ""));
    assert_eq!(
        verdicts(&out),
        owned(&[
            ("shared.test", "allow", "allowed"),
            ("dev.test", "allow", "allowed"),
            ("ci.test", "block", "not-allowed"),
        ])
    );
    let mut args = vec![
        "check",
        "--no-dns",
        "--json",
        "--config",
        &p,
        "--profile",
        "ci",
    ];
    args.extend_from_slice(&targets);
    let (code, out, _) = run(&args);
    assert_eq!(code, 1);
    assert_eq!(
        verdicts(&out),
        owned(&[
            ("shared.test", "block", "deny-rule"),
            ("dev.test", "block", "not-allowed"),
            ("ci.test", "allow", "allowed"),
        ])
    );
    let (code, _, err) = run(&[
        "check",
        "--no-dns",
        "--config",
        &p,
        "--profile",
        "prod",
        "dev.test",
    ]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "error: unknown profile `prod` (--profile): defined profiles: `ci`, `dev`\n"
    );
}

#[test]
fn requirements_managed_allowed_domains_only_makes_user_allows_ineffective() {
    let dir = tempfile::tempdir().unwrap();
    let user = write(
        dir.path(),
        "user.toml",
        "allowed_domains = [\"user.test\", \"both.test\"]\ndenied_domains = [\"userdeny.test\"]\n",
    );
    let req = write(
        dir.path(),
        "requirements.toml",
        "\
[experimental_network]
managed_allowed_domains_only = true
allowed_domains = [\"admin.test\", \"both.test\", \"userdeny.test\"]
denied_domains = [\"evil.test\"]
",
    );
    let targets = [
        "user.test",
        "admin.test",
        "both.test",
        "userdeny.test",
        "evil.test",
        "flag.test",
    ];
    let mut args = vec![
        "check",
        "--no-dns",
        "--json",
        "--config",
        &user,
        "--allow",
        "flag.test",
        "--allow",
        "evil.test",
    ];
    args.extend_from_slice(&targets);
    // Without the requirements the user's rules (and the flags) apply.
    let (code, out, _) = run(&args);
    assert_eq!(code, 1);
    assert_eq!(
        verdicts(&out),
        owned(&[
            ("user.test", "allow", "allowed"),
            ("admin.test", "block", "not-allowed"),
            ("both.test", "allow", "allowed"),
            ("userdeny.test", "block", "deny-rule"),
            ("evil.test", "allow", "allowed"),
            ("flag.test", "allow", "allowed"),
        ])
    );
    // With them only managed allows count; managed and user denies still win.
    args.extend_from_slice(&["--requirements", &req]);
    let (code, out, err) = run(&args);
    assert_eq!((code, err.as_str()), (1, ""));
    assert_eq!(
        verdicts(&out),
        owned(&[
            ("user.test", "block", "not-allowed"),
            ("admin.test", "allow", "allowed"),
            ("both.test", "allow", "allowed"),
            ("userdeny.test", "block", "deny-rule"),
            ("evil.test", "block", "deny-rule"),
            ("flag.test", "block", "not-allowed"),
        ])
    );
    // The text output says the deciding rule is managed and where it was written.
    let (code, out, _) = run(&[
        "check",
        "--no-dns",
        "--config",
        &user,
        "--requirements",
        &req,
        "admin.test",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().nth(2),
        Some(format!("  rule    allow admin.test, managed ({req}:3:20)").as_str())
    );
}

#[test]
fn requirements_without_managed_only_add_managed_denies_that_win() {
    let dir = tempfile::tempdir().unwrap();
    let req = write(
        dir.path(),
        "r.toml",
        "[experimental_network]\ndenied_domains = [\"gist.github.com\"]\n",
    );
    let (code, out, _) = run(&[
        "check",
        "--no-dns",
        "--json",
        "--requirements",
        &req,
        "--allow",
        "**.github.com",
        "api.github.com",
        "gist.github.com",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        verdicts(&out),
        owned(&[
            ("api.github.com", "allow", "allowed"),
            ("gist.github.com", "block", "deny-rule"),
        ])
    );
}

#[test]
fn allow_and_deny_flags_work_with_no_file() {
    let (code, out, err) = run(&[
        "check",
        "--no-dns",
        "--allow",
        "**.github.com",
        "--deny",
        "gist.github.com",
        "api.github.com",
        "github.com:22",
        "gist.github.com",
        "example.com",
    ]);
    assert_eq!((code, err.as_str()), (1, ""));
    let heads: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(
        heads,
        [
            "ALLOW api.github.com:443",
            "ALLOW github.com:22",
            "BLOCK gist.github.com:443",
            "BLOCK example.com:443",
        ]
    );
    assert!(
        out.lines()
            .any(|l| l == "  rule    deny gist.github.com (--deny)"),
        "{out}"
    );
    // No rule at all: everything is blocked.
    let (code, out, _) = run(&["check", "--no-dns", "--json", "example.com"]);
    assert_eq!(code, 1);
    assert_eq!(
        verdicts(&out),
        owned(&[("example.com", "block", "not-allowed")])
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

//! `check --method` and `validate` with `mitm` and `[[http_rules]]`: the tunnel decision,
//! whether it is intercepted, and the request-level result with the rule that decided.

use crate::cli::{json_lines, validate_json, Files};
use crate::support::bin::run;

const POLICY: &str = "\
allowed_domains = [\"api.example.test\", \"plain.example.test\"]

[mitm]
domains = [\"api.example.test\"]

[[http_rules]]
host = \"api.example.test\"
methods = [\"GET\"]
action = \"allow\"

[[http_rules]]
host = \"**.example.test\"
methods = [\"POST\"]
paths = [\"/repos/x/locked\"]
action = \"deny\"
";

const NO_DNS: &str = "  dns     not resolved (--no-dns): every answer must still be public (or local with allow_local_binding)\n";

#[test]
fn check_judges_the_request_inside_an_intercepted_tunnel() {
    let files = Files::new();
    let p = files.write("p.toml", POLICY);
    let check = |args: &[&str]| {
        let mut all = vec!["check", "--no-dns", "--config", &p];
        all.extend_from_slice(args);
        run(&all)
    };
    let (code, out, err) = check(&["https://api.example.test/repos/a/b?x=1"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        format!(
            "ALLOW api.example.test:443\n\
             \x20 reason  allowed: an allow rule matches and no deny rule does\n\
             \x20 rule    allow api.example.test ({p}:1:20)\n\
             \x20 host    api.example.test  port 443\n\
             \x20 request GET /repos/a/b\n\
             \x20 inspect intercepted: the request meets the http rules and the mode inside TLS, and may go\n\
             {NO_DNS}"
        )
    );
    let (code, out, _) = check(&[
        "--method",
        "POST",
        "https://api.example.test/repos/x/locked",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "BLOCK api.example.test:443\n\
             \x20 reason  deny-rule: a deny rule matches (deny beats allow)\n\
             \x20 rule    deny **.example.test POST /repos/x/locked ({p}:12:8)\n\
             \x20 host    api.example.test  port 443\n\
             \x20 request POST /repos/x/locked\n\
             \x20 inspect intercepted: the tunnel is allowed, the request inside TLS is refused\n\
             {NO_DNS}"
        )
    );
    // An allow http rule names the host: PUT matches none of them.
    let (code, out, _) = check(&["--method", "PUT", "https://api.example.test/"]);
    assert_eq!(code, 1);
    assert!(out.contains("reason  not-allowed"), "{out}");
    // Outside [mitm] domains the tunnel is opaque and the http rules never see it.
    let (code, out, _) = check(&[
        "--method",
        "POST",
        "https://plain.example.test/repos/x/locked",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("inspect not intercepted"), "{out}");
    // Plain HTTP meets the rules through the forward path.
    let (code, out, _) = check(&[
        "--method",
        "POST",
        "http://plain.example.test/repos/x/locked",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("rule    deny **.example.test POST /repos/x/locked"),
        "{out}"
    );
}

#[test]
fn check_json_carries_method_path_and_intercept() {
    let files = Files::new();
    let p = files.write("p.toml", POLICY);
    let (code, out, _) = run(&[
        "check",
        "--no-dns",
        "--json",
        "--config",
        &p,
        "--method",
        "POST",
        "https://api.example.test/repos/x/%6cocked",
        "https://plain.example.test/a",
        "api.example.test",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        json_lines(&out),
        [
            serde_json::json!({"target": "https://api.example.test/repos/x/%6cocked",
                "verdict": "block", "reason": "deny-rule",
                "rule": "**.example.test POST /repos/x/locked", "host": "api.example.test",
                "port": 443, "ips": [], "method": "POST", "path": "/repos/x/%6cocked",
                "intercept": true}),
            serde_json::json!({"target": "https://plain.example.test/a", "verdict": "allow",
                "reason": "allowed", "rule": "plain.example.test", "host": "plain.example.test",
                "port": 443, "ips": [], "method": "POST", "path": "/a", "intercept": false}),
            serde_json::json!({"target": "api.example.test", "verdict": "allow",
                "reason": "allowed", "rule": "api.example.test", "host": "api.example.test",
                "port": 443, "ips": []}),
        ]
    );
}

#[test]
fn check_refuses_a_method_that_is_not_a_token() {
    let (code, _, err) = run(&["check", "--no-dns", "--method", "PO ST", "http://a.test/"]);
    assert_eq!(code, 2);
    assert_eq!(err, "error: --method `PO ST` is not an HTTP method token\n");
}

#[test]
fn validate_shows_mitm_and_http_rules() {
    let files = Files::new();
    let p = files.write(
        "p.toml",
        &format!("{POLICY}\n[[http_rules]]\nhost = \"other.test\"\naction = \"allow\"\n"),
    );
    let (code, out, err) = run(&["validate", "--config", &p]);
    assert_eq!((code, err.as_str()), (0, ""));
    let tail: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("mitm:"))
        .collect();
    let rules_at = tail.iter().position(|l| *l == "http rules:").unwrap();
    assert_eq!(tail[0], "mitm: on for api.example.test; generated CA");
    assert_eq!(
        &tail[rules_at..],
        [
            "http rules:".to_string(),
            format!("  allow  api.example.test  GET  /  {p}:7:8"),
            format!("  deny   **.example.test  POST  /repos/x/locked  {p}:12:8"),
            format!("  allow  other.test  *  /  {p}:18:8"),
            format!("warning: http rule `**.example.test POST /repos/x/locked` ({p}:12:8): its host is outside [mitm] domains, so HTTPS to it is not intercepted and the rule applies to plain HTTP only"),
            format!("warning: http rule `other.test *` ({p}:18:8): its host is outside [mitm] domains, so HTTPS to it is not intercepted and the rule applies to plain HTTP only"),
        ]
    );
    let v = validate_json(&["--config", &p]);
    assert_eq!(
        v["mitm"],
        serde_json::json!({"enabled": true, "domains": ["api.example.test"], "ca": "generated",
            "ca_cert": null, "ca_key": null, "upstream_ca": null})
    );
    assert_eq!(
        v["http_rules"][1],
        serde_json::json!({"host": "**.example.test", "methods": ["POST"],
            "paths": ["/repos/x/locked"], "action": "deny", "origin": format!("{p}:12:8")})
    );
    assert_eq!(v["http_rules"].as_array().unwrap().len(), 3);
}

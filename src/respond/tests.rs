//! The wire table, row by row, on decisions the engine really makes.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::StatusCode;

use super::*;
use crate::net::dial::Peer;
use crate::policy::{
    Access, Action, Decision, HttpRuleSpec, InspectionSpec, IpClass, Mode, Origin, Policy,
    PolicyOptions, RuleSpec, Step, Target,
};

fn policy(mode: Mode) -> Policy {
    let rule = |pattern: &str, action| RuleSpec {
        pattern: pattern.into(),
        action,
        origin: Origin::Flag("--allow"),
        managed: false,
    };
    let rules = [
        rule("evil.test", Action::Deny),
        rule("*", Action::Allow),
        rule("127.0.0.1", Action::Allow),
    ];
    let options = PolicyOptions {
        mode,
        ..PolicyOptions::default()
    };
    let own: [SocketAddr; 1] = ["127.0.0.1:3128".parse().unwrap()];
    Policy::new(&rules, &[], options)
        .unwrap()
        .with_self_addrs(&own)
}

/// The decision the engine makes for `target`; `answers` complete a name.
fn decided(policy: &Policy, target: &str, answers: Option<&[&str]>) -> Decision {
    let target = Target::parse_authority(target, Some(443)).unwrap();
    match (policy.decide(&target, Access::Tunnel), answers) {
        (Step::Done(decision), _) => decision,
        (Step::Resolve(pending), Some(answers)) => {
            let ips: Vec<std::net::IpAddr> = answers.iter().map(|a| a.parse().unwrap()).collect();
            pending.resolved(&ips)
        }
        (Step::Resolve(pending), None) => pending.failed(),
    }
}

/// One decision per reason code of SPEC section 6, each made by the engine.
fn every_denial() -> Vec<Decision> {
    let full = policy(Mode::Full);
    vec![
        decided(&full, "evil.test", None),
        decided(&policy_without_wildcard(), "other.test", None),
        requested(&policy(Mode::Limited), "POST", "/"),
        Decision::invalid_host(),
        decided(&full, "10.0.0.1", None),
        decided(&full, "a.test", Some(&["127.0.0.1"])),
        decided(&full, "a.test", None),
        decided(&full, "127.0.0.1:3128", None),
        decided(&policy(Mode::Limited), "example.com", None),
        requested(&with_http_rule(), "GET", "/a%2Fb"),
    ]
}

/// The request-level refusal of `method path` to example.com.
fn requested(policy: &Policy, method: &str, path: &str) -> Decision {
    let target = Target::parse_authority("example.com", Some(80)).unwrap();
    policy
        .check_request(&target, method, path, false)
        .expect("refused")
}

fn with_http_rule() -> Policy {
    let rule = HttpRuleSpec {
        host: "example.com".into(),
        methods: vec!["GET".into()],
        paths: Vec::new(),
        action: Action::Allow,
        origin: Origin::Api,
    };
    policy(Mode::Full)
        .with_http(&[rule], &InspectionSpec::default())
        .unwrap()
}

fn policy_without_wildcard() -> Policy {
    Policy::from_rules(&[("only.test", Action::Allow)], PolicyOptions::default()).unwrap()
}

fn denied(decision: Decision) -> Denied {
    Denied {
        decision,
        dns: None,
    }
}

fn head(refusal: &Refusal<'_>) -> (u16, &'static str, &'static str) {
    let answer = http(refusal);
    (
        answer.status.as_u16(),
        answer.error,
        answer.reason.unwrap_or(""),
    )
}

#[test]
fn every_reason_on_both_edges() {
    let table = [
        ("deny-rule", 403, "blocked-by-denylist", Code::NotAllowed),
        ("not-allowed", 403, "blocked-by-allowlist", Code::NotAllowed),
        (
            "method-not-allowed",
            403,
            "blocked-by-method-policy",
            Code::NotAllowed,
        ),
        ("invalid-host", 400, "blocked-by-policy", Code::NotAllowed),
        (
            "non-public-ip:private",
            403,
            "blocked-by-policy",
            Code::NotAllowed,
        ),
        (
            "dns-non-public:loopback",
            403,
            "blocked-by-policy",
            Code::NotAllowed,
        ),
        (
            "dns-failed",
            502,
            "blocked-by-policy",
            Code::HostUnreachable,
        ),
        (
            "self-connection",
            403,
            "blocked-by-policy",
            Code::NotAllowed,
        ),
        (
            "mitm-required",
            403,
            "blocked-by-mitm-required",
            Code::NotAllowed,
        ),
        (
            "invalid-request",
            400,
            "blocked-by-policy",
            Code::NotAllowed,
        ),
    ];
    let decisions = every_denial();
    assert_eq!(decisions.len(), table.len());
    for (decision, (code, status, error, socks_code)) in decisions.into_iter().zip(table) {
        assert_eq!(decision.reason().code(), code);
        let denied = denied(decision);
        let refusal = Refusal::Denied {
            dest: "x",
            denied: &denied,
        };
        assert_eq!(head(&refusal), (status, error, code), "{code}");
        assert_eq!(socks(&refusal), socks_code, "{code}");
    }
}

/// The `x-proxy-error` families (once asserted next to the reason codes in the engine).
#[test]
fn categories() {
    let all = [
        (Reason::Allowed, "blocked-by-policy"),
        (Reason::DenyRule, "blocked-by-denylist"),
        (Reason::NotAllowed, "blocked-by-allowlist"),
        (Reason::MethodNotAllowed, "blocked-by-method-policy"),
        (Reason::InvalidHost, "blocked-by-policy"),
        (Reason::DnsFailed, "blocked-by-policy"),
        (Reason::UnixSocketDenied, "blocked-by-policy"),
        (Reason::SelfConnection, "blocked-by-policy"),
        (Reason::MitmRequired, "blocked-by-mitm-required"),
        (Reason::InvalidRequest, "blocked-by-policy"),
        (Reason::NonPublicIp(IpClass::LinkLocal), "blocked-by-policy"),
        (Reason::DnsNonPublic(IpClass::Ula), "blocked-by-policy"),
    ];
    for (reason, family) in all {
        assert_eq!(category(reason), family, "{reason}");
    }
}

#[test]
fn the_body_names_the_reason_and_the_rule() {
    let deny_rule = denied(decided(&policy(Mode::Full), "evil.test", None));
    let answer = http(&Refusal::Denied {
        dest: "evil.test:443",
        denied: &deny_rule,
    });
    assert_eq!(
        answer.body,
        "egress-proxy: blocked evil.test:443: deny-rule (a deny rule matches (deny beats allow)); rule deny `evil.test` (--allow)\n"
    );
    let unlisted = denied(decided(&policy_without_wildcard(), "other.test", None));
    let answer = http(&Refusal::Denied {
        dest: "other.test:443",
        denied: &unlisted,
    });
    assert_eq!(
        answer.body,
        "egress-proxy: blocked other.test:443: not-allowed (no allow rule matches); rule: none; add --allow other.test:443\n"
    );
}

/// A rule written in a file: the operator's line says where, the client's body and JSON only
/// that it was a file, whatever the directory is called.
#[test]
fn a_policy_file_path_is_the_operators_alone() {
    let rule = |managed| RuleSpec {
        pattern: "evil.test".into(),
        action: Action::Deny,
        origin: Origin::File {
            path: "/srv/secret-dir/p.toml".into(),
            line: 3,
            col: 1,
        },
        managed,
    };
    for (managed, shown) in [(false, "a policy file"), (true, "the requirements")] {
        let rules = [
            rule(managed),
            RuleSpec {
                pattern: "*".into(),
                ..rule(false)
            },
        ];
        let rules = [
            rules[0].clone(),
            RuleSpec {
                action: Action::Allow,
                ..rules[1].clone()
            },
        ];
        let policy = Policy::new(&rules, &[], PolicyOptions::default()).unwrap();
        let refused = denied(decided(&policy, "evil.test", None));
        let answer = http(&Refusal::Denied {
            dest: "evil.test:443",
            denied: &refused,
        });
        for text in [&answer.body, &answer.json] {
            assert!(!text.contains("secret-dir"), "{text}");
        }
        assert!(
            answer
                .body
                .contains(&format!("rule deny `evil.test` ({shown})")),
            "{}",
            answer.body
        );
        let line = describe("evil.test:443", &refused.decision, None);
        assert_eq!(
            line,
            "evil.test:443 — deny-rule (a deny rule matches (deny beats allow); rule deny `evil.test` (/srv/secret-dir/p.toml:3:1))"
        );
    }
}

#[test]
fn json_answers_are_one_object_with_codex_field_names() {
    let parse = |answer: &HttpAnswer| -> serde_json::Value {
        assert!(answer.json.ends_with('\n') && answer.json.matches('\n').count() == 1);
        serde_json::from_str(&answer.json).unwrap()
    };
    let unlisted = denied(decided(&policy_without_wildcard(), "other.test", None));
    let json = parse(&http(&Refusal::Denied {
        dest: "other.test:443",
        denied: &unlisted,
    }));
    assert_eq!(
        json,
        serde_json::json!({
            "status": "blocked",
            "error": "blocked-by-allowlist",
            "host": "other.test",
            "port": 443,
            "reason": "not-allowed",
            "decision": "deny",
            "source": "policy",
            "rule": null,
            "hint": "add --allow other.test:443",
            "message": "blocked other.test:443: not-allowed (no allow rule matches); rule: none; add --allow other.test:443",
        })
    );
    let dns_failed = Denied {
        decision: decided(&policy(Mode::Full), "gone.test", None),
        dns: Some(crate::dns::DnsError::NxDomain),
    };
    let json = parse(&http(&Refusal::Denied {
        dest: "[::1]:8080",
        denied: &dns_failed,
    }));
    assert_eq!(
        (&json["host"], &json["port"]),
        (&"::1".into(), &8080.into())
    );
    assert_eq!(json["hint"], "dns: nxdomain: no such name");
    assert_eq!(json["rule"], "*");

    let refused = DialError::Refused(Peer::Tcp("127.0.0.1:1".parse().unwrap()));
    let json = parse(&http(&Refusal::Dial {
        dest: "a.test:1",
        error: &refused,
    }));
    assert_eq!(json["status"], "error");
    assert_eq!(json["error"], "connect-refused");
    assert_eq!(
        (&json["host"], &json["port"]),
        (&"a.test".into(), &1.into())
    );
    assert_eq!(json["reason"], serde_json::Value::Null);
    let json = parse(&http(&Refusal::BadRequest("request URI has no host")));
    assert_eq!(json["error"], "bad-request");
    assert_eq!(json["message"], "request URI has no host");
    assert_eq!(json["host"], serde_json::Value::Null);
}

#[test]
fn destinations_split_for_json() {
    let cases = [
        ("a.test:443", ("a.test", Some(443))),
        ("[::1]:80", ("::1", Some(80))),
        ("10.0.0.1:1", ("10.0.0.1", Some(1))),
        ("unix:/run/x.sock", ("unix:/run/x.sock", None)),
        ("a b", ("a b", None)),
        ("::1", ("::1", None)),
        ("a.test:99999", ("a.test:99999", None)),
    ];
    for (dest, want) in cases {
        assert_eq!(host_port(dest), want, "{dest}");
    }
}

#[test]
fn the_http_status_table() {
    let timeout = DialError::Timeout(Duration::from_secs(1));
    let dial = |error| Refusal::Dial { dest: "a:1", error };
    assert_eq!(head(&dial(&timeout)), (504, "connect-timeout", ""));
    let refused = DialError::Refused(Peer::Tcp("127.0.0.1:1".parse().unwrap()));
    assert_eq!(head(&dial(&refused)), (502, "connect-refused", ""));
    let r = Refusal::UnrequestedUpgrade { dest: "a:1" };
    assert_eq!(head(&r), (502, "upstream-failed", ""));
    assert_eq!(head(&Refusal::BadRequest("nope")), (400, "bad-request", ""));
    let verifier = io::Error::other("invalid peer certificate: NotValidForName");
    let tls = Refusal::OriginTls {
        dest: "a.test:443",
        error: &verifier,
    };
    assert_eq!(head(&tls), (502, "upstream-tls", "upstream-tls"));
    assert_eq!(
        http(&tls).body,
        "egress-proxy: TLS to a.test:443 failed: invalid peer certificate: NotValidForName\n"
    );
    let fronted = Refusal::Misdirected {
        dest: "a.test:443",
        asked: "b.test",
    };
    assert_eq!(
        head(&fronted),
        (421, "misdirected-request", "misdirected-request")
    );
    assert!(http(&fronted).body.contains("(b.test)"));
    assert_eq!(socks(&tls), Code::GeneralFailure);
    assert_eq!(http(&Refusal::Busy).status, StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn missing_session_credentials_are_a_407_with_a_basic_challenge() {
    let answer = http(&Refusal::ProxyAuth);
    assert_eq!(
        (answer.status.as_u16(), answer.error, answer.reason),
        (407, "proxy-auth-required", Some("proxy-auth-required"))
    );
    assert_eq!(answer.challenge, Some("Basic realm=\"egress-proxy\""));
    assert!(answer
        .body
        .starts_with("egress-proxy: proxy authentication required"));
    let json: serde_json::Value = serde_json::from_str(&answer.json).unwrap();
    assert_eq!(json["status"], "error");
    assert_eq!(json["error"], "proxy-auth-required");
    assert_eq!(json["reason"], "proxy-auth-required");
    assert_eq!(json["host"], serde_json::Value::Null);
    // Only the 407 challenges.
    assert_eq!(http(&Refusal::Busy).challenge, None);
    let refused = denied(decided(&policy(Mode::Full), "evil.test", None));
    let denial = http(&Refusal::Denied {
        dest: "evil.test:443",
        denied: &refused,
    });
    assert_eq!(denial.challenge, None);
}

#[test]
fn the_busy_answer_is_well_formed_and_agrees_with_the_table() {
    let text = std::str::from_utf8(BUSY).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(body.len(), length);
    let answer = http(&Refusal::Busy);
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    assert!(head.contains(&format!("x-proxy-error: {}", answer.error)));
    assert_eq!(body, answer.body);
}

/// A name refused for answers from a range this network's DNS may use gets the flag to
/// declare it in every form of the answer; a never-declarable class gets no such hint.
#[test]
fn a_declarable_answer_names_the_range_to_declare() {
    let documentation = denied(decided(
        &policy(Mode::Full),
        "fake-ip.test",
        Some(&["192.0.2.7"]),
    ));
    let answer = http(&Refusal::Denied {
        dest: "fake-ip.test:443",
        denied: &documentation,
    });
    let text = &answer.body;
    assert!(text.contains("--public-range 192.0.2.0/24"), "{text}");
    assert!(
        !text.contains("192.0.2.7"),
        "the answer stays the operator's: {text}"
    );
    let json: serde_json::Value = serde_json::from_str(&answer.json).unwrap();
    assert!(json["hint"]
        .as_str()
        .unwrap()
        .ends_with("--public-range 192.0.2.0/24"));
    let loopback = denied(decided(
        &policy(Mode::Full),
        "lo.test",
        Some(&["127.0.0.1"]),
    ));
    assert_eq!(hint("lo.test:443", &loopback.decision, None), None);
}

/// Every upstream failure on both edges: the HTTP status and reason code, the body naming
/// the upstream's answer, and the SOCKS5 reply.
#[test]
fn upstream_failures_on_both_edges() {
    use crate::net::upstream::{Answer, UpstreamError};
    let proxy: std::sync::Arc<str> = "http://me:***@corp.test:3128".into();
    let p = || std::sync::Arc::clone(&proxy);
    let rows = [
        (
            UpstreamError::Unreachable {
                proxy: p(),
                source: io::ErrorKind::ConnectionRefused.into(),
            },
            "upstream-unreachable",
            Code::GeneralFailure,
        ),
        (
            UpstreamError::Timeout {
                proxy: p(),
                after: Duration::from_secs(3),
            },
            "upstream-unreachable",
            Code::GeneralFailure,
        ),
        (
            UpstreamError::Loop {
                proxy: p(),
                addr: "127.0.0.1:3128".parse().unwrap(),
            },
            "upstream-unreachable",
            Code::GeneralFailure,
        ),
        (
            UpstreamError::Tls {
                proxy: p(),
                source: io::Error::other("invalid peer certificate: UnknownIssuer"),
            },
            "upstream-tls",
            Code::GeneralFailure,
        ),
        (
            UpstreamError::Auth {
                proxy: p(),
                answer: Answer::Http(407),
            },
            "upstream-auth",
            Code::GeneralFailure,
        ),
        (
            UpstreamError::Auth {
                proxy: p(),
                answer: Answer::SocksPassword,
            },
            "upstream-auth",
            Code::GeneralFailure,
        ),
        (
            UpstreamError::Refused {
                proxy: p(),
                answer: Answer::Http(403),
            },
            "upstream-refused",
            Code::NotAllowed,
        ),
        (
            UpstreamError::Refused {
                proxy: p(),
                answer: Answer::Http(503),
            },
            "upstream-refused",
            Code::HostUnreachable,
        ),
        (
            UpstreamError::Refused {
                proxy: p(),
                answer: Answer::Http(400),
            },
            "upstream-refused",
            Code::GeneralFailure,
        ),
        (
            UpstreamError::Refused {
                proxy: p(),
                answer: Answer::Socks(0x05),
            },
            "upstream-refused",
            Code::ConnectionRefused,
        ),
        (
            UpstreamError::Refused {
                proxy: p(),
                answer: Answer::Socks(0x02),
            },
            "upstream-refused",
            Code::NotAllowed,
        ),
        (
            UpstreamError::Broken {
                proxy: p(),
                detail: "its answer is not HTTP".into(),
            },
            "upstream-refused",
            Code::GeneralFailure,
        ),
    ];
    for (error, code, socks_code) in rows {
        let refusal = Refusal::UpstreamProxy {
            dest: "a.test:443",
            error: &error,
        };
        assert_eq!(head(&refusal), (502, code, code), "{error}");
        assert_eq!(socks(&refusal), socks_code, "{error}");
        let body = http(&refusal).body;
        assert!(
            body.starts_with("egress-proxy: cannot connect to a.test:443: "),
            "{body}"
        );
        assert!(body.contains("http://me:***@corp.test:3128"), "{body}");
    }
    let refused = UpstreamError::Refused {
        proxy: p(),
        answer: Answer::Http(403),
    };
    assert_eq!(
        http(&Refusal::UpstreamProxy { dest: "a.test:443", error: &refused }).body,
        "egress-proxy: cannot connect to a.test:443: the upstream proxy http://me:***@corp.test:3128 refused: HTTP 403\n"
    );
}

mod socks;

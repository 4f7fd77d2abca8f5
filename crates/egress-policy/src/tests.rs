//! Decision-level tests: the seeds' local-exception rules, limited mode, DNS answers,
//! self-connections and reason codes, end to end through `Policy`.

use super::*;

fn policy_with(rules: &[(&str, Action)], options: PolicyOptions) -> Policy {
    Policy::from_rules(rules, options).expect("test rules compile")
}

fn policy(rules: &[(&str, Action)]) -> Policy {
    policy_with(rules, PolicyOptions::default())
}

fn local_binding() -> PolicyOptions {
    PolicyOptions {
        allow_local_binding: true,
        ..Default::default()
    }
}

/// `verdict reason [rule]` for a target string, decided without DNS.
fn show(p: &Policy, target: &str) -> String {
    let target = match Target::parse_authority(target, Some(443)) {
        Ok(t) => t,
        Err(_) => return "block invalid-host".into(),
    };
    match p.decide(&target, Access::Tunnel) {
        Step::Done(d) => {
            let mut out = format!("{} {}", d.verdict().as_str(), d.reason());
            if let Some(rule) = d.rule() {
                out.push(' ');
                out.push_str(&rule.pattern);
            }
            out
        }
        Step::Resolve(pending) => {
            let rule = pending
                .rule()
                .map_or(String::new(), |r| format!(" {}", r.pattern));
            format!("allow allowed{rule} +dns")
        }
    }
}

/// The reason a step gives without DNS (`allowed` for a name still to be resolved).
fn reason(step: Step<'_>) -> Reason {
    match step {
        Step::Done(d) => d.reason(),
        Step::Resolve(_) => Reason::Allowed,
    }
}

use Action::{Allow, Deny};

#[test]
fn local_exceptions_follow_the_seeds() {
    let p = policy(&[
        ("127.0.0.1", Allow),
        ("10.1.0.0/16", Allow),
        ("localhost", Allow),
        ("**.example.com", Allow),
        ("*", Allow),
    ]);
    let cases = [
        // exact IP literal and CIDR allow rules open one local target
        ("127.0.0.1:8080", "allow allowed 127.0.0.1"),
        ("127.1:8080", "allow allowed 127.0.0.1"),
        ("[::ffff:127.0.0.1]:8080", "allow allowed 127.0.0.1"),
        ("10.1.2.3:22", "allow allowed 10.1.0.0/16"),
        // the global wildcard never grants a local exception
        ("127.0.0.2:80", "block non-public-ip:loopback *"),
        ("[::1]:80", "block non-public-ip:loopback *"),
        ("10.2.0.1:80", "block non-public-ip:private *"),
        ("169.254.169.254:80", "block non-public-ip:link-local *"),
        ("0xa9fea9fe:80", "block non-public-ip:link-local *"),
        ("100.64.0.1:80", "block non-public-ip:cgnat *"),
        ("[fd00::1]:80", "block non-public-ip:ula *"),
        (
            "[::ffff:169.254.169.254]:80",
            "block non-public-ip:link-local *",
        ),
        ("0.0.0.0:80", "block non-public-ip:unspecified *"),
        ("8.8.8.8:53", "allow allowed *"),
        // localhost resolves locally and needs the exact rule
        ("localhost:3000", "allow allowed localhost"),
        ("app.localhost:3000", "block non-public-ip:loopback *"),
        // names are allowed pending DNS
        ("api.example.com:443", "allow allowed **.example.com +dns"),
        ("anything.test:443", "allow allowed * +dns"),
    ];
    for (target, want) in cases {
        assert_eq!(show(&p, target), want, "{target}");
    }
}

#[test]
fn allow_local_binding_opens_local_classes_only() {
    let p = policy_with(
        &[("*", Allow), ("**.app.localhost", Allow)],
        local_binding(),
    );
    let cases = [
        ("127.0.0.2:80", "allow allowed *"),
        ("10.2.0.1:80", "allow allowed *"),
        ("[fd00::1]:80", "allow allowed *"),
        ("169.254.1.1:80", "allow allowed *"),
        ("app.localhost:80", "allow allowed **.app.localhost"),
        ("0.0.0.0:80", "block non-public-ip:unspecified *"),
        ("224.0.0.1:80", "block non-public-ip:multicast *"),
        ("255.255.255.255:80", "block non-public-ip:broadcast *"),
        ("240.0.0.1:80", "block non-public-ip:reserved *"),
        ("192.0.2.1:80", "block non-public-ip:documentation *"),
        ("198.18.0.1:80", "block non-public-ip:benchmarking *"),
        ("[2001::1]:80", "block non-public-ip:teredo *"),
        ("[::]:80", "block non-public-ip:unspecified *"),
    ];
    for (target, want) in cases {
        assert_eq!(show(&p, target), want, "{target}");
    }
    // Even an exact rule never opens a never-reachable class.
    let p = policy(&[("0.0.0.0", Allow), ("224.0.0.1", Allow)]);
    assert_eq!(
        show(&p, "0.0.0.0:80"),
        "block non-public-ip:unspecified 0.0.0.0"
    );
    assert_eq!(
        show(&p, "224.0.0.1:80"),
        "block non-public-ip:multicast 224.0.0.1"
    );
}

#[test]
fn deny_and_no_allow() {
    let p = policy(&[("**.example.com", Allow), ("evil.example.com", Deny)]);
    assert_eq!(
        show(&p, "evil.example.com:443"),
        "block deny-rule evil.example.com"
    );
    assert_eq!(
        show(&p, "EVIL.Example.com.:443"),
        "block deny-rule evil.example.com"
    );
    assert_eq!(show(&p, "other.test:443"), "block not-allowed");
    assert_eq!(show(&p, "127.0.0.1:443"), "block not-allowed");
    assert_eq!(show(&p, "bad host:443"), "block invalid-host");
    let empty = policy(&[]);
    assert_eq!(show(&empty, "example.com:443"), "block not-allowed");
    assert_eq!(
        empty.warnings(),
        ["no allow rule: every destination is blocked".to_string()]
    );
}

#[test]
fn limited_mode_allows_only_safe_plain_http_methods() {
    let p = policy_with(
        &[("*", Allow)],
        PolicyOptions {
            mode: Mode::Limited,
            ..Default::default()
        },
    );
    let target = Target::parse_authority("example.com:80", None).unwrap();
    for method in ["GET", "HEAD", "OPTIONS"] {
        let read = Access::Http {
            method,
            path: "/",
            body: false,
        };
        assert_eq!(reason(p.decide(&target, read)), Reason::Allowed, "{method}");
        // A body turns a read into an upload.
        let upload = Access::Http {
            method,
            path: "/",
            body: true,
        };
        assert_eq!(
            reason(p.decide(&target, upload)),
            Reason::MethodNotAllowed,
            "{method} with a body"
        );
    }
    for method in ["POST", "PUT", "DELETE", "PATCH", "CONNECT", "get", "TRACE"] {
        let d = p.decide(
            &target,
            Access::Http {
                method,
                path: "/",
                body: false,
            },
        );
        assert_eq!(reason(d), Reason::MethodNotAllowed, "{method}");
    }
    // Without interception a tunnel's requests cannot be seen.
    assert_eq!(
        reason(p.decide(&target, Access::Tunnel)),
        Reason::MitmRequired
    );
    let path = Path::new("/tmp/x.sock");
    let post = Access::Http {
        method: "POST",
        path: "/",
        body: false,
    };
    assert_eq!(
        p.decide_unix(path, None, post).reason(),
        Reason::MethodNotAllowed
    );
    let get_with_body = Access::Http {
        method: "GET",
        path: "/",
        body: true,
    };
    assert_eq!(
        p.decide_unix(path, None, get_with_body).reason(),
        Reason::MethodNotAllowed
    );
}

fn resolved(p: &Policy, name: &str, answers: &[&str]) -> String {
    let target = Target::parse_authority(name, Some(443)).unwrap();
    let Step::Resolve(pending) = p.decide(&target, Access::Tunnel) else {
        panic!("{name} needs DNS");
    };
    let ips: Vec<IpAddr> = answers.iter().map(|a| a.parse().unwrap()).collect();
    let d = pending.resolved(&ips);
    let pinned: Vec<String> = d
        .ips()
        .iter()
        .map(|c| format!("{}={}", c.ip, c.class))
        .collect();
    format!(
        "{} {} [{}]",
        d.verdict().as_str(),
        d.reason(),
        pinned.join(" ")
    )
}

#[test]
fn resolved_answers_are_all_classified() {
    let p = policy(&[
        ("**.dev.test", Allow),
        ("10.0.0.0/8", Allow),
        ("127.0.0.1", Allow),
    ]);
    let cases: &[(&[&str], &str)] = &[
        (&["93.184.216.34"], "allow allowed [93.184.216.34=public]"),
        (
            &["93.184.216.34", "2606:2800::1"],
            "allow allowed [93.184.216.34=public 2606:2800::1=public]",
        ),
        // rebinding: any non-public answer blocks the whole name, exact IP rules or not
        (
            &["93.184.216.34", "127.0.0.1"],
            "block dns-non-public:loopback [93.184.216.34=public 127.0.0.1=loopback]",
        ),
        (
            &["10.0.0.5"],
            "block dns-non-public:private [10.0.0.5=private]",
        ),
        (
            &["::ffff:169.254.169.254"],
            "block dns-non-public:link-local [169.254.169.254=link-local]",
        ),
        (
            &["64:ff9b::7f00:1"],
            "block dns-non-public:loopback [64:ff9b::7f00:1=loopback]",
        ),
        (
            &["0.0.0.0"],
            "block dns-non-public:unspecified [0.0.0.0=unspecified]",
        ),
        (&[], "block dns-failed []"),
    ];
    for (answers, want) in cases {
        assert_eq!(resolved(&p, "name.dev.test", answers), *want, "{answers:?}");
    }
}

#[test]
fn use_public_only_drops_non_public_answers() {
    let p = policy_with(
        &[("**.dev.test", Allow)],
        PolicyOptions {
            multi_answer: MultiAnswer::UsePublicOnly,
            ..Default::default()
        },
    );
    assert_eq!(
        resolved(&p, "a.dev.test", &["10.0.0.1", "93.184.216.34"]),
        "allow allowed [93.184.216.34=public]"
    );
    assert_eq!(
        resolved(&p, "a.dev.test", &["10.0.0.1", "127.0.0.1"]),
        "block dns-non-public:private [10.0.0.1=private 127.0.0.1=loopback]"
    );
}

#[test]
fn allow_local_binding_admits_local_answers_but_deny_cidrs_still_apply() {
    let p = policy_with(
        &[("**.dev.test", Allow), ("192.168.0.0/16", Deny)],
        local_binding(),
    );
    assert_eq!(
        resolved(&p, "dev.dev.test", &["127.0.0.1"]),
        "allow allowed [127.0.0.1=loopback]"
    );
    assert_eq!(
        resolved(&p, "dev.dev.test", &["127.0.0.1", "192.168.1.1"]),
        "block deny-rule [127.0.0.1=loopback 192.168.1.1=private]"
    );
    assert_eq!(
        resolved(&p, "dev.dev.test", &["224.0.0.1"]),
        "block dns-non-public:multicast [224.0.0.1=multicast]"
    );
}

#[test]
fn the_proxy_itself_is_never_a_destination() {
    let own: [SocketAddr; 2] = [
        "127.0.0.1:3128".parse().unwrap(),
        "[::1]:8081".parse().unwrap(),
    ];
    let p =
        policy_with(&[("*", Allow), ("localhost", Allow)], local_binding()).with_self_addrs(&own);
    assert_eq!(show(&p, "127.0.0.1:3128"), "block self-connection *");
    assert_eq!(show(&p, "127.9.9.9:3128"), "block self-connection *");
    assert_eq!(show(&p, "[::1]:8081"), "block self-connection *");
    assert_eq!(
        show(&p, "0.0.0.0:3128"),
        "block non-public-ip:unspecified *"
    );
    assert_eq!(
        show(&p, "localhost:8081"),
        "block self-connection localhost"
    );
    assert_eq!(show(&p, "127.0.0.1:3129"), "allow allowed *");
    assert_eq!(
        resolved(&p, "me.test:3128", &["127.0.0.1"])
            .split(' ')
            .take(2)
            .collect::<Vec<_>>(),
        ["block", "self-connection"]
    );
}

#[test]
fn reason_codes_are_stable() {
    let all = [
        (Reason::Allowed, "allowed", "blocked-by-policy"),
        (Reason::DenyRule, "deny-rule", "blocked-by-denylist"),
        (Reason::NotAllowed, "not-allowed", "blocked-by-allowlist"),
        (
            Reason::MethodNotAllowed,
            "method-not-allowed",
            "blocked-by-method-policy",
        ),
        (Reason::InvalidHost, "invalid-host", "blocked-by-policy"),
        (Reason::DnsFailed, "dns-failed", "blocked-by-policy"),
        (
            Reason::UnixSocketDenied,
            "unix-socket-denied",
            "blocked-by-policy",
        ),
        (
            Reason::SelfConnection,
            "self-connection",
            "blocked-by-policy",
        ),
        (
            Reason::NonPublicIp(IpClass::LinkLocal),
            "non-public-ip:link-local",
            "blocked-by-policy",
        ),
        (
            Reason::DnsNonPublic(IpClass::Ula),
            "dns-non-public:ula",
            "blocked-by-policy",
        ),
    ];
    // The `x-proxy-error` families are the proxy's (its response table tests them).
    for (reason, code, _category) in all {
        assert_eq!(reason.code(), code);
        assert_eq!(reason.to_string(), code);
    }
    // Every class renders into both families with its own name.
    for (_, class) in classifier::ranges() {
        assert_eq!(
            Reason::NonPublicIp(class).code(),
            format!("non-public-ip:{class}")
        );
        assert_eq!(
            Reason::DnsNonPublic(class).code(),
            format!("dns-non-public:{class}")
        );
    }
}

#[test]
fn bad_patterns_name_their_origin() {
    let spec = RuleSpec {
        pattern: "api.*.com".into(),
        action: Allow,
        origin: Origin::File {
            path: "dev.toml".into(),
            line: 7,
            col: 1,
        },
        managed: false,
    };
    let err = Policy::new(&[spec], &[], PolicyOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "dev.toml:7:1: invalid pattern `api.*.com`: a whole-label `*` is only allowed at the front (`*.example.com` or `**.example.com`)"
    );
}

#[test]
fn shadowed_rules_are_reported_with_origins() {
    let p = policy(&[
        ("api.corp.test", Allow),
        ("**.corp.test", Deny),
        ("ok.test", Allow),
    ]);
    assert_eq!(
        p.warnings(),
        ["allow rule `api.corp.test` (<api>) has no effect: deny rule `**.corp.test` (<api>) covers everything it allows".to_string()]
    );
}

#[test]
fn unix_sockets_are_decided_by_the_map_alone() {
    let dir = tempfile::tempdir().unwrap();
    let sock = std::fs::canonicalize(dir.path()).unwrap().join("ok.sock");
    std::fs::write(&sock, "").unwrap();
    let p = Policy::new(
        &[],
        &[UnixSocketSpec {
            path: sock.clone(),
            action: UnixAction::Allow,
            origin: Origin::Api,
        }],
        PolicyOptions::default(),
    )
    .unwrap();
    let get = Access::Http {
        method: "GET",
        path: "/",
        body: false,
    };
    let id = FileId::of(&std::fs::metadata(&sock).unwrap());
    let d = p.decide_unix(&sock, Some(id), get);
    assert!(d.is_allowed());
    assert_eq!(
        d.rule().unwrap().pattern.as_ref(),
        sock.display().to_string()
    );
    let d = p.decide_unix(Path::new("/nonexistent/docker.sock"), None, get);
    assert_eq!(d.reason(), Reason::UnixSocketDenied);
}

mod declared;
/// `defer` for an upstream that resolves names: an allowed name is left unresolved with no
/// address, while literals are still classified and everything the rules refuse stays
/// refused.
#[test]
fn deferred_names_are_unresolved_and_literals_still_classified() {
    let p = policy(&[
        ("**.corp.test", Allow),
        ("evil.corp.test", Deny),
        ("10.0.0.1", Allow),
    ]);
    let defer = |target: &str| {
        let target = Target::parse_authority(target, Some(443)).unwrap();
        p.decide(&target, Access::Tunnel).defer()
    };
    match defer("api.corp.test:8443") {
        Ok(Deferred::Unresolved(named)) => {
            let d = named.decision();
            assert!(d.is_allowed());
            assert!(d.ips().is_empty(), "nothing to dial directly");
            assert_eq!(d.port(), 8443);
            assert_eq!(&*d.rule().unwrap().pattern, "**.corp.test");
        }
        other => panic!("{other:?}"),
    }
    match defer("10.0.0.1") {
        Ok(Deferred::Checked(allowed)) => assert_eq!(allowed.first().to_string(), "10.0.0.1:443"),
        other => panic!("{other:?}"),
    }
    let refused = [
        ("evil.corp.test", "deny-rule"),
        ("other.test", "not-allowed"),
        ("10.0.0.2", "not-allowed"),
        ("127.0.0.1", "not-allowed"),
        ("localhost", "not-allowed"),
    ];
    for (target, reason) in refused {
        assert_eq!(
            defer(target).unwrap_err().reason().code(),
            reason,
            "{target}"
        );
    }
    let wide = policy(&[("*", Allow)]);
    let target = Target::parse_authority("169.254.169.254:80", None).unwrap();
    let d = wide.decide(&target, Access::Tunnel).defer().unwrap_err();
    assert_eq!(d.reason().code(), "non-public-ip:link-local");
    let limited = policy_with(
        &[("**.corp.test", Allow)],
        PolicyOptions {
            mode: Mode::Limited,
            ..Default::default()
        },
    );
    let target = Target::parse_authority("api.corp.test:443", None).unwrap();
    let d = limited.decide(&target, Access::Tunnel).defer().unwrap_err();
    assert_eq!(d.reason().code(), "mitm-required");
}

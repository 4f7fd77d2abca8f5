//! Path normalisation, rule paths, and the http rules and inspection scope through `Policy`.

use super::path::{normalize, PathError, PathRule};
use crate::{
    Access, Action, HttpRuleSpec, InspectionSpec, Mode, Origin, Policy, PolicyOptions, Reason,
    Step, Target,
};

#[test]
fn paths_normalise_to_one_spelling() {
    let cases: &[(&str, Result<&str, PathError>)] = &[
        ("", Ok("/")),
        ("/", Ok("/")),
        ("/repos/x/y/issues", Ok("/repos/x/y/issues")),
        ("/repos/x/y/issues?state=open", Ok("/repos/x/y/issues")),
        ("/repos/x/y/../y/issues", Ok("/repos/x/y/issues")),
        ("/repos/x/y/./issues", Ok("/repos/x/y/issues")),
        ("/repos/x/y/%69ssues", Ok("/repos/x/y/issues")),
        ("/repos/x/y/%2e%2e/y/issues", Ok("/repos/x/y/issues")),
        ("/repos/x/y/%2E%2E/%2e/z", Ok("/repos/x/z")),
        ("//repos/x/y/issues", Ok("/repos/x/y/issues")),
        ("/repos///x//y/issues/", Ok("/repos/x/y/issues")),
        ("/../../etc", Ok("/etc")),
        ("/..", Ok("/")),
        ("/REPOS", Ok("/REPOS")),
        ("/a%20b", Ok("/a%20b")),
        ("/a%c3%a9", Ok("/a%C3%A9")),
        ("/a%7e", Ok("/a~")),
        ("/repos/x/y/issues;x", Err(PathError::Ambiguous)),
        ("/repos/x/y/issues%3bx", Err(PathError::Ambiguous)),
        ("/repos%2Fx", Err(PathError::Ambiguous)),
        ("/repos%2fx", Err(PathError::Ambiguous)),
        ("/repos%5Cx", Err(PathError::Ambiguous)),
        ("/repos\\x", Err(PathError::Ambiguous)),
        ("/repos%00", Err(PathError::Ambiguous)),
        ("/repos%0a", Err(PathError::Ambiguous)),
        ("/repos%252F", Err(PathError::Ambiguous)),
        ("/repos\0", Err(PathError::Ambiguous)),
        ("/répos", Err(PathError::Ambiguous)),
        ("/repos%", Err(PathError::BadEscape)),
        ("/repos%4", Err(PathError::BadEscape)),
        ("/repos%zz", Err(PathError::BadEscape)),
        ("repos", Err(PathError::NotAbsolute)),
        ("*", Err(PathError::NotAbsolute)),
    ];
    for (input, want) in cases {
        let got = normalize(input).map(|p| p.into_owned());
        assert_eq!(got.as_deref().map_err(|e| *e), *want, "{input:?}");
    }
}

#[test]
fn rule_paths_match_whole_leading_segments() {
    let cases: &[(&str, &str, bool)] = &[
        ("/repos", "/repos", true),
        ("/repos", "/repos/a", true),
        ("/repos", "/reposx", false),
        ("/repos/", "/repos/a", true),
        ("/", "/anything/at/all", true),
        ("/repos/*/issues", "/repos/a/issues", true),
        ("/repos/*/issues", "/repos/a/issues/1", true),
        ("/repos/*/issues", "/repos/issues", false),
        ("/repos/*/issues", "/repos/a/b/issues", false),
        ("/repos/*", "/repos", false),
        ("/repos", "/REPOS", false),
        ("/a%7e", "/a~", true),
        ("/a%20b", "/a%20b", true),
    ];
    for (rule, path, want) in cases {
        let rule = PathRule::parse(rule).unwrap();
        let path = normalize(path).unwrap();
        assert_eq!(rule.matches(&path), *want, "{rule} vs {path}");
    }
    for (bad, err) in [
        ("repos", PathError::NotAbsolute),
        ("/repos/a*", PathError::PartialWildcard),
        ("/repos%2F", PathError::Ambiguous),
        ("/repos?x", PathError::Ambiguous),
    ] {
        assert_eq!(PathRule::parse(bad), Err(err), "{bad}");
    }
}

fn rule(host: &str, methods: &[&str], paths: &[&str], action: Action) -> HttpRuleSpec {
    HttpRuleSpec {
        host: host.into(),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        action,
        origin: Origin::Api,
    }
}

fn mitm(domains: Option<&[&str]>) -> InspectionSpec {
    InspectionSpec {
        enabled: true,
        domains: domains.map(|d| d.iter().map(|p| (p.to_string(), Origin::Api)).collect()),
    }
}

fn policy(mode: Mode, http: &[HttpRuleSpec], inspection: &InspectionSpec) -> Policy {
    let options = PolicyOptions {
        mode,
        ..Default::default()
    };
    Policy::from_rules(&[("**.example.test", Action::Allow)], options)
        .unwrap()
        .with_http(http, inspection)
        .unwrap()
}

fn github_rules() -> Vec<HttpRuleSpec> {
    vec![
        rule("api.example.test", &["GET"], &[], Action::Allow),
        rule(
            "api.example.test",
            &["POST"],
            &["/repos/*/*/issues"],
            Action::Allow,
        ),
        rule(
            "api.example.test",
            &["POST"],
            &["/repos/x/locked"],
            Action::Deny,
        ),
        rule("*.example.test", &["DELETE"], &[], Action::Deny),
    ]
}

/// `allow`, or the refusal's reason code (with the rule's pattern for a deny).
fn request(p: &Policy, host: &str, method: &str, path: &str) -> String {
    let target = Target::parse_authority(host, Some(443)).unwrap();
    let direct = p.check_request(&target, method, path, false);
    // `decide` for a plain-HTTP request runs the same checks.
    let access = Access::Http {
        method,
        path,
        body: false,
    };
    let decided = match p.decide(&target, access) {
        Step::Done(d) => Some(d),
        Step::Resolve(_) => None,
    };
    assert_eq!(direct, decided, "{method} {host}{path}");
    match direct {
        None => "allow".into(),
        Some(d) => match d.rule() {
            Some(r) => format!("{} {}", d.reason(), r.pattern),
            None => d.reason().to_string(),
        },
    }
}

#[test]
fn http_rules_narrow_requests_and_resist_respelling() {
    let p = policy(Mode::Full, &github_rules(), &InspectionSpec::default());
    let deny = "deny-rule api.example.test POST /repos/x/locked";
    let cases: &[(&str, &str, &str, &str)] = &[
        ("api.example.test", "GET", "/anything", "allow"),
        ("api.example.test", "POST", "/repos/x/y/issues", "allow"),
        ("api.example.test", "post", "/repos/x/y/issues", "allow"),
        ("api.example.test", "POST", "/repos/x/y/issues/1", "allow"),
        (
            "api.example.test",
            "POST",
            "/repos/x/y/pulls",
            "not-allowed",
        ),
        (
            "api.example.test",
            "PUT",
            "/repos/x/y/issues",
            "not-allowed",
        ),
        (
            "api.example.test",
            "POST",
            "/REPOS/x/y/issues",
            "not-allowed",
        ),
        (
            "api.example.test",
            "POST",
            "/repos/x/y/z/../issues",
            "allow",
        ),
        ("api.example.test", "POST", "/repos/x/locked", deny),
        ("api.example.test", "POST", "/repos/x/locked/sub", deny),
        ("api.example.test", "POST", "/repos/x/y/../locked", deny),
        ("api.example.test", "POST", "/repos/x/%6cocked", deny),
        ("api.example.test", "POST", "//repos//x/locked", deny),
        ("api.example.test", "pOsT", "/repos/x/locked", deny),
        (
            "api.example.test",
            "POST",
            "/repos/x/locked;x",
            "invalid-request",
        ),
        (
            "api.example.test",
            "POST",
            "/repos%2Fx/locked",
            "invalid-request",
        ),
        (
            "api.example.test",
            "POST",
            "/repos/x\\locked",
            "invalid-request",
        ),
        (
            "api.example.test",
            "POST",
            "/repos/x/locked%00",
            "invalid-request",
        ),
        (
            "api.example.test",
            "POST",
            "/repos/x/%zzocked",
            "invalid-request",
        ),
        ("api.example.test", "GET", "/a;b", "invalid-request"),
        // The deny on every subdomain beats the allow on the host.
        (
            "api.example.test",
            "DELETE",
            "/",
            "deny-rule *.example.test DELETE",
        ),
        // A host only deny rules name keeps everything else.
        ("www.example.test", "POST", "/x", "allow"),
        (
            "www.example.test",
            "DELETE",
            "/x",
            "deny-rule *.example.test DELETE",
        ),
        // No http rule names the apex: its paths are not even looked at.
        ("example.test", "DELETE", "/a;b%2F", "allow"),
    ];
    for (host, method, path, want) in cases {
        assert_eq!(
            request(&p, host, method, path),
            *want,
            "{method} {host}{path}"
        );
    }
}

#[test]
fn an_http_allow_never_opens_a_host_the_domain_rules_do_not() {
    let http = [rule("other.test", &[], &[], Action::Allow)];
    let p = policy(Mode::Full, &http, &InspectionSpec::default());
    let target = Target::parse_authority("other.test:80", None).unwrap();
    let access = Access::Http {
        method: "GET",
        path: "/",
        body: false,
    };
    assert_eq!(p.check_request(&target, "GET", "/", false), None);
    let Step::Done(d) = p.decide(&target, access) else {
        panic!("a host no domain rule allows is decided without DNS");
    };
    assert_eq!(d.reason(), Reason::NotAllowed);
}

#[test]
fn limited_mode_reads_come_before_the_http_rules() {
    let p = policy(Mode::Limited, &github_rules(), &mitm(None));
    assert_eq!(
        request(&p, "api.example.test", "POST", "/repos/x/y/issues"),
        "method-not-allowed"
    );
    assert_eq!(request(&p, "api.example.test", "GET", "/x"), "allow");
    let target = Target::parse_authority("api.example.test:443", None).unwrap();
    assert_eq!(
        p.check_request(&target, "GET", "/x", true)
            .map(|d| d.reason()),
        Some(Reason::MethodNotAllowed)
    );
}

/// `block <reason>`, `intercept` or `opaque` for a tunnel, decided up to DNS.
fn tunnel(p: &Policy, host: &str) -> String {
    let target = Target::parse_authority(host, Some(443)).unwrap();
    let decision = match p.decide(&target, Access::Tunnel) {
        Step::Done(d) => d,
        Step::Resolve(pending) => pending.resolved(&["93.184.216.34".parse().unwrap()]),
    };
    let recheck = p.recheck(&target, "93.184.216.34".parse().unwrap());
    assert_eq!(decision, recheck, "{host}");
    if !decision.is_allowed() {
        return format!("block {}", decision.reason());
    }
    let uninspected = decision.clone().uninspected();
    if decision.intercept() {
        assert_eq!(uninspected.reason(), Reason::MitmRequired, "{host}");
        "intercept".into()
    } else {
        assert_eq!(uninspected, decision, "{host}");
        "opaque".into()
    }
}

#[test]
fn tunnels_are_intercepted_refused_or_opaque() {
    let off = InspectionSpec::default();
    let scoped = mitm(Some(&["api.example.test", "*.cdn.example.test"]));
    let http = github_rules();
    let cases: &[(Mode, &[HttpRuleSpec], &InspectionSpec, &str, &str)] = &[
        (Mode::Full, &[], &off, "api.example.test", "opaque"),
        (Mode::Full, &http, &off, "api.example.test", "opaque"),
        (Mode::Full, &[], &mitm(None), "api.example.test", "opaque"),
        (
            Mode::Full,
            &http,
            &mitm(None),
            "api.example.test",
            "intercept",
        ),
        (
            Mode::Full,
            &http,
            &mitm(None),
            "www.example.test",
            "intercept",
        ),
        (Mode::Full, &http, &mitm(None), "example.test", "opaque"),
        (Mode::Full, &http, &scoped, "api.example.test", "intercept"),
        (Mode::Full, &http, &scoped, "www.example.test", "opaque"),
        (
            Mode::Limited,
            &[],
            &off,
            "api.example.test",
            "block mitm-required",
        ),
        (
            Mode::Limited,
            &[],
            &mitm(None),
            "api.example.test",
            "intercept",
        ),
        (Mode::Limited, &[], &scoped, "api.example.test", "intercept"),
        (
            Mode::Limited,
            &[],
            &scoped,
            "a.cdn.example.test",
            "intercept",
        ),
        (
            Mode::Limited,
            &[],
            &scoped,
            "www.example.test",
            "block mitm-required",
        ),
        // The domain rules still decide an intercepted host.
        (
            Mode::Limited,
            &[],
            &mitm(None),
            "elsewhere.test",
            "block not-allowed",
        ),
        (
            Mode::Full,
            &http,
            &mitm(None),
            "elsewhere.test",
            "block not-allowed",
        ),
    ];
    for (mode, http, inspection, host, want) in cases {
        let p = policy(*mode, http, inspection);
        assert_eq!(tunnel(&p, host), *want, "{mode:?} {host} {inspection:?}");
    }
}

#[test]
fn only_explicit_domains_answer_inside_tls() {
    let target = |h| Target::parse_authority(h, Some(443)).unwrap();
    let scoped = policy(Mode::Full, &[], &mitm(Some(&["**.example.test"])));
    assert!(scoped.answers_inside_tls(&target("api.example.test")));
    assert!(!scoped.answers_inside_tls(&target("other.test")));
    let everywhere = policy(Mode::Full, &[], &mitm(None));
    assert!(!everywhere.answers_inside_tls(&target("api.example.test")));
    let off = InspectionSpec {
        enabled: false,
        ..mitm(Some(&["**.example.test"]))
    };
    assert!(!policy(Mode::Full, &[], &off).answers_inside_tls(&target("api.example.test")));
}

#[test]
fn bad_http_rules_are_errors_at_their_origin() {
    let base = Policy::from_rules(&[], PolicyOptions::default()).unwrap();
    let cases = [
        (rule("*.com", &[], &[], Action::Allow), "*.com"),
        (rule("a.test", &["GE T"], &[], Action::Allow), "GE T"),
        (rule("a.test", &[""], &[], Action::Deny), ""),
        (rule("a.test", &[], &["repos"], Action::Allow), "repos"),
        (rule("a.test", &[], &["/a%2Fb"], Action::Deny), "/a%2Fb"),
    ];
    for (spec, pattern) in cases {
        let err = base
            .with_http(&[spec], &InspectionSpec::default())
            .unwrap_err();
        assert_eq!(err.pattern, pattern);
    }
    let err = base
        .with_http(&[], &mitm(Some(&["exa mple.test"])))
        .unwrap_err();
    assert_eq!(err.pattern, "exa mple.test");
}

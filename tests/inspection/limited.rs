//! `mode = "limited"` with `[mitm]` under `run`: reads reach the origin over HTTP/2 and
//! HTTP/1.1 on both sides, writes are refused inside TLS before anything reaches the origin,
//! a wrong origin certificate is a 502, a denied name under `[mitm] domains` is answered
//! inside TLS, and a request for another host inside the tunnel is a 421.

use crate::support::https_origin::{HttpsOrigin, H1, H2_H1};
use crate::{reply, url, World};

/// Limited mode allowing `allowed.test` (and `wrongname.test`), with `mitm` as given.
fn limited(world: &World, mitm: &str) -> String {
    world.config(
        "mode = \"limited\"\nallowed_domains = [\"allowed.test\", \"wrongname.test\"]",
        mitm,
        "",
    )
}

#[test]
fn a_get_reaches_the_origin_and_a_post_is_refused_inside_tls() {
    let world = World::new();
    let origin = HttpsOrigin::start(&world.origin_ca, &["allowed.test"], H2_H1);
    let config = limited(&world, "");
    let get = world.curl(&config, &[&url("allowed.test", origin.port(), "/get")]);
    let got = reply(&get);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body, "origin saw GET /get HTTP/2.0");
    assert_eq!(get.stderr, "", "nothing was blocked");
    assert_eq!(origin.lines(), ["GET /get"]);

    let post = world.curl(
        &config,
        &[
            "-X",
            "POST",
            "-d",
            "x=1",
            &url("allowed.test", origin.port(), "/post"),
        ],
    );
    let refused = reply(&post);
    assert_eq!(
        refused.verdict(),
        (
            403,
            Some("blocked-by-method-policy"),
            Some("method-not-allowed")
        ),
        "{refused:?}"
    );
    // The explanation is for a refusal inside TLS too, not only for plain HTTP.
    assert!(
        refused
            .body
            .contains("limited mode only allows GET, HEAD and OPTIONS")
            && !refused.body.contains("plain HTTP"),
        "{refused:?}"
    );
    assert_eq!(
        origin.lines(),
        ["GET /get"],
        "the refused POST reached the origin"
    );
    assert!(
        post.stderr.contains("method-not-allowed"),
        "run did not report the refusal: {}",
        post.stderr
    );
}

#[test]
fn http2_and_http1_work_on_both_sides_whatever_the_origin_offers() {
    let world = World::new();
    let config = limited(&world, "");
    for (alpn, origin_version) in [(H2_H1, "HTTP/2.0"), (H1, "HTTP/1.1")] {
        let origin = HttpsOrigin::start(&world.origin_ca, &["allowed.test"], alpn);
        for (flag, client_version) in [("--http2", "2"), ("--http1.1", "1.1")] {
            let target = url("allowed.test", origin.port(), "/v");
            let out = world.run(
                &config,
                &[],
                &[
                    "curl",
                    "-q",
                    "-sS",
                    flag,
                    "-w",
                    "\n%{http_version}",
                    &target,
                ],
            );
            assert_eq!(
                out.code, 0,
                "{flag} to an origin offering {alpn:?}: {out:?}"
            );
            assert_eq!(
                out.stdout,
                format!("origin saw GET /v {origin_version}\n{client_version}"),
                "{flag} to an origin offering {alpn:?}"
            );
        }
        assert_eq!(origin.lines(), ["GET /v", "GET /v"]);
    }
}

#[test]
fn an_origin_certificate_for_another_name_is_a_502_with_the_reason() {
    let world = World::new();
    let origin = HttpsOrigin::start(&world.origin_ca, &["other.test"], H2_H1);
    let config = limited(&world, "");
    let out = world.curl(&config, &[&url("wrongname.test", origin.port(), "/")]);
    let got = reply(&out);
    assert_eq!(
        got.verdict(),
        (502, Some("upstream-tls"), Some("upstream-tls")),
        "{got:?}"
    );
    assert!(got.body.contains("not valid for name"), "{got:?}");
    assert_eq!(origin.connections(), 0);
    assert!(origin.lines().is_empty());
}

#[test]
fn a_denied_name_under_mitm_domains_gets_its_403_inside_tls_and_run_reports_it() {
    let world = World::new();
    let origin = HttpsOrigin::start(&world.origin_ca, &["denied.test"], H2_H1);
    let config = limited(&world, "domains = [\"allowed.test\", \"denied.test\"]");
    let target = url("denied.test", origin.port(), "/x");
    let out = world.curl(&config, &[&target]);
    let got = reply(&out);
    assert_eq!(
        got.verdict(),
        (403, Some("blocked-by-allowlist"), Some("not-allowed")),
        "{got:?}"
    );
    assert!(got.body.contains("denied.test"), "{got:?}");
    let json = world.curl(&config, &["-H", "Accept: application/json", &target]);
    let json: serde_json::Value = serde_json::from_str(&reply(&json).body).unwrap();
    assert_eq!(json["reason"], "not-allowed", "{json}");
    assert_eq!(json["host"], "denied.test", "{json}");
    assert!(origin.lines().is_empty());
    let dest = format!("denied.test:{}", origin.port());
    let live: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("egress-proxy: blocked ") && l.contains(" — "))
        .collect();
    assert_eq!(live.len(), 1, "{}", out.stderr);
    assert!(
        live[0].contains(&dest) && live[0].contains("not-allowed"),
        "{live:?}"
    );

    // The same name outside an explicit pattern: the refusal is the CONNECT's own 403.
    let config = limited(&world, "domains = [\"allowed.test\"]");
    let out = world.run(&config, &[], &["curl", "-q", "-sS", &target]);
    assert!(
        out.stderr.contains("CONNECT tunnel failed, response 403"),
        "{out:?}"
    );
}

#[test]
fn a_request_for_another_host_inside_the_tunnel_is_a_421() {
    let world = World::new();
    let origin = HttpsOrigin::start(&world.origin_ca, &["allowed.test"], H2_H1);
    let config = limited(&world, "");
    let p = origin.port();
    let target = url("allowed.test", p, "/x");
    let cases: &[(&str, &str, String, &str)] = &[
        (
            "--http1.1",
            "-H",
            "Host: denied.test".into(),
            "421 misdirected-request",
        ),
        (
            "--http2",
            "-H",
            "Host: denied.test".into(),
            "421 misdirected-request",
        ),
        (
            "--http1.1",
            "-H",
            "Host: allowed.test:1".into(),
            "421 misdirected-request",
        ),
        (
            "--http1.1",
            "--request-target",
            format!("https://denied.test:{p}/x"),
            "421 misdirected-request",
        ),
        // Other spellings of the tunnel's own host are that host.
        ("--http1.1", "-H", format!("Host: ALLOWED.TEST:{p}"), "200 "),
        ("--http2", "-H", format!("Host: allowed.test.:{p}"), "200 "),
        ("--http1.1", "-H", "Host: allowed.test".into(), "200 "),
    ];
    for (version, flag, value, want) in cases {
        let out = world.run(
            &config,
            &["--quiet"],
            &[
                "curl",
                "-q",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %header{x-proxy-reason}",
                version,
                flag,
                value,
                &target,
            ],
        );
        assert_eq!(out.stdout, *want, "{version} {flag} {value}: {out:?}");
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for request in seen {
        assert_eq!(request.host, format!("allowed.test:{p}"), "{request:?}");
    }
}

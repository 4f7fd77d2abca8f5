//! A host outside `[mitm] domains` is spliced untouched, even when an http rule names it:
//! the client sees the origin's own certificate, and the http rule cannot see its requests.

use crate::support::https_origin::{HttpsOrigin, H2_H1};
use crate::{url, World};

/// The `issuer:` line curl's `-v` prints for the certificate it was shown.
fn issuer(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.trim_start_matches(['*', ' ']).starts_with("issuer:"))
        .unwrap_or_else(|| panic!("no issuer line: {stderr}"))
}

#[test]
fn a_host_outside_mitm_domains_shows_the_client_the_origins_own_certificate() {
    let world = World::new();
    let inspected = HttpsOrigin::start(&world.origin_ca, &["api.test"], H2_H1);
    let spliced = HttpsOrigin::start(&world.origin_ca, &["spliced.test"], H2_H1);
    let config = world.config(
        "allowed_domains = [\"api.test\", \"spliced.test\"]",
        "domains = [\"api.test\"]",
        "[[http_rules]]\nhost = \"api.test\"\nmethods = [\"GET\"]\naction = \"allow\"\n\n\
         [[http_rules]]\nhost = \"spliced.test\"\nmethods = [\"GET\"]\naction = \"allow\"\n",
    );
    let curl = |args: &[&str]| {
        let mut cmd = vec!["curl", "-q", "-sS", "-v", "--max-time", "10"];
        cmd.extend_from_slice(args);
        world.run(&config, &[], &cmd)
    };
    let spliced_url = url("spliced.test", spliced.port(), "/s");

    // Only the proxy's CA and the system roots are in run's bundle: not the origin's CA.
    let out = curl(&[&spliced_url]);
    assert_eq!(
        out.code, 60,
        "curl trusted a certificate it should not: {out:?}"
    );
    assert!(spliced.lines().is_empty());

    let out = curl(&["--cacert", &world.origin_ca_pem, "-X", "POST", &spliced_url]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout, "origin saw POST /s HTTP/2.0",
        "the rule saw a spliced request"
    );
    assert!(
        issuer(&out.stderr).contains(&world.origin_ca.name),
        "{}",
        issuer(&out.stderr)
    );
    assert_eq!(spliced.lines(), ["POST /s"]);

    // The host under `[mitm] domains` beside it: the proxy's certificate, the rule enforced.
    let out = curl(&[&url("api.test", inspected.port(), "/i")]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "origin saw GET /i HTTP/2.0");
    let shown = issuer(&out.stderr);
    assert!(shown.contains("egress-proxy local CA"), "{shown}");
    assert!(!shown.contains(&world.origin_ca.name), "{shown}");
    let out = curl(&["-X", "POST", &url("api.test", inspected.port(), "/i")]);
    assert!(out.stdout.contains("not-allowed"), "{out:?}");
    assert_eq!(inspected.lines(), ["GET /i"]);
}

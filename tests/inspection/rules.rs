//! `[[http_rules]]` allow and deny by method and path, for plain HTTP through the forward
//! proxy and for HTTPS inside an intercepted tunnel alike: other spellings of a denied path
//! and method are denied too, and every request on a kept connection is checked.

use crate::support::https_origin::{HttpsOrigin, H2_H1};
use crate::support::origin::HttpOrigin;
use crate::World;

const RULES: &str = "\
[[http_rules]]
host = \"api.test\"
methods = [\"GET\", \"POST\"]
action = \"allow\"

[[http_rules]]
host = \"api.test\"
methods = [\"POST\"]
paths = [\"/repos/x/y/issues\"]
action = \"deny\"
";

/// `(method, path, status, x-proxy-reason)`, in the order one curl sends them on one kept
/// connection: a refusal between allowed requests must neither end the connection nor let
/// the next request skip the check.
const CASES: &[(&str, &str, &str, &str)] = &[
    ("GET", "/repos/x/y/issues", "200", ""),
    ("POST", "/repos/x/y/issues", "403", "deny-rule"),
    ("POST", "/repos/x/y/pulls", "200", ""),
    ("POST", "/repos/x/y/../y/issues", "403", "deny-rule"),
    ("POST", "/repos/x/y/%69ssues", "403", "deny-rule"),
    ("POST", "//repos/x/y/issues/", "403", "deny-rule"),
    ("POST", "/repos/x/y/issues/1", "403", "deny-rule"),
    ("post", "/repos/x/y/issues", "403", "deny-rule"),
    ("DELETE", "/repos/x/y", "403", "not-allowed"),
    ("GET", "/repos/x/y/issues?page=2", "200", ""),
];

/// One curl sending every case to `base` (`scheme://api.test:PORT`) with `--next`, so they
/// share a connection; `status reason connects` per line.
fn send_all(world: &World, config: &str, base: &str) -> Vec<String> {
    let urls: Vec<String> = CASES
        .iter()
        .map(|(_, p, _, _)| format!("{base}{p}"))
        .collect();
    let mut cmd = vec!["curl", "-q"];
    for (i, ((method, _, _, _), url)) in CASES.iter().zip(&urls).enumerate() {
        if i > 0 {
            cmd.push("--next");
        }
        cmd.extend_from_slice(&["-sS", "--path-as-is", "-o", "/dev/null", "-X", method]);
        cmd.extend_from_slice(&[
            "-w",
            "%{http_code} %header{x-proxy-reason} %{num_connects}\\n",
            url,
        ]);
    }
    let out = world.run(config, &["--quiet"], &cmd);
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout.lines().map(String::from).collect()
}

/// The lines [`send_all`] must print, all on the first connection.
fn want() -> Vec<String> {
    CASES
        .iter()
        .enumerate()
        .map(|(i, (_, _, status, reason))| format!("{status} {reason} {}", u8::from(i == 0)))
        .collect()
}

/// What the origin must have seen: the allowed cases only.
const REACHED: &[&str] = &[
    "GET /repos/x/y/issues",
    "POST /repos/x/y/pulls",
    "GET /repos/x/y/issues?page=2",
];

#[test]
fn http_rules_decide_intercepted_https_requests_on_a_kept_connection() {
    let world = World::new();
    let origin = HttpsOrigin::start(&world.origin_ca, &["api.test"], H2_H1);
    let config = world.config("allowed_domains = [\"api.test\"]", "", RULES);
    let base = format!("https://api.test:{}", origin.port());
    assert_eq!(send_all(&world, &config, &base), want());
    assert_eq!(origin.lines(), REACHED);
    assert_eq!(
        origin.connections(),
        1,
        "the origin connection was not kept"
    );
}

#[test]
fn http_rules_decide_plain_http_requests_on_a_kept_connection() {
    let world = World::new();
    let origin = HttpOrigin::start();
    let config = world.config("allowed_domains = [\"api.test\"]", "", RULES);
    let base = format!("http://api.test:{}", origin.addr.port());
    assert_eq!(send_all(&world, &config, &base), want());
    let lines: Vec<String> = origin
        .requests()
        .iter()
        .map(|head| {
            let line = head.lines().next().unwrap();
            let mut parts = line.split(' ');
            format!("{} {}", parts.next().unwrap(), parts.next().unwrap())
        })
        .collect();
    assert_eq!(lines, REACHED);
}

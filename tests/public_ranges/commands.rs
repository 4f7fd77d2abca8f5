//! `check`, `validate`, `serve` and `run` with `public_ranges` and `--public-range`: what they
//! show, which ranges are errors, and which layer's list wins.

use std::time::Duration;

use crate::cli::{check, json_lines, run_within, warning_lines, Files};
use crate::in_namespace;
use crate::listeners::FakeIpOrigins;
use crate::support::bin::run;
use crate::support::fake_dns::{Answer, FakeDns};

fn fake_ip_dns() -> FakeDns {
    FakeDns::start(vec![
        ("fake.test", Answer::A(vec![crate::listeners::FAKE_IP])),
        (
            "gateway.test",
            Answer::A(vec!["192.0.2.7".parse().unwrap()]),
        ),
    ])
}

const HINT: &str = "  hint    the resolver answered with a benchmarking address (198.18.0.0/15); if this network's DNS answers from that range, declare it: --public-range 198.18.0.0/15";

#[test]
fn check_shows_the_declared_class_and_hints_at_the_range() {
    let dns = fake_ip_dns();
    let (code, out, err) = check(&dns, &["--allow", "**.fake.test", "fake.test"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        out.contains("\n  ip      198.18.0.1 (benchmarking)\n"),
        "{out}"
    );
    assert!(out.contains(&format!("\n{HINT}\n")), "{out}");

    let declared = ["--allow", "**.fake.test", "--public-range", "198.18.0.0/15"];
    let (code, out, err) = check(&dns, &[&declared[..], &["fake.test"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ALLOW fake.test:443\n"), "{out}");
    assert!(
        out.contains("\n  ip      198.18.0.1 (public (declared; was benchmarking))\n"),
        "{out}"
    );
    assert!(!out.contains("hint"), "{out}");

    let (code, out, _) = check(&dns, &[&declared[..], &["--json", "fake.test"]].concat());
    assert_eq!(code, 0);
    let line = &json_lines(&out)[0];
    assert_eq!(
        line["ips"],
        serde_json::json!([{"ip": "198.18.0.1", "class": "public", "declared": "benchmarking"}])
    );
    assert!(line.get("hint").is_none(), "{line}");

    // A documentation answer is another range: the hint names it, the declaration does not
    // cover it.
    let (code, out, _) = check(
        &dns,
        &[
            &declared[..],
            &["--allow", "gateway.test", "--json", "gateway.test"],
        ]
        .concat(),
    );
    assert_eq!(code, 1);
    let line = &json_lines(&out)[0];
    assert_eq!(line["reason"], "dns-non-public:documentation");
    assert_eq!(
        line["ips"],
        serde_json::json!([{"ip": "192.0.2.7", "class": "documentation"}])
    );
    assert_eq!(
        line["hint"],
        "the resolver answered with a documentation address (192.0.2.0/24); if this network's DNS answers from that range, declare it: --public-range 192.0.2.0/24"
    );
}

/// The flag meets every spelling of an address, and opens none of a metadata or loopback one.
#[test]
fn check_with_the_flag_judges_every_spelling_by_identity() {
    let args = [
        "check",
        "--no-dns",
        "--allow",
        "*",
        "--public-range",
        "198.18.0.0/15",
        "--public-range",
        "100.64.0.0/10",
        "198.18.0.9:443",
        "[::ffff:198.18.0.9]:443",
        "[64:ff9b::c612:9]:443",
        "100.64.0.1:443",
        "100.100.100.200:80",
        "0xa9fea9fe:80",
        "[::ffff:169.254.169.254]:80",
        "127.1:80",
    ];
    let (code, out, err) = run(&args);
    assert_eq!(code, 1, "{err}");
    let verdicts: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("ALLOW") || l.starts_with("BLOCK"))
        .collect();
    assert_eq!(
        verdicts,
        [
            "ALLOW 198.18.0.9:443",
            "ALLOW [::ffff:198.18.0.9]:443",
            "ALLOW [64:ff9b::c612:9]:443",
            "ALLOW 100.64.0.1:443",
            "BLOCK 100.100.100.200:80",
            "BLOCK 169.254.169.254:80",
            "BLOCK [::ffff:169.254.169.254]:80",
            "BLOCK 127.0.0.1:80",
        ],
        "{out}"
    );
}

#[test]
fn a_range_over_loopback_link_local_or_metadata_is_a_config_error() {
    let cases = [
        (
            "169.254.0.0/15",
            "--public-range: 169.254.0.0/15 overlaps link-local 169.254.0.0/16",
        ),
        (
            "169.254.169.254/32",
            "--public-range: 169.254.169.254/32 overlaps link-local 169.254.0.0/16",
        ),
        (
            "::ffff:0:0/96",
            "--public-range: ::ffff:0.0.0.0/96 overlaps broadcast 255.255.255.255/32 (its addresses carry the IPv4 range 0.0.0.0/0)",
        ),
        ("::/0", "--public-range: ::/0 overlaps unspecified ::/128"),
        (
            "0.0.0.0/0",
            "--public-range: 0.0.0.0/0 overlaps broadcast 255.255.255.255/32",
        ),
    ];
    for (range, message) in cases {
        let (code, out, err) = run(&["check", "--no-dns", "--public-range", range, "x.test"]);
        assert_eq!((code, out.as_str()), (2, ""), "{range}");
        assert_eq!(err, format!("error: {message}\n"), "{range}");
        let (code, out, err) = run(&["validate", "--public-range", range]);
        assert_eq!((code, out.as_str()), (1, ""), "{range}");
        assert_eq!(err, format!("{message}\n"), "{range}");
    }
    // `serve` and `run` refuse to start: no listener, no child.
    let limit = Duration::from_secs(10);
    let serve = [
        "serve",
        "--allow",
        "*",
        "--public-range",
        "127.0.0.0/8",
        "--http-listen",
        "127.0.0.1:0",
        "--socks-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let (code, _, err, _) = run_within(&serve, limit);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err,
        "error: --public-range: 127.0.0.0/8 overlaps loopback 127.0.0.0/8\n"
    );
    let files = Files::new();
    let policy = files.write(
        "p.toml",
        "allowed_domains = ['*']\npublic_ranges = ['fe80::/10']\n",
    );
    let (code, out, err, _) = run_within(
        &[
            "run",
            "--config",
            &policy,
            "--",
            "sh",
            "-c",
            "echo the child ran",
        ],
        limit,
    );
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert_eq!(
        err,
        format!("error: {policy}:2:18: public_ranges: fe80::/10 overlaps link-local fe80::/10\n")
    );
}

#[test]
fn validate_lists_the_ranges_and_warns_and_requirements_replace_them() {
    let files = Files::new();
    let user = files.write(
        "user.toml",
        "allowed_domains = ['**.fake.test']\npublic_ranges = ['198.18.0.0/15', '::ffff:192.0.2.0/120']\n",
    );
    let (code, out, err) = run(&["validate", "--config", &user]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "\npublic ranges (declared): 198.18.0.0/15, ::ffff:192.0.2.0/120 (= 192.0.2.0/24)\n"
        ),
        "{out}"
    );
    assert_eq!(
        warning_lines(&out),
        [format!(
            "warning: public ranges declared at {user}:2:17 widen what \"public\" means: addresses in 198.18.0.0/15, 192.0.2.0/24 are reached like any public address by every allow rule that matches them (`*` included), and a name resolving into them is no longer refused as DNS rebinding"
        )]
    );
    let (code, out, _) = run(&["validate", "--json", "--config", &user]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["public_ranges"],
        serde_json::json!(["198.18.0.0/15", "::ffff:192.0.2.0/120"])
    );

    // The administrator's list replaces the user's, flags included; an empty one clears it.
    let managed = files.write(
        "managed.toml",
        "[experimental_network]\npublic_ranges = ['100.64.0.0/10']\n",
    );
    let cleared = files.write(
        "cleared.toml",
        "[experimental_network]\npublic_ranges = []\n",
    );
    let flag = ["--public-range", "198.51.100.0/24"];
    let shown = |requirements: &str| {
        let args = [
            &["validate", "--json", "--config", &user][..],
            &flag,
            &["--requirements", requirements],
        ]
        .concat();
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["public_ranges"].clone()
    };
    assert_eq!(shown(&managed), serde_json::json!(["100.64.0.0/10"]));
    assert_eq!(shown(&cleared), serde_json::json!([]));
    let dns = fake_ip_dns();
    let args = ["--config", &user, "--requirements", &cleared, "fake.test"];
    let (code, out, _) = check(&dns, &args);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("dns-non-public:benchmarking"), "{out}");
}

/// `run --public-range`: the child's curl reaches the fake-IP origin through the proxy; without
/// the flag it gets the 403 and the exit summary names the reason.
#[test]
fn run_with_the_flag_reaches_a_fake_ip_answer() {
    if !in_namespace("commands::run_with_the_flag_reaches_a_fake_ip_answer") {
        return;
    }
    let origins = FakeIpOrigins::start();
    let dns = fake_ip_dns();
    let server = dns.addr.to_string();
    let url = format!("http://fake.test:{}/run", origins.http);
    let base = ["run", "--allow", "**.fake.test", "--dns-server", &server];
    let child = ["--", "curl", "-sS", "--max-time", "5", &url];
    let limit = Duration::from_secs(20);

    let (code, out, err, _) = run_within(&[&base[..], &child].concat(), limit);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dns-non-public:benchmarking"), "{out}");
    assert!(err.contains("dns-non-public:benchmarking"), "{err}");
    assert_eq!(origins.requests(), 0);

    let flag = ["--public-range", "198.18.0.0/15"];
    let (code, out, err, _) = run_within(&[&base[..], &flag, &child].concat(), limit);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "fake-ip origin saw GET /run body=0");
    assert_eq!(origins.requests(), 1);
}

/// The admin API's `/check` answers the sandboxed child too: without the token the non-public
/// answer and the hint that would follow from it are left out, with it both are shown.
#[test]
fn admin_check_shows_the_hint_only_with_the_token() {
    use crate::support::harness::{Proxy, TOKEN};
    use crate::support::http::blocking::raw_request;

    let dns = fake_ip_dns();
    let proxy = Proxy::builder()
        .allow("gateway.test")
        .dns(&dns)
        .admin()
        .start_blocking();
    let admin = proxy.admin.expect("the admin API runs");
    let ask = |auth: &str| {
        let request = format!(
            "GET /check?target=gateway.test HTTP/1.1\r\nHost: {admin}\r\n{auth}Connection: close\r\n\r\n"
        );
        let reply = raw_request(admin, request.as_bytes());
        assert_eq!(reply.status, 200, "{reply:?}");
        json_lines(&reply.body).remove(0)
    };
    let open = ask("");
    assert_eq!(open["reason"], "dns-non-public:documentation", "{open}");
    assert_eq!(open["ips"], serde_json::json!([]), "{open}");
    assert_eq!(open["ips_hidden"], 1, "{open}");
    assert!(open.get("hint").is_none(), "{open}");
    let full = ask(&format!("Authorization: Bearer {TOKEN}\r\n"));
    assert_eq!(
        full["hint"],
        "the resolver answered with a documentation address (192.0.2.0/24); if this network's DNS answers from that range, declare it: --public-range 192.0.2.0/24",
        "{full}"
    );
}

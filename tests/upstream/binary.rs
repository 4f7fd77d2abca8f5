//! The built binary: `run` reads the upstream from its own environment before it sets the
//! child's, `--no-upstream-proxy`, `validate`'s account of the upstream, and no password in
//! any output. A last case runs in a loopback-only network namespace, where a destination
//! that leaked past the policy could go nowhere.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::support::bin::BIN;
use crate::support::curl::PROXY_VARS;
use crate::support::netns;
use crate::support::origin::HttpOrigin;
use crate::support::upstream::{HttpOptions, HttpUpstream};
use crate::*;

/// `egress-proxy ARGS` with exactly the proxy variables of `env`, killed after 20 s.
fn egress(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("timeout");
    command.args(["-s", "KILL", "20", BIN]).args(args);
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    command
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run egress-proxy")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Setup {
    dns: FakeDns,
    origin: HttpOrigin,
    upstream: HttpUpstream,
    dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let origin = HttpOrigin::start();
    let upstream = HttpUpstream::start(
        origin.addr,
        HttpOptions {
            auth: Some(("me", SECRET)),
            ..HttpOptions::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), "allow_local_binding = true\n").unwrap();
    Setup {
        dns: dns(),
        origin,
        upstream,
        dir,
    }
}

impl Setup {
    fn url(&self) -> String {
        format!("http://me:{SECRET}@{}", self.upstream.addr)
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// `run` with the policy, the fake DNS and `extra` flags, running `script` under sh.
    fn run(&self, extra: &[&str], env: &[(&str, &str)], script: &str) -> Output {
        let (config, dns, audit) = (
            self.path("p.toml"),
            self.dns.addr.to_string(),
            self.path("audit.jsonl"),
        );
        let mut args = vec![
            "run",
            "--config",
            &config,
            "--dns-server",
            &dns,
            "--allow",
            "allowed.test",
            "--audit-log",
            &audit,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sh", "-c", script]);
        egress(&args, env)
    }
}

#[test]
fn run_chains_the_childs_traffic_through_its_own_https_proxy() {
    let s = setup();
    let port = s.origin.addr.port();
    let script = format!(
        "curl -sS --max-time 10 -p http://allowed.test:{port}/tunnelled; echo; \
         curl -sS --max-time 10 http://allowed.test:{port}/forwarded"
    );
    let url = s.url();
    let out = s.run(&[], &[("HTTPS_PROXY", &url), ("http_proxy", &url)], &script);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(
        stdout,
        format!("origin saw GET /tunnelled body=0\nupstream saw GET http://allowed.test:{port}/forwarded")
    );
    assert_eq!(
        s.upstream.lines(),
        [
            format!("CONNECT allowed.test:{port}"),
            format!("GET http://allowed.test:{port}/forwarded")
        ]
    );
    let audit = std::fs::read_to_string(s.path("audit.jsonl")).unwrap();
    let shown = format!("http://me:***@{}", s.upstream.addr);
    assert!(
        audit.contains(&format!("\"upstream\":\"{shown}\"")),
        "{audit}"
    );
    for output in [&stdout, &stderr, &audit] {
        assert!(!output.contains(SECRET), "{output}");
    }
}

#[test]
fn no_upstream_proxy_dials_directly() {
    let s = setup();
    let port = s.origin.addr.port();
    let url = s.url();
    let script = format!("curl -sS --max-time 10 -p http://allowed.test:{port}/direct");
    let env = [("HTTPS_PROXY", url.as_str()), ("ALL_PROXY", url.as_str())];
    let out = s.run(&["--no-upstream-proxy"], &env, &script);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "origin saw GET /direct body=0");
    assert!(s.upstream.lines().is_empty(), "{:?}", s.upstream.lines());
}

#[test]
fn validate_says_which_upstream_applies_and_never_shows_the_password() {
    let s = setup();
    let config = s.path("p.toml");
    let url = s.url();
    let env = [
        ("HTTPS_PROXY", url.as_str()),
        ("NO_PROXY", "internal.test,10.0.0.0/8"),
    ];
    let out = egress(&["validate", "--config", &config], &env);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = format!("http://me:***@{}", s.upstream.addr);
    let want = [
        format!("upstream: tunnels (CONNECT, SOCKS5 CONNECT) via {shown} (HTTPS_PROXY)"),
        "upstream: plain HTTP direct".to_string(),
        "upstream: names are resolved and checked here, then sent to the upstream by name (resolve = \"local\")".to_string(),
        "upstream: direct for localhost and loopback addresses, internal.test, 10.0.0.0/8; SOCKS5 UDP is never chained".to_string(),
    ];
    for line in &want {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in:\n{stdout}");
    }
    let out = egress(&["validate", "--json", "--config", &config], &env);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["upstream"]["tunnel"]["url"], shown.as_str());
    assert_eq!(json["upstream"]["tunnel"]["from"], "HTTPS_PROXY");
    assert_eq!(json["upstream"]["forward"], serde_json::Value::Null);
    assert_eq!(json["upstream"]["resolve"], "local");
    let out = egress(
        &["validate", "--no-upstream-proxy", "--config", &config],
        &env,
    );
    assert!(
        text(&out.stdout)
            .contains("upstream: off (--no-upstream-proxy); every connection is direct"),
        "{}",
        text(&out.stdout)
    );
    let bad = format!("socks4://me:{SECRET}@{}", s.upstream.addr);
    let out = egress(&["validate", "--config", &config], &[("https_proxy", &bad)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with(
        "https_proxy (the proxy's environment): unsupported proxy scheme `socks4://`"
    ));
    for out in [text(&out.stdout), text(&out.stderr), stdout] {
        assert!(!out.contains(SECRET), "{out}");
    }
}

/// `serve` says at start which upstream it chains through, counts the connections opened
/// through it in `/metrics`, and logs no password.
#[test]
fn serve_counts_connections_through_the_upstream() {
    let s = setup();
    let config = s.path("serve.toml");
    std::fs::write(
        &config,
        format!("allow_local_binding = true\nallowed_domains = [\"allowed.test\"]\n[dns]\nservers = [\"{}\"]\n", s.dns.addr),
    )
    .unwrap();
    let runtime = s.dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    let mut args = vec!["--config", config.as_str()];
    args.extend_from_slice(crate::serve::EPHEMERAL);
    let mut command = crate::serve::command(&args, &runtime);
    command.env("HTTPS_PROXY", s.url());
    let mut serve = crate::serve::Serve::spawn(command).expect("serve starts");
    let mut tunnel = crate::serve::connect_tunnel(serve.http, "allowed.test:443");
    tunnel
        .write_all(b"GET /through-serve HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
        .unwrap();
    let reply = crate::serve::read_reply(&mut tunnel, false);
    assert_eq!(reply.body, "origin saw GET /through-serve body=0");
    let metrics = crate::serve::admin_get(serve.admin, "/metrics").body;
    assert!(
        metrics.contains("egress_upstream_connects_total{kind=\"http\",result=\"ok\"} 1"),
        "{metrics}"
    );
    let shown = format!("http://me:***@{}", s.upstream.addr);
    let stderr = serve.stderr();
    let started = stderr
        .lines()
        .find(|l| l.contains("chaining through the upstream proxy"))
        .unwrap_or_else(|| panic!("no start-up line about the upstream:\n{stderr}"));
    assert!(
        started.contains(&format!("tunnels via {shown}, plain HTTP via direct")),
        "{started}"
    );
    assert!(!stderr.contains(SECRET), "{stderr}");
}

/// With names left to the upstream, an address the client writes is still judged here: a
/// private one without an allow rule is refused before anything is sent upstream. In a
/// network namespace with only loopback, so a bug could not reach that address.
#[test]
fn resolve_upstream_still_refuses_private_addresses_in_a_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.toml");
    std::fs::write(
        &config,
        "[upstream]\nurl = \"http://127.0.0.1:9\"\nresolve = \"upstream\"\n",
    )
    .unwrap();
    let script = r#"
"$BIN" run --config "$CONFIG" --allow allowed.test -- \
  curl -s -o /dev/null --max-time 10 -w '%{http_connect} ' -p http://10.0.0.1/ http://[fd00::1]/ http://allowed.test/ || true
"#;
    let (code, out, err) = netns::run(
        script,
        &[("BIN", BIN), ("CONFIG", config.to_str().unwrap())],
        30,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out, "403 403 502 ", "{err}");
    assert!(
        err.contains("10.0.0.1:80") && err.contains("not-allowed"),
        "{err}"
    );
    assert!(err.contains("[fd00::1]:80"), "{err}");
}

/// The upstream's own name resolves as the system would, whatever `--dns-server` says: from
/// `/etc/hosts`, and a short name through `/etc/resolv.conf` with its search domain. In a
/// network namespace with only loopback and a mount namespace of its own, so a test hosts
/// file, resolv.conf and DNS server on 127.0.0.1:53 stand in for the machine's. With an
/// unreadable resolv.conf a named upstream stops the start with the reason; one given by
/// address still starts.
#[test]
fn the_upstreams_name_resolves_with_hosts_and_search_domains_in_a_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(
        path("hosts"),
        "127.0.0.1 localhost\n127.0.0.1 hosts-proxy\n",
    )
    .unwrap();
    std::fs::write(
        path("resolv.conf"),
        "nameserver 127.0.0.1\nsearch corp.test\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    for name in ["hosts-proxy", "corp-proxy", "nowhere-proxy"] {
        std::fs::write(
            path(&format!("{name}.toml")),
            format!("[upstream]\nurl = \"http://{name}:3999\"\nresolve = \"upstream\"\n"),
        )
        .unwrap();
    }
    // An upstream given by address needs no resolver configuration; a named one does.
    std::fs::write(
        path("ip-proxy.toml"),
        "[upstream]\nurl = \"http://127.0.0.1:3999\"\nresolve = \"upstream\"\n",
    )
    .unwrap();
    std::fs::write(path("bad-resolv.conf"), "nameserver nope\n").unwrap();
    let here = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstream/names");
    // The fake DNS server of `--dns-server` (judging destinations) is never asked: it is on a
    // port nothing listens on.
    let script = r#"
exec unshare --mount sh -euc '
mount --bind "$DIR/hosts" /etc/hosts
mount --bind "$DIR/resolv.conf" /etc/resolv.conf
python3 "$HERE/dns.py" "$DIR/dns.ready" "$DIR/dns.log" corp-proxy.corp.test & dns=$!
python3 "$HERE/upstream.py" "$DIR/up.ready" "$DIR/up.log" & up=$!
trap "kill $dns $up" EXIT
while [ ! -e "$DIR/dns.ready" ] || [ ! -e "$DIR/up.ready" ]; do sleep 0.05; done
for name in hosts-proxy corp-proxy nowhere-proxy; do
  "$BIN" run --config "$DIR/$name.toml" --dns-server 127.0.0.1:9 --allow allowed.test -- \
    curl -sv --max-time 10 -w " %{http_connect}" -p http://allowed.test:8080/ \
    2>"$DIR/curl-$name.err" || true
  echo " <- $name"
done
mount --bind "$DIR/bad-resolv.conf" /etc/resolv.conf
for name in corp-proxy ip-proxy; do
  "$BIN" run --config "$DIR/$name.toml" --dns-server 127.0.0.1:9 -- true 2>"$DIR/start-$name.err" \
    && echo "started <- $name" || echo "refused $? <- $name"
done
'
"#;
    let (code, out, err) = netns::run(
        script,
        &[("BIN", BIN), ("DIR", &path("")), ("HERE", here)],
        60,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "tunnelled 200 <- hosts-proxy",
            "tunnelled 200 <- corp-proxy",
            " 502 <- nowhere-proxy",
            "refused 125 <- corp-proxy",
            "started <- ip-proxy"
        ],
        "{err}"
    );
    let start = std::fs::read_to_string(path("start-corp-proxy.err")).unwrap();
    assert!(
        start.contains("cannot resolve the upstream proxy's name: reading the system resolver"),
        "{start}"
    );
    let refused = std::fs::read_to_string(path("curl-nowhere-proxy.err")).unwrap();
    assert!(
        refused.contains("x-proxy-reason: upstream-unreachable"),
        "{refused}"
    );
    let connects = std::fs::read_to_string(path("up.log")).unwrap();
    assert_eq!(connects, "CONNECT allowed.test:8080 HTTP/1.1\n".repeat(2));
    let asked = std::fs::read_to_string(path("dns.log")).unwrap();
    assert!(asked.contains("corp-proxy.corp.test 1\n"), "{asked}");
    assert!(asked.contains("nowhere-proxy.corp.test 1\n"), "{asked}");
    // hickory tries the search domain first, and the hosts file answers the name's A query.
    assert!(!asked.contains("hosts-proxy 1\n"), "{asked}");
}

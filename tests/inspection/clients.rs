//! Python, Node and git trust the proxy's CA through `run`'s variables alone (no flag, no
//! option naming a CA), in `limited` mode with `[mitm]`.

use crate::support::https_origin::{HttpsOrigin, GIT_REF, H2_H1};
use crate::{url, World};

/// Python `requests` (urllib with the default context when requests is not installed, which
/// reads `SSL_CERT_FILE`); both take the proxy from `HTTPS_PROXY`.
const PYTHON: &str = r#"
import sys
try:
    import requests
    r = requests.get(sys.argv[1], timeout=10)
    print("requests", r.status_code, r.text)
except ImportError:
    import urllib.request
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        print("urllib", r.status, r.read().decode())
"#;

/// Node: CONNECT through `HTTPS_PROXY` (with its credentials), then TLS over that socket with
/// Node's default trust, which adds `NODE_EXTRA_CA_CERTS` to its own roots.
const NODE: &str = r#"
const http = require('http'), tls = require('tls');
const proxy = new URL(process.env.HTTPS_PROXY), target = new URL(process.argv[1]);
const auth = Buffer.from(decodeURIComponent(proxy.username) + ':' + decodeURIComponent(proxy.password));
const req = http.request({
  host: proxy.hostname, port: proxy.port, method: 'CONNECT', path: target.host,
  headers: { 'Proxy-Authorization': 'Basic ' + auth.toString('base64') },
});
req.on('connect', (res, socket) => {
  if (res.statusCode !== 200) { console.log('CONNECT ' + res.statusCode); process.exit(1); }
  const s = tls.connect({ socket, servername: target.hostname }, () => {
    s.write(`GET ${target.pathname} HTTP/1.1\r\nHost: ${target.host}\r\nConnection: close\r\n\r\n`);
  });
  let data = '';
  s.on('data', d => data += d);
  s.on('end', () => console.log(data.split('\r\n')[0] + ' ' + data.split('\r\n\r\n')[1]));
  s.on('error', e => { console.log('tls error ' + e.code); process.exit(1); });
});
req.on('error', e => { console.log('proxy error ' + e.code); process.exit(1); });
req.end();
"#;

fn limited(world: &World) -> String {
    world.config(
        "mode = \"limited\"\nallowed_domains = [\"allowed.test\"]",
        "",
        "",
    )
}

#[test]
fn python_trusts_the_ca_through_runs_variables() {
    let world = World::new();
    let origin = HttpsOrigin::start(&world.origin_ca, &["allowed.test"], H2_H1);
    let target = url("allowed.test", origin.port(), "/py");
    let out = world.run(&limited(&world), &[], &["python3", "-c", PYTHON, &target]);
    assert_eq!(out.code, 0, "{out:?}");
    let (client, rest) = out.stdout.split_once(' ').unwrap();
    assert!(["requests", "urllib"].contains(&client), "{out:?}");
    assert!(rest.starts_with("200 origin saw GET /py HTTP/"), "{out:?}");
    assert_eq!(origin.lines(), ["GET /py"]);
}

#[test]
fn node_trusts_the_ca_through_runs_variables() {
    let world = World::new();
    let origin = HttpsOrigin::start(&world.origin_ca, &["allowed.test"], H2_H1);
    let target = url("allowed.test", origin.port(), "/node");
    let out = world.run(&limited(&world), &[], &["node", "-e", NODE, &target]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout, "HTTP/1.1 200 OK origin saw GET /node HTTP/2.0\n",
        "{out:?}"
    );
    assert_eq!(origin.lines(), ["GET /node"]);
}

#[test]
fn git_trusts_the_ca_through_runs_variables() {
    let world = World::new();
    let origin = HttpsOrigin::start(&world.origin_ca, &["allowed.test"], H2_H1);
    let repo = url("allowed.test", origin.port(), "/repo.git");
    let mut cmd = world.command(&limited(&world), &[], &["git", "ls-remote", &repo]);
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0");
    let out = crate::support::run::Running::start(cmd).finish();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.lines().any(|l| l == GIT_REF), "{out:?}");
    let lines = origin.lines();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("GET /repo.git/info/refs?service=git-upload-pack"),
        "{lines:?}"
    );
}

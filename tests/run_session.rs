//! `run`'s session credentials through the built binary and real clients: each client finds
//! `egress:<token>@` in the proxy variables and sends it (curl forward, CONNECT and SOCKS5;
//! Python urllib and requests; git; pip; npm), while the same client without the token is
//! refused (407, SOCKS5 0xFF), and `--no-session-auth` serves it again.
//!
//! Everything stays on loopback: names are answered by a fake DNS server with 127.0.0.1 and
//! the origin listens on 127.0.0.1. A client that is not installed fails the test, except npm
//! and Node's `NODE_USE_ENV_PROXY`, which say why they are skipped.

#[path = "support/cli.rs"]
mod cli;
mod support;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use cli::Files;
use support::fake_dns::{Answer, FakeDns};
use support::origin::HttpOrigin;
use support::run::{command, require_curl, Output, Running};

struct World {
    dns: FakeDns,
    origin: HttpOrigin,
    files: Files,
    config: String,
}

impl World {
    fn new() -> World {
        require_curl();
        let dns = FakeDns::start([("allowed.test", Answer::A(vec![Ipv4Addr::LOCALHOST]))]);
        let files = Files::new();
        let config = files.write(
            "p.toml",
            "allow_local_binding = true\nallowed_domains = ['allowed.test']\n",
        );
        World {
            dns,
            origin: HttpOrigin::start(),
            files,
            config,
        }
    }

    /// `run --config … --dns-server … EXTRA -- sh -c SCRIPT`, `$URL` set to the origin.
    fn sh(&self, extra: &[&str], script: &str) -> Output {
        let dns = self.dns.addr.to_string();
        let mut args = vec!["run", "--config", &self.config, "--dns-server", &dns];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sh", "-c", script]);
        let mut cmd = command(&args);
        let home = self.files.dir().to_str().unwrap().to_string();
        cmd.env("URL", self.url("/"))
            .env("HOME", &home)
            .env("npm_config_cache", format!("{home}/npm-cache"))
            .env("PIP_CONFIG_FILE", "/dev/null")
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env("PIP_NO_CACHE_DIR", "1")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0");
        Running::start(cmd).finish()
    }

    fn url(&self, path: &str) -> String {
        format!("http://allowed.test:{}{path}", self.origin.addr.port())
    }

    /// The request heads the origin saw whose target starts with `prefix`.
    fn seen(&self, prefix: &str) -> Vec<String> {
        let line = format!("GET {prefix}");
        self.origin
            .requests()
            .into_iter()
            .filter(|r| r.starts_with(&line))
            .collect()
    }

    /// Every request reached the origin without the proxy's credentials.
    #[track_caller]
    fn assert_no_credentials_forwarded(&self) {
        for request in self.origin.requests() {
            let lower = request.to_ascii_lowercase();
            assert!(!lower.contains("proxy-authorization"), "{request}");
            assert!(!lower.contains("egress:"), "{request}");
        }
    }
}

/// Whether `program ARGS` runs and succeeds (a tool and its version, a Python module).
fn installed(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The proxy variables without their credentials (if they have any), for a client that
/// ignores them.
const STRIP: &str = "H=${HTTP_PROXY#http://}; HTTP_PROXY=http://${H#*@}; http_proxy=$HTTP_PROXY; \
                     S=${ALL_PROXY#socks5h://}; ALL_PROXY=socks5h://${S#*@};";

#[test]
fn curl_with_the_token_forwards_tunnels_and_uses_socks5_and_without_it_is_refused() {
    let w = World::new();
    let script = "curl -q -sS --max-time 10 -x \"$HTTP_PROXY\" \"${URL}fwd\"; echo; \
         curl -q -sS --max-time 10 -p -x \"$HTTP_PROXY\" \"${URL}tun\"; echo; \
         S=${ALL_PROXY#socks5h://}; curl -q -sS --max-time 10 --socks5-hostname \"$S\" \"${URL}socks\"";
    let out = w.sh(&[], script);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "origin saw GET /fwd body=0\norigin saw GET /tun body=0\norigin saw GET /socks body=0"
    );
    assert_eq!(out.stderr, "", "nothing refused, nothing blocked");
    w.assert_no_credentials_forwarded();

    let script = format!(
        "{STRIP} curl -q -s -i --max-time 10 -x \"$HTTP_PROXY\" \"${{URL}}no\"; \
         curl -q -sS --max-time 10 -x \"$ALL_PROXY\" \"${{URL}}no\"; echo socks=$?"
    );
    let out = w.sh(&[], &script);
    let head = out.stdout.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 407"), "{out:?}");
    assert!(
        head.contains("proxy-authenticate: basic realm=\"egress-proxy\""),
        "{out:?}"
    );
    assert!(
        head.contains("x-proxy-reason: proxy-auth-required"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("socks=0"), "{out:?}");
    assert!(w.seen("/no").is_empty());
    // One warning for the first refusal tells the user what to do.
    assert_eq!(
        out.stderr.matches("--no-session-auth").count(),
        1,
        "{:?}",
        out.stderr
    );

    let out = w.sh(&["--no-session-auth"], &script);
    assert!(out.stdout.starts_with("HTTP/1.1 200"), "{out:?}");
    assert!(out.stdout.contains("socks=0"), "{out:?}");
    assert_eq!(w.seen("/no").len(), 2);
}

#[test]
fn python_urllib_and_requests_send_the_credentials_from_the_environment() {
    let w = World::new();
    let urllib = "import os, urllib.request; \
                  print(urllib.request.urlopen(os.environ['URL'] + 'urllib', timeout=10).read().decode())";
    let out = w.sh(&[], &format!("python3 -c \"{urllib}\""));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "origin saw GET /urllib body=0\n");
    assert!(
        installed("python3", &["-c", "import requests"]),
        "python3 with `requests` is required by this test"
    );
    let requests = "import os, requests; \
                    print(requests.get(os.environ['URL'] + 'requests', timeout=10).text)";
    let out = w.sh(&[], &format!("python3 -c \"{requests}\""));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "origin saw GET /requests body=0\n");
    w.assert_no_credentials_forwarded();
    // Without the token in the URL, urllib sees the 407.
    let out = w.sh(&[], &format!("{STRIP} python3 -c \"{urllib}\""));
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("HTTP Error 407"), "{out:?}");
}

/// git and pip find the proxy in `http_proxy`; the origin answers neither as they expect, so
/// what counts is that their requests reached it through the authenticated proxy.
#[test]
fn git_and_pip_reach_the_origin_through_the_authenticated_proxy() {
    let w = World::new();
    assert!(
        installed("git", &["--version"]),
        "git is required by this test"
    );
    // git lets libcurl probe without credentials and answer the 407 with them
    // (`http.proxyAuthMethod` anyauth): one refusal, no warning, then the request.
    let out = w.sh(&[], "git ls-remote \"${URL}repo.git\"");
    let refs = w.seen("/repo.git/info/refs");
    assert_eq!(refs.len(), 1, "git's request did not arrive: {out:?}");
    assert!(!out.stderr.contains("no-session-auth"), "{out:?}");

    assert!(
        installed("python3", &["-m", "pip", "--version"]),
        "pip is required by this test"
    );
    let pip = "python3 -m pip download --no-deps --retries 0 --timeout 10 \
               --index-url \"${URL}simple/\" --trusted-host allowed.test -d \"$HOME/pip\" e2e-demo";
    let out = w.sh(&[], pip);
    assert!(
        !w.seen("/simple/e2e-demo").is_empty(),
        "pip's request did not arrive: {out:?}"
    );
    // pip swallows a 407; the proxy's warning about the refusal is what tells. (Not
    // `contains("407")`: the origin's random port may hold those digits.)
    assert!(!out.stderr.contains("no-session-auth"), "{out:?}");
    w.assert_no_credentials_forwarded();
}

#[test]
fn npm_fetches_through_the_authenticated_proxy() {
    if !installed("npm", &["--version"]) {
        eprintln!("skipped: npm is not installed");
        return;
    }
    let w = World::new();
    let out = w.sh(&[], "npm ping --registry \"$URL\"");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(w.seen("/-/ping").len(), 1, "{out:?}");
    assert!(!out.stderr.contains("Unknown env config"), "{out:?}");
    w.assert_no_credentials_forwarded();
}

/// Node reads the proxy variables itself only with `NODE_USE_ENV_PROXY` (Node 24, 22.21);
/// older runtimes ignore it and would try the system resolver, so they are not run.
#[test]
fn node_fetch_with_node_use_env_proxy_sends_the_credentials() {
    let version = Command::new("node")
        .args(["-p", "process.versions.node"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let Some(version) = version else {
        eprintln!("skipped: node is not installed");
        return;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if !(major >= 24 || (major == 22 && minor >= 21)) {
        eprintln!("skipped: node v{version} does not implement NODE_USE_ENV_PROXY");
        return;
    }
    let w = World::new();
    let script =
        "node -e \"fetch(process.env.URL + 'node').then(r => r.text()).then(console.log)\"";
    let out = w.sh(&[], script);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "origin saw GET /node body=0\n");
}

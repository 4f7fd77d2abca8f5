//! `egress-proxy run` through the built binary (SPEC sections 3 and 8): the child's
//! environment, exit codes, signal forwarding, stdio, the blocked summary, and real `curl`
//! requests through both listeners.
//!
//! Everything stays on loopback: names are answered by a fake DNS server with 127.0.0.1 and
//! the origin listens on 127.0.0.1. Every run has a deadline; on expiry its whole process group
//! is killed and the test fails.

#[path = "support/cli.rs"]
mod cli;
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use tokio::time::Instant;

use cli::Files;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::bin::BIN;
use support::fake_dns::{Answer, FakeDns};
use support::origin::HttpOrigin;

/// No run in this file needs more than a fraction of this.
const DEADLINE: Duration = Duration::from_secs(10);

/// What one finished run left behind.
#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `egress-proxy ARGS` in its own process group (so a terminal running the tests is never its
/// foreground group), without `RUST_LOG`, with stdin from `/dev/null` unless `configure`
/// changes it.
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    support::bin::without_proxy_env(&mut cmd);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd
}

/// Collects stdout and stderr on threads while the process runs.
struct Running {
    child: Child,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
    /// Every stdout line as it arrives.
    lines: mpsc::Receiver<String>,
}

fn reader(mut from: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd.spawn().expect("spawn egress-proxy");
        let (send, lines) = mpsc::channel();
        let stdout = child.stdout.take().map(|out| {
            thread::spawn(move || {
                let mut all = String::new();
                let mut out = BufReader::new(out);
                loop {
                    let mut line = String::new();
                    match out.read_line(&mut line) {
                        Ok(0) | Err(_) => return all,
                        Ok(_) => {
                            all.push_str(&line);
                            let _ = send.send(line);
                        }
                    }
                }
            })
        });
        let stderr = child.stderr.take().map(reader);
        Running {
            child,
            stdout,
            stderr,
            lines,
        }
    }

    /// The next stdout line, within the deadline.
    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .expect("no stdout line from the child within the deadline")
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Waits for the exit; past the deadline kills the whole group and fails the test.
    fn finish(mut self) -> Output {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for egress-proxy") {
                break status;
            }
            if start.elapsed() > DEADLINE {
                let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
                let _ = self.child.wait();
                let stderr = self.stderr.take().map(|h| h.join().unwrap());
                panic!("egress-proxy did not exit within {DEADLINE:?}; stderr: {stderr:?}");
            }
            thread::sleep(Duration::from_millis(5));
        };
        let code = status
            .code()
            .unwrap_or_else(|| panic!("egress-proxy itself was killed: {status:?}"));
        let join = |h: Option<thread::JoinHandle<String>>| h.map(|h| h.join().unwrap());
        Output {
            code,
            stdout: join(self.stdout.take()).unwrap_or_default(),
            stderr: join(self.stderr.take()).unwrap_or_default(),
        }
    }
}

/// `run --allow x.test -- sh -c SCRIPT`, not started yet.
fn sh(script: &str) -> Command {
    command(&["run", "--allow", "x.test", "--", "sh", "-c", script])
}

fn run(args: &[&str]) -> Output {
    Running::start(command(args)).finish()
}

/// `NAME=VALUE` lines of `env` into a map (values here never contain newlines).
fn parse_env(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The port of `http://127.0.0.1:<port>`-shaped values.
fn port_of(url: &str, scheme: &str) -> u16 {
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://127.0.0.1:"))
        .unwrap_or_else(|| panic!("`{url}` is not {scheme}://127.0.0.1:<port>"));
    let port: u16 = rest
        .parse()
        .unwrap_or_else(|_| panic!("bad port in `{url}`"));
    assert_ne!(port, 0, "{url}");
    port
}

/// SPEC section 8, transcribed independently of the implementation's table.
const HTTP_URL_VARS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "WS_PROXY",
    "WSS_PROXY",
    "ws_proxy",
    "wss_proxy",
    "GRPC_PROXY",
    "grpc_proxy",
    "DOCKER_HTTP_PROXY",
    "DOCKER_HTTPS_PROXY",
    "YARN_HTTP_PROXY",
    "YARN_HTTPS_PROXY",
    "npm_config_proxy",
    "npm_config_http_proxy",
    "npm_config_https_proxy",
    "NPM_CONFIG_PROXY",
    "NPM_CONFIG_HTTP_PROXY",
    "NPM_CONFIG_HTTPS_PROXY",
    "BUNDLE_HTTP_PROXY",
    "BUNDLE_HTTPS_PROXY",
    "PIP_PROXY",
];
const SOCKS_URL_VARS: &[&str] = &["ALL_PROXY", "all_proxy", "FTP_PROXY", "ftp_proxy"];
const NO_PROXY_VARS: &[&str] = &[
    "NO_PROXY",
    "no_proxy",
    "npm_config_noproxy",
    "NPM_CONFIG_NOPROXY",
    "BUNDLE_NO_PROXY",
];

/// Asserts every variable of SPEC section 8 and returns `(http port, socks port)`.
fn assert_child_env(
    env: &BTreeMap<String, String>,
    socks: bool,
    no_proxy: &str,
) -> (u16, Option<u16>) {
    let get = |name: &str| {
        env.get(name)
            .unwrap_or_else(|| panic!("{name} is not set in the child's environment"))
            .as_str()
    };
    let http = port_of(get("HTTP_PROXY"), "http");
    let http_url = format!("http://127.0.0.1:{http}");
    for name in HTTP_URL_VARS {
        assert_eq!(get(name), http_url, "{name}");
    }
    let socks_port = if socks {
        let port = port_of(get("ALL_PROXY"), "socks5h");
        assert_ne!(port, http, "SOCKS5 and HTTP share a port");
        Some(port)
    } else {
        None
    };
    let socks_url = socks_port.map_or(http_url.clone(), |p| format!("socks5h://127.0.0.1:{p}"));
    for name in SOCKS_URL_VARS {
        assert_eq!(get(name), socks_url, "{name}");
    }
    let fixed = [
        ("RSYNC_PROXY", format!("127.0.0.1:{http}")),
        ("CLOUDSDK_PROXY_TYPE", "http".to_string()),
        ("CLOUDSDK_PROXY_ADDRESS", "127.0.0.1".to_string()),
        ("CLOUDSDK_PROXY_PORT", http.to_string()),
        ("NODE_USE_ENV_PROXY", "1".to_string()),
        ("ELECTRON_GET_USE_PROXY", "true".to_string()),
        ("EGRESS_PROXY_ACTIVE", "1".to_string()),
    ];
    for (name, want) in fixed {
        assert_eq!(get(name), want, "{name}");
    }
    for name in NO_PROXY_VARS {
        assert_eq!(get(name), no_proxy, "{name}");
    }
    (http, socks_port)
}

/// Every line of the blocked summary after its header, as `(destination, reason)`.
fn summary(stderr: &str) -> Vec<(String, String)> {
    let mut lines = stderr
        .lines()
        .skip_while(|l| !l.starts_with("egress-proxy: blocked"));
    assert!(
        lines.next().is_some(),
        "no blocked summary on stderr: {stderr:?}"
    );
    lines
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let dest = parts.next().unwrap().to_string();
            let reason = parts.next().unwrap_or_default().to_string();
            (dest, reason)
        })
        .collect()
}

fn require_curl() {
    let found = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "curl is required by these tests and was not found");
}

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

#[test]
fn child_gets_every_proxy_variable_with_no_config_file() {
    let out = run(&["run", "--allow", "**.github.com", "--", "env"]);
    assert_eq!(out.code, 0, "{out:?}");
    let env = parse_env(&out.stdout);
    assert_child_env(&env, true, "");
    // Inherited variables stay.
    assert!(env.contains_key("PATH"), "PATH was not inherited");
    // Nothing blocked, nothing said: the child's stderr is its own.
    assert_eq!(out.stderr, "");
}

#[test]
fn child_proxy_variables_replace_inherited_ones() {
    let mut cmd = command(&["run", "--allow", "x.test", "--", "env"]);
    cmd.env("HTTPS_PROXY", "http://elsewhere.invalid:1")
        .env("NO_PROXY", "*")
        .env("all_proxy", "socks5://elsewhere.invalid:2")
        .env("KEEP_ME", "yes");
    let out = Running::start(cmd).finish();
    assert_eq!(out.code, 0, "{out:?}");
    let env = parse_env(&out.stdout);
    assert_child_env(&env, true, "");
    assert_eq!(env.get("KEEP_ME").map(String::as_str), Some("yes"));
}

#[test]
fn no_proxy_list_is_passed_to_every_no_proxy_variable() {
    let list = "localhost,.internal.test,10.0.0.0/8";
    let out = run(&["run", "--allow", "x.test", "--no-proxy", list, "--", "env"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_child_env(&parse_env(&out.stdout), true, list);
}

#[test]
fn without_socks5_all_proxy_is_the_http_url() {
    let files = Files::new();
    let config = files.write("p.toml", "enable_socks5 = false\n");
    let out = run(&["run", "--config", &config, "--allow", "x.test", "--", "env"]);
    assert_eq!(out.code, 0, "{out:?}");
    let (_, socks) = assert_child_env(&parse_env(&out.stdout), false, "");
    assert_eq!(socks, None);
}

#[test]
fn listener_urls_and_requirements_ports_are_ignored() {
    let files = Files::new();
    // Fixed ports that `run` must not use: a second `run` would collide with the first.
    let config = files.write(
        "p.toml",
        "proxy_url = 'http://127.0.0.1:3128'\nsocks_url = 'socks5://127.0.0.1:8081'\n",
    );
    let req = files.write(
        "r.toml",
        "[experimental_network]\nhttp_port = 3128\nsocks_port = 8081\n",
    );
    let out = run(&[
        "run",
        "--config",
        &config,
        "--requirements",
        &req,
        "--allow",
        "x.test",
        "--",
        "env",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let (http, socks) = assert_child_env(&parse_env(&out.stdout), true, "");
    assert_ne!(http, 3128);
    assert_ne!(socks, Some(8081));
}

// ---------------------------------------------------------------------------------------------
// Exit status, stdio, refusal
// ---------------------------------------------------------------------------------------------

#[test]
fn exit_code_is_the_childs() {
    for (script, want) in [("exit 0", 0), ("exit 7", 7), ("exit 255", 255)] {
        let out = Running::start(sh(script)).finish();
        assert_eq!(out.code, want, "{script}: {out:?}");
    }
}

#[test]
fn child_killed_by_a_signal_gives_128_plus_the_signal() {
    for (script, want) in [("kill -TERM $$", 143), ("kill -KILL $$", 137)] {
        let out = Running::start(sh(script)).finish();
        assert_eq!(out.code, want, "{script}: {out:?}");
    }
}

#[test]
fn missing_command_is_127_with_one_clear_line() {
    let out = run(&[
        "run",
        "--allow",
        "x.test",
        "--",
        "egress-proxy-test-no-such-command",
        "arg",
    ]);
    assert_eq!(out.code, 127, "{out:?}");
    assert_eq!(
        out.stderr,
        "error: cannot run `egress-proxy-test-no-such-command`: command not found\n"
    );
}

#[test]
fn non_executable_command_is_126() {
    let files = Files::new();
    let path = files.write("script.sh", "#!/bin/sh\necho hi\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&["run", "--allow", "x.test", "--", &path]);
    assert_eq!(out.code, 126, "{out:?}");
    assert_eq!(
        out.stderr,
        format!("error: cannot run `{path}`: permission denied\n")
    );
}

#[test]
fn stdio_is_inherited() {
    let mut cmd = sh("cat; echo to-stderr >&2");
    cmd.stdin(Stdio::piped());
    let mut running = Running::start(cmd);
    let mut stdin = running.child.stdin.take().unwrap();
    stdin.write_all(b"hello through stdin\n").unwrap();
    drop(stdin);
    let out = running.finish();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "hello through stdin\n");
    assert_eq!(out.stderr, "to-stderr\n");
}

/// `run ARGS -- sh -c 'touch MARKER'`, which must refuse with exit 2 and one stderr line before
/// the child runs; that line.
fn refused_to_start(files: &Files, args: &[&str]) -> String {
    let marker = files.dir().join("child-ran");
    let script = format!("touch '{}'", marker.display());
    let out = run(&[&["run"][..], args, &["--", "sh", "-c", &script]].concat());
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "one line: {:?}", out.stderr);
    assert!(
        !marker.exists(),
        "the child ran although `run {args:?}` refused"
    );
    out.stderr
}

#[test]
fn disabled_policy_refuses_and_never_runs_the_child() {
    let files = Files::new();
    let config = files.write("p.toml", "enabled = false\nallowed_domains = ['x.test']\n");
    let stderr = refused_to_start(&files, &["--config", &config]);
    assert!(stderr.contains("not enabled"), "{stderr:?}");
}

#[test]
fn config_error_is_one_line_exit_2_and_the_child_never_runs() {
    let files = Files::new();
    let config = files.write("p.toml", "no_such_key = 1\n");
    let stderr = refused_to_start(&files, &["--config", &config]);
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    assert!(stderr.contains("no_such_key"), "{stderr:?}");

    // A bad pattern is a config error as well.
    refused_to_start(&files, &["--allow", "api.*.com"]);
}

#[test]
fn missing_command_is_a_usage_error() {
    let out = run(&["run", "--allow", "x.test"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("CMD"), "{:?}", out.stderr);
}

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

/// Starts a child that exits with `code` on `signal`, waits until its trap is set, then sends
/// `signal` to egress-proxy (not to the child) and returns the exit code.
fn forwarded(signal: Signal, code: i32) -> i32 {
    let name = signal.as_str().trim_start_matches("SIG");
    let script = format!("trap 'exit {code}' {name}; echo ready; while :; do sleep 0.05; done");
    let running = Running::start(sh(&script));
    assert_eq!(running.next_line(), "ready\n", "the child did not start");
    kill(running.pid(), signal).expect("signal egress-proxy");
    running.finish().code
}

#[test]
fn sigterm_is_forwarded_to_the_child() {
    assert_eq!(forwarded(Signal::SIGTERM, 42), 42);
}

#[test]
fn sigint_sighup_and_sigquit_are_forwarded_to_the_child() {
    for (signal, code) in [
        (Signal::SIGINT, 43),
        (Signal::SIGHUP, 44),
        (Signal::SIGQUIT, 45),
    ] {
        assert_eq!(forwarded(signal, code), code, "{signal}");
    }
}

#[test]
fn a_child_that_does_not_catch_sigterm_dies_of_it() {
    let running = Running::start(sh("echo ready; while :; do sleep 0.05; done"));
    assert_eq!(running.next_line(), "ready\n");
    kill(running.pid(), Signal::SIGTERM).unwrap();
    assert_eq!(running.finish().code, 128 + Signal::SIGTERM as i32);
}

// ---------------------------------------------------------------------------------------------
// Real requests with curl
// ---------------------------------------------------------------------------------------------

/// A fake DNS answering 127.0.0.1 for both names, an origin, and a policy file that allows
/// both names on loopback; `--deny denied.test` then decides.
struct World {
    dns: FakeDns,
    origin: HttpOrigin,
    _files: Files,
    config: String,
}

impl World {
    fn new() -> World {
        require_curl();
        let dns = FakeDns::start([
            ("allowed.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
            ("denied.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
        ]);
        let origin = HttpOrigin::start();
        let files = Files::new();
        let config = files.write(
            "p.toml",
            "allow_local_binding = true\nallowed_domains = ['allowed.test', 'denied.test']\n",
        );
        World {
            dns,
            origin,
            _files: files,
            config,
        }
    }

    /// `run --config … --dns-server … --deny denied.test EXTRA -- CMD…`
    fn run(&self, extra: &[&str], cmd: &[&str]) -> Output {
        let dns = self.dns.addr.to_string();
        let mut args = vec![
            "run",
            "--config",
            &self.config,
            "--dns-server",
            &dns,
            "--deny",
            "denied.test",
        ];
        args.extend_from_slice(extra);
        args.push("--");
        args.extend_from_slice(cmd);
        run(&args)
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.origin.addr.port())
    }
}

#[test]
fn curl_reaches_an_allowed_name_through_the_proxy_from_the_environment() {
    let world = World::new();
    let url = world.url("allowed.test", "/x");
    let out = world.run(&[], &["curl", "-q", "-sS", &url]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "origin saw GET /x body=0");
    assert_eq!(out.stderr, "", "nothing blocked, nothing logged");
    let requests = world.origin.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].starts_with("GET /x HTTP/1.1"), "{requests:?}");
}

#[test]
fn curl_to_a_denied_name_sees_the_reason_and_the_summary_names_it() {
    let world = World::new();
    let url = world.url("denied.test", "/secret");
    let out = world.run(&[], &["curl", "-q", "-sS", "-i", &url]);
    assert_eq!(out.code, 0, "curl without -f exits 0 on a 403: {out:?}");
    let head = out.stdout.to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 403"),
        "not a 403: {:?}",
        out.stdout
    );
    assert!(
        head.contains("x-proxy-reason: deny-rule"),
        "{:?}",
        out.stdout
    );
    assert!(
        head.contains("x-proxy-error: blocked-by-denylist"),
        "{:?}",
        out.stdout
    );
    assert_eq!(world.origin.request_count(), 0, "the origin was reached");
    let port = world.origin.addr.port();
    assert_eq!(
        summary(&out.stderr),
        vec![(format!("denied.test:{port}"), "deny-rule".to_string())],
        "{:?}",
        out.stderr
    );
    assert!(
        out.stderr
            .starts_with("egress-proxy: blocked 1 destination:\n"),
        "{:?}",
        out.stderr
    );
}

#[test]
fn summary_is_deduplicated_sorted_and_covers_both_listeners() {
    let world = World::new();
    let port = world.origin.addr.port();
    let denied = world.url("denied.test", "/");
    // Not in the allow list at all: `not-allowed`.
    let other = format!("http://other.test:{port}/");
    let script = format!(
        "curl -q -s -o /dev/null '{denied}'; curl -q -s -o /dev/null '{denied}'; \
         curl -q -s -o /dev/null '{other}'; \
         curl -q -s -o /dev/null -x \"$ALL_PROXY\" 'http://denied.test:{port}/socks'; \
         curl -q -s -o /dev/null -x \"$ALL_PROXY\" 'http://denied.test:1/socks'; \
         curl -q -sS -x \"$ALL_PROXY\" '{ok}'",
        ok = world.url("allowed.test", "/via-socks"),
    );
    let out = world.run(&[], &["sh", "-c", &script]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "origin saw GET /via-socks body=0");
    assert_eq!(
        summary(&out.stderr),
        vec![
            ("denied.test:1".to_string(), "deny-rule".to_string()),
            (format!("denied.test:{port}"), "deny-rule".to_string()),
            (format!("other.test:{port}"), "not-allowed".to_string()),
        ],
        "{:?}",
        out.stderr
    );
    assert_eq!(world.origin.request_count(), 1);
}

#[test]
fn quiet_suppresses_the_summary() {
    let world = World::new();
    let url = world.url("denied.test", "/");
    let out = world.run(
        &["--quiet"],
        &["curl", "-q", "-sS", "-o", "/dev/null", &url],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stderr, "");
    assert_eq!(world.origin.request_count(), 0);
}

#[test]
fn audit_log_records_the_childs_decisions() {
    let world = World::new();
    let files = Files::new();
    let audit = files.dir().join("audit.jsonl");
    let audit_arg = audit.to_str().unwrap();
    let url = world.url("allowed.test", "/a");
    let out = world.run(
        &["--quiet", "--audit-log", audit_arg],
        &["curl", "-q", "-sS", "-o", "/dev/null", &url],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let text = std::fs::read_to_string(&audit).expect("audit log written");
    let decisions: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["event"] == "decision")
        .collect();
    assert_eq!(decisions.len(), 1, "{text}");
    assert_eq!(decisions[0]["host"], "allowed.test");
    assert_eq!(decisions[0]["verdict"], "allow");
}

//! What `egress-proxy run` tells about blocked destinations, through the built binary and
//! real clients: the line on stderr the moment a destination is first blocked (while the child
//! still runs), once per destination and reason; the summary at exit with the rule and where it
//! was written; `--quiet`; the 403 body with and without `Accept: application/json`, which never
//! shows a policy file's path; and npm reading the proxy without a warning.
//!
//! Everything stays on loopback: names are answered by a fake DNS server with 127.0.0.1 and
//! the origin listens on 127.0.0.1. Every run has a deadline.

#[path = "support/cli.rs"]
mod cli;
mod support;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use cli::Files;
use support::fake_dns::{Answer, FakeDns};
use support::origin::HttpOrigin;
use support::run::{command, require_curl, Output, Running, DEADLINE};

/// One row of the exit summary: destination, reason, and the rule text (empty without one).
type Row = (String, String, String);

/// The rows of the blocked summary after its header `egress-proxy: blocked N destination(s):`.
fn summary(stderr: &str) -> Vec<Row> {
    let is_header = |l: &str| {
        l.strip_prefix("egress-proxy: blocked ")
            .and_then(|rest| rest.split_once(' '))
            .is_some_and(|(n, rest)| n.parse::<usize>().is_ok() && rest.starts_with("destination"))
    };
    let mut lines = stderr.lines().skip_while(|l| !is_header(l));
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
            let rule = parts.collect::<Vec<_>>().join(" ");
            (dest, reason, rule)
        })
        .collect()
}

fn row(dest: &str, reason: &str, rule: &str) -> Row {
    (dest.to_string(), reason.to_string(), rule.to_string())
}

/// The lines printed when a destination was first blocked, in order.
fn live_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("egress-proxy: blocked ") && l.contains(" — "))
        .collect()
}

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

    /// `run --config … --dns-server … --deny denied.test EXTRA -- CMD…`, not started yet.
    fn command(&self, extra: &[&str], cmd: &[&str]) -> Command {
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
        command(&args)
    }

    fn run(&self, extra: &[&str], cmd: &[&str]) -> Output {
        Running::start(self.command(extra, cmd)).finish()
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
fn curl_to_a_denied_name_sees_the_reason_and_stderr_names_the_rule() {
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
    assert!(
        head.contains("content-type: text/plain"),
        "{:?}",
        out.stdout
    );
    assert_eq!(world.origin.request_count(), 0, "the origin was reached");
    let port = world.origin.addr.port();
    let dest = format!("denied.test:{port}");
    assert_eq!(
        live_lines(&out.stderr),
        [format!(
            "egress-proxy: blocked HTTP {dest} — deny-rule (a deny rule matches (deny beats allow); rule deny `denied.test` (--deny))"
        )],
        "{:?}",
        out.stderr
    );
    assert_eq!(
        summary(&out.stderr),
        [row(&dest, "deny-rule", "rule deny `denied.test` (--deny)")],
        "{:?}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("\negress-proxy: blocked 1 destination:\n"),
        "{:?}",
        out.stderr
    );
}

/// The line comes while the child runs: the child waits for the test to have read it before
/// it exits, and fails if that never happens. Each destination and reason is reported once,
/// over both listeners, and the summary at exit lists them all.
#[test]
fn the_first_denial_is_reported_while_the_child_runs_and_only_once() {
    let world = World::new();
    let files = Files::new();
    let go = files.path("go");
    let port = world.origin.addr.port();
    let denied = world.url("denied.test", "/");
    let other = format!("http://other.test:{port}/");
    let script = format!(
        "curl -q -s -o /dev/null '{denied}'; curl -q -s -o /dev/null '{denied}'; \
         curl -q -s -o /dev/null -x \"$ALL_PROXY\" 'http://denied.test:{port}/socks'; \
         curl -q -s -o /dev/null '{other}'; \
         i=0; while [ ! -e '{go}' ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; \
         [ -e '{go}' ] || exit 3; \
         curl -q -s -o /dev/null -x \"$ALL_PROXY\" 'http://denied.test:1/socks'; \
         curl -q -sS -x \"$ALL_PROXY\" '{ok}'",
        ok = world.url("allowed.test", "/via-socks"),
    );
    let running = Running::start(world.command(&[], &["sh", "-c", &script]));
    let mut early = Vec::new();
    while early.len() < 2 {
        let line = running
            .next_stderr_line(DEADLINE)
            .expect("no line on stderr while the child runs");
        early.push(line);
    }
    std::fs::write(&go, "").unwrap();
    let out = running.finish();
    assert_eq!(out.code, 0, "the child never saw its lines: {out:?}");
    assert_eq!(out.stdout, "origin saw GET /via-socks body=0");
    let dest = format!("denied.test:{port}");
    assert_eq!(
        early,
        [
            format!("egress-proxy: blocked HTTP {dest} — deny-rule (a deny rule matches (deny beats allow); rule deny `denied.test` (--deny))\n"),
            format!("egress-proxy: blocked HTTP other.test:{port} — not-allowed (no allow rule matches; add --allow other.test:{port})\n"),
        ]
    );
    let live = live_lines(&out.stderr);
    assert_eq!(live.len(), 3, "{:?}", out.stderr);
    assert!(
        live[2].starts_with("egress-proxy: blocked SOCKS5 denied.test:1 — deny-rule"),
        "{live:?}"
    );
    let deny = "rule deny `denied.test` (--deny)";
    assert_eq!(
        summary(&out.stderr),
        [
            row("denied.test:1", "deny-rule", deny),
            row(&dest, "deny-rule", deny),
            row(&format!("other.test:{port}"), "not-allowed", ""),
        ],
        "{:?}",
        out.stderr
    );
    assert_eq!(world.origin.request_count(), 1);
}

#[test]
fn quiet_prints_neither_the_line_nor_the_summary() {
    let world = World::new();
    let url = world.url("denied.test", "/");
    let other = format!("http://other.test:{}/", world.origin.addr.port());
    let out = world.run(
        &["--quiet"],
        &[
            "sh",
            "-c",
            &format!("curl -q -s -o /dev/null '{url}'; curl -q -s -o /dev/null '{other}'"),
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stderr, "");
    assert_eq!(world.origin.request_count(), 0);
}

/// A deny rule from a file in a directory named `secret-dir` (over the world's allow): the
/// operator's stderr says where it was written, the client's body (text or JSON) only that it
/// came from a policy file.
#[test]
fn a_rule_files_path_reaches_stderr_but_never_the_client() {
    let world = World::new();
    let files = Files::new();
    let secret = files.dir().join("secret-dir");
    std::fs::create_dir(&secret).unwrap();
    let policy = secret.join("deny.toml");
    std::fs::write(&policy, "denied_domains = ['allowed.test']\n").unwrap();
    let policy = policy.to_str().unwrap();
    let url = world.url("allowed.test", "/x");
    let script =
        format!("curl -q -sS '{url}'; echo; curl -q -sS -H 'Accept: application/json' '{url}'");
    let out = world.run(&["--config", policy], &["sh", "-c", &script]);
    assert_eq!(out.code, 0, "{out:?}");
    let (text, json) = out.stdout.split_once('\n').expect("two bodies");
    let json = json.trim_start_matches('\n');
    for body in [text, json] {
        assert!(
            !body.contains("secret-dir"),
            "the client saw the path: {body:?}"
        );
    }
    assert!(
        text.contains("rule deny `allowed.test` (a policy file)"),
        "{text:?}"
    );
    let json: serde_json::Value = serde_json::from_str(json.trim_end())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {json:?}"));
    let port = world.origin.addr.port();
    assert_eq!(json["status"], "blocked");
    assert_eq!(json["host"], "allowed.test");
    assert_eq!(json["port"], port);
    assert_eq!(json["reason"], "deny-rule");
    assert_eq!(json["rule"], "allowed.test");
    assert_eq!(json["error"], "blocked-by-denylist");
    let where_ = format!("rule deny `allowed.test` ({policy}:1:19)");
    assert!(
        live_lines(&out.stderr)[0].contains(&where_),
        "{:?}",
        out.stderr
    );
    assert_eq!(
        summary(&out.stderr),
        [row(&format!("allowed.test:{port}"), "deny-rule", &where_)]
    );
}

/// A refusal that is not a policy decision answers JSON too when asked.
#[test]
fn a_bad_request_answers_json_when_asked() {
    let world = World::new();
    let script =
        "curl -q -sS -H 'Accept: application/json' -x \"$HTTP_PROXY\" 'ftp://allowed.test/'";
    let out = world.run(&[], &["sh", "-c", script]);
    let json: serde_json::Value = serde_json::from_str(out.stdout.trim_end())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {out:?}"));
    assert_eq!(json["status"], "error");
    assert_eq!(json["error"], "bad-request");
    assert_eq!(json["reason"], serde_json::Value::Null);
}

/// `npm config get proxy` inside `run` shows the proxy, and npm warns about no variable it does
/// not know ("Unknown env config"). npm refuses to show a proxy URL with credentials ("the
/// proxy option is protected"), so this runs without them; `run_session.rs` has npm fetching
/// through the proxy with them.
#[test]
fn npm_reads_the_proxy_without_a_warning() {
    let found = Command::new("npm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipped: npm is not installed");
        return;
    }
    let files = Files::new();
    let home = files.dir().to_str().unwrap().to_string();
    let script = "npm config get proxy; npm config get https-proxy; echo \"$HTTP_PROXY\"";
    let args = [
        "run",
        "--no-session-auth",
        "--allow",
        "x.test",
        "--",
        "sh",
        "-c",
        script,
    ];
    let mut cmd = command(&args);
    cmd.env("HOME", &home)
        .env("npm_config_cache", format!("{home}/cache"));
    let out = Running::start(cmd).finish();
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    assert!(lines[2].starts_with("http://127.0.0.1:"), "{out:?}");
    assert_eq!(lines[0], lines[2], "npm's proxy: {out:?}");
    assert_eq!(lines[1], lines[2], "npm's https-proxy: {out:?}");
    assert!(
        !out.stderr.contains("Unknown env config"),
        "{:?}",
        out.stderr
    );
}

/// `run` has no admin API and so no token: it leaves nothing in the runtime or temp directory.
#[test]
fn run_leaves_no_token_directory_behind() {
    let files = Files::new();
    let runtime = files.dir().join("run");
    let tmp = files.dir().join("tmp");
    for dir in [&runtime, &tmp] {
        std::fs::create_dir(dir).unwrap();
    }
    let mut cmd = command(&["run", "--allow", "x.test", "--", "true"]);
    cmd.env("XDG_RUNTIME_DIR", &runtime).env("TMPDIR", &tmp);
    assert_eq!(Running::start(cmd).finish().code, 0);
    for dir in [&runtime, &tmp] {
        let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
        assert!(left.is_empty(), "{dir:?}: {left:?}");
    }
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

/// `RUST_LOG` naming only a target adds its lines and keeps `run`'s default level for the
/// rest; a value that is not a directive list is reported once and `run`'s default used.
#[test]
fn rust_log_adds_a_target_and_a_bad_value_is_reported() {
    let world = World::new();
    let url = world.url("allowed.test", "/x");
    let mut cmd = world.command(&[], &["curl", "-q", "-sS", &url]);
    cmd.env("RUST_LOG", "egress_proxy::decision=debug");
    let out = Running::start(cmd).finish();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "origin saw GET /x body=0");
    let decisions: Vec<_> = out
        .stderr
        .lines()
        .filter(|l| l.contains("DEBUG") && l.contains("egress_proxy::decision"))
        .collect();
    assert_eq!(decisions.len(), 1, "{:?}", out.stderr);
    assert!(decisions[0].contains("allowed.test"), "{decisions:?}");
    assert!(
        !out.stderr.contains(" INFO "),
        "run's default level stays warn: {:?}",
        out.stderr
    );

    let mut cmd = world.command(&[], &["curl", "-q", "-sS", &url]);
    cmd.env("RUST_LOG", "egress_proxy=loud");
    let out = Running::start(cmd).finish();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "origin saw GET /x body=0");
    assert_eq!(
        out.stderr.lines().collect::<Vec<_>>(),
        [
            "warning: RUST_LOG=\"egress_proxy=loud\" is not a list of `target=level` directives \
             (error parsing level filter: expected one of \"off\", \"error\", \"warn\", \"info\", \
             \"debug\", \"trace\", or a number 0-5); logging with \"warn,egress_proxy::decision=off\""
        ],
        "{:?}",
        out.stderr
    );
}

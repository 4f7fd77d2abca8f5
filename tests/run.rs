//! `egress-proxy run` through the built binary (SPEC sections 3 and 8): the child's
//! environment, exit codes, signal forwarding and stdio. What it reports about blocked
//! destinations, with real `curl` requests, is in `run_blocked.rs`.
//!
//! Every run has a deadline; on expiry its whole process group is killed and the test fails.

#[path = "support/cli.rs"]
mod cli;
mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use cli::Files;
use nix::sys::signal::{kill, Signal};
use support::run::{command, run, Running};

/// `run --allow x.test -- sh -c SCRIPT`, not started yet.
fn sh(script: &str) -> Command {
    command(&["run", "--allow", "x.test", "--", "sh", "-c", script])
}

/// `NAME=VALUE` lines of `env` into a map (values here never contain newlines).
fn parse_env(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The credentials (`egress:<token>@`, or empty) and port of
/// `http://[egress:<token>@]127.0.0.1:<port>`-shaped values.
fn parse_url<'a>(url: &'a str, scheme: &str) -> (&'a str, u16) {
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .unwrap_or_else(|| panic!("`{url}` is not {scheme}://…"));
    let (creds, rest) = match rest.split_once('@') {
        Some((userinfo, rest)) => (&url[scheme.len() + 3..][..userinfo.len() + 1], rest),
        None => ("", rest),
    };
    let rest = rest
        .strip_prefix("127.0.0.1:")
        .unwrap_or_else(|| panic!("`{url}` is not {scheme}://[creds@]127.0.0.1:<port>"));
    let port: u16 = rest
        .parse()
        .unwrap_or_else(|_| panic!("bad port in `{url}`"));
    assert_ne!(port, 0, "{url}");
    (creds, port)
}

/// Asserts that `creds` are `egress:<32 lower-case hex digits>@` and returns the token.
fn token_of(creds: &str) -> &str {
    let token = creds
        .strip_prefix("egress:")
        .and_then(|t| t.strip_suffix('@'))
        .unwrap_or_else(|| panic!("`{creds}` is not egress:<token>@"));
    assert_eq!(token.len(), 32, "{token}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{token}"
    );
    token
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
    "npm_config_https_proxy",
    "NPM_CONFIG_PROXY",
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

/// What `assert_child_env` found: the ports and the session token (`None` without one).
#[derive(Debug)]
struct ChildEnv {
    http: u16,
    socks: Option<u16>,
    token: Option<String>,
}

/// Asserts every variable of SPEC section 8, with session credentials unless `session` is
/// false (`--no-session-auth`): the same `egress:<token>@` in every URL.
fn assert_child_env(
    env: &BTreeMap<String, String>,
    socks: bool,
    no_proxy: &str,
    session: bool,
) -> ChildEnv {
    let get = |name: &str| {
        env.get(name)
            .unwrap_or_else(|| panic!("{name} is not set in the child's environment"))
            .as_str()
    };
    let (creds, http) = parse_url(get("HTTP_PROXY"), "http");
    let token = session.then(|| token_of(creds).to_string());
    if !session {
        assert_eq!(creds, "", "credentials with --no-session-auth");
    }
    let http_url = format!("http://{creds}127.0.0.1:{http}");
    for name in HTTP_URL_VARS {
        assert_eq!(get(name), http_url, "{name}");
    }
    let socks_port = if socks {
        let (socks_creds, port) = parse_url(get("ALL_PROXY"), "socks5h");
        assert_eq!(socks_creds, creds, "ALL_PROXY's credentials");
        assert_ne!(port, http, "SOCKS5 and HTTP share a port");
        Some(port)
    } else {
        None
    };
    let socks_url = socks_port.map_or(http_url.clone(), |p| {
        format!("socks5h://{creds}127.0.0.1:{p}")
    });
    for name in SOCKS_URL_VARS {
        assert_eq!(get(name), socks_url, "{name}");
    }
    match &token {
        Some(token) => {
            assert_eq!(get("CLOUDSDK_PROXY_USERNAME"), "egress");
            assert_eq!(get("CLOUDSDK_PROXY_PASSWORD"), token);
        }
        None => {
            assert!(!env.contains_key("CLOUDSDK_PROXY_USERNAME"));
            assert!(!env.contains_key("CLOUDSDK_PROXY_PASSWORD"));
        }
    }
    let fixed = [
        ("RSYNC_PROXY", format!("{creds}127.0.0.1:{http}")),
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
    ChildEnv {
        http,
        socks: socks_port,
        token,
    }
}

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

#[test]
fn child_gets_every_proxy_variable_with_no_config_file() {
    let out = run(&["run", "--allow", "**.github.com", "--", "env"]);
    assert_eq!(out.code, 0, "{out:?}");
    let env = parse_env(&out.stdout);
    assert_child_env(&env, true, "", true);
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
    assert_child_env(&env, true, "", true);
    assert_eq!(env.get("KEEP_ME").map(String::as_str), Some("yes"));
}

#[test]
fn no_proxy_list_is_passed_to_every_no_proxy_variable() {
    let list = "localhost,.internal.test,10.0.0.0/8";
    let out = run(&["run", "--allow", "x.test", "--no-proxy", list, "--", "env"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_child_env(&parse_env(&out.stdout), true, list, true);
}

#[test]
fn without_socks5_all_proxy_is_the_http_url() {
    let files = Files::new();
    let config = files.write("p.toml", "enable_socks5 = false\n");
    let out = run(&["run", "--config", &config, "--allow", "x.test", "--", "env"]);
    assert_eq!(out.code, 0, "{out:?}");
    let env = assert_child_env(&parse_env(&out.stdout), false, "", true);
    assert_eq!(env.socks, None);
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
    let env = assert_child_env(&parse_env(&out.stdout), true, "", true);
    assert_ne!(env.http, 3128);
    assert_ne!(env.socks, Some(8081));
}

#[test]
fn every_run_has_a_token_of_its_own() {
    let token = || {
        let out = run(&["run", "--allow", "x.test", "--", "env"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert_child_env(&parse_env(&out.stdout), true, "", true).token
    };
    assert_ne!(token(), token());
}

#[test]
fn no_session_auth_gives_urls_without_credentials() {
    let mut cmd = command(&["run", "--no-session-auth", "--allow", "x.test", "--", "env"]);
    // Inherited gcloud credentials are not ours to remove or to fill.
    cmd.env("CLOUDSDK_PROXY_USERNAME", "theirs");
    let out = Running::start(cmd).finish();
    assert_eq!(out.code, 0, "{out:?}");
    let mut env = parse_env(&out.stdout);
    assert_eq!(
        env.remove("CLOUDSDK_PROXY_USERNAME").as_deref(),
        Some("theirs")
    );
    let found = assert_child_env(&env, true, "", false);
    assert_eq!(found.token, None);
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

/// The proxy's worker threads: `--threads N`, else half the cores, at least one. The child
/// counts its parent's threads (the main thread, the workers, and the blocking pool's, which
/// nothing here has started).
#[test]
fn threads_sets_the_proxy_workers() {
    let count = "ls /proc/$PPID/task | wc -l";
    let out = run(&["run", "--threads", "3", "--", "sh", "-c", count]);
    assert_eq!((out.code, out.stdout.trim()), (0, "4"), "{}", out.stderr);
    let out = run(&["run", "--threads", "1", "--", "sh", "-c", count]);
    assert_eq!((out.code, out.stdout.trim()), (0, "2"), "{}", out.stderr);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let out = run(&["run", "--", "sh", "-c", count]);
    let workers = (cores / 2).max(1);
    assert_eq!(
        out.stdout.trim(),
        (workers + 1).to_string(),
        "{}",
        out.stderr
    );
    let out = run(&["run", "--threads", "0", "--", "true"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--threads"), "{}", out.stderr);
}

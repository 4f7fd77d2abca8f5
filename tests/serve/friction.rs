//! What a newcomer met starting `serve`: every taken port reported at once, the generated
//! admin token removed on every kind of exit, and allowed traffic visible in the log at first.

use std::net::TcpListener;
use std::path::Path;

use nix::sys::signal::Signal;

use crate::serve::{
    allowed_only, command, ephemeral_args, fake_dns, proxy_get, start_failure, Dir, Serve, DEADLINE,
};

#[test]
fn every_taken_port_is_reported_at_once() {
    let dir = Dir::new();
    let dns = fake_dns();
    let config = dir.write("p.toml", &allowed_only(&dns));
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let (http, admin) = (
        http.local_addr().unwrap().to_string(),
        admin.local_addr().unwrap().to_string(),
    );
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--http-listen",
        &http,
        "--socks-listen",
        "127.0.0.1:0",
        "--admin-listen",
        &admin,
    ];
    let (code, stderr) = start_failure(&args, &dir.runtime());
    assert_eq!(code, 1, "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 2, "{stderr}");
    for (line, (addr, key)) in errors
        .iter()
        .zip([(&http, "proxy_url"), (&admin, "admin_url")])
    {
        assert!(
            line.starts_with(&format!("error: cannot listen on {addr} ({key}): ")),
            "{stderr}"
        );
        assert!(line.contains("Address already in use"), "{stderr}");
    }
    assert_no_token(&dir.runtime());
}

/// Nothing but what the test put there is left in `dir`.
fn assert_no_token(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in {dir:?}: {left:?}");
}

/// In `$XDG_RUNTIME_DIR` and, without it, in a fresh directory under `$TMPDIR`: the token is
/// there while `serve` runs and gone, with its directory, once it stopped on SIGTERM or SIGINT.
#[test]
fn the_generated_admin_token_is_removed_on_exit() {
    let dir = Dir::new();
    let dns = fake_dns();
    let config = dir.write("p.toml", &allowed_only(&dns));
    let tmp = dir.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        for xdg in [true, false] {
            let mut cmd = command(&ephemeral_args(&config), &dir.runtime());
            if !xdg {
                cmd.env_remove("XDG_RUNTIME_DIR").env("TMPDIR", &tmp);
            }
            let mut serve = Serve::spawn(cmd).unwrap_or_else(|f| panic!("{f:?}"));
            let line = serve
                .seen
                .iter()
                .find(|l| l.contains("admin API listening"))
                .cloned()
                .expect("the admin startup line");
            let token = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("token_file="))
                .unwrap_or_else(|| panic!("no token_file= in {line:?}"))
                .to_string();
            let token = Path::new(&token);
            assert!(token.exists(), "{token:?}");
            let parent = if xdg { dir.runtime() } else { tmp.clone() };
            assert!(
                token.starts_with(&parent),
                "{token:?} is not under {parent:?}"
            );
            serve.signal(signal);
            let status = serve.expect_exit(DEADLINE);
            assert_eq!(status.code(), Some(0), "{signal}: {}", serve.stderr());
            assert!(!token.exists(), "{signal}, xdg {xdg}: {token:?} is left");
            assert_no_token(&parent);
        }
    }
}

/// Allowed decisions are INFO lines in the first seconds after start-up, so someone trying
/// the gateway sees traffic flow; later only with `--log-allowed`.
#[test]
fn allowed_decisions_are_info_at_first_and_with_log_allowed() {
    let dir = Dir::new();
    let dns = fake_dns();
    let config = dir.write("p.toml", &allowed_only(&dns));
    let mut quiet = Serve::start(&config, &[], &dir.runtime());
    let other = Dir::new();
    let mut loud = Serve::start(&config, &["--log-allowed"], &other.runtime());
    let allowed = |line: &str| line.contains(" INFO ") && line.contains("verdict=\"allow\"");
    for serve in [&mut quiet, &mut loud] {
        proxy_get(serve.http, "allowed.test:1");
        let line = serve.try_wait_for_line(allowed, DEADLINE);
        assert!(
            line.is_some(),
            "no INFO line for an allowed request:\n{}",
            serve.stderr()
        );
    }
    // Past the start-up window (10 s in `src/cli/serve.rs`).
    std::thread::sleep(std::time::Duration::from_millis(10_500));
    proxy_get(quiet.http, "allowed.test:2");
    proxy_get(quiet.http, "denied.test:2");
    quiet.wait_for_line("not-allowed");
    quiet.drain_lines();
    let late: Vec<&String> = quiet
        .seen
        .iter()
        .filter(|l| allowed(l) && l.contains("dest=allowed.test:2 "))
        .collect();
    assert!(
        late.is_empty(),
        "allowed after the window at INFO: {late:?}"
    );
    proxy_get(loud.http, "allowed.test:3");
    let line = loud.try_wait_for_line(
        |l| allowed(l) && l.contains("dest=allowed.test:3 "),
        DEADLINE,
    );
    assert!(line.is_some(), "--log-allowed:\n{}", loud.stderr());
    quiet.stop();
    loud.stop();
}

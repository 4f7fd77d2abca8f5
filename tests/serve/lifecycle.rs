//! A running `egress-proxy serve` (SPEC section 7, issue 6): signals right after startup, hot
//! reload on SIGHUP, graceful shutdown on SIGTERM with the drain deadline, and the open tunnels
//! a reload or a mode switch re-decides.
//!
//! Everything stays on loopback: listeners on 127.0.0.1, names answered by a fake DNS server
//! with 127.0.0.1, origins on 127.0.0.1 (see `support/serve.rs`).

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::Duration;
use tokio::time::Instant;

use crate::support::origin::{HttpOrigin, TcpEcho};
use crate::support::prometheus::sample;
use crate::support::reply::Reply;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::serve::{
    admin_get, admin_post, allowed_only, audit_when, command, connect, connect_tunnel, echo,
    ephemeral_args, expect_closed, fake_dns, loopback_policy, policy_text, proxy_get, read_reply,
    socks_tunnel, tunnel_policy, wait_refused, Dir, Serve, DEADLINE, GRACE,
};

/// Once the startup lines are out, a supervisor may signal at once: SIGHUP must reload and
/// SIGTERM must drain, never meet the default action (which kills the process).
#[test]
fn signals_right_after_the_startup_lines_are_handled() {
    let dir = Dir::new();
    let dns = fake_dns();
    let config = dir.write("p.toml", &allowed_only(&dns));
    let args = ephemeral_args(&config);
    for attempt in 1..=25 {
        for signal in [Signal::SIGHUP, Signal::SIGTERM] {
            let mut serve = Serve::spawn_with(command(&args, &dir.runtime()), false)
                .unwrap_or_else(|f| panic!("{f:?}"));
            serve.signal(signal);
            let status = if signal == Signal::SIGHUP {
                let reloaded = serve.try_wait_for_line(|l| l.contains("policy reloaded"), DEADLINE);
                let status = serve.try_wait();
                assert!(
                    reloaded.is_some() && status.is_none(),
                    "attempt {attempt}: SIGHUP right after startup: {status:?}\n{}",
                    serve.stderr()
                );
                serve.signal(Signal::SIGTERM);
                serve.expect_exit(DEADLINE)
            } else {
                serve.expect_exit(DEADLINE)
            };
            assert_eq!(
                status.code(),
                Some(0),
                "attempt {attempt}: {signal} right after startup: {status:?}\n{}",
                serve.stderr()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SIGHUP reload
// ---------------------------------------------------------------------------------------------

/// The log line of a reload that was refused.
const KEPT: &str = "reload failed; keeping the running policy";

/// Writes `text` to `policy` (removes it for `None`), sends SIGHUP and returns the first log
/// line containing `outcome`.
fn reload(serve: &mut Serve, policy: &Path, text: Option<&str>, outcome: &str) -> String {
    match text {
        Some(text) => std::fs::write(policy, text).unwrap(),
        None => std::fs::remove_file(policy).unwrap(),
    }
    serve.signal(Signal::SIGHUP);
    serve.wait_for_line(outcome)
}

/// The reload test's policies: the first, the tightened one, and one that would open
/// allowed.test again and deny other.test.
const OPEN: &str =
    "\"allowed.test\" = \"allow\"\n\"other.test\" = \"allow\"\n\"denied.test\" = \"deny\"";
const TIGHT: &str = "\"allowed.test\" = \"deny\"\n\"other.test\" = \"allow\"";
const FLIPPED: &str = "\"allowed.test\" = \"allow\"\n\"other.test\" = \"deny\"";

/// The first reply to a GET of `authority` that is not a `200`, or the last one at the deadline:
/// a reload runs on the server's own task, so the new policy decides a moment after SIGHUP.
fn first_refusal(serve: &Serve, authority: &str) -> Reply {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let reply = proxy_get(serve.http, authority);
        if reply.status != 200 || Instant::now() >= deadline {
            return reply;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `egress_reloads_total` with `result="ok"` and with `result="error"`, and the `/metrics` text.
fn reload_counts(admin: SocketAddr) -> (Option<f64>, Option<f64>, String) {
    let metrics = admin_get(admin, "/metrics");
    assert_eq!(metrics.status, 200);
    let count = |result| sample(&metrics.body, "egress_reloads_total", &[("result", result)]);
    let (ok, error) = (count("ok"), count("error"));
    (ok, error, metrics.body)
}

#[test]
fn sighup_reload_tightens_the_policy_and_a_broken_file_keeps_it() {
    let dir = Dir::new();
    let dns = fake_dns();
    let origin = HttpOrigin::start();
    let at = |host: &str| format!("{host}:{}", origin.addr.port());
    let policy = dir.write("policy.toml", &policy_text(&dns, "", OPEN));
    // Without the file watch, which would reload each write too and add to the counts.
    let mut serve = Serve::start(&policy, &["--no-watch"], &dir.runtime());
    // What a refused reload leaves: the tightened policy of the first reload.
    let kept = |serve: &Serve| {
        let still = proxy_get(serve.http, &at("allowed.test"));
        assert_eq!(still.status, 403);
        assert_eq!(still.header("x-proxy-reason"), Some("deny-rule"));
        assert_eq!(proxy_get(serve.http, &at("other.test")).status, 200);
    };

    let ok = proxy_get(serve.http, &at("allowed.test"));
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.body.starts_with("origin saw GET"), "{ok:?}");
    assert_eq!(origin.request_count(), 1);

    // Tighten: allowed.test is now denied by a rule; other.test stays allowed.
    std::fs::write(&policy, policy_text(&dns, "", TIGHT)).unwrap();
    serve.signal(Signal::SIGHUP);
    let denied = first_refusal(&serve, &at("allowed.test"));
    assert_eq!(denied.status, 403, "{denied:?}\n{}", serve.stderr());
    assert_eq!(denied.header("x-proxy-reason"), Some("deny-rule"));
    assert_eq!(denied.header("x-proxy-error"), Some("blocked-by-denylist"));
    assert!(denied.body.contains("allowed.test"), "{denied:?}");
    serve.wait_for_line("policy reloaded");
    let before = origin.request_count();
    assert_eq!(proxy_get(serve.http, &at("other.test")).status, 200);
    assert_eq!(
        origin.request_count(),
        before + 1,
        "only other.test arrived"
    );

    // Broken: an unknown key. Had it been applied, allowed.test would pass and other.test
    // would be denied.
    let flipped = policy_text(&dns, "", FLIPPED);
    let broken = format!(
        "enabled = true\nbogus_key = 1\n{}",
        flipped.trim_start_matches("enabled = true\n")
    );
    let failed = reload(&mut serve, &policy, Some(&broken), KEPT);
    assert!(failed.contains(" ERROR "), "{failed}");
    let location = format!("{}:2:1: ", policy.display());
    assert!(
        failed.contains(&location),
        "the error names {location:?}: {failed}"
    );
    assert!(failed.contains("bogus_key"), "{failed}");
    kept(&serve);

    // A file that switches the policy off is refused like a broken one (start-up refuses it).
    let off = flipped.replace("enabled = true", "enabled = false");
    let failed = reload(&mut serve, &policy, Some(&off), KEPT);
    assert!(failed.contains("not enabled"), "{failed}");
    kept(&serve);

    // A syntax error and a missing file are refused the same way.
    let failed = reload(&mut serve, &policy, Some("[domains\n"), KEPT);
    assert!(
        failed.contains(&format!("{}:1:", policy.display())),
        "{failed}"
    );
    let failed = reload(&mut serve, &policy, None, KEPT);
    assert!(failed.contains(&policy.display().to_string()), "{failed}");
    kept(&serve);
    assert!(
        serve.try_wait().is_none(),
        "a bad reload must not stop serve"
    );

    // The reload counters of this process: one ok, four errors.
    let (ok, error, metrics) = reload_counts(serve.admin);
    assert_eq!((ok, error), (Some(1.0), Some(4.0)), "{metrics}");

    // A good file again is picked up again.
    reload(
        &mut serve,
        &policy,
        Some(&allowed_only(&dns)),
        "policy reloaded",
    );
    assert_eq!(proxy_get(serve.http, &at("allowed.test")).status, 200);
    let other = proxy_get(serve.http, &at("other.test"));
    assert_eq!(other.status, 403);
    assert_eq!(other.header("x-proxy-reason"), Some("not-allowed"));

    serve.stop();
}

// ---------------------------------------------------------------------------------------------
// SIGTERM drain
// ---------------------------------------------------------------------------------------------

#[test]
fn sigterm_stops_accepting_and_drains_open_tunnels() {
    let dir = Dir::new();
    let dns = fake_dns();
    let echo_server = TcpEcho::start();
    let origin = HttpOrigin::start();
    let config = loopback_policy(&dir, &dns, "");
    let mut serve = Serve::start(&config, &[], &dir.runtime());
    let socks = serve.socks.unwrap();

    let mut http_tunnel = connect_tunnel(serve.http, &echo_server.addr.to_string());
    echo(&mut http_tunnel, b"before, over CONNECT");
    let mut socks_tunnel = socks_tunnel(socks, echo_server.addr);
    echo(&mut socks_tunnel, b"before, over SOCKS5");
    // An idle keep-alive forward-proxy connection must not hold up the shutdown.
    let mut keep_alive = connect(serve.http);
    let authority = origin.addr.to_string();
    keep_alive
        .write_all(
            format!("GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    assert_eq!(read_reply(&mut keep_alive, false).status, 200);

    let sent = Instant::now();
    serve.signal(Signal::SIGTERM);
    serve.wait_for_line("shutting down: no longer accepting connections");
    wait_refused(serve.http, "the HTTP proxy");
    wait_refused(socks, "the SOCKS5 proxy");
    wait_refused(serve.admin, "the admin API");

    // The idle keep-alive connection is closed by the proxy.
    let mut rest = Vec::new();
    match keep_alive.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest)),
        Err(e) => assert_ne!(
            e.kind(),
            ErrorKind::WouldBlock,
            "the idle connection stayed open"
        ),
    }

    // The tunnels still work, and the process waits for them.
    echo(&mut http_tunnel, b"during the drain, over CONNECT");
    echo(&mut socks_tunnel, b"during the drain, over SOCKS5");
    assert!(serve.try_wait().is_none(), "exited with tunnels open");
    drop(http_tunnel);
    echo(&mut socks_tunnel, b"one tunnel left");
    thread::sleep(Duration::from_millis(200));
    assert!(
        serve.try_wait().is_none(),
        "exited with the SOCKS5 tunnel open:\n{}",
        serve.stderr()
    );
    drop(socks_tunnel);

    // The last tunnel closed: out well before the grace period.
    let status = serve.expect_exit(GRACE / 2);
    assert_eq!(status.code(), Some(0), "{}", serve.stderr());
    assert!(sent.elapsed() < GRACE / 2, "{:?}", sent.elapsed());
    let stderr = serve.stderr();
    assert!(!stderr.contains("deadline reached"), "{stderr}");
    assert_eq!(echo_server.connections(), 2);
}

#[test]
fn sigterm_gives_up_on_a_tunnel_that_stays_open_after_the_grace() {
    let dir = Dir::new();
    let dns = fake_dns();
    let echo_server = TcpEcho::start();
    let config = loopback_policy(&dir, &dns, "");
    let mut serve = Serve::start(&config, &[], &dir.runtime());

    let mut tunnel = connect_tunnel(serve.http, &echo_server.addr.to_string());
    echo(&mut tunnel, b"before");
    let sent = Instant::now();
    serve.signal(Signal::SIGTERM);
    serve.wait_for_line("shutting down: no longer accepting connections");
    wait_refused(serve.http, "the HTTP proxy");

    // Not out in the first second; the tunnel still echoes.
    thread::sleep(Duration::from_secs(1).saturating_sub(sent.elapsed()));
    assert!(serve.try_wait().is_none(), "exited within a second");
    echo(&mut tunnel, b"one second into the drain");

    // Out on its own after the grace, with a warning, and exit status 0.
    let margin = Duration::from_secs(5);
    let status = serve.expect_exit(GRACE + margin - sent.elapsed().min(GRACE));
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "{}", serve.stderr());
    assert!(
        took >= GRACE - Duration::from_millis(500),
        "exited after {took:?}, before the {GRACE:?} grace"
    );
    assert!(took <= GRACE + margin, "{took:?}");
    let warning = serve.wait_for_line("shutdown deadline reached");
    assert!(warning.contains("open=1"), "{warning}");

    // The tunnel was closed with the process.
    tunnel.write_all(b"x").ok();
    let mut buf = [0u8; 16];
    match tunnel.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "the tunnel still answers"),
        Err(e) => assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "the tunnel is still open"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Open tunnels after a reload
// ---------------------------------------------------------------------------------------------

/// Issue 11 item 15: a reload, or `POST /mode`, re-decides every open CONNECT and SOCKS5
/// tunnel (the name and the address it was pinned to) and closes the ones the new policy
/// denies, each with an audit close line saying why; the others live on.
#[test]
fn reload_and_mode_switch_close_the_open_tunnels_they_deny() {
    let dir = Dir::new();
    let dns = fake_dns();
    let echo_server = TcpEcho::start();
    let port = echo_server.addr.port();
    let domains = "\"allowed.test\" = \"allow\"\n\"other.test\" = \"allow\"";
    let config = dir.write("policy.toml", &tunnel_policy(&dns, true, domains));
    let audit = dir.path("audit.jsonl");
    let mut serve = Serve::start(
        &config,
        &["--audit-log", audit.to_str().unwrap()],
        &dir.runtime(),
    );

    // Denied by a rule after the reload.
    let mut by_rule = connect_tunnel(serve.http, &format!("allowed.test:{port}"));
    echo(&mut by_rule, b"allowed.test");
    // Still allowed by name, but pinned to 127.0.0.1, which the new policy no longer opens.
    let mut by_address = connect_tunnel(serve.http, &format!("other.test:{port}"));
    echo(&mut by_address, b"other.test");
    // An exact IP allow: survives the reload, not the switch to limited mode.
    let mut survivor = socks_tunnel(serve.socks.unwrap(), echo_server.addr);
    echo(&mut survivor, b"127.0.0.1");

    let tightened = "\"allowed.test\" = \"deny\"\n\"other.test\" = \"allow\"";
    std::fs::write(&config, tunnel_policy(&dns, false, tightened)).unwrap();
    serve.signal(Signal::SIGHUP);
    serve.wait_for_line("policy reloaded");
    expect_closed(&mut by_rule, "the tunnel to allowed.test");
    expect_closed(&mut by_address, "the tunnel to other.test");
    echo(&mut survivor, b"still allowed after the reload");

    let reply = admin_post(
        serve.admin,
        &dir.runtime(),
        "/mode",
        r#"{"mode": "limited"}"#,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    expect_closed(&mut survivor, "the SOCKS5 tunnel in limited mode");

    let metrics = admin_get(serve.admin, "/metrics").body;
    let revoked = |protocol: &str, reason: &str| {
        sample(
            &metrics,
            "egress_tunnels_revoked_total",
            &[("protocol", protocol), ("reason", reason)],
        )
    };
    assert_eq!(revoked("connect", "deny-rule"), Some(1.0), "{metrics}");
    assert_eq!(revoked("connect", "dns-non-public:loopback"), Some(1.0));
    assert_eq!(revoked("socks-tcp", "mitm-required"), Some(1.0));

    // The close lines are written as the relays end: poll for all three.
    let is_close = |v: &Value| v["event"] == "close";
    let (_, lines) = audit_when(&audit, |lines| {
        lines.iter().filter(|v| is_close(v)).count() >= 3
    });
    let closes: Vec<Value> = lines.into_iter().filter(is_close).collect();
    let close = |host: &str, protocol: &str| -> &Value {
        closes
            .iter()
            .find(|v| v["host"] == host && v["protocol"] == protocol)
            .unwrap_or_else(|| panic!("no close line for {host}: {closes:#?}"))
    };
    let line = close("allowed.test", "connect");
    assert_eq!(line["closed_by"], "policy-reload", "{line}");
    assert_eq!(line["reason"], "deny-rule", "{line}");
    assert_eq!(line["rule"], "allowed.test", "{line}");
    assert_eq!(line["bytes_up"], 12, "{line}");
    let line = close("other.test", "connect");
    assert_eq!(line["closed_by"], "policy-reload", "{line}");
    assert_eq!(line["reason"], "dns-non-public:loopback", "{line}");
    let line = close("127.0.0.1", "socks-tcp");
    assert_eq!(line["closed_by"], "policy-reload", "{line}");
    assert_eq!(line["reason"], "mitm-required", "{line}");
    assert_eq!(line["port"], port, "{line}");

    serve.stop();
}

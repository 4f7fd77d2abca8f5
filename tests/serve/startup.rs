//! `egress-proxy serve` starting up (SPEC sections 3 and 7): one log line per listener, where
//! the listeners come from, and the startup errors (a disabled policy, bad limits, non-loopback
//! listeners, a port in use), each with its exit code and one line.
//!
//! Everything stays on loopback: listeners on 127.0.0.1, names answered by a fake DNS server
//! with 127.0.0.1 (see `support/serve.rs`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::serve::{
    admin_get, allowed_only, command, connect, ephemeral_args, fake_dns, free_port, policy_text,
    proxy_get, start_failure, Dir, KillOnDrop, Serve, DEADLINE, EPHEMERAL,
};
use crate::support::bin::BIN;

// ---------------------------------------------------------------------------------------------
// Startup
// ---------------------------------------------------------------------------------------------

#[test]
fn startup_logs_one_line_per_listener_and_sigint_stops_it() {
    let dir = Dir::new();
    let dns = fake_dns();
    let config = dir.write("p.toml", &allowed_only(&dns));
    let mut serve = Serve::start(&config, &[], &dir.runtime());

    let socks = serve.socks.expect("socks5 startup line");
    let addrs = [serve.http, socks, serve.admin];
    for addr in addrs {
        assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST, "{addr}");
        assert_ne!(addr.port(), 0, "the log names the bound port, not :0");
    }
    assert!(
        addrs[0] != addrs[1] && addrs[1] != addrs[2] && addrs[0] != addrs[2],
        "{addrs:?}"
    );
    let stderr = serve.stderr();
    let startup: Vec<&str> = stderr.lines().filter(|l| l.contains("listening")).collect();
    assert_eq!(startup.len(), 3, "one line per listener:\n{stderr}");
    assert!(
        startup[1].contains("udp=\"with UDP\""),
        "the SOCKS5 line says whether UDP is on: {}",
        startup[1]
    );
    assert!(
        stderr.lines().all(|l| l.contains(" INFO ")),
        "nothing but info lines at startup:\n{stderr}"
    );
    // Each listener is the one its line names.
    assert_eq!(admin_get(serve.admin, "/health").status, 200);
    let denied = proxy_get(serve.http, "denied.test");
    assert_eq!(denied.status, 403);
    assert_eq!(denied.header("x-proxy-reason"), Some("not-allowed"));
    let mut s = connect(socks);
    s.write_all(&[5, 1, 0]).unwrap();
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).unwrap();
    assert_eq!(choice, [5, 0]);
    drop(s);

    serve.signal(Signal::SIGINT);
    let status = serve.expect_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", serve.stderr());
    let stderr = serve.stderr();
    assert!(
        stderr.contains("shutting down: no longer accepting connections"),
        "{stderr}"
    );
    assert!(!stderr.contains("deadline reached"), "{stderr}");
}

#[test]
fn json_log_format_startup_lines() {
    let dir = Dir::new();
    let dns = fake_dns();
    let config = dir.write("p.toml", &allowed_only(&dns));
    let mut args = vec!["--config", config.to_str().unwrap(), "--log-format", "json"];
    args.extend_from_slice(EPHEMERAL);
    let mut child = KillOnDrop(command(&args, &dir.runtime()).spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();
    let lines = BufReader::new(stderr).lines();
    let mut messages = Vec::new();
    let (send, recv) = mpsc::channel();
    thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if send.send(line).is_err() {
                return;
            }
        }
    });
    // Every startup line is JSON; those with an `addr` are the three listeners, the admin
    // API's last. (The file watch's line has no `addr`.)
    while messages.len() < 3 {
        let line = recv
            .recv_timeout(DEADLINE)
            .expect("three JSON startup lines with an addr");
        let value: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        assert_eq!(value["level"], "INFO", "{line}");
        let Some(addr) = value["fields"]["addr"].as_str() else {
            continue;
        };
        let addr: SocketAddr = addr.parse().unwrap();
        assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(addr.port(), 0);
        messages.push(value["fields"]["message"].as_str().unwrap().to_string());
    }
    assert_eq!(messages[0], "http proxy listening");
    assert_eq!(messages[1], "socks5 proxy listening");
    assert!(
        messages[2].starts_with("admin API listening"),
        "{messages:?}"
    );
}

#[test]
fn socks5_disabled_means_no_socks5_listener_line() {
    let dir = Dir::new();
    let dns = fake_dns();
    let config = dir.write(
        "p.toml",
        &policy_text(
            &dns,
            "enable_socks5 = false",
            "\"allowed.test\" = \"allow\"",
        ),
    );
    let mut serve = Serve::start(&config, &[], &dir.runtime());
    let stderr = serve.stderr();
    assert_eq!(serve.socks, None, "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.contains("listening")).count(),
        2,
        "{stderr}"
    );
    serve.stop();
}

/// Without listen flags the listeners come from the file (`proxy_url`, `socks_url`,
/// `admin_url`); the requirements' `http_port`/`socks_port` win over both the file and the
/// `--http-listen` flag.
#[test]
fn listeners_come_from_the_config_and_requirements_ports_win() {
    let dir = Dir::new();
    let dns = fake_dns();
    for _ in 0..5 {
        let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < ports.len() {
            continue;
        }
        let listeners = format!(
            "proxy_url = \"http://127.0.0.1:{}\"\nsocks_url = \"socks5://127.0.0.1:{}\"\n\
             admin_url = \"http://127.0.0.1:{}\"",
            ports[0], ports[1], ports[2]
        );
        let config = dir.write(
            "p.toml",
            &policy_text(&dns, &listeners, "\"allowed.test\" = \"allow\""),
        );
        let config = config.to_str().unwrap();

        // The file alone.
        let serve = Serve::spawn(command(&["--config", config], &dir.runtime()));
        let mut serve = match serve {
            Ok(serve) => serve,
            Err(f) if f.code == Some(1) && f.stderr.contains("cannot listen") => continue,
            Err(f) => panic!("{f:?}"),
        };
        let want = |p: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
        assert_eq!(serve.http, want(ports[0]));
        assert_eq!(serve.socks, Some(want(ports[1])));
        assert_eq!(serve.admin, want(ports[2]));
        serve.stop();
        drop(serve);

        // Requirements ports beat the file and the flag.
        let requirements = dir.write(
            "requirements.toml",
            &format!(
                "[experimental_network]\nhttp_port = {}\nsocks_port = {}\n",
                ports[3], ports[4]
            ),
        );
        let args = [
            "--config",
            config,
            "--requirements",
            requirements.to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:0",
        ];
        let mut serve = match Serve::spawn(command(&args, &dir.runtime())) {
            Ok(serve) => serve,
            Err(f) if f.code == Some(1) && f.stderr.contains("cannot listen") => continue,
            Err(f) => panic!("{f:?}"),
        };
        assert_eq!(serve.http, want(ports[3]));
        assert_eq!(serve.socks, Some(want(ports[4])));
        assert_eq!(serve.admin, want(ports[2]));
        serve.stop();
        return;
    }
    panic!("no free ports after 5 attempts");
}

#[test]
fn disabled_policy_exits_2_with_one_line() {
    let dir = Dir::new();
    let dns = fake_dns();
    let native = dir.write(
        "native.toml",
        &allowed_only(&dns).replace("enabled = true", "enabled = false"),
    );
    // A Codex config.toml without `enabled` is disabled by default.
    let codex = dir.write(
        "config.toml",
        "[features.network_proxy]\nallowed_domains = [\"allowed.test\"]\n",
    );
    for file in [native, codex] {
        let args = ephemeral_args(&file);
        let (code, stderr) = start_failure(&args, &dir.runtime());
        assert_eq!(code, 2, "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains("not enabled"), "{stderr}");
        assert!(stderr.contains("refusing to start"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Limits a listener could not be built with are config errors at their line: before, a huge
/// `max_connections` panicked in `serve` and a huge `max_udp_associations` killed the SOCKS5
/// task after its startup line, so the proxy looked healthy while refusing every client.
#[test]
fn out_of_range_limits_exit_2_with_the_line_not_a_panic() {
    let dir = Dir::new();
    let dns = fake_dns();
    for (key, value, col) in [
        ("max_connections", "18446744073709551615", 19),
        ("max_udp_associations", "2305843009213693952", 24),
        ("header_timeout_ms", "18446744073709551615", 21),
        ("idle_timeout_ms", "18446744073709551615", 19),
    ] {
        let text = format!(
            "{}\n[limits]\n{key} = {value}\n",
            policy_text(
                &dns,
                "enable_socks5_udp = true",
                "\"allowed.test\" = \"allow\""
            )
        );
        let file = dir.write("limits.toml", &text);
        let line = text.lines().position(|l| l.starts_with(key)).unwrap() + 1;
        let args = ephemeral_args(&file);
        let (code, stderr) = start_failure(&args, &dir.runtime());
        assert!(!stderr.contains("panicked"), "{key}: {stderr}");
        assert_eq!(code, 2, "{key}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!(
                "error: {}:{line}:{col}: `[limits] {key}` must be 1-{}",
                file.display(),
                if key.ends_with("_ms") {
                    "604800000"
                } else {
                    "1000000"
                }
            )
        );
    }
}

/// `serve` warns at start when `[admin] token_file` can be read by the group or others.
#[test]
fn a_token_file_others_can_read_is_a_startup_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    let dns = fake_dns();
    let token = dir.write("token", "s3cret-token\n");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
    let extra = format!("[admin]\ntoken_file = {:?}\n", token.display().to_string());
    let text = format!("{}{extra}", allowed_only(&dns));
    let policy = dir.write("policy.toml", &text);
    let mut serve = Serve::start(&policy, &[], &dir.runtime());
    let stderr = serve.stderr();
    let warning = stderr
        .lines()
        .find(|l| l.contains("readable by group or others"))
        .unwrap_or_else(|| panic!("no token file warning:\n{stderr}"));
    assert!(warning.contains(" WARN "), "{warning}");
    assert!(warning.contains("(mode 0640)"), "{warning}");
    assert!(
        !stderr.contains("s3cret-token"),
        "the token was logged:\n{stderr}"
    );
    serve.stop();
}

#[test]
fn non_loopback_listeners_need_the_dangerous_key_and_exit_2() {
    let dir = Dir::new();
    let dns = fake_dns();
    let plain = dir.write("p.toml", &allowed_only(&dns));
    let plain = plain.to_str().unwrap();
    let port = free_port();
    let any = format!("0.0.0.0:{port}");
    let loopback = format!("127.0.0.1:{}", free_port());
    let cases = [
        (
            "--http-listen",
            "proxy_url",
            "dangerously_allow_non_loopback_proxy",
        ),
        (
            "--socks-listen",
            "socks_url",
            "dangerously_allow_non_loopback_proxy",
        ),
        (
            "--admin-listen",
            "admin_url",
            "dangerously_allow_non_loopback_admin",
        ),
    ];
    for (flag, key, dangerous) in cases {
        // The other listeners stay on loopback (ephemeral) so only `flag` is at fault.
        let mut args = vec!["--config", plain];
        for other in ["--http-listen", "--socks-listen", "--admin-listen"] {
            if other != flag {
                args.extend([other, "127.0.0.1:0"]);
            }
        }
        args.extend([flag, any.as_str()]);
        let (code, stderr) = start_failure(&args, &dir.runtime());
        assert_eq!(code, 2, "{flag}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{flag}: {stderr}");
        assert_eq!(
            stderr,
            format!(
                "error: {flag}: `{key}` listens on non-loopback address {any}; \
                 set `{dangerous} = true` to allow it"
            )
        );
    }

    // The same from a file: the error names the file, line and column.
    let from_file = dir.write(
        "nl.toml",
        &policy_text(
            &dns,
            &format!("proxy_url = \"http://{any}\""),
            "\"allowed.test\" = \"allow\"",
        ),
    );
    let args = [
        "--config",
        from_file.to_str().unwrap(),
        "--socks-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let (code, stderr) = start_failure(&args, &dir.runtime());
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let at = format!("error: {}:3:13: ", from_file.display());
    assert!(stderr.starts_with(&at), "{stderr}");
    assert!(
        stderr.contains("dangerously_allow_non_loopback_proxy"),
        "{stderr}"
    );

    // With a Unix socket allowed, even the dangerous key does not open a non-loopback listener.
    let unix = dir.write(
        "unix.toml",
        &policy_text(
            &dns,
            "dangerously_allow_non_loopback_proxy = true\n\
             [unix_sockets]\n\"/tmp/egress-proxy-test.sock\" = \"allow\"",
            "\"allowed.test\" = \"allow\"",
        ),
    );
    let args = [
        "--config",
        unix.to_str().unwrap(),
        "--http-listen",
        any.as_str(),
        "--socks-listen",
        loopback.as_str(),
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let (code, stderr) = start_failure(&args, &dir.runtime());
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("listeners stay on loopback while Unix sockets are allowed"),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_exits_1_with_cannot_listen() {
    let dir = Dir::new();
    let dns = fake_dns();
    let config = dir.write("p.toml", &allowed_only(&dns));
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    for (flag, key) in [
        ("--http-listen", "proxy_url"),
        ("--socks-listen", "socks_url"),
        ("--admin-listen", "admin_url"),
    ] {
        let mut args = vec!["--config", config.to_str().unwrap()];
        for other in ["--http-listen", "--socks-listen", "--admin-listen"] {
            let addr = if other == flag {
                taken.as_str()
            } else {
                "127.0.0.1:0"
            };
            args.extend([other, addr]);
        }
        let (code, stderr) = start_failure(&args, &dir.runtime());
        assert_eq!(code, 1, "{flag}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| !l.contains(" INFO ")).collect();
        assert_eq!(errors.len(), 1, "{flag}: {stderr}");
        assert!(
            errors[0].starts_with(&format!("error: cannot listen on {taken} ({key}): ")),
            "{flag}: {stderr}"
        );
        assert!(
            errors[0].contains("Address already in use"),
            "{flag}: {stderr}"
        );
    }
    drop(held);
}

/// With wildcard listeners the host's own interface addresses reach the proxy too: each of them
/// on a listener port is a self-connection, also for an address added before a reload. Runs in
/// a loopback-only namespace whose `lo` carries the extra addresses a LAN interface would.
#[test]
fn wildcard_listeners_refuse_the_hosts_own_addresses() {
    let dir = Dir::new();
    let config = dir.write(
        "wildcard.toml",
        "proxy_url = 'http://0.0.0.0:3128'\n\
         socks_url = 'socks5://[::]:1080'\n\
         admin_url = 'http://127.0.0.1:8080'\n\
         dangerously_allow_non_loopback_proxy = true\n\
         allowed_domains = ['10.254.0.1', '10.254.0.2', 'fd54::1']\n",
    );
    let script = r#"
ip addr add 10.254.0.1/32 dev lo
ip -6 addr add fd54::1/128 dev lo nodad
"$BIN" serve --config "$CONFIG" 2>"$DIR/serve.log" &
pid=$!
connect() {
  python3 - "$@" <<'PY'
import socket, sys, time
host, port = sys.argv[1], sys.argv[2]
for _ in range(100):
    try:
        s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
        break
    except OSError:
        time.sleep(0.05)
s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(4096)
    if not chunk:
        break
    head += chunk
lines = head.decode().split("\r\n")
reason = [l.split(":", 1)[1].strip() for l in lines if l.lower().startswith("x-proxy-reason:")]
print(f"{host}:{port} {lines[0].split(' ')[1]} {reason[0] if reason else '-'}")
PY
}
connect 10.254.0.1 3128
connect '[fd54::1]' 1080
connect 10.254.0.1 1080
connect 10.254.0.1 9
ip addr add 10.254.0.2/32 dev lo
kill -HUP $pid
for _ in $(seq 100); do grep -q 'policy reloaded' "$DIR/serve.log" && break; sleep 0.05; done
connect 10.254.0.2 3128
kill $pid
"#;
    let (code, out, err) = crate::support::netns::run(
        script,
        &[
            ("BIN", BIN),
            ("CONFIG", config.to_str().unwrap()),
            ("DIR", dir.path("").to_str().unwrap()),
        ],
        60,
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "10.254.0.1:3128 403 self-connection",
            "[fd54::1]:1080 403 self-connection",
            "10.254.0.1:1080 403 self-connection",
            "10.254.0.1:9 502 -",
            "10.254.0.2:3128 403 self-connection",
        ],
        "stderr:\n{err}"
    );
}

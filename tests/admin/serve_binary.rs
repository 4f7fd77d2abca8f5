//! The admin API once through the `serve` binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tokio::time::Instant;

use crate::support::fake_dns::FakeDns;
use crate::support::http::{exchange, IO_TIMEOUT};

/// `serve` generates a token under `$XDG_RUNTIME_DIR`, names the file (never the token) in
/// its startup line, and installs the metrics recorder.
#[test]
fn serve_binary_generates_a_token_and_serves_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let runtime_dir = dir.path().join("run");
    std::fs::create_dir(&runtime_dir).unwrap();
    let dns = FakeDns::start(vec![]);
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        format!("enabled = true\n[dns]\nservers = [\"{}\"]\n", dns.addr),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_egress-proxy"))
        .arg("serve")
        .arg("--config")
        .arg(&policy)
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--socks-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", "127.0.0.1:0"])
        .env("XDG_RUNTIME_DIR", &runtime_dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let mut child = Kill(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut seen = Vec::new();
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("admin API listening") => break line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no admin startup line; stderr so far: {seen:#?}"),
        }
    };
    let field = |name: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
            .trim_matches('"')
            .to_string()
    };
    let addr: SocketAddr = field("addr").parse().unwrap();
    let token_file = PathBuf::from(field("token_file"));
    assert_eq!(
        token_file,
        runtime_dir.join("egress-proxy").join("admin-token")
    );
    let token = egress_proxy::token::read_token_file(&token_file).unwrap();
    assert!(!line.contains(&*token), "the token was logged: {line}");
    assert_mode(&token_file, 0o600);
    assert_mode(token_file.parent().unwrap(), 0o700);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let metrics = exchange(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            false,
        )
        .await;
        assert_eq!(metrics.status, 200);
        let post = |token: String| {
            format!(
                "POST /mode HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
                 Content-Length: 19\r\nConnection: close\r\n\r\n{{\"mode\": \"limited\"}}"
            )
        };
        assert_eq!(
            exchange(addr, &post("nope".into()), false).await.status,
            401
        );
        let reply = exchange(addr, &post(token.to_string()), false).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    });

    // SIGTERM stops it promptly.
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "serve did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_mode(path: &Path, mode: u32) {
    let actual = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(actual, mode, "{}", path.display());
}

//! `egress-proxy serve --audit-log FILE` (SPEC section 7): one decision line per request, one
//! close line per tunnel with its byte counts, and never a query string or a header value.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener};
use std::thread;

use serde_json::Value;

use crate::serve::{
    audit_when, connect, connect_tunnel, fake_dns, loopback_policy, read_reply, Dir, Serve,
    IO_TIMEOUT,
};

// ---------------------------------------------------------------------------------------------
// Audit log
// ---------------------------------------------------------------------------------------------

/// An origin for one connection: reads exactly `up` bytes, answers `down` bytes, then waits for
/// the client's EOF and closes, so the tunnel's byte counts differ each way.
fn sized_origin(up: usize, down: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let mut got = vec![0; up];
        if stream.read_exact(&mut got).is_err() {
            return;
        }
        if stream.write_all(&vec![b'd'; down]).is_err() {
            return;
        }
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    });
    addr
}

#[test]
fn audit_log_file_has_decisions_and_the_tunnel_close() {
    const UP: usize = 1000;
    const DOWN: usize = 300;
    let dir = Dir::new();
    let dns = fake_dns();
    let config = loopback_policy(&dir, &dns, "\"denied.test\" = \"deny\"");
    let audit = dir.path("audit.jsonl");
    let mut serve = Serve::start(
        &config,
        &["--audit-log", audit.to_str().unwrap()],
        &dir.runtime(),
    );
    let target = sized_origin(UP, DOWN);

    let mut tunnel = connect_tunnel(serve.http, &target.to_string());
    tunnel.write_all(&[b'u'; UP]).unwrap();
    let mut down = vec![0; DOWN];
    tunnel.read_exact(&mut down).unwrap();
    tunnel.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    tunnel.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(tunnel);

    // A denied request carrying a query string and a secret header value.
    let mut stream = connect(serve.http);
    stream
        .write_all(
            b"GET http://denied.test:8080/x?token=s3cr3t-query HTTP/1.1\r\n\
              Host: denied.test:8080\r\nAuthorization: Bearer s3cr3t-header\r\n\
              Connection: close\r\n\r\n",
        )
        .unwrap();
    let denied = read_reply(&mut stream, false);
    assert_eq!(denied.status, 403);
    assert_eq!(denied.header("x-proxy-reason"), Some("deny-rule"));

    // The close line is written when the relay ends, after the client saw EOF: poll for it.
    let (text, lines) = audit_when(&audit, |lines| lines.len() >= 3);
    serve.stop();
    let after_exit = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(text, after_exit, "nothing more was written");

    let events =
        |kind: &str| -> Vec<&Value> { lines.iter().filter(|v| v["event"] == kind).collect() };
    let decisions = events("decision");
    let closes = events("close");
    assert_eq!(decisions.len(), 2, "{text}");
    assert_eq!(closes.len(), 1, "{text}");
    assert_eq!(lines.len(), 3, "{text}");

    let allowed = decisions[0];
    assert_eq!(allowed["protocol"], "connect", "{text}");
    assert_eq!(allowed["verdict"], "allow");
    assert_eq!(allowed["reason"], "allowed");
    assert_eq!(allowed["rule"], "127.0.0.1");
    assert_eq!(allowed["host"], "127.0.0.1");
    assert_eq!(allowed["port"], target.port());
    assert_eq!(allowed["ip"], "127.0.0.1");
    assert_eq!(allowed["class"], "loopback");
    assert!(allowed["time"].is_string(), "{allowed}");
    let client: SocketAddr = allowed["client"].as_str().unwrap().parse().unwrap();
    assert_eq!(client.ip(), Ipv4Addr::LOCALHOST);

    let blocked = decisions[1];
    assert_eq!(blocked["protocol"], "http", "{text}");
    assert_eq!(blocked["verdict"], "block");
    assert_eq!(blocked["reason"], "deny-rule");
    assert_eq!(blocked["rule"], "denied.test");
    assert_eq!(blocked["host"], "denied.test");
    assert_eq!(blocked["port"], 8080);
    assert_ne!(blocked["id"], allowed["id"]);

    let close = closes[0];
    assert_eq!(close["id"], allowed["id"], "{text}");
    assert_eq!(close["protocol"], "connect");
    assert_eq!(close["host"], "127.0.0.1");
    assert_eq!(close["port"], target.port());
    assert_eq!(close["client"], allowed["client"]);
    assert_eq!(close["bytes_up"], UP as u64, "{close}");
    assert_eq!(close["bytes_down"], DOWN as u64, "{close}");
    assert!(close["duration_ms"].is_u64(), "{close}");
    assert_eq!(close["idle_timeout"], false);

    // Never query strings or header values, in the audit log or the text log; and the audit
    // lines go to the file, not to stderr.
    let stderr = serve.stderr();
    for secret in ["s3cr3t", "token="] {
        assert!(!text.contains(secret), "{secret} in the audit log: {text}");
        assert!(!stderr.contains(secret), "{secret} in the log: {stderr}");
    }
    assert!(!stderr.contains("\"event\""), "{stderr}");
}

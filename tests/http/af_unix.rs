//! Requests the HTTP listener forwards to Unix sockets (`x-unix-socket`): the allow and deny
//! lists judge the socket a path finally names, however it is linked or swapped.

use std::sync::Arc;
use std::thread;
use std::time::Duration;
use tokio::time::Instant;

use crate::support::curl::{self, Via};
use crate::support::harness::{Proxy, ProxyBuilder};
use crate::support::http::blocking::raw_request;
use crate::support::http_world::{assert_denial_body, assert_verdict};
use crate::support::reply::Reply;
use crate::support::unix_origin::UnixHttpOrigin;
use egress_proxy::policy::Mode;

struct UnixWorld {
    proxy: Proxy,
    ok: UnixHttpOrigin,
    denied: UnixHttpOrigin,
    unlisted: UnixHttpOrigin,
    root: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// `ok.sock` allowed, `denied.sock` denied, `unlisted.sock` in neither list, plus
/// `alias-ok.sock` → ok, `alias-denied.sock` → denied (listed as allowed!) and
/// `innocent.sock` → denied (unlisted).
fn unix_world(customize: impl FnOnce(ProxyBuilder) -> ProxyBuilder) -> UnixWorld {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let ok = UnixHttpOrigin::start(&root.join("ok.sock"));
    let denied = UnixHttpOrigin::start(&root.join("denied.sock"));
    let unlisted = UnixHttpOrigin::start(&root.join("unlisted.sock"));
    std::os::unix::fs::symlink(&ok.path, root.join("alias-ok.sock")).unwrap();
    std::os::unix::fs::symlink(&denied.path, root.join("alias-denied.sock")).unwrap();
    std::os::unix::fs::symlink(&denied.path, root.join("innocent.sock")).unwrap();
    let proxy = customize(
        Proxy::builder()
            .allow_unix(root.join("ok.sock"))
            .deny_unix(root.join("denied.sock"))
            .allow_unix(root.join("alias-denied.sock")),
    )
    .start_blocking();
    UnixWorld {
        proxy,
        ok,
        denied,
        unlisted,
        root,
        _dir: dir,
    }
}

impl UnixWorld {
    /// `curl -x PROXY -H 'x-unix-socket: ROOT/SOCKET' EXTRA http://localhost/x`.
    fn curl(&self, socket: &str, extra: &[&str]) -> Reply {
        let header = format!("x-unix-socket: {}", self.root.join(socket).display());
        let args = [&["-H", header.as_str()], extra, &["http://localhost/x"]].concat();
        curl::reply(Via::Proxy(&self.proxy.url()), &args)
    }
}

#[test]
fn an_allowed_unix_socket_nobody_listens_on_is_a_502_naming_the_path() {
    let u = unix_world(|b| b);
    let gone = u.root.join("gone.sock");
    // A socket file with no listener behind it: connecting is refused.
    drop(std::os::unix::net::UnixListener::bind(&gone).unwrap());
    let u = UnixWorld {
        proxy: Proxy::builder().allow_unix(&gone).start_blocking(),
        ..u
    };
    let reply = u.curl("gone.sock", &[]);
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(reply.header("x-proxy-error"), Some("connect-refused"));
    assert_eq!(
        reply.body,
        format!(
            "egress-proxy: cannot connect to unix:{0}: connection refused by unix:{0}\n",
            gone.display()
        )
    );
}

#[test]
fn allowed_unix_socket_is_used_and_the_header_is_not_forwarded() {
    let u = unix_world(|b| b);
    let reply = u.curl("ok.sock", &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "unix origin saw GET /x body=0");
    let head = u.ok.requests()[0].to_ascii_lowercase();
    assert!(!head.contains("x-unix-socket"), "{head}");
    assert!(head.contains("\r\nhost: localhost"), "{head}");
    // A symlink to an allowed socket is judged by where it points.
    let reply = u.curl("alias-ok.sock", &["-d", "abc"]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "unix origin saw POST /x body=3");
    assert_eq!(u.ok.request_count(), 2);
}

#[test]
fn unlisted_unix_socket_is_403_unix_socket_denied() {
    let u = unix_world(|b| b);
    let reply = u.curl("unlisted.sock", &[]);
    assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    assert_denial_body(&reply, "unlisted.sock", "unix-socket-denied", "rule: none");
    let reply = u.curl("denied.sock", &[]);
    assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    assert!(reply.body.contains("rule deny"), "{reply:?}");
    // A relative path is never allowed.
    let reply = raw_request(
        u.proxy.addr,
        b"GET http://localhost/x HTTP/1.1\r\nHost: localhost\r\nx-unix-socket: ok.sock\r\n\r\n",
    );
    assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    assert_eq!(u.unlisted.request_count(), 0);
    assert_eq!(u.denied.request_count(), 0);
    assert_eq!(u.ok.request_count(), 0);
}

#[test]
fn symlink_to_a_denied_unix_socket_stays_denied() {
    let u = unix_world(|b| b);
    // Unlisted link → denied socket.
    let reply = u.curl("innocent.sock", &[]);
    assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    // Even a link that is itself on the allow list.
    let reply = u.curl("alias-denied.sock", &[]);
    assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    assert_eq!(u.denied.request_count(), 0);
}

#[test]
fn a_hard_link_to_a_denied_unix_socket_at_an_allowed_path_stays_denied() {
    let u = unix_world(|b| b);
    // A client that can write next to the allowed socket swaps it for another name of the
    // denied one: same text as the allow entry, no symlink anywhere.
    std::fs::remove_file(&u.ok.path).unwrap();
    std::fs::hard_link(&u.denied.path, &u.ok.path).unwrap();
    let reply = u.curl("ok.sock", &[]);
    assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    let deny_entry = u.denied.path.display().to_string();
    assert_denial_body(&reply, "ok.sock", "unix-socket-denied", &deny_entry);
    assert_eq!(u.denied.connection_count(), 0);
}

#[test]
fn swapping_an_allowed_unix_socket_for_a_symlink_never_reaches_the_denied_one() {
    let u = unix_world(|b| b);
    // `ok.sock` flips between a hard link to the allowed socket and a symlink to the denied one,
    // each swap one atomic rename, as fast as it can.
    let inode = u.root.join("ok-inode.sock");
    std::fs::hard_link(&u.ok.path, &inode).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, root, allowed) = (Arc::clone(&stop), u.root.clone(), u.ok.path.clone());
        let denied = u.denied.path.clone();
        thread::spawn(move || {
            let (to_ok, to_denied) = (root.join("next-ok"), root.join("next-denied"));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Symlink first: renaming a link over another name of the same file is a no-op.
                std::os::unix::fs::symlink(&denied, &to_denied).unwrap();
                std::fs::rename(&to_denied, &allowed).unwrap();
                std::fs::hard_link(&inode, &to_ok).unwrap();
                std::fs::rename(&to_ok, &allowed).unwrap();
            }
        })
    };
    let request = format!(
        "GET http://localhost/x HTTP/1.1\r\nHost: localhost\r\nx-unix-socket: {}\r\n\
         Connection: close\r\n\r\n",
        u.ok.path.display()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut served, mut refused) = (0, 0);
    for _ in 0..2000 {
        if Instant::now() > deadline || u.denied.connection_count() > 0 {
            break;
        }
        let reply = raw_request(u.proxy.addr, request.as_bytes());
        match reply.status {
            200 => served += 1,
            403 => refused += 1,
            _ => panic!("{reply:?}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    assert_eq!(
        u.denied.connection_count(),
        0,
        "the denied socket was reached ({served} served, {refused} refused)"
    );
    assert!(served > 0, "no request got through ({refused} refused)");
}

#[test]
fn allow_all_unix_sockets_still_denies_every_name_of_a_denied_socket() {
    let u = unix_world(|b| b.allow_all_unix());
    let reply = u.curl("unlisted.sock", &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    // A hard link anywhere on the same file system is the denied socket.
    std::fs::create_dir(u.root.join("elsewhere")).unwrap();
    std::fs::hard_link(&u.denied.path, u.root.join("elsewhere/fresh.sock")).unwrap();
    let reply = u.curl("elsewhere/fresh.sock", &[]);
    assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    assert_eq!(u.denied.connection_count(), 0);
    assert_eq!(u.unlisted.request_count(), 1);
}

#[test]
fn an_allowed_unix_socket_path_that_is_no_socket_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(root.join("file.sock"), "").unwrap();
    std::fs::create_dir(root.join("dir.sock")).unwrap();
    let u = UnixWorld {
        proxy: Proxy::builder()
            .allow_unix(root.join("file.sock"))
            .allow_unix(root.join("dir.sock"))
            .allow_unix(root.join("missing.sock"))
            .start_blocking(),
        ..unix_world(|b| b)
    };
    for name in ["file.sock", "dir.sock", "missing.sock"] {
        let reply = raw_request(
            u.proxy.addr,
            format!(
                "GET http://localhost/x HTTP/1.1\r\nHost: localhost\r\nx-unix-socket: {}\r\n\r\n",
                root.join(name).display()
            )
            .as_bytes(),
        );
        assert_verdict(&reply, 403, "blocked-by-policy", "unix-socket-denied");
    }
}

#[test]
fn unix_socket_requests_obey_limited_mode() {
    let u = unix_world(|b| b.mode(Mode::Limited));
    let reply = u.curl("ok.sock", &["-d", "x"]);
    assert_verdict(
        &reply,
        403,
        "blocked-by-method-policy",
        "method-not-allowed",
    );
    let reply = u.curl("ok.sock", &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(u.ok.request_count(), 1);
}

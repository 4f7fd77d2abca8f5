//! `serve` with `[mitm]`: a reload applies to an intercepted tunnel that is already open. One
//! that adds an http deny rule decides the next request on the kept tunnel; one that denies
//! the host closes the tunnel.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use nix::sys::signal::Signal;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConnection, RootCertStore, StreamOwned};

use crate::serve::{command, connect_tunnel, Dir, Serve, EPHEMERAL, IO_TIMEOUT};
use crate::support::https_origin::{HttpsOrigin, H2_H1};
use crate::support::reply::Reply;
use crate::World;

/// HTTP/1.1 over TLS inside a CONNECT tunnel, trusting only the proxy's CA.
struct Inside {
    tls: StreamOwned<ClientConnection, TcpStream>,
    authority: String,
}

impl Inside {
    fn open(tunnel: TcpStream, ca_pem: &str, name: &str, authority: &str) -> Inside {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_string()).unwrap();
        let conn = ClientConnection::new(Arc::new(config), name).unwrap();
        Inside {
            tls: StreamOwned::new(conn, tunnel),
            authority: authority.to_string(),
        }
    }

    /// `GET path` on the kept connection and its response (the body by `Content-Length`).
    fn get(&mut self, path: &str) -> Reply {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.authority);
        self.tls.write_all(request.as_bytes()).unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            self.tls.read_exact(&mut byte).expect("a response head");
            head.push(byte[0]);
        }
        let mut reply = Reply::from_head(std::str::from_utf8(&head).unwrap());
        let mut body = vec![0; reply.content_length().expect("Content-Length")];
        self.tls.read_exact(&mut body).unwrap();
        reply.body = String::from_utf8(body).unwrap();
        reply
    }

    /// The proxy closed the tunnel: EOF or a reset well within the read timeout.
    fn expect_closed(&mut self) {
        let mut buf = [0u8; 64];
        match self.tls.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("{n} unexpected bytes"),
            Err(e) => assert!(
                !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "the tunnel is still open after {IO_TIMEOUT:?}"
            ),
        }
    }
}

/// An http rule that names `allowed.test` (so full mode intercepts it) and allows it all.
const INSPECT: &str = "[[http_rules]]\nhost = \"allowed.test\"\naction = \"allow\"\n";

/// A `serve` policy allowing `domains`, with [`INSPECT`] and `rules` after `[mitm]`.
fn policy(world: &World, domains: &str, rules: &str) -> String {
    let dns = format!(
        "[dns]\nservers = [\"{}\"]\n\n{INSPECT}\n{rules}",
        world.dns.addr
    );
    world.policy(
        &format!("enabled = true\nallowed_domains = [{domains}]"),
        "",
        &dns,
    )
}

/// `serve` with `text` as its policy and the data directory of `world`; the proxy's CA.
fn serve(world: &World, dir: &Dir, text: &str) -> (Serve, String) {
    let config = dir.write("serve.toml", text);
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(EPHEMERAL);
    let mut cmd = command(&args, &dir.runtime());
    cmd.env("XDG_DATA_HOME", world.files.path("data"));
    let serve = Serve::spawn(cmd).unwrap_or_else(|f| panic!("serve failed: {f:?}"));
    let ca = std::fs::read_to_string(world.files.dir().join("data/egress-proxy/ca.pem"))
        .expect("serve generated its CA at startup");
    (serve, ca)
}

/// Rewrites the policy and reloads with SIGHUP.
fn reload(serve: &mut Serve, dir: &Dir, text: &str) {
    dir.write("serve.toml", text);
    serve.signal(Signal::SIGHUP);
    serve.wait_for_line("policy reloaded");
}

#[test]
fn a_reload_decides_the_next_request_of_a_kept_tunnel_and_closes_it_when_the_host_is_denied() {
    let world = World::new();
    let dir = Dir::new();
    let origin = HttpsOrigin::start(&world.origin_ca, &["allowed.test"], H2_H1);
    let authority = format!("allowed.test:{}", origin.port());
    let allowed = "\"allowed.test\"";
    let (mut serve, ca) = serve(&world, &dir, &policy(&world, allowed, ""));
    let tunnel = connect_tunnel(serve.http, &authority);
    let mut inside = Inside::open(tunnel, &ca, "allowed.test", &authority);
    assert_eq!(inside.get("/one").status, 200);

    let deny_two =
        "[[http_rules]]\nhost = \"allowed.test\"\npaths = [\"/two\"]\naction = \"deny\"\n";
    reload(&mut serve, &dir, &policy(&world, allowed, deny_two));
    let two = inside.get("/two");
    assert_eq!(two.verdict().2, Some("deny-rule"), "{two:?}");
    let three = inside.get("/three");
    assert_eq!(three.body, "origin saw GET /three HTTP/2.0", "{three:?}");
    assert_eq!(origin.lines(), ["GET /one", "GET /three"]);

    reload(&mut serve, &dir, &policy(&world, "", ""));
    inside.expect_closed();
    assert_eq!(origin.lines(), ["GET /one", "GET /three"]);
    serve.stop();
}

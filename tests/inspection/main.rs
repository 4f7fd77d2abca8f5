//! HTTPS inspection end to end: `egress-proxy run` (and `serve`) with `mitm`, real clients
//! (curl, Python, Node, git) that trust only what `run`'s CA variables name, and HTTPS origins
//! on loopback with test CAs of their own (given to the proxy as `[mitm] upstream_ca`). One
//! module per behaviour.
//!
//! Everything stays on loopback: the fake DNS server answers 127.0.0.1 for every `*.test`
//! name the tests use, `allow_local_binding = true` lets the policy decide them, and the
//! generated CA lives under a temporary `XDG_DATA_HOME`. Every run has a deadline.

#[path = "../support/cli.rs"]
mod cli;
#[path = "../support/mod.rs"]
mod support;

mod audit;
mod clients;
mod isolate;
mod limited;
mod reload;
mod rules;
#[path = "../support/serve.rs"]
mod serve;
mod splice;

use std::net::Ipv4Addr;
use std::process::Command;

use cli::Files;
use support::fake_dns::{Answer, FakeDns};
use support::reply::Reply;
use support::run::{command, require_curl, Output, Running};
use support::tls::TestCa;

/// The names the fake DNS server answers, all with 127.0.0.1.
const NAMES: &[&str] = &[
    "allowed.test",
    "api.test",
    "denied.test",
    "spliced.test",
    "wrongname.test",
];

/// The CA variables `run` sets; removed from the tests' own environment so only `run`'s count.
const CA_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
    "CARGO_HTTP_CAINFO",
    "AWS_CA_BUNDLE",
    "DENO_CERT",
];

/// A fake DNS server, a directory for the policy and the data directory, and the origins' CA
/// (written to `origin-ca.pem`).
struct World {
    dns: FakeDns,
    files: Files,
    /// Signs every origin's certificate.
    origin_ca: TestCa,
    origin_ca_pem: String,
}

impl World {
    fn new() -> World {
        require_curl();
        let dns = FakeDns::start(
            NAMES
                .iter()
                .map(|&n| (n, Answer::A(vec![Ipv4Addr::LOCALHOST]))),
        );
        let files = Files::new();
        let origin_ca = TestCa::new();
        let origin_ca_pem = files.write("origin-ca.pem", &origin_ca.pem);
        World {
            dns,
            files,
            origin_ca,
            origin_ca_pem,
        }
    }

    /// A policy: `allow_local_binding`, `top` (the mode, the domains), `[mitm]` trusting the
    /// origins' CA upstream with `mitm` added to the table, then `rest` (`[[http_rules]]`).
    fn policy(&self, top: &str, mitm: &str, rest: &str) -> String {
        format!(
            "allow_local_binding = true\n{top}\n\n[mitm]\nupstream_ca = \"{}\"\n{mitm}\n\n{rest}\n",
            self.origin_ca_pem
        )
    }

    /// [`World::policy`] written to `policy.toml`; its path.
    fn config(&self, top: &str, mitm: &str, rest: &str) -> String {
        self.files
            .write("policy.toml", &self.policy(top, mitm, rest))
    }

    /// `run --config CONFIG --dns-server … EXTRA -- CMD…`, with the data directory (and the
    /// generated CA) and `HOME` in the test's directory, and no CA variable but `run`'s.
    fn command(&self, config: &str, extra: &[&str], cmd: &[&str]) -> Command {
        let dns = self.dns.addr.to_string();
        let mut args = vec!["run", "--config", config, "--dns-server", &dns];
        args.extend_from_slice(extra);
        args.push("--");
        args.extend_from_slice(cmd);
        let mut command = command(&args);
        command
            .env("XDG_DATA_HOME", self.files.path("data"))
            .env("HOME", self.files.dir());
        for var in CA_VARS {
            command.env_remove(var);
        }
        command
    }

    fn run(&self, config: &str, extra: &[&str], cmd: &[&str]) -> Output {
        Running::start(self.command(config, extra, cmd)).finish()
    }

    /// `curl -q -sS -i ARGS` under `run` with `config`; curl finds the proxy and the CA bundle
    /// in the environment `run` gives it, and nothing else.
    fn curl(&self, config: &str, args: &[&str]) -> Output {
        let mut cmd = vec!["curl", "-q", "-sS", "-i", "--max-time", "10"];
        cmd.extend_from_slice(args);
        self.run(config, &[], &cmd)
    }
}

/// The final response curl printed with `-i` (the CONNECT answer skipped); `run` exited 0.
#[track_caller]
fn reply(out: &Output) -> Reply {
    assert_eq!(out.code, 0, "{out:?}");
    support::curl::Output {
        exit: Some(0),
        stdout: out.stdout.clone().into_bytes(),
        stderr: out.stderr.clone(),
    }
    .reply()
}

/// `https://NAME:PORTPATH`.
fn url(name: &str, port: u16, path: &str) -> String {
    format!("https://{name}:{port}{path}")
}

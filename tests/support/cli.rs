//! Helpers for the tests that run a CLI command of the built binary to completion (`check`,
//! `validate`, `run`): policy files in a temporary directory, `check` against a fake DNS
//! server, and the `--json` output taken apart. Included with `#[path]` by the files that use
//! it, so it is not part of `support` itself.

// Every test binary that includes this file uses only some of its helpers.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

use serde_json::Value;

use crate::support::bin::{run, BIN};
use crate::support::fake_dns::FakeDns;

/// A temporary directory for the policy files of one test.
pub struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Files {
        Files {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// Writes `text` to `name` and returns the path as the string the binary will print.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write test file");
        path.to_str().expect("UTF-8 temp path").to_string()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of `name` in the directory, written or not.
    pub fn path(&self, name: &str) -> String {
        let path = self.dir.path().join(name);
        path.to_str().expect("UTF-8 temp path").to_string()
    }
}

/// `check` with the fake server as the only nameserver.
pub fn check(dns: &FakeDns, args: &[&str]) -> (i32, String, String) {
    let server = dns.addr.to_string();
    let mut all = vec!["check", "--dns-server", &server];
    all.extend_from_slice(args);
    run(&all)
}

/// `validate --json ARGS`, which must succeed, parsed.
pub fn validate_json(args: &[&str]) -> Value {
    let mut all = vec!["validate", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// One parsed JSON object per stdout line.
pub fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `(target, verdict, reason)` of every `check --json` line.
pub fn verdicts(stdout: &str) -> Vec<(String, String, String)> {
    json_lines(stdout)
        .iter()
        .map(|v| {
            let s = |k: &str| {
                v[k].as_str()
                    .unwrap_or_else(|| panic!("{k} in {v}"))
                    .to_string()
            };
            (s("target"), s("verdict"), s("reason"))
        })
        .collect()
}

/// `check --no-dns --json ARGS`: the exit code, stderr and [`verdicts`].
pub fn judge(args: &[&str]) -> (i32, String, Vec<(String, String, String)>) {
    let mut all = vec!["check", "--no-dns", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all);
    (code, err, verdicts(&out))
}

/// `rows` as the owned tuples [`verdicts`] returns.
pub fn owned(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

/// `(host, port)` of each `check --json` line.
pub fn hosts(stdout: &str) -> Vec<(Value, Value)> {
    json_lines(stdout)
        .into_iter()
        .map(|v| (v["host"].clone(), v["port"].clone()))
        .collect()
}

/// The `warning: ` lines of `validate`'s text output.
pub fn warning_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect()
}

pub fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Runs the binary, killing it if it is still running after `limit`.
pub fn run_within(args: &[&str], limit: Duration) -> (i32, String, String, Duration) {
    let start = Instant::now();
    let mut child = crate::support::bin::without_proxy_env(&mut Command::new(BIN))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn egress-proxy");
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`egress-proxy {}` still running after {limit:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = start.elapsed();
    let out = child.wait_with_output().expect("collect output");
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    let code = out.status.code().expect("exited, not killed by a signal");
    (code, text(out.stdout), text(out.stderr), elapsed)
}

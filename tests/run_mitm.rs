//! `egress-proxy run` with HTTPS inspection: the child's CA bundle (system roots plus the local
//! CA) named by every CA variable while it runs, removed however the run ends, and nothing of
//! it without `mitm`.

#[path = "support/cli.rs"]
mod cli;
mod support;

use std::path::Path;

use cli::Files;
use support::run::{command, Output, Running};

/// The CA variables, transcribed independently of the implementation's table.
const CA_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
    "CARGO_HTTP_CAINFO",
    "AWS_CA_BUNDLE",
    "DENO_CERT",
    "npm_config_cafile",
    "NPM_CONFIG_CAFILE",
];

/// `run ARGS -- sh -c SCRIPT` with the data directory of `files` and no inherited CA variable.
fn run_sh(files: &Files, args: &[&str], script: &str) -> Output {
    let mut all = vec!["run", "--allow", "x.test"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", "sh", "-c", script]);
    let mut cmd = command(&all);
    cmd.env("XDG_DATA_HOME", files.path("data"));
    for var in CA_VARS {
        cmd.env_remove(var);
    }
    Running::start(cmd).finish()
}

/// A policy file with `mitm = true`.
fn mitm_policy(files: &Files) -> String {
    files.write("mitm.toml", "enabled = true\nmitm = true\n")
}

/// Prints each CA variable as `NAME=VALUE` (empty when unset).
const PRINT_VARS: &str = "for v in SSL_CERT_FILE REQUESTS_CA_BUNDLE CURL_CA_BUNDLE \
    NODE_EXTRA_CA_CERTS GIT_SSL_CAINFO PIP_CERT CARGO_HTTP_CAINFO AWS_CA_BUNDLE DENO_CERT \
    npm_config_cafile NPM_CONFIG_CAFILE; \
    do printf '%s=%s\\n' \"$v\" \"$(printenv \"$v\")\"; done";

#[test]
fn without_mitm_no_ca_variable_is_set() {
    let files = Files::new();
    let out = run_sh(&files, &[], PRINT_VARS);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for var in CA_VARS {
        assert!(
            out.stdout.contains(&format!("{var}=\n")),
            "{var} set: {}",
            out.stdout
        );
    }
    assert!(
        !files.dir().join("data").exists(),
        "a CA was generated without mitm"
    );
}

#[test]
fn the_bundle_holds_the_ca_and_the_system_roots_while_the_child_runs_and_is_gone_after() {
    let files = Files::new();
    let policy = mitm_policy(&files);
    let script = format!(
        "{PRINT_VARS}; echo mode=$(stat -c %a \"$SSL_CERT_FILE\") \
         dir=$(stat -c %a \"$(dirname \"$SSL_CERT_FILE\")\"); cat \"$SSL_CERT_FILE\""
    );
    let out = run_sh(&files, &["--config", &policy], &script);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let bundle = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("SSL_CERT_FILE="))
        .unwrap()
        .to_string();
    assert!(!bundle.is_empty());
    for var in CA_VARS {
        assert!(
            out.stdout.contains(&format!("{var}={bundle}\n")),
            "{var}: {}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("mode=600 dir=700"), "{}", out.stdout);
    let ca = std::fs::read_to_string(files.dir().join("data/egress-proxy/ca.pem")).unwrap();
    assert!(out.stdout.contains(&ca), "the CA is not in the bundle");
    let certs = out.stdout.matches("-----BEGIN CERTIFICATE-----").count();
    let system = std::fs::read_dir("/etc/ssl/certs").map_or(0, |d| d.count());
    if system > 0 {
        assert!(certs > 1, "no system root in the bundle");
    }
    assert!(!Path::new(&bundle).exists(), "the bundle outlived the run");
    assert!(!Path::new(&bundle).parent().unwrap().exists());
}

#[test]
fn the_bundle_is_removed_when_the_child_is_killed() {
    let files = Files::new();
    let policy = mitm_policy(&files);
    let out = run_sh(
        &files,
        &["--config", &policy],
        "echo \"$SSL_CERT_FILE\"; kill -9 $$",
    );
    assert_eq!(out.code, 137, "{}", out.stderr);
    let bundle = out.stdout.trim();
    assert!(bundle.ends_with("ca-bundle.pem"), "{bundle}");
    assert!(!Path::new(bundle).exists());
}

#[test]
fn an_unusable_ca_is_exit_2_and_the_child_never_runs() {
    let files = Files::new();
    let policy = mitm_policy(&files);
    let dir = files.dir().join("data/egress-proxy");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("ca.key")).unwrap();
    let out = run_sh(&files, &["--config", &policy], "echo ran");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("ca.key"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

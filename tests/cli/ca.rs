//! `egress-proxy ca path|show|rotate` through the built binary, with a temporary
//! `XDG_DATA_HOME` (the generated CA) or `[mitm] ca_cert`/`ca_key` (a configured one).

use std::os::unix::fs::PermissionsExt;

use crate::cli::Files;
use crate::support::bin::run_env;

/// Runs `ca ARGS` with the data directory of `files`.
fn ca(files: &Files, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["ca"];
    all.extend_from_slice(args);
    let data = files.path("data");
    run_env(&all, &[("XDG_DATA_HOME", &data), ("HOME", "/nonexistent")])
}

/// The value of `name:` in `ca show`'s output.
fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .trim()
}

#[test]
fn path_names_the_generated_files_without_creating_them() {
    let files = Files::new();
    let (code, out, err) = ca(&files, &["path"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let dir = files.path("data/egress-proxy");
    assert_eq!(out, format!("{dir}/ca.pem\n{dir}/ca.key\n"));
    assert!(!files.dir().join("data").exists());
}

#[test]
fn show_generates_once_then_shows_the_same_ca() {
    let files = Files::new();
    let (code, first, err) = ca(&files, &["show"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(field(&first, "source"), "generated now");
    assert!(
        field(&first, "subject").starts_with("CN=egress-proxy local CA ("),
        "{first}"
    );
    let fingerprint = field(&first, "sha256").to_string();
    assert_eq!(fingerprint.len(), 95, "{fingerprint}");
    assert!(field(&first, "not after").ends_with(" UTC"));
    let (code, second, _) = ca(&files, &["show"]);
    assert_eq!(code, 0);
    assert_eq!(field(&second, "source"), "generated");
    assert_eq!(field(&second, "sha256"), fingerprint);
    let key = files.dir().join("data/egress-proxy/ca.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let (code, pem, _) = ca(&files, &["show", "--pem"]);
    assert_eq!(code, 0);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
    assert_eq!(
        pem,
        std::fs::read_to_string(files.dir().join("data/egress-proxy/ca.pem")).unwrap()
    );
}

#[test]
fn rotate_gives_a_new_fingerprint_and_the_note() {
    let files = Files::new();
    let (_, before, _) = ca(&files, &["show"]);
    let (code, out, err) = ca(&files, &["rotate"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let rotated = field(&out, "sha256");
    assert_ne!(rotated, field(&before, "sha256"));
    assert!(out.contains("children must trust the new CA"), "{out}");
    let (_, after, _) = ca(&files, &["show"]);
    assert_eq!(field(&after, "sha256"), rotated);
}

#[test]
fn a_configured_ca_is_shown_and_never_rotated() {
    let files = Files::new();
    let (_, generated, _) = ca(&files, &["show"]);
    let cert = files.path("data/egress-proxy/ca.pem");
    let key = files.path("data/egress-proxy/ca.key");
    let policy = files.write(
        "policy.toml",
        &format!(
            "enabled = true\n\n[mitm]\nenabled = true\nca_cert = \"{cert}\"\nca_key = \"{key}\"\n"
        ),
    );
    let (code, out, err) = ca(&files, &["show", "--config", &policy]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(field(&out, "source"), "[mitm] ca_cert and ca_key");
    assert_eq!(field(&out, "sha256"), field(&generated, "sha256"));
    let (code, _, err) = ca(&files, &["rotate", "--config", &policy]);
    assert_eq!(code, 2);
    assert!(err.starts_with("error: [mitm] ca_cert is set"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn errors_are_one_line_and_exit_2() {
    let files = Files::new();
    ca(&files, &["show"]);
    let key = files.dir().join("data/egress-proxy/ca.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, out, err) = ca(&files, &["show"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("ca.key") && err.contains("chmod 600"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let (code, _, err) = run_env(&["ca", "show"], &[("XDG_DATA_HOME", ""), ("HOME", "")]);
    assert_eq!(code, 2);
    assert!(err.contains("XDG_DATA_HOME"), "{err}");
}

//! The example policies in `policy/`: every file validates through the built binary, and
//! `check --no-dns` spot checks prove each one means what its comments say.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;

use support::bin::run;

fn policy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policy")
}

fn policy(name: &str) -> String {
    let path = policy_dir().join(name);
    assert!(path.is_file(), "{} is missing", path.display());
    path.to_str().unwrap().to_string()
}

/// A requirements file is the one with `[experimental_network]`; it is loaded with
/// `--requirements`, everything else with `--config`.
fn flag_for(path: &Path) -> &'static str {
    let text = std::fs::read_to_string(path).unwrap();
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{} is not TOML: {e}", path.display()));
    if table.contains_key("experimental_network") {
        "--requirements"
    } else {
        "--config"
    }
}

/// Validates every file in `dir` through the binary; returns `(file name, problem)` for each
/// failure.
fn invalid_policies(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("policy directory exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no policy in {}", dir.display());
    let mut problems = Vec::new();
    for path in &files {
        let shown = path.display().to_string();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut problem = |text: String| problems.push((name.clone(), text));
        if !shown.ends_with(".toml") {
            problem("not a .toml policy".into());
            continue;
        }
        let flag = flag_for(path);
        let (code, out, err) = run(&["validate", flag, &shown]);
        if code != 0 || !err.is_empty() || !out.starts_with("policy OK: ") {
            problem(format!("validate {flag} {shown}: exit {code}: {err}{out}"));
            continue;
        }
        if !out.contains(", enabled\n") {
            problem(format!("not enabled: {out}"));
        }
        let (code, out, _) = run(&["validate", "--json", flag, &shown]);
        let v: Value = serde_json::from_str(&out).unwrap_or_default();
        // Shipped examples keep every listener on loopback and open no Unix socket wholesale.
        for key in [
            "dangerously_allow_non_loopback_proxy",
            "dangerously_allow_non_loopback_admin",
            "dangerously_allow_all_unix_sockets",
        ] {
            if code != 0 || v[key] != false {
                problem(format!("{key} is not false: {out}"));
            }
        }
    }
    problems
}

#[test]
fn every_file_in_policy_validates() {
    let dir = policy_dir();
    for shipped in [
        "ci.toml",
        "codex-config.toml",
        "default.toml",
        "dev-box.toml",
        "requirements.toml",
    ] {
        assert!(dir.join(shipped).is_file(), "policy/{shipped} is missing");
    }
    let problems = invalid_policies(&dir);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_policy_that_does_not_validate_is_reported() {
    // The check above must notice a file added to the directory that does not validate.
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("good.toml", "allowed_domains = [\"a.test\"]\n");
    write(
        "req.toml",
        "[experimental_network]\nallowed_domains = [\"a.test\"]\n",
    );
    write("typo.toml", "allowd_domains = [\"a.test\"]\n");
    write(
        "exposed.toml",
        "allowed_domains = [\"a.test\"]\nproxy_url = \"http://0.0.0.0:3128\"\n\
         dangerously_allow_non_loopback_proxy = true\n",
    );
    write("notes.txt", "not a policy\n");
    let problems = invalid_policies(dir.path());
    let files: Vec<&str> = problems.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        files,
        ["exposed.toml", "notes.txt", "typo.toml"],
        "{problems:#?}"
    );
}

#[test]
fn codex_config_validates_together_with_its_requirements() {
    let (code, out, err) = run(&[
        "validate",
        "--config",
        &policy("codex-config.toml"),
        "--requirements",
        &policy("requirements.toml"),
    ]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out.starts_with("policy OK: "), "{out}");
}

/// `(target, verdict, reason)` for each target under the given policy flags, decided on the
/// rules alone (`--no-dns`).
fn verdicts(flags: &[&str], targets: &[&str]) -> Vec<(String, String, String)> {
    let mut args = vec!["check", "--no-dns", "--json"];
    args.extend_from_slice(flags);
    args.extend_from_slice(targets);
    let (code, out, err) = run(&args);
    assert_eq!(err, "", "{args:?}");
    let got: Vec<(String, String, String)> = out
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            (s("target"), s("verdict"), s("reason"))
        })
        .collect();
    let any_blocked = got.iter().any(|(_, verdict, _)| verdict == "block");
    assert_eq!(code, i32::from(any_blocked), "{args:?}");
    got
}

/// Checks `(target, verdict, reason)` rows against the policy.
fn expect(flags: &[&str], rows: &[(&str, &str, &str)]) {
    let targets: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let want: Vec<(String, String, String)> = rows
        .iter()
        .map(|(t, v, r)| (t.to_string(), v.to_string(), r.to_string()))
        .collect();
    assert_eq!(verdicts(flags, &targets), want, "{flags:?}");
}

const ALLOW: &str = "allow";
const BLOCK: &str = "block";

#[test]
fn default_blocks_everything() {
    let p = policy("default.toml");
    expect(
        &["--config", &p],
        &[
            ("example.com", BLOCK, "not-allowed"),
            ("api.github.com", BLOCK, "not-allowed"),
            ("localhost", BLOCK, "not-allowed"),
            ("127.0.0.1:80", BLOCK, "not-allowed"),
            ("169.254.169.254:80", BLOCK, "deny-rule"),
            ("metadata.google.internal:80", BLOCK, "deny-rule"),
        ],
    );
    // "Deny rules survive any allow added on top": broader allows, even ones that would
    // otherwise open the link-local metadata address, lose to them.
    let allows = [
        "--config",
        &p,
        "--allow",
        "*",
        "--allow",
        "169.254.0.0/16",
        "--allow",
        "**.google.internal",
    ];
    expect(
        &allows,
        &[
            ("example.com", ALLOW, "allowed"),
            ("169.254.1.1:80", ALLOW, "allowed"),
            ("other.google.internal", ALLOW, "allowed"),
            ("metadata.google.internal:80", BLOCK, "deny-rule"),
            (
                "http://169.254.169.254/latest/meta-data/",
                BLOCK,
                "deny-rule",
            ),
        ],
    );
}

#[test]
fn dev_box_allows_registries_and_code_hosts_only() {
    let p = policy("dev-box.toml");
    expect(
        &["--config", &p],
        &[
            ("api.github.com:443", ALLOW, "allowed"),
            ("github.com:22", ALLOW, "allowed"),
            ("raw.githubusercontent.com", ALLOW, "allowed"),
            ("gitlab.com:22", ALLOW, "allowed"),
            ("bitbucket.org", ALLOW, "allowed"),
            ("index.crates.io", ALLOW, "allowed"),
            ("static.rust-lang.org", ALLOW, "allowed"),
            ("files.pythonhosted.org", ALLOW, "allowed"),
            ("https://registry.npmjs.org/left-pad", ALLOW, "allowed"),
            ("proxy.golang.org", ALLOW, "allowed"),
            ("http://deb.debian.org/debian/", ALLOW, "allowed"),
            ("ghcr.io", ALLOW, "allowed"),
            ("localhost:8000", ALLOW, "allowed"),
            ("gist.github.com", BLOCK, "deny-rule"),
            ("pastebin.com", BLOCK, "deny-rule"),
            ("www.transfer.sh", BLOCK, "deny-rule"),
            ("169.254.169.254:80", BLOCK, "deny-rule"),
            ("metadata.google.internal:80", BLOCK, "deny-rule"),
            ("example.com", BLOCK, "not-allowed"),
            ("evil-github.com", BLOCK, "not-allowed"),
            ("github.com.evil.test", BLOCK, "not-allowed"),
            // Only the name `localhost` is a local exception, not the addresses.
            ("127.0.0.1:8000", BLOCK, "not-allowed"),
            // HTTPS only: SSH and SMTP to registries and code hosts stay closed.
            ("pypi.org:22", BLOCK, "not-allowed"),
            ("api.github.com:25", BLOCK, "not-allowed"),
            ("gitlab.com:22", ALLOW, "allowed"),
        ],
    );
}

#[test]
fn ci_allows_https_to_registries_and_nothing_else() {
    let p = policy("ci.toml");
    expect(
        &["--config", &p],
        &[
            ("index.crates.io:443", ALLOW, "allowed"),
            ("static.crates.io", ALLOW, "allowed"),
            ("api.github.com:443", ALLOW, "allowed"),
            ("objects.githubusercontent.com:443", ALLOW, "allowed"),
            ("pypi.org:443", ALLOW, "allowed"),
            ("registry.npmjs.org:443", ALLOW, "allowed"),
            // Port-scoped: no SSH, SMTP or plain HTTP to the same hosts.
            ("index.crates.io:22", BLOCK, "not-allowed"),
            ("github.com:22", BLOCK, "not-allowed"),
            ("pypi.org:25", BLOCK, "not-allowed"),
            ("http://index.crates.io/", BLOCK, "not-allowed"),
            ("gist.github.com:443", BLOCK, "deny-rule"),
            ("example.com", BLOCK, "not-allowed"),
            ("localhost:443", BLOCK, "not-allowed"),
        ],
    );
}

#[test]
fn codex_config_uses_its_default_permissions_profile() {
    let p = policy("codex-config.toml");
    expect(
        &["--config", &p],
        &[
            // `[features.network_proxy]`
            ("api.openai.com", ALLOW, "allowed"),
            ("example.com", BLOCK, "deny-rule"),
            // `[permissions.workspace.network]`, chosen by `default_permissions`
            ("api.github.com", ALLOW, "allowed"),
            ("pypi.org", ALLOW, "allowed"),
            ("files.pythonhosted.org", ALLOW, "allowed"),
            ("x.exfil.example.com", BLOCK, "deny-rule"),
            ("npmjs.org", BLOCK, "not-allowed"),
        ],
    );
    let (code, out, _) = run(&["validate", "--json", "--config", &p]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["enabled"], true);
    assert_eq!(
        v["unix_sockets"][0]["path"], "/var/run/docker.sock",
        "the workspace profile's socket: {v}"
    );
    assert_eq!(v["unix_sockets"][0]["action"], "allow");
}

#[test]
fn requirements_make_only_managed_allows_effective() {
    let config = policy("codex-config.toml");
    let req = policy("requirements.toml");
    let user_only = ["--config", &config, "--allow", "user-only.test"];
    expect(&user_only, &[("user-only.test", ALLOW, "allowed")]);
    let managed = [
        "--config",
        &config,
        "--allow",
        "user-only.test",
        "--requirements",
        &req,
    ];
    expect(
        &managed,
        &[
            ("user-only.test", BLOCK, "not-allowed"),
            ("api.openai.com", ALLOW, "allowed"),
            ("api.github.com", ALLOW, "allowed"),
            ("pypi.org", ALLOW, "allowed"),
            ("gist.github.com", BLOCK, "deny-rule"),
            ("x.exfil.example.com", BLOCK, "deny-rule"),
            // The user's deny still applies on top of the managed rules.
            ("example.com", BLOCK, "deny-rule"),
        ],
    );
    // The managed rules are reported as managed.
    let (code, out, _) = run(&[
        "check",
        "--no-dns",
        "--config",
        &config,
        "--requirements",
        &req,
        "api.openai.com",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().nth(2),
        Some(format!("  rule    allow api.openai.com, managed ({req}:14:3)").as_str())
    );
    // The requirements' socket deny overrides the profile's allow.
    let (_, out, _) = run(&[
        "validate",
        "--json",
        "--config",
        &config,
        "--requirements",
        &req,
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["unix_sockets"][0]["action"], "deny", "{v}");
}

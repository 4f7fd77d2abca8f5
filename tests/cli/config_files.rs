//! Where a policy comes from, as the built binary sees it: Codex `config.toml` shapes and
//! profiles, a managed `requirements.toml` over the user's file, and `--allow`/`--deny` with no
//! file at all (SPEC section 2). The rules these layers compile to are unit-tested in
//! `src/config/tests/`; these tests check the same semantics end to end, through `check`.

use crate::cli::{judge, owned, validate_json, Files};
use crate::support::bin::run;

#[test]
fn codex_network_proxy_shorthand_toggles_enabled() {
    let files = Files::new();
    let on = files.write("on.toml", "model = \"o3\"\nfeatures.network_proxy = true\n");
    let off = files.write(
        "off.toml",
        "model = \"o3\"\n[features]\nnetwork_proxy = false\n",
    );
    let bare = files.write(
        "bare.toml",
        "model = \"o3\"\n[network]\nallowed_domains = [\"a.test\"]\n",
    );
    assert_eq!(validate_json(&["--config", &on])["enabled"], true);
    assert_eq!(validate_json(&["--config", &off])["enabled"], false);
    // A Codex-shaped file is disabled unless it says otherwise.
    assert_eq!(validate_json(&["--config", &bare])["enabled"], false);
    let (code, out, _) = run(&["validate", "--config", &off]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().next(),
        Some("policy OK: 0 rules (0 allow, 0 deny), mode full, NOT enabled (serve and run refuse to start)")
    );
}

#[test]
fn codex_permissions_profile_by_default_permissions_and_by_flag() {
    let files = Files::new();
    let p = files.write(
        "config.toml",
        "\
model = \"o3\"
default_permissions = \"dev\"
[features.network_proxy]
enabled = true
allowed_domains = [\"shared.test\"]
[permissions.dev.network]
allowed_domains = [\"dev.test\"]
[permissions.ci.network]
allowed_domains = [\"ci.test\"]
denied_domains = [\"shared.test\"]
",
    );
    let targets = ["shared.test", "dev.test", "ci.test"];
    let (code, err, got) = judge(&[&["--config", &p][..], &targets].concat());
    assert_eq!((code, err.as_str()), (1, ""));
    assert_eq!(
        got,
        owned(&[
            ("shared.test", "allow", "allowed"),
            ("dev.test", "allow", "allowed"),
            ("ci.test", "block", "not-allowed"),
        ])
    );
    let (code, _, got) = judge(&[&["--config", &p, "--profile", "ci"][..], &targets].concat());
    assert_eq!(code, 1);
    assert_eq!(
        got,
        owned(&[
            ("shared.test", "block", "deny-rule"),
            ("dev.test", "block", "not-allowed"),
            ("ci.test", "allow", "allowed"),
        ])
    );
    let (code, _, err) = run(&[
        "check",
        "--no-dns",
        "--config",
        &p,
        "--profile",
        "prod",
        "dev.test",
    ]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "error: unknown profile `prod` (--profile): defined profiles: `ci`, `dev`\n"
    );
}

#[test]
fn requirements_managed_allowed_domains_only_makes_user_allows_ineffective() {
    let files = Files::new();
    let user = files.write(
        "user.toml",
        "allowed_domains = [\"user.test\", \"both.test\"]\ndenied_domains = [\"userdeny.test\"]\n",
    );
    let req = files.write(
        "requirements.toml",
        "\
[experimental_network]
managed_allowed_domains_only = true
allowed_domains = [\"admin.test\", \"both.test\", \"userdeny.test\"]
denied_domains = [\"evil.test\"]
",
    );
    let targets = [
        "user.test",
        "admin.test",
        "both.test",
        "userdeny.test",
        "evil.test",
        "flag.test",
    ];
    let flags = [
        "--config",
        &user,
        "--allow",
        "flag.test",
        "--allow",
        "evil.test",
    ];
    let mut args = [&flags[..], &targets].concat();
    // Without the requirements the user's rules (and the flags) apply.
    let (code, _, got) = judge(&args);
    assert_eq!(code, 1);
    assert_eq!(
        got,
        owned(&[
            ("user.test", "allow", "allowed"),
            ("admin.test", "block", "not-allowed"),
            ("both.test", "allow", "allowed"),
            ("userdeny.test", "block", "deny-rule"),
            ("evil.test", "allow", "allowed"),
            ("flag.test", "allow", "allowed"),
        ])
    );
    // With them only managed allows count; managed and user denies still win.
    args.extend_from_slice(&["--requirements", &req]);
    let (code, err, got) = judge(&args);
    assert_eq!((code, err.as_str()), (1, ""));
    assert_eq!(
        got,
        owned(&[
            ("user.test", "block", "not-allowed"),
            ("admin.test", "allow", "allowed"),
            ("both.test", "allow", "allowed"),
            ("userdeny.test", "block", "deny-rule"),
            ("evil.test", "block", "deny-rule"),
            ("flag.test", "block", "not-allowed"),
        ])
    );
    // The text output says the deciding rule is managed and where it was written.
    let (code, out, _) = run(&[
        "check",
        "--no-dns",
        "--config",
        &user,
        "--requirements",
        &req,
        "admin.test",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().nth(2),
        Some(format!("  rule    allow admin.test, managed ({req}:3:20)").as_str())
    );
}

#[test]
fn requirements_without_managed_only_add_managed_denies_that_win() {
    let files = Files::new();
    let req = files.write(
        "r.toml",
        "[experimental_network]\ndenied_domains = [\"gist.github.com\"]\n",
    );
    let allow = ["--requirements", &req, "--allow", "**.github.com"];
    let (code, _, got) = judge(&[&allow[..], &["api.github.com", "gist.github.com"]].concat());
    assert_eq!(code, 1);
    assert_eq!(
        got,
        owned(&[
            ("api.github.com", "allow", "allowed"),
            ("gist.github.com", "block", "deny-rule"),
        ])
    );
}

#[test]
fn allow_and_deny_flags_work_with_no_file() {
    let (code, out, err) = run(&[
        "check",
        "--no-dns",
        "--allow",
        "**.github.com",
        "--deny",
        "gist.github.com",
        "api.github.com",
        "github.com:22",
        "gist.github.com",
        "example.com",
    ]);
    assert_eq!((code, err.as_str()), (1, ""));
    let heads: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(
        heads,
        [
            "ALLOW api.github.com:443",
            "ALLOW github.com:22",
            "BLOCK gist.github.com:443",
            "BLOCK example.com:443",
        ]
    );
    assert!(
        out.lines()
            .any(|l| l == "  rule    deny gist.github.com (--deny)"),
        "{out}"
    );
    // No rule at all: everything is blocked.
    let (code, _, got) = judge(&["example.com"]);
    assert_eq!(code, 1);
    assert_eq!(got, owned(&[("example.com", "block", "not-allowed")]));
}

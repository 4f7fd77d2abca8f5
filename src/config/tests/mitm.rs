//! `mitm`, `[mitm]` and `[[http_rules]]`: where each form is accepted, what it sets, and
//! errors at the value that is wrong.

use super::*;

/// `enabled domains ca upstream_ca` of the effective `mitm`, compact for table asserts.
fn mitm(config: &Config) -> String {
    let m = &config.mitm;
    let domains = match &m.domains {
        None => "*".to_string(),
        Some(d) => d
            .iter()
            .map(|(p, o)| format!("{p}@{o}"))
            .collect::<Vec<_>>()
            .join(","),
    };
    let ca = match &m.ca {
        None => "generated".to_string(),
        Some(ca) => format!("{}+{}", ca.cert.display(), ca.key.display()),
    };
    let upstream = m
        .upstream_ca
        .as_ref()
        .map_or("-".to_string(), |p| p.display().to_string());
    format!("{} {domains} {ca} {upstream}", m.enabled)
}

/// Files, requirements, and the effective `mitm`.
type Case<'a> = (
    &'a [(&'a str, &'a str)],
    Option<(&'a str, &'a str)>,
    &'a str,
);

#[test]
fn mitm_is_a_boolean_everywhere_and_a_table_in_native_files() {
    let cases: &[Case<'_>] = &[
        (&[], None, "false * generated -"),
        (&[("a.toml", "mitm = true\n")], None, "true * generated -"),
        (&[("a.toml", "[mitm]\n")], None, "true * generated -"),
        (
            &[("a.toml", "[mitm]\nenabled = false\n")],
            None,
            "false * generated -",
        ),
        (
            &[(
                "a.toml",
                "[mitm]\ndomains = [\"api.test\", \"**.cdn.test\"]\nca_cert = \"ca.pem\"\nca_key = \"ca.key\"\nupstream_ca = \"/etc/o.pem\"\n",
            )],
            None,
            "true api.test@a.toml:2:12,**.cdn.test@a.toml:2:24 ca.pem+ca.key /etc/o.pem",
        ),
        (
            &[("c.toml", "[network]\nenabled = true\nmitm = true\n")],
            None,
            "true * generated -",
        ),
        (
            &[(
                "c.toml",
                "default_permissions = \"w\"\n[permissions.w.network]\nmitm = true\n",
            )],
            None,
            "true * generated -",
        ),
        // A later file's `mitm = false` turns a table off; its settings stay for when it is on.
        (
            &[
                ("a.toml", "[mitm]\ndomains = [\"api.test\"]\n"),
                ("b.toml", "mitm = false\n"),
            ],
            None,
            "false api.test@a.toml:2:12 generated -",
        ),
        // The administrator's value wins, either way.
        (
            &[("a.toml", "[mitm]\n")],
            Some(("r.toml", "[experimental_network]\nmitm = false\n")),
            "false * generated -",
        ),
        (
            &[("a.toml", "mitm = false\n")],
            Some(("r.toml", "[experimental_network]\nmitm = true\n")),
            "true * generated -",
        ),
    ];
    for (configs, requirements, want) in cases {
        let config = ok(configs, *requirements, &flags());
        assert_eq!(mitm(&config), *want, "{configs:?} {requirements:?}");
    }
}

#[test]
fn mitm_errors_point_at_the_value() {
    let cases: &[(&str, &str)] = &[
        (
            "[mitm]\nca_cert = \"ca.pem\"\n",
            "a.toml:2:11: `[mitm] ca_cert` needs `ca_key` in the same table",
        ),
        (
            "[mitm]\nca_key = \"ca.key\"\n",
            "a.toml:2:10: `[mitm] ca_key` needs `ca_cert` in the same table",
        ),
        ("[mitm]\nenabled = 1\n", "a.toml:2:11: `enabled`: invalid type: integer `1`, expected a boolean"),
        ("mitm = \"yes\"\n", "a.toml:1:8: `mitm`: invalid type: string \"yes\", expected a boolean"),
        ("[mitm]\nca_file = \"x\"\n", "a.toml:2:1: unknown key `ca_file` in `[mitm]` (expected one of: `enabled`, `domains`, `ca_cert`, `ca_key`, `upstream_ca`)"),
        ("[mitm]\nupstream_ca = \"\"\n", "a.toml:2:15: `upstream_ca` must not be empty"),
    ];
    for (text, want) in cases {
        assert_eq!(err(&[("a.toml", text)], None, &flags()), *want, "{text:?}");
    }
    // Codex tables take Codex's boolean, not our table.
    let codex = err(
        &[("c.toml", "[network]\n[network.mitm]\nenabled = true\n")],
        None,
        &flags(),
    );
    assert!(codex.starts_with("c.toml:"), "{codex}");
    assert!(codex.contains("expected a boolean"), "{codex}");
}

/// http rules as `action host methods paths @origin`.
fn http_rules(config: &Config) -> Vec<String> {
    config
        .http_rules
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} @{}",
                r.action.as_str(),
                r.host,
                r.methods.join(","),
                r.paths.join(","),
                r.origin
            )
        })
        .collect()
}

#[test]
fn http_rules_append_in_file_order() {
    let a = "[[http_rules]]\nhost = \"api.test\"\nmethods = [\"GET\", \"POST\"]\npaths = [\"/repos/*/issues\"]\naction = \"allow\"\n\n[[http_rules]]\nhost = \"api.test\"\naction = \"deny\"\nmethods = [\"DELETE\"]\n";
    let b = "[[http_rules]]\nhost = \"**.other.test\"\naction = \"allow\"\n";
    let config = ok(&[("a.toml", a), ("b.toml", b)], None, &flags());
    assert_eq!(
        http_rules(&config),
        [
            "allow api.test GET,POST /repos/*/issues @a.toml:2:8",
            "deny api.test DELETE  @a.toml:8:8",
            "allow **.other.test   @b.toml:2:8",
        ]
    );
    let policy = config.policy().unwrap();
    assert_eq!(policy.http_rules(), config.http_rules.as_slice());
}

#[test]
fn http_rule_errors_point_at_the_value() {
    let rule = |body: &str| format!("[[http_rules]]\nhost = \"api.test\"\n{body}");
    let cases: &[(String, &str)] = &[
        (
            rule("action = \"allow\"\nmethods = [\"GET\", \"PO ST\"]\n"),
            "a.toml:4:19: `methods`: `PO ST` is not an HTTP method token",
        ),
        (
            rule("action = \"allow\"\npaths = [\"repos\"]\n"),
            "a.toml:4:10: `paths`: `repos`: a path begins with `/`",
        ),
        (
            rule("action = \"allow\"\npaths = [\"/a%2Fb\"]\n"),
            "a.toml:4:10: `paths`: `/a%2Fb`: an encoded `/`, `\\`, `;` or `%`, a `\\`, `;`, NUL or a non-ASCII byte makes the path ambiguous",
        ),
        (
            rule("action = \"allow\"\npaths = [\"/a*\"]\n"),
            "a.toml:4:10: `paths`: `/a*`: `*` matches one whole segment (`/repos/*/issues`), not part of one",
        ),
        (
            rule("action = \"maybe\"\n"),
            "a.toml:3:10: `http_rules` entry `api.test`: unknown variant `maybe`, expected `allow` or `deny`",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(err(&[("a.toml", text)], None, &flags()), *want, "{text:?}");
    }
    let missing = err(&[("a.toml", &rule(""))], None, &flags());
    assert!(missing.contains("missing field `action`"), "{missing}");
    let unknown = err(
        &[("a.toml", &rule("action = \"allow\"\nverb = 1\n"))],
        None,
        &flags(),
    );
    assert!(unknown.contains("unknown field `verb`"), "{unknown}");
    // A bad host pattern is the policy's error, at the host.
    let config = ok(
        &[(
            "a.toml",
            "[[http_rules]]\nhost = \"*.com\"\naction = \"allow\"\n",
        )],
        None,
        &flags(),
    );
    let e = config.policy().unwrap_err().to_string();
    assert!(e.starts_with("a.toml:2:8: invalid pattern `*.com`"), "{e}");
}

#[test]
fn warnings_name_http_rules_https_would_not_see() {
    let rule = "[[http_rules]]\nhost = \"api.test\"\naction = \"allow\"\n";
    let off = ok(&[("a.toml", rule)], None, &flags());
    assert_eq!(
        shown(&off),
        ["no allow rule: every destination is blocked".to_string(), "http rule `api.test *` (a.toml:2:8): mitm is off, so HTTPS to it is not intercepted and the rule applies to plain HTTP only".to_string()]
    );
    let scoped = format!("{rule}[mitm]\ndomains = [\"other.test\", \"*.api.test\"]\n");
    let scoped = ok(&[("a.toml", &scoped)], None, &flags());
    assert!(shown(&scoped)[1].contains("its host is outside [mitm] domains"));
    let covered =
        format!("allowed_domains = [\"api.test\"]\n{rule}[mitm]\ndomains = [\"**.api.test\"]\n");
    let covered = ok(&[("a.toml", &covered)], None, &flags());
    assert!(shown(&covered).is_empty(), "{:?}", shown(&covered));
    let limited = ok(
        &[(
            "a.toml",
            "mode = \"limited\"\nallowed_domains = [\"a.test\"]\n",
        )],
        None,
        &flags(),
    );
    assert_eq!(
        shown(&limited),
        ["mode `limited` without mitm: every HTTPS tunnel (CONNECT, SOCKS5) is refused with mitm-required"]
    );
}

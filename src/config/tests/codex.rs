//! Codex-shaped files: which tables count, in which order, and profiles.

use super::*;

#[test]
fn every_shape_contributes_its_tables() {
    let features_table = "model = 'o3'\n[features.network_proxy]\nenabled = true\ndomains = { \"a.com\" = \"allow\" }\n";
    let shorthand = "[features]\nnetwork_proxy = true\n";
    let network = "[network]\nenabled = true\nallowed_domains = ['n.com']\n";
    let profiles = "\
default_permissions = 'ws'
[permissions.ws.network]
enabled = true
allowed_domains = ['ws.com']
[permissions.ci.network]
enabled = true
denied_domains = ['ci.com']
";
    let ci = Sources {
        profile: Some("ci".into()),
        ..flags()
    };
    let cases: [(&str, &str, &Sources, Vec<&str>); 5] = [
        (
            "features table",
            features_table,
            &flags(),
            vec!["allow a.com @c.toml:4:13"],
        ),
        ("features shorthand", shorthand, &flags(), vec![]),
        (
            "[network]",
            network,
            &flags(),
            vec!["allow n.com @c.toml:3:20"],
        ),
        (
            "default_permissions",
            profiles,
            &flags(),
            vec!["allow ws.com @c.toml:4:20"],
        ),
        ("--profile", profiles, &ci, vec!["deny ci.com @c.toml:7:19"]),
    ];
    for (name, text, sources, want) in cases {
        let got = ok(&[("c.toml", text)], None, sources);
        assert!(got.enabled, "{name}");
        assert_eq!(rules(&got), want, "{name}");
        assert!(got.warnings.is_empty(), "{name}: {:?}", got.warnings);
    }

    let req = "\
[experimental_network]
enabled = true
http_port = 3130
socks_port = 3131
allowed_domains = ['api.openai.com']
denied_domains = ['blocked.example.com']
";
    let got = ok(&[], Some(("requirements.toml", req)), &flags());
    assert_eq!(
        rules(&got),
        [
            "allow api.openai.com @requirements.toml:5:20 managed",
            "deny blocked.example.com @requirements.toml:6:19 managed",
        ]
    );
    assert_eq!(
        (got.proxy_addr, got.socks_addr),
        (addr("127.0.0.1:3130"), addr("127.0.0.1:3131"))
    );
}

#[test]
fn codex_order_inside_one_file_and_enabled_default() {
    let text = "\
default_permissions = 'p'
[features.network_proxy]
mode = 'limited'
allow_local_binding = true
domains = { 'x.com' = 'allow' }
[network]
mode = 'full'
domains = { 'x.com' = 'deny' }
[permissions.p.network]
allow_local_binding = false
";
    let got = ok(&[("c.toml", text)], None, &flags());
    assert_eq!(got.mode, Mode::Full);
    assert!(!got.allow_local_binding);
    assert_eq!(rules(&got), ["deny x.com @c.toml:8:13"]);
    // No table sets `enabled`, so the Codex default (off) applies.
    assert!(!got.enabled);

    let cases = [
        // (files, requirements, enabled)
        (vec![("a.toml", "enabled = false")], None, false),
        (
            vec![("a.toml", "enabled = false"), ("b.toml", "mode = 'full'")],
            None,
            false,
        ),
        (
            vec![("a.toml", "enabled = false"), ("b.toml", "enabled = true")],
            None,
            true,
        ),
        (vec![("c.toml", "[network]")], None, false),
        (vec![("c.toml", "[network]"), ("n.toml", "")], None, true),
        (
            vec![("c.toml", "features.network_proxy = true")],
            None,
            true,
        ),
        (
            vec![("c.toml", "features.network_proxy = true")],
            Some("experimental_network.enabled = false"),
            false,
        ),
        (
            vec![("c.toml", "[network]")],
            Some("experimental_network.enabled = true"),
            true,
        ),
        (
            vec![("c.toml", "[network]")],
            Some("[experimental_network]"),
            false,
        ),
    ];
    for (files, req, want) in cases {
        let got = ok(&files, req.map(|r| ("r.toml", r)), &flags());
        assert_eq!(got.enabled, want, "{files:?} {req:?}");
    }
}

#[test]
fn unknown_profile_names_the_defined_ones() {
    let a = "[permissions.dev.network]\nenabled = true\n";
    let b = "[permissions.ci]\n[permissions.dev.network]\n";
    let sources = Sources {
        profile: Some("prod".into()),
        ..flags()
    };
    assert_eq!(
        err(&[("a.toml", a), ("b.toml", b)], None, &sources),
        "unknown profile `prod` (--profile): defined profiles: `ci`, `dev`"
    );
    assert_eq!(
        err(&[("n.toml", "")], None, &sources),
        "unknown profile `prod` (--profile): no config file defines any `[permissions.<name>]` profile"
    );
    // Defined in one file is enough; the others contribute their other tables.
    let dev = Sources {
        profile: Some("dev".into()),
        ..flags()
    };
    let got = ok(
        &[("c.toml", "[network]\nmode = 'limited'\n"), ("a.toml", a)],
        None,
        &dev,
    );
    assert!(got.enabled);
    assert_eq!(got.mode, Mode::Limited);
}

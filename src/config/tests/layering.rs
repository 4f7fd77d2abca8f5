//! Later layers over earlier ones: scalars replaced, maps merged by entry, flags last.

use super::*;

#[test]
fn map_and_list_forms_keep_positions() {
    let got = ok(
        &[(
            "l.toml",
            "allowed_domains = [\n  'a.com',\n  '*.b.com',\n  'both.com',\n]\ndenied_domains = ['both.com', 'c.com']\n",
        )],
        None,
        &flags(),
    );
    assert_eq!(
        rules(&got),
        [
            "allow a.com @l.toml:2:3",
            "allow *.b.com @l.toml:3:3",
            "deny both.com @l.toml:6:19",
            "deny c.com @l.toml:6:31",
        ]
    );
    let got = ok(
        &[(
            "m.toml",
            "[domains]\n\"z.com\" = 'allow'\n'a.com' = 'deny'\n\"  Mixed.COM. \" = 'allow'\n",
        )],
        None,
        &flags(),
    );
    // File order, not key order; pattern text as written (the policy normalises it).
    assert_eq!(
        rules(&got),
        [
            "allow z.com @m.toml:2:1",
            "deny a.com @m.toml:3:1",
            "allow   Mixed.COM.  @m.toml:4:1"
        ]
    );
    assert_eq!(
        err(&[("m.toml", "domains = {}\nallowed_domains = []\n")], None, &flags()),
        "m.toml:2:1: use either `domains` or `allowed_domains`/`denied_domains` in one table, not both"
    );
}

#[test]
fn later_layers_override_scalars_and_merge_maps_by_entry() {
    let first = "\
mode = 'limited'
enable_socks5 = false
[domains]
'a.com' = 'allow'
'b.com' = 'deny'
'c.com' = 'allow'
[unix_sockets]
'/run/a.sock' = 'allow'
'/run/b.sock' = 'allow'
'/run/c.sock' = 'deny'
[dns]
servers = ['10.0.0.1']
timeout_ms = 100
";
    let second = "\
mode = 'full'
[domains]
'b.com' = 'allow'
'd.com' = 'deny'
[unix_sockets]
'/run/a.sock' = 'none'
'/run/c.sock' = 'allow'
'/run/never.sock' = 'none'
[dns]
timeout_ms = 200
";
    let got = ok(&[("1.toml", first), ("2.toml", second)], None, &flags());
    assert_eq!(got.mode, Mode::Full);
    assert!(
        !got.enable_socks5,
        "a scalar the later file does not set is kept"
    );
    assert_eq!(
        rules(&got),
        [
            "allow a.com @1.toml:4:1",
            "allow c.com @1.toml:6:1",
            "allow b.com @2.toml:3:1",
            "deny d.com @2.toml:4:1",
        ]
    );
    assert_eq!(
        unix(&got),
        [
            "allow /run/b.sock @1.toml:9:1",
            "allow /run/c.sock @2.toml:7:1"
        ]
    );
    assert_eq!(got.dns.servers, [addr("10.0.0.1:53")]);
    assert_eq!(got.dns.timeout, Duration::from_millis(200));

    let override_dns = Sources {
        dns_servers: vec![addr("127.0.0.1:5300")],
        ..flags()
    };
    let got = ok(&[("1.toml", first)], None, &override_dns);
    assert_eq!(got.dns.servers, [addr("127.0.0.1:5300")]);
}

#[test]
fn allow_and_deny_flags_are_the_last_user_layer() {
    let sources = Sources {
        allow: vec!["**.github.com".into(), "x.com".into(), "both.com".into()],
        deny: vec!["y.com".into(), "both.com".into()],
        ..flags()
    };
    let got = ok(&[], None, &sources);
    assert!(got.enabled);
    assert_eq!(
        rules(&got),
        [
            "allow **.github.com @--allow",
            "allow x.com @--allow",
            "deny y.com @--deny",
            "deny both.com @--deny"
        ]
    );
    let got = ok(
        &[(
            "f.toml",
            "domains = { 'x.com' = 'deny', 'y.com' = 'allow', 'z.com' = 'allow' }",
        )],
        None,
        &sources,
    );
    assert_eq!(
        rules(&got),
        [
            "allow z.com @f.toml:1:50",
            "allow **.github.com @--allow",
            "allow x.com @--allow",
            "deny y.com @--deny",
            "deny both.com @--deny",
        ]
    );
}

#[test]
fn load_reads_files_and_names_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.toml");
    let requirements = dir.path().join("r.toml");
    fs::write(&config, "allowed_domains = ['a.com']\n").unwrap();
    fs::write(
        &requirements,
        "experimental_network.denied_domains = ['b.com']\n",
    )
    .unwrap();
    let sources = Sources {
        configs: vec![config.clone()],
        requirements: Some(requirements.clone()),
        ..flags()
    };
    let got = load(&sources).unwrap();
    assert_eq!(
        rules(&got),
        [
            format!("allow a.com @{}:1:20", config.display()),
            format!("deny b.com @{}:1:40 managed", requirements.display()),
        ]
    );

    let missing = dir.path().join("missing.toml");
    let sources = Sources {
        configs: vec![config, missing.clone()],
        ..flags()
    };
    assert_eq!(
        load(&sources).unwrap_err().to_string(),
        format!(
            "cannot read {}: No such file or directory",
            missing.display()
        )
    );
    let sources = Sources {
        requirements: Some(missing.clone()),
        ..flags()
    };
    assert_eq!(
        load(&sources).unwrap_err(),
        ConfigError::Read {
            path: missing.display().to_string(),
            reason: "No such file or directory".into()
        }
    );
}

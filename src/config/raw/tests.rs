//! Parsing: shapes, key checks and error positions, before any layering.

use super::*;

fn src(text: &str) -> Source {
    Source::new("t.toml", text.to_string())
}

fn config_err(text: &str) -> String {
    parse_config(&src(text), None).unwrap_err().to_string()
}

#[test]
fn shape_is_decided_by_codex_top_level_keys() {
    let cases = [
        ("", true),
        ("enabled = true", true),
        ("[dns]\ntimeout_ms = 5", true),
        ("model = 'x'\n[features]\nother = true", false),
        ("[permissions.a]", false),
        ("[network]", false),
        ("default_permissions = 'a'", false),
    ];
    for (text, native) in cases {
        assert_eq!(
            parse_config(&src(text), None).unwrap().native,
            native,
            "{text:?}"
        );
    }
}

fn whole(text: &str) -> Spanned<DeValue<'_>> {
    let table = DeTable::parse(text).unwrap();
    let span = table.span();
    Spanned::new(span, DeValue::Table(table.into_inner()))
}

/// Whether serde knows `key` as a field of `T` (a type error still means it does).
fn is_field<T: serde::de::DeserializeOwned>(key: &str) -> bool {
    let text = format!("{key} = []");
    match typed::<T>(&src(&text), whole(&text)) {
        Ok(_) => true,
        Err(err) => !err.to_string().contains("unknown field"),
    }
}

#[test]
fn every_listed_key_is_a_field_of_its_struct() {
    // The key lists decide what a table accepts; a list naming a key its struct lacks
    // would only surface as a serde error at run time, so it is a test failure here.
    for key in names(NETWORK, TABLE)
        .iter()
        .chain(&names(NETWORK, REQUIREMENTS))
    {
        assert!(is_field::<RawNetwork>(key), "{key}");
    }
    assert!(!is_field::<RawNetwork>("nonsense"));
    assert!(names(DNS, TABLE).iter().all(|k| is_field::<RawDns>(k)));
    assert!(names(LIMITS, TABLE)
        .iter()
        .all(|k| is_field::<RawLimits>(k)));
    assert!(names(ADMIN, TABLE).iter().all(|k| is_field::<RawAdmin>(k)));
    assert!(names(LOG, TABLE).iter().all(|k| is_field::<RawLog>(k)));
}

#[test]
fn unknown_keys_are_reported_at_the_key() {
    let cases = [
        (
            "enabled = true\n\nallowd_domains = []\n",
            "t.toml:3:1: unknown key `allowd_domains` in native policy file (expected one of: `enabled`, `mode`, `domains`, `allowed_domains`, `denied_domains`, `unix_sockets`, `allow_local_binding`, `enable_socks5`, `enable_socks5_udp`, `allow_upstream_proxy`, `public_ranges`, `proxy_url`, `socks_url`, `admin_url`, `dangerously_allow_non_loopback_proxy`, `dangerously_allow_non_loopback_admin`, `dangerously_allow_all_unix_sockets`, `mitm`, `dns`, `limits`, `admin`, `log`, `upstream`, `run`, `http_rules`)",
        ),
        (
            "[dns]\nservers = []\ntimeout = 3\n",
            "t.toml:3:1: unknown key `timeout` in `[dns]` (expected one of: `servers`, `timeout_ms`, `multi_answer`)",
        ),
        (
            "[limits]\nmax_conns = 3\n",
            "t.toml:2:1: unknown key `max_conns` in `[limits]` (expected one of: `connect_timeout_ms`, `idle_timeout_ms`, `header_timeout_ms`, `max_header_bytes`, `max_connections`, `max_udp_associations`)",
        ),
        (
            "[admin]\ntoken = 'x'\n",
            "t.toml:2:1: unknown key `token` in `[admin]` (expected one of: `token_file`)",
        ),
        (
            "[run]\nisolated = true\n",
            "t.toml:2:1: unknown key `isolated` in `[run]` (expected one of: `isolate`)",
        ),
        (
            "[log]\n  level = 'x'\n",
            "t.toml:2:3: unknown key `level` in `[log]` (expected one of: `format`, `audit`)",
        ),
        (
            "model = 'o3'\n[features.network_proxy]\nenabled = true\nhttp_port = 1\n",
            "t.toml:4:1: unknown key `http_port` in `[features.network_proxy]` (expected one of: `enabled`, `mode`, `domains`, `allowed_domains`, `denied_domains`, `unix_sockets`, `allow_local_binding`, `enable_socks5`, `enable_socks5_udp`, `allow_upstream_proxy`, `public_ranges`, `proxy_url`, `socks_url`, `admin_url`, `dangerously_allow_non_loopback_proxy`, `dangerously_allow_non_loopback_admin`, `dangerously_allow_all_unix_sockets`, `mitm`)",
        ),
        (
            "[network]\nzzz = 1\naaa = 2\n",
            "t.toml:2:1: unknown key `zzz` in `[network]` (expected one of: `enabled`, `mode`, `domains`, `allowed_domains`, `denied_domains`, `unix_sockets`, `allow_local_binding`, `enable_socks5`, `enable_socks5_udp`, `allow_upstream_proxy`, `public_ranges`, `proxy_url`, `socks_url`, `admin_url`, `dangerously_allow_non_loopback_proxy`, `dangerously_allow_non_loopback_admin`, `dangerously_allow_all_unix_sockets`, `mitm`)",
        ),
        (
            "[permissions.unused.network]\nmanaged_allowed_domains_only = true\n",
            "t.toml:2:1: unknown key `managed_allowed_domains_only` in `[permissions.unused.network]` (expected one of: `enabled`, `mode`, `domains`, `allowed_domains`, `denied_domains`, `unix_sockets`, `allow_local_binding`, `enable_socks5`, `enable_socks5_udp`, `allow_upstream_proxy`, `public_ranges`, `proxy_url`, `socks_url`, `admin_url`, `dangerously_allow_non_loopback_proxy`, `dangerously_allow_non_loopback_admin`, `dangerously_allow_all_unix_sockets`, `mitm`)",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(config_err(text), want, "{text:?}");
    }
    // Wherever it stands, a requirements table in a --config file is named as such.
    for text in [
        "experimental_network.enabled = true\n",
        "allowed_approval_policies = []\n[experimental_network]\nenabled = true\n",
    ] {
        assert!(
            config_err(text).ends_with(
                "`[experimental_network]` belongs in the --requirements file, not in --config"
            ),
            "{text}"
        );
    }
    // Top-level network keys in a Codex-shaped file would be ignored: an error, not a
    // silently dropped deny rule.
    assert_eq!(
        config_err("denied_domains = ['evil.test']\n[network]\nenabled = true\n"),
        "t.toml:1:1: `denied_domains` at the top level of a Codex config.toml has no effect; put it in `[features.network_proxy]`, `[network]` or `[permissions.<name>.network]`"
    );
}

#[test]
fn requirements_keys_are_checked_and_other_tables_ignored() {
    let ok = parse_requirements(&src(
        "[features]\nx = true\n[experimental_network]\nhttp_port = 3129\n",
    ))
    .unwrap()
    .unwrap();
    assert_eq!(ok.http_port.map(|p| p.into_inner()), Some(3129));
    assert!(parse_requirements(&src("model = 1\n")).unwrap().is_none());
    let mode = parse_requirements(&src("[experimental_network]\nmode = 'limited'\n"))
        .unwrap()
        .unwrap();
    assert_eq!(
        mode.mode.map(|m| m.into_inner()).as_deref(),
        Some("limited")
    );
    let err = parse_requirements(&src(
        "[experimental_network]\nproxy_url = 'http://127.0.0.1:1'\n",
    ))
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "t.toml:2:1: unknown key `proxy_url` in `[experimental_network]` (expected one of: `enabled`, `http_port`, `socks_port`, `mode`, `domains`, `allowed_domains`, `denied_domains`, `unix_sockets`, `managed_allowed_domains_only`, `allow_local_binding`, `enable_socks5`, `enable_socks5_udp`, `allow_upstream_proxy`, `public_ranges`, `dangerously_allow_non_loopback_proxy`, `dangerously_allow_non_loopback_admin`, `dangerously_allow_all_unix_sockets`, `mitm`)"
    );
}

#[test]
fn map_and_list_forms_in_one_table_point_at_the_second() {
    let msg = "use either `domains` or `allowed_domains`/`denied_domains` in one table, not both";
    let cases = [
        ("domains = {}\ndenied_domains = []\n", "t.toml:2:1"),
        ("allowed_domains = []\n\n domains = {}\n", "t.toml:3:2"),
        ("allowed_domains = []\n[domains]\n", "t.toml:2:2"),
        (
            "[network]\ndenied_domains = []\ndomains.a = 'allow'\nallowed_domains = []\n",
            "t.toml:3:1",
        ),
        (
            "[features.network_proxy]\ndomains = {}\nallowed_domains = []\n",
            "t.toml:3:1",
        ),
    ];
    for (text, at) in cases {
        assert_eq!(config_err(text), format!("{at}: {msg}"), "{text:?}");
    }
    let req = parse_requirements(&src(
        "[experimental_network]\nallowed_domains = ['a']\ndomains = {}\n",
    ))
    .unwrap_err();
    assert_eq!(req.to_string(), format!("t.toml:3:1: {msg}"));
}

#[test]
fn type_errors_carry_the_position_and_key() {
    let cases = [
        (
            "enabled = \"yes\"\n",
            "t.toml:1:11: `enabled`: invalid type: string \"yes\", expected a boolean",
        ),
        (
            "mode = 3\n",
            "t.toml:1:8: `mode`: invalid type: integer `3`, expected a string",
        ),
        (
            "[domains]\n\"a.com\" = 'allow'\n\"b.com\" = true\n",
            "t.toml:3:11: `domains`: invalid type: boolean `true`, expected a string",
        ),
        (
            "unix_sockets = { \"/a\" = 1 }\n",
            "t.toml:1:25: `unix_sockets`: invalid type: integer `1`, expected a string",
        ),
        (
            "allowed_domains = ['a', 3]\n",
            "t.toml:1:25: `allowed_domains`: invalid type: integer `3`, expected a string",
        ),
        (
            "[dns]\ntimeout_ms = -1\n",
            "t.toml:2:14: `timeout_ms`: invalid value: integer `-1`, expected u64",
        ),
        (
            "[dns]\nmulti_answer = 1.5\n",
            "t.toml:2:16: `multi_answer`: invalid type: floating point `1.5`, expected a string",
        ),
        (
            "[log]\nformat = []\n",
            "t.toml:2:10: `format`: invalid type: sequence, expected a string",
        ),
        (
            "dns = 3\n",
            "t.toml:1:7: `dns` must be a table, found integer",
        ),
        (
            "features = 3\n",
            "t.toml:1:12: `features` must be a table, found integer",
        ),
        (
            "features.network_proxy = 'on'\n",
            "t.toml:1:26: `features.network_proxy` must be a boolean or a table, found string",
        ),
        (
            "default_permissions = 1\n",
            "t.toml:1:23: `default_permissions` must be a string, found integer",
        ),
        (
            "[permissions]\nx = 1\n",
            "t.toml:2:5: `permissions.x` must be a table, found integer",
        ),
        (
            "[permissions.x]\nnetwork = []\n",
            "t.toml:2:11: `permissions.x.network` must be a table, found array",
        ),
        (
            "enabled = \n",
            "t.toml:1:11: string values must be quoted, expected literal string",
        ),
        ("[dns]\n[dns]\n", "t.toml:2:2: duplicate key"),
    ];
    for (text, want) in cases {
        assert_eq!(config_err(text), want, "{text:?}");
    }
    let port = parse_requirements(&src("[experimental_network]\nhttp_port = 70000\n"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        port,
        "t.toml:2:13: `http_port`: invalid value: integer `70000`, expected u16"
    );
}

#[test]
fn codex_layers_come_in_order_and_only_the_selected_profile_applies() {
    let text = "\
model = 'o3'
default_permissions = 'b'
[features.network_proxy]
enabled = true
[network]
mode = 'limited'
[permissions.a.network]
enabled = false
[permissions.b]
filesystem = 'ignored'
[permissions.b.network]
allow_local_binding = true
";
    let by_default = parse_config(&src(text), None).unwrap();
    assert!(!by_default.native);
    assert_eq!(by_default.profiles, ["a", "b"]);
    assert_eq!(by_default.layers.len(), 3);
    let first = &by_default.layers[0].network;
    assert_eq!(first.enabled.as_ref().map(|e| *e.get_ref()), Some(true));
    assert_eq!(
        by_default.layers[1]
            .network
            .mode
            .as_ref()
            .map(|m| m.get_ref().as_str()),
        Some("limited")
    );
    let third = &by_default.layers[2].network;
    assert_eq!(
        third.allow_local_binding.as_ref().map(|b| *b.get_ref()),
        Some(true)
    );
    assert!(third.enabled.is_none());

    let by_flag = parse_config(&src(text), Some("a")).unwrap();
    assert_eq!(
        by_flag.layers[2]
            .network
            .enabled
            .as_ref()
            .map(|e| *e.get_ref()),
        Some(false)
    );
    // A profile defined elsewhere: this file contributes its other tables only.
    let elsewhere = parse_config(&src(text), Some("c")).unwrap();
    assert_eq!(elsewhere.layers.len(), 2);
    assert!(elsewhere.warnings.is_empty());
}

#[test]
fn shorthand_and_undefined_default_profile() {
    let parsed = parse_config(
        &src("default_permissions = 'ws'\n[features]\nnetwork_proxy = false\n"),
        None,
    )
    .unwrap();
    assert_eq!(parsed.layers.len(), 1);
    let enabled = parsed.layers[0].network.enabled.as_ref().unwrap();
    assert_eq!((*enabled.get_ref(), enabled.span()), (false, 54..59));
    assert_eq!(
        parsed.warnings,
        ["t.toml:1:23: `default_permissions = \"ws\"` names a profile this file does not define, so no `[permissions.<name>.network]` settings apply from it"]
    );
}

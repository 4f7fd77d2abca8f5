//! The requirements layer: managed rules and scalars win over every user layer.

use super::*;
use crate::policy::Mode;

#[test]
fn managed_combinations() {
    let user = "\
proxy_url = 'http://127.0.0.1:4000'
allow_local_binding = true
[domains]
'user.com' = 'allow'
'shared.com' = 'allow'
'userdeny.com' = 'deny'
[unix_sockets]
'/run/user.sock' = 'allow'
'/run/shared.sock' = 'allow'
";
    let cases: [(&str, &str, Vec<&str>); 4] = [
        (
            "managed deny beats user allow, managed allow added",
            "[experimental_network]\ndomains = { 'shared.com' = 'deny', 'admin.com' = 'allow' }\n",
            vec![
                "allow user.com @u.toml:4:1",
                "allow shared.com @u.toml:5:1",
                "deny userdeny.com @u.toml:6:1",
                "deny shared.com @r.toml:2:13 managed",
                "allow admin.com @r.toml:2:36 managed",
            ],
        ),
        (
            "managed_allowed_domains_only keeps managed allows and user denies",
            "[experimental_network]\nmanaged_allowed_domains_only = true\nallowed_domains = ['admin.com']\n",
            vec!["deny userdeny.com @u.toml:6:1", "allow admin.com @r.toml:3:20 managed"],
        ),
        (
            "managed_allowed_domains_only without managed allows leaves no allow",
            "[experimental_network]\nmanaged_allowed_domains_only = true\ndenied_domains = ['evil.com']\n",
            vec!["deny userdeny.com @u.toml:6:1", "deny evil.com @r.toml:3:19 managed"],
        ),
        (
            "managed_allowed_domains_only = false changes nothing",
            "[experimental_network]\nmanaged_allowed_domains_only = false\n",
            vec!["allow user.com @u.toml:4:1", "allow shared.com @u.toml:5:1", "deny userdeny.com @u.toml:6:1"],
        ),
    ];
    for (name, req, want) in cases {
        let got = ok(&[("u.toml", user)], Some(("r.toml", req)), &flags());
        assert_eq!(rules(&got), want, "{name}");
    }

    // The flag layer is a user layer: managed-only drops its allows too.
    let sources = Sources {
        allow: vec!["flag.com".into()],
        deny: vec!["flagdeny.com".into()],
        ..flags()
    };
    let got = ok(
        &[],
        Some((
            "r.toml",
            "experimental_network.managed_allowed_domains_only = true\n",
        )),
        &sources,
    );
    assert_eq!(rules(&got), ["deny flagdeny.com @--deny"]);
    assert_eq!(
        got.warnings,
        ["`managed_allowed_domains_only = true` at r.toml:1:53 but the requirements allow no domain, so no domain is allowed"]
    );

    // Managed scalars and Unix-socket entries override the user's.
    let req = "\
[experimental_network]
http_port = 5000
allow_local_binding = false
enable_socks5_udp = false
[experimental_network.unix_sockets]
'/run/shared.sock' = 'deny'
'/run/user.sock' = 'none'
'/run/admin.sock' = 'allow'
";
    let got = ok(&[("u.toml", user)], Some(("r.toml", req)), &flags());
    assert_eq!(got.proxy_addr, addr("127.0.0.1:5000"));
    assert!(!got.allow_local_binding);
    assert!(!got.enable_socks5_udp);
    assert_eq!(
        unix(&got),
        [
            "deny /run/shared.sock @r.toml:6:1",
            "allow /run/admin.sock @r.toml:8:1"
        ]
    );
}

/// The stricter mode wins whichever side sets it: the requirements can narrow `full` to
/// `limited`, never widen a user's `limited`.
#[test]
fn managed_mode_only_narrows() {
    let user = |mode: &str| format!("allowed_domains = ['a.com']\nmode = '{mode}'\n");
    let managed = |mode: &str| format!("[experimental_network]\nmode = '{mode}'\n");
    let cases = [
        (None, None, Mode::Full),
        (Some("full"), Some("limited"), Mode::Limited),
        (None, Some("limited"), Mode::Limited),
        (Some("limited"), Some("full"), Mode::Limited),
        (Some("limited"), None, Mode::Limited),
        (None, Some("full"), Mode::Full),
        (Some("full"), Some("full"), Mode::Full),
    ];
    for (user_mode, managed_mode, want) in cases {
        let user_text = user_mode.map_or_else(|| "allowed_domains = ['a.com']\n".into(), user);
        let req = managed_mode.map(managed);
        let got = ok(
            &[("u.toml", &user_text)],
            req.as_deref().map(|r| ("r.toml", r)),
            &flags(),
        );
        assert_eq!(
            got.mode, want,
            "user {user_mode:?}, managed {managed_mode:?}"
        );
    }
    assert_eq!(
        err(
            &[],
            Some(("r.toml", "experimental_network.mode = 'read-only'\n")),
            &flags()
        ),
        "r.toml:1:29: `mode`: unknown variant `read-only`, expected `full` or `limited`"
    );
}

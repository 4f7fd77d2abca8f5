//! The warnings `validate` and `serve` show for a configuration.

use super::*;

#[test]
fn every_spelling_of_the_global_rule_warns() {
    let text = "enabled = true\nallowed_domains = ['*:443', ' * ', '**.example.com']\n";
    let got = ok(&[("g.toml", text)], None, &flags());
    assert_eq!(
        shown(&got),
        [
            "global `*` allow rule at g.toml:2:20: every public host that is not denied is allowed",
            "global `*` allow rule at g.toml:2:29: every public host that is not denied is allowed",
        ]
    );
}

#[test]
fn warnings() {
    let text = "\
enabled = false
dangerously_allow_all_unix_sockets = true
allowed_domains = ['*', ' * ', '*.com.example']
";
    let got = ok(&[("w.toml", text)], None, &flags());
    assert_eq!(
        shown(&got),
        [
            "sandboxed networking is disabled by `enabled = false` at w.toml:1:11; `serve` and `run` will refuse to start",
            "`dangerously_allow_all_unix_sockets = true` at w.toml:2:38: every Unix socket that is not denied is reachable",
            "global `*` allow rule at w.toml:3:20: every public host that is not denied is allowed",
            "global `*` allow rule at w.toml:3:25: every public host that is not denied is allowed",
        ]
    );
    // Only the effective values warn: a later layer that turns a setting off is quiet.
    let got = ok(
        &[
            ("w.toml", text),
            (
                "x.toml",
                "enabled = true\ndangerously_allow_all_unix_sockets = false\ndenied_domains = []\n",
            ),
        ],
        None,
        &flags(),
    );
    assert_eq!(shown(&got).len(), 2, "{:?}", shown(&got));
    let got = ok(
        &[("d.toml", "default_permissions = 'nope'\n")],
        None,
        &flags(),
    );
    assert_eq!(got.warnings[0], "d.toml:1:23: `default_permissions = \"nope\"` names a profile this file does not define, so no `[permissions.<name>.network]` settings apply from it");
}

//! `public_ranges` and `--public-range`: checked where they are written, replaced as a whole
//! by a later layer, and by the requirements last of all.

use super::*;

/// The effective ranges, as declared.
fn declared(config: &Config) -> Vec<String> {
    config
        .public_ranges
        .declared()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Files, requirements, `--public-range` flags, and the effective list.
type Case<'a> = (
    &'a [(&'a str, &'a str)],
    Option<(&'a str, &'a str)>,
    &'a [&'a str],
    &'a [&'a str],
);

fn with_flags(ranges: &[&str]) -> Sources {
    Sources {
        public_ranges: ranges.iter().map(ToString::to_string).collect(),
        ..Sources::default()
    }
}

#[test]
fn a_range_over_a_never_public_class_is_an_error_at_it() {
    let cases = [
        (
            "public_ranges = ['198.18.0.0/15', '169.254.0.0/15']",
            "p.toml:1:35: public_ranges: 169.254.0.0/15 overlaps link-local 169.254.0.0/16",
        ),
        (
            "public_ranges = ['::/0']",
            "p.toml:1:18: public_ranges: ::/0 overlaps unspecified ::/128",
        ),
        (
            "public_ranges = ['::ffff:169.254.0.0/112']",
            "p.toml:1:18: public_ranges: ::ffff:169.254.0.0/112 overlaps link-local 169.254.0.0/16 (its addresses carry the IPv4 range 169.254.0.0/16)",
        ),
        (
            "public_ranges = ['100.64.0.1/10']",
            "p.toml:1:18: public_ranges: `100.64.0.1/10` has host bits set; write `100.64.0.0/10`",
        ),
        (
            "public_ranges = ['fake-ip']",
            "p.toml:1:18: public_ranges: `fake-ip` is not a CIDR (address/prefix-length, e.g. 198.18.0.0/15)",
        ),
        (
            "public_ranges = '198.18.0.0/15'",
            "p.toml:1:17: `public_ranges`: invalid type: string \"198.18.0.0/15\", expected a sequence",
        ),
    ];
    for (text, message) in cases {
        assert_eq!(err(&[("p.toml", text)], None, &flags()), message, "{text}");
    }
    let requirements = "[experimental_network]\npublic_ranges = ['0.0.0.0/0']\n";
    assert_eq!(
        err(&[], Some(("r.toml", requirements)), &flags()),
        "r.toml:2:18: public_ranges: 0.0.0.0/0 overlaps broadcast 255.255.255.255/32"
    );
    assert_eq!(
        err(&[], None, &with_flags(&["198.18.0.0/15", "127.0.0.0/8"])),
        "--public-range: 127.0.0.0/8 overlaps loopback 127.0.0.0/8"
    );
}

#[test]
fn later_layers_replace_the_list_and_requirements_win() {
    let a = (
        "a.toml",
        "public_ranges = ['198.18.0.0/15', '100.64.0.0/10']\n",
    );
    let b = ("b.toml", "public_ranges = ['192.0.2.0/24']\n");
    let none = ("n.toml", "allow_local_binding = false\n");
    let managed = (
        "r.toml",
        "[experimental_network]\npublic_ranges = ['2001:db8::/32']\n",
    );
    let cleared = ("r.toml", "[experimental_network]\npublic_ranges = []\n");
    let cases: [Case<'_>; 7] = [
        (&[a], None, &[], &["198.18.0.0/15", "100.64.0.0/10"]),
        (&[a, b], None, &[], &["192.0.2.0/24"]),
        (&[a, none], None, &[], &["198.18.0.0/15", "100.64.0.0/10"]),
        (
            &[a],
            None,
            &["::ffff:198.18.0.0/111"],
            &["::ffff:198.18.0.0/111 (= 198.18.0.0/15)"],
        ),
        (&[a], Some(managed), &["192.0.2.0/24"], &["2001:db8::/32"]),
        (&[a], Some(cleared), &["192.0.2.0/24"], &[]),
        (
            &[],
            Some(("r.toml", "[experimental_network]\n")),
            &["192.0.2.0/24"],
            &["192.0.2.0/24"],
        ),
    ];
    for (configs, requirements, flags, want) in cases {
        let config = ok(configs, requirements, &with_flags(flags));
        assert_eq!(
            declared(&config),
            want,
            "{configs:?} {requirements:?} {flags:?}"
        );
        let policy = config.policy().unwrap();
        assert_eq!(policy.options().public_ranges, config.public_ranges);
    }
}

//! Declared public ranges through `Policy`: literals and answers in them are public, so the
//! ordinary rules decide them, and the decision remembers the class they would have had.

use super::*;

fn declaring(rules: &[(&str, Action)], ranges: &[&str]) -> Policy {
    let public_ranges = PublicRanges::new(ranges.iter().map(|r| r.parse().unwrap()));
    policy_with(
        rules,
        PolicyOptions {
            public_ranges,
            ..Default::default()
        },
    )
}

/// `verdict reason [ip=class(was)…]` for a literal target, decided without DNS.
fn literal(p: &Policy, target: &str) -> String {
    let target = Target::parse_authority(target, Some(443)).unwrap();
    let Step::Done(d) = p.decide(&target, Access::Tunnel) else {
        panic!("a literal needs no DNS");
    };
    format!("{} {} [{}]", d.verdict().as_str(), d.reason(), ips(&d))
}

fn ips(d: &Decision) -> String {
    d.ips()
        .iter()
        .map(|c| match c.declared {
            Some(was) => format!("{}={}(was {was})", c.ip, c.class),
            None => format!("{}={}", c.ip, c.class),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn answers(p: &Policy, name: &str, answers: &[&str]) -> Decision {
    let target = Target::parse_authority(name, Some(443)).unwrap();
    let Step::Resolve(pending) = p.decide(&target, Access::Tunnel) else {
        panic!("{name} needs DNS");
    };
    let answers: Vec<IpAddr> = answers.iter().map(|a| a.parse().unwrap()).collect();
    pending.resolved(&answers)
}

#[test]
fn declared_literals_are_public_in_every_spelling() {
    let rules = [("*", Allow), ("198.18.7.0/24", Deny)];
    let plain = policy(&rules);
    let declared = declaring(&rules, &["198.18.0.0/15", "2001:db8::/32", "100.64.0.0/10"]);
    let cases: &[(&str, &str, &str)] = &[
        (
            "198.18.0.1:443",
            "block non-public-ip:benchmarking [198.18.0.1=benchmarking]",
            "allow allowed [198.18.0.1=public(was benchmarking)]",
        ),
        (
            "[::ffff:198.18.0.1]:443",
            "block non-public-ip:benchmarking [198.18.0.1=benchmarking]",
            "allow allowed [198.18.0.1=public(was benchmarking)]",
        ),
        (
            "[64:ff9b::c612:1]:443",
            "block non-public-ip:benchmarking [64:ff9b::c612:1=benchmarking]",
            "allow allowed [64:ff9b::c612:1=public(was benchmarking)]",
        ),
        (
            "[2001:db8::5]:443",
            "block non-public-ip:documentation [2001:db8::5=documentation]",
            "allow allowed [2001:db8::5=public(was documentation)]",
        ),
        // the ordinary rules still decide: a deny CIDR inside the declared range wins
        ("198.18.7.9:443", "block deny-rule []", "block deny-rule []"),
        // what is not declared keeps its class
        (
            "192.0.2.7:443",
            "block non-public-ip:documentation [192.0.2.7=documentation]",
            "block non-public-ip:documentation [192.0.2.7=documentation]",
        ),
        (
            "100.100.100.200:80",
            "block non-public-ip:cgnat [100.100.100.200=cgnat]",
            "block non-public-ip:cgnat [100.100.100.200=cgnat]",
        ),
        (
            "127.0.0.1:80",
            "block non-public-ip:loopback [127.0.0.1=loopback]",
            "block non-public-ip:loopback [127.0.0.1=loopback]",
        ),
        (
            "0xa9fea9fe:80",
            "block non-public-ip:link-local [169.254.169.254=link-local]",
            "block non-public-ip:link-local [169.254.169.254=link-local]",
        ),
        (
            "[::ffff:169.254.169.254]:80",
            "block non-public-ip:link-local [169.254.169.254=link-local]",
            "block non-public-ip:link-local [169.254.169.254=link-local]",
        ),
    ];
    for (target, without, with) in cases {
        assert_eq!(literal(&plain, target), *without, "{target} undeclared");
        assert_eq!(literal(&declared, target), *with, "{target} declared");
    }
}

#[test]
fn declared_answers_are_public_and_the_rest_still_block() {
    let rules = [("**.fake.test", Allow)];
    let plain = policy(&rules);
    let declared = declaring(&rules, &["198.18.0.0/15"]);
    let d = answers(&plain, "crates.fake.test", &["198.18.0.7"]);
    assert_eq!(d.reason().code(), "dns-non-public:benchmarking");
    let d = answers(
        &declared,
        "crates.fake.test",
        &["198.18.0.7", "::ffff:198.18.0.8"],
    );
    assert_eq!(d.reason(), Reason::Allowed);
    assert_eq!(
        ips(&d),
        "198.18.0.7=public(was benchmarking) 198.18.0.8=public(was benchmarking)"
    );
    // one undeclared non-public answer still blocks the name
    let d = answers(&declared, "crates.fake.test", &["198.18.0.7", "127.0.0.1"]);
    assert_eq!(d.reason().code(), "dns-non-public:loopback");
    // a declaration opens no name the rules do not allow
    let target = Target::parse_authority("other.test:443", None).unwrap();
    assert_eq!(
        reason(declared.decide(&target, Access::Tunnel)),
        Reason::NotAllowed
    );
    let target = Target::parse_authority("198.18.0.7:443", None).unwrap();
    assert_eq!(
        reason(declared.decide(&target, Access::Tunnel)),
        Reason::NotAllowed
    );
}

#[test]
fn a_reload_without_the_declaration_revokes_what_it_opened() {
    let rules = [("**.fake.test", Allow)];
    let target = Target::parse_authority("crates.fake.test:443", None).unwrap();
    let dialled: IpAddr = "198.18.0.7".parse().unwrap();
    let declared = declaring(&rules, &["198.18.0.0/15"]);
    assert!(declared.recheck(&target, dialled).is_allowed());
    let reloaded = policy(&rules);
    assert_eq!(
        reloaded.recheck(&target, dialled).reason().code(),
        "dns-non-public:benchmarking"
    );
}

#[test]
fn declarable_denials_name_the_range_to_declare() {
    let p = policy(&[("*", Allow), ("**.fake.test", Allow)]);
    let declared = declaring(&[("*", Allow)], &["100.64.0.0/10"]);
    let literal_of = |p: &Policy, target: &str| {
        let target = Target::parse_authority(target, Some(443)).unwrap();
        match p.decide(&target, Access::Tunnel) {
            Step::Done(d) => d,
            Step::Resolve(_) => panic!("a literal needs no DNS"),
        }
    };
    let shown = |d: &Decision| {
        d.declarable()
            .map(|h| format!("{} {} {}", h.ip, h.class, h.range))
    };
    let cases: &[(Decision, Option<&str>)] = &[
        (
            answers(&p, "a.fake.test", &["192.0.2.7"]),
            Some("192.0.2.7 documentation 192.0.2.0/24"),
        ),
        // a public answer next to a non-public one is the rebinding pattern: no hint
        (
            answers(&p, "a.fake.test", &["93.184.216.34", "192.0.2.7"]),
            None,
        ),
        // but an answer public only by declaration is no such sign
        (
            answers(&declared, "a.fake.test", &["100.64.0.9", "192.0.2.7"]),
            Some("192.0.2.7 documentation 192.0.2.0/24"),
        ),
        (
            answers(&p, "a.fake.test", &["64:ff9b::c612:1"]),
            Some("64:ff9b::c612:1 benchmarking 198.18.0.0/15"),
        ),
        (
            literal_of(&p, "[fd12::1]:443"),
            Some("fd12::1 ula fc00::/7"),
        ),
        (literal_of(&p, "127.0.0.1:443"), None),
        (literal_of(&p, "169.254.169.254:443"), None),
        // declaring 10.0.0.0/8 would not let the name through: its loopback answer blocks it
        (answers(&p, "a.fake.test", &["10.0.0.1", "127.0.0.1"]), None),
        (
            answers(&p, "a.fake.test", &["10.0.0.1", "198.18.0.1"]),
            Some("10.0.0.1 private 10.0.0.0/8"),
        ),
        (literal_of(&p, "93.184.216.34:443"), None),
        (literal_of(&declared, "100.100.100.200:443"), None),
        (literal_of(&p, "[64:ff9b:1::1]:443"), None),
    ];
    for (decision, expected) in cases {
        assert_eq!(
            shown(decision).as_deref(),
            *expected,
            "{:?}",
            decision.reason()
        );
    }
}

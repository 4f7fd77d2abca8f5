use super::*;

fn matcher(rules: &[(&str, Action)]) -> Matcher {
    let mut m = Matcher::default();
    for (text, action) in rules {
        let p = Pattern::parse(text, *action).unwrap();
        m.insert(
            &p,
            RuleInfo {
                pattern: p.to_string().into(),
                action: *action,
                origin: Origin::Api,
                managed: false,
            },
        );
    }
    m
}

/// What decided: `deny <pattern>`, `allow <pattern>` or `none`.
fn verdict(m: &Matcher, host: &str, port: u16) -> String {
    let r = match host.parse::<IpAddr>() {
        Ok(ip) => m.match_ip(ip, port),
        Err(_) => m.match_name(host, port),
    };
    match (r.deny, r.allow) {
        (Some(d), _) => format!("deny {}", m.rule(d).pattern),
        (None, Some((a, _))) => format!("allow {}", m.rule(a).pattern),
        (None, None) => "none".into(),
    }
}

use Action::{Allow, Deny};

#[test]
fn every_matcher_form() {
    let m = matcher(&[
        ("exact.test", Allow),
        ("*.sub.test", Allow),
        ("**.both.test", Allow),
        ("api-*.glob.test", Allow),
        ("*-ai.glob.test", Allow),
        ("port.test:443", Allow),
        ("*.ports.test:8443", Allow),
        ("127.0.0.1", Allow),
        ("[::1]:8080", Allow),
        ("10.1.0.0/16", Allow),
    ]);
    let cases = [
        ("exact.test", 443, "allow exact.test"),
        ("www.exact.test", 443, "none"),
        ("xexact.test", 443, "none"),
        ("sub.test", 443, "none"),
        ("a.sub.test", 443, "allow *.sub.test"),
        ("a.b.c.sub.test", 443, "allow *.sub.test"),
        ("evil-sub.test", 443, "none"),
        ("sub.test.evil", 443, "none"),
        ("both.test", 443, "allow **.both.test"),
        ("x.y.both.test", 443, "allow **.both.test"),
        ("notboth.test", 443, "none"),
        ("api-v1.glob.test", 443, "allow api-*.glob.test"),
        ("api-.glob.test", 443, "allow api-*.glob.test"),
        ("api.glob.test", 443, "none"),
        ("x.api-v1.glob.test", 443, "none"),
        ("us-ai.glob.test", 443, "allow *-ai.glob.test"),
        ("us.x-ai.glob.test", 443, "none"),
        ("port.test", 443, "allow port.test:443"),
        ("port.test", 22, "none"),
        ("a.ports.test", 8443, "allow *.ports.test:8443"),
        ("a.ports.test", 443, "none"),
        ("127.0.0.1", 1, "allow 127.0.0.1"),
        ("::ffff:127.0.0.1", 1, "allow 127.0.0.1"),
        ("127.0.0.2", 1, "none"),
        ("::1", 8080, "allow [::1]:8080"),
        ("::1", 8081, "none"),
        ("10.1.255.255", 1, "allow 10.1.0.0/16"),
        ("10.2.0.0", 1, "none"),
    ];
    for (host, port, want) in cases {
        assert_eq!(verdict(&m, host, port), want, "{host}:{port}");
    }
}

#[test]
fn deny_beats_allow_whatever_the_specificity() {
    let m = matcher(&[
        ("*", Allow),
        ("**.example.com", Allow),
        ("api.example.com", Allow),
        ("*.example.com", Deny),
        ("blocked.test", Deny),
        ("*-exfil.test", Deny),
        ("ssh.test:22", Deny),
        ("10.0.0.0/8", Deny),
        ("192.0.2.1", Deny),
    ]);
    let cases = [
        ("example.com", 443, "allow **.example.com"),
        ("api.example.com", 443, "deny *.example.com"),
        ("deep.api.example.com", 443, "deny *.example.com"),
        ("blocked.test", 443, "deny blocked.test"),
        ("sub.blocked.test", 443, "allow *"),
        ("data-exfil.test", 443, "deny *-exfil.test"),
        ("ssh.test", 22, "deny ssh.test:22"),
        ("ssh.test", 443, "allow *"),
        ("anything.else", 443, "allow *"),
        ("10.9.9.9", 443, "deny 10.0.0.0/8"),
        ("::ffff:10.9.9.9", 443, "deny 10.0.0.0/8"),
        ("64:ff9b::a09:909", 443, "deny 10.0.0.0/8"),
        ("2002:a09:909::", 443, "deny 10.0.0.0/8"),
        ("192.0.2.1", 443, "deny 192.0.2.1"),
        ("8.8.8.8", 443, "allow *"),
    ];
    for (host, port, want) in cases {
        assert_eq!(verdict(&m, host, port), want, "{host}:{port}");
    }
}

#[test]
fn cidrs_of_many_lengths_and_families() {
    let m = matcher(&[
        ("10.0.0.0/8", Allow),
        ("10.1.2.0/24", Deny),
        ("10.1.0.0/16", Allow),
        ("0.0.0.0/0", Allow),
        ("fd00::/8", Allow),
        ("fd00:1::/32", Deny),
        ("192.168.1.7/32", Deny),
    ]);
    let cases = [
        ("10.1.2.3", "deny 10.1.2.0/24"),
        ("10.1.3.3", "allow 10.1.0.0/16"),
        ("10.200.0.1", "allow 10.0.0.0/8"),
        ("11.0.0.1", "allow 0.0.0.0/0"),
        ("192.168.1.7", "deny 192.168.1.7/32"),
        ("192.168.1.8", "allow 0.0.0.0/0"),
        ("fd00:2::1", "allow fd00::/8"),
        ("fd00:1::1", "deny fd00:1::/32"),
        ("fe80::1", "none"),
    ];
    for (host, want) in cases {
        assert_eq!(verdict(&m, host, 1), want, "{host}");
    }
}

/// An IPv4-mapped range is the IPv4 range it maps, as allow and as deny.
#[test]
fn mapped_ranges_match_their_ipv4_addresses() {
    let m = matcher(&[
        ("::ffff:10.0.0.0/104", Allow),
        ("::ffff:127.0.0.0/104", Deny),
        ("2001:db8::/32", Allow),
    ]);
    let cases = [
        ("10.1.2.3", "allow 10.0.0.0/8"),
        ("::ffff:10.1.2.3", "allow 10.0.0.0/8"),
        ("127.0.0.1", "deny 127.0.0.0/8"),
        ("::ffff:127.0.0.1", "deny 127.0.0.0/8"),
        ("11.0.0.1", "none"),
    ];
    for (host, want) in cases {
        assert_eq!(verdict(&m, host, 1), want, "{host}");
    }
    let wide = matcher(&[("::/0", Deny), ("8.8.8.8", Allow)]);
    assert_eq!(verdict(&wide, "8.8.8.8", 1), "deny ::/0");
    let wide = matcher(&[("::/0", Allow)]);
    assert_eq!(verdict(&wide, "1.2.3.4", 1), "allow ::/0");
    let v6_only = matcher(&[("2000::/3", Deny), ("1.2.3.4", Allow)]);
    assert_eq!(verdict(&v6_only, "1.2.3.4", 1), "allow 1.2.3.4");
}

/// A CIDR is an exact local exception only when it lies inside one local class.
#[test]
fn only_ranges_inside_one_local_class_are_exact() {
    let m = matcher(&[
        ("0.0.0.0/0", Allow),
        ("::/0", Allow),
        ("10.1.0.0/16", Allow),
        ("127.0.0.0/8", Allow),
        ("169.0.0.0/8", Allow),
        ("fd00::/8", Allow),
    ]);
    let kind = |ip: &str| m.match_ip(ip.parse().unwrap(), 1).allow.map(|a| a.1);
    let cases = [
        ("10.1.2.3", AllowKind::Exact),
        ("10.2.0.1", AllowKind::Wildcard),
        ("127.0.0.1", AllowKind::Exact),
        ("169.254.169.254", AllowKind::Wildcard),
        ("fd00::1", AllowKind::Exact),
        ("fe80::1", AllowKind::Wildcard),
        ("::1", AllowKind::Wildcard),
        ("8.8.8.8", AllowKind::Wildcard),
    ];
    for (ip, want) in cases {
        assert_eq!(kind(ip), Some(want), "{ip}");
    }
}

#[test]
fn ipv4_mapped_cidrs_cover_the_ipv4_addresses_they_map() {
    // Found by `fuzz/` (matcher): a destination is matched as IPv4 once canonical, so a
    // range written in its IPv4-mapped spelling is compiled as the IPv4 range it maps.
    let m = matcher(&[
        ("*", Allow),
        ("::ffff:10.0.0.0/104", Deny),
        ("::ffff:127.0.0.0/120", Allow),
    ]);
    let cases = [
        ("10.1.2.3", "deny 10.0.0.0/8"),
        ("::ffff:10.1.2.3", "deny 10.0.0.0/8"),
        ("64:ff9b::a01:203", "deny 10.0.0.0/8"),
        ("11.0.0.1", "allow *"),
        ("127.0.0.9", "allow 127.0.0.0/24"),
        ("127.0.1.9", "allow *"),
    ];
    for (host, want) in cases {
        assert_eq!(verdict(&m, host, 1), want, "{host}");
    }
    let shadowed = m.shadowing_deny(&Pattern::parse("10.1.0.0/16", Allow).unwrap());
    assert_eq!(shadowed.map(|r| &*m.rule(r).pattern), Some("10.0.0.0/8"));
    let shadowed = m.shadowing_deny(&Pattern::parse("::ffff:10.1.0.0/112", Allow).unwrap());
    assert_eq!(shadowed.map(|r| &*m.rule(r).pattern), Some("10.0.0.0/8"));
}

#[test]
fn globs_are_found_under_their_literal_suffix() {
    let m = matcher(&[
        ("us-*.cloud.test", Allow),
        ("a.b*.example.test", Allow),
        ("*-evil.cloud.test", Deny),
        ("x*y.test", Allow),
    ]);
    let cases = [
        ("us-east.cloud.test", "allow us-*.cloud.test"),
        ("us-evil.cloud.test", "deny *-evil.cloud.test"),
        ("eu-west.cloud.test", "none"),
        ("a.bee.example.test", "allow a.b*.example.test"),
        ("a.cee.example.test", "none"),
        ("z.bee.example.test", "none"),
        ("xzzy.test", "allow x*y.test"),
        ("xy.test", "allow x*y.test"),
        ("a.xy.test", "none"),
    ];
    for (host, want) in cases {
        assert_eq!(verdict(&m, host, 1), want, "{host}");
    }
}

#[test]
fn the_most_specific_allow_is_reported() {
    let m = matcher(&[
        ("*", Allow),
        ("*.example.com", Allow),
        ("**.api.example.com", Allow),
        ("v1.api.example.com", Allow),
    ]);
    assert_eq!(
        verdict(&m, "v1.api.example.com", 1),
        "allow v1.api.example.com"
    );
    assert_eq!(
        verdict(&m, "api.example.com", 1),
        "allow **.api.example.com"
    );
    assert_eq!(
        verdict(&m, "x.api.example.com", 1),
        "allow **.api.example.com"
    );
    assert_eq!(verdict(&m, "www.example.com", 1), "allow *.example.com");
    assert_eq!(verdict(&m, "other.test", 1), "allow *");
}

#[test]
fn an_exact_rule_beats_the_apex_of_a_double_star_rule_in_any_order() {
    // Found by `fuzz/` (matcher): both sit on the same name, and the first written won.
    for rules in [
        [("**.x.test", Allow), ("x.test:80", Allow)],
        [("x.test:80", Allow), ("**.x.test", Allow)],
    ] {
        let m = matcher(&rules);
        assert_eq!(verdict(&m, "x.test", 80), "allow x.test:80", "{rules:?}");
        assert_eq!(
            m.match_name("x.test", 80).allow.unwrap().1,
            AllowKind::Exact
        );
        assert_eq!(verdict(&m, "x.test", 443), "allow **.x.test", "{rules:?}");
    }
}

#[test]
fn allow_kind_tells_exact_from_wildcard() {
    let m = matcher(&[
        ("localhost", Allow),
        ("**.dev.test", Allow),
        ("127.0.0.1", Allow),
    ]);
    assert_eq!(
        m.match_name("localhost", 1).allow.unwrap().1,
        AllowKind::Exact
    );
    assert_eq!(
        m.match_name("dev.test", 1).allow.unwrap().1,
        AllowKind::Wildcard
    );
    let ip = "127.0.0.1".parse().unwrap();
    assert_eq!(m.match_ip(ip, 1).allow.unwrap().1, AllowKind::Exact);
    let g = matcher(&[("*", Allow)]);
    assert_eq!(g.match_ip(ip, 1).allow.unwrap().1, AllowKind::Wildcard);
}

#[test]
fn shadowed_allow_rules_are_found() {
    let m = matcher(&[
        ("**.corp.test", Deny),
        ("exact.test", Deny),
        ("mail.test:25", Deny),
        ("10.0.0.0/8", Deny),
    ]);
    let shadow = |text: &str| {
        m.shadowing_deny(&Pattern::parse(text, Allow).unwrap())
            .map(|r| m.rule(r).pattern.to_string())
    };
    assert_eq!(shadow("api.corp.test").as_deref(), Some("**.corp.test"));
    assert_eq!(shadow("corp.test").as_deref(), Some("**.corp.test"));
    assert_eq!(shadow("*.corp.test").as_deref(), Some("**.corp.test"));
    assert_eq!(shadow("**.x.corp.test").as_deref(), Some("**.corp.test"));
    assert_eq!(shadow("exact.test:443").as_deref(), Some("exact.test"));
    assert_eq!(shadow("mail.test:25").as_deref(), Some("mail.test:25"));
    assert_eq!(shadow("10.1.0.0/16").as_deref(), Some("10.0.0.0/8"));
    assert_eq!(shadow("10.1.2.3").as_deref(), Some("10.0.0.0/8"));
    // Partly covered rules still do something and are not reported.
    assert_eq!(shadow("mail.test"), None);
    assert_eq!(shadow("**.exact.test"), None);
    assert_eq!(shadow("other.test"), None);
    assert_eq!(shadow("*"), None);
}

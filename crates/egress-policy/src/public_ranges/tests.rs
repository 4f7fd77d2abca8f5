use super::*;
use crate::classifier::classify;
use IpClass::*;

fn ranges(list: &[&str]) -> PublicRanges {
    PublicRanges::new(list.iter().map(|r| r.parse::<DeclaredRange>().unwrap()))
}

fn declared(r: &PublicRanges, ip: &str) -> bool {
    let ip: IpAddr = ip.parse().unwrap();
    r.contains(ip, classify(ip))
}

/// Every never-public class refuses a range over it, named by the row it overlaps; IPv6
/// spellings of IPv4 addresses are judged as the IPv4 range they carry.
#[test]
fn ranges_over_never_public_addresses_are_refused() {
    let cases: &[(&str, &str)] = &[
        ("169.254.0.0/15", "169.254.0.0/15 overlaps link-local 169.254.0.0/16"),
        ("169.254.169.254/32", "169.254.169.254/32 overlaps link-local 169.254.0.0/16"),
        ("127.0.0.0/8", "127.0.0.0/8 overlaps loopback 127.0.0.0/8"),
        ("126.0.0.0/7", "126.0.0.0/7 overlaps loopback 127.0.0.0/8"),
        ("0.0.0.0/8", "0.0.0.0/8 overlaps unspecified 0.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0 overlaps broadcast 255.255.255.255/32"),
        ("224.0.0.0/4", "224.0.0.0/4 overlaps multicast 224.0.0.0/4"),
        ("239.0.0.0/8", "239.0.0.0/8 overlaps multicast 224.0.0.0/4"),
        ("224.0.0.0/3", "224.0.0.0/3 overlaps broadcast 255.255.255.255/32"),
        ("240.0.0.0/4", "240.0.0.0/4 overlaps broadcast 255.255.255.255/32"),
        ("255.255.255.255/32", "255.255.255.255/32 overlaps broadcast 255.255.255.255/32"),
        ("::/0", "::/0 overlaps unspecified ::/128"),
        ("::/96", "::/96 overlaps unspecified ::/128"),
        ("::1/128", "::1/128 overlaps loopback ::1/128"),
        ("fe80::/10", "fe80::/10 overlaps link-local fe80::/10"),
        ("fe80::/9", "fe80::/9 overlaps link-local fe80::/10"),
        ("ff02::/16", "ff02::/16 overlaps multicast ff00::/8"),
        ("2001::/32", "2001::/32 overlaps teredo 2001::/32"),
        ("2000::/3", "2000::/3 overlaps teredo 2001::/32"),
        (
            "64:ff9b:1::/48",
            "64:ff9b:1::/48 overlaps private 64:ff9b:1::/48 (local-use NAT64, which can translate to any IPv4 address)",
        ),
        (
            "64:ff9b::/32",
            "64:ff9b::/32 overlaps private 64:ff9b:1::/48 (local-use NAT64, which can translate to any IPv4 address)",
        ),
        (
            "::ffff:0:0/96",
            "::ffff:0.0.0.0/96 overlaps broadcast 255.255.255.255/32 (its addresses carry the IPv4 range 0.0.0.0/0)",
        ),
        (
            "::ffff:0:0/97",
            "::ffff:0.0.0.0/97 overlaps unspecified 0.0.0.0/8 (its addresses carry the IPv4 range 0.0.0.0/1)",
        ),
        (
            "::ffff:169.254.0.0/112",
            "::ffff:169.254.0.0/112 overlaps link-local 169.254.0.0/16 (its addresses carry the IPv4 range 169.254.0.0/16)",
        ),
        (
            "::ffff:127.0.0.1/128",
            "::ffff:127.0.0.1/128 overlaps loopback 127.0.0.0/8 (its addresses carry the IPv4 range 127.0.0.1/32)",
        ),
        (
            "::ffff:0:0:0/96",
            "::ffff:0:0:0/96 overlaps broadcast 255.255.255.255/32 (its addresses carry the IPv4 range 0.0.0.0/0)",
        ),
        (
            "64:ff9b::a9fe:a9fe/128",
            "64:ff9b::a9fe:a9fe/128 overlaps link-local 169.254.0.0/16 (its addresses carry the IPv4 range 169.254.169.254/32)",
        ),
        (
            "64:ff9b::/96",
            "64:ff9b::/96 overlaps broadcast 255.255.255.255/32 (its addresses carry the IPv4 range 0.0.0.0/0)",
        ),
        (
            "2002:7f00::/24",
            "2002:7f00::/24 overlaps loopback 127.0.0.0/8 (its addresses carry the IPv4 range 127.0.0.0/8)",
        ),
        (
            "2002::/16",
            "2002::/16 overlaps broadcast 255.255.255.255/32 (its addresses carry the IPv4 range 0.0.0.0/0)",
        ),
        (
            "2002::/15",
            "2002::/15 overlaps broadcast 255.255.255.255/32 (its addresses carry the IPv4 range 0.0.0.0/0)",
        ),
        (
            "2002:a9fe:a9fe:1::/64",
            "2002:a9fe:a9fe:1::/64 overlaps link-local 169.254.0.0/16 (its addresses carry the IPv4 range 169.254.169.254/32)",
        ),
        ("198.18.0.1/15", "`198.18.0.1/15` has host bits set; write `198.18.0.0/15`"),
        ("198.18.0.0", "`198.18.0.0` is not a CIDR (address/prefix-length, e.g. 198.18.0.0/15)"),
        ("198.18.0.0/33", "`198.18.0.0/33` is not a CIDR (address/prefix-length, e.g. 198.18.0.0/15)"),
        ("fake-ip", "`fake-ip` is not a CIDR (address/prefix-length, e.g. 198.18.0.0/15)"),
    ];
    for (input, message) in cases {
        let err = input.parse::<DeclaredRange>().unwrap_err();
        assert_eq!(err.to_string(), *message, "{input}");
    }
}

/// What a declarable range covers: itself, or the IPv4 range an IPv6 spelling carries.
#[test]
fn declarable_ranges_cover_what_their_addresses_are() {
    let cases: &[(&str, &str)] = &[
        ("198.18.0.0/15", "198.18.0.0/15"),
        ("100.64.0.0/10", "100.64.0.0/10"),
        ("192.0.2.0/24", "192.0.2.0/24"),
        ("192.0.0.0/24", "192.0.0.0/24"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("198.0.0.0/8", "198.0.0.0/8"),
        ("fd00::/8", "fd00::/8"),
        ("2001:db8::/32", "2001:db8::/32"),
        (
            "::ffff:198.18.0.0/111",
            "::ffff:198.18.0.0/111 (= 198.18.0.0/15)",
        ),
        (
            "::ffff:0:c612:0/111",
            "::ffff:0:c612:0/111 (= 198.18.0.0/15)",
        ),
        ("::c612:0/111", "::c612:0/111 (= 198.18.0.0/15)"),
        (
            "64:ff9b::c612:0/111",
            "64:ff9b::c612:0/111 (= 198.18.0.0/15)",
        ),
        ("2002:c612::/31", "2002:c612::/31 (= 198.18.0.0/15)"),
        ("2002:c612:1::/48", "2002:c612:1::/48 (= 198.18.0.1/32)"),
        ("2002:c612:1:5::/64", "2002:c612:1:5::/64 (= 198.18.0.1/32)"),
    ];
    for (input, shown) in cases {
        let range: DeclaredRange = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(range.to_string(), *shown, "{input}");
    }
}

/// Every range (any prefix length) around a never-public address, in every spelling of it, is
/// refused: no declaration can make loopback, link-local, metadata and the rest public.
#[test]
fn no_prefix_around_a_never_public_address_is_accepted() {
    let v4: [Ipv4Addr; 6] = [
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(0, 0, 0, 0),
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::new(255, 255, 255, 255),
        Ipv4Addr::new(127, 255, 255, 254),
    ];
    let spellings = |ip: Ipv4Addr| {
        let low = u128::from(u32::from(ip));
        let o = ip.octets();
        [
            IpAddr::V4(ip),
            IpAddr::V6(ip.to_ipv6_mapped()),
            IpAddr::V6(Ipv6Addr::from((0xffff_0000u128 << 32) | low)),
            IpAddr::V6(Ipv6Addr::from(low)),
            IpAddr::V6(Ipv6Addr::from((0x64_ff9bu128 << 96) | low)),
            IpAddr::V6(Ipv6Addr::new(
                0x2002,
                u16::from_be_bytes([o[0], o[1]]),
                u16::from_be_bytes([o[2], o[3]]),
                0,
                0,
                0,
                0,
                1,
            )),
        ]
    };
    let v6: [IpAddr; 6] = [
        "::1".parse().unwrap(),
        "::".parse().unwrap(),
        "fe80::1".parse().unwrap(),
        "ff02::1".parse().unwrap(),
        "2001::a9fe:a9fe".parse().unwrap(),
        "64:ff9b:1::a9fe:a9fe".parse().unwrap(),
    ];
    let all = v4.into_iter().flat_map(spellings).chain(v6);
    let mut tried = 0;
    for ip in all {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        for len in 0..=max {
            let net = IpNet::new(ip, len).unwrap().trunc();
            tried += 1;
            assert!(
                DeclaredRange::new(net).is_err(),
                "{net} was accepted around {ip}"
            );
        }
    }
    assert_eq!(tried, 6 * 33 + 6 * 5 * 129 + 6 * 129);
}

/// An address is declared when its identity (the IPv4 address an IPv6 spelling carries) is in
/// a range; the metadata addresses inside declarable classes never are.
#[test]
fn lookups_meet_every_spelling_and_skip_metadata() {
    let r = ranges(&[
        "198.18.0.0/15",
        "2001:db8::/32",
        "100.64.0.0/10",
        "192.0.0.0/24",
        "fd00::/8",
    ]);
    let cases: &[(&str, bool)] = &[
        ("198.18.0.0", true),
        ("198.19.255.255", true),
        ("::ffff:198.18.0.1", true),
        ("::ffff:0:198.18.0.1", true),
        ("::198.18.0.1", true),
        ("64:ff9b::c612:1", true),
        ("2002:c612:1::1", true),
        ("198.17.255.255", false),
        ("198.20.0.0", false),
        ("2001:db8::1", true),
        ("2001:db9::1", false),
        ("100.64.0.1", true),
        ("100.100.100.200", false),
        ("::ffff:100.100.100.200", false),
        ("64:ff9b::6464:64c8", false),
        ("2002:6464:64c8::1", false),
        ("192.0.0.1", true),
        ("192.0.0.192", false),
        ("fd00:ec2::253", true),
        ("fd00:ec2::254", false),
        ("127.0.0.1", false),
        ("::1", false),
        ("169.254.169.254", false),
        ("::ffff:169.254.169.254", false),
        ("::ffff:127.0.0.1", false),
        ("10.0.0.1", false),
    ];
    for (ip, expected) in cases {
        assert_eq!(declared(&r, ip), *expected, "{ip}");
    }
    assert!(!declared(&PublicRanges::default(), "198.18.0.1"));
}

/// Overlapping and adjacent ranges merge; the gaps between them stay undeclared.
#[test]
fn overlapping_ranges_merge_and_gaps_stay() {
    let r = ranges(&[
        "198.19.0.0/16",
        "198.18.0.0/16",
        "10.0.0.0/8",
        "10.1.0.0/16",
        "192.0.2.0/25",
        "192.0.2.192/26",
    ]);
    assert_eq!(
        &*r.v4,
        &[
            (
                u32::from(Ipv4Addr::new(10, 0, 0, 0)),
                u32::from(Ipv4Addr::new(10, 255, 255, 255))
            ),
            (
                u32::from(Ipv4Addr::new(192, 0, 2, 0)),
                u32::from(Ipv4Addr::new(192, 0, 2, 127))
            ),
            (
                u32::from(Ipv4Addr::new(192, 0, 2, 192)),
                u32::from(Ipv4Addr::new(192, 0, 2, 255))
            ),
            (
                u32::from(Ipv4Addr::new(198, 18, 0, 0)),
                u32::from(Ipv4Addr::new(198, 19, 255, 255))
            ),
        ]
    );
    let cases: &[(&str, bool)] = &[
        ("10.200.0.1", true),
        ("192.0.2.127", true),
        ("192.0.2.128", false),
        ("192.0.2.191", false),
        ("192.0.2.192", true),
        ("198.18.255.255", true),
        ("198.19.0.0", true),
    ];
    for (ip, expected) in cases {
        assert_eq!(declared(&r, ip), *expected, "{ip}");
    }
    assert_eq!(r.declared().len(), 6, "every range is kept as declared");
}

/// The row a hint names: the IPv4 row for an IPv6 spelling, nothing for what no declaration
/// can open.
#[test]
fn declarable_names_the_row_to_declare() {
    let cases: &[(&str, Option<(&str, IpClass)>)] = &[
        ("192.0.2.7", Some(("192.0.2.0/24", Documentation))),
        ("::ffff:192.0.2.7", Some(("192.0.2.0/24", Documentation))),
        ("64:ff9b::c000:207", Some(("192.0.2.0/24", Documentation))),
        ("198.18.0.1", Some(("198.18.0.0/15", Benchmarking))),
        ("100.64.0.1", Some(("100.64.0.0/10", Cgnat))),
        ("10.1.2.3", Some(("10.0.0.0/8", Private))),
        ("240.0.0.1", Some(("240.0.0.0/4", Reserved))),
        ("2001:db8::1", Some(("2001:db8::/32", Documentation))),
        ("fd12::1", Some(("fc00::/7", Ula))),
        ("93.184.216.34", None),
        ("127.0.0.1", None),
        ("169.254.169.254", None),
        ("255.255.255.255", None),
        ("100.100.100.200", None),
        ("fd00:ec2::254", None),
        ("64:ff9b:1::1", None),
        ("2001::1", None),
        ("fe80::1", None),
    ];
    for (ip, expected) in cases {
        let got = declarable(ip.parse().unwrap());
        let expected = expected.map(|(net, class)| (net.parse::<IpNet>().unwrap(), class));
        assert_eq!(got, expected, "{ip}");
    }
}

use super::*;
use IpClass::*;

fn c(s: &str) -> IpClass {
    classify(s.parse().unwrap())
}

/// Every row of the table at its first and last address, and the neighbours just outside.
#[test]
fn every_range_at_its_boundaries() {
    let cases: &[(&str, IpClass)] = &[
        ("0.0.0.0", Unspecified),
        ("0.255.255.255", Unspecified),
        ("1.0.0.0", Public),
        ("9.255.255.255", Public),
        ("10.0.0.0", Private),
        ("10.255.255.255", Private),
        ("11.0.0.0", Public),
        ("100.63.255.255", Public),
        ("100.64.0.0", Cgnat),
        ("100.127.255.255", Cgnat),
        ("100.128.0.0", Public),
        ("126.255.255.255", Public),
        ("127.0.0.0", Loopback),
        ("127.0.0.1", Loopback),
        ("127.255.255.255", Loopback),
        ("128.0.0.0", Public),
        ("169.253.255.255", Public),
        ("169.254.0.0", LinkLocal),
        ("169.254.169.254", LinkLocal),
        ("169.254.255.255", LinkLocal),
        ("169.255.0.0", Public),
        ("172.15.255.255", Public),
        ("172.16.0.0", Private),
        ("172.31.255.255", Private),
        ("172.32.0.0", Public),
        ("191.255.255.255", Public),
        ("192.0.0.0", Reserved),
        ("192.0.0.255", Reserved),
        ("192.0.1.0", Public),
        ("192.0.1.255", Public),
        ("192.0.2.0", Documentation),
        ("192.0.2.255", Documentation),
        ("192.0.3.0", Public),
        ("192.88.98.255", Public),
        ("192.88.99.0", Reserved),
        ("192.88.99.255", Reserved),
        ("192.88.100.0", Public),
        ("192.167.255.255", Public),
        ("192.168.0.0", Private),
        ("192.168.255.255", Private),
        ("192.169.0.0", Public),
        ("198.17.255.255", Public),
        ("198.18.0.0", Benchmarking),
        ("198.19.255.255", Benchmarking),
        ("198.20.0.0", Public),
        ("198.51.99.255", Public),
        ("198.51.100.0", Documentation),
        ("198.51.100.255", Documentation),
        ("198.51.101.0", Public),
        ("203.0.112.255", Public),
        ("203.0.113.0", Documentation),
        ("203.0.113.255", Documentation),
        ("203.0.114.0", Public),
        ("223.255.255.255", Public),
        ("224.0.0.0", Multicast),
        ("239.255.255.255", Multicast),
        ("240.0.0.0", Reserved),
        ("255.255.255.254", Reserved),
        ("255.255.255.255", Broadcast),
        ("8.8.8.8", Public),
        ("1.1.1.1", Public),
        // IPv6
        ("::", Unspecified),
        ("::1", Loopback),
        ("::2", Unspecified), // compatible form of 0.0.0.2
        ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Public),
        ("fe80::", LinkLocal),
        ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", LinkLocal),
        ("fec0::", Private),
        ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Private),
        ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Public),
        ("fc00::", Ula),
        ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Ula),
        ("ff00::", Multicast),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Multicast),
        ("ff02::1", Multicast),
        ("ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Public),
        ("100::", Reserved),
        ("100::ffff:ffff:ffff:ffff", Reserved),
        ("100:0:0:1::", Public),
        ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", Public),
        ("2001:db8::", Documentation),
        ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Documentation),
        ("2001:db9::", Public),
        ("2001::", Teredo),
        ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", Teredo),
        ("2001:1::", Public),
        ("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Public),
        ("64:ff9b:1::", Private),
        ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Private),
        ("64:ff9b:2::", Public),
        ("2606:4700:4700::1111", Public),
        ("2a00:1450:4001::1", Public),
    ];
    for (ip, want) in cases {
        assert_eq!(c(ip), *want, "{ip}");
    }
}

/// IPv6 forms that deliver to an IPv4 address are judged as that address.
#[test]
fn embedded_ipv4_is_classified_as_ipv4() {
    let cases: &[(&str, IpClass)] = &[
        ("::ffff:127.0.0.1", Loopback),
        ("::ffff:7f00:1", Loopback),
        ("::ffff:10.0.0.1", Private),
        ("::ffff:169.254.169.254", LinkLocal),
        ("::ffff:8.8.8.8", Public),
        ("::ffff:0.0.0.0", Unspecified),
        ("::127.0.0.1", Loopback),
        ("::192.168.1.1", Private),
        ("::8.8.8.8", Public),
        ("64:ff9b::127.0.0.1", Loopback),
        ("64:ff9b::a9fe:a9fe", LinkLocal),
        ("64:ff9b::8.8.8.8", Public),
        ("2002:7f00:1::", Loopback),
        ("2002:a00:1::1", Private),
        ("2002:c0a8:101::", Private),
        ("2002:808:808::", Public),
        ("2002:e000:1::", Multicast),
    ];
    for (ip, want) in cases {
        assert_eq!(c(ip), *want, "{ip}");
    }
    // Neighbours of the embedding prefixes are not unwrapped.
    assert_eq!(embedded_v4("::fffe:7f00:1".parse().unwrap()), None);
    assert_eq!(embedded_v4("64:ff9b:0:0:1::7f00:1".parse().unwrap()), None);
    assert_eq!(embedded_v4("2003:7f00:1::".parse().unwrap()), None);
    assert_eq!(embedded_v4("::1".parse().unwrap()), None);
    // RFC 2765 IPv4-translated addresses carry an IPv4 address too.
    assert_eq!(c("::ffff:0:127.0.0.1"), Loopback);
    assert_eq!(c("::ffff:0:a9fe:a9fe"), LinkLocal);
    assert_eq!(c("::ffff:0:8.8.8.8"), Public);
    assert_eq!(embedded_v4("::fffe:0:7f00:1".parse().unwrap()), None);
}

/// A range has a class only when every address in it has that class.
#[test]
fn ranges_inside_one_class() {
    let n = |s: &str| net_class(s.parse().unwrap());
    let cases: &[(&str, Option<IpClass>)] = &[
        ("127.0.0.0/8", Some(Loopback)),
        ("127.0.0.1/32", Some(Loopback)),
        ("127.0.0.0/7", None),
        ("126.0.0.0/8", Some(Public)),
        ("10.1.0.0/16", Some(Private)),
        ("10.0.0.0/8", Some(Private)),
        ("10.0.0.0/7", None),
        ("169.254.0.0/16", Some(LinkLocal)),
        ("169.254.169.254/32", Some(LinkLocal)),
        ("169.0.0.0/8", None),
        ("0.0.0.0/0", None),
        ("8.0.0.0/8", Some(Public)),
        ("240.0.0.0/4", None),
        ("255.255.255.254/31", None),
        ("255.255.255.255/32", Some(Broadcast)),
        ("240.0.0.0/5", Some(Reserved)),
        ("::/0", None),
        ("::1/128", Some(Loopback)),
        ("::/128", Some(Unspecified)),
        ("::/127", None),
        ("fd00::/8", Some(Ula)),
        ("fc00::/7", Some(Ula)),
        ("fc00::/6", None),
        ("fe80::/10", Some(LinkLocal)),
        ("2606:4700::/32", Some(Public)),
        ("2000::/3", None),
        ("::ffff:0:0/96", None),
        ("::ffff:127.0.0.0/104", Some(Loopback)),
        ("::ffff:10.1.0.0/112", Some(Private)),
        ("::ffff:0:10.0.0.0/104", Some(Private)),
        ("::10.0.0.0/104", Some(Private)),
        ("64:ff9b::7f00:0/104", Some(Loopback)),
        ("64:ff9b::/96", None),
        ("2002:a00::/24", Some(Private)),
        ("2002::/16", None),
        ("2002:808:808::/48", Some(Public)),
        ("::/64", None),
    ];
    for (net, want) in cases {
        assert_eq!(n(net), *want, "{net}");
    }
}

#[test]
fn local_and_never_reachable_classes() {
    for class in [Loopback, Private, Cgnat, LinkLocal, Ula] {
        assert!(class.is_local() && !class.is_public(), "{class}");
    }
    for class in [
        Unspecified,
        Reserved,
        Documentation,
        Benchmarking,
        Multicast,
        Broadcast,
        Teredo,
    ] {
        assert!(!class.is_local() && !class.is_public(), "{class}");
    }
    assert!(Public.is_public() && !Public.is_local());
}

#[test]
fn the_published_table_agrees_with_classify() {
    for (net, class) in ranges() {
        assert_eq!(classify(net.network()), class, "{net}");
        // 255.255.255.255 is its own row inside 240.0.0.0/4.
        let last = net.broadcast();
        let want = if last == IpAddr::V4(Ipv4Addr::BROADCAST) {
            Broadcast
        } else {
            class
        };
        assert_eq!(classify(last), want, "{net}");
    }
}

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn name(s: &str) -> Result<Host<'static>, InvalidHost> {
    Ok(Host::Name(Cow::Owned(s.to_string())))
}
fn v4(a: u8, b: u8, c: u8, d: u8) -> Result<Host<'static>, InvalidHost> {
    Ok(Host::Ip(IpAddr::V4(Ipv4Addr::new(a, b, c, d))))
}
fn v6(s: &str) -> Result<Host<'static>, InvalidHost> {
    Ok(Host::Ip(IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())))
}

/// Spellings from SSRF write-ups and what each must canonicalise to.
fn ssrf_spellings() -> Vec<(&'static str, Result<Host<'static>, InvalidHost>)> {
    use InvalidHost::*;
    vec![
        // plain names, case, trailing dot
        ("example.com", name("example.com")),
        ("EXAMPLE.com", name("example.com")),
        ("example.com.", name("example.com")),
        ("Example.COM.", name("example.com")),
        ("under_score.example", name("under_score.example")),
        ("example.com..", Err(EmptyLabel)),
        ("a..b", Err(EmptyLabel)),
        (".example.com", Err(EmptyLabel)),
        (".", Err(EmptyLabel)),
        ("", Err(Empty)),
        // legacy IPv4 spellings of loopback
        ("127.0.0.1", v4(127, 0, 0, 1)),
        ("127.1", v4(127, 0, 0, 1)),
        ("127.0.1", v4(127, 0, 0, 1)),
        ("2130706433", v4(127, 0, 0, 1)),
        ("0x7f000001", v4(127, 0, 0, 1)),
        ("0x7f.0.0.1", v4(127, 0, 0, 1)),
        ("0X7F.0.0.1", v4(127, 0, 0, 1)),
        ("0177.0.0.1", v4(127, 0, 0, 1)),
        ("0177.0.0.01", v4(127, 0, 0, 1)),
        ("017700000001", v4(127, 0, 0, 1)),
        ("0x7f.1", v4(127, 0, 0, 1)),
        ("127.0.0.1.", v4(127, 0, 0, 1)),
        ("0", v4(0, 0, 0, 0)),
        ("0.0.0.0", v4(0, 0, 0, 0)),
        ("169.254.169.254", v4(169, 254, 169, 254)),
        ("0xa9fea9fe", v4(169, 254, 169, 254)),
        ("2852039166", v4(169, 254, 169, 254)),
        ("0251.0376.0251.0376", v4(169, 254, 169, 254)),
        ("10.0x1.0", v4(10, 1, 0, 0)),
        // percent-encoded forms decode before parsing
        ("127%2e0%2e0%2e1", v4(127, 0, 0, 1)),
        ("%31%32%37.0.0.1", v4(127, 0, 0, 1)),
        ("exa%6dple.com", name("example.com")),
        ("evil.com%00.example.com", Err(Unparseable)),
        ("evil.com%40example.com", Err(Unparseable)),
        // numeric last label that is not IPv4
        ("1.2.3.4.5", Err(Unparseable)),
        ("example.123", Err(Unparseable)),
        ("256.0.0.1", Err(Unparseable)),
        ("0x100000000", Err(Unparseable)),
        ("example.0x7f", Err(Unparseable)),
        ("1.2.3.08", Err(Unparseable)),
        // a digit-leading label that is not all digits is still a name
        ("example.1a", name("example.1a")),
        ("1password.com", name("1password.com")),
        // IPv6: brackets required, embedded IPv4 kept for the classifier
        ("[::1]", v6("::1")),
        ("[0:0:0:0:0:0:0:1]", v6("::1")),
        ("[::ffff:127.0.0.1]", v6("::ffff:7f00:1")),
        ("[::ffff:7f00:1]", v6("::ffff:7f00:1")),
        ("[::127.0.0.1]", v6("::7f00:1")),
        ("[64:ff9b::127.0.0.1]", v6("64:ff9b::7f00:1")),
        ("[2002:7f00:1::]", v6("2002:7f00:1::")),
        ("[FE80::1]", v6("fe80::1")),
        ("::1", Err(UnbracketedIpv6)),
        ("[fe80::1%25eth0]", Err(Unparseable)),
        ("[fe80::1%eth0]", Err(Unparseable)),
        ("[::1", Err(Unparseable)),
        ("[127.0.0.1]", Err(Unparseable)),
        // IDNA: UTS-46 mapping, homoglyphs and full-width dots
        ("bücher.de", name("xn--bcher-kva.de")),
        ("BÜCHER.de", name("xn--bcher-kva.de")),
        ("xn--bcher-kva.de", name("xn--bcher-kva.de")),
        ("ｅｘａｍｐｌｅ.com", name("example.com")),
        ("example。com", name("example.com")),
        ("example．com", name("example.com")),
        ("example｡com", name("example.com")),
        ("１２７.０.０.１", v4(127, 0, 0, 1)),
        ("ex\u{ad}ample.com", name("example.com")),
        ("аpple.com", name("xn--pple-43d.com")),
        ("xn--zz.com", Err(Unparseable)),
        ("ⓔⓧⓐⓜⓟⓛⓔ.com", name("example.com")),
        // forbidden characters and userinfo tricks
        ("allowed.test@127.0.0.1", Err(ForbiddenChar)),
        ("exa mple.com", Err(ForbiddenChar)),
        ("example.com\r\nx", Err(ForbiddenChar)),
        ("example.com\0", Err(ForbiddenChar)),
        ("example.com\t", Err(ForbiddenChar)),
        ("example.com\\@evil", Err(ForbiddenChar)),
        ("exa#mple.com", Err(Unparseable)),
        ("exa/mple.com", Err(Unparseable)),
        ("exa?mple.com", Err(Unparseable)),
        ("example.com:80", Err(UnbracketedIpv6)),
        ("a:b:c", Err(UnbracketedIpv6)),
        ("*.example.com", Err(ForbiddenChar)),
        ("exa$mple.com", Err(ForbiddenChar)),
        ("exa{mple}.com", Err(ForbiddenChar)),
    ]
}

#[test]
fn canonicalises_the_odd_encodings_of_ssrf_write_ups() {
    for (input, want) in ssrf_spellings() {
        assert_eq!(canonicalize(input).map(Host::into_owned), want, "{input:?}");
    }
}

#[test]
fn enforces_dns_lengths() {
    let label63 = "a".repeat(63);
    let label64 = "a".repeat(64);
    assert!(canonicalize(&format!("{label63}.com")).is_ok());
    assert_eq!(
        canonicalize(&format!("{label64}.com")),
        Err(InvalidHost::LabelTooLong)
    );
    // 253 octets is the longest name; one more is rejected, with or without trailing dot.
    let name253 = format!("{0}.{0}.{0}.{1}", label63, "a".repeat(61));
    assert_eq!(name253.len(), 253);
    assert!(canonicalize(&name253).is_ok());
    assert!(canonicalize(&format!("{name253}.")).is_ok());
    assert_eq!(
        canonicalize(&format!("a{name253}")),
        Err(InvalidHost::NameTooLong)
    );
}

#[test]
fn plain_lowercase_names_are_borrowed() {
    assert!(matches!(
        canonicalize("api.github.com"),
        Ok(Host::Name(Cow::Borrowed("api.github.com")))
    ));
    assert!(matches!(
        canonicalize("api.github.com."),
        Ok(Host::Name(Cow::Borrowed("api.github.com")))
    ));
}

#[test]
fn fast_path_agrees_with_the_whatwg_parser() {
    for input in [
        "example.com",
        "EXAMPLE.COM",
        "a-b_c.d-e.example",
        "x.y.z.",
        "1a.b2.c3d",
        "abc.d1",
        "-lead.example",
        "trail-.example",
    ] {
        let fast = check_name(fast_name(input).expect("fast path applies")).map(Cow::into_owned);
        let slow = match url::Host::parse(input).unwrap() {
            url::Host::Domain(d) => check_name(Cow::Owned(d)).map(Cow::into_owned),
            other => panic!("{input}: {other:?}"),
        };
        assert_eq!(fast, slow, "{input}");
    }
    for input in [
        "127.1",
        "a.0x10",
        "xn--bcher-kva.de",
        "a.XN--bcher-kva",
        "a.9",
    ] {
        assert!(
            fast_name(input).is_none(),
            "{input} must take the slow path"
        );
    }
}

#[test]
fn ipv4_fast_path_agrees_with_the_whatwg_parser() {
    // Every dotted form built from these parts: canonical octets, octets with a leading zero
    // (octal to WHATWG), out of range (65537 would wrap a u16 to 1), hex, empty and non-digit
    // parts, in 3, 4 and 5 parts.
    let parts = [
        "0", "1", "9", "10", "99", "100", "199", "255", "256", "299", "999", "1000", "00", "01",
        "010", "0255", "65537", "0x1", "", "a", "-1", "+1", " 1",
    ];
    let mut inputs = Vec::new();
    for a in parts {
        for b in parts {
            inputs.push(format!("{a}.{b}.1.2"));
            inputs.push(format!("1.{a}.2.{b}"));
            inputs.push(format!("{a}.{b}.3"));
            inputs.push(format!("1.2.3.{a}.{b}"));
        }
        inputs.push(format!("{a}.1.2.3."));
        inputs.push(a.to_string());
    }
    let mut fast_taken = 0;
    for input in &inputs {
        let Some(fast) = fast_ipv4(input) else {
            continue;
        };
        fast_taken += 1;
        assert_eq!(
            url::Host::parse(input),
            Ok(url::Host::Ipv4(fast)),
            "{input}"
        );
        assert_eq!(
            fast.to_string(),
            *input,
            "only the canonical spelling is fast"
        );
        assert_eq!(
            canonicalize(input),
            Ok(Host::Ip(IpAddr::V4(fast))),
            "{input}"
        );
    }
    // The canonical quads among the inputs: two 4-part forms, each with 8 canonical parts
    // ("0" to "255") in its two free positions.
    assert_eq!(
        fast_taken,
        2 * 8 * 8,
        "every canonical quad takes the fast path"
    );
    for ip in [
        "0.0.0.0",
        "127.0.0.1",
        "169.254.169.254",
        "255.255.255.255",
        "10.0.0.9",
    ] {
        assert!(fast_ipv4(ip).is_some(), "{ip} must take the fast path");
    }
    for input in [
        "127.1",
        "0177.0.0.1",
        "127.0.0.01",
        "127.0.0.1.",
        "1.2.3.256",
        "1.2.3.4.5",
    ] {
        assert!(
            fast_ipv4(input).is_none(),
            "{input} must take the slow path"
        );
    }
}

#[test]
fn last_dot_agrees_with_a_byte_search() {
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for len in 0..40 {
        for dot in 0..=len {
            let mut v = vec![b'a'; len];
            if dot < len {
                v[dot] = b'.';
            }
            inputs.push(v.clone());
            // Neighbours of '.' (0x2e) that a borrowing zero-byte test would mistake for it.
            for odd in [b'/', b'-', 0x2f, 0x6e, 0xae, 0x00, 0xff] {
                let mut w = v.clone();
                if dot + 1 < len {
                    w[dot + 1] = odd;
                }
                inputs.push(w);
            }
        }
    }
    inputs.push(b"a.b.c.d.e.f.g.h.i.j.k".to_vec());
    for input in inputs {
        let want = input.iter().rposition(|&b| b == b'.');
        assert_eq!(
            last_dot(&input),
            want,
            "{:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn localhost_names() {
    assert!(is_localhost("localhost"));
    assert!(is_localhost("app.localhost"));
    assert!(!is_localhost("localhost.example.com"));
    assert!(!is_localhost("notlocalhost"));
}

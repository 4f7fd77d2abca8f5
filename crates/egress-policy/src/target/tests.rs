use super::*;

#[test]
fn parses_authorities() {
    let t = Target::parse_authority("Example.com:443", None).unwrap();
    assert_eq!(t.to_string(), "example.com:443");
    let t = Target::parse_authority("[::1]:8080", None).unwrap();
    assert_eq!(t.to_string(), "[::1]:8080");
    let t = Target::parse_authority("[::1]", Some(80)).unwrap();
    assert_eq!(t.to_string(), "[::1]:80");
    let t = Target::parse_authority("127.1:22", None).unwrap();
    assert_eq!(t.to_string(), "127.0.0.1:22");
    let t = Target::parse_authority("example.com", Some(80)).unwrap();
    assert_eq!(t.port, 80);
    use InvalidHost::*;
    for (input, err) in [
        ("example.com", MissingPort),
        ("example.com:", BadPort),
        ("example.com:0", BadPort),
        ("example.com:65536", BadPort),
        ("example.com:+80", BadPort),
        ("example.com:080x", BadPort),
        ("example.com:000443", BadPort),
        ("::1:80", UnbracketedIpv6),
        ("fe80::1", UnbracketedIpv6),
        ("example.com:80:80", UnbracketedIpv6),
        ("::ffff:127.0.0.1:443", UnbracketedIpv6),
        ("[::1]x", Unparseable),
        ("[::1]:", BadPort),
        (":80", Empty),
        ("user@example.com:80", ForbiddenChar),
    ] {
        assert_eq!(Target::parse_authority(input, None), Err(err), "{input}");
    }
}

#[test]
fn parses_urls_the_way_a_client_would() {
    use UrlScheme::{Http, Tunnel};
    let cases = [
        ("http://example.com/x?y", Http, "example.com:80"),
        ("https://example.com", Tunnel, "example.com:443"),
        ("https://example.com:8443/", Tunnel, "example.com:8443"),
        ("http://allowed.test@127.0.0.1/", Http, "127.0.0.1:80"),
        ("http://allowed.test:pw@127.1:8080/", Http, "127.0.0.1:8080"),
        ("http://a%40b:p%3Aw@127.1/", Http, "127.0.0.1:80"),
        ("http://@example.com/", Http, "example.com:80"),
        ("http://127.0.0.1#@allowed.test/", Http, "127.0.0.1:80"),
        ("http://127.0.0.1?@allowed.test/", Http, "127.0.0.1:80"),
        ("http://[::ffff:127.0.0.1]/", Http, "[::ffff:127.0.0.1]:80"),
        ("http://[::1]:8080", Http, "[::1]:8080"),
        ("http://0x7f.1/", Http, "127.0.0.1:80"),
        ("HTTP://EXAMPLE.COM./", Http, "example.com:80"),
        ("ws://example.com/", Tunnel, "example.com:80"),
        ("WSS://example.com/", Tunnel, "example.com:443"),
        (
            "http://example.com/a\\b^{}\"|?{}`#<>\"",
            Http,
            "example.com:80",
        ),
    ];
    for (input, scheme, want) in cases {
        let (got_scheme, target) = Target::parse_url(input).unwrap();
        assert_eq!(
            (got_scheme, target.to_string().as_str()),
            (scheme, want),
            "{input}"
        );
    }
    use InvalidHost::*;
    for (input, err) in [
        ("file:///etc/passwd", BadScheme),
        ("ftp://example.com/", BadScheme),
        ("gopher://example.com/", BadScheme),
        ("example.com/", Unparseable),
        ("http:///path", Empty),
        ("http://", Empty),
        ("https://", Empty),
        ("http://:80/", Empty),
        ("http://a@/", Empty),
        ("http://host:/", BadPort),
        ("http://host:0/", BadPort),
        ("http://host:65536/", BadPort),
        ("http://host:80:80/", UnbracketedIpv6),
        ("http://::1/", UnbracketedIpv6),
        ("http://[::1/", Unparseable),
        ("http://exa mple.com/", ForbiddenChar),
        ("http://exa%6dple.com/", ForbiddenChar),
        ("http://bücher.de/", ForbiddenChar),
        ("http://a\\b/", ForbiddenChar),
        ("http://a@b@c/", ForbiddenChar),
        ("http://[x]@c/", ForbiddenChar),
        ("http://a\"b/", ForbiddenChar),
        ("http://example.com/<", BadPath),
        ("http://example.com/`", BadPath),
        ("http://example.com/?\"", BadPath),
    ] {
        assert_eq!(Target::parse_url(input), Err(err), "{input}");
    }
}

//! The host canonicaliser on arbitrary text.
//!
//! Properties:
//! - `canonicalize`, `Target::parse_authority` and `Target::parse_url` never panic;
//! - an accepted host is canonical: its rendering canonicalises to itself (a fixed point), a
//!   name is lowercase LDH/`_` within DNS lengths and never also an IP address;
//! - where ours accepts, the `url` crate's WHATWG host parser accepts too and means the same
//!   host. Ours is stricter by design (`@`, `\`, whitespace, unbracketed `:`, empty or
//!   over-long labels, `*`-like characters are rejected), so inputs only `url` accepts are
//!   not compared. The known divergences where both accept:
//!   - one trailing dot: `url` keeps it on a name (`example.com.`), ours strips it;
//!   - nothing else: IPv4 in every legacy spelling and bracketed IPv6 come from `url` as is.
#![no_main]

use std::borrow::Cow;
use std::net::IpAddr;

use egress_proxy::policy::host::canonicalize;
use egress_proxy::policy::{Host, Target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Target::parse_authority(input, None);
    let _ = Target::parse_authority(input, Some(443));
    if let Ok((_, target)) = Target::parse_url(&format!("http://{input}/")) {
        check_canonical(&target.host);
    }
    let Ok(host) = canonicalize(input) else {
        return;
    };
    check_canonical(&host);
    agrees_with_url(input, &host);
});

/// A canonical host renders to text that canonicalises to the same host, alone and with a
/// port, and a name has the shape a resolver can look up.
fn check_canonical(host: &Host<'_>) {
    let text = host.to_string();
    let again = canonicalize(&text).map(Host::into_owned);
    assert_eq!(again.as_ref(), Ok(&host.clone().into_owned()), "{text:?}");
    let authority = format!("{text}:1");
    let target = Target::parse_authority(&authority, None).expect("canonical authority parses");
    assert_eq!(&target.host, host, "{authority:?}");
    if let Host::Name(name) = host {
        assert!(!name.is_empty() && name.len() <= 253, "{name:?}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)),
            "{name:?}"
        );
        assert!(
            name.split('.').all(|l| !l.is_empty() && l.len() <= 63),
            "{name:?}"
        );
        assert!(name.parse::<IpAddr>().is_err(), "{name:?} is an address");
        assert!(
            !matches!(canonicalize(name), Ok(Host::Ip(_))),
            "{name:?} reads as an address"
        );
    }
}

fn agrees_with_url(input: &str, ours: &Host<'_>) {
    let theirs = url::Host::parse(input)
        .unwrap_or_else(|e| panic!("{input:?}: ours accepts as {ours}, url rejects: {e}"));
    match (ours, &theirs) {
        (Host::Ip(IpAddr::V4(a)), url::Host::Ipv4(b)) => assert_eq!(a, b, "{input:?}"),
        (Host::Ip(IpAddr::V6(a)), url::Host::Ipv6(b)) => assert_eq!(a, b, "{input:?}"),
        (Host::Name(a), url::Host::Domain(b)) => {
            let b: Cow<'_, str> = Cow::Borrowed(b.strip_suffix('.').unwrap_or(b));
            assert_eq!(a, &b, "{input:?}");
        }
        _ => panic!("{input:?}: ours {ours:?}, url {theirs:?}"),
    }
}

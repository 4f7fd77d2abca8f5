//! The IP classifier: one named table of non-public ranges, used at load time and per
//! connection, so an address can never be judged two different ways.
//!
//! IPv6 addresses that carry an IPv4 address (mapped `::ffff:0:0/96`, RFC 2765 translated
//! `::ffff:0:0:0/96`, compatible `::/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are classified
//! as that IPv4 address: otherwise `[::ffff:127.0.0.1]` would pass as a public IPv6 address and
//! reach loopback.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The class of an address. Every variant has a stable name used in reason codes
/// (`non-public-ip:<class>`), logs, metrics and `check` output.
///
/// Non-exhaustive: IANA keeps adding special-purpose ranges, and a new class must not break
/// an embedder's `match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IpClass {
    /// Everything no row of the table names: the only class dialled without an exception.
    Public,
    /// `0.0.0.0/8`, `::`: "this host" on some stacks, so never a destination.
    Unspecified,
    /// `127.0.0.0/8`, `::1`: services on the proxy's own host.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`), site-local `fec0::/10` and the local
    /// NAT64 prefix `64:ff9b:1::/48`.
    Private,
    /// `100.64.0.0/10`, carrier-grade NAT (RFC 6598): a provider's internal network.
    Cgnat,
    /// `169.254.0.0/16`, `fe80::/10`: the link, and the cloud metadata address.
    LinkLocal,
    /// `fc00::/7`, IPv6 unique local addresses.
    Ula,
    /// IANA-reserved space (`192.0.0.0/24`, `192.88.99.0/24`, `240.0.0.0/4`, `100::/64`).
    Reserved,
    /// Documentation ranges (`192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`,
    /// `2001:db8::/32`): nothing real lives there.
    Documentation,
    /// `198.18.0.0/15`, benchmarking (RFC 2544).
    Benchmarking,
    /// `224.0.0.0/4`, `ff00::/8`: a group, not a host.
    Multicast,
    /// `255.255.255.255`, limited broadcast.
    Broadcast,
    /// `2001::/32`: Teredo tunnels a connection to an IPv4 address the proxy cannot check.
    Teredo,
}

impl IpClass {
    /// The stable name in reason codes, logs and metrics (`link-local`).
    pub const fn name(self) -> &'static str {
        match self {
            IpClass::Public => "public",
            IpClass::Unspecified => "unspecified",
            IpClass::Loopback => "loopback",
            IpClass::Private => "private",
            IpClass::Cgnat => "cgnat",
            IpClass::LinkLocal => "link-local",
            IpClass::Ula => "ula",
            IpClass::Reserved => "reserved",
            IpClass::Documentation => "documentation",
            IpClass::Benchmarking => "benchmarking",
            IpClass::Multicast => "multicast",
            IpClass::Broadcast => "broadcast",
            IpClass::Teredo => "teredo",
        }
    }

    /// Whether the address may be dialled under any allow rule.
    pub const fn is_public(self) -> bool {
        matches!(self, IpClass::Public)
    }

    /// Local destinations a user may open on purpose (`allow_local_binding`, or an exact
    /// IP-literal / `localhost` allow rule). Every other non-public class is never reachable:
    /// nothing legitimate lives at an unspecified, multicast, broadcast, reserved,
    /// documentation, benchmarking or Teredo address (a network that does use one of the
    /// declarable ones says so with a declared public range).
    pub const fn is_local(self) -> bool {
        matches!(
            self,
            IpClass::Loopback
                | IpClass::Private
                | IpClass::Cgnat
                | IpClass::LinkLocal
                | IpClass::Ula
        )
    }

    /// Whether a declared public range may cover this class: the special-purpose ranges some
    /// networks really route (fake-IP DNS, tailnets, transparent gateways). Loopback,
    /// unspecified, link-local, multicast, broadcast and Teredo never are.
    pub const fn is_declarable(self) -> bool {
        matches!(
            self,
            IpClass::Private
                | IpClass::Cgnat
                | IpClass::Ula
                | IpClass::Reserved
                | IpClass::Documentation
                | IpClass::Benchmarking
        )
    }
}

impl fmt::Display for IpClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The IPv4 table, most specific first (broadcast sits inside 240.0.0.0/4).
const V4: &[(Ipv4Addr, u8, IpClass)] = &[
    (Ipv4Addr::new(255, 255, 255, 255), 32, IpClass::Broadcast),
    (Ipv4Addr::new(0, 0, 0, 0), 8, IpClass::Unspecified),
    (Ipv4Addr::new(10, 0, 0, 0), 8, IpClass::Private),
    (Ipv4Addr::new(100, 64, 0, 0), 10, IpClass::Cgnat),
    (Ipv4Addr::new(127, 0, 0, 0), 8, IpClass::Loopback),
    (Ipv4Addr::new(169, 254, 0, 0), 16, IpClass::LinkLocal),
    (Ipv4Addr::new(172, 16, 0, 0), 12, IpClass::Private),
    (Ipv4Addr::new(192, 0, 0, 0), 24, IpClass::Reserved),
    (Ipv4Addr::new(192, 0, 2, 0), 24, IpClass::Documentation),
    (Ipv4Addr::new(192, 88, 99, 0), 24, IpClass::Reserved),
    (Ipv4Addr::new(192, 168, 0, 0), 16, IpClass::Private),
    (Ipv4Addr::new(198, 18, 0, 0), 15, IpClass::Benchmarking),
    (Ipv4Addr::new(198, 51, 100, 0), 24, IpClass::Documentation),
    (Ipv4Addr::new(203, 0, 113, 0), 24, IpClass::Documentation),
    (Ipv4Addr::new(224, 0, 0, 0), 4, IpClass::Multicast),
    (Ipv4Addr::new(240, 0, 0, 0), 4, IpClass::Reserved),
];

/// The IPv6 table, most specific first. The IPv4-carrying prefixes are handled before it.
const V6: &[(Ipv6Addr, u8, IpClass)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, IpClass::Unspecified),
    (Ipv6Addr::LOCALHOST, 128, IpClass::Loopback),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        IpClass::Private,
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        IpClass::Reserved,
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        IpClass::Documentation,
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        32,
        IpClass::Teredo,
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        IpClass::LinkLocal,
    ),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        IpClass::Private,
    ),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, IpClass::Ula),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        IpClass::Multicast,
    ),
];

/// The named table as `(network, class)` rows, most specific first within each family: the
/// ranges an embedder can list or document, in the order [`classify`] tries them.
pub fn ranges() -> impl Iterator<Item = (ipnet::IpNet, IpClass)> {
    let v4 = V4.iter().map(|&(net, len, class)| {
        let net = ipnet::Ipv4Net::new(net, len).expect("static prefix is valid");
        (ipnet::IpNet::V4(net), class)
    });
    let v6 = V6.iter().map(|&(net, len, class)| {
        let net = ipnet::Ipv6Net::new(net, len).expect("static prefix is valid");
        (ipnet::IpNet::V6(net), class)
    });
    v4.chain(v6)
}

/// The class of `ip`; an IPv6 address that carries an IPv4 address is classified as that
/// IPv4 address.
pub fn classify(ip: IpAddr) -> IpClass {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => match embedded_v4(ip) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(ip),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> IpClass {
    let bits = u32::from(ip);
    V4.iter()
        .find(|&&(net, len, _)| bits & mask32(len) == u32::from(net))
        .map_or(IpClass::Public, |&(_, _, class)| class)
}

fn classify_v6(ip: Ipv6Addr) -> IpClass {
    let bits = u128::from(ip);
    V6.iter()
        .find(|&&(net, len, _)| bits & mask128(len) == u128::from(net))
        .map_or(IpClass::Public, |&(_, _, class)| class)
}

/// The IPv4 address an IPv6 address carries, if it is of a form that delivers to it.
pub(crate) fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from(bits as u32);
    let s = ip.segments();
    if bits >> 32 == 0xffff {
        return Some(low32); // ::ffff:0:0/96, IPv4-mapped
    }
    if bits >> 32 == 0xffff_0000 {
        return Some(low32); // ::ffff:0:0:0/96, IPv4-translated (RFC 2765)
    }
    if bits >> 32 == 0 && bits > 1 {
        return Some(low32); // ::/96, IPv4-compatible (:: and ::1 are their own rows)
    }
    if bits >> 32 == u128::from(u32::from_be_bytes([0, 0x64, 0xff, 0x9b])) << 64 {
        return Some(low32); // 64:ff9b::/96, NAT64
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2]))); // 6to4
    }
    None
}

/// The class every address of `net` has, or `None` when the range spans several classes.
///
/// An allow CIDR is a local exception only when it lies inside one local class: `10.1.0.0/16`
/// opens that part of the LAN, but `0.0.0.0/0` (which also covers loopback and
/// 169.254.169.254) opens public addresses only.
pub(crate) fn net_class(net: IpNet) -> Option<IpClass> {
    match net {
        IpNet::V4(net) => uniform_v4(u32::from(net.network()), u32::from(net.broadcast())),
        IpNet::V6(net) => {
            let (lo, hi) = (u128::from(net.network()), u128::from(net.broadcast()));
            // Inside one IPv4-carrying prefix the range is the IPv4 range it carries; a range
            // that only partly covers one (or contains one) spans many classes.
            for (prefix, len, shift) in EMBEDDINGS {
                let (plo, phi) = (prefix, prefix | !mask128(len));
                if plo <= lo && hi <= phi {
                    if prefix == 0 && lo <= 1 {
                        // :: and ::1 are rows of their own, not compatible IPv4.
                        return (lo == hi).then(|| classify_v6(net.network()));
                    }
                    return uniform_v4((lo >> shift) as u32, (hi >> shift) as u32);
                }
                if plo <= hi && lo <= phi {
                    return None;
                }
            }
            uniform(
                lo,
                hi,
                V6.iter().map(|&(n, len, c)| (u128::from(n), len, c)),
                128,
            )
        }
    }
}

/// The IPv4-carrying IPv6 prefixes as (prefix, length, shift of the IPv4 bits).
pub(crate) const EMBEDDINGS: [(u128, u8, u32); 5] = [
    (0xffff << 32, 96, 0),
    (0xffff_0000 << 32, 96, 0),
    (0, 96, 0),
    (0x64_ff9b << 96, 96, 0),
    (0x2002 << 112, 16, 80),
];

fn uniform_v4(lo: u32, hi: u32) -> Option<IpClass> {
    let rows = V4
        .iter()
        .map(|&(n, len, c)| (u128::from(u32::from(n)), len, c));
    uniform(u128::from(lo), u128::from(hi), rows, 32)
}

/// Walks the table in its first-match order: the first row that touches `lo..=hi` decides,
/// and it must contain all of it.
fn uniform(
    lo: u128,
    hi: u128,
    rows: impl Iterator<Item = (u128, u8, IpClass)>,
    width: u32,
) -> Option<IpClass> {
    for (net, len, class) in rows {
        let span = if u32::from(len) >= width {
            0
        } else {
            (1u128 << (width - u32::from(len))) - 1
        };
        let (rlo, rhi) = (net, net | span);
        if rlo <= lo && hi <= rhi {
            return Some(class);
        }
        if rlo <= hi && lo <= rhi {
            return None;
        }
    }
    Some(IpClass::Public)
}

pub(crate) const fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

pub(crate) const fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

#[cfg(test)]
mod tests;

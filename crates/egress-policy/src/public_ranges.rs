//! Declared public ranges: address ranges this network uses for public destinations although
//! the classifier names them otherwise (fake-IP DNS answering from `198.18.0.0/15`, a tailnet in
//! `100.64.0.0/10`, a transparent gateway answering from a documentation range). An address in
//! one is classified `public` wherever it appears, so the ordinary rules decide it.
//!
//! Invariants, each held by construction ([`DeclaredRange::new`] is the only way in):
//! - no declared range covers a never-public address, in any spelling: loopback, unspecified,
//!   link-local (with 169.254.169.254), multicast, broadcast, Teredo, and the local-use NAT64
//!   prefix, which can translate to any IPv4 address. An IPv6 range inside an IPv4-carrying
//!   prefix (`::ffff:0:0/96`, NAT64, 6to4, …) is the IPv4 range it carries; one that contains
//!   such a prefix carries every IPv4 address, loopback included, and is refused;
//! - the cloud metadata addresses that sit in declarable classes are never declared, even
//!   inside a declared range;
//! - a lookup happens only for an address the classifier did not already call public, and
//!   only when something is declared, so the public path costs nothing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::classifier::{self, embedded_v4, mask128, IpClass, EMBEDDINGS};

/// The local-use NAT64 prefix (RFC 8215), classified private: a translator there can map to
/// any IPv4 address, metadata and loopback included, so it is never declared public.
const LOCAL_NAT64: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48);

/// Cloud metadata services in declarable classes (Alibaba in CGNAT, Oracle in reserved, AWS's
/// IPv6 endpoint in ULA): reaching one hands out the host's credentials, so a declared range
/// around them leaves them out.
const METADATA: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 0, 192)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// Why a range cannot be declared public.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// Not `address/prefix-length`.
    #[error("`{0}` is not a CIDR (address/prefix-length, e.g. 198.18.0.0/15)")]
    Syntax(String),
    /// Bits set after the prefix: probably not the range that was meant.
    #[error("`{given}` has host bits set; write `{network}`")]
    HostBits {
        /// The range as written.
        given: IpNet,
        /// The network it truncates to.
        network: IpNet,
    },
    /// It covers addresses that are never public (`169.254.0.0/15 overlaps link-local
    /// 169.254.0.0/16`).
    #[error("{range} overlaps {class} {row}{}", note(*row, *carried))]
    NeverPublic {
        /// The range as written.
        range: IpNet,
        /// The class it would open.
        class: IpClass,
        /// The classifier row it overlaps.
        row: IpNet,
        /// For an IPv6 range over IPv4-carrying addresses, the IPv4 range it carries.
        carried: Option<Ipv4Net>,
    },
}

fn note(row: IpNet, carried: Option<Ipv4Net>) -> String {
    match carried {
        Some(v4) => format!(" (its addresses carry the IPv4 range {v4})"),
        None if row == IpNet::V6(LOCAL_NAT64) => {
            " (local-use NAT64, which can translate to any IPv4 address)".to_string()
        }
        None => String::new(),
    }
}

/// One range declared public, checked: it opens no never-public address in any spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeclaredRange {
    written: IpNet,
    covers: IpNet,
}

impl DeclaredRange {
    /// Checks `net`: no host bits, and no overlap with a class that is never public.
    pub fn new(net: IpNet) -> Result<DeclaredRange, RangeError> {
        if net.trunc() != net {
            return Err(RangeError::HostBits {
                given: net,
                network: net.trunc(),
            });
        }
        let never = |row: IpNet, class: IpClass, carried| RangeError::NeverPublic {
            range: net,
            class,
            row,
            carried,
        };
        let covers = match net {
            IpNet::V4(v4) => {
                if let Some((row, class)) = never_public_v4(v4) {
                    return Err(never(row, class, None));
                }
                net
            }
            IpNet::V6(v6) => {
                if let Some((row, class)) = never_public_v6(v6) {
                    return Err(never(row, class, None));
                }
                match carried_v4(v6) {
                    Some(v4) => {
                        if let Some((row, class)) = never_public_v4(v4) {
                            return Err(never(row, class, Some(v4)));
                        }
                        IpNet::V4(v4)
                    }
                    None => net,
                }
            }
        };
        Ok(DeclaredRange {
            written: net,
            covers,
        })
    }

    /// The range as written.
    pub fn written(&self) -> IpNet {
        self.written
    }

    /// What it declares: the range itself, or for an IPv6 spelling of IPv4 addresses
    /// (`::ffff:198.18.0.0/111`) the IPv4 range, which every spelling of those addresses meets.
    pub fn covers(&self) -> IpNet {
        self.covers
    }
}

impl FromStr for DeclaredRange {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Self, RangeError> {
        let net = text
            .trim()
            .parse::<IpNet>()
            .map_err(|_| RangeError::Syntax(text.to_string()))?;
        DeclaredRange::new(net)
    }
}

impl fmt::Display for DeclaredRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.written == self.covers {
            write!(f, "{}", self.written)
        } else {
            write!(f, "{} (= {})", self.written, self.covers)
        }
    }
}

/// The never-public row `v4` overlaps, if any (any row, not just the first match: broadcast
/// sits inside the reserved 240.0.0.0/4).
fn never_public_v4(v4: Ipv4Net) -> Option<(IpNet, IpClass)> {
    never_public(IpNet::V4(v4))
}

/// The same for an IPv6 range, whose IPv4-carrying part is judged by [`carried_v4`].
fn never_public_v6(v6: Ipv6Net) -> Option<(IpNet, IpClass)> {
    never_public(IpNet::V6(v6))
}

fn never_public(net: IpNet) -> Option<(IpNet, IpClass)> {
    classifier::ranges()
        .filter(|&(row, class)| !class.is_declarable() || row == IpNet::V6(LOCAL_NAT64))
        .find(|&(row, _)| overlaps(row, net))
}

/// CIDRs either nest or are disjoint (and never overlap across families).
fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The IPv4 range an IPv6 range carries when it overlaps an IPv4-carrying prefix: inside one,
/// the IPv4 range its addresses embed; around one, every IPv4 address.
fn carried_v4(v6: Ipv6Net) -> Option<Ipv4Net> {
    let (lo, hi) = (u128::from(v6.network()), u128::from(v6.broadcast()));
    EMBEDDINGS.iter().find_map(|&(prefix, len, shift)| {
        let (plo, phi) = (prefix, prefix | !mask128(len));
        if plo <= lo && hi <= phi {
            let v4_len = (v6.prefix_len() - len).min(32);
            let network = Ipv4Addr::from((lo >> shift) as u32);
            Some(Ipv4Net::new(network, v4_len).expect("a prefix length of at most 32"))
        } else if lo <= plo && phi <= hi {
            Some(Ipv4Net::default())
        } else {
            None
        }
    })
}

/// The ranges a network declares public, merged for lookup. Cheap to clone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublicRanges {
    /// Sorted, disjoint, inclusive intervals; IPv4 spellings in IPv6 are here.
    v4: Arc<[(u32, u32)]>,
    /// The same for IPv6 addresses that carry no IPv4 address.
    v6: Arc<[(u128, u128)]>,
    declared: Arc<[DeclaredRange]>,
}

impl PublicRanges {
    /// The ranges, in the order given (for display); overlaps are merged for lookup.
    pub fn new(ranges: impl IntoIterator<Item = DeclaredRange>) -> PublicRanges {
        let declared: Arc<[DeclaredRange]> = ranges.into_iter().collect();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for range in declared.iter() {
            match range.covers {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        PublicRanges {
            v4: merge(v4).into(),
            v6: merge(v6).into(),
            declared,
        }
    }

    /// Whether nothing is declared.
    pub fn is_empty(&self) -> bool {
        self.declared.is_empty()
    }

    /// The ranges as declared.
    pub fn declared(&self) -> &[DeclaredRange] {
        &self.declared
    }

    /// Whether `ip`, which the classifier put in `class`, is declared public.
    pub fn contains(&self, ip: IpAddr, class: IpClass) -> bool {
        if !class.is_declarable() {
            return false;
        }
        let ip = canonical(ip);
        let inside = match ip {
            IpAddr::V4(v4) => within(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => within(&self.v6, u128::from(v6)),
        };
        inside && !METADATA.contains(&ip)
    }
}

/// The classifier row a declaration must cover to make `ip` public, with its class; `None`
/// for a public address and for one no declaration can open (a never-public class, a cloud
/// metadata address, the local-use NAT64 prefix). An IPv6 spelling of an IPv4 address gets
/// the IPv4 row.
pub fn declarable(ip: IpAddr) -> Option<(IpNet, IpClass)> {
    let ip = canonical(ip);
    if METADATA.contains(&ip) {
        return None;
    }
    let (row, class) = classifier::ranges().find(|(row, _)| row.contains(&ip))?;
    (class.is_declarable() && row != IpNet::V6(LOCAL_NAT64)).then_some((row, class))
}

/// The IPv4 address an IPv6 spelling carries, or the address itself: the classifier's
/// identity of an address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Whether `x` lies in one of the sorted, disjoint `intervals`.
fn within<T: Copy + Ord>(intervals: &[(T, T)], x: T) -> bool {
    let after = intervals.partition_point(|&(lo, _)| lo <= x);
    after > 0 && x <= intervals[after - 1].1
}

/// Sorts and merges overlapping or adjacent inclusive intervals.
fn merge<T: Copy + Ord + Into<u128>>(mut intervals: Vec<(T, T)>) -> Vec<(T, T)> {
    intervals.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(intervals.len());
    for (lo, hi) in intervals {
        match merged.last_mut() {
            Some(last) if lo.into() <= last.1.into().saturating_add(1) => {
                last.1 = last.1.max(hi);
            }
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

#[cfg(test)]
mod tests;
